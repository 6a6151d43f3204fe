"""The compiled loops: bars, every indicator and every feature (the layer state machine
is :mod:`rules.layers.machine`).

What this module guarantees:

- :func:`feature_steps` is the one implementation of bars (the rules of
  :mod:`rules.features.bars`) and of every feature of
  :data:`~rules.features.params.ENGINE_FEATURES` (defined in
  :mod:`rules.features.proxies`), ``breadth`` and ``corr`` included.
  :class:`~rules.features.engine.FeatureEngine` runs it for one step (the live daemon,
  at every block) and for a table of steps (the backtest, a catch-up) alike, in place on
  the state arrays the engine owns (:func:`new_state`): cutting a table into calls
  anywhere gives the same bits.
- The indicator steps (:func:`ema_step`, :func:`rsi_step`, :func:`macd_step`,
  :func:`bbands_step`) are the one implementation of EMA, RSI, MACD and Bollinger Bands:
  :func:`feature_steps` calls them at every bar close (committed) and for every forming
  bar (peeked), and :mod:`rules.indicators` runs them over a 1-D series (``*_series``) or
  over rows of many series (``*_rows``). MACD's three averages are :func:`ema_step`.
- Everything compiled lives in this one file: numba's cache is invalidated when the file
  of a cached function changes, not when a function it calls from another file does, so
  a compiled helper kept elsewhere could run stale.
- numba compiles without fast-math: IEEE 754 rounding, nothing reassociated or fused.
- Pure: no I/O of their own. numba keeps the compiled machine code in its cache
  (``__pycache__``, or ``NUMBA_CACHE_DIR``) so that only the first run compiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numba import njit
from numpy.typing import NDArray

from rules.features.params import ENGINE_FEATURES, FeatureParams
from rules.features.proxies import LAMBERT_IV_SCALE, periods_per_year

__all__ = [
    "FEATURE_INDEX",
    "SAMPLE_ERRORS",
    "bbands_step",
    "check_samples",
    "ema_step",
    "feature_steps",
    "macd_step",
    "new_state",
    "rsi_step",
]

#: Row of each feature in :func:`feature_steps`' output.
FEATURE_INDEX: dict[str, int] = {name: i for i, name in enumerate(ENGINE_FEATURES)}
# The rows as module constants (numba compiles them in as literals), in ENGINE_FEATURES'
# order (rules.types.FEATURE_NAMES); tests/test_kernels.py checks each one by name.
(
    _PRICE,
    _RET,
    _MOVE_SIGMA,
    _MOVE_1H,
    _MOVE_4H,
    _MOVE_24H,
    _DRAWDOWN_24H,
    _REALIZED_VOL,
    _RSI,
    _MACD,
    _MACD_SIGNAL,
    _MACD_HIST,
    _BB_UPPER,
    _BB_MIDDLE,
    _BB_LOWER,
    _BB_POS,
    _TVL,
    _TICK_TVL,
    _VOLUME_24H,
    _TVL_VOLUME,
    _IV,
    _TVL_DRAIN,
    _MEV_SCORE,
    _BREADTH,
    _CORR,
) = range(len(ENGINE_FEATURES))
_NAN = math.nan

_jit = njit(cache=True, nogil=True, error_model="numpy")
# The feature and indicator loops allocate nothing: they work on arrays their caller
# owns, so they are compiled without numba's reference counting (``_nrt=False``, the jit
# option numba's own tests use): its atomic increments and decrements around every array
# a helper touches cost about a third of a bar close. Anything that allocates keeps it.
_NO_REFCOUNTS: dict[str, Any] = {"_nrt": False}  # not in numba's type stubs
_FunctionT = TypeVar("_FunctionT", bound=Callable[..., Any])


def _loop(function: _FunctionT) -> _FunctionT:
    compiled: _FunctionT = njit(cache=True, nogil=True, error_model="numpy", **_NO_REFCOUNTS)(
        function
    )
    return compiled


def _inline(function: _FunctionT) -> _FunctionT:
    """A helper of the loops, inlined into its callers before compilation (no calls)."""
    compiled: _FunctionT = njit(
        cache=True, nogil=True, error_model="numpy", inline="always", **_NO_REFCOUNTS
    )(function)
    return compiled


# --------------------------------------------------------------------------- indicators
# One series' state lives in a row of two arrays, ``fl[p, field]`` (floats) and
# ``it[p, field]`` (ints), from the base fields the caller gives (and Bollinger's window
# in a slot-major ring, ``ring[slot, p]``): the feature engine keeps every indicator in its
# own state arrays, rules.indicators in arrays of their own.


@_inline
def _max0(x: float) -> float:
    """``max(x, 0)`` that keeps NaN (a poisoned series stays NaN) and -0.0."""
    if x < 0.0:
        return 0.0
    return x


@_inline
def ema_step(value: float, n: int, x: float, period: int, k: float) -> float:
    """An EMA after its ``n``-th input ``x`` (``n`` from 1), from ``value`` after the
    previous one: the running sum while ``n < period``, the SMA seed at ``n == period``,
    then ``value + k * (x - value)`` (TA-Lib's seeding). Period 1 is the identity."""
    if period == 1:
        return x
    if n < period:
        return value + x
    if n == period:
        return (value + x) / period
    return value + k * (x - value)


@_inline
def ema_update(fl: Any, it: Any, p: int, x: float, period: int, k: float, commit: bool) -> float:
    """One input of series ``p`` of an EMA: ``fl[p, 0]`` the average, ``it[p, 0]`` the
    inputs since the series started (leading NaNs are skipped). NaN in the warm-up."""
    c = it[p, 0]
    if c == 0 and math.isnan(x):
        return _NAN  # not started: nothing changes
    n = c + 1
    value = ema_step(fl[p, 0], n, x, period, k)
    if commit:
        fl[p, 0] = value
        it[p, 0] = n
    return value if n >= period else _NAN


@_inline
def rsi_step(
    fl: Any, it: Any, f0: int, i0: int, p: int, x: float, period: int, commit: bool
) -> float:
    """Wilder's RSI after input ``x`` of series ``p``: ``fl[p, f0 .. f0 + 2]`` = (previous
    input, average gain, average loss), ``it[p, i0]`` the inputs since the start.

    The first input only sets the reference; gains and losses are summed over ``period``
    changes, averaged, then smoothed by ``(avg * (period - 1) + change) / period``. NaN in
    the warm-up; 0 when there was neither gain nor loss. A NaN change counts as a gain so
    that it reaches the output (a NaN after the start poisons the series).
    """
    c = it[p, i0]
    if c == 0 and math.isnan(x):
        return _NAN
    n = c + 1
    gain = fl[p, f0 + 1]
    loss = fl[p, f0 + 2]
    if n > 1:
        d = x - fl[p, f0]
        falling = d < 0.0
        up = 0.0 if falling else d
        down = -d if falling else 0.0
        if n <= period:
            gain = gain + up
            loss = loss + down
        elif n == period + 1:
            gain = (gain + up) / period
            loss = (loss + down) / period
        else:
            gain = (gain * (period - 1) + up) / period
            loss = (loss * (period - 1) + down) / period
    out = _NAN
    if n > period:
        total = gain + loss
        out = 0.0 if total == 0.0 else 100.0 * (gain / total)
    if commit:
        it[p, i0] = n
        fl[p, f0] = x
        fl[p, f0 + 1] = gain
        fl[p, f0 + 2] = loss
    return out


@_inline
def macd_step(
    fl: Any,
    it: Any,
    f0: int,
    i0: int,
    p: int,
    x: float,
    fast: int,
    slow: int,
    signal: int,
    k_fast: float,
    k_slow: float,
    k_signal: float,
    commit: bool,
) -> tuple[float, float, float]:
    """MACD (line, signal, hist) after input ``x`` of series ``p``: ``fl[p, f0 .. f0 + 2]``
    = (slow, fast, signal) averages, ``it[p, i0]`` the inputs since the start; ``k_*``
    the EMA factors of the periods.

    TA-Lib's convention: both price EMAs start on input ``slow`` (the fast one is seeded
    over the last ``fast`` inputs of the slow one's seed window), the signal EMA over the
    line from there; every output starts at input ``slow + signal - 1``.
    """
    c = it[p, i0]
    if c == 0 and math.isnan(x):
        return _NAN, _NAN, _NAN
    n = c + 1
    slow_value = ema_step(fl[p, f0], n, x, slow, k_slow)
    lead = slow - fast
    fast_value = fl[p, f0 + 1]
    if n > lead:
        fast_value = ema_step(fast_value, n - lead, x, fast, k_fast)
    signal_value = fl[p, f0 + 2]
    line = _NAN
    if n >= slow:
        line = fast_value - slow_value
        signal_value = ema_step(signal_value, n - slow + 1, line, signal, k_signal)
    if commit:
        it[p, i0] = n
        fl[p, f0] = slow_value
        fl[p, f0 + 1] = fast_value
        fl[p, f0 + 2] = signal_value
    if n >= slow + signal - 1:
        return line, signal_value, line - signal_value
    return _NAN, _NAN, _NAN


@_inline
def bbands_step(
    fl: Any,
    it: Any,
    ring: Any,
    f0: int,
    i0: int,
    r0: int,
    p: int,
    x: float,
    period: int,
    nbdev: float,
    commit: bool,
) -> tuple[float, float, float]:
    """Bollinger Bands (upper, middle, lower) after input ``x`` of series ``p``.

    ``fl[p, f0 .. f0 + 3]`` = (SMA running total, shift, shifted sum, shifted sum of
    squares), ``ring[r0 + slot, p]`` the last ``period`` inputs (slot = index % period),
    ``it[p, i0 .. i0 + 2]`` = (inputs since the start, index of the last change, the slot
    of the next input: kept, so that no input costs an integer division).

    The middle band is the SMA in TA-Lib's order (add the new input, divide, subtract the
    oldest); the deviation is the population one of the window, computed on shifted data
    (sums of ``x - c`` and ``(x - c)**2``, ``c`` re-centred on the window mean every
    ``period`` inputs: the textbook remedy for the cancellation of ``E[x**2] - E[x]**2``),
    and exactly 0 for a window without change. NaN in the warm-up.
    """
    c = it[p, i0]
    if c == 0 and math.isnan(x):
        return _NAN, _NAN, _NAN
    j = c  # index of x in the series
    n = c + 1
    slot = it[p, i0 + 2]  # j % period
    shift = x if c == 0 else fl[p, f0 + 1]
    last_change = it[p, i0 + 1]
    if c > 0 and x != ring[r0 + (slot - 1 if slot else period - 1), p]:
        last_change = j
    dv = x - shift
    u0 = fl[p, f0] + x
    u1 = fl[p, f0 + 2] + dv
    u2 = dv * dv
    u2 += fl[p, f0 + 3]
    mean = u0 / period
    var = u2 / period
    m1 = u1 / period
    m1 *= m1
    var -= m1
    std = math.sqrt(_max0(var))
    if last_change <= j - (period - 1):
        std = 0.0
    std *= nbdev
    upper = mean + std
    lower = mean - std
    if n < period:
        upper = _NAN
        mean = _NAN
        lower = _NAN
    if not commit:
        return upper, mean, lower
    new_sma, new_dev, new_dev_sq = u0, u1, u2
    if n >= period:
        # The input that leaves the window after this one: period - 1 inputs back.
        oldest = ring[r0 + (slot + 1 if slot + 1 < period else 0), p]
        d_old = oldest - shift
        new_sma = u0 - oldest
        new_dev = u1 - d_old
        d_old *= d_old
        new_dev_sq = u2 - d_old
    ring[r0 + slot, p] = x
    it[p, i0 + 2] = slot + 1 if slot + 1 < period else 0
    it[p, i0] = n
    it[p, i0 + 1] = last_change
    fl[p, f0] = new_sma
    fl[p, f0 + 1] = shift
    fl[p, f0 + 2] = new_dev
    fl[p, f0 + 3] = new_dev_sq
    if slot + 1 == period:  # n % period == 0
        # Re-centre: the ring now holds the window in time order.
        total = ring[r0, p]
        for slot in range(1, period):
            total += ring[r0 + slot, p]
        centre = total / period
        ds = 0.0
        dss = 0.0
        for slot in range(1, period):
            d = ring[r0 + slot, p] - centre
            ds += d
            dss += d * d
        fl[p, f0 + 1] = centre
        fl[p, f0 + 2] = ds
        fl[p, f0 + 3] = dss
    return upper, mean, lower


# rules.indicators' loops: over a 1-D series (batch) and over rows (streaming).


@_jit
def ema_series(x: Any, period: int, k: float, out: Any) -> None:
    fl = np.zeros((1, 1))
    it = np.zeros((1, 1), dtype=np.int64)
    for t in range(x.size):
        out[t] = ema_update(fl, it, 0, x[t], period, k, True)


@_loop
def ema_rows(
    fl: Any, it: Any, rows: Any, x: Any, period: int, k: float, commit: bool, out: Any
) -> None:
    for i in range(rows.size):
        out[i] = ema_update(fl, it, rows[i], x[i], period, k, commit)


@_jit
def rsi_series(x: Any, period: int, out: Any) -> None:
    fl = np.zeros((1, 3))
    it = np.zeros((1, 1), dtype=np.int64)
    for t in range(x.size):
        out[t] = rsi_step(fl, it, 0, 0, 0, x[t], period, True)


@_loop
def rsi_rows(fl: Any, it: Any, rows: Any, x: Any, period: int, commit: bool, out: Any) -> None:
    for i in range(rows.size):
        out[i] = rsi_step(fl, it, 0, 0, rows[i], x[i], period, commit)


@_jit
def macd_series(x: Any, periods: Any, ks: Any, out: Any) -> None:
    fl = np.zeros((1, 3))
    it = np.zeros((1, 1), dtype=np.int64)
    fast, slow, signal = periods[0], periods[1], periods[2]
    for t in range(x.size):
        out[0, t], out[1, t], out[2, t] = macd_step(
            fl, it, 0, 0, 0, x[t], fast, slow, signal, ks[0], ks[1], ks[2], True
        )


@_loop
def macd_rows(
    fl: Any, it: Any, rows: Any, x: Any, periods: Any, ks: Any, commit: bool, out: Any
) -> None:
    fast, slow, signal = periods[0], periods[1], periods[2]
    for i in range(rows.size):
        out[0, i], out[1, i], out[2, i] = macd_step(
            fl, it, 0, 0, rows[i], x[i], fast, slow, signal, ks[0], ks[1], ks[2], commit
        )


@_jit
def bbands_series(x: Any, period: int, nbdev: float, out: Any) -> None:
    fl = np.zeros((1, 4))
    it = np.zeros((1, 3), dtype=np.int64)
    ring = np.zeros((period, 1))
    for t in range(x.size):
        out[0, t], out[1, t], out[2, t] = bbands_step(
            fl, it, ring, 0, 0, 0, 0, x[t], period, nbdev, True
        )


@_loop
def bbands_rows(
    fl: Any,
    it: Any,
    ring: Any,
    rows: Any,
    x: Any,
    period: int,
    nbdev: float,
    commit: bool,
    out: Any,
) -> None:
    for i in range(rows.size):
        out[0, i], out[1, i], out[2, i] = bbands_step(
            fl, it, ring, 0, 0, 0, rows[i], x[i], period, nbdev, commit
        )


# --------------------------------------------------------------------------- feature state
# FeatureEngine's state is three arrays. Per-pool values are pool-major, floats[pool,
# field] and ints[pool, field]: the forty-odd fields a step reads and writes for one pool
# sit in a few adjacent cache lines, and a step over many pools walks them in one
# sequential pass. Windows are slot-major rings, rings[row, pool], aligned on bar time
# across pools: pools closing the same bar touch one contiguous row per ring, and corr
# sums a ring row across pools. The base row of each ring depends on the window lengths
# (the layout vector). Windows are float64 only, counts too (whole numbers below 2**53
# add exactly), and so are the last non-zero bars: an int64 store in the middle of the
# float work makes the compiler reload what it read from the int64 inputs (it cannot
# tell the arrays apart), which cost about a fifth of a bar close.

# Float fields: the forming bar; per pool; window sums and last non-zero bars; indicators.
_F_CLOSE, _F_VOLUME, _F_TVL, _F_TICK_TVL = 0, 1, 2, 3
_F_LAST_CLOSE, _F_LAST_LOG_CLOSE, _F_FORMING_LOG_CLOSE, _F_L_EQ_REF = 4, 5, 6, 7
_F_SIGMA, _F_CORR, _F_RV = 8, 10, 12  # (sum, sum of squares)
_F_VOLUME_SUM, _F_SWAPS_SUM, _F_MEV_SUM = 14, 15, 16
_F_SIGMA_NZ, _F_CORR_NZ, _F_RV_NZ, _F_VOLUME_NZ = 17, 18, 19, 20
_F_RSI, _F_MACD, _F_BB = 21, 24, 27  # (prev, gain, loss), (slow, fast, signal), 4 sums
_F_CLOSE_MAX = 31  # the largest log close of the close ring (drawdown_24h)
_N_FLOAT_FIELDS = 32
# Int fields: the forming bar; per pool; indicator counts.
_I_BAR, _I_CLOSE_TIME, _I_SWAPS, _I_MEV, _I_SAMPLES, _I_LATE = 0, 1, 2, 3, 4, 5
_I_N_CLOSED, _I_LAST_CLOSED_BAR, _I_ADVANCE_DECLINE, _I_FORMING_SIGN = 6, 7, 8, 9
_I_RSI, _I_MACD, _I_BB = 10, 11, 12  # counts; bb: (count, last change, next slot)
_N_INT_FIELDS = 15

# The layout vector: settings, window lengths, ring base rows.
(
    _L_INTERVAL,
    _L_RSI_PERIOD,
    _L_MACD_FAST,
    _L_MACD_SLOW,
    _L_MACD_SIGNAL,
    _L_BB_PERIOD,
    _L_SIGMA_WINDOW,
    _L_RV_WINDOW,
    _L_CORR_WINDOW,
    _L_N_1H,
    _L_N_4H,
    _L_N_24H,
    _L_CLOSE_LEN,
    _L_L_EQ_LEN,
    _L_RV_LEN,
    _L_VOLUME_LEN,
    _L_COUNT_LEN,
    _L_R_CLOSE,
    _L_R_L_EQ,
    _L_R_SIGMA,
    _L_R_CORR,
    _L_R_RV,
    _L_R_VOLUME,
    _L_R_BB,
    _L_R_SWAPS,
    _L_R_MEV,
    _L_CORR_SUM,
    _L_CORR_NZ,
    _L_CORR_OWN,
) = range(29)
_N_LAYOUT = 29
# The float settings vector.
(
    _P_K_FAST,
    _P_K_SLOW,
    _P_K_SIGNAL,
    _P_NBDEV,
    _P_PPY_SQRT,
    _P_IV_SCALE,
    _P_ROOT_1H,
    _P_ROOT_4H,
    _P_ROOT_24H,
) = range(9)
# Cross-pool values kept between calls (derived from the state: never saved).
_X_BREADTH, _X_CORR_KNOWN = 0, 1
# The ring rows of one bar (:func:`_window_slots`): the bar, then a row per window; the
# close ring also at 1, 4 and 24 hours before it (the moves' references).
_S_SIGMA, _S_CORR, _S_RV, _S_VOLUME, _S_SWAPS, _S_MEV, _S_CLOSE, _S_L_EQ = range(1, 9)
_S_1H, _S_4H, _S_24H = 9, 10, 11
N_SLOTS = 12


def new_state(params: FeatureParams, n_pools: int) -> tuple[NDArray[Any], ...]:
    """A fresh engine state for ``n_pools`` pools: ``(floats, ints, rings)``, and
    the settings the loop reads: ``layout`` (int64: the integer settings, window lengths
    and the base row of each ring) and ``settings`` (float64: EMA factors, ``nbdev``,
    scale factors)."""
    p = params
    n_1h, n_4h, n_24h = p.bars_1h, p.bars_4h, p.bars_24h
    layout = np.zeros(_N_LAYOUT, dtype=np.int64)
    layout[_L_INTERVAL] = p.bar_interval
    layout[_L_RSI_PERIOD] = p.rsi_period
    layout[_L_MACD_FAST] = p.macd_fast
    layout[_L_MACD_SLOW] = p.macd_slow
    layout[_L_MACD_SIGNAL] = p.macd_signal
    layout[_L_BB_PERIOD] = p.bb_period
    layout[_L_SIGMA_WINDOW] = p.sigma_window
    layout[_L_RV_WINDOW] = p.realized_vol_window
    layout[_L_CORR_WINDOW] = p.corr_window
    layout[_L_N_1H], layout[_L_N_4H], layout[_L_N_24H] = n_1h, n_4h, n_24h
    # Window lengths in closed bars (the forming bar is added at peek time where it
    # belongs): realized vol and volume take the forming bar as their last value.
    layout[_L_CLOSE_LEN] = max(n_1h, n_4h, n_24h)
    layout[_L_L_EQ_LEN] = n_1h
    layout[_L_RV_LEN] = p.realized_vol_window - 1
    layout[_L_VOLUME_LEN] = n_24h - 1
    layout[_L_COUNT_LEN] = p.mev_bars - 1
    own_corr = p.corr_window != p.sigma_window  # else corr reads the sigma window
    n_rings = 0
    for slot, length in (
        (_L_R_CLOSE, int(layout[_L_CLOSE_LEN])),
        (_L_R_L_EQ, n_1h),
        (_L_R_SIGMA, p.sigma_window),
        (_L_R_CORR, p.corr_window if own_corr else 0),
        (_L_R_RV, int(layout[_L_RV_LEN])),
        (_L_R_VOLUME, int(layout[_L_VOLUME_LEN])),
        (_L_R_SWAPS, int(layout[_L_COUNT_LEN])),
        (_L_R_MEV, int(layout[_L_COUNT_LEN])),
        (_L_R_BB, p.bb_period),
    ):
        layout[slot] = n_rings
        n_rings += length
    if not own_corr:
        layout[_L_R_CORR] = layout[_L_R_SIGMA]
    layout[_L_CORR_SUM] = _F_CORR if own_corr else _F_SIGMA
    layout[_L_CORR_NZ] = _F_CORR_NZ if own_corr else _F_SIGMA_NZ
    layout[_L_CORR_OWN] = int(own_corr)

    k = n_pools
    floats = np.zeros((k, _N_FLOAT_FIELDS))
    unknown = [_F_CLOSE, _F_TVL, _F_TICK_TVL, _F_LAST_CLOSE, _F_LAST_LOG_CLOSE]
    floats[:, [*unknown, _F_FORMING_LOG_CLOSE, _F_L_EQ_REF, _F_CLOSE_MAX]] = np.nan
    floats[:, [_F_SIGMA_NZ, _F_CORR_NZ, _F_RV_NZ, _F_VOLUME_NZ]] = -1.0  # no bar yet
    ints = np.zeros((k, _N_INT_FIELDS), dtype=np.int64)
    ints[:, [_I_BAR, _I_LAST_CLOSED_BAR]] = -1
    rings = np.zeros((n_rings, k))
    r_close, r_l_eq = int(layout[_L_R_CLOSE]), int(layout[_L_R_L_EQ])
    rings[r_close : r_close + int(layout[_L_CLOSE_LEN])] = np.nan
    rings[r_l_eq : r_l_eq + n_1h] = np.nan
    settings = np.array(
        [
            2.0 / (p.macd_fast + 1),
            2.0 / (p.macd_slow + 1),
            2.0 / (p.macd_signal + 1),
            float(p.bb_nbdev),
            math.sqrt(periods_per_year(p.bar_interval)),
            LAMBERT_IV_SCALE,
            *(1.0 / math.sqrt(n) for n in (n_1h, n_4h, n_24h)),
        ]
    )
    return floats, ints, rings, layout, settings


def late_dropped(ints: NDArray[np.int64]) -> NDArray[np.int64]:
    """Samples dropped as late, per pool (a view of the state)."""
    column: NDArray[np.int64] = ints[:, _I_LATE]
    return column


def breadth_total(ints: NDArray[np.int64]) -> int:
    """The advance-decline line with every forming bar: what the cross-pool cache holds."""
    return int(ints[:, _I_ADVANCE_DECLINE].sum() + ints[:, _I_FORMING_SIGN].sum())


# --------------------------------------------------------------------------- features


@_inline
def _push(
    fl: Any,
    fr: Any,
    slot: int,
    length: int,
    total: int,
    nonzero: int,
    squares: bool,
    bar: int,
    p: int,
    value: float,
) -> None:
    """Push one closed bar's value into a window of the last ``length`` values (ring row
    ``slot``, the bar's: see :func:`_window_slots`): its sum (and sum of squares) as
    ``(sum + new) - old`` in ``fl``, and (field ``nonzero`` unless -1) the last bar with a
    non-zero value, so that a window of zeros is known exactly whatever rounding the sums
    carry (counts need none: their sums are exact). ``length`` 0: always empty."""
    if length == 0:
        return
    old = fr[slot, p]
    fl[p, total] = (fl[p, total] + value) - old
    if squares:
        fl[p, total + 1] = (fl[p, total + 1] + value * value) - old * old
    if nonzero >= 0 and value != 0:
        fl[p, nonzero] = bar
    fr[slot, p] = value


@_inline
def _window_slots(slots: Any, lay: Any, bar: int) -> None:
    """``slots[1:]``: the ring row of ``bar`` in each window (``_S_*``), for ``slots[0] ==
    bar``. Pools of a step mostly close and peek the same bars: the integer divisions
    (tens of cycles each) are done once per bar, not once per pool."""
    if slots[0] == bar:
        return
    slots[0] = bar
    slots[_S_SIGMA] = lay[_L_R_SIGMA] + bar % lay[_L_SIGMA_WINDOW]
    slots[_S_CORR] = lay[_L_R_CORR] + bar % lay[_L_CORR_WINDOW]
    if lay[_L_RV_LEN]:
        slots[_S_RV] = lay[_L_R_RV] + bar % lay[_L_RV_LEN]
    if lay[_L_VOLUME_LEN]:
        slots[_S_VOLUME] = lay[_L_R_VOLUME] + bar % lay[_L_VOLUME_LEN]
    if lay[_L_COUNT_LEN]:
        slots[_S_SWAPS] = lay[_L_R_SWAPS] + bar % lay[_L_COUNT_LEN]
        slots[_S_MEV] = lay[_L_R_MEV] + bar % lay[_L_COUNT_LEN]
    r_close, close_len = lay[_L_R_CLOSE], lay[_L_CLOSE_LEN]
    slots[_S_CLOSE] = r_close + bar % close_len
    slots[_S_L_EQ] = lay[_L_R_L_EQ] + bar % lay[_L_L_EQ_LEN]
    slots[_S_1H] = r_close + (bar - lay[_L_N_1H]) % close_len
    slots[_S_4H] = r_close + (bar - lay[_L_N_4H]) % close_len
    slots[_S_24H] = r_close + (bar - lay[_L_N_24H]) % close_len


@_inline
def _close_bars(
    fl: Any,
    it: Any,
    fr: Any,
    slots: Any,
    lay: Any,
    fp: Any,
    p: int,
    bar: int,
) -> int:
    """Close pool ``p``'s forming bar and one carried bar per empty interval up to
    ``bar`` (excluded), committing each to the indicators and windows in time order.
    Returns the change of the advance-decline line (breadth)."""
    cur = it[p, _I_BAR]
    fast, slow, signal = lay[_L_MACD_FAST], lay[_L_MACD_SLOW], lay[_L_MACD_SIGNAL]
    k_fast, k_slow, k_signal = fp[_P_K_FAST], fp[_P_K_SLOW], fp[_P_K_SIGNAL]
    rsi_period, bb_period = lay[_L_RSI_PERIOD], lay[_L_BB_PERIOD]
    nbdev = fp[_P_NBDEV]
    close = fl[p, _F_CLOSE]
    advance = 0
    for g in range(bar - cur):
        closed_bar = cur + g
        if g == 0:
            samples = it[p, _I_SAMPLES]
            bar_volume = fl[p, _F_VOLUME]
            bar_swaps = float(it[p, _I_SWAPS])
            bar_mev = float(it[p, _I_MEV])
        else:  # an empty interval carries the close
            samples = 0
            bar_volume = 0.0
            bar_swaps = 0.0
            bar_mev = 0.0
        prev_log = fl[p, _F_LAST_LOG_CLOSE]
        # The log of the forming close was taken when it was last peeked.
        log_close = fl[p, _F_FORMING_LOG_CLOSE] if samples > 0 else prev_log
        ret = log_close - prev_log
        simple = close / fl[p, _F_LAST_CLOSE]
        simple -= 1.0
        if it[p, _I_N_CLOSED] == 0:
            # A pool's first bar has no return: 0 (neutral in every sum), not NaN.
            ret = 0.0
            simple = 0.0
        rsi_step(fl, it, _F_RSI, _I_RSI, p, close, rsi_period, True)
        macd_step(
            fl, it, _F_MACD, _I_MACD, p, close, fast, slow, signal, k_fast, k_slow, k_signal, True
        )
        bbands_step(fl, it, fr, _F_BB, _I_BB, lay[_L_R_BB], p, close, bb_period, nbdev, True)
        cb = closed_bar
        _window_slots(slots, lay, cb)
        sigma_window = lay[_L_SIGMA_WINDOW]
        _push(fl, fr, slots[_S_SIGMA], sigma_window, _F_SIGMA, _F_SIGMA_NZ, True, cb, p, ret)
        if lay[_L_CORR_OWN]:
            corr_window = lay[_L_CORR_WINDOW]
            _push(fl, fr, slots[_S_CORR], corr_window, _F_CORR, _F_CORR_NZ, True, cb, p, ret)
        _push(fl, fr, slots[_S_RV], lay[_L_RV_LEN], _F_RV, _F_RV_NZ, True, cb, p, simple)
        volume_len = lay[_L_VOLUME_LEN]
        _push(
            fl,
            fr,
            slots[_S_VOLUME],
            volume_len,
            _F_VOLUME_SUM,
            _F_VOLUME_NZ,
            False,
            cb,
            p,
            bar_volume,
        )
        count_len = lay[_L_COUNT_LEN]
        _push(fl, fr, slots[_S_SWAPS], count_len, _F_SWAPS_SUM, -1, False, cb, p, bar_swaps)
        _push(fl, fr, slots[_S_MEV], count_len, _F_MEV_SUM, -1, False, cb, p, bar_mev)
        slot = slots[_S_CLOSE]
        evicted = fr[slot, p]
        fr[slot, p] = log_close
        # The largest log close of the ring (drawdown_24h), kept as L_eq's below is.
        top = fl[p, _F_CLOSE_MAX]
        if log_close >= top or math.isnan(top):
            if not math.isnan(log_close):
                top = log_close
        elif evicted == top:
            r_close = lay[_L_R_CLOSE]
            top = _NAN
            for k in range(lay[_L_CLOSE_LEN]):
                v = fr[r_close + k, p]
                if math.isnan(top) or v > top:
                    top = v if not math.isnan(v) else top
        fl[p, _F_CLOSE_MAX] = top
        r_l_eq, l_eq_len = lay[_L_R_L_EQ], lay[_L_L_EQ_LEN]
        slot = slots[_S_L_EQ]
        evicted = fr[slot, p]
        l_eq = fl[p, _F_TVL] / math.sqrt(close)
        fr[slot, p] = l_eq
        # The largest known L_eq of the window: the new value if it is larger; else the
        # same unless the one that left was it (then the window is scanned again).
        ref = fl[p, _F_L_EQ_REF]
        if l_eq >= ref or math.isnan(ref):
            if not math.isnan(l_eq):
                ref = l_eq
        elif evicted == ref:
            ref = _NAN
            for k in range(l_eq_len):
                v = fr[r_l_eq + k, p]
                if math.isnan(ref) or v > ref:
                    ref = v if not math.isnan(v) else ref
        fl[p, _F_L_EQ_REF] = ref
        it[p, _I_LAST_CLOSED_BAR] = cb
        if ret > 0.0:
            it[p, _I_ADVANCE_DECLINE] += 1
            advance += 1
        elif ret < 0.0:
            it[p, _I_ADVANCE_DECLINE] -= 1
            advance -= 1
        it[p, _I_N_CLOSED] += 1
        fl[p, _F_LAST_LOG_CLOSE] = log_close
        fl[p, _F_LAST_CLOSE] = close
    # The new forming bar (``bar``) starts with the sample that closed these.
    it[p, _I_BAR] = bar
    it[p, _I_SAMPLES] = 0
    return advance


@_inline
def _add_sample(
    fl: Any,
    it: Any,
    p: int,
    bar: int,
    time: int,
    x: float,
    tvl: float,
    tick_tvl: float,
    volume: float,
    swaps: int,
    mev_swaps: int,
) -> None:
    """Merge one sample into pool ``p``'s forming bar (``bar``): a bar without samples
    starts from it; else volume and counts always take it, the close (and TVL at the
    close) if it is the latest sample (a tie: the later call wins)."""
    if it[p, _I_BAR] < 0 or it[p, _I_SAMPLES] == 0:
        it[p, _I_BAR] = bar
        fl[p, _F_CLOSE] = x
        it[p, _I_CLOSE_TIME] = time
        fl[p, _F_VOLUME] = volume
        fl[p, _F_TVL] = tvl
        fl[p, _F_TICK_TVL] = tick_tvl
        it[p, _I_SWAPS] = swaps
        it[p, _I_MEV] = mev_swaps
        it[p, _I_SAMPLES] = 1
        return
    fl[p, _F_VOLUME] += volume
    it[p, _I_SWAPS] += swaps
    it[p, _I_MEV] += mev_swaps
    it[p, _I_SAMPLES] += 1
    if it[p, _I_CLOSE_TIME] <= time:
        fl[p, _F_CLOSE] = x
        it[p, _I_CLOSE_TIME] = time
        fl[p, _F_TVL] = tvl
        fl[p, _F_TICK_TVL] = tick_tvl


@_inline
def _move(
    fr: Any,
    p: int,
    log_price: float,
    inv_sigma: float,
    slot: int,
    n: int,
    n_closed: int,
    root: float,
) -> float:
    """``move_sigma_n``: the log move since the close ``n`` bars before the forming one
    (ring row ``slot``), over ``sigma * sqrt(n)`` (``root = 1 / sqrt(n)``); NaN before
    ``n`` closed bars."""
    move = log_price - fr[slot, p]
    move *= inv_sigma
    move *= root
    return move if n_closed >= n else _NAN


@_inline
def _peek(
    fl: Any,
    it: Any,
    fr: Any,
    slots: Any,
    lay: Any,
    fp: Any,
    fees: Any,
    p: int,
    out: Any,
    col: int,
) -> int:
    """Every feature of pool ``p`` but the cross-pool ones into ``out[:, col]``, with the
    forming bar taken as if it closed now: nothing of it is committed, except the log of
    its close (read back when it closes) and the sign of its return (breadth). Returns the
    change of the breadth."""
    close = fl[p, _F_CLOSE]
    bar_tvl = fl[p, _F_TVL]
    bar_tick_tvl = fl[p, _F_TICK_TVL]
    nc = it[p, _I_N_CLOSED]
    last_bar = it[p, _I_LAST_CLOSED_BAR]
    lp = math.log(close)
    fl[p, _F_FORMING_LOG_CLOSE] = lp
    ret = lp - fl[p, _F_LAST_LOG_CLOSE]
    sign = 0  # 1 up, -1 down, 0 flat or unknown
    if ret > 0.0:
        sign = 1
    elif ret < 0.0:
        sign = -1
    change: int = sign - it[p, _I_FORMING_SIGN]
    it[p, _I_FORMING_SIGN] = sign
    out[_PRICE, col] = close
    out[_RET, col] = ret
    out[_TVL, col] = bar_tvl
    out[_TICK_TVL, col] = bar_tick_tvl
    # Per-bar sigma over the committed window: it excludes the forming bar.
    w = lay[_L_SIGMA_WINDOW]
    total = fl[p, _F_SIGMA]
    var = total * total
    var /= -w
    var += fl[p, _F_SIGMA + 1]
    var /= w - 1
    if fl[p, _F_SIGMA_NZ] <= last_bar - w or var <= 0.0 or nc <= w:
        var = _NAN
    inv_sigma = 1.0 / math.sqrt(var)
    out[_MOVE_SIGMA, col] = ret * inv_sigma
    _window_slots(slots, lay, it[p, _I_BAR])  # the forming bar's
    out[_MOVE_1H, col] = _move(fr, p, lp, inv_sigma, slots[_S_1H], lay[_L_N_1H], nc, fp[_P_ROOT_1H])
    out[_MOVE_4H, col] = _move(fr, p, lp, inv_sigma, slots[_S_4H], lay[_L_N_4H], nc, fp[_P_ROOT_4H])
    out[_MOVE_24H, col] = _move(
        fr, p, lp, inv_sigma, slots[_S_24H], lay[_L_N_24H], nc, fp[_P_ROOT_24H]
    )
    # Drawdown: the fall from the highest close of the ring and the forming bar.
    top = fl[p, _F_CLOSE_MAX]
    if lp > top:  # noqa: PLR1730 - a NaN maximum stays NaN (a plain compare, as elsewhere)
        top = lp
    out[_DRAWDOWN_24H, col] = -math.expm1(lp - top) if nc >= lay[_L_CLOSE_LEN] else _NAN
    # Realized volatility: the committed window of simple returns and the forming one.
    wr = lay[_L_RV_WINDOW]
    simple = close / fl[p, _F_LAST_CLOSE]
    simple -= 1.0
    mean = fl[p, _F_RV] + simple
    rv_var = simple * simple
    rv_var += fl[p, _F_RV + 1]
    rv_var /= wr
    mean /= wr
    mean *= mean
    rv_var -= mean
    rv_var = _max0(rv_var)
    if fl[p, _F_RV_NZ] <= last_bar - lay[_L_RV_LEN] and simple == 0.0:
        rv_var = 0.0  # a flat window is flat exactly
    rv = math.sqrt(rv_var)
    rv *= fp[_P_PPY_SQRT]
    out[_REALIZED_VOL, col] = rv if nc >= wr else _NAN
    # Volume over 24 hours (the forming bar's included), TVL / volume, Lambert's IV.
    forming_volume = fl[p, _F_VOLUME]
    volume_24h = fl[p, _F_VOLUME_SUM] + forming_volume
    if fl[p, _F_VOLUME_NZ] <= last_bar - lay[_L_VOLUME_LEN] or volume_24h < 0.0:
        volume_24h = forming_volume
    out[_VOLUME_24H, col] = volume_24h
    out[_TVL_VOLUME, col] = bar_tvl / volume_24h if volume_24h > 0.0 else _NAN
    if bar_tick_tvl > 0.0:
        iv = volume_24h / bar_tick_tvl
        iv = math.sqrt(iv)
        iv *= fees[p]
        iv *= fp[_P_IV_SCALE]
        out[_IV, col] = iv
    else:
        out[_IV, col] = _NAN
    # TVL drain: L_eq now against the largest of the window.
    l_eq = bar_tvl / math.sqrt(close)
    ref = fl[p, _F_L_EQ_REF]
    if math.isnan(ref) or l_eq > ref:
        ref = l_eq if not math.isnan(l_eq) else ref
    drain = l_eq / ref
    drain = 1.0 - drain
    drain = _max0(drain)
    out[_TVL_DRAIN, col] = drain if ref > 0.0 else _NAN
    n_swaps = fl[p, _F_SWAPS_SUM] + it[p, _I_SWAPS]
    n_mev = fl[p, _F_MEV_SUM] + it[p, _I_MEV]
    out[_MEV_SCORE, col] = float(n_mev) / float(n_swaps) if n_swaps != 0 else _NAN
    line, sig, hist = macd_step(
        fl,
        it,
        _F_MACD,
        _I_MACD,
        p,
        close,
        lay[_L_MACD_FAST],
        lay[_L_MACD_SLOW],
        lay[_L_MACD_SIGNAL],
        fp[_P_K_FAST],
        fp[_P_K_SLOW],
        fp[_P_K_SIGNAL],
        False,
    )
    out[_MACD, col] = line
    out[_MACD_SIGNAL, col] = sig
    out[_MACD_HIST, col] = hist
    out[_RSI, col] = rsi_step(fl, it, _F_RSI, _I_RSI, p, close, lay[_L_RSI_PERIOD], False)
    upper, middle, lower = bbands_step(
        fl, it, fr, _F_BB, _I_BB, lay[_L_R_BB], p, close, lay[_L_BB_PERIOD], fp[_P_NBDEV], False
    )
    out[_BB_UPPER, col] = upper
    out[_BB_MIDDLE, col] = middle
    out[_BB_LOWER, col] = lower
    width = upper - lower
    bb_pos = close - lower
    bb_pos /= width
    out[_BB_POS, col] = bb_pos if width > 0.0 else _NAN
    return change


@_loop
def _mean_pairwise_corr(fl: Any, it: Any, fr: Any, lay: Any, weights: Any) -> float:
    """``corr`` (:mod:`rules.features.proxies`) from the window sums: with ``w_i = 1 /
    |r_i - mean_i|`` each pool's standardised returns are ``z_i(t) = w_i (r_i(t) -
    mean_i)``, so ``sum_i z_i(t) = sum_i w_i r_i(t) - sum_i w_i mean_i``: one pass over
    the rings. ``weights``: scratch, one per pool."""
    n_pools = fl.shape[0]
    if n_pools < 2:
        return _NAN
    newest = -1
    for p in range(n_pools):
        newest = max(newest, it[p, _I_LAST_CLOSED_BAR])
    if newest < 0:
        return _NAN
    wc = lay[_L_CORR_WINDOW]
    sums, nonzero, ring = lay[_L_CORR_SUM], lay[_L_CORR_NZ], lay[_L_R_CORR]
    m = 0
    offset = 0.0  # sum_i w_i mean_i
    for p in range(n_pools):
        weights[p] = 0.0
        if it[p, _I_LAST_CLOSED_BAR] != newest or it[p, _I_N_CLOSED] <= wc:
            continue  # not in the newest bar, or the window is not full
        if fl[p, nonzero] <= newest - wc:
            continue  # a flat window (all zero returns)
        total = fl[p, sums]
        mean = total / wc
        ss = fl[p, sums + 1] - total * mean  # sum of squared deviations
        if not ss > 0.0:
            continue
        w = 1.0 / math.sqrt(ss)
        weights[p] = w
        offset += w * mean
        m += 1
    if m < 2:
        return _NAN
    acc = 0.0
    for slot in range(wc):
        row = ring + slot
        # Four partial sums: independent additions (no fast-math to reassociate one).
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        p = 0
        while p + 3 < n_pools:
            s0 += weights[p] * fr[row, p]
            s1 += weights[p + 1] * fr[row, p + 1]
            s2 += weights[p + 2] * fr[row, p + 2]
            s3 += weights[p + 3] * fr[row, p + 3]
            p += 4
        while p < n_pools:
            s0 += weights[p] * fr[row, p]
            p += 1
        z = (s0 + s1) + (s2 + s3) - offset
        acc += z * z
    return (acc - m) / (m * (m - 1))


#: What :func:`check_samples` found wrong, by its code (0: nothing).
SAMPLE_ERRORS = (
    "",
    "price must be positive and finite",
    "volume must be >= 0 and finite",
    "tvl must be finite or NaN",
    "tick_tvl must be finite or NaN",
    "swap counts must satisfy 0 <= mev_swaps <= swaps",
)


@_loop
def check_samples(
    price: Any, volume: Any, tvl: Any, tick_tvl: Any, swaps: Any, mev_swaps: Any
) -> int:
    """The value rules of samples (1-D arrays alike), column by column in this order: the
    first broken one's :data:`SAMPLE_ERRORS` code, or 0. Prices are positive and finite,
    volumes >= 0 and finite, TVLs finite or NaN (not known), ``0 <= mev_swaps <= swaps``."""
    n = price.size
    for i in range(n):
        if not (price[i] > 0.0 and price[i] < math.inf):  # NaN fails both
            return 1
    for i in range(n):
        if not (volume[i] >= 0.0 and volume[i] < math.inf):
            return 2
    for i in range(n):
        if math.isinf(tvl[i]):
            return 3
    for i in range(n):
        if math.isinf(tick_tvl[i]):
            return 4
    for i in range(n):
        if mev_swaps[i] < 0 or mev_swaps[i] > swaps[i]:
            return 5
    return 0


@_loop
def feature_steps(
    times: Any,
    starts: Any,
    rows: Any,
    price: Any,
    tvl: Any,
    tick_tvl: Any,
    volume: Any,
    swaps: Any,
    mev_swaps: Any,
    out: Any,
    dense: bool,
    late: Any,
    fl: Any,
    it: Any,
    fr: Any,
    cross: Any,
    corr: Any,
    weights: Any,
    slots: Any,
    fees: Any,
    lay: Any,
    fp: Any,
) -> int:
    """Step ``T`` times of samples through the feature state ``fl``/``it`` (in place).

    Step ``t`` at ``times[t]`` has the samples ``starts[t] .. starts[t + 1] - 1``: sample
    ``i`` is of pool ``rows[i]`` (distinct within a step) with values ``price[i]``, ...
    Each sample first closes its pool's bars that ended (committing them), then joins the
    forming bar; a sample for a bar that already closed is late: dropped, counted in the
    state and flagged in ``late[i]``. Then every pool of the step is peeked and its
    features written into ``out[f, col]`` (``f``: :data:`FEATURE_INDEX`), ``col`` being
    ``i``, or ``t * n_pools + rows[i]`` when ``dense``. ``cross`` (breadth with every
    forming bar, whether ``corr[0]`` is current) carries the cross-pool values between
    calls; ``weights`` (one per pool) and ``slots`` (:data:`N_SLOTS`) are scratch. Returns
    the number of late samples.
    """
    n_pools = fl.shape[0]
    # The settings as tuples (values, not memory): stores into the int and float state
    # could alias the layout and settings arrays, so the compiler would reload (and
    # recompute with) them at every use.
    lt = (
        lay[0],
        lay[1],
        lay[2],
        lay[3],
        lay[4],
        lay[5],
        lay[6],
        lay[7],
        lay[8],
        lay[9],
        lay[10],
        lay[11],
        lay[12],
        lay[13],
        lay[14],
        lay[15],
        lay[16],
        lay[17],
        lay[18],
        lay[19],
        lay[20],
        lay[21],
        lay[22],
        lay[23],
        lay[24],
        lay[25],
        lay[26],
        lay[27],
        lay[28],
    )
    ft = (fp[0], fp[1], fp[2], fp[3], fp[4], fp[5], fp[6], fp[7], fp[8])
    interval = lt[_L_INTERVAL]
    slots[0] = -1  # no bar's ring rows yet
    breadth = cross[_X_BREADTH]  # the running total, with every forming bar
    n_late = 0
    for t in range(times.size):
        time = times[t]
        bar = time // interval
        first, end = starts[t], starts[t + 1]
        for i in range(first, end):
            p = rows[i]
            cur = it[p, _I_BAR]
            if cur >= 0 and bar < cur:
                it[p, _I_LATE] += 1  # bars are immutable once closed
                late[i] = True
                n_late += 1
                continue
            late[i] = False
            if cur >= 0 and bar > cur:
                breadth += _close_bars(fl, it, fr, slots, lt, ft, p, bar)
                cross[_X_CORR_KNOWN] = 0
            _add_sample(
                fl,
                it,
                p,
                bar,
                time,
                price[i],
                tvl[i],
                tick_tvl[i],
                volume[i],
                swaps[i],
                mev_swaps[i],
            )
        if first == end:
            continue
        for i in range(first, end):
            p = rows[i]
            col = t * n_pools + p if dense else i
            breadth += _peek(fl, it, fr, slots, lt, ft, fees, p, out, col)
        if not cross[_X_CORR_KNOWN]:
            corr[0] = _mean_pairwise_corr(fl, it, fr, lt, weights)
            cross[_X_CORR_KNOWN] = 1
        for i in range(first, end):
            col = t * n_pools + rows[i] if dense else i
            out[_BREADTH, col] = breadth
            out[_CORR, col] = corr[0]
    cross[_X_BREADTH] = breadth
    return n_late
