"""Exact technical indicators: EMA, RSI, MACD and Bollinger Bands, batch and streaming.

What this module guarantees:

- The batch functions take a 1-D float64 array and return arrays of the same length with
  NaN in the warm-up. They agree with TA-Lib's ``EMA``, ``RSI``, ``MACD`` and ``BBANDS``
  (``matype=0``, ``nbdevup == nbdevdn``) to 1e-9: same lookback, same seeding
  (EMA seeded by the simple average of its first ``period`` inputs; MACD's fast EMA
  seeded over the last ``fast`` inputs of the slow EMA's seed window, so both start on
  the same bar; RSI with Wilder's smoothing and no unstable period; BBANDS with the
  population deviation around the simple average).
- The streaming classes update K series at once, O(1) per value, and give bit for bit
  (``==``) the batch values, for any way the input is split into updates. Both are
  written with the same floating-point operations in the same order (Python floats and
  numpy float64 element-wise operations round identically).
- ``peek`` returns what ``update`` would return for the same input, bit for bit, and
  changes no indicator value. (A peek of all series also keeps the step it computed; an
  ``update`` with the same closes from the same state then commits it without redoing
  the arithmetic. That is the bar-close hot path of the feature engine.)
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
    return arr


def _first_valid(values: list[float]) -> int:
    """Index of the first non-NaN value (len(values) if none): where a series starts."""
    for i, v in enumerate(values):
        if v == v:  # noqa: PLR0124 - the NaN test without a function call per element
            return i
    return len(values)


# --------------------------------------------------------------------------- batch


def ema(x: F64, period: int) -> F64:
    """Exponential moving average, ``k = 2 / (period + 1)``, seeded by the SMA of ``period``.

    The first value is at (first valid index) + ``period - 1``, like ``talib.EMA``.
    """
    period = _check_period("period", period)
    xs = _as_series(x).tolist()
    out = [math.nan] * len(xs)
    k = 2.0 / (period + 1)
    acc = 0.0
    start = _first_valid(xs)
    for i in range(start, len(xs)):
        count = i - start + 1
        v = xs[i]
        if count < period:
            acc = acc + v
        elif count == period:
            acc = (acc + v) / period
            out[i] = acc
        else:
            acc = acc + k * (v - acc)
            out[i] = acc
    return np.array(out, dtype=np.float64)


def rsi(x: F64, period: int = 14) -> F64:
    """Wilder's relative strength index, like ``talib.RSI`` (first value at index ``period``)."""
    period = _check_period("period", period)
    xs = _as_series(x).tolist()
    out = [math.nan] * len(xs)
    start = _first_valid(xs)
    if start >= len(xs):
        return np.array(out, dtype=np.float64)
    prev = xs[start]
    gain = 0.0
    loss = 0.0
    for i in range(start + 1, len(xs)):
        count = i - start + 1
        v = xs[i]
        d = v - prev
        prev = v
        # NaN goes to the gain side so that it reaches the output (see module docstring).
        up = 0.0 if d < 0.0 else d
        down = -d if d < 0.0 else 0.0
        if count <= period:
            gain = gain + up
            loss = loss + down
            continue
        if count == period + 1:
            gain = (gain + up) / period
            loss = (loss + down) / period
        else:
            gain = (gain * (period - 1) + up) / period
            loss = (loss * (period - 1) + down) / period
        total = gain + loss
        out[i] = 0.0 if total == 0.0 else 100.0 * (gain / total)
    return np.array(out, dtype=np.float64)


def macd(x: F64, fast: int = 12, slow: int = 26, signal: int = 9) -> tuple[F64, F64, F64]:
    """MACD line, signal line and histogram, like ``talib.MACD``.

    Both price EMAs start on the bar ``slow - 1`` (TA-Lib's convention): the slow EMA is
    seeded by the SMA of the first ``slow`` inputs, the fast EMA by the SMA of the last
    ``fast`` of them. The signal EMA is seeded by the SMA of the first ``signal`` MACD
    values; every output starts at index ``slow + signal - 2``. ``fast < slow`` required.
    """
    fast, slow, signal = _check_macd_periods(fast, slow, signal)
    xs = _as_series(x).tolist()
    n = len(xs)
    out_macd = [math.nan] * n
    out_signal = [math.nan] * n
    out_hist = [math.nan] * n
    k_fast = 2.0 / (fast + 1)
    k_slow = 2.0 / (slow + 1)
    k_signal = 2.0 / (signal + 1)
    first_output = slow + signal - 1
    slow_acc = 0.0
    fast_acc = 0.0
    signal_acc = 0.0
    start = _first_valid(xs)
    for i in range(start, n):
        count = i - start + 1
        v = xs[i]
        if count < slow:
            slow_acc = slow_acc + v
            if count > slow - fast:
                fast_acc = fast_acc + v
            continue
        if count == slow:
            slow_acc = (slow_acc + v) / slow
            fast_acc = (fast_acc + v) / fast
        else:
            slow_acc = slow_acc + k_slow * (v - slow_acc)
            fast_acc = fast_acc + k_fast * (v - fast_acc)
        line = fast_acc - slow_acc
        if count < first_output:
            signal_acc = signal_acc + line
            continue
        if signal == 1:
            signal_acc = line
        elif count == first_output:
            signal_acc = (signal_acc + line) / signal
        else:
            signal_acc = signal_acc + k_signal * (line - signal_acc)
        out_macd[i] = line
        out_signal[i] = signal_acc
        out_hist[i] = line - signal_acc
    return (
        np.array(out_macd, dtype=np.float64),
        np.array(out_signal, dtype=np.float64),
        np.array(out_hist, dtype=np.float64),
    )


def bbands(x: F64, period: int = 20, nbdev: float = 2.0) -> tuple[F64, F64, F64]:
    """Bollinger Bands (upper, middle, lower) around the SMA, like ``talib.BBANDS`` (SMA).

    The deviation is the population standard deviation of the last ``period`` values.
    """
    period = _check_period("period", period)
    nbdev = _check_nbdev(nbdev)
    xs = _as_series(x).tolist()
    n = len(xs)
    upper = [math.nan] * n
    middle = [math.nan] * n
    lower = [math.nan] * n
    start = _first_valid(xs)
    if start >= n:
        return _arrays3(upper, middle, lower)
    # Running state, named as in StreamingBBands.
    sma_total = 0.0
    shift = xs[start]
    dev_sum = 0.0
    dev_sq_sum = 0.0
    last_change = 0
    for i in range(start, n):
        j = i - start  # index inside the series
        count = j + 1
        v = xs[i]
        if j > 0 and v != xs[i - 1]:
            last_change = j
        dv = v - shift
        if count < period:
            sma_total = sma_total + v
            dev_sum = dev_sum + dv
            dev_sq_sum = dev_sq_sum + dv * dv
            continue
        total = sma_total + v
        mean = total / period
        u1 = dev_sum + dv
        u2 = dev_sq_sum + dv * dv
        if last_change <= j - period + 1:
            std = 0.0
        else:
            m1 = u1 / period
            var = u2 / period - m1 * m1
            std = math.sqrt(var) if var > 0.0 else (var if var != var else 0.0)  # noqa: PLR0124
        width = nbdev * std
        middle[i] = mean
        upper[i] = mean + width
        lower[i] = mean - width
        oldest = xs[i - period + 1]
        sma_total = total - oldest
        d_old = oldest - shift
        dev_sum = u1 - d_old
        dev_sq_sum = u2 - d_old * d_old
        if count % period == 0:
            shift, dev_sum, dev_sq_sum = _recenter(xs[i - period + 1 : i + 1])
    return _arrays3(upper, middle, lower)


def _recenter(window: list[float]) -> tuple[float, float, float]:
    """New shift (window mean) and the shifted sums over the window minus its oldest value.

    Sums run sequentially in time order; StreamingBBands does the same column by column.
    """
    total = 0.0
    for v in window:
        total = total + v
    shift = total / len(window)
    dev_sum = 0.0
    dev_sq_sum = 0.0
    for v in window[1:]:
        dv = v - shift
        dev_sum = dev_sum + dv
        dev_sq_sum = dev_sq_sum + dv * dv
    return shift, dev_sum, dev_sq_sum


def _arrays3(a: list[float], b: list[float], c: list[float]) -> tuple[F64, F64, F64]:
    return (
        np.array(a, dtype=np.float64),
        np.array(b, dtype=np.float64),
        np.array(c, dtype=np.float64),
    )


def _check_macd_periods(fast: int, slow: int, signal: int) -> tuple[int, int, int]:
    fast = _check_period("fast", fast)
    slow = _check_period("slow", slow)
    signal = _check_period("signal", signal, minimum=1)
    if fast >= slow:
        raise ValueError(f"MACD needs fast < slow, got fast={fast}, slow={slow}")
    return fast, slow, signal


# --------------------------------------------------------------------------- streaming


class _Streaming:
    """Shared machinery: K series, per-series state arrays, masks, rows, save/restore.

    Subclasses list their per-series state arrays in ``_fields`` and implement
    ``_compute(idx, x, commit)``, a pure function of the state that returns the outputs for
    the series ``idx`` (``None`` = all) and, when ``commit``, the candidate new state.
    ``update`` scatters that state back; ``peek`` only returns the outputs. Sharing one
    ``_compute`` is what makes ``peek`` equal ``update`` bit for bit. Each kernel has a
    steady-state path (every selected series past its warm-up) with the same arithmetic
    as the general path, minus the warm-up selections.
    """

    _fields: tuple[str, ...] = ()
    _kind: str = ""
    #: State arrays whose series axis is not the first one (ring buffers are slot-major).
    _series_axis: Mapping[str, int] = {}

    def __init__(self, n_series: int) -> None:
        if isinstance(n_series, bool) or not isinstance(n_series, int) or n_series < 0:
            raise ValueError(f"n_series must be an int >= 0, got {n_series!r}")
        self.n_series = n_series
        self.count = np.zeros(n_series, dtype=np.int64)
        # (x, candidate state, outputs) of the last all-series peek, valid until a commit.
        self._pending: tuple[F64, dict[str, Any], tuple[F64, ...]] | None = None
        # A threshold every series' count is known to have reached (counts only grow
        # between set_state calls): spares _steady a reduction per call.
        self._steady_from = 0

    # -- subclass hooks
    def _params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _compute(
        self, idx: I64 | None, x: F64, commit: bool
    ) -> tuple[dict[str, Any], tuple[F64, ...]]:
        raise NotImplementedError

    def _commit(self, idx: I64 | None, new: dict[str, Any]) -> None:
        for name, value in new.items():
            if idx is None:
                setattr(self, name, value)
            else:
                getattr(self, name)[idx] = value

    # -- helpers for subclasses
    def _take(self, name: str, idx: I64 | None) -> Any:
        arr = getattr(self, name)
        return arr if idx is None else arr[idx]

    def _started(self, idx: I64 | None, x: F64) -> tuple[I64, NDArray[np.bool_]]:
        count = self._take("count", idx)
        started = (count > 0) | ~np.isnan(x)
        return count + started, started

    # -- public API
    def _rows_input(self, x: Any, rows: Any, copy: bool) -> tuple[I64 | None, F64]:
        # Committed state must never alias the caller's array, hence the copy on commit.
        values = np.array(x, dtype=np.float64, copy=copy)
        if rows is None:
            if values.shape != (self.n_series,):
                raise ValueError(f"expected {self.n_series} values, got shape {values.shape}")
            return None, values
        idx = np.asarray(rows, dtype=np.int64)
        if idx.ndim != 1 or values.shape != idx.shape:
            raise ValueError("rows and values must be 1-D arrays of the same length")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_series):
            raise IndexError(f"rows out of range [0, {self.n_series})")
        return idx, values

    def update_rows(self, rows: I64, x: F64) -> tuple[F64, ...]:
        """Commit one new close ``x[i]`` for series ``rows[i]`` (rows unique); outputs per row."""
        idx, values = self._rows_input(x, rows, copy=True)
        self._pending = None
        new, outputs = self._compute(idx, values, True)
        self._commit(idx, new)
        return outputs

    def update_rows_all(self, x: F64) -> tuple[F64, ...]:
        """Commit one new close for every series; outputs per series."""
        idx, values = self._rows_input(x, None, copy=True)
        pending, self._pending = self._pending, None
        # Bit-equal closes (a NaN never matches, as in np.array_equal, at a third the cost).
        if pending is not None and not np.count_nonzero(pending[0] != values):
            # The last all-series peek computed exactly this step from exactly this state.
            _, new, outputs = pending
        else:
            new, outputs = self._compute(idx, values, True)
        self._commit(idx, new)
        return outputs

    def _update(self, x: Any, mask: Any) -> tuple[F64, ...]:
        values = np.asarray(x, dtype=np.float64)
        if values.shape != (self.n_series,):
            raise ValueError(f"expected {self.n_series} values, got shape {values.shape}")
        if mask is None:
            return self.update_rows_all(values)
        sel = np.asarray(mask, dtype=np.bool_)
        if sel.shape != (self.n_series,):
            raise ValueError(f"mask must have shape ({self.n_series},), got {sel.shape}")
        idx = np.flatnonzero(sel).astype(np.int64)
        outputs = self.update_rows(idx, values[idx])
        full = []
        for out in outputs:
            arr = np.full(self.n_series, np.nan)
            arr[idx] = out
            full.append(arr)
        return tuple(full)

    def _peek(self, x: Any, rows: Any) -> tuple[F64, ...]:
        if rows is None:
            # An all-series peek also prepares the step: when the bar then closes at the
            # same values, committing it costs no arithmetic (the hot path of a bar close).
            idx, values = self._rows_input(x, None, copy=True)
            new, outputs = self._compute(idx, values, True)
            self._pending = (values, new, outputs)
            return outputs
        idx, values = self._rows_input(x, rows, copy=False)
        return self._compute(idx, values, False)[1]

    def _steady(self, count: I64, threshold: int) -> bool:
        """Every selected series has at least ``threshold`` values."""
        if not count.size:
            return False
        if threshold <= self._steady_from:
            return True
        least = int(self.count.min())  # over all series: a bound for any selection
        self._steady_from = max(self._steady_from, least)
        return threshold <= least or int(count.min()) >= threshold

    def get_state(self) -> dict[str, Any]:
        """Bit-exact, picklable copy of the whole state."""
        state: dict[str, Any] = {"kind": self._kind, "n_series": self.n_series}
        state.update(self._params())
        for name in ("count", *self._fields):
            state[name] = getattr(self, name).copy()
        return state

    def set_state(self, state: Mapping[str, Any], rows: Any = None) -> None:
        """Restore ``state`` (from ``get_state``); with ``rows``, only those series."""
        expected = {"kind": self._kind, "n_series": self.n_series, **self._params()}
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(f"state {key}={state.get(key)!r} does not match {value!r}")
        names = ("count", *self._fields)
        self._pending = None
        self._steady_from = 0
        if rows is None:
            for name in names:
                setattr(self, name, np.array(state[name], copy=True))
            return
        idx = np.asarray(rows, dtype=np.int64)
        for name in names:
            src = np.asarray(state[name])
            if self._series_axis.get(name, 0) == 1:
                getattr(self, name)[:, idx] = src[:, idx]
            else:
                getattr(self, name)[idx] = src[idx]


class StreamingEMA(_Streaming):
    """EMA of K series; ``update``/``peek`` return the EMA (NaN in the warm-up)."""

    _fields = ("value",)
    _kind = "ema"

    def __init__(self, n_series: int, period: int) -> None:
        super().__init__(n_series)
        self.period = _check_period("period", period)
        self._k = 2.0 / (self.period + 1)
        self.value = np.zeros(n_series)

    def _params(self) -> dict[str, Any]:
        return {"period": self.period}

    def _compute(
        self, idx: I64 | None, x: F64, commit: bool
    ) -> tuple[dict[str, Any], tuple[F64, ...]]:
        period = self.period
        value = self._take("value", idx)
        count = self._take("count", idx)
        if self._steady(count, period):
            new_value = x - value
            new_value *= self._k
            new_value += value
            # The output is a copy: callers may keep or change it, the state must not move.
            return {"count": count + 1, "value": new_value}, (new_value.copy(),)
        new_count, started = self._started(idx, x)
        summed = value + x
        new_value = np.where(
            new_count < period,
            summed,
            np.where(new_count == period, summed / period, value + self._k * (x - value)),
        )
        new_value = np.where(started, new_value, value)
        out = np.where(new_count >= period, new_value, np.nan)  # a new array, not the state
        return {"count": new_count, "value": new_value}, (out,)

    def update(self, x: F64, mask: NDArray[np.bool_] | None = None) -> F64:
        """Commit one close per masked series; returns the EMA (NaN where not masked)."""
        return self._update(x, mask)[0]

    def peek(self, x: F64, rows: I64 | None = None) -> F64:
        """EMA as if ``x`` were committed now (``x`` aligned with ``rows``); no state change."""
        return self._peek(x, rows)[0]


class StreamingRSI(_Streaming):
    """Wilder RSI of K series; ``update``/``peek`` return the RSI (NaN in the warm-up)."""

    _fields = ("prev", "gain", "loss")
    _kind = "rsi"

    def __init__(self, n_series: int, period: int = 14) -> None:
        super().__init__(n_series)
        self.period = _check_period("period", period)
        self.prev = np.zeros(n_series)
        self.gain = np.zeros(n_series)
        self.loss = np.zeros(n_series)

    def _params(self) -> dict[str, Any]:
        return {"period": self.period}

    def _compute(
        self, idx: I64 | None, x: F64, commit: bool
    ) -> tuple[dict[str, Any], tuple[F64, ...]]:
        period = self.period
        count = self._take("count", idx)
        prev = self._take("prev", idx)
        gain = self._take("gain", idx)
        loss = self._take("loss", idx)
        d = x - prev
        if self._steady(count, period + 1):
            # max(d, 0) is the batch's "0 if d < 0 else d" (NaN stays NaN, -0.0 adds as 0).
            new_gain = gain * (period - 1)
            new_gain += np.maximum(d, 0.0)
            new_gain /= period
            new_loss = loss * (period - 1)
            np.negative(d, out=d)
            new_loss += np.maximum(d, 0.0)
            new_loss /= period
            total = new_gain + new_loss
            with np.errstate(invalid="ignore", divide="ignore"):
                out = new_gain / total
            out *= 100.0
            zero = total == 0.0
            if np.count_nonzero(zero):
                out[zero] = 0.0
            new = {"count": count + 1, "prev": x, "gain": new_gain, "loss": new_loss}
            return new, (out,)
        falling = d < 0.0
        # NaN goes to the gain side so that it reaches the output (see module docstring).
        up = np.where(falling, 0.0, d)
        down = np.where(falling, -d, 0.0)
        new_count, started = self._started(idx, x)
        first = new_count == 1
        warm = new_count <= period
        seed = new_count == period + 1
        new_gain = np.where(
            warm,
            gain + up,
            np.where(seed, (gain + up) / period, (gain * (period - 1) + up) / period),
        )
        new_loss = np.where(
            warm,
            loss + down,
            np.where(seed, (loss + down) / period, (loss * (period - 1) + down) / period),
        )
        # The first value only sets the reference price.
        new_gain = np.where(first | ~started, gain, new_gain)
        new_loss = np.where(first | ~started, loss, new_loss)
        new_prev = np.where(started, x, prev)
        total = new_gain + new_loss
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.where(total == 0.0, 0.0, 100.0 * (new_gain / total))
        out = np.where(new_count > period, out, np.nan)
        return {"count": new_count, "prev": new_prev, "gain": new_gain, "loss": new_loss}, (out,)

    def update(self, x: F64, mask: NDArray[np.bool_] | None = None) -> F64:
        """Commit one close per masked series; returns the RSI (NaN where not masked)."""
        return self._update(x, mask)[0]

    def peek(self, x: F64, rows: I64 | None = None) -> F64:
        """RSI as if ``x`` were committed now (``x`` aligned with ``rows``); no state change."""
        return self._peek(x, rows)[0]


class StreamingMACD(_Streaming):
    """MACD of K series; ``update``/``peek`` return ``(macd, signal, hist)``."""

    _fields = ("slow_value", "fast_value", "signal_value")
    _kind = "macd"

    def __init__(self, n_series: int, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        super().__init__(n_series)
        self.fast, self.slow, self.signal = _check_macd_periods(fast, slow, signal)
        self._k_fast = 2.0 / (self.fast + 1)
        self._k_slow = 2.0 / (self.slow + 1)
        self._k_signal = 2.0 / (self.signal + 1)
        self.slow_value = np.zeros(n_series)
        self.fast_value = np.zeros(n_series)
        self.signal_value = np.zeros(n_series)

    def _params(self) -> dict[str, Any]:
        return {"fast": self.fast, "slow": self.slow, "signal": self.signal}

    def _compute(
        self, idx: I64 | None, x: F64, commit: bool
    ) -> tuple[dict[str, Any], tuple[F64, ...]]:
        fast, slow, signal = self.fast, self.slow, self.signal
        first_output = slow + signal - 1
        count = self._take("count", idx)
        slow_value = self._take("slow_value", idx)
        fast_value = self._take("fast_value", idx)
        signal_value = self._take("signal_value", idx)
        if self._steady(count, first_output):
            new_slow = x - slow_value
            new_slow *= self._k_slow
            new_slow += slow_value
            new_fast = x - fast_value
            new_fast *= self._k_fast
            new_fast += fast_value
            line = new_fast - new_slow
            if signal == 1:
                new_signal = line.copy()
            else:
                new_signal = line - signal_value
                new_signal *= self._k_signal
                new_signal += signal_value
            new = {
                "count": count + 1,
                "slow_value": new_slow,
                "fast_value": new_fast,
                "signal_value": new_signal,
            }
            # The signal output is a copy: callers may keep or change it, the state not.
            return new, (line, new_signal.copy(), line - new_signal)
        new_count, started = self._started(idx, x)
        new_slow = np.where(
            new_count < slow,
            slow_value + x,
            np.where(
                new_count == slow,
                (slow_value + x) / slow,
                slow_value + self._k_slow * (x - slow_value),
            ),
        )
        new_fast = np.where(
            new_count <= slow - fast,
            fast_value,
            np.where(
                new_count < slow,
                fast_value + x,
                np.where(
                    new_count == slow,
                    (fast_value + x) / fast,
                    fast_value + self._k_fast * (x - fast_value),
                ),
            ),
        )
        line = new_fast - new_slow
        if signal == 1:
            smoothed = line
        else:
            smoothed = np.where(
                new_count == first_output,
                (signal_value + line) / signal,
                signal_value + self._k_signal * (line - signal_value),
            )
        new_signal = np.where(
            new_count < slow,
            signal_value,
            np.where(new_count < first_output, signal_value + line, smoothed),
        )
        new_slow = np.where(started, new_slow, slow_value)
        new_fast = np.where(started, new_fast, fast_value)
        new_signal = np.where(started, new_signal, signal_value)
        valid = new_count >= first_output
        out_line = np.where(valid, line, np.nan)
        out_signal = np.where(valid, new_signal, np.nan)
        new = {
            "count": new_count,
            "slow_value": new_slow,
            "fast_value": new_fast,
            "signal_value": new_signal,
        }
        return new, (out_line, out_signal, out_line - out_signal)

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

    State per series: the last ``period`` values (a ring, slot = index % period, stored
    slot-major so that series in step read and write contiguous memory), the SMA running
    total (TA-Lib's order: add the new value, divide, subtract the oldest), the shift and
    shifted sums of the deviation, and the index of the last change (a window with no
    change has zero width exactly).
    """

    _fields = ("ring", "sma_total", "shift", "dev_sum", "dev_sq_sum", "last_change")
    _kind = "bbands"
    _series_axis: Mapping[str, int] = {"ring": 1}

    def __init__(self, n_series: int, period: int = 20, nbdev: float = 2.0) -> None:
        super().__init__(n_series)
        self.period = _check_period("period", period)
        self.nbdev = _check_nbdev(nbdev)
        self.ring = np.zeros((self.period, n_series))
        self.sma_total = np.zeros(n_series)
        self.shift = np.zeros(n_series)
        self.dev_sum = np.zeros(n_series)
        self.dev_sq_sum = np.zeros(n_series)
        self.last_change = np.zeros(n_series, dtype=np.int64)

    def _params(self) -> dict[str, Any]:
        return {"period": self.period, "nbdev": self.nbdev}

    def _ring_read(self, slots: I64 | int, rows: I64 | None) -> F64:
        ring: F64 = self.ring
        if isinstance(slots, int):
            row: F64 = ring[slots]
            return row if rows is None else row[rows]
        picked: F64 = ring[slots, np.arange(self.n_series) if rows is None else rows]
        return picked

    def _compute(
        self, idx: I64 | None, x: F64, commit: bool
    ) -> tuple[dict[str, Any], tuple[F64, ...]]:
        period = self.period
        count = self._take("count", idx)
        sma_total = self._take("sma_total", idx)
        shift = self._take("shift", idx)
        dev_sum = self._take("dev_sum", idx)
        dev_sq_sum = self._take("dev_sq_sum", idx)
        last_change = self._take("last_change", idx)
        first = int(count[0]) if count.size else 0
        # j: index (inside the series) of the value being added; a scalar when all agree.
        agree = bool(count.size) and not np.count_nonzero(count != first)
        j: I64 | int = first if agree else count
        steady = bool(count.size) and (first >= period if agree else int(count.min()) >= period)
        started: NDArray[np.bool_] | None = None
        if steady:
            new_count = count + 1
        else:
            new_count, started = self._started(idx, x)
            # The first value of a series is its shift (shifted-data variance).
            shift = np.where(count == 0, x, shift)
        prev = self._ring_read((j - 1) % period, idx)
        changed = x != prev
        if not steady:
            changed &= count > 0
        new_last_change = np.where(changed, j, last_change)
        dv = x - shift
        u0 = sma_total + x
        u1 = dev_sum + dv
        u2 = dv * dv
        u2 += dev_sq_sum
        mean = u0 / period
        var = u2 / period
        m1 = u1 / period
        m1 *= m1
        var -= m1
        # max(var, 0) keeps NaN (a poisoned series stays NaN).
        std = np.sqrt(np.maximum(var, 0.0))
        flat = new_last_change <= j - (period - 1)
        if np.count_nonzero(flat):
            std[flat] = 0.0
        std *= self.nbdev
        upper = mean + std
        lower = mean - std
        if not steady:
            full = new_count >= period
            upper[~full] = np.nan
            mean = np.where(full, mean, np.nan)
            lower[~full] = np.nan
        outputs = (upper, mean, lower)
        if not commit:
            return {}, outputs
        oldest = self._ring_read((j + 1) % period, idx)  # leaves after this value
        d_old = oldest - shift
        new_sma = u0 - oldest
        new_dev = u1 - d_old
        d_old *= d_old
        new_dev_sq = u2 - d_old
        if started is not None:
            full = new_count >= period
            keep = ~started
            new_sma = np.where(keep, sma_total, np.where(full, new_sma, u0))
            new_dev = np.where(keep, dev_sum, np.where(full, new_dev, u1))
            new_dev_sq = np.where(keep, dev_sq_sum, np.where(full, new_dev_sq, u2))
            new_last_change = np.where(keep, last_change, new_last_change)
        new = {
            "count": new_count,
            "sma_total": new_sma,
            "shift": shift,
            "dev_sum": new_dev,
            "dev_sq_sum": new_dev_sq,
            "last_change": new_last_change,
            "_ring_value": x,
            "_ring_slot": j % period,
            "_started": started,
        }
        return new, outputs

    def _commit(self, idx: I64 | None, new: dict[str, Any]) -> None:
        slot: I64 | int = new.pop("_ring_slot")
        value: F64 = new.pop("_ring_value")
        started: NDArray[np.bool_] | None = new.pop("_started")
        if started is None and isinstance(slot, int) and idx is None:
            self.ring[slot] = value  # the steady all-series step: one ring row
        else:
            rows = np.arange(self.n_series) if idx is None else idx
            if started is not None and not bool(started.all()):
                if isinstance(slot, int):
                    slot = np.full(rows.shape, slot, dtype=np.int64)
                rows, slot, value = rows[started], slot[started], value[started]
            if isinstance(slot, int) and idx is None:
                self.ring[slot] = value
            elif rows.size:
                self.ring[slot, rows] = value
        super()._commit(idx, new)
        # Re-centre the shifted sums of the series that just completed a multiple of
        # `period` values: the ring then holds the window in time order.
        count = self.count if idx is None else self.count[idx]
        first = int(count[0]) if count.size else 0
        if count.size and not np.count_nonzero(count != first):
            # Every selected series at the same count (the usual step): one scalar test.
            if first > 0 and first % self.period == 0:
                self._recenter(idx)
            return
        due_sel = (count % self.period == 0) & (count > 0)
        if not np.count_nonzero(due_sel):
            return
        if idx is None:
            self._recenter(None if bool(due_sel.all()) else np.flatnonzero(due_sel))
        else:
            self._recenter(idx[due_sel])

    def _recenter(self, rows: I64 | None) -> None:
        window = self.ring if rows is None else self.ring[:, rows]
        total = window[0].copy()
        for slot in range(1, self.period):
            total += window[slot]
        shift = total / self.period
        dev_sum = np.zeros(shift.size)
        dev_sq_sum = np.zeros(shift.size)
        for slot in range(1, self.period):
            dv = window[slot] - shift
            dev_sum += dv
            dev_sq_sum += dv * dv
        sel = slice(None) if rows is None else rows
        self.shift[sel] = shift
        self.dev_sum[sel] = dev_sum
        self.dev_sq_sum[sel] = dev_sq_sum

    def update(self, x: F64, mask: NDArray[np.bool_] | None = None) -> tuple[F64, F64, F64]:
        """Commit one close per masked series; (upper, middle, lower), NaN where unmasked."""
        upper, middle, lower = self._update(x, mask)
        return upper, middle, lower

    def peek(self, x: F64, rows: I64 | None = None) -> tuple[F64, F64, F64]:
        """(upper, middle, lower) as if ``x`` were committed now; no state change."""
        upper, middle, lower = self._peek(x, rows)
        return upper, middle, lower
