"""The streaming feature engine: samples in, one feature snapshot per update out.

This is the only thing the rules engine reads. What it guarantees:

- ``FeatureEngine.update(time, rows, ...)`` takes one sample per listed pool row at
  ``time``, closes the bars of those rows that ended (filling empty intervals, see
  :mod:`rules.features.bars`), commits each closed bar to the indicator and window state, adds the
  sample to the forming bar, and returns every feature of :data:`ENGINE_FEATURES` for the
  listed rows, computed with the forming bar taken as if it closed now (a peek: nothing
  of it is committed). Evaluating at every block therefore sees a crash inside a bar.
- Committed values (at bar closes) are exactly the batch values: RSI/MACD/BBANDS equal
  :mod:`rules.indicators` on the bar closes bit for bit; the proxies agree with the
  definitions in :mod:`rules.features.proxies` to rounding (they run on O(1) running sums).
- Each pool has its own bar timeline (bars close when that pool's next sample arrives),
  so the rows of one chain can be restored with ``set_state(state, rows)`` and replayed
  after a reorganisation while other pools go on. ``get_state`` is bit-exact and
  picklable.
- Cost per update is O(rows) vectorised numpy, plus O(K) for ``breadth``, plus
  O(K * corr_window) for ``corr`` when some bar closed, plus O(rows * gap) for rows that
  skipped ``gap`` intervals (each empty interval is a bar the indicators step through).
- Snapshot arrays are read-only and owned by the snapshot: keeping them is safe.
- Cross-pool features: ``breadth`` adds to the committed advance-decline line the sign of
  every pool's forming bar (as if all closed now). ``corr`` is over closed bars only,
  across the pools whose last closed bar is the newest one and whose window is full: a
  forming bar of a pool not sampled yet in this bar would enter as a zero return and
  bias it towards 0. Both are the same value for every row of a snapshot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rules.features.bars import BarAggregator, ClosedBars, is_all_rows, validate_rows
from rules.features.proxies import bars_in, periods_per_year
from rules.indicators import StreamingBBands, StreamingMACD, StreamingRSI
from rules.types import FEATURE_NAMES

__all__ = [
    "CLOSED_VALUE_NAMES",
    "ENGINE_FEATURES",
    "FeatureEngine",
    "FeatureParams",
    "FeatureSnapshot",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

#: Every feature the engine computes: all of FEATURE_NAMES except the calendar's
#: ``threshold_scale``, which the rules engine supplies.
ENGINE_FEATURES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n != "threshold_scale")

#: Committed indicator values reported for each closed bar (``FeatureSnapshot.closed_values``).
CLOSED_VALUE_NAMES: tuple[str, ...] = (
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
)


#: Lambert's IV: 2 * fee * sqrt(volume_24h / tick_tvl) * sqrt(365) (the last factors).
_IV_SCALE = 2.0 * math.sqrt(365.0)
#: A "fewest closed bars" that is past every warm-up (used once the engine is warm).
_WARM = 1 << 62


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"FeatureParams.{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True, slots=True)
class FeatureParams:
    """Feature engine settings. Windows are in bars except ``mev_window`` (seconds)."""

    bar_interval: int  # seconds
    rsi_period: int = 14
    macd_fast: int = 12
    macd_slow: int = 26
    macd_signal: int = 9
    bb_period: int = 20
    bb_nbdev: float = 2.0
    sigma_window: int = 48
    realized_vol_window: int = 48
    corr_window: int = 48
    mev_window: int = 3600  # seconds

    def __post_init__(self) -> None:
        _positive_int("bar_interval", self.bar_interval)
        for name in ("rsi_period", "macd_fast", "macd_slow", "bb_period"):
            _positive_int(name, getattr(self, name), 2)
        _positive_int("macd_signal", self.macd_signal)
        if self.macd_fast >= self.macd_slow:
            raise ValueError(
                f"FeatureParams.macd_fast ({self.macd_fast}) must be < macd_slow ({self.macd_slow})"
            )
        nbdev = self.bb_nbdev
        if isinstance(nbdev, bool) or not isinstance(nbdev, int | float):
            raise ValueError(f"FeatureParams.bb_nbdev must be a number, got {nbdev!r}")
        if not (math.isfinite(nbdev) and nbdev >= 0.0):
            raise ValueError(f"FeatureParams.bb_nbdev must be finite and >= 0, got {nbdev!r}")
        for name in ("sigma_window", "realized_vol_window", "corr_window"):
            _positive_int(name, getattr(self, name), 2)
        _positive_int("mev_window", self.mev_window)

    @property
    def bars_1h(self) -> int:
        return bars_in(3600, self.bar_interval)

    @property
    def bars_4h(self) -> int:
        return bars_in(4 * 3600, self.bar_interval)

    @property
    def bars_24h(self) -> int:
        return bars_in(86400, self.bar_interval)

    @property
    def mev_bars(self) -> int:
        return bars_in(self.mev_window, self.bar_interval)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FeatureParams.__slots__}


@dataclass(frozen=True, slots=True)
class FeatureSnapshot:
    """Features of ``rows`` at ``time`` (forming bars taken as closed now).

    ``values[name][i]`` is feature ``name`` of pool row ``rows[i]``, for every name of
    :data:`ENGINE_FEATURES`. ``closed`` lists the bars this update closed (for charts and
    backtests) and ``closed_values`` the committed indicator values at each of them
    (aligned with ``closed``, names :data:`CLOSED_VALUE_NAMES`). ``late_rows`` are rows
    whose sample was dropped because its bar had already closed.
    """

    time: int
    rows: I64
    values: Mapping[str, F64]
    closed: ClosedBars = field(default_factory=ClosedBars.empty)
    closed_values: Mapping[str, F64] = field(default_factory=dict)
    late_rows: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.rows.ndim != 1:
            raise ValueError("FeatureSnapshot.rows must be 1-D")
        if set(self.values) != set(ENGINE_FEATURES):
            missing = sorted(set(ENGINE_FEATURES) - set(self.values))
            extra = sorted(set(self.values) - set(ENGINE_FEATURES))
            raise ValueError(f"FeatureSnapshot.values: missing {missing}, unknown {extra}")
        for name, value in self.values.items():
            if value.shape != self.rows.shape:
                raise ValueError(f"FeatureSnapshot.values[{name!r}] is not aligned with rows")
        for name, value in self.closed_values.items():
            if value.shape != self.closed.rows.shape:
                raise ValueError(f"FeatureSnapshot.closed_values[{name!r}] is not aligned")

    def row(self, i: int) -> dict[str, float]:
        """Features of the ``i``-th listed row as plain floats."""
        return {name: float(self.values[name][i]) for name in ENGINE_FEATURES}


# --------------------------------------------------------------------------- windows

Sel = slice | I64


class _Window:
    """Running sums of the last ``length`` values pushed per pool (one per closed bar).

    The ring is slot-major, ``ring[bar % length, pool]``: aligned on bar time across
    pools, and pools closing the same bar update one contiguous row. Keeps the sum, the
    sum of squares (``squares``) and the last bar with a non-zero value: a window whose
    values are all zero is then known exactly, whatever rounding the running sums carry.
    ``length`` 0: always empty.
    """

    def __init__(
        self,
        n_pools: int,
        length: int,
        dtype: type[np.generic] = np.float64,
        *,
        squares: bool = True,
        track_zero: bool = True,
    ) -> None:
        self.length = length
        self.squares = squares
        self.track_zero = track_zero
        self.ring = np.zeros((max(length, 1), n_pools), dtype=dtype)
        self.total = np.zeros(n_pools, dtype=dtype)
        self.total_sq = np.zeros(n_pools, dtype=dtype)
        self.last_nonzero = np.full(n_pools, -1, dtype=np.int64)

    def push(self, sel: Sel, bar: I64 | int, values: NDArray[Any]) -> None:
        if self.length == 0:
            return
        if isinstance(bar, int) and isinstance(sel, slice):
            # Hot path: one contiguous row; (total + new) - old, updated in place.
            row = self.ring[bar % self.length]
            self.total += values
            self.total -= row
            if self.squares:
                self.total_sq += values * values
                self.total_sq -= row * row
            if self.track_zero:
                np.copyto(self.last_nonzero, bar, where=values != 0)
            row[...] = values
            return
        cols = np.arange(self.ring.shape[1]) if isinstance(sel, slice) else sel
        slots = np.asarray(bar, dtype=np.int64) % self.length
        old = self.ring[slots, cols]
        self.ring[slots, cols] = values
        self.total[sel] = (self.total[sel] + values) - old
        if self.squares:
            self.total_sq[sel] = (self.total_sq[sel] + values * values) - old * old
        if self.track_zero:
            self.last_nonzero[sel] = np.where(values != 0, bar, self.last_nonzero[sel])

    def all_zero(self, sel: Sel, last_bar: I64) -> NDArray[np.bool_]:
        """Whether the window ending at each pool's ``last_bar`` holds only zeros."""
        out: NDArray[np.bool_] = self.last_nonzero[sel] <= last_bar - self.length
        return out

    _FIELDS = ("ring", "total", "total_sq", "last_nonzero")

    def state(self) -> dict[str, Any]:
        return {name: getattr(self, name).copy() for name in self._FIELDS}

    def restore(self, state: Mapping[str, Any], rows: I64 | None) -> None:
        for name in self._FIELDS:
            src = np.asarray(state[name])
            if rows is None:
                setattr(self, name, src.copy())
            elif name == "ring":
                self.ring[:, rows] = src[:, rows]
            else:
                getattr(self, name)[rows] = src[rows]


# --------------------------------------------------------------------------- engine


class FeatureEngine:
    """Streaming features of ``n_pools`` pools (rows ``0 .. n_pools - 1``)."""

    # Per-pool arrays (series axis first), and slot-major rings (series axis second).
    _POOL_ARRAYS = (
        "n_closed",
        "last_close",
        "last_log_close",
        "last_closed_bar",
        "forming_log_close",
        "advance_decline",
        "forming_sign",
        "l_eq_ref",
    )
    _POOL_RINGS = ("log_close_ring", "l_eq_ring")
    _WINDOWS = ("sigma_win", "rv_win", "volume_win", "swaps_win", "mev_win")

    def __init__(self, params: FeatureParams, fees: NDArray[np.float64]) -> None:
        if not isinstance(params, FeatureParams):
            raise TypeError("params must be a FeatureParams")
        fee_arr = np.array(fees, dtype=np.float64, copy=True)
        if fee_arr.ndim != 1:
            raise ValueError("fees must be a 1-D array, one fee per pool")
        known = fee_arr[~np.isnan(fee_arr)]
        if known.size and not bool(np.all((known >= 0.0) & (known < 1.0))):
            raise ValueError("fees must be fractions in [0, 1) (0.003 for 0.3%) or NaN")
        k = int(fee_arr.shape[0])
        p = params
        self.params = p
        self.n_pools = k
        self.fees = fee_arr
        self._interval = p.bar_interval
        self._ppy_sqrt = math.sqrt(periods_per_year(p.bar_interval))
        self._horizons = (p.bars_1h, p.bars_4h, p.bars_24h)
        # Fewest closed bars per pool past which no warm-up rule masks a feature: sigma
        # needs more than sigma_window, realized vol realized_vol_window, each move n.
        self._warm_after = max(p.sigma_window + 1, p.realized_vol_window, *self._horizons)
        self._warm = False
        self._close_ring_len = max(self._horizons)
        self.bars = BarAggregator(k, p.bar_interval)
        self.rsi = StreamingRSI(k, p.rsi_period)
        self.macd = StreamingMACD(k, p.macd_fast, p.macd_slow, p.macd_signal)
        self.bb = StreamingBBands(k, p.bb_period, p.bb_nbdev)
        # Per pool.
        self.n_closed = np.zeros(k, dtype=np.int64)
        self.last_close = np.full(k, np.nan)
        self.last_log_close = np.full(k, np.nan)
        self.last_closed_bar = np.full(k, -1, dtype=np.int64)
        # log(forming close), refreshed at every peek of the row: a bar close needs no log.
        self.forming_log_close = np.full(k, np.nan)
        self.advance_decline = np.zeros(k, dtype=np.int64)
        self.forming_sign = np.zeros(k, dtype=np.int64)
        self.log_close_ring = np.full((self._close_ring_len, k), np.nan)
        self.l_eq_ring = np.full((p.bars_1h, k), np.nan)
        self.l_eq_ref = np.full(k, np.nan)
        # Windows over closed bars (the forming bar is added at peek time where it belongs).
        self.sigma_win = _Window(k, p.sigma_window)
        self.corr_win = (
            self.sigma_win if p.corr_window == p.sigma_window else _Window(k, p.corr_window)
        )
        self.rv_win = _Window(k, p.realized_vol_window - 1)
        self.volume_win = _Window(k, p.bars_24h - 1, squares=False)
        # Integer sums are exact: no zero tracking needed.
        self.swaps_win = _Window(k, p.mev_bars - 1, np.int64, squares=False, track_zero=False)
        self.mev_win = _Window(k, p.mev_bars - 1, np.int64, squares=False, track_zero=False)
        self._corr = math.nan
        self._corr_dirty = False
        self._scratch = np.zeros(k, dtype=np.bool_)

    def _is_warm(self) -> bool:
        """Whether every pool has closed enough bars for every feature (cached: closed
        bars only accumulate, and set_state forgets it)."""
        if not self._warm and self.n_pools:
            self._warm = int(self.n_closed.min()) >= self._warm_after
        return self._warm

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
        *,
        samples_checked: bool = False,
    ) -> FeatureSnapshot:
        """Feed one sample per row at ``time``; features of ``rows`` (forming bar peeked).

        ``samples_checked``: the sample values already passed
        :func:`rules.features.bars.check_sample_values` (a batch checks its whole table at once).
        """
        idx = validate_rows(rows, self.n_pools, self._scratch)
        # Bars first (close what ended, add the samples); committing the closed bars reads
        # only the closed bars and the committed state, never the new forming bars.
        steps, late = self.bars.update(
            time,
            idx,
            price,
            volume=volume,
            tvl=tvl,
            tick_tvl=tick_tvl,
            swaps=swaps,
            mev_swaps=mev_swaps,
            rows_checked=True,
            samples_checked=samples_checked,
        )
        everyone = is_all_rows(idx, self.n_pools)
        # A step with n_pools distinct rows of an all-rows update is in row order too.
        committed = [self._commit(step, everyone and len(step) == self.n_pools) for step in steps]
        values = self._peek(idx, everyone)
        if len(committed) == 1:
            closed_values = committed[0]
        elif committed:
            closed_values = {
                name: np.concatenate([c[name] for c in committed]) for name in CLOSED_VALUE_NAMES
            }
        else:
            closed_values = {name: np.zeros(0) for name in CLOSED_VALUE_NAMES}
        closed = ClosedBars.concat(steps)
        for arr in (*values.values(), *closed_values.values()):
            arr.setflags(write=False)
        for name in ClosedBars.__slots__:
            getattr(closed, name).setflags(write=False)
        return FeatureSnapshot(
            time=int(time),
            rows=idx,
            values=values,
            closed=closed,
            closed_values=closed_values,
            late_rows=late,
        )

    def can_update_table(self, first_time: int) -> bool:
        """Whether :meth:`update_table` can start at ``first_time``: no sample of it would
        be late (every pool's forming bar is at or before ``first_time``'s bar)."""
        return bool(self.n_pools) and first_time // self._interval >= int(self.bars.bar_index.max())

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
        """``update(times[t], rows_t, price[t, rows_t], ...)`` for each ``t`` with a row,
        ``rows_t`` the rows where ``present[t]``, in compiled loops.

        Every argument but ``times`` has shape ``(T, n_pools)``; the times are
        non-decreasing, the present values were checked
        (:func:`rules.features.bars.check_sample_values`) and :meth:`can_update_table` holds.
        Returns ``out[f, t, row]``, feature ``ENGINE_FEATURES[f]`` of each step's snapshot
        (NaN where the row has no sample), except ``corr``, which is NaN (its sums are not
        reproducible outside numpy: a caller that needs it steps with :meth:`update`). The
        state after is the state the ``update`` calls leave, bit for bit
        (``tests/test_kernels.py``).
        """
        from rules.features import kernels  # noqa: PLC0415 - numba loads only for batches

        p = self.params
        k = self.n_pools
        n_steps = int(times.shape[0])
        out = np.empty((len(ENGINE_FEATURES), n_steps, k))
        out[ENGINE_FEATURES.index("corr")] = np.nan
        if n_steps == 0:
            return out
        # Absent cells may hold anything (their log is never read).
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            log_price = np.log(price)
        bars = self.bars
        bar_floats = np.stack(
            [bars.open, bars.high, bars.low, bars.close, bars.volume, bars.tvl, bars.tick_tvl]
        )
        bar_ints = np.stack(
            [
                bars.bar_index,
                bars.open_time,
                bars.close_time,
                bars.swaps,
                bars.mev_swaps,
                bars.samples,
            ]
        )
        pool = np.stack(
            [self.last_close, self.last_log_close, self.forming_log_close, self.l_eq_ref]
        )
        pool_ints = np.stack(
            [self.n_closed, self.last_closed_bar, self.advance_decline, self.forming_sign]
        )
        float_windows = (self.sigma_win, self.corr_win, self.rv_win, self.volume_win)
        int_windows = (self.swaps_win, self.mev_win)
        windows = np.stack([np.stack([w.total, w.total_sq]) for w in float_windows])
        window_ints = np.stack([w.last_nonzero for w in (*float_windows, *int_windows)])
        int_totals = np.stack([np.stack([w.total, w.total_sq]) for w in int_windows])
        rsi, macd, bb = self.rsi, self.macd, self.bb
        rsi_state = np.stack([rsi.prev, rsi.gain, rsi.loss])
        macd_state = np.stack([macd.slow_value, macd.fast_value, macd.signal_value])
        bb_state = np.stack([bb.sma_total, bb.shift, bb.dev_sum, bb.dev_sq_sum])
        bb_ints = np.stack([bb.count, bb.last_change])
        rsi_count, macd_count = rsi.count.copy(), macd.count.copy()
        corr_distinct = self.corr_win is not self.sigma_win
        params = np.array(
            [
                self._interval,
                p.rsi_period,
                p.macd_fast,
                p.macd_slow,
                p.macd_signal,
                p.bb_period,
                p.sigma_window,
                p.realized_vol_window,
                *self._horizons,
                self._close_ring_len,
                self.l_eq_ring.shape[0],
                int(corr_distinct),
            ],
            dtype=np.int64,
        )
        window_flags = np.array(
            [[w.length, w.squares, w.track_zero] for w in (*float_windows, *int_windows)],
            dtype=np.int64,
        )
        fparams = np.array(
            [
                macd._k_fast,
                macd._k_slow,
                macd._k_signal,
                bb.nbdev,
                self._ppy_sqrt,
                _IV_SCALE,
                *(1.0 / math.sqrt(n) for n in self._horizons),
            ]
        )
        kernels.feature_steps(
            np.ascontiguousarray(times, dtype=np.int64),
            np.ascontiguousarray(present, dtype=np.bool_),
            log_price,
            np.ascontiguousarray(price),
            np.ascontiguousarray(tvl),
            np.ascontiguousarray(tick_tvl),
            np.ascontiguousarray(volume),
            np.ascontiguousarray(swaps, dtype=np.int64),
            np.ascontiguousarray(mev_swaps, dtype=np.int64),
            out,
            bar_floats,
            bar_ints,
            pool,
            pool_ints,
            self.log_close_ring,
            self.l_eq_ring,
            windows,
            window_ints,
            tuple(w.ring for w in float_windows),
            int_totals,
            tuple(w.ring for w in int_windows),
            window_flags,
            rsi_state,
            rsi_count,
            macd_state,
            macd_count,
            bb_state,
            bb_ints,
            bb.ring,
            self.fees,
            params,
            fparams,
        )
        # Hand the stacked state back (rows of the stacks are fresh arrays of their own).
        for name, value in zip(
            ("open", "high", "low", "close", "volume", "tvl", "tick_tvl"), bar_floats, strict=True
        ):
            setattr(bars, name, value)
        for name, value in zip(
            ("bar_index", "open_time", "close_time", "swaps", "mev_swaps", "samples"),
            bar_ints,
            strict=True,
        ):
            setattr(bars, name, value)
        self.last_close, self.last_log_close, self.forming_log_close, self.l_eq_ref = pool
        self.n_closed, self.last_closed_bar, self.advance_decline, self.forming_sign = pool_ints
        for i, window in enumerate(float_windows):
            if i == 1 and not corr_distinct:
                continue
            window.total, window.total_sq = windows[i]
            window.last_nonzero = window_ints[i]
        for i, window in enumerate(int_windows):
            window.total, window.total_sq = int_totals[i]
            window.last_nonzero = window_ints[4 + i]
        rsi.prev, rsi.gain, rsi.loss = rsi_state
        rsi.count = rsi_count
        macd.slow_value, macd.fast_value, macd.signal_value = macd_state
        macd.count = macd_count
        bb.sma_total, bb.shift, bb.dev_sum, bb.dev_sq_sum = bb_state
        bb.count, bb.last_change = bb_ints
        for indicator in (rsi, macd, bb):
            indicator._pending = None  # the last peek's step is not this state's
        self._corr_dirty = True
        return out

    def _commit(self, step: ClosedBars, everyone: bool) -> dict[str, F64]:
        """Commit one closing step (each row once) to indicators and windows.

        ``everyone``: the step's rows are exactly ``0 .. n_pools - 1`` in order.
        """
        rows = step.rows
        idx: I64 | None = None if everyone else rows
        sel: Sel = slice(None) if everyone else rows
        bar_arr = step.start // self._interval
        uniform = bool(bar_arr.size) and not np.count_nonzero(bar_arr != bar_arr[0])
        bar: I64 | int = int(bar_arr[0]) if uniform else bar_arr
        close = step.close
        prev_log_close = self.last_log_close[sel]
        # A bar with samples closes at the forming close whose log the last peek cached;
        # an empty interval carries the previous close.
        if bool(step.samples.size) and not np.count_nonzero(step.samples <= 0):
            log_close = self.forming_log_close[sel].copy()
        else:
            log_close = np.where(step.samples > 0, self.forming_log_close[sel], prev_log_close)
        n_closed = self.n_closed[sel]
        ret = log_close - prev_log_close
        simple = close / self.last_close[sel]
        simple -= 1.0
        if not self._warm and not (n_closed.size and int(n_closed.min()) > 0):
            # A pool's first bar has no return: push 0 (neutral in every sum), not NaN.
            first = n_closed == 0
            ret[first] = 0.0
            simple[first] = 0.0
        if idx is None:
            rsi = self.rsi.update_rows_all(close)[0]
            line, signal, hist = self.macd.update_rows_all(close)
            upper, middle, lower = self.bb.update_rows_all(close)
        else:
            rsi = self.rsi.update_rows(idx, close)[0]
            line, signal, hist = self.macd.update_rows(idx, close)
            upper, middle, lower = self.bb.update_rows(idx, close)
        self.sigma_win.push(sel, bar, ret)
        if self.corr_win is not self.sigma_win:
            self.corr_win.push(sel, bar, ret)
        self.rv_win.push(sel, bar, simple)
        self.volume_win.push(sel, bar, step.volume)
        self.swaps_win.push(sel, bar, step.swaps)
        self.mev_win.push(sel, bar, step.mev_swaps)
        l_eq = np.sqrt(close)
        np.divide(step.tvl, l_eq, out=l_eq)
        n_leq = self.l_eq_ring.shape[0]
        if isinstance(bar, int) and idx is None:
            self.log_close_ring[bar % self._close_ring_len] = log_close
            self.l_eq_ring[bar % n_leq] = l_eq
            np.fmax.reduce(self.l_eq_ring, axis=0, out=self.l_eq_ref)
            self.last_closed_bar.fill(bar)
        else:
            cols = np.arange(self.n_pools) if idx is None else idx
            self.log_close_ring[bar_arr % self._close_ring_len, cols] = log_close
            self.l_eq_ring[bar_arr % n_leq, cols] = l_eq
            self.l_eq_ref[sel] = np.fmax.reduce(self.l_eq_ring[:, sel], axis=0)
            self.last_closed_bar[sel] = bar_arr
        step_sign = (ret > 0.0).astype(np.int64)
        step_sign[ret < 0.0] = -1
        self.advance_decline[sel] += step_sign
        self.n_closed[sel] += 1
        self.last_log_close[sel] = log_close
        self.last_close[sel] = close
        self._corr_dirty = True
        return {
            "rsi": rsi,
            "macd": line,
            "macd_signal": signal,
            "macd_hist": hist,
            "bb_upper": upper,
            "bb_middle": middle,
            "bb_lower": lower,
        }

    def _peek(self, rows: I64, everyone: bool) -> dict[str, F64]:
        p = self.params
        idx: I64 | None = None if everyone else rows
        sel: Sel = slice(None) if everyone else rows
        bars = self.bars
        price = bars.close[sel].copy()
        tvl = bars.tvl[sel].copy()
        tick_tvl = bars.tick_tvl[sel].copy()
        n_closed = self.n_closed[sel]
        # Past every warm-up, none of the warm-up masks below can select a row.
        least_closed = _WARM if self._is_warm() else (int(n_closed.min()) if n_closed.size else 0)
        last_bar = self.last_closed_bar[sel]
        if everyone:
            # The cache of log(forming close) that a bar close reads is the array itself.
            log_price = np.log(price, out=self.forming_log_close)
        else:
            log_price = np.log(price)
            self.forming_log_close[sel] = log_price
        ret = log_price - self.last_log_close[sel]
        values: dict[str, F64] = {"price": price, "ret": ret, "tvl": tvl, "tick_tvl": tick_tvl}
        # Forming sign feeds breadth (as if every pool's forming bar closed now).
        sign = self.forming_sign[sel] if everyone else np.zeros(rows.size, dtype=np.int64)
        sign[...] = ret > 0.0  # 1 up, -1 down, 0 flat or NaN (two masks: no casting ufunc)
        sign[ret < 0.0] = -1
        if not everyone:
            self.forming_sign[sel] = sign

        with np.errstate(invalid="ignore", divide="ignore"):
            # Per-bar sigma over the committed window (it excludes the forming bar).
            w = p.sigma_window
            total = self.sigma_win.total[sel]
            var = total * total
            var /= -w
            var += self.sigma_win.total_sq[sel]
            var /= w - 1
            invalid = self.sigma_win.all_zero(sel, last_bar)
            invalid |= var <= 0.0
            if least_closed <= w:
                invalid |= n_closed <= w
            var[invalid] = np.nan
            inv_sigma = np.sqrt(var)
            np.divide(1.0, inv_sigma, out=inv_sigma)
            values["move_sigma"] = ret * inv_sigma
            forming_bar = bars.bar_index[sel]
            lo_bar = int(forming_bar[0]) if forming_bar.size else 0
            uniform = (
                everyone and forming_bar.size > 0 and not np.count_nonzero(forming_bar != lo_bar)
            )
            for name, n in zip(
                ("move_sigma_1h", "move_sigma_4h", "move_sigma_24h"), self._horizons, strict=True
            ):
                if uniform:
                    past = self.log_close_ring[(lo_bar - n) % self._close_ring_len]
                else:
                    past = self.log_close_ring[(forming_bar - n) % self._close_ring_len, rows]
                move = log_price - past
                move *= inv_sigma
                move *= 1.0 / math.sqrt(n)
                if least_closed < n:
                    move[n_closed < n] = np.nan
                values[name] = move

            # Realized volatility: the committed window of simple returns + the forming one.
            wr = p.realized_vol_window
            simple = price / self.last_close[sel]
            simple -= 1.0
            mean = self.rv_win.total[sel] + simple
            rv_var = simple * simple
            rv_var += self.rv_win.total_sq[sel]
            rv_var /= wr
            mean /= wr
            mean *= mean
            rv_var -= mean
            np.maximum(rv_var, 0.0, out=rv_var)
            flat = self.rv_win.all_zero(sel, last_bar)
            if np.count_nonzero(flat):
                rv_var[flat & (simple == 0.0)] = 0.0
            rv = np.sqrt(rv_var, out=rv_var)
            rv *= self._ppy_sqrt
            if least_closed < wr:
                rv[n_closed < wr] = np.nan
            values["realized_vol"] = rv

            forming_volume = bars.volume[sel]
            volume_24h = self.volume_win.total[sel] + forming_volume
            reset = self.volume_win.all_zero(sel, last_bar)
            reset |= volume_24h < 0.0
            if np.count_nonzero(reset):
                volume_24h[reset] = forming_volume[reset]
            values["volume_24h"] = volume_24h
            ratio = tvl / volume_24h
            ratio[~(volume_24h > 0.0)] = np.nan
            values["tvl_volume_ratio"] = ratio
            iv = volume_24h / tick_tvl
            iv[~(tick_tvl > 0.0)] = np.nan
            np.sqrt(iv, out=iv)
            iv *= self.fees[sel]
            iv *= _IV_SCALE
            values["iv"] = iv

            l_eq = np.sqrt(price)
            np.divide(tvl, l_eq, out=l_eq)
            ref = np.fmax(self.l_eq_ref[sel], l_eq)
            drain = l_eq / ref
            np.subtract(1.0, drain, out=drain)
            np.maximum(drain, 0.0, out=drain)  # keeps NaN
            drain[~(ref > 0.0)] = np.nan
            values["tvl_drain_1h"] = drain

            swaps = self.swaps_win.total[sel] + bars.swaps[sel]
            mev = self.mev_win.total[sel] + bars.mev_swaps[sel]
            score = mev / swaps
            score[swaps == 0] = np.nan
            values["mev_score"] = score

        line, signal, hist = self.macd.peek(price, idx)
        values["macd"], values["macd_signal"], values["macd_hist"] = line, signal, hist
        values["rsi"] = self.rsi.peek(price, idx)
        upper, middle, lower = self.bb.peek(price, idx)
        values["bb_upper"], values["bb_middle"], values["bb_lower"] = upper, middle, lower
        with np.errstate(invalid="ignore", divide="ignore"):
            width = upper - lower
            bb_pos = price - lower
            bb_pos /= width
            bb_pos[~(width > 0.0)] = np.nan
            values["bb_pos"] = bb_pos
        # empty + fill: np.full's own Python layer costs more than the fill.
        values["breadth"] = breadth = np.empty(rows.size)
        breadth.fill(self.breadth())
        values["corr"] = corr = np.empty(rows.size)
        corr.fill(self.corr())
        return values

    # ------------------------------------------------------------------ cross-pool
    # ------------------------------------------------------------------ cross-pool

    def breadth(self) -> float:
        """Advance-decline line including every pool's forming bar."""
        return float(self.advance_decline.sum() + self.forming_sign.sum())

    def corr(self) -> float:
        """Mean pairwise correlation of closed-bar log returns (cached until a bar closes)."""
        if self._corr_dirty:
            self._corr = self._compute_corr()
            self._corr_dirty = False
        return self._corr

    def _compute_corr(self) -> float:
        wc = self.params.corr_window
        win = self.corr_win
        if self.n_pools < 2:
            return math.nan
        newest = int(self.last_closed_bar.max())
        if newest < 0:
            return math.nan
        total = win.total
        mean = total / wc
        ss = win.total_sq - total * mean  # sum of squared deviations over the window
        ok = (self.last_closed_bar == newest) & (self.n_closed > wc)
        ok &= ~win.all_zero(slice(None), self.last_closed_bar)
        ok &= ss > 0.0
        m = int(np.count_nonzero(ok))
        if m < 2:
            return math.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            weight = np.where(ok, 1.0 / np.sqrt(ss), 0.0)
        # sum_i z_i(t) = sum_i w_i r_i(t) - sum_i w_i mean_i: one matrix-vector product.
        # numpy's own loop, not BLAS: a threaded BLAS gemv that wakes its threads at every
        # bar costs milliseconds on small machines.
        summed = np.einsum("tk,k->t", win.ring, weight, optimize=False)
        length = win.ring.shape[0]
        if length != wc:
            summed = summed[np.arange(newest - wc + 1, newest + 1) % length]
        summed -= float(weight @ np.where(ok, mean, 0.0))
        return float((summed @ summed - m) / (m * (m - 1)))

    # ------------------------------------------------------------------ state

    def get_state(self) -> dict[str, Any]:
        """Bit-exact, picklable copy of the whole engine state."""
        state: dict[str, Any] = {
            "params": self.params.as_dict(),
            "n_pools": self.n_pools,
            "bars": self.bars.get_state(),
            "rsi": self.rsi.get_state(),
            "macd": self.macd.get_state(),
            "bb": self.bb.get_state(),
            "corr_win": self.corr_win.state(),
        }
        for name in self._WINDOWS:
            state[name] = getattr(self, name).state()
        for name in (*self._POOL_ARRAYS, *self._POOL_RINGS):
            state[name] = getattr(self, name).copy()
        return state

    def set_state(self, state: Mapping[str, Any], rows: NDArray[np.int64] | None = None) -> None:
        """Restore ``state`` (from ``get_state``); with ``rows``, only those pools.

        A row-wise restore puts those pools back exactly where they were (bars,
        indicators, windows, breadth contributions); the other pools keep theirs.
        """
        if state.get("params") != self.params.as_dict():
            raise ValueError("state was saved with different FeatureParams")
        if state.get("n_pools") != self.n_pools:
            raise ValueError(f"state has {state.get('n_pools')} pools, engine has {self.n_pools}")
        idx = None if rows is None else validate_rows(rows, self.n_pools)
        self.bars.set_state(state["bars"], idx)
        self.rsi.set_state(state["rsi"], idx)
        self.macd.set_state(state["macd"], idx)
        self.bb.set_state(state["bb"], idx)
        for name in self._WINDOWS:
            getattr(self, name).restore(state[name], idx)
        if self.corr_win is not self.sigma_win:
            self.corr_win.restore(state["corr_win"], idx)
        for name in (*self._POOL_ARRAYS, *self._POOL_RINGS):
            src = np.asarray(state[name])
            if idx is None:
                setattr(self, name, src.copy())
            elif name in self._POOL_RINGS:
                getattr(self, name)[:, idx] = src[:, idx]
            else:
                getattr(self, name)[idx] = src[idx]
        self._corr_dirty = True
        self._warm = False
