"""A checker for the ``alvh.alert.v1`` payload of DESIGN.md, written from DESIGN.md alone
(no code shared with the daemon), used by the integration tests."""

from __future__ import annotations

import re
from typing import Any

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
HASH = re.compile(r"^0x[0-9a-f]{64}$")
VALUES = (
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
HEDGE = (
    "instrument",
    "strike",
    "expiry",
    "notional",
    "premium_estimate",
    "il_now",
    "il_at_strike",
    "break_even",
)


def _number_or_null(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool))


def check_alert(p: dict[str, Any]) -> list[str]:
    """Every way ``p`` departs from the schema (empty list: valid)."""
    errs: list[str] = []

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            errs.append(f"{key}: {what}, got {p.get(key)!r}")

    need("schema", p.get("schema") == "alvh.alert.v1", "must be alvh.alert.v1")
    need("id", isinstance(p.get("id"), str) and len(p["id"]) >= 16, "stable id string")
    need(
        "event", p.get("event") in ("firing", "resolved", "retracted"), "firing|resolved|retracted"
    )
    need("chain", isinstance(p.get("chain"), str) and bool(p["chain"]), "chain name")
    need("chain_id", isinstance(p.get("chain_id"), int) and p["chain_id"] > 0, "positive int")
    need(
        "pool",
        isinstance(p.get("pool"), str) and bool(ADDRESS.match(p["pool"])),
        "checksummed address",
    )
    need("pool_name", isinstance(p.get("pool_name"), str), "string")
    need("layer", isinstance(p.get("layer"), str) and bool(p["layer"]), "layer name")
    need("level", isinstance(p.get("level"), int) and p["level"] >= 1, "int >= 1")
    need("block", isinstance(p.get("block"), int) and p["block"] >= 0, "block number")
    need("block_hash", isinstance(p.get("block_hash"), str), "string")
    need("time", isinstance(p.get("time"), str) and bool(ISO.match(p["time"])), "ISO 8601 UTC")
    need("since", isinstance(p.get("since"), str) and bool(ISO.match(p["since"])), "ISO 8601 UTC")
    need("reason", isinstance(p.get("reason"), str) and bool(p["reason"]), "non-empty string")
    values = p.get("values")
    if not isinstance(values, dict):
        errs.append("values: must be an object")
    else:
        for k in VALUES:
            if k not in values or not _number_or_null(values[k]):
                errs.append(f"values.{k}: number or null required, got {values.get(k)!r}")
    hedge = p.get("hedge")
    if hedge is not None:
        if not isinstance(hedge, dict):
            errs.append("hedge: object or null")
        else:
            for k in HEDGE:
                if k not in hedge:
                    errs.append(f"hedge.{k}: missing")
            if hedge.get("instrument") not in ("put", "collar"):
                errs.append("hedge.instrument: put|collar")
            if not (isinstance(hedge.get("expiry"), str) and ISO.match(hedge["expiry"])):
                errs.append("hedge.expiry: ISO 8601 UTC")
            be = hedge.get("break_even")
            if not (isinstance(be, list) and len(be) == 2 and all(_number_or_null(x) for x in be)):
                errs.append("hedge.break_even: [lo, hi]")
            for k in ("strike", "notional", "premium_estimate", "il_now", "il_at_strike"):
                if not _number_or_null(hedge.get(k)):
                    errs.append(f"hedge.{k}: number")
    if p.get("event") == "retracted" and not isinstance(p.get("retracts"), str):
        errs.append("retracts: a retracted event names the id it retracts")
    return errs
