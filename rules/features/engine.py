"""The streaming feature engine: samples in, one feature snapshot per update out.

This is the only thing the rules engine reads. What it guarantees:

- ``FeatureEngine.update(time, rows, ...)`` takes one sample per listed pool row at
  ``time``, closes the bars of those rows that ended (filling empty intervals, see
  :mod:`rules.features.bars`), commits each closed bar to the indicator and window state,
  adds the sample to the forming bar, and returns every feature of
  :data:`ENGINE_FEATURES` for the listed rows, computed with the forming bar taken as if
  it closed now (a peek: nothing of it is committed). Evaluating at every block
  therefore sees a crash inside a bar.
- ``FeatureEngine.update_table(times, present, ...)`` is the same for a table of steps
  in one call. Both run the one compiled loop, :func:`rules.features.kernels.feature_steps`,
  on the same state: a table gives, step for step and bit for bit, what the ``update``
  calls give, and so does any cut of it into tables.
- The values a peek shows at the last sample of a bar are the values committed when it
  closes: RSI/MACD/BBANDS are those of :mod:`rules.indicators` on the bar closes (the
  same step functions, so TA-Lib's to 1e-9), the proxies agree with their definitions
  (:mod:`rules.features.proxies`) to rounding (they run on O(1) running sums).
- Each pool has its own bar timeline (bars close when that pool's next sample arrives),
  so the rows of one chain can be restored with ``set_state(state, rows)`` and replayed
  after a reorganisation while other pools go on. ``get_state`` is bit-exact: a plain
  dict of three numpy arrays, ints and the settings (picklable); ``set_state`` checks all
  of it before changing anything, and refuses a state of another format (an older
  version's checkpoint) with a ValueError.
- A late sample (for a bar that already closed) is dropped and counted per pool
  (:attr:`FeatureEngine.late_dropped`); its row is still reported, with its forming bar
  as it was, and listed in the snapshot's ``late_rows``.
- Cost per update is O(rows) in compiled code, plus O(rows * gap) for rows that skipped
  ``gap`` intervals (each empty interval is a bar the indicators step through), plus
  O(K * corr_window) for ``corr`` when some bar closed. The state is allocated once; an
  update allocates only what it returns.
- Snapshot arrays are read-only and owned by the snapshot: keeping them is safe.
- Cross-pool features (one value for every row of a step): ``breadth`` adds to the
  committed advance-decline line the sign of every pool's forming bar (as if all closed
  now); ``corr`` is over closed bars only, across the pools whose last closed bar is the
  newest one and whose window is full (see :mod:`rules.features.proxies`).
- numba loads with the first engine, not with this module: loading a config
  (``alvh check-config``) imports :class:`FeatureParams` and the pipeline without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rules.features.bars import sample_columns, validate_rows
from rules.features.params import ENGINE_FEATURES, FeatureParams

__all__ = ["ENGINE_FEATURES", "FeatureEngine", "FeatureParams", "FeatureSnapshot"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

#: Version of :meth:`FeatureEngine.get_state`'s layout (1 was the per-step engine's).
STATE_FORMAT = 2

_NAMES = frozenset(ENGINE_FEATURES)
_N_FEATURES = len(ENGINE_FEATURES)


def _read_only(array: NDArray[Any]) -> NDArray[Any]:
    array.flags.writeable = False
    return array


_NO_ROWS: I64 = _read_only(np.zeros(0, dtype=np.int64))


@dataclass(frozen=True, slots=True)
class FeatureSnapshot:
    """Features of ``rows`` at ``time`` (forming bars taken as closed now).

    ``values[name][i]`` is feature ``name`` of pool row ``rows[i]``, for every name of
    :data:`ENGINE_FEATURES`. ``late_rows`` are rows whose sample was dropped because its
    bar had already closed (their values are those of their forming bar as it was).
    """

    time: int
    rows: I64
    values: Mapping[str, F64]
    late_rows: I64 = field(default_factory=lambda: _NO_ROWS)

    def __post_init__(self) -> None:
        if self.rows.ndim != 1:
            raise ValueError("FeatureSnapshot.rows must be 1-D")
        if self.values.keys() != _NAMES:
            missing = sorted(_NAMES - set(self.values))
            extra = sorted(set(self.values) - _NAMES)
            raise ValueError(f"FeatureSnapshot.values: missing {missing}, unknown {extra}")
        shape = self.rows.shape
        for name, value in self.values.items():
            if value.shape != shape:
                raise ValueError(f"FeatureSnapshot.values[{name!r}] is not aligned with rows")

    def row(self, i: int) -> dict[str, float]:
        """Features of the ``i``-th listed row as plain floats."""
        return {name: float(self.values[name][i]) for name in ENGINE_FEATURES}


class FeatureEngine:
    """Streaming features of ``n_pools`` pools (rows ``0 .. n_pools - 1``).

    The state is three arrays, the ones the compiled loop works on (laid out by
    :func:`rules.features.kernels.new_state`): per-pool values (:attr:`floats`,
    :attr:`ints`, one row per pool) and windows (:attr:`rings`, one column per pool).
    """

    #: The state arrays, by name in :meth:`get_state`, and the axis of their pools.
    _STATE = (("floats", 0), ("ints", 0), ("rings", 1))

    def __init__(self, params: FeatureParams, fees: NDArray[np.float64]) -> None:
        # numba loads here, not at import: see the module docstring.
        from rules.features import kernels  # noqa: PLC0415

        if not isinstance(params, FeatureParams):
            raise TypeError("params must be a FeatureParams")
        fee_arr = np.array(fees, dtype=np.float64, copy=True)
        if fee_arr.ndim != 1:
            raise ValueError("fees must be a 1-D array, one fee per pool")
        known = fee_arr[~np.isnan(fee_arr)]
        if known.size and not bool(np.all((known >= 0.0) & (known < 1.0))):
            raise ValueError("fees must be fractions in [0, 1) (0.003 for 0.3%) or NaN")
        k = int(fee_arr.shape[0])
        self.params = params
        self.n_pools = k
        #: Fee tier per pool (a fraction, NaN if unknown); may be updated in place.
        self.fees = fee_arr
        state = kernels.new_state(params, k)
        self.floats, self.ints, self.rings, self._layout, self._settings = state
        # Cross-pool values carried between calls, derived from the state (never saved):
        # the breadth with every forming bar, and whether _corr is current.
        self._cross = np.zeros(2, dtype=np.int64)
        self._corr = np.full(1, math.nan)
        self._weights = np.zeros(k)  # scratch of the corr pass
        self._slots = np.zeros(kernels.N_SLOTS, dtype=np.int64)  # scratch: ring rows of a bar
        self._steps = kernels.feature_steps
        self._check = kernels.check_samples
        self._sample_errors = kernels.SAMPLE_ERRORS
        self._late_dropped = kernels.late_dropped
        self._breadth_total = kernels.breadth_total
        # One-step calls reuse these (the time and the bounds of its samples).
        self._one_time = np.zeros(1, dtype=np.int64)
        self._one_step = np.zeros(2, dtype=np.int64)
        self._row_scratch = np.zeros(k, dtype=np.bool_)

    @property
    def late_dropped(self) -> I64:
        """Samples dropped as late, per pool (cumulative; read-only view)."""
        view = self._late_dropped(self.ints).view()
        view.flags.writeable = False
        return view

    # ------------------------------------------------------------------ update

    def update(
        self,
        time: int,
        rows: NDArray[np.int64],
        price: NDArray[np.float64],
        tvl: NDArray[np.float64],
        tick_tvl: NDArray[np.float64],
        volume: NDArray[np.float64],
        swaps: NDArray[np.int64],
        mev_swaps: NDArray[np.int64],
    ) -> FeatureSnapshot:
        """Feed one sample per row at ``time``; features of ``rows`` (forming bar peeked).
        Raises ValueError for a bad row or sample value (:meth:`check_samples`), with
        nothing changed."""
        if isinstance(time, bool) or not isinstance(time, int | np.integer) or time < 0:
            raise ValueError(f"time must be an int >= 0 (unix seconds), got {time!r}")
        # One layout for the compiled loop (a strided view would compile another one).
        idx = np.ascontiguousarray(validate_rows(rows, self.n_pools, self._row_scratch))
        n = int(idx.size)
        columns = sample_columns(n, price, tvl, tick_tvl, volume, swaps, mev_swaps)
        if n:
            price_c, tvl_c, tick_tvl_c, volume_c, swaps_c, mev_swaps_c = columns
            code = self._check(price_c, volume_c, tvl_c, tick_tvl_c, swaps_c, mev_swaps_c)
            if code:
                raise ValueError(self._sample_errors[code])
        out = np.empty((_N_FEATURES, n))
        late = np.empty(n, dtype=np.bool_)
        self._one_time[0] = time
        self._one_step[1] = n
        n_late = self._run(self._one_time, self._one_step, idx, columns, out, False, late)
        out.flags.writeable = False
        return FeatureSnapshot(
            time=int(time),
            rows=idx,
            values=dict(zip(ENGINE_FEATURES, out, strict=True)),
            late_rows=_read_only(idx[late]) if n_late else _NO_ROWS,
        )

    def check_samples(
        self,
        price: NDArray[Any],
        volume: NDArray[Any],
        tvl: NDArray[Any],
        tick_tvl: NDArray[Any],
        swaps: NDArray[Any],
        mev_swaps: NDArray[Any],
    ) -> None:
        """The value rules of samples (arrays of any one shape); raises ValueError.

        Prices are positive and finite, volumes >= 0 and finite, TVLs finite or NaN (not
        known), and ``0 <= mev_swaps <= swaps``.
        """
        code: int = self._check(
            np.ascontiguousarray(price, dtype=np.float64).reshape(-1),
            np.ascontiguousarray(volume, dtype=np.float64).reshape(-1),
            np.ascontiguousarray(tvl, dtype=np.float64).reshape(-1),
            np.ascontiguousarray(tick_tvl, dtype=np.float64).reshape(-1),
            np.ascontiguousarray(swaps, dtype=np.int64).reshape(-1),
            np.ascontiguousarray(mev_swaps, dtype=np.int64).reshape(-1),
        )
        if code:
            raise ValueError(self._sample_errors[code])

    def update_table(
        self,
        times: I64,
        present: NDArray[np.bool_],
        price: F64,
        tvl: F64,
        tick_tvl: F64,
        volume: F64,
        swaps: I64,
        mev_swaps: I64,
    ) -> F64:
        """``update(times[t], rows_t, price[t, rows_t], ...)`` for each ``t``, ``rows_t``
        the rows where ``present[t]`` (a time without any changes nothing), in one call.

        Every argument but ``times`` has shape ``(T, n_pools)``; the times are
        non-decreasing and the present values were checked (:meth:`check_samples`).
        Returns ``out[f, t, row]``, feature ``ENGINE_FEATURES[f]`` of each step's
        snapshot, NaN where the row has no sample.
        """
        k = self.n_pools
        stamps = np.ascontiguousarray(times, dtype=np.int64)
        n_steps = int(stamps.shape[0])
        mask = np.asarray(present, dtype=np.bool_)
        table = (price, tvl, tick_tvl, volume, swaps, mev_swaps)
        starts = np.empty(n_steps + 1, dtype=np.int64)
        starts[0] = 0
        if bool(mask.all()):
            # Every pool at every step: the samples in table order, no gather or scatter.
            n = n_steps * k
            rows = np.tile(np.arange(k, dtype=np.int64), n_steps)
            np.cumsum(np.full(n_steps, k, dtype=np.int64), out=starts[1:])
            flat = [np.asarray(column).reshape(n) for column in table]
            out = np.empty((_N_FEATURES, n))
        else:
            step_of, rows = np.nonzero(mask)  # step-major, rows ascending in each step
            n = int(rows.size)
            np.cumsum(np.count_nonzero(mask, axis=1), out=starts[1:])
            flat = [np.asarray(column)[step_of, rows] for column in table]
            out = np.full((_N_FEATURES, n_steps * k), math.nan)
        columns = sample_columns(n, *flat)
        late = np.empty(n, dtype=np.bool_)
        self._run(stamps, starts, np.ascontiguousarray(rows, np.int64), columns, out, True, late)
        return out.reshape(_N_FEATURES, n_steps, k)

    def _run(
        self,
        times: I64,
        starts: I64,
        rows: I64,
        columns: tuple[F64, F64, F64, F64, I64, I64],
        out: F64,
        dense: bool,
        late: NDArray[np.bool_],
    ) -> int:
        price, tvl, tick_tvl, volume, swaps, mev_swaps = columns
        n_late: int = self._steps(
            times,
            starts,
            rows,
            price,
            tvl,
            tick_tvl,
            volume,
            swaps,
            mev_swaps,
            out,
            dense,
            late,
            self.floats,
            self.ints,
            self.rings,
            self._cross,
            self._corr,
            self._weights,
            self._slots,
            self.fees,
            self._layout,
            self._settings,
        )
        return n_late

    # ------------------------------------------------------------------ state

    def get_state(self) -> dict[str, Any]:
        """Bit-exact, picklable copy of the whole engine state."""
        state: dict[str, Any] = {
            "format": STATE_FORMAT,
            "params": self.params.as_dict(),
            "n_pools": self.n_pools,
        }
        for name, _ in self._STATE:
            state[name] = getattr(self, name).copy()
        return state

    def set_state(
        self,
        state: Mapping[str, Any],
        rows: NDArray[np.int64] | None = None,
        source_rows: NDArray[np.int64] | None = None,
    ) -> None:
        """Restore ``state`` (from ``get_state``); with ``rows``, only those pools.

        A row-wise restore puts those pools back exactly where they were (bars,
        indicators, windows, breadth contributions); the other pools keep theirs.
        With ``source_rows`` (aligned with ``rows``) pool ``rows[i]`` gets the saved pool
        ``source_rows[i]``: a state saved for another table of pools (a config that added
        or removed pools) restores the pools both tables share.
        Raises ValueError (and changes nothing) for a state of another format, other
        params or (without ``source_rows``) another number of pools.
        """
        if source_rows is not None:
            self._set_state_mapped(state, rows, source_rows)
            return
        if state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"feature state has format {state.get('format')!r}, this version reads "
                f"format {STATE_FORMAT} (a checkpoint of another alvh version)"
            )
        if state.get("params") != self.params.as_dict():
            raise ValueError("state was saved with different FeatureParams")
        if state.get("n_pools") != self.n_pools:
            raise ValueError(f"state has {state.get('n_pools')} pools, engine has {self.n_pools}")
        saved = {name: np.asarray(state[name]) for name, _ in self._STATE}
        for name, array in saved.items():
            own = getattr(self, name)
            if array.shape != own.shape or array.dtype != own.dtype:
                raise ValueError(
                    f"state {name} is {array.dtype}{array.shape}, expected {own.dtype}{own.shape}"
                )
        idx = None if rows is None else validate_rows(rows, self.n_pools)
        for name, axis in self._STATE:
            own, array = getattr(self, name), saved[name]
            if idx is None:
                own[...] = array
            elif axis == 0:
                own[idx] = array[idx]
            else:
                own[:, idx] = array[:, idx]
        self._cross[0] = self._breadth_total(self.ints)
        self._cross[1] = 0  # corr is recomputed from the restored windows

    def _set_state_mapped(
        self,
        state: Mapping[str, Any],
        rows: NDArray[np.int64] | None,
        source_rows: NDArray[np.int64],
    ) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"feature state has format {state.get('format')!r}, this version reads "
                f"format {STATE_FORMAT} (a checkpoint of another alvh version)"
            )
        if state.get("params") != self.params.as_dict():
            raise ValueError("state was saved with different FeatureParams")
        if rows is None or len(rows) != len(source_rows):
            raise ValueError("source_rows needs rows of the same length")
        n_saved = int(state.get("n_pools", -1))
        idx = validate_rows(rows, self.n_pools)
        src = validate_rows(source_rows, n_saved)
        saved = {name: np.asarray(state[name]) for name, _ in self._STATE}
        for name, axis in self._STATE:
            own, array = getattr(self, name), saved[name]
            other = [n for i, n in enumerate(array.shape) if i != axis]
            mine = [n for i, n in enumerate(own.shape) if i != axis]
            if array.dtype != own.dtype or other != mine or array.shape[axis] != n_saved:
                raise ValueError(
                    f"state {name} is {array.dtype}{array.shape}, expected {own.dtype} with "
                    f"{n_saved} pools on axis {axis} and otherwise {own.shape}"
                )
        for name, axis in self._STATE:
            own, array = getattr(self, name), saved[name]
            if axis == 0:
                own[idx] = array[src]
            else:
                own[:, idx] = array[:, src]
        self._cross[0] = self._breadth_total(self.ints)
        self._cross[1] = 0  # corr is recomputed from the restored windows
