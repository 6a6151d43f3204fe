"""Alert events and layer states as published (schema ``alvh.alert.v1``, DESIGN.md).

Guarantees:
- :func:`alert_id` is a pure function of the transition (chain id, pool, layer,
  event, since, time, block, block hash): the same transition gets the same id in
  every run, after a restart and in a backtest, so consumers can dedupe on it;
- payloads are plain JSON (NaN and infinities become ``null``), UTF-8, with the
  DESIGN.md fields first and alvh's additions (``repeat``, ``retracts``,
  ``threshold_scale``) after them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from rules.durations import iso_utc

SCHEMA = "alvh.alert.v1"

AlertEvent = Literal["firing", "resolved", "retracted"]

#: The ``values`` every alert carries (DESIGN.md); a layer's own features are added.
ALERT_VALUE_NAMES: tuple[str, ...] = (
    "price",
    "move_sigma",
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "realized_vol",
    "iv",
    "tvl",
    "volume_24h",
    "tvl_volume_ratio",
)


def alert_id(
    *,
    chain_id: int,
    pool: str,
    layer: str,
    event: str,
    since: int,
    time: int,
    block: int,
    block_hash: str,
) -> str:
    """A stable idempotency key for one transition (32 hex digits)."""
    parts = (SCHEMA, chain_id, pool.lower(), layer, event, since, time, block, block_hash.lower())
    key = "|".join(str(p) for p in parts)
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def json_number(value: float) -> float | None:
    """NaN and infinities have no JSON form: they become null."""
    if math.isfinite(value):
        return float(value)
    return None


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert event, ready to be serialised."""

    id: str
    event: AlertEvent
    chain: str
    chain_id: int
    pool: str
    pool_name: str
    layer: str
    level: int
    block: int
    block_hash: str
    time: int
    since: int
    reason: str
    values: Mapping[str, float]
    hedge: Mapping[str, Any] | None = None
    repeat: bool = False
    retracts: str | None = None
    threshold_scale: float = 1.0
    suppressed_by: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.event not in ("firing", "resolved", "retracted"):
            raise ValueError(
                f"Alert.event must be firing, resolved or retracted, got {self.event!r}"
            )
        if self.event == "retracted" and not self.retracts:
            raise ValueError("a retracted alert must name the id it retracts")
        if self.time < self.since:
            raise ValueError(f"Alert.time {self.time} is before since {self.since}")

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "schema": SCHEMA,
            "id": self.id,
            "event": self.event,
            "chain": self.chain,
            "chain_id": self.chain_id,
            "pool": self.pool,
            "pool_name": self.pool_name,
            "layer": self.layer,
            "level": self.level,
            "block": self.block,
            "block_hash": self.block_hash,
            "time": iso_utc(self.time),
            "since": iso_utc(self.since),
            "reason": self.reason,
            "values": {k: json_number(v) for k, v in self.values.items()},
            "hedge": dict(self.hedge) if self.hedge is not None else None,
            "repeat": self.repeat,
            "threshold_scale": json_number(self.threshold_scale),
        }
        if self.retracts is not None:
            payload["retracts"] = self.retracts
        return payload

    def to_json(self) -> bytes:
        return json.dumps(self.to_payload(), separators=(",", ":"), allow_nan=False).encode()

    @property
    def topic_suffix(self) -> str:
        """``alerts/{chain}/{pool}/{layer}`` under the configured prefix."""
        return f"alerts/{self.chain}/{self.pool}/{self.layer}"


@dataclass(frozen=True, slots=True)
class LayerEvent:
    """A published alert event of one layer on one pool, as its state topic recalls it."""

    event: AlertEvent
    time: int
    since: int
    block: int
    alert_id: str

    @classmethod
    def of(cls, alert: Alert) -> LayerEvent:
        return cls(alert.event, alert.time, alert.since, alert.block, alert.id)

    def to_payload(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "time": iso_utc(self.time),
            "since": iso_utc(self.since),
            "block": self.block,
            "alert_id": self.alert_id,
        }


@dataclass(frozen=True, slots=True)
class LayerStatus:
    """The retained state of one layer on one pool (``{prefix}/layers/{chain}/{pool}/{layer}``).

    ``time`` is the data time of the last change, None when the layer never changed (never
    evaluated, or never true); ``last_event`` the last alert event published for it and
    ``last_firing`` the last ``firing`` (what a consumer that only reads the retained state
    needs to see a firing that fired and resolved between two of its reads)."""

    chain: str
    pool: str
    layer: str
    level: int
    state: Literal["inactive", "pending", "firing"]
    since: int | None
    time: int | None
    values: Mapping[str, float]
    reason: str = ""
    inhibited_by: str | None = None
    last_event: LayerEvent | None = None
    last_firing: LayerEvent | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": iso_utc(self.since) if self.since is not None else None,
            "time": iso_utc(self.time) if self.time is not None else None,
            "layer": self.layer,
            "level": self.level,
            "reason": self.reason,
            "inhibited_by": self.inhibited_by,
            "values": {k: json_number(v) for k, v in self.values.items()},
            "last_event": self.last_event.to_payload() if self.last_event else None,
            "last_firing": self.last_firing.to_payload() if self.last_firing else None,
        }

    @property
    def key(self) -> tuple[str, str, str]:
        """(chain, pool, layer)."""
        return (self.chain, self.pool, self.layer)

    @property
    def topic_suffix(self) -> str:
        return f"layers/{self.chain}/{self.pool}/{self.layer}"
