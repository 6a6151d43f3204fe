"""The one pipeline shared by the live daemon and the backtest.

samples -> bars + features (:mod:`rules.features.engine`) -> layer engine
(:mod:`rules.layers.engine`) -> hedge advice (:mod:`rules.hedge.advice`) -> :class:`Alert`.

Guarantees:
- pure and deterministic: the same steps in the same order give the same alerts
  with the same ids, whichever adapter produced them;
- every step evaluates the layers on the pools it was given, at that step's data
  time, with the forming bar taken as if it closed now (DESIGN.md);
- :meth:`Pipeline.rollback` undoes a chain's steps after a block (a reorg): state
  is restored for that chain's pools and a ``retracted`` alert is produced for
  every notified ``firing`` whose block was discarded;
- :meth:`Pipeline.get_state` / :meth:`Pipeline.set_state` round-trip bit-exactly
  (warm restarts);
- :meth:`Pipeline.step_many` (a batch of steps over a table of samples, what a replay
  or a catch-up feeds) is exactly the sequence of :meth:`Pipeline.step` calls it stands
  for: the same alerts, in the same order, with the same ids, and the same state after.
  Both run the one feature loop (:mod:`rules.features.kernels`), a step for
  :meth:`Pipeline.step` and a whole table for :meth:`Pipeline.step_many`; the layers of a
  table are evaluated in one call too, or a step at a time when layer statuses are
  wanted (what a catch-up publishes). A batch does once what it can (validation,
  calendar scales): its sample values are checked for the whole table before the first
  step, so a bad one anywhere is refused with nothing stepped.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rules.alert import ALERT_VALUE_NAMES, Alert, LayerStatus, alert_id
from rules.calendar import CalendarWindow, threshold_scale, threshold_scale_series
from rules.features.bars import is_all_rows
from rules.features.engine import FeatureEngine, FeatureSnapshot
from rules.features.params import ENGINE_FEATURES, FeatureParams
from rules.hedge.advice import Position, recommend
from rules.layers.engine import LayerEngine, LayerSpec, State, Transition
from rules.types import PoolId, PoolSample

_STATE_NAMES: dict[State, Any] = {
    State.INACTIVE: "inactive",
    State.PENDING: "pending",
    State.FIRING: "firing",
}


@dataclass(frozen=True, slots=True)
class PoolInfo:
    """A pool as the pipeline knows it: identity, display name, fee tier, optional LP position."""

    pool: PoolId
    chain_id: int
    name: str
    fee: float = math.nan
    position: Position | None = None

    def __post_init__(self) -> None:
        if self.chain_id <= 0:
            raise ValueError(f"PoolInfo.chain_id must be positive, got {self.chain_id}")
        if not (math.isnan(self.fee) or 0 <= self.fee < 1):
            raise ValueError(f"PoolInfo.fee must be a fraction in [0, 1), got {self.fee}")


@dataclass(frozen=True, slots=True)
class PipelineSpec:
    """What the config says about bars, features, layers and calendar windows."""

    features: FeatureParams
    layers: tuple[LayerSpec, ...]
    calendar: tuple[CalendarWindow, ...] = ()
    reorg_depth: int = 64

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("PipelineSpec needs at least one layer")
        if self.reorg_depth < 1:
            raise ValueError(f"reorg_depth must be >= 1, got {self.reorg_depth}")


@dataclass(slots=True)
class StepResult:
    """What one step produced. ``alerts`` are to be published; ``suppressed`` were
    inhibited (kept for the record); ``layers`` are layer-state changes for the
    retained layer topics."""

    time: int
    snapshot: FeatureSnapshot
    threshold_scale: float
    alerts: list[Alert] = field(default_factory=list)
    suppressed: list[Alert] = field(default_factory=list)
    layers: list[LayerStatus] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)


@dataclass(slots=True)
class BatchResult:
    """What :meth:`Pipeline.step_many` produced over ``times`` (``T`` steps, ``K`` pools).

    ``alerts``, ``suppressed`` and ``layers`` are the concatenation of the per-step lists.
    ``states[t, li, row]`` is the state (:class:`~rules.layers.engine.State` value) of layer ``li``
    (engine order) on pool ``row`` after step ``t``; ``values[name][t, row]`` the feature
    ``name`` of pool ``row`` at step ``t`` for each requested name (NaN where the pool had
    no sample); ``threshold_scale[t]`` the calendar scale at step ``t``.
    """

    times: NDArray[np.int64]
    states: NDArray[np.int8]
    values: dict[str, NDArray[np.float64]]
    threshold_scale: NDArray[np.float64]
    alerts: list[Alert] = field(default_factory=list)
    suppressed: list[Alert] = field(default_factory=list)
    layers: list[LayerStatus] = field(default_factory=list)


_Columns = tuple[
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.float64],
    NDArray[np.int64],
    NDArray[np.int64],
]


_SAMPLE_COLUMNS = ("price", "tvl", "tick_tvl", "volume", "swaps", "mev_swaps")
#: Pool-steps per chunk of :meth:`Pipeline.step_many` (:meth:`Pipeline._table_chunk`),
#: whatever the number of pools: bounds what a chunk holds, per pool-step 24 floats of
#: features, the gathered sample (6 values, its row), 4 truth bytes per layer and an
#: 80-byte event row per layer reserved (touched only where events happen): about 65 MiB
#: written and 60 MiB more reserved at 3 layers.
TABLE_CELLS = 1 << 18


@dataclass(slots=True)
class _StepInput:
    time: int
    block: int
    block_hash: str
    rows: NDArray[np.int64]
    columns: _Columns


@dataclass(slots=True)
class _ChainJournal:
    """Enough history to undo a chain's recent steps: periodic snapshots of that
    chain's rows plus the step inputs since the oldest one."""

    rows: NDArray[np.int64]
    snapshots: deque[tuple[int, dict[str, Any]]] = field(default_factory=deque)
    steps: deque[_StepInput] = field(default_factory=deque)
    fired: deque[Alert] = field(default_factory=deque)
    last_block: int = -1


class Pipeline:
    """Features, layers and hedge advice for a fixed table of pools (rows)."""

    def __init__(self, spec: PipelineSpec, pools: Sequence[PoolInfo]) -> None:
        if not pools:
            raise ValueError("Pipeline needs at least one pool")
        self.spec = spec
        self.pools: tuple[PoolInfo, ...] = tuple(pools)
        self.row_of: dict[PoolId, int] = {info.pool: i for i, info in enumerate(self.pools)}
        if len(self.row_of) != len(self.pools):
            raise ValueError("Pipeline pools must be unique")
        fees = np.array([info.fee for info in self.pools], dtype=np.float64)
        self.features = FeatureEngine(spec.features, fees)
        self.engine = LayerEngine(spec.layers, len(self.pools))
        self._value_names: list[tuple[str, ...]] = []
        for layer in self.engine.layers:
            extra = tuple(sorted(n for n in layer.names if n not in ALERT_VALUE_NAMES))
            self._value_names.append(ALERT_VALUE_NAMES + extra)
        self._entry_price: dict[int, float] = {}
        # Mirror of `_entry_price`'s keys, so that a step checks its rows in one operation,
        # and how many are still unknown (none: the check is skipped).
        self._entry_known = np.zeros(len(self.pools), dtype=np.bool_)
        self._entries_unknown = len(self.pools)
        # threshold_scale columns by (rows, scale): read-only, shared by the steps.
        self._scale_columns: dict[tuple[int, float], NDArray[np.float64]] = {}
        self._journals: dict[str, _ChainJournal] = {}
        for chain in sorted({info.pool.chain for info in self.pools}):
            rows = np.array(
                [i for i, info in enumerate(self.pools) if info.pool.chain == chain], dtype=np.int64
            )
            self._journals[chain] = _ChainJournal(rows=rows)

    def set_fee(self, row: int, fee: float) -> None:
        """Fee tier read on chain (the config may leave it unset)."""
        if not 0 <= fee < 1:
            raise ValueError(f"fee must be a fraction in [0, 1), got {fee}")
        self.pools = (*self.pools[:row], replace(self.pools[row], fee=fee), *self.pools[row + 1 :])
        self.features.fees[row] = fee

    def set_name(self, row: int, name: str) -> None:
        """Display name read on chain (token symbols), when the config gives none."""
        self.pools = (
            *self.pools[:row],
            replace(self.pools[row], name=name),
            *self.pools[row + 1 :],
        )

    # -- stepping --------------------------------------------------------------

    def step(
        self,
        time: int,
        rows: NDArray[np.int64],
        price: NDArray[np.float64],
        tvl: NDArray[np.float64],
        tick_tvl: NDArray[np.float64],
        volume: NDArray[np.float64],
        swaps: NDArray[np.int64],
        mev_swaps: NDArray[np.int64],
        *,
        block: int = 0,
        block_hash: str = "",
        chain: str | None = None,
    ) -> StepResult:
        """Feed one sample per pool in ``rows`` at ``time`` and evaluate the layers.

        ``chain`` enables reorg rollback for that chain's pools (live mode); the
        backtest leaves it ``None``.
        """
        journal = self._journals.get(chain) if chain is not None else None
        # Copies only for the journal, which keeps them for a reorg replay whatever the
        # caller does next; the feature engine itself never keeps the caller's arrays.
        convert = np.array if journal is not None else np.asarray
        columns: _Columns = (
            convert(price, dtype=np.float64),
            convert(tvl, dtype=np.float64),
            convert(tick_tvl, dtype=np.float64),
            convert(volume, dtype=np.float64),
            convert(swaps, dtype=np.int64),
            convert(mev_swaps, dtype=np.int64),
        )
        if journal is not None:
            self._journal_before(journal, time, block, block_hash, rows, columns)
        result = self._step(time, rows, columns, block, block_hash, replay=False)
        if journal is not None:
            journal.last_block = block
            journal.fired.extend(a for a in result.alerts if a.event == "firing")
            self._trim(journal)
        return result

    def step_samples(self, samples: Sequence[PoolSample]) -> list[StepResult]:
        """Group samples by (time, block, block hash, chain) and step each group, in time
        order (the daemon feeds one block of one chain at a time: one group)."""
        out: list[StepResult] = []
        groups: dict[tuple[int, int, str, str], list[PoolSample]] = {}
        for s in samples:
            groups.setdefault((s.time, s.block, s.block_hash, s.pool.chain), []).append(s)
        for (time, block, block_hash, chain), group in sorted(
            groups.items(), key=lambda kv: kv[0][:2]
        ):
            rows = np.array([self.row_of[s.pool] for s in group], dtype=np.int64)
            out.append(
                self.step(
                    time,
                    rows,
                    np.array([s.price for s in group]),
                    np.array([s.tvl for s in group]),
                    np.array([s.tick_tvl for s in group]),
                    np.array([s.volume for s in group]),
                    np.array([s.swaps for s in group], dtype=np.int64),
                    np.array([s.mev_swaps for s in group], dtype=np.int64),
                    block=block,
                    block_hash=block_hash,
                    chain=chain,
                )
            )
        return out

    def _step(
        self,
        time: int,
        rows: NDArray[np.int64],
        columns: _Columns,
        block: int,
        block_hash: str,
        *,
        replay: bool,
    ) -> StepResult:
        snapshot = self.features.update(time, rows, *columns)
        scale = threshold_scale(self.spec.calendar, time) if self.spec.calendar else 1.0
        values: dict[str, NDArray[np.float64]] = dict(snapshot.values)
        values["threshold_scale"] = self._scale_column(rows.size, scale)
        if self._entries_unknown:
            new_rows = ~self._entry_known[rows]
            if new_rows.any():
                for i in np.flatnonzero(new_rows).tolist():
                    self._entry_price[int(rows[i])] = float(columns[0][i])
                self._entry_known[rows[new_rows]] = True
                self._entries_unknown = int(np.count_nonzero(~self._entry_known))
        transitions = self.engine.evaluate(time, rows, values, block=block, block_hash=block_hash)
        result = StepResult(
            time=time, snapshot=snapshot, threshold_scale=scale, transitions=transitions
        )
        if replay or not transitions:
            return result
        self._collect(
            transitions,
            rows,
            values,
            scale,
            result.alerts,
            result.suppressed,
            result.layers,
        )
        return result

    def _collect(
        self,
        transitions: list[Transition],
        rows: NDArray[np.int64],
        values: Mapping[str, NDArray[np.float64]],
        scale: float,
        alerts: list[Alert],
        suppressed: list[Alert],
        layers: list[LayerStatus],
    ) -> None:
        """The alerts and the layer statuses of one step's transitions; ``values`` are
        aligned with ``rows``."""
        if not transitions:
            return
        # Column of each transition's row (the row itself when every pool is in the step).
        col_of = (
            None
            if is_all_rows(rows, len(self.pools))
            else {r: i for i, r in enumerate(rows.tolist())}
        )
        for tr in transitions:
            ci = tr.row if col_of is None else col_of[tr.row]
            layers.append(self._status(tr, values, ci))
            if tr.event is None:
                continue
            alert = self._alert(tr, values, ci, scale)
            if tr.notify:
                alerts.append(alert)
            else:
                suppressed.append(alert)

    def step_many(
        self,
        times: NDArray[np.int64],
        price: NDArray[np.float64],
        tvl: NDArray[np.float64],
        tick_tvl: NDArray[np.float64],
        volume: NDArray[np.float64],
        swaps: NDArray[np.int64],
        mev_swaps: NDArray[np.int64],
        *,
        present: NDArray[np.bool_] | None = None,
        blocks: NDArray[np.int64] | None = None,
        block_hash: str = "",
        keep: Sequence[str] = (),
        statuses: bool = True,
    ) -> BatchResult:
        """Step through a table of samples: ``T`` times, one column per pool row.

        Every sample argument has shape ``(T, K)`` (``K`` = number of pools); ``present``
        (default: everywhere) says which pools have a sample at each time, the other
        cells are ignored. Step ``t`` is exactly ``step(times[t], rows_t, price[t, rows_t],
        ..., block=blocks[t], block_hash=block_hash)`` with ``rows_t`` the present rows
        (a time with none is skipped), without a chain (no reorg journal). ``keep`` names
        the features (or ``threshold_scale``) to return per step; ``statuses=False`` skips
        building the layer statuses (the retained-topic payloads) nobody will publish.
        """
        stamps = np.asarray(times, dtype=np.int64)
        n_steps, n_pools = stamps.size, len(self.pools)
        table = (price, tvl, tick_tvl, volume, swaps, mev_swaps)
        for name, column in zip(_SAMPLE_COLUMNS, table, strict=True):
            if np.shape(column) != (n_steps, n_pools):
                raise ValueError(
                    f"step_many: {name} must have shape ({n_steps}, {n_pools}), "
                    f"got {np.shape(column)}"
                )
        unknown = sorted(set(keep) - set(ENGINE_FEATURES) - {"threshold_scale"})
        if unknown:
            raise ValueError(f"step_many: unknown features to keep: {unknown}")
        if n_steps > 1 and not bool(np.all(np.diff(stamps) >= 0)):
            raise ValueError("step_many: times must be non-decreasing")
        block_numbers = (
            np.zeros(n_steps, dtype=np.int64)
            if blocks is None
            else np.asarray(blocks, dtype=np.int64)
        )
        if block_numbers.shape != (n_steps,):
            raise ValueError(f"step_many: blocks must have shape ({n_steps},)")
        mask = None if present is None else np.asarray(present, dtype=np.bool_)
        if mask is not None and mask.shape != (n_steps, n_pools):
            raise ValueError(f"step_many: present must have shape ({n_steps}, {n_pools})")
        # The calendar at every time at once; the same products as threshold_scale().
        scales = (
            threshold_scale_series(self.spec.calendar, stamps)
            if self.spec.calendar
            else np.ones(n_steps)
        )
        columns_of: tuple[NDArray[Any], ...] = (
            np.asarray(price, dtype=np.float64),
            np.asarray(tvl, dtype=np.float64),
            np.asarray(tick_tvl, dtype=np.float64),
            np.asarray(volume, dtype=np.float64),
            np.asarray(swaps, dtype=np.int64),
            np.asarray(mev_swaps, dtype=np.int64),
        )
        # The value rules of every sample at once (the steps then skip them): a bad value
        # anywhere in the table is refused before the first step.
        price_c, tvl_c, tick_tvl_c, volume_c, swaps_c, mev_swaps_c = (
            c if mask is None else c[mask] for c in columns_of
        )
        try:
            self.features.check_samples(price_c, volume_c, tvl_c, tick_tvl_c, swaps_c, mev_swaps_c)
        except ValueError as exc:
            raise ValueError(f"step_many: {exc}") from None
        result = BatchResult(
            times=stamps.copy(),
            states=np.empty((n_steps, len(self.engine.layers), n_pools), dtype=np.int8),
            values={name: np.full((n_steps, n_pools), np.nan) for name in keep},
            threshold_scale=scales,
        )
        # In chunks of TABLE_CELLS pool-steps: bounded feature, truth and event tables.
        table_mask = np.ones((n_steps, n_pools), dtype=np.bool_) if mask is None else mask
        chunk = max(1, TABLE_CELLS // n_pools)
        for offset in range(0, n_steps, chunk):
            part = slice(offset, min(offset + chunk, n_steps))
            self._table_chunk(
                stamps[part],
                table_mask[part],
                tuple(column[part] for column in columns_of),
                block_numbers[part],
                block_hash,
                scales[part],
                result,
                offset,
                statuses,
            )
        return result

    def _table_chunk(
        self,
        stamps: NDArray[np.int64],
        present: NDArray[np.bool_],
        columns: tuple[NDArray[Any], ...],
        blocks: NDArray[np.int64],
        block_hash: str,
        scales: NDArray[np.float64],
        result: BatchResult,
        offset: int,
        statuses: bool,
    ) -> None:
        """Steps ``offset ..`` of :meth:`step_many`: the features of the whole chunk in one
        call of the feature engine, then the layers, over the table in one call when no
        status is wanted, else one evaluation per step (as :meth:`step` does)."""
        n_steps, n_pools = stamps.size, len(self.pools)
        price = columns[0]
        if self._entries_unknown:
            # A pool's entry price is its first sample's.
            sampled = present.any(axis=0)
            first = present.argmax(axis=0)
            for row in np.flatnonzero(~self._entry_known & sampled).tolist():
                self._entry_price[row] = float(price[first[row], row])
                self._entry_known[row] = True
            self._entries_unknown = int(np.count_nonzero(~self._entry_known))
        table = self.table_features(stamps, present, *columns)
        for name, kept in result.values.items():
            if name == "threshold_scale":
                kept[offset : offset + n_steps] = np.where(present, scales[:, None], np.nan)
            else:
                kept[offset : offset + n_steps] = table[ENGINE_FEATURES.index(name)]
        stamp_list, block_list, scale_list = stamps.tolist(), blocks.tolist(), scales.tolist()
        if statuses:
            self._chunk_steps(
                table, present, stamp_list, block_list, block_hash, scale_list, result, offset
            )
            return
        flat = {name: table[i].reshape(-1) for i, name in enumerate(ENGINE_FEATURES)}
        flat["threshold_scale"] = np.repeat(scales, n_pools)
        events = self.table_rules(stamps, present, flat, result.states[offset : offset + n_steps])
        if not events.size:
            return
        step_of: int = -1
        values: dict[str, NDArray[np.float64]] = {}
        for event in events.tolist():
            t = event[0]
            if t != step_of:
                step_of = t
                values = {name: table[i, t] for i, name in enumerate(ENGINE_FEATURES)}
                values["threshold_scale"] = self._scale_column(n_pools, scale_list[t])
            tr = self.engine.table_transition(
                event, stamp_list[t], values, block=block_list[t], block_hash=block_hash
            )
            alert = self._alert(tr, values, tr.row, scale_list[t])
            if tr.notify:
                result.alerts.append(alert)
            else:
                result.suppressed.append(alert)

    def _chunk_steps(
        self,
        table: NDArray[np.float64],
        present: NDArray[np.bool_],
        stamps: list[int],
        blocks: list[int],
        block_hash: str,
        scales: list[float],
        result: BatchResult,
        offset: int,
    ) -> None:
        """The layers of a chunk one step at a time (:meth:`LayerEngine.evaluate`), with
        every transition's status, on the features the table pass computed."""
        n_pools = len(self.pools)
        all_rows = np.arange(n_pools, dtype=np.int64)
        everywhere = np.all(present, axis=1)
        for t in range(len(stamps)):
            if everywhere[t]:
                rows = all_rows
                values = {name: table[i, t] for i, name in enumerate(ENGINE_FEATURES)}
            else:
                rows = np.flatnonzero(present[t]).astype(np.int64)
                if rows.size == 0:
                    result.states[offset + t] = self.engine.state
                    continue
                values = {name: table[i, t, rows] for i, name in enumerate(ENGINE_FEATURES)}
            values["threshold_scale"] = self._scale_column(rows.size, scales[t])
            transitions = self.engine.evaluate(
                stamps[t], rows, values, block=blocks[t], block_hash=block_hash
            )
            result.states[offset + t] = self.engine.state
            self._collect(
                transitions,
                rows,
                values,
                scales[t],
                result.alerts,
                result.suppressed,
                result.layers,
            )

    def table_features(
        self,
        stamps: NDArray[np.int64],
        present: NDArray[np.bool_],
        *columns: NDArray[Any],
    ) -> NDArray[np.float64]:
        """Features of a table of steps (:meth:`FeatureEngine.update_table`)."""
        return self.features.update_table(stamps, present, *columns)

    def table_rules(
        self,
        stamps: NDArray[np.int64],
        present: NDArray[np.bool_],
        features: Mapping[str, NDArray[np.float64]],
        states_out: NDArray[np.int8],
    ) -> NDArray[np.int64]:
        """Layer events of a table of steps (:meth:`LayerEngine.evaluate_table`)."""
        return self.engine.evaluate_table(stamps, present, features, states_out)

    def _scale_column(self, size: int, scale: float) -> NDArray[np.float64]:
        column = self._scale_columns.get((size, scale))
        if column is None:
            if len(self._scale_columns) >= 64:  # a few sizes x a few calendar scales
                self._scale_columns.clear()
            column = np.full(size, scale)
            column.flags.writeable = False
            self._scale_columns[(size, scale)] = column
        return column

    def _row_values(
        self, li: int, values: Mapping[str, NDArray[np.float64]], ci: int
    ) -> dict[str, float]:
        return {name: float(values[name][ci]) for name in self._value_names[li]}

    def _status(
        self, tr: Transition, values: Mapping[str, NDArray[np.float64]], ci: int
    ) -> LayerStatus:
        info = self.pools[tr.row]
        spec = self.engine.layers[tr.layer]
        return LayerStatus(
            chain=info.pool.chain,
            pool=info.pool.address,
            layer=spec.name,
            level=spec.level,
            state=_STATE_NAMES[tr.state],
            since=tr.since if tr.state != State.INACTIVE else None,
            time=tr.time,
            values=self._row_values(tr.layer, values, ci),
            reason=tr.reason,
            inhibited_by=tr.inhibited_by,
        )

    def _alert(
        self, tr: Transition, values: Mapping[str, NDArray[np.float64]], ci: int, scale: float
    ) -> Alert:
        assert tr.event is not None
        info = self.pools[tr.row]
        spec = self.engine.layers[tr.layer]
        row_values = self._row_values(tr.layer, values, ci)
        hedge: dict[str, Any] | None = None
        if tr.event == "firing" and spec.hedge is not None:
            hedge = self._hedge(tr, info, values, ci)
        return Alert(
            id=alert_id(
                chain_id=info.chain_id,
                pool=info.pool.address,
                layer=spec.name,
                event=tr.event if not tr.repeat else "repeat",
                since=tr.since,
                time=tr.time,
                block=tr.block,
                block_hash=tr.block_hash,
            ),
            event=tr.event,
            chain=info.pool.chain,
            chain_id=info.chain_id,
            pool=info.pool.address,
            pool_name=info.name,
            layer=spec.name,
            level=spec.level,
            block=tr.block,
            block_hash=tr.block_hash,
            time=tr.time,
            since=tr.since,
            reason=tr.reason,
            values=row_values,
            hedge=hedge,
            repeat=tr.repeat,
            threshold_scale=scale,
            suppressed_by=tr.inhibited_by,
        )

    def _hedge(
        self, tr: Transition, info: PoolInfo, values: Mapping[str, NDArray[np.float64]], ci: int
    ) -> dict[str, Any]:
        spec = self.engine.layers[tr.layer].hedge
        assert spec is not None
        price = float(values["price"][ci])
        position = info.position
        if position is not None and math.isnan(position.entry_price):
            position = position.with_entry_price(self._entry_price.get(tr.row, price))
        advice = recommend(
            spec,
            now=tr.time,
            price=price,
            realized_vol=float(values["realized_vol"][ci]),
            iv=float(values["iv"][ci]),
            position=position,
            fee=info.fee if not math.isnan(info.fee) else 0.0,
            volume_24h=float(values["volume_24h"][ci]),
            tvl=float(values["tvl"][ci]),
        )
        return advice.to_payload()

    # -- reorgs ------------------------------------------------------------------

    def _journal_before(
        self,
        journal: _ChainJournal,
        time: int,
        block: int,
        block_hash: str,
        rows: NDArray[np.int64],
        columns: _Columns,
    ) -> None:
        # Invariant: `steps` holds every step after the oldest snapshot's block. A new
        # snapshot (of the state after the last processed block) is taken at each bar
        # boundary, so a rollback replays at most one bar of steps.
        if not journal.snapshots or (
            journal.steps and self._bar_boundary(journal.steps[-1].time, time)
        ):
            journal.snapshots.append((journal.last_block, self._whole_state()))
        journal.steps.append(_StepInput(time, block, block_hash, rows.copy(), columns))

    def _bar_boundary(self, t0: int, t1: int) -> bool:
        interval = self.spec.features.bar_interval
        return t0 // interval != t1 // interval

    def _trim(self, journal: _ChainJournal) -> None:
        horizon = journal.last_block - self.spec.reorg_depth
        # Keep the newest snapshot at or below the horizon, drop older ones and their steps.
        while len(journal.snapshots) >= 2 and journal.snapshots[1][0] <= horizon:
            journal.snapshots.popleft()
            first = journal.snapshots[0][0]
            while journal.steps and journal.steps[0].block <= first:
                journal.steps.popleft()
        while journal.fired and journal.fired[0].block <= horizon:
            journal.fired.popleft()

    def _whole_state(self) -> dict[str, Any]:
        # Whole-engine copies are simple and exact; rows are selected on restore.
        return {"features": self.features.get_state(), "engine": self.engine.get_state()}

    def rollback(self, chain: str, ancestor: int) -> tuple[list[Alert], list[LayerStatus]]:
        """Undo every step of ``chain`` after block ``ancestor`` (the common ancestor of a reorg).

        Returns ``retracted`` alerts for notified firings in discarded blocks, and the
        restored status of every layer of the chain's pools.
        Raises ``ValueError`` when the reorg is deeper than the journal.
        """
        journal = self._journals[chain]
        usable = [i for i, (b, _) in enumerate(journal.snapshots) if b <= ancestor]
        if not usable:
            raise ValueError(
                f"reorg on {chain} below block {ancestor} is deeper than the kept history "
                f"(reorg_depth={self.spec.reorg_depth})"
            )
        idx = usable[-1]
        snap_block, state = journal.snapshots[idx]
        rows = journal.rows
        self.features.set_state(state["features"], rows)
        self.engine.set_state(state["engine"], rows)
        while len(journal.snapshots) > idx + 1:
            journal.snapshots.pop()
        kept = [s for s in journal.steps if s.block <= ancestor]
        journal.steps = deque(kept)
        for s in kept:
            if s.block > snap_block:
                self._step(s.time, s.rows, s.columns, s.block, s.block_hash, replay=True)
        journal.last_block = ancestor
        retracted: list[Alert] = []
        keep: deque[Alert] = deque()
        for alert in journal.fired:
            if alert.block > ancestor:
                retracted.append(self._retraction(alert))
            else:
                keep.append(alert)
        journal.fired = keep
        return retracted, self.layer_statuses(rows)

    def _retraction(self, fired: Alert) -> Alert:
        return Alert(
            id=alert_id(
                chain_id=fired.chain_id,
                pool=fired.pool,
                layer=fired.layer,
                event="retracted",
                since=fired.since,
                time=fired.time,
                block=fired.block,
                block_hash=fired.id,
            ),
            event="retracted",
            chain=fired.chain,
            chain_id=fired.chain_id,
            pool=fired.pool,
            pool_name=fired.pool_name,
            layer=fired.layer,
            level=fired.level,
            block=fired.block,
            block_hash=fired.block_hash,
            time=fired.time,
            since=fired.since,
            reason=f"block {fired.block} ({fired.block_hash}) was removed by a chain "
            "reorganisation",
            values=fired.values,
            retracts=fired.id,
            threshold_scale=fired.threshold_scale,
        )

    def layer_statuses(self, rows: NDArray[np.int64] | None = None) -> list[LayerStatus]:
        """Current state of every layer on the given pools (all pools by default)."""
        out: list[LayerStatus] = []
        sel = range(len(self.pools)) if rows is None else rows.tolist()
        for row in sel:
            info = self.pools[row]
            for li, spec in enumerate(self.engine.layers):
                state, since = self.engine.status(li, row)
                out.append(
                    LayerStatus(
                        chain=info.pool.chain,
                        pool=info.pool.address,
                        layer=spec.name,
                        level=spec.level,
                        state=_STATE_NAMES[state],
                        since=since if state != State.INACTIVE else None,
                        # The engine keeps no time of the last change: what is known.
                        time=since if state != State.INACTIVE else None,
                        values={},
                    )
                )
        return out

    # -- warm restarts -------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this pipeline is (picklable)."""
        return {
            "pools": [str(info.pool) for info in self.pools],
            "layer_specs": {spec.name: layer_fingerprint(spec) for spec in self.engine.layers},
            "features": self.features.get_state(),
            "engine": self.engine.get_state(),
            "entry_price": dict(self._entry_price),
            "last_block": {c: j.last_block for c, j in self._journals.items()},
            "fired": {c: list(j.fired) for c, j in self._journals.items()},
        }

    def set_state(self, state: Mapping[str, Any]) -> RestoreReport:
        """Restore :meth:`get_state`, as much of it as still applies, and say what was.

        Pools are matched by identity: the pools the saved table and this one share
        continue warm, pools new in this config start fresh (a config that adds or removes
        pools keeps every unchanged pool warm). Layers are matched by name and definition:
        a layer whose rule changed (or a new one) starts cold, on every pool; the others
        continue. Raises ValueError (and restores nothing) when the features cannot be
        restored at all (other feature parameters or bar interval, another format).
        """
        saved_pools: list[str] = list(state["pools"])
        current = [str(info.pool) for info in self.pools]
        saved_row = {name: i for i, name in enumerate(saved_pools)}
        shared = [(row, saved_row[name]) for row, name in enumerate(current) if name in saved_row]
        specs: Mapping[str, str] | None = state.get("layer_specs")
        saved_layers = set(state["engine"]["layers"])
        warm_layers = [
            spec.name
            for spec in self.engine.layers
            if spec.name in saved_layers
            and (specs is None or specs.get(spec.name) == layer_fingerprint(spec))
        ]
        report = RestoreReport(
            pools=tuple(current[row] for row, _ in shared),
            cold_pools=tuple(name for name in current if name not in saved_row),
            layers=tuple(warm_layers),
            cold_layers=tuple(s.name for s in self.engine.layers if s.name not in warm_layers),
        )
        if not shared:
            return report
        rows = np.array([row for row, _ in shared], dtype=np.int64)
        src = np.array([i for _, i in shared], dtype=np.int64)
        if saved_pools == current:
            self.features.set_state(state["features"])
            self.engine.set_state(state["engine"], layers=warm_layers)
        else:
            self.features.set_state(state["features"], rows, source_rows=src)
            self.engine.set_state(state["engine"], rows, source_rows=src, layers=warm_layers)
        row_of_saved = {i: row for row, i in shared}
        self._entry_price = {
            row_of_saved[int(k)]: float(v)
            for k, v in state["entry_price"].items()
            if int(k) in row_of_saved
        }
        self._entry_known[:] = False
        self._entry_known[list(self._entry_price)] = True
        self._entries_unknown = int(np.count_nonzero(~self._entry_known))
        kept = {self.pools[row].pool.address for row, _ in shared}
        for chain, journal in self._journals.items():
            journal.last_block = int(state["last_block"].get(chain, -1))
            journal.fired = deque(
                a
                for a in state["fired"].get(chain, [])
                if a.pool in kept and a.layer in warm_layers
            )
            journal.snapshots.clear()
            journal.steps.clear()
        return report


@dataclass(frozen=True, slots=True)
class RestoreReport:
    """What :meth:`Pipeline.set_state` restored: pools (``chain/address``) and layers that
    continue warm, and those that start cold."""

    pools: tuple[str, ...]
    cold_pools: tuple[str, ...]
    layers: tuple[str, ...]
    cold_layers: tuple[str, ...]


def layer_fingerprint(spec: LayerSpec) -> str:
    """What of a layer its state machine depends on (not its hedge or description): a
    layer whose fingerprint changed cannot continue from its saved state."""
    clear = str(spec.clear_when) if spec.clear_when is not None else ""
    return (
        f"{spec.level}|{spec.when}|{clear}|{spec.for_}|{spec.keep_firing_for}|"
        f"{spec.cooldown}|{spec.repeat_interval}|{spec.inhibit_lower}"
    )


def compile_kernels() -> None:
    """Compile every loop the daemon and the backtest run (numba), or load them from
    numba's cache: the feature loop through a step and through tables, the layer table
    loop, and the indicators' own loops (set-up runs this, so that the first run on a
    machine does not spend seconds compiling)."""
    from rules import indicators  # noqa: PLC0415 - only this function needs them here
    from rules.expr import parse  # noqa: PLC0415 - only this function needs the parser
    from rules.types import FEATURE_NAMES  # noqa: PLC0415

    interval = 3600
    spec = PipelineSpec(
        features=FeatureParams(bar_interval=interval),
        layers=(LayerSpec("L1", 1, parse("price > 0", FEATURE_NAMES)),),
    )
    pools = [PoolInfo(PoolId("compile", f"0x{k + 1:040x}"), 1, f"P{k}", 0.003) for k in range(2)]
    pipeline = Pipeline(spec, pools)
    n_steps = 3
    times = np.arange(n_steps, dtype=np.int64) * interval
    price = np.full((n_steps, 2), 1.0)
    counts = np.zeros((n_steps, 2), dtype=np.int64)
    # The daemon's step (the pools of one block), then tables: all pools present and
    # some absent, without statuses (the backtest) and with them (a catch-up).
    rows = np.arange(2, dtype=np.int64)
    first = pipeline.step(0, rows, price[0], price[0], price[0], price[0], counts[0], counts[0])
    present = np.ones((n_steps, 2), dtype=np.bool_)
    present[1, 0] = False
    batches = [
        pipeline.step_many(
            times + interval * (1 + k * n_steps),
            price,
            price,
            price,
            price,
            counts,
            counts,
            present=present if k else None,
            keep=("rsi",),
            statuses=k == 1,
        )
        for k in range(2)
    ]
    fired = len(first.alerts) + sum(len(b.alerts) for b in batches)
    if fired != 2:  # L1 fires at once on both pools, then holds
        raise RuntimeError(f"compiled loops: expected 2 alerts, got {fired}")
    series = np.linspace(1.0, 2.0, 40)
    indicators.ema(series, 5)
    indicators.rsi(series)
    indicators.macd(series)
    indicators.bbands(series)
    for stream in (
        indicators.StreamingEMA(1, 5),
        indicators.StreamingRSI(1),
        indicators.StreamingMACD(1),
        indicators.StreamingBBands(1),
    ):
        stream.peek(series[:1])
        stream.update(series[:1])
