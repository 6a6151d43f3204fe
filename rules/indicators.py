"""Exact technical indicators: EMA, RSI, MACD and Bollinger Bands, batch and streaming.

What this module guarantees:

- The batch functions take a 1-D float64 array and return arrays of the same length with
  NaN in the warm-up. They agree with TA-Lib's ``EMA``, ``RSI``, ``MACD`` and ``BBANDS``
  (``matype=0``, ``nbdevup == nbdevdn``) to 1e-9: same lookback, same seeding
  (EMA seeded by the simple average of its first ``period`` inputs; MACD's fast EMA
  seeded over the last ``fast`` inputs of the slow EMA's seed window, so both start on
  the same bar; RSI with Wilder's smoothing and no unstable period; BBANDS with the
  population deviation around the simple average).
- One implementation of each indicator: the batch functions and the streaming classes
  run the same compiled step function per value (:func:`~rules.features.kernels.ema_step`,
  :func:`~rules.features.kernels.rsi_step`, :func:`~rules.features.kernels.macd_step`,
  whose three averages are ``ema_step``, and :func:`~rules.features.kernels.bbands_step`),
  which is also what the feature engine runs at every bar close. This module checks
  arguments and holds the streaming state.
- The streaming classes update K series at once, O(1) per value, and give bit for bit
  (``==``) the batch values, for any way the input is split into updates.
- ``peek`` returns what ``update`` would return for the same input, bit for bit, and
  changes no indicator value.
- ``get_state``/``set_state`` round-trip bit for bit, also for a subset of the series
  (used to roll back the pools of one chain after a reorganisation).

Defined edge behaviour (tested):

- Input shorter than the warm-up: all NaN.
- Leading NaNs are skipped: a series starts at its first non-NaN value, and the warm-up
  counts from there (what TA-Lib's Python wrapper does).
- A NaN after the start poisons the series: every later output is NaN. TA-Lib does the
  same for EMA, MACD and BBANDS; its RSI answers 0.0 after a NaN instead, which a rule
  like ``rsi < 30`` would read as "oversold", so that quirk is not copied.
- RSI of a window with neither gains nor losses (a flat series) is 0.0, as in the
  TA-Lib release we test against (TA-Lib 0.8.1 C library).
- Bollinger Bands of a constant window have zero width exactly.

The Bollinger deviation is computed on shifted data (sums of ``x - c`` and ``(x - c)**2``
with ``c`` re-centred on the window mean every ``period`` values), the textbook remedy
for the cancellation of ``E[x**2] - E[x]**2`` (see "Algorithms for calculating
variance", shifted-data variant), so a long series of large prices does not drift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rules.features import kernels

__all__ = [
    "StreamingBBands",
    "StreamingEMA",
    "StreamingMACD",
    "StreamingRSI",
    "bbands",
    "ema",
    "macd",
    "rsi",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


# --------------------------------------------------------------------------- validation


def _check_period(name: str, value: int, minimum: int = 2) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not minimum <= int(value) <= 100_000:
        raise ValueError(f"{name} must be in [{minimum}, 100000], got {value}")
    return int(value)


def _check_nbdev(nbdev: float) -> float:
    value = float(nbdev)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"nbdev must be a finite number >= 0, got {nbdev!r}")
    return value


def _as_series(x: Any) -> F64:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D array, got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _check_macd_periods(fast: int, slow: int, signal: int) -> tuple[int, int, int]:
    fast = _check_period("fast", fast)
    slow = _check_period("slow", slow)
    signal = _check_period("signal", signal, minimum=1)
    if fast >= slow:
        raise ValueError(f"MACD needs fast < slow, got fast={fast}, slow={slow}")
    return fast, slow, signal


def _ema_factor(period: int) -> float:
    return 2.0 / (period + 1)


def _macd_settings(fast: int, slow: int, signal: int) -> tuple[I64, F64]:
    periods = np.array([fast, slow, signal], dtype=np.int64)
    return periods, np.array([_ema_factor(fast), _ema_factor(slow), _ema_factor(signal)])


# --------------------------------------------------------------------------- batch


def ema(x: F64, period: int) -> F64:
    """Exponential moving average, ``k = 2 / (period + 1)``, seeded by the SMA of ``period``.

    The first value is at (first valid index) + ``period - 1``, like ``talib.EMA``.
    """
    period = _check_period("period", period)
    xs = _as_series(x)
    out = np.empty(xs.size)
    kernels.ema_series(xs, period, _ema_factor(period), out)
    return out


def rsi(x: F64, period: int = 14) -> F64:
    """Wilder's relative strength index, like ``talib.RSI`` (first value at index ``period``)."""
    period = _check_period("period", period)
    xs = _as_series(x)
    out = np.empty(xs.size)
    kernels.rsi_series(xs, period, out)
    return out


def macd(x: F64, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[F64, F64, F64]:
    """MACD line, signal line and histogram, like ``talib.MACD``.

    Both price EMAs start on the bar ``slow - 1`` (TA-Lib's convention): the slow EMA is
    seeded by the SMA of the first ``slow`` inputs, the fast EMA by the SMA of the last
    ``fast`` of them. The signal EMA is seeded by the SMA of the first ``signal`` MACD
    values; every output starts at index ``slow + signal - 2``. ``fast < slow`` required.
    """
    periods, ks = _macd_settings(*_check_macd_periods(fast, slow, signal))
    xs = _as_series(x)
    out = np.empty((3, xs.size))
    kernels.macd_series(xs, periods, ks, out)
    return out[0], out[1], out[2]


def bbands(x: F64, period: int = 20, nbdev: float = 2.0) -> tuple[F64, F64, F64]:
    """Bollinger Bands (upper, middle, lower) around the SMA, like ``talib.BBANDS`` (SMA).

    The deviation is the population standard deviation of the last ``period`` values.
    """
    period = _check_period("period", period)
    nbdev = _check_nbdev(nbdev)
    xs = _as_series(x)
    out = np.empty((3, xs.size))
    kernels.bbands_series(xs, period, nbdev, out)
    return out[0], out[1], out[2]


# --------------------------------------------------------------------------- streaming


class _Streaming:
    """K series: per-series state in the rows of ``_floats`` and ``_ints`` (the layout
    the compiled step takes), rows, masks, save and restore.

    Subclasses size the state (``_n_floats``, ``_n_ints``) and run their compiled rows loop
    in ``_step(rows, x, commit)``; ``update`` commits, ``peek`` does not. Sharing the one
    step function is what makes ``peek`` equal ``update`` and both equal the batch.
    """

    _kind: str = ""
    _n_outputs: int = 1

    def __init__(self, n_series: int, n_floats: int, n_ints: int) -> None:
        if isinstance(n_series, bool) or not isinstance(n_series, int) or n_series < 0:
            raise ValueError(f"n_series must be an int >= 0, got {n_series!r}")
        self.n_series = n_series
        self._floats = np.zeros((n_series, n_floats))
        self._ints = np.zeros((n_series, n_ints), dtype=np.int64)
        #: A window per series (slot-major); only Bollinger Bands have one.
        self._ring = np.zeros((0, n_series))
        self._all = np.arange(n_series, dtype=np.int64)

    # -- subclass hooks
    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _step(self, rows: I64, x: F64, commit: bool) -> tuple[F64, ...]:
        raise NotImplementedError

    # -- public API
    def _rows_input(self, x: Any, rows: Any) -> tuple[I64, F64]:
        values = np.ascontiguousarray(x, dtype=np.float64)
        if rows is None:
            if values.shape != (self.n_series,):
                raise ValueError(f"expected {self.n_series} values, got shape {values.shape}")
            return self._all, values
        idx = np.ascontiguousarray(rows, dtype=np.int64)
        if idx.ndim != 1 or values.shape != idx.shape:
            raise ValueError("rows and values must be 1-D arrays of the same length")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_series):
            raise IndexError(f"rows out of range [0, {self.n_series})")
        return idx, values

    def update_rows(self, rows: I64, x: F64) -> tuple[F64, ...]:
        """Commit one new close ``x[i]`` for series ``rows[i]`` (rows unique); outputs per row."""
        idx, values = self._rows_input(x, rows)
        return self._step(idx, values, True)

    def _update(self, x: Any, mask: Any) -> tuple[F64, ...]:
        values = np.asarray(x, dtype=np.float64)
        if values.shape != (self.n_series,):
            raise ValueError(f"expected {self.n_series} values, got shape {values.shape}")
        if mask is None:
            return self._step(self._all, np.ascontiguousarray(values), True)
        sel = np.asarray(mask, dtype=np.bool_)
        if sel.shape != (self.n_series,):
            raise ValueError(f"mask must have shape ({self.n_series},), got {sel.shape}")
        idx = np.flatnonzero(sel).astype(np.int64)
        outputs = self._step(idx, np.ascontiguousarray(values[idx]), True)
        full = []
        for out in outputs:
            arr = np.full(self.n_series, np.nan)
            arr[idx] = out
            full.append(arr)
        return tuple(full)

    def _peek(self, x: Any, rows: Any) -> tuple[F64, ...]:
        idx, values = self._rows_input(x, rows)
        return self._step(idx, values, False)

    def get_state(self) -> dict[str, Any]:
        """Bit-exact, picklable copy of the whole state."""
        state: dict[str, Any] = {"kind": self._kind, "n_series": self.n_series}
        state.update(self._params())
        state["floats"] = self._floats.copy()
        state["ints"] = self._ints.copy()
        state["ring"] = self._ring.copy()
        return state

    def set_state(self, state: Mapping[str, Any], rows: Any = None) -> None:
        """Restore ``state`` (from ``get_state``); with ``rows``, only those series."""
        expected = {"kind": self._kind, "n_series": self.n_series, **self._params()}
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(f"state {key}={state.get(key)!r} does not match {value!r}")
        floats, ints = np.asarray(state["floats"]), np.asarray(state["ints"])
        ring = np.asarray(state["ring"])
        own = (self._floats, self._ints, self._ring)
        if any(a.shape != b.shape for a, b in zip((floats, ints, ring), own, strict=True)):
            raise ValueError("state arrays do not match this indicator's layout")
        if rows is None:
            self._floats[...] = floats
            self._ints[...] = ints
            self._ring[...] = ring
            return
        idx = np.asarray(rows, dtype=np.int64)
        self._floats[idx] = floats[idx]
        self._ints[idx] = ints[idx]
        self._ring[:, idx] = ring[:, idx]


class StreamingEMA(_Streaming):
    """EMA of K series; ``update``/``peek`` return the EMA (NaN in the warm-up)."""

    _kind = "ema"

    def __init__(self, n_series: int, period: int) -> None:
        super().__init__(n_series, 1, 1)  # value; count
        self.period = _check_period("period", period)
        self._k = _ema_factor(self.period)

    def _params(self) -> dict[str, Any]:
        return {"period": self.period}

    def _step(self, rows: I64, x: F64, commit: bool) -> tuple[F64, ...]:
        out = np.empty(rows.size)
        kernels.ema_rows(self._floats, self._ints, rows, x, self.period, self._k, commit, out)
        return (out,)

    def update(self, x: F64, mask: NDArray[np.bool_] | None = None) -> F64:
        """Commit one close per masked series; returns the EMA (NaN where not masked)."""
        return self._update(x, mask)[0]

    def peek(self, x: F64, rows: I64 | None = None) -> F64:
        """EMA as if ``x`` were committed now (``x`` aligned with ``rows``); no state change."""
        return self._peek(x, rows)[0]


class StreamingRSI(_Streaming):
    """Wilder RSI of K series; ``update``/``peek`` return the RSI (NaN in the warm-up)."""

    _kind = "rsi"

    def __init__(self, n_series: int, period: int = 14) -> None:
        super().__init__(n_series, 3, 1)  # previous close, gain, loss; count
        self.period = _check_period("period", period)

    def _params(self) -> dict[str, Any]:
        return {"period": self.period}

    def _step(self, rows: I64, x: F64, commit: bool) -> tuple[F64, ...]:
        out = np.empty(rows.size)
        kernels.rsi_rows(self._floats, self._ints, rows, x, self.period, commit, out)
        return (out,)

    def update(self, x: F64, mask: NDArray[np.bool_] | None = None) -> F64:
        """Commit one close per masked series; returns the RSI (NaN where not masked)."""
        return self._update(x, mask)[0]

    def peek(self, x: F64, rows: I64 | None = None) -> F64:
        """RSI as if ``x`` were committed now (``x`` aligned with ``rows``); no state change."""
        return self._peek(x, rows)[0]


class StreamingMACD(_Streaming):
    """MACD of K series; ``update``/``peek`` return ``(macd, signal, hist)``."""

    _kind = "macd"

    def __init__(self, n_series: int, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        super().__init__(n_series, 3, 1)  # slow, fast, signal averages; count
        self.fast, self.slow, self.signal = _check_macd_periods(fast, slow, signal)
        self._periods, self._ks = _macd_settings(self.fast, self.slow, self.signal)

    def _params(self) -> dict[str, Any]:
        return {"fast": self.fast, "slow": self.slow, "signal": self.signal}

    def _step(self, rows: I64, x: F64, commit: bool) -> tuple[F64, ...]:
        out = np.empty((3, rows.size))
        kernels.macd_rows(self._floats, self._ints, rows, x, self._periods, self._ks, commit, out)
        return out[0], out[1], out[2]

    def update(self, x: F64, mask: NDArray[np.bool_] | None = None) -> tuple[F64, F64, F64]:
        """Commit one close per masked series; (macd, signal, hist), NaN where unmasked."""
        line, sig, hist = self._update(x, mask)
        return line, sig, hist

    def peek(self, x: F64, rows: I64 | None = None) -> tuple[F64, F64, F64]:
        """(macd, signal, hist) as if ``x`` were committed now; no state change."""
        line, sig, hist = self._peek(x, rows)
        return line, sig, hist


class StreamingBBands(_Streaming):
    """Bollinger Bands of K series; ``update``/``peek`` return ``(upper, middle, lower)``.

    State per series: the SMA running total, the shift and shifted sums of the deviation,
    the last ``period`` values (a ring), and the count and index of the last change (a
    window with no change has zero width exactly).
    """

    _kind = "bbands"

    def __init__(self, n_series: int, period: int = 20, nbdev: float = 2.0) -> None:
        self.period = _check_period("period", period)
        self.nbdev = _check_nbdev(nbdev)
        super().__init__(n_series, 4, 3)  # 4 sums; count, last change, next slot
        self._ring = np.zeros((self.period, n_series))

    def _params(self) -> dict[str, Any]:
        return {"period": self.period, "nbdev": self.nbdev}

    def _step(self, rows: I64, x: F64, commit: bool) -> tuple[F64, ...]:
        out = np.empty((3, rows.size))
        kernels.bbands_rows(
            self._floats, self._ints, self._ring, rows, x, self.period, self.nbdev, commit, out
        )
        return out[0], out[1], out[2]

    def update(self, x: F64, mask: NDArray[np.bool_] | None = None) -> tuple[F64, F64, F64]:
        """Commit one close per masked series; (upper, middle, lower), NaN where unmasked."""
        upper, middle, lower = self._update(x, mask)
        return upper, middle, lower

    def peek(self, x: F64, rows: I64 | None = None) -> tuple[F64, F64, F64]:
        """(upper, middle, lower) as if ``x`` were committed now; no state change."""
        upper, middle, lower = self._peek(x, rows)
        return upper, middle, lower
