"""What the retained layer and pool topics say, kept true across restarts and config changes.

:class:`LayerBook` holds, per (chain, pool, layer), the last retained layer state the daemon
published and the last alert events published for it, and per chain the last block
processed. It is saved in the checkpoint with the pipeline's state (the same
transaction), so after a restart, warm or after ``kill -9``, it says what the restored
state machines say.

Guarantees:

- a layer state is published with the time, since and reason of its last transition,
  also after a restart (:meth:`LayerBook.snapshot`), never the epoch; a layer that never
  changed has ``time`` null;
- every state carries ``last_event`` and ``last_firing`` (:class:`~rules.alert.LayerEvent`):
  a firing that fired and resolved inside one catch-up, where only the last state reaches
  the retained topic, is still visible on it;
- :func:`retained_topics` is the set of retained topics a config owns; :class:`Ownership`
  (in the state store) remembers what earlier runs owned, so the topics of pools and
  layers removed from the config are cleared (empty retained payload) and a layer that
  was firing there, notified, is closed with a ``resolved`` alert ("removed from config",
  :meth:`LayerBook.removal_alert`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from rules.alert import ALERT_VALUE_NAMES, Alert, LayerEvent, LayerStatus, alert_id

#: State-store key of :class:`Ownership`.
OWNERSHIP_KEY = "retained.v1"
REMOVED_REASON = "removed from config"

LayerKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ChainMark:
    """The last block of a chain the daemon processed."""

    chain_id: int
    block: int
    block_hash: str
    time: int


@dataclass(frozen=True, slots=True)
class LayerRecord:
    """The last published state of one layer on one pool, and who it is."""

    status: LayerStatus
    chain_id: int
    pool_name: str


class LayerBook:
    """The retained layer states of a run: see the module docstring."""

    def __init__(self) -> None:
        self.records: dict[LayerKey, LayerRecord] = {}
        self.chains: dict[str, ChainMark] = {}

    # -- what a step or a reorg changes --------------------------------------------

    def mark_block(self, chain: str, mark: ChainMark) -> None:
        self.chains[chain] = mark

    def published(self, alerts: Iterable[Alert]) -> None:
        """Remember the alert events that go to the outbox (before their statuses)."""
        for a in alerts:
            key = (a.chain, a.pool, a.layer)
            record = self.records.get(key)
            if record is None:
                continue
            event = LayerEvent.of(a)
            status = replace(record.status, last_event=event)
            if a.event == "firing":
                status = replace(status, last_firing=event)
            self.records[key] = replace(record, status=status)

    def transitions(
        self, statuses: Sequence[LayerStatus], who: Mapping[tuple[str, str], tuple[int, str]]
    ) -> list[LayerStatus]:
        """The statuses of transitions (each the new truth), with their history; ``who``
        maps (chain, pool) to (chain id, pool name)."""
        out = []
        for new in statuses:
            previous = self.records.get(new.key)
            status = (
                new
                if previous is None
                else replace(
                    new,
                    last_event=previous.status.last_event,
                    last_firing=previous.status.last_firing,
                )
            )
            chain_id, name = who[(status.chain, status.pool)]
            self.records[status.key] = LayerRecord(status, chain_id, name)
            out.append(status)
        return out

    def snapshot(
        self, statuses: Sequence[LayerStatus], who: Mapping[tuple[str, str], tuple[int, str]]
    ) -> list[LayerStatus]:
        """Statuses read off the state machines (at start, after a reorg), which know the
        state and since but not the time, reason or values: the recorded status when it
        agrees, else the machine's state with what is known (the episode's start; for an
        inactive layer, the recorded time)."""
        out = []
        for machine in statuses:
            record = self.records.get(machine.key)
            if record is not None and (record.status.state, record.status.since) == (
                machine.state,
                machine.since,
            ):
                out.append(record.status)
                continue
            status = machine
            if record is not None:
                status = replace(
                    machine,
                    time=machine.since if machine.since is not None else record.status.time,
                    last_event=record.status.last_event,
                    last_firing=record.status.last_firing,
                )
            chain_id, name = who[(status.chain, status.pool)]
            self.records[status.key] = LayerRecord(status, chain_id, name)
            out.append(status)
        return out

    # -- config changes --------------------------------------------------------------

    def forget(self, keys: Iterable[LayerKey]) -> None:
        for key in keys:
            self.records.pop(key, None)

    def removal_alert(self, key: LayerKey) -> Alert | None:
        """The ``resolved`` alert that closes a notified firing of a layer that left the
        config, or None (not firing, or its firing was never published). Its block and time
        are the last block processed on that chain (the last one at which the layer was
        still configured), so the id is the same however often it is made."""
        record = self.records.get(key)
        if record is None or record.status.state != "firing" or record.status.since is None:
            return None
        status = record.status
        fired = status.last_firing
        if fired is None or fired.since != status.since:
            return None  # inhibited or withheld: its resolve is not notified either
        mark = self.chains.get(status.chain)
        if mark is not None and mark.time >= fired.time:
            block, block_hash, time = mark.block, mark.block_hash, mark.time
        else:
            block, block_hash, time = fired.block, "", fired.time
        values = dict.fromkeys(ALERT_VALUE_NAMES, math.nan)
        values.update(status.values)
        return Alert(
            id=alert_id(
                chain_id=record.chain_id,
                pool=status.pool,
                layer=status.layer,
                event="resolved",
                since=status.since,
                time=time,
                block=block,
                block_hash=f"{block_hash}|{REMOVED_REASON}",
            ),
            event="resolved",
            chain=status.chain,
            chain_id=record.chain_id,
            pool=status.pool,
            pool_name=record.pool_name,
            layer=status.layer,
            level=status.level,
            block=block,
            block_hash=block_hash,
            time=time,
            since=status.since,
            reason=REMOVED_REASON,
            values=values,
        )

    # -- checkpoints -------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        return {"records": dict(self.records), "chains": dict(self.chains)}

    def set_state(self, state: Mapping[str, Any] | None) -> None:
        if not state:
            return
        self.records = {
            k: v for k, v in state.get("records", {}).items() if isinstance(v, LayerRecord)
        }
        self.chains = {k: v for k, v in state.get("chains", {}).items() if isinstance(v, ChainMark)}


def retained_topics(
    prefix: str, pools: Iterable[tuple[str, str]], layers: Iterable[str]
) -> set[str]:
    """The per-pool retained topics a config owns: ``{prefix}/pools/{chain}/{pool}`` and
    ``{prefix}/layers/{chain}/{pool}/{layer}`` for every configured pool and layer."""
    names = list(layers)
    out: set[str] = set()
    for chain, pool in pools:
        out.add(f"{prefix}/pools/{chain}/{pool}")
        out.update(f"{prefix}/layers/{chain}/{pool}/{layer}" for layer in names)
    return out


def layer_key(topic: str, prefix: str) -> LayerKey | None:
    """(chain, pool, layer) of a layer state topic under ``prefix``, else None."""
    head = f"{prefix}/layers/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head) :].split("/")
    if len(parts) != 3:
        return None
    return (parts[0], parts[1], parts[2])


@dataclass(frozen=True, slots=True)
class Ownership:
    """The retained per-pool topics this daemon owns (``topics``), and those it still has
    to clear (``clearing``: owned by an earlier config, not yet acknowledged empty)."""

    topics: frozenset[str]
    clearing: frozenset[str] = frozenset()

    def to_state(self) -> dict[str, list[str]]:
        return {"topics": sorted(self.topics), "clearing": sorted(self.clearing)}

    @classmethod
    def from_state(cls, state: Any) -> Ownership | None:
        if not isinstance(state, Mapping):
            return None
        topics = state.get("topics", [])
        clearing = state.get("clearing", [])
        return cls(
            frozenset(t for t in topics if isinstance(t, str)),
            frozenset(t for t in clearing if isinstance(t, str)),
        )
