"""Fixed-interval bars from irregular samples: the rules, and the checks of every input.

The rules (implemented once, by the compiled loop
:func:`rules.features.kernels.feature_steps`, for one step and for tables alike):

- Bars are aligned on the unix epoch: bar ``b`` of a pool covers ``[b * interval,
  (b + 1) * interval)`` seconds of data (block) time. A sample at ``time`` belongs to bar
  ``time // interval``.
- Each pool has its own timeline: a pool's bars close when a later sample of that pool
  arrives (lazily), never because another pool moved on. This is what lets the pools of
  one chain be rolled back and replayed after a reorganisation while other chains go on.
- A bar holds what the features read: its close price, the TVL and tick TVL at the
  close, the sum of sample volumes, and the swap and MEV-swap counts. (No feature reads
  an open, high or low, so none is kept.)
- Empty intervals between two samples become bars that carry the previous close (volume
  0, no swaps, TVL carried), so every pool has one bar per interval from its first
  sample on.
- Bars are immutable once closed: a sample for a bar that has already closed is late; it
  is dropped and counted per pool (``FeatureEngine.late_dropped``).
- Out-of-order samples inside the forming bar are merged: volume and counts always take
  them; the close (and TVL at close) is the sample with the latest time (a tie: the
  later call wins).

This module holds what runs before the loop, in numpy only (the layer engine imports
:func:`is_all_rows`, and checking a config must not load the compiler): the checks of
rows and the shapes of the sample columns. The value rules of samples are checked in
compiled code too (:meth:`rules.features.engine.FeatureEngine.check_samples`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["is_all_rows", "sample_columns", "validate_rows"]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


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


def sample_columns(
    n: int,
    price: Any,
    tvl: Any,
    tick_tvl: Any,
    volume: Any,
    swaps: Any,
    mev_swaps: Any,
) -> tuple[F64, F64, F64, F64, I64, I64]:
    """The sample columns of ``n`` samples as C-contiguous float64 / int64 arrays
    (copies only where needed); raises ValueError on a wrong shape. Counts may arrive as
    floats (one float64 column per sample field) if they are whole numbers."""

    def floats(name: str, value: Any) -> F64:
        arr = np.ascontiguousarray(value, dtype=np.float64)
        if arr.shape != (n,):
            raise ValueError(f"{name} must have one value per row ({n}), got {arr.shape}")
        return arr

    def counts(name: str, value: Any) -> I64:
        arr = np.asarray(value)
        if arr.shape != (n,):
            raise ValueError(f"{name} must be {n} integers, got shape {arr.shape}")
        if n == 0 or arr.dtype.kind in "iu":
            return np.ascontiguousarray(arr, dtype=np.int64)
        whole = arr.dtype.kind == "f" and bool(np.all(np.isfinite(arr) & (arr == np.round(arr))))
        if not whole:
            raise ValueError(f"{name} must be {n} whole numbers")
        return np.ascontiguousarray(arr, dtype=np.int64)

    return (
        floats("price", price),
        floats("tvl", tvl),
        floats("tick_tvl", tick_tvl),
        floats("volume", volume),
        counts("swaps", swaps),
        counts("mev_swaps", mev_swaps),
    )
