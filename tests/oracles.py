"""Test oracles: bars and every feature written out the obvious way, slow and plain.

The compiled loop (:mod:`rules.features.kernels`) is the one implementation of bars and
features; this module is what it must compute, written from the rules of
:mod:`rules.features.bars` and the definitions of :mod:`rules.features.proxies` without
looking at it: per-pool lists of bars, whole series, numpy reductions over windows, no
running sums, no state shared between features. RSI and MACD come from TA-Lib (the
DESIGN.md oracle), not from :mod:`rules.indicators`; Bollinger Bands are the SMA and the
two-pass population deviation of the window (TA-Lib's own running sums are less exact
than the engine's shifted ones on a nearly flat window; test_indicators compares those).

Running sums carry the rounding of their terms: a variance far below the mean square of
its values is not computed exactly by them (nor meant to be), so :func:`well_conditioned`
tells a test where a comparison to 1e-9 means something.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import talib
from numpy.typing import NDArray

from rules.features.params import ENGINE_FEATURES, FeatureParams
from rules.features.proxies import periods_per_year

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


# --------------------------------------------------------------------------- formulas


def lambert_iv(fee: F64 | float, volume_24h: F64 | float, tick_tvl: F64 | float) -> F64:
    """``2 * fee * sqrt(volume_24h / tick_tvl) * sqrt(365)``; NaN when ``tick_tvl <= 0``."""
    fee_a = np.asarray(fee, dtype=np.float64)
    volume_a = np.asarray(volume_24h, dtype=np.float64)
    tick_a = np.asarray(tick_tvl, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(tick_a > 0.0, volume_a / tick_a, np.nan)
        return np.asarray(2.0 * fee_a * np.sqrt(ratio) * math.sqrt(365.0), dtype=np.float64)


def tvl_volume_ratio(tvl: F64 | float, volume_24h: F64 | float) -> F64:
    """``tvl / volume_24h``; NaN when there was no volume."""
    tvl_a = np.asarray(tvl, dtype=np.float64)
    volume_a = np.asarray(volume_24h, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(volume_a > 0.0, tvl_a / volume_a, np.nan), dtype=np.float64)


def tvl_drain(l_eq_now: F64 | float, l_eq_max: F64 | float) -> F64:
    """``max(0, 1 - l_eq_now / l_eq_max)``; NaN when either is unknown or the max is 0."""
    now = np.asarray(l_eq_now, dtype=np.float64)
    ref = np.fmax(np.asarray(l_eq_max, dtype=np.float64), now)
    with np.errstate(invalid="ignore", divide="ignore"):
        drain = np.where(ref > 0.0, 1.0 - now / ref, np.nan)
    return np.asarray(np.where(drain < 0.0, 0.0, drain), dtype=np.float64)


def mev_share(mev_swaps: I64 | F64 | float, swaps: I64 | F64 | float) -> F64:
    """``mev_swaps / swaps``; NaN without swaps."""
    mev_a = np.asarray(mev_swaps, dtype=np.float64)
    swaps_a = np.asarray(swaps, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(swaps_a > 0, mev_a / swaps_a, np.nan), dtype=np.float64)


# --------------------------------------------------------------------------- series


def log_returns(close: F64) -> F64:
    """``log(close_t) - log(close_{t-1})``, NaN at ``t = 0``."""
    lc = np.log(np.asarray(close, dtype=np.float64))
    out = np.full(lc.shape, np.nan)
    out[1:] = lc[1:] - lc[:-1]
    return out


def sigma_series(close: F64, sigma_window: int) -> F64:
    """The sample std (ddof 1) of the ``sigma_window`` log returns before each bar."""
    ret = log_returns(close)
    out = np.full(ret.shape, np.nan)
    for t in range(sigma_window + 1, ret.size):
        out[t] = float(np.std(ret[t - sigma_window : t], ddof=1))
    return out


def move_sigma_series(close: F64, sigma_window: int) -> F64:
    """``ret_t`` over the sample std of the ``sigma_window`` returns before ``t``."""
    ret = log_returns(close)
    sigma = sigma_series(close, sigma_window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sigma > 0.0, ret / sigma, np.nan)


def move_sigma_n_series(close: F64, n: int, sigma_window: int) -> F64:
    """Log return over ``n`` bars over ``sigma * sqrt(n)`` (sigma as in ``move_sigma``)."""
    lc = np.log(np.asarray(close, dtype=np.float64))
    sigma = sigma_series(close, sigma_window)
    out = np.full(lc.shape, np.nan)
    for t in range(n, lc.size):
        if sigma[t] > 0.0:
            out[t] = (lc[t] - lc[t - n]) / (sigma[t] * math.sqrt(n))
    return out


def drawdown_series(close: F64, n: int) -> F64:
    """``drawdown_24h`` of each bar: the fall of its close from the highest close of it and
    the ``n`` bars before it, as a fraction; NaN for the first ``n`` bars."""
    out = np.full(close.size, math.nan)
    for t in range(n, close.size):
        out[t] = 1.0 - close[t] / float(np.max(close[t - n : t + 1]))
    return out


def realized_vol_series(close: F64, window: int, periods: float) -> F64:
    """Tulip's ``volatility``: population std of ``window`` simple returns * sqrt(periods).

    First value at index ``window`` (``window`` returns need ``window + 1`` closes).
    """
    c = np.asarray(close, dtype=np.float64)
    out = np.full(c.shape, np.nan)
    simple = c[1:] / c[:-1] - 1.0
    for t in range(window, c.size):
        out[t] = float(np.std(simple[t - window : t])) * math.sqrt(periods)
    return out


def rolling_sum_series(values: F64, n: int) -> F64:
    """Sum of the last ``n`` values (fewer at the start)."""
    v = np.asarray(values, dtype=np.float64)
    out = np.empty(v.shape)
    for t in range(v.size):
        out[t] = float(np.sum(v[max(0, t - n + 1) : t + 1]))
    return out


def tvl_drain_series(tvl: F64, close: F64, n: int) -> F64:
    """``tvl_drain`` of each bar against the ``n`` bars before it (L_eq = tvl / sqrt(price))."""
    l_eq = np.asarray(tvl, dtype=np.float64) / np.sqrt(np.asarray(close, dtype=np.float64))
    out = np.full(l_eq.shape, np.nan)
    for t in range(l_eq.size):
        window = l_eq[max(0, t - n) : t + 1]
        finite = window[~np.isnan(window)]
        ref = float(finite.max()) if finite.size else math.nan
        out[t] = float(tvl_drain(l_eq[t], ref))
    return out


def breadth_series(returns: F64) -> F64:
    """Advance-decline line of a (T, K) matrix of bar returns (NaN counts as unchanged)."""
    r = np.asarray(returns, dtype=np.float64)
    step = (r > 0.0).sum(axis=1) - (r < 0.0).sum(axis=1)
    return np.cumsum(step).astype(np.float64)


def mean_pairwise_corr(returns: F64) -> float:
    """Mean Pearson correlation over all pairs of rows of a (K, W) matrix of returns.

    Rows with a zero standard deviation have no correlation and are left out; NaN with
    fewer than 2 rows left.
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.shape[0] < 2:
        return math.nan
    centred = r - r.mean(axis=1, keepdims=True)
    norm = np.sqrt((centred * centred).sum(axis=1))
    keep = norm > 0.0
    k = int(keep.sum())
    if k < 2:
        return math.nan
    z = centred[keep] / norm[keep, None]
    total = z.sum(axis=0)
    return float((total @ total - (z * z).sum()) / (k * (k - 1)))


# --------------------------------------------------------------------------- bars


@dataclass
class Bar:
    """One bar of one pool: what the features read."""

    index: int
    close: float
    close_time: int
    tvl: float
    tick_tvl: float
    volume: float = 0.0
    swaps: int = 0
    mev_swaps: int = 0
    samples: int = 0


@dataclass
class PoolBars:
    """One pool's bars by the rules of :mod:`rules.features.bars`, the obvious way."""

    interval: int
    closed: list[Bar] = field(default_factory=list)
    forming: Bar | None = None
    late: int = 0

    def add(
        self,
        time: int,
        price: float,
        tvl: float,
        tick_tvl: float,
        volume: float,
        swaps: int,
        mev_swaps: int,
    ) -> bool:
        """Add one sample; False when it is late (its bar has closed: dropped, counted)."""
        b = time // self.interval
        bar = self.forming
        if bar is not None and b < bar.index:
            self.late += 1
            return False
        if bar is not None and b > bar.index:
            self.closed.append(bar)
            for gap in range(bar.index + 1, b):  # empty intervals carry the close
                self.closed.append(Bar(gap, bar.close, bar.close_time, bar.tvl, bar.tick_tvl))
            bar = None
        if bar is None:
            self.forming = Bar(b, price, time, tvl, tick_tvl, volume, swaps, mev_swaps, 1)
            return True
        bar.volume += volume
        bar.swaps += swaps
        bar.mev_swaps += mev_swaps
        bar.samples += 1
        if time >= bar.close_time:
            bar.close, bar.close_time, bar.tvl, bar.tick_tvl = price, time, tvl, tick_tvl
        return True

    def series(self, name: str) -> F64:
        """``name`` of every closed bar and the forming one (taken as closed now)."""
        bars = [*self.closed, *([self.forming] if self.forming is not None else [])]
        return np.array([float(getattr(b, name)) for b in bars])


# --------------------------------------------------------------------------- features


def _std(values: F64, ddof: int = 0) -> float:
    return float(np.std(values, ddof=ddof)) if values.size > ddof else math.nan


def well_conditioned(values: F64) -> bool:
    """Whether running sums give the variance of ``values`` to about 1e-9: all zero (a flat
    window, known exactly), or a variance above 1e-6 of their mean square."""
    if values.size < 2 or not np.all(np.isfinite(values)):
        return True  # no variance is computed (warm-up, unknown values)
    mean_square = float(np.mean(values * values))
    return mean_square == 0.0 or float(np.var(values)) > 1e-6 * mean_square


def conditioning(bars: PoolBars, params: FeatureParams) -> dict[str, bool]:
    """Per feature group, whether the pool's windows are well conditioned (see
    :func:`well_conditioned`): the sigma window (moves) and the realized-vol window."""
    close = bars.series("close")
    t = close.size - 1
    ret = log_returns(close)
    simple = close[1:] / close[:-1] - 1.0
    w, wr = params.sigma_window, params.realized_vol_window
    return {
        "sigma": t < w + 1 or well_conditioned(ret[t - w : t]),
        "realized_vol": t < wr or well_conditioned(simple[t - wr : t]),
    }


def features_of(bars: PoolBars, params: FeatureParams, fee: float) -> dict[str, float]:
    """Every per-pool feature at the forming bar (the last of ``bars.series``), each
    computed from the whole bar series at that one index."""
    p = params
    close = bars.series("close")
    t = close.size - 1  # the forming bar
    log_close = np.log(close)
    ret = log_returns(close)
    w = p.sigma_window
    sigma = _std(ret[t - w : t], ddof=1) if t >= w + 1 else math.nan
    moves = {}
    for name, n in (("1h", p.bars_1h), ("4h", p.bars_4h), ("24h", p.bars_24h)):
        moves[name] = (
            (log_close[t] - log_close[t - n]) / (sigma * math.sqrt(n))
            if t >= n and sigma > 0.0
            else math.nan
        )
    wr = p.realized_vol_window
    simple = close[1:] / close[:-1] - 1.0
    ppy = periods_per_year(p.bar_interval)
    tvl, tick_tvl = bars.series("tvl"), bars.series("tick_tvl")
    volume_24h = float(np.sum(bars.series("volume")[-p.bars_24h :]))
    swaps = float(np.sum(bars.series("swaps")[-p.mev_bars :]))
    mev = float(np.sum(bars.series("mev_swaps")[-p.mev_bars :]))
    l_eq = tvl / np.sqrt(close)
    window = l_eq[-(p.bars_1h + 1) :]
    known = window[~np.isnan(window)]
    line, signal, hist = talib.MACD(close, p.macd_fast, p.macd_slow, p.macd_signal)
    window = close[-p.bb_period :]
    middle = float(np.mean(window)) if close.size >= p.bb_period else math.nan
    # A window without change has zero width (np.std of equal values can round above 0).
    deviation = p.bb_nbdev * _std(window) if np.any(window != window[-1]) else 0.0
    upper, lower = middle + deviation, middle - deviation
    width = upper - lower
    values = {
        "price": close[t],
        "ret": ret[t],
        "move_sigma": ret[t] / sigma if sigma > 0.0 else math.nan,
        "move_sigma_1h": moves["1h"],
        "move_sigma_4h": moves["4h"],
        "move_sigma_24h": moves["24h"],
        "drawdown_24h": (
            1.0 - close[t] / float(np.max(close[t - p.bars_24h :])) if t >= p.bars_24h else math.nan
        ),
        "realized_vol": _std(simple[t - wr : t]) * math.sqrt(ppy) if t >= wr else math.nan,
        "rsi": talib.RSI(close, p.rsi_period)[-1],
        "macd": line[-1],
        "macd_signal": signal[-1],
        "macd_hist": hist[-1],
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
        "bb_pos": (close[t] - lower) / width if width > 0.0 else math.nan,
        "tvl": tvl[t],
        "tick_tvl": tick_tvl[t],
        "volume_24h": volume_24h,
        "tvl_volume_ratio": float(tvl_volume_ratio(tvl[t], volume_24h)),
        "iv": float(lambert_iv(fee, volume_24h, tick_tvl[t])),
        "tvl_drain_1h": float(tvl_drain(l_eq[t], known.max() if known.size else math.nan)),
        "mev_score": float(mev_share(mev, swaps)),
    }
    return {name: float(v) for name, v in values.items()}


def breadth_of(pools: list[PoolBars]) -> float:
    """The advance-decline line over every closed bar of every pool, plus the sign of
    each pool's forming bar's return."""
    total = 0.0
    for bars in pools:
        if bars.forming is None:
            continue
        ret = log_returns(bars.series("close"))  # the forming bar last
        total += float(np.sum(ret[1:] > 0.0) - np.sum(ret[1:] < 0.0))
    return total


def corr_windows(pools: list[PoolBars], window: int) -> tuple[F64, bool]:
    """The last ``window`` closed-bar log returns of each pool whose last closed bar is the
    newest of all and that has more than ``window`` closed bars (rows), with flat
    windows (all returns zero) left out; and whether every one is well conditioned."""
    last = [b.closed[-1].index for b in pools if b.closed]
    if not last:
        return np.zeros((0, window)), True
    newest = max(last)
    rows = []
    for bars in pools:
        if len(bars.closed) <= window or bars.closed[-1].index != newest:
            continue
        ret = log_returns(np.array([b.close for b in bars.closed]))[-window:]
        if np.any(ret != 0.0):
            rows.append(ret)
    return np.array(rows).reshape(len(rows), window), all(map(well_conditioned, rows))


class FeatureOracle:
    """:class:`rules.features.engine.FeatureEngine`'s contract, the obvious way."""

    def __init__(self, params: FeatureParams, fees: F64) -> None:
        self.params = params
        self.fees = np.asarray(fees, dtype=np.float64)
        self.pools = [PoolBars(params.bar_interval) for _ in range(self.fees.size)]

    def update(
        self,
        time: int,
        rows: I64,
        price: F64,
        tvl: F64,
        tick_tvl: F64,
        volume: F64,
        swaps: I64,
        mev_swaps: I64,
    ) -> tuple[dict[str, F64], I64, dict[str, NDArray[np.bool_]]]:
        """(features aligned with ``rows``, the rows whose sample was late, and per
        feature whether each row's value is well conditioned: see :func:`conditioning`)."""
        late = []
        for i, row in enumerate(rows.tolist()):
            taken = self.pools[row].add(
                int(time),
                float(price[i]),
                float(tvl[i]),
                float(tick_tvl[i]),
                float(volume[i]),
                int(swaps[i]),
                int(mev_swaps[i]),
            )
            if not taken:
                late.append(row)
        per_row = [features_of(self.pools[r], self.params, float(self.fees[r])) for r in rows]
        values = {name: np.array([v[name] for v in per_row]) for name in per_row[0]}
        n = rows.size
        values["breadth"] = np.full(n, breadth_of(self.pools))
        windows, corr_ok = corr_windows(self.pools, self.params.corr_window)
        values["corr"] = np.full(n, mean_pairwise_corr(windows))
        assert set(values) == set(ENGINE_FEATURES)
        groups = [conditioning(self.pools[r], self.params) for r in rows]
        sigma = np.array([g["sigma"] for g in groups], dtype=np.bool_)
        ok = {name: np.ones(n, dtype=np.bool_) for name in ENGINE_FEATURES}
        for name in ("move_sigma", "move_sigma_1h", "move_sigma_4h", "move_sigma_24h"):
            ok[name] = sigma
        ok["realized_vol"] = np.array([g["realized_vol"] for g in groups], dtype=np.bool_)
        ok["corr"] = np.full(n, corr_ok)
        return values, np.array(late, dtype=np.int64), ok
