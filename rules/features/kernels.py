"""Compiled inner loops of :meth:`rules.pipeline.Pipeline.step_many` (numba).

What this module guarantees:

- :func:`feature_steps` is the per-step code of :class:`rules.features.engine.FeatureEngine`
  (bars, indicators, windows, every feature but ``corr``), written as loops over steps and
  pools instead of numpy calls over pools (the layer state machine is
  :mod:`rules.layers.machine`, one implementation for both paths). They are the same
  computations, float operation for float operation, in the same order: IEEE 754 gives
  the same bits (numba compiles without fast-math, so nothing is reassociated or fused),
  and ``tests/test_kernels.py`` checks it against the per-step code on real data.
- Both work in place on the engines' own state arrays, so that the state after a
  compiled batch is the state the per-step code leaves.
- What they cannot reproduce bit for bit stays outside: ``log`` comes in precomputed by
  numpy (numpy's and the C library's ``log`` may differ in the last bit), and ``corr``
  (numpy's and BLAS's summation order) makes the pipeline take the per-step code.
- Pure: no I/O of their own. numba keeps the compiled machine code in its cache
  (``__pycache__``, or ``NUMBA_CACHE_DIR``) so that only the first run compiles.
"""

from __future__ import annotations

import math
from typing import Any

from numba import njit

from rules.features.engine import ENGINE_FEATURES

__all__ = ["FEATURE_INDEX", "feature_steps"]

#: Row of each feature in :func:`feature_steps`' output (``corr`` is never written).
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


# --------------------------------------------------------------------------- helpers


@_jit
def _max0(x: float) -> float:
    """``np.maximum(x, 0.0)``: NaN stays NaN."""
    if x < 0.0:
        return 0.0
    return x


@_jit
def _push(
    ring: Any, totals: Any, last_nonzero: Any, flags: Any, bar: int, p: int, value: Any
) -> None:
    """``_Window.push`` for one pool: (total + new) - old, in place. ``totals``: the
    window's ``(total, total_sq)``; ``flags``: its (length, squares, track_zero)."""
    length, squares, track_zero = flags[0], flags[1] != 0, flags[2] != 0
    if length == 0:
        return
    total, total_sq = totals[0], totals[1]
    slot = bar % length
    old = ring[slot, p]
    total[p] = (total[p] + value) - old
    if squares:
        total_sq[p] = (total_sq[p] + value * value) - old * old
    if track_zero and value != 0:
        last_nonzero[p] = bar
    ring[slot, p] = value


@_jit
def _rsi(count: Any, state: Any, period: int, p: int, x: float, commit: bool) -> float:
    """``StreamingRSI._compute`` for one series (steady and warm-up paths); ``state``:
    ``(prev, gain, loss)``."""
    prev, gain, loss = state[0], state[1], state[2]
    c = count[p]
    d = x - prev[p]
    g = gain[p]
    lo = loss[p]
    if c >= period + 1:
        new_gain = g * (period - 1)
        new_gain += _max0(d)
        new_gain /= period
        new_loss = lo * (period - 1)
        new_loss += _max0(-d)
        new_loss /= period
        total = new_gain + new_loss
        out = new_gain / total
        out *= 100.0
        if total == 0.0:
            out = 0.0
        if commit:
            count[p] = c + 1
            prev[p] = x
            gain[p] = new_gain
            loss[p] = new_loss
        return float(out)
    falling = d < 0.0
    up = 0.0 if falling else d
    down = -d if falling else 0.0
    started = c > 0 or not math.isnan(x)
    new_count = c + 1 if started else c
    if new_count <= period:
        new_gain = g + up
        new_loss = lo + down
    elif new_count == period + 1:
        new_gain = (g + up) / period
        new_loss = (lo + down) / period
    else:
        new_gain = (g * (period - 1) + up) / period
        new_loss = (lo * (period - 1) + down) / period
    if new_count == 1 or not started:
        new_gain = g
        new_loss = lo
    total = new_gain + new_loss
    out = 0.0 if total == 0.0 else 100.0 * (new_gain / total)
    if not new_count > period:
        out = _NAN
    if commit:
        count[p] = new_count
        if started:
            prev[p] = x
        gain[p] = new_gain
        loss[p] = new_loss
    return float(out)


@_jit
def _macd(
    count: Any, state: Any, periods: Any, ks: Any, p: int, x: float, commit: bool
) -> tuple[float, float, float]:
    """``StreamingMACD._compute`` for one series: (line, signal, hist). ``state``: ``(slow,
    fast, signal)`` values; ``periods``: (fast, slow, signal); ``ks``: their EMA factors."""
    slow_value, fast_value, signal_value = state[0], state[1], state[2]
    fast, slow, signal = periods[0], periods[1], periods[2]
    k_fast, k_slow, k_signal = ks[0], ks[1], ks[2]
    c = count[p]
    sv = slow_value[p]
    fv = fast_value[p]
    gv = signal_value[p]
    first_output = slow + signal - 1
    if c >= first_output:
        new_slow = x - sv
        new_slow *= k_slow
        new_slow += sv
        new_fast = x - fv
        new_fast *= k_fast
        new_fast += fv
        line = new_fast - new_slow
        if signal == 1:
            new_signal = line
        else:
            new_signal = line - gv
            new_signal *= k_signal
            new_signal += gv
        if commit:
            count[p] = c + 1
            slow_value[p] = new_slow
            fast_value[p] = new_fast
            signal_value[p] = new_signal
        return line, new_signal, line - new_signal
    started = c > 0 or not math.isnan(x)
    new_count = c + 1 if started else c
    if new_count < slow:
        new_slow = sv + x
    elif new_count == slow:
        new_slow = (sv + x) / slow
    else:
        new_slow = sv + k_slow * (x - sv)
    if new_count <= slow - fast:
        new_fast = fv
    elif new_count < slow:
        new_fast = fv + x
    elif new_count == slow:
        new_fast = (fv + x) / fast
    else:
        new_fast = fv + k_fast * (x - fv)
    line = new_fast - new_slow
    if signal == 1:
        smoothed = line
    elif new_count == first_output:
        smoothed = (gv + line) / signal
    else:
        smoothed = gv + k_signal * (line - gv)
    if new_count < slow:
        new_signal = gv
    elif new_count < first_output:
        new_signal = gv + line
    else:
        new_signal = smoothed
    if not started:
        new_slow, new_fast, new_signal = sv, fv, gv
    if commit:
        count[p] = new_count
        slow_value[p] = new_slow
        fast_value[p] = new_fast
        signal_value[p] = new_signal
    if new_count >= first_output:
        return line, new_signal, line - new_signal
    return _NAN, _NAN, _NAN


@_jit
def _bbands(
    ints: Any, state: Any, ring: Any, period: int, nbdev: float, p: int, x: float, commit: bool
) -> tuple[float, float, float]:
    """``StreamingBBands._compute`` (and ``_commit``, re-centring) for one series.
    ``ints``: ``(count, last_change)``; ``state``: ``(sma_total, shift, dev_sum,
    dev_sq_sum)``."""
    count, last_change = ints[0], ints[1]
    sma_total, shift, dev_sum, dev_sq_sum = state[0], state[1], state[2], state[3]
    c = count[p]
    j = c
    steady = c >= period
    started = True
    sh = shift[p]
    if steady:
        new_count = c + 1
    else:
        started = c > 0 or not math.isnan(x)
        new_count = c + 1 if started else c
        if c == 0:
            sh = x
    prev = ring[(j - 1) % period, p]
    changed = x != prev
    if not steady:
        changed = changed and c > 0
    new_last_change = j if changed else last_change[p]
    dv = x - sh
    u0 = sma_total[p] + x
    u1 = dev_sum[p] + dv
    u2 = dv * dv
    u2 += dev_sq_sum[p]
    mean = u0 / period
    var = u2 / period
    m1 = u1 / period
    m1 *= m1
    var -= m1
    std = math.sqrt(_max0(var))
    if new_last_change <= j - (period - 1):
        std = 0.0
    std *= nbdev
    upper = mean + std
    lower = mean - std
    if not steady and not new_count >= period:
        upper = _NAN
        mean = _NAN
        lower = _NAN
    if not commit:
        return upper, mean, lower
    oldest = ring[(j + 1) % period, p]
    d_old = oldest - sh
    new_sma = u0 - oldest
    new_dev = u1 - d_old
    d_old *= d_old
    new_dev_sq = u2 - d_old
    if not steady:
        if not started:
            new_sma = sma_total[p]
            new_dev = dev_sum[p]
            new_dev_sq = dev_sq_sum[p]
            new_last_change = last_change[p]
        elif not new_count >= period:
            new_sma = u0
            new_dev = u1
            new_dev_sq = u2
    if started:
        ring[j % period, p] = x
    count[p] = new_count
    sma_total[p] = new_sma
    shift[p] = sh
    dev_sum[p] = new_dev
    dev_sq_sum[p] = new_dev_sq
    last_change[p] = new_last_change
    if new_count > 0 and new_count % period == 0:
        # _recenter: the ring holds the window in time order.
        total = ring[0, p]
        for slot in range(1, period):
            total += ring[slot, p]
        centre = total / period
        ds = 0.0
        dss = 0.0
        for slot in range(1, period):
            d = ring[slot, p] - centre
            ds += d
            dss += d * d
        shift[p] = centre
        dev_sum[p] = ds
        dev_sq_sum[p] = dss
    return upper, mean, lower


# --------------------------------------------------------------------------- features


@_jit
def feature_steps(
    times: Any,
    present: Any,
    log_price: Any,
    price: Any,
    tvl: Any,
    tick_tvl: Any,
    volume: Any,
    swaps: Any,
    mev_swaps: Any,
    out: Any,
    bars: Any,
    bar_ints: Any,
    pool: Any,
    pool_ints: Any,
    log_close_ring: Any,
    l_eq_ring: Any,
    windows: Any,
    window_ints: Any,
    window_rings: Any,
    int_windows: Any,
    int_window_rings: Any,
    window_flags: Any,
    rsi_state: Any,
    rsi_count: Any,
    macd_state: Any,
    macd_count: Any,
    bb_state: Any,
    bb_ints: Any,
    bb_ring: Any,
    fees: Any,
    params: Any,
    fparams: Any,
) -> None:
    """Step ``T`` times of samples of every pool through the feature engine's state.

    Pool ``p`` has a sample at step ``t`` where ``present[t, p]``; the caller makes sure
    that no sample is late (the first time's bar is at or after every pool's forming
    bar). ``out[f, t, p]`` receives feature ``f`` (:data:`FEATURE_INDEX`) of pool ``p``
    at step ``t``, NaN where it has no sample (``corr`` is left alone).
    The state arguments are views of the engine's arrays stacked by kind (see
    ``rules.pipeline``): bars ``(open, high, low, close, volume, tvl, tick_tvl)`` and
    ``(bar_index, open_time, close_time, swaps, mev_swaps, samples)``; pool
    ``(last_close, last_log_close, forming_log_close, l_eq_ref)`` and ``(n_closed,
    last_closed_bar, advance_decline, forming_sign)``; float windows ``(sigma, corr, rv,
    volume) x (total, total_sq)`` with ``window_ints`` their ``last_nonzero`` and
    ``window_rings`` their rings; integer windows ``(swaps, mev) x (total, total_sq)``.
    """
    interval = params[0]
    rsi_period = params[1]
    bb_period = params[5]
    sigma_window = params[6]
    rv_window = params[7]
    n_1h, n_4h, n_24h = params[8], params[9], params[10]
    ring_len = params[11]
    n_leq = params[12]
    corr_distinct = params[13] != 0
    lnz, flags = window_ints, window_flags
    nbdev = fparams[3]
    ppy_sqrt = fparams[4]
    iv_scale = fparams[5]
    root_1h, root_4h, root_24h = fparams[6], fparams[7], fparams[8]

    b_open, b_high, b_low, b_close = bars[0], bars[1], bars[2], bars[3]
    b_volume, b_tvl, b_tick_tvl = bars[4], bars[5], bars[6]
    b_index, b_open_time, b_close_time = bar_ints[0], bar_ints[1], bar_ints[2]
    b_swaps, b_mev, b_samples = bar_ints[3], bar_ints[4], bar_ints[5]
    last_close, last_log_close, forming_log_close, l_eq_ref = pool[0], pool[1], pool[2], pool[3]
    n_closed, last_closed_bar = pool_ints[0], pool_ints[1]
    advance_decline, forming_sign = pool_ints[2], pool_ints[3]
    macd_periods = params[2:5]
    macd_ks = fparams[0:3]

    n_steps, n_pools = price.shape
    for t in range(n_steps):
        time = times[t]
        bar = time // interval
        for p in range(n_pools):
            if not present[t, p]:
                continue
            cur = b_index[p]
            if cur >= 0 and bar > cur:
                # Close the forming bar, then one carried bar per empty interval.
                for g in range(bar - cur):
                    closed_bar = cur + g
                    close = b_close[p]
                    if g == 0:
                        samples = b_samples[p]
                        bar_volume = b_volume[p]
                        bar_swaps = b_swaps[p]
                        bar_mev = b_mev[p]
                    else:
                        samples = 0
                        bar_volume = 0.0
                        bar_swaps = 0
                        bar_mev = 0
                    prev_log = last_log_close[p]
                    log_close = forming_log_close[p] if samples > 0 else prev_log
                    ret = log_close - prev_log
                    simple = close / last_close[p]
                    simple -= 1.0
                    if n_closed[p] == 0:
                        ret = 0.0
                        simple = 0.0
                    _rsi(rsi_count, rsi_state, rsi_period, p, close, True)
                    _macd(macd_count, macd_state, macd_periods, macd_ks, p, close, True)
                    _bbands(bb_ints, bb_state, bb_ring, bb_period, nbdev, p, close, True)
                    rings, ints, cb = window_rings, int_window_rings, closed_bar
                    _push(rings[0], windows[0], lnz[0], flags[0], cb, p, ret)
                    if corr_distinct:
                        _push(rings[1], windows[1], lnz[1], flags[1], cb, p, ret)
                    _push(rings[2], windows[2], lnz[2], flags[2], cb, p, simple)
                    _push(rings[3], windows[3], lnz[3], flags[3], cb, p, bar_volume)
                    _push(ints[0], int_windows[0], lnz[4], flags[4], cb, p, bar_swaps)
                    _push(ints[1], int_windows[1], lnz[5], flags[5], cb, p, bar_mev)
                    l_eq = b_tvl[p] / math.sqrt(close)
                    log_close_ring[closed_bar % ring_len, p] = log_close
                    l_eq_ring[closed_bar % n_leq, p] = l_eq
                    ref = _NAN
                    for slot in range(n_leq):
                        v = l_eq_ring[slot, p]
                        if math.isnan(ref) or v > ref:
                            ref = v if not math.isnan(v) else ref
                    l_eq_ref[p] = ref
                    last_closed_bar[p] = closed_bar
                    if ret > 0.0:
                        advance_decline[p] += 1
                    elif ret < 0.0:
                        advance_decline[p] -= 1
                    n_closed[p] += 1
                    last_log_close[p] = log_close
                    last_close[p] = close
                # The new forming bar (time's bar) is started by this sample below.
                b_index[p] = bar
                b_samples[p] = 0
            x = price[t, p]
            if cur < 0 or b_samples[p] == 0:
                b_index[p] = bar
                b_open[p] = x
                b_high[p] = x
                b_low[p] = x
                b_close[p] = x
                b_open_time[p] = time
                b_close_time[p] = time
                b_volume[p] = volume[t, p]
                b_tvl[p] = tvl[t, p]
                b_tick_tvl[p] = tick_tvl[t, p]
                b_swaps[p] = swaps[t, p]
                b_mev[p] = mev_swaps[t, p]
                b_samples[p] = 1
            else:
                b_high[p] = max(b_high[p], x) if not math.isnan(b_high[p]) else x
                b_low[p] = min(b_low[p], x) if not math.isnan(b_low[p]) else x
                b_volume[p] += volume[t, p]
                b_swaps[p] += swaps[t, p]
                b_mev[p] += mev_swaps[t, p]
                b_samples[p] += 1
                if b_close_time[p] <= time:
                    b_close[p] = x
                    b_close_time[p] = time
                    b_tvl[p] = tvl[t, p]
                    b_tick_tvl[p] = tick_tvl[t, p]
                if b_open_time[p] > time:
                    b_open[p] = x
                    b_open_time[p] = time
        # Peek: every sampled pool's forming bar as if it closed now.
        for p in range(n_pools):
            if not present[t, p]:
                for f in range(out.shape[0]):
                    if f != _CORR:
                        out[f, t, p] = _NAN
                continue
            close = b_close[p]
            bar_tvl = b_tvl[p]
            bar_tick_tvl = b_tick_tvl[p]
            nc = n_closed[p]
            last_bar = last_closed_bar[p]
            lp = log_price[t, p]
            forming_log_close[p] = lp
            ret = lp - last_log_close[p]
            if ret > 0.0:
                forming_sign[p] = 1
            elif ret < 0.0:
                forming_sign[p] = -1
            else:
                forming_sign[p] = 0
            out[_PRICE, t, p] = close
            out[_RET, t, p] = ret
            out[_TVL, t, p] = bar_tvl
            out[_TICK_TVL, t, p] = bar_tick_tvl
            # sigma over the committed window
            w = sigma_window
            total = windows[0, 0, p]
            var = total * total
            var /= -w
            var += windows[0, 1, p]
            var /= w - 1
            if window_ints[0, p] <= last_bar - flags[0, 0] or var <= 0.0 or nc <= w:
                var = _NAN
            inv_sigma = 1.0 / math.sqrt(var)
            out[_MOVE_SIGMA, t, p] = ret * inv_sigma
            forming_bar = b_index[p]
            past = log_close_ring[(forming_bar - n_1h) % ring_len, p]
            move = lp - past
            move *= inv_sigma
            move *= root_1h
            out[_MOVE_1H, t, p] = move if nc >= n_1h else _NAN
            past = log_close_ring[(forming_bar - n_4h) % ring_len, p]
            move = lp - past
            move *= inv_sigma
            move *= root_4h
            out[_MOVE_4H, t, p] = move if nc >= n_4h else _NAN
            past = log_close_ring[(forming_bar - n_24h) % ring_len, p]
            move = lp - past
            move *= inv_sigma
            move *= root_24h
            out[_MOVE_24H, t, p] = move if nc >= n_24h else _NAN
            # realized volatility
            wr = rv_window
            simple = close / last_close[p]
            simple -= 1.0
            mean = windows[2, 0, p] + simple
            rv_var = simple * simple
            rv_var += windows[2, 1, p]
            rv_var /= wr
            mean /= wr
            mean *= mean
            rv_var -= mean
            rv_var = _max0(rv_var)
            if window_ints[2, p] <= last_bar - flags[2, 0] and simple == 0.0:
                rv_var = 0.0
            rv = math.sqrt(rv_var)
            rv *= ppy_sqrt
            out[_REALIZED_VOL, t, p] = rv if nc >= wr else _NAN
            # volume, TVL/volume, IV
            forming_volume = b_volume[p]
            volume_24h = windows[3, 0, p] + forming_volume
            if window_ints[3, p] <= last_bar - flags[3, 0] or volume_24h < 0.0:
                volume_24h = forming_volume
            out[_VOLUME_24H, t, p] = volume_24h
            out[_TVL_VOLUME, t, p] = bar_tvl / volume_24h if volume_24h > 0.0 else _NAN
            if bar_tick_tvl > 0.0:
                iv = volume_24h / bar_tick_tvl
                iv = math.sqrt(iv)
                iv *= fees[p]
                iv *= iv_scale
                out[_IV, t, p] = iv
            else:
                out[_IV, t, p] = _NAN
            # TVL drain
            l_eq = bar_tvl / math.sqrt(close)
            ref = l_eq_ref[p]
            if math.isnan(ref) or l_eq > ref:
                ref = l_eq if not math.isnan(l_eq) else ref
            drain = l_eq / ref
            drain = 1.0 - drain
            drain = _max0(drain)
            out[_TVL_DRAIN, t, p] = drain if ref > 0.0 else _NAN
            n_swaps = int_windows[0, 0, p] + b_swaps[p]
            n_mev = int_windows[1, 0, p] + b_mev[p]
            out[_MEV_SCORE, t, p] = float(n_mev) / float(n_swaps) if n_swaps != 0 else _NAN
            line, sig, hist = _macd(macd_count, macd_state, macd_periods, macd_ks, p, close, False)
            out[_MACD, t, p] = line
            out[_MACD_SIGNAL, t, p] = sig
            out[_MACD_HIST, t, p] = hist
            out[_RSI, t, p] = _rsi(rsi_count, rsi_state, rsi_period, p, close, False)
            upper, middle, lower = _bbands(
                bb_ints, bb_state, bb_ring, bb_period, nbdev, p, close, False
            )
            out[_BB_UPPER, t, p] = upper
            out[_BB_MIDDLE, t, p] = middle
            out[_BB_LOWER, t, p] = lower
            width = upper - lower
            bb_pos = close - lower
            bb_pos /= width
            out[_BB_POS, t, p] = bb_pos if width > 0.0 else _NAN
        breadth = 0
        for p in range(n_pools):
            breadth += advance_decline[p] + forming_sign[p]
        for p in range(n_pools):
            if present[t, p]:
                out[_BREADTH, t, p] = float(breadth)
