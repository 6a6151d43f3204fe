"""Fixed-interval bars from irregular samples, vectorised over pools.

What this module guarantees:

- Bars are aligned on the unix epoch: bar ``b`` of a pool covers ``[b * interval,
  (b + 1) * interval)`` seconds of data (block) time. A sample at ``time`` belongs to bar
  ``time // interval``.
- Each pool has its own timeline: a pool's bars close when a later sample of that pool
  arrives (lazily), never because another pool moved on. This is what lets the pools of
  one chain be rolled back and replayed after a reorganisation while other chains go on.
- A bar holds open/high/low/close price, the sum of sample volumes, TVL and tick TVL at
  the close, the swap and MEV-swap counts, and the number of samples.
- Empty intervals between two samples become bars that carry the previous close
  (open = high = low = close = previous close, volume 0, no swaps, TVL carried, 0 samples),
  so every pool has one bar per interval from its first sample on.
- Bars are immutable once closed: a sample for a bar that has already closed is late; it
  is dropped and counted per pool (``late_dropped``).
- Out-of-order samples inside the forming bar are merged: high, low, volume and counts
  always take them; the close (and TVL at close) is the sample with the latest time, the
  open the one with the earliest time (ties: the later call wins the close, the earlier
  call keeps the open).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["BarAggregator", "ClosedBars", "check_sample_values", "is_all_rows", "validate_rows"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

_FLOAT_FIELDS = ("open", "high", "low", "close", "volume", "tvl", "tick_tvl")
_INT_FIELDS = ("rows", "start", "swaps", "mev_swaps", "samples")
# Checked in this order: the integer columns first, as the error messages go.
_FIELDS = (*_INT_FIELDS, *_FLOAT_FIELDS)
_DTYPES = (
    *(np.dtype(np.int64) for _ in _INT_FIELDS),
    *(np.dtype(np.float64) for _ in _FLOAT_FIELDS),
)


@dataclass(frozen=True, slots=True)
class ClosedBars:
    """Closed bars in columns: entry ``i`` is the bar of pool row ``rows[i]`` that starts at
    ``start[i]`` (unix seconds). Entries of one pool are in time order."""

    rows: I64
    start: I64
    open: F64
    high: F64
    low: F64
    close: F64
    volume: F64
    tvl: F64
    tick_tvl: F64
    swaps: I64
    mev_swaps: I64
    samples: I64

    def __post_init__(self) -> None:
        n = self.rows.shape
        columns = [getattr(self, name) for name in _FIELDS]
        for name, value in zip(_FIELDS, columns, strict=True):
            if not isinstance(value, np.ndarray) or value.ndim != 1 or value.shape != n:
                raise ValueError(f"ClosedBars.{name} must be a 1-D array of length {n[0]}")
        for name, value, dtype in zip(_FIELDS, columns, _DTYPES, strict=True):
            if value.dtype != dtype:
                raise ValueError(f"ClosedBars.{name} must be {dtype}")

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @staticmethod
    def empty() -> ClosedBars:
        """No bars (one shared instance: its arrays are empty and read-only)."""
        return _NO_BARS

    @staticmethod
    def concat(parts: Sequence[ClosedBars]) -> ClosedBars:
        """All entries of ``parts``, in order."""
        if not parts:
            return ClosedBars.empty()
        if len(parts) == 1:
            return parts[0]
        columns = {
            name: np.concatenate([getattr(p, name) for p in parts]) for name in ClosedBars.__slots__
        }
        return ClosedBars(**columns)

    def for_row(self, row: int) -> ClosedBars:
        """The entries of one pool row."""
        sel = self.rows == row
        return ClosedBars(**{name: getattr(self, name)[sel] for name in ClosedBars.__slots__})


def _read_only(array: NDArray[Any]) -> NDArray[Any]:
    array.flags.writeable = False
    return array


_NO_INTS: I64 = _read_only(np.zeros(0, dtype=np.int64))
_NO_FLOATS: F64 = _read_only(np.zeros(0, dtype=np.float64))
_NO_BARS = ClosedBars(
    _NO_INTS,
    _NO_INTS,
    _NO_FLOATS,
    _NO_FLOATS,
    _NO_FLOATS,
    _NO_FLOATS,
    _NO_FLOATS,
    _NO_FLOATS,
    _NO_FLOATS,
    _NO_INTS,
    _NO_INTS,
    _NO_INTS,
)


def validate_rows(rows: Any, n_pools: int, scratch: NDArray[np.bool_] | None = None) -> I64:
    """``rows`` as a 1-D int64 array of distinct pool rows in ``[0, n_pools)``."""
    idx = np.asarray(rows)
    # dtype.kind: the np.issubdtype(dtype, np.integer) test without its ~1 us of overhead.
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
        raise ValueError("rows must be a 1-D array of integers")
    idx = idx.astype(np.int64, copy=False)
    if idx.size == 0:
        return idx
    if is_all_rows(idx, n_pools):
        return idx  # 0 .. n_pools - 1 in order: in range and distinct
    if int(idx.min()) < 0 or int(idx.max()) >= n_pools:
        raise IndexError(f"rows must be in [0, {n_pools})")
    if idx.size == 1 or bool(np.all(idx[1:] > idx[:-1])):
        return idx  # strictly increasing: distinct
    seen = np.zeros(n_pools, dtype=np.bool_) if scratch is None else scratch
    seen[idx] = True
    distinct = int(np.count_nonzero(seen))
    seen[idx] = False
    if distinct != idx.size:
        raise ValueError("rows must be distinct")
    return idx


def is_all_rows(idx: I64, n_pools: int) -> bool:
    """True when ``idx`` is exactly ``0 .. n_pools - 1`` in order (slices beat fancy
    indexing by an order of magnitude on the all-pools hot path)."""
    if idx.size != n_pools:
        return False
    if n_pools < 2:
        return n_pools == 0 or int(idx[0]) == 0
    # Strictly increasing from 0 to n_pools - 1 with n_pools entries: exactly 0 .. n - 1.
    if int(idx[0]) != 0 or int(idx[-1]) != n_pools - 1:
        return False
    return not np.count_nonzero(idx[1:] <= idx[:-1])


def check_sample_values(
    price: F64, volume: F64, tvl: F64, tick_tvl: F64, swaps: I64, mev_swaps: I64
) -> None:
    """The value rules of samples (any shape, all arrays alike); raises ValueError.

    Prices are positive and finite, volumes >= 0 and finite, TVLs finite or NaN (not
    known), and ``0 <= mev_swaps <= swaps``.
    """
    if price.size == 0:
        return
    # min/max propagate NaN, so one pair of reductions checks range and finiteness.
    if not (float(price.min()) > 0.0 and float(price.max()) < math.inf):
        raise ValueError("price must be positive and finite")
    if not (float(volume.min()) >= 0.0 and float(volume.max()) < math.inf):
        raise ValueError("volume must be >= 0 and finite")
    for name, values in (("tvl", tvl), ("tick_tvl", tick_tvl)):
        if np.count_nonzero(np.isinf(values)):
            raise ValueError(f"{name} must be finite or NaN")
    if int(mev_swaps.min()) < 0 or int((swaps - mev_swaps).min()) < 0:
        raise ValueError("swap counts must satisfy 0 <= mev_swaps <= swaps")


class BarAggregator:
    """Forming bars of ``n_pools`` pools; ``update`` closes what ended and adds samples.

    Per-pool state (arrays indexed by pool row): ``bar_index`` (forming bar, -1 before the
    first sample), the forming bar's ``open``/``high``/``low``/``close``, ``open_time``/
    ``close_time`` (sample times), ``volume``, ``tvl``, ``tick_tvl``, ``swaps``,
    ``mev_swaps``, ``samples``, and ``late_dropped`` (samples dropped as late, cumulative).
    """

    _STATE = (
        "bar_index",
        "open",
        "high",
        "low",
        "close",
        "open_time",
        "close_time",
        "volume",
        "tvl",
        "tick_tvl",
        "swaps",
        "mev_swaps",
        "samples",
        "late_dropped",
    )

    def __init__(self, n_pools: int, interval: int) -> None:
        if isinstance(n_pools, bool) or not isinstance(n_pools, int) or n_pools < 0:
            raise ValueError(f"n_pools must be an int >= 0, got {n_pools!r}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0:
            raise ValueError(f"interval must be a positive int (seconds), got {interval!r}")
        self.n_pools = n_pools
        self.interval = interval
        self.bar_index = np.full(n_pools, -1, dtype=np.int64)
        self.open = np.full(n_pools, np.nan)
        self.high = np.full(n_pools, np.nan)
        self.low = np.full(n_pools, np.nan)
        self.close = np.full(n_pools, np.nan)
        self.open_time = np.zeros(n_pools, dtype=np.int64)
        self.close_time = np.zeros(n_pools, dtype=np.int64)
        self.volume = np.zeros(n_pools)
        self.tvl = np.full(n_pools, np.nan)
        self.tick_tvl = np.full(n_pools, np.nan)
        self.swaps = np.zeros(n_pools, dtype=np.int64)
        self.mev_swaps = np.zeros(n_pools, dtype=np.int64)
        self.samples = np.zeros(n_pools, dtype=np.int64)
        self.late_dropped = np.zeros(n_pools, dtype=np.int64)
        self._scratch = np.zeros(n_pools, dtype=np.bool_)
        self._all_rows: I64 | None = None  # the rows array of this update, if all pools

    # ------------------------------------------------------------------ update

    def update(
        self,
        time: int,
        rows: Any,
        price: Any,
        *,
        volume: Any = None,
        tvl: Any = None,
        tick_tvl: Any = None,
        swaps: Any = None,
        mev_swaps: Any = None,
        rows_checked: bool = False,
        samples_checked: bool = False,
    ) -> tuple[list[ClosedBars], I64]:
        """Add one sample per row at ``time``; returns (closing steps, late rows).

        Closing steps come first-to-last: step 0 holds the forming bars that ended, step
        ``g`` the ``g``-th empty interval after them (only for the rows that have one).
        Each row appears at most once per step, so a consumer can feed each step to
        per-pool streaming state in order. Late rows' samples were dropped.
        ``samples_checked``: the values already passed :func:`check_sample_values`.
        """
        idx, sample = self.validate_samples(
            time,
            rows,
            price,
            volume=volume,
            tvl=tvl,
            tick_tvl=tick_tvl,
            swaps=swaps,
            mev_swaps=mev_swaps,
            rows_checked=rows_checked,
            samples_checked=samples_checked,
        )
        everyone = is_all_rows(idx, self.n_pools)
        self._all_rows = idx if everyone else None
        if everyone and self.n_pools:
            fast = self._update_all(int(time), idx, sample)
            if fast is not None:
                return fast
        steps, late = self.close_until(time, idx)
        self.add_valid(time, idx, sample)
        return steps, late

    def _update_all(
        self, time: int, idx: I64, sample: Mapping[str, Any]
    ) -> tuple[list[ClosedBars], I64] | None:
        """Hot path: every pool sampled, all in the same bar. None when it does not apply."""
        bar = time // self.interval
        # One forming bar for all (count_nonzero: ~4x cheaper than min and max here).
        lo = int(self.bar_index[0])
        if np.count_nonzero(self.bar_index != lo):
            return None
        late = idx[:0]
        every_bar_has_samples = not np.count_nonzero(self.samples == 0)
        if lo == bar and every_bar_has_samples:
            self._merge(time, idx, sample)
            return [], late
        if lo != bar - 1 or not every_bar_has_samples:
            return None
        # Every forming bar closes: hand its arrays to the closed bars instead of copying,
        # and start fresh ones from the samples.
        closed = ClosedBars(
            rows=idx.copy(),
            start=self.bar_index * self.interval,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.volume,
            tvl=self.tvl,
            tick_tvl=self.tick_tvl,
            swaps=self.swaps,
            mev_swaps=self.mev_swaps,
            samples=self.samples,
        )
        k = self.n_pools
        for name in ("open", "high", "low", "close", "volume", "tvl", "tick_tvl"):
            setattr(self, name, np.empty(k))
        for name in ("swaps", "mev_swaps", "samples"):
            setattr(self, name, np.empty(k, dtype=np.int64))
        self._start(time, bar, idx, sample)
        return [closed], late

    def validate_samples(
        self,
        time: int,
        rows: Any,
        price: Any,
        *,
        volume: Any = None,
        tvl: Any = None,
        tick_tvl: Any = None,
        swaps: Any = None,
        mev_swaps: Any = None,
        rows_checked: bool = False,
        samples_checked: bool = False,
    ) -> tuple[I64, dict[str, Any]]:
        """Checked, aligned arguments of one update (raises ValueError).

        ``rows_checked``: ``rows`` already passed :func:`validate_rows` (int64 array);
        ``samples_checked``: the values passed :func:`check_sample_values` (a batch checks
        its whole table at once), so only their shapes are checked here.
        """
        if isinstance(time, bool) or not isinstance(time, int | np.integer) or time < 0:
            raise ValueError(f"time must be an int >= 0 (unix seconds), got {time!r}")
        idx = rows if rows_checked else validate_rows(rows, self.n_pools, self._scratch)
        n = idx.size

        def floats(name: str, value: Any, default: float) -> F64:
            if value is None:
                return np.full(n, default)
            # No copy: the aggregator only ever copies values into its own arrays.
            arr = np.asarray(value, dtype=np.float64)
            if arr.shape != (n,):
                raise ValueError(f"{name} must have one value per row ({n}), got {arr.shape}")
            return arr

        def ints(name: str, value: Any) -> I64:
            if value is None:
                return np.zeros(n, dtype=np.int64)
            arr = np.asarray(value)
            if arr.shape != (n,):
                raise ValueError(f"{name} must be {n} integers, got shape {arr.shape}")
            if n == 0 or np.issubdtype(arr.dtype, np.integer):
                return arr.astype(np.int64, copy=False)
            # Counts may arrive as floats (one float64 column per sample field); they must
            # still be whole numbers.
            whole = np.issubdtype(arr.dtype, np.floating) and bool(
                np.all(np.isfinite(arr) & (arr == np.round(arr)))
            )
            if not whole:
                raise ValueError(f"{name} must be {n} whole numbers")
            return arr.astype(np.int64)

        sample: dict[str, Any] = {
            "price": floats("price", price, np.nan),
            "volume": floats("volume", volume, 0.0),
            "tvl": floats("tvl", tvl, np.nan),
            "tick_tvl": floats("tick_tvl", tick_tvl, np.nan),
            "swaps": ints("swaps", swaps),
            "mev_swaps": ints("mev_swaps", mev_swaps),
        }
        if n == 0 or samples_checked:
            return idx, sample
        check_sample_values(
            sample["price"],
            sample["volume"],
            sample["tvl"],
            sample["tick_tvl"],
            sample["swaps"],
            sample["mev_swaps"],
        )
        return idx, sample

    def close_until(self, time: int, idx: I64) -> tuple[list[ClosedBars], I64]:
        """Close, for the pools ``idx``, every bar that ends at or before ``time``'s bar.

        Returns (closing steps, rows whose forming bar is after ``time``'s bar = late).
        """
        bar = int(time) // self.interval
        current = self.bar_index[idx]
        started = current >= 0
        n_close = np.where(started, bar - current, 0)
        late = idx[n_close < 0]
        closing_sel = n_close > 0
        steps: list[ClosedBars] = []
        if not bool(closing_sel.any()):
            return steps, late
        if bool(closing_sel.all()):
            closing, counts = idx, n_close
        else:
            closing, counts = idx[closing_sel], n_close[closing_sel]
        steps.append(self._forming_as_closed(closing))
        max_gap = int(counts.max())
        for g in range(1, max_gap):
            sel = closing[counts > g]
            steps.append(self._carried(sel, self.bar_index[sel] + g))
        # The next forming bar of the closed rows is `time`'s bar, still without samples.
        self._reset(closing, bar)
        return steps, late

    def add_valid(self, time: int, idx: I64, sample: Mapping[str, Any]) -> I64:
        """Merge checked samples (after ``close_until``); returns the rows dropped as late."""
        bar = int(time) // self.interval
        current = self.bar_index[idx]
        late_sel = (current >= 0) & (current > bar)
        if bool(late_sel.any()):
            late = idx[late_sel]
            self.late_dropped[late] += 1
            keep = ~late_sel
            idx = idx[keep]
            sample = {name: value[keep] for name, value in sample.items()}
            current = current[keep]
        else:
            late = idx[:0]
        # A bar without samples yet (new pool, or just rolled over) starts from this sample.
        fresh_sel = (current < 0) | (self.samples[idx] == 0)
        if bool(fresh_sel.all()):
            self._start(int(time), bar, idx, sample)
            return late
        if not bool(fresh_sel.any()):
            self._merge(int(time), idx, sample)
            return late
        merge_sel = ~fresh_sel
        self._start(int(time), bar, idx[fresh_sel], {k: v[fresh_sel] for k, v in sample.items()})
        self._merge(int(time), idx[merge_sel], {k: v[merge_sel] for k, v in sample.items()})
        return late

    # ------------------------------------------------------------------ internals

    def _sel(self, rows: I64) -> I64 | slice:
        if rows is self._all_rows:  # checked once per update
            return slice(None)
        return slice(None) if is_all_rows(rows, self.n_pools) else rows

    def _forming_as_closed(self, rows: I64) -> ClosedBars:
        sel = self._sel(rows)
        return ClosedBars(
            rows=rows.copy(),
            start=self.bar_index[sel] * self.interval,
            open=self.open[sel].copy(),
            high=self.high[sel].copy(),
            low=self.low[sel].copy(),
            close=self.close[sel].copy(),
            volume=self.volume[sel].copy(),
            tvl=self.tvl[sel].copy(),
            tick_tvl=self.tick_tvl[sel].copy(),
            swaps=self.swaps[sel].copy(),
            mev_swaps=self.mev_swaps[sel].copy(),
            samples=self.samples[sel].copy(),
        )

    def _carried(self, rows: I64, bar: I64) -> ClosedBars:
        close = self.close[rows]
        zeros = np.zeros(rows.size, dtype=np.int64)
        return ClosedBars(
            rows=rows.copy(),
            start=bar * self.interval,
            open=close,
            high=close,
            low=close,
            close=close,
            volume=np.zeros(rows.size),
            tvl=self.tvl[rows],
            tick_tvl=self.tick_tvl[rows],
            swaps=zeros,
            mev_swaps=zeros,
            samples=zeros,
        )

    def _reset(self, rows: I64, bar: int) -> None:
        # An empty forming bar: OHLC carry the close (what an empty interval closes as).
        sel = self._sel(rows)
        close = self.close[sel]
        self.bar_index[sel] = bar
        self.open[sel] = close
        self.high[sel] = close
        self.low[sel] = close
        self.volume[sel] = 0.0
        self.swaps[sel] = 0
        self.mev_swaps[sel] = 0
        self.samples[sel] = 0

    def _start(self, time: int, bar: int, rows: I64, sample: Mapping[str, Any]) -> None:
        price = sample["price"]
        sel = self._sel(rows)
        self.bar_index[sel] = bar
        self.open[sel] = price
        self.high[sel] = price
        self.low[sel] = price
        self.close[sel] = price
        self.open_time[sel] = time
        self.close_time[sel] = time
        self.volume[sel] = sample["volume"]
        self.tvl[sel] = sample["tvl"]
        self.tick_tvl[sel] = sample["tick_tvl"]
        self.swaps[sel] = sample["swaps"]
        self.mev_swaps[sel] = sample["mev_swaps"]
        self.samples[sel] = 1

    def _merge(self, time: int, rows: I64, sample: Mapping[str, Any]) -> None:
        price = sample["price"]
        sel = self._sel(rows)
        self.high[sel] = np.fmax(self.high[sel], price)
        self.low[sel] = np.fmin(self.low[sel], price)
        self.volume[sel] += sample["volume"]
        self.swaps[sel] += sample["swaps"]
        self.mev_swaps[sel] += sample["mev_swaps"]
        self.samples[sel] += 1
        newer = self.close_time[sel] <= time
        if bool(newer.all()):
            self.close[sel] = price
            self.close_time[sel] = time
            self.tvl[sel] = sample["tvl"]
            self.tick_tvl[sel] = sample["tick_tvl"]
        else:
            newer_rows = rows[newer]
            self.close[newer_rows] = price[newer]
            self.close_time[newer_rows] = time
            self.tvl[newer_rows] = sample["tvl"][newer]
            self.tick_tvl[newer_rows] = sample["tick_tvl"][newer]
        older = self.open_time[sel] > time
        if bool(older.any()):
            older_rows = rows[older]
            self.open[older_rows] = price[older]
            self.open_time[older_rows] = time

    # ------------------------------------------------------------------ state

    def get_state(self) -> dict[str, Any]:
        """Bit-exact, picklable copy of the state."""
        state: dict[str, Any] = {"n_pools": self.n_pools, "interval": self.interval}
        for name in self._STATE:
            state[name] = getattr(self, name).copy()
        return state

    def set_state(self, state: Mapping[str, Any], rows: Any = None) -> None:
        """Restore ``state``; with ``rows``, only those pools."""
        for key in ("n_pools", "interval"):
            if state.get(key) != getattr(self, key):
                raise ValueError(f"state {key}={state.get(key)!r} does not match")
        if rows is None:
            for name in self._STATE:
                setattr(self, name, np.array(state[name], copy=True))
            return
        idx = validate_rows(rows, self.n_pools)
        for name in self._STATE:
            getattr(self, name)[idx] = np.asarray(state[name])[idx]
