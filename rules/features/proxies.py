"""On-chain volatility proxies: their definitions over bar series, and shared formulas.

What this module guarantees:

- Each ``*_series`` function is the plain definition of one feature over the closed bars
  of one pool (or of many pools for the cross-pool ones), written for clarity, not speed:
  the streaming engine (:mod:`rules.features.engine`) must agree with it (tests compare them to
  1e-9), and so does a backtest that recomputes features offline.
- The element-wise formulas (``lambert_iv``, ``tvl_drain``, ``mev_share``,
  ``tvl_volume_ratio``) define those features; the engine evaluates the same formulas in
  place on its own arrays (for speed), and the tests hold it to these functions.
- Windows given in seconds become ``bars_in(seconds, bar_interval) = max(1, seconds //
  bar_interval)`` bars.

Definitions (bar ``t`` = the last closed bar, or the forming bar taken as if it closed):

- ``ret``: ``log(close_t) - log(close_{t-1})``.
- ``move_sigma``: ``ret_t / sigma_t`` where ``sigma_t`` is the sample standard deviation
  (ddof 1) of the ``sigma_window`` log returns before bar ``t`` (excluding ``t``: a move
  must not dampen its own yardstick). NaN until that window is full or when it is flat.
- ``move_sigma_n``: ``(log(close_t) - log(close_{t-n})) / (sigma_t * sqrt(n))``, the move
  over ``n`` bars in units of the per-bar sigma scaled to ``n`` bars.
- ``realized_vol``: Tulip Indicators' ``volatility``: the population standard deviation
  of the last ``window`` simple returns ``close_t / close_{t-1} - 1``, annualised by
  ``sqrt(periods_per_year)``; Tulip uses 252 (daily bars, trading days), alvh uses the
  real bar interval: ``365 * 86400 / bar_interval``.
- ``volume_24h``: the sum of bar volumes over the last ``bars_in(86400)`` bars
  (the forming bar included).
- ``tvl_volume_ratio``: ``tvl / volume_24h``, NaN when there was no volume.
- ``iv``: Guillaume Lambert's implied volatility of a Uniswap v3 pool, "On-chain
  volatility and Uniswap v3" (2021): ``2 * fee * sqrt(volume_24h / tick_tvl) * sqrt(365)``.
- ``tvl_drain_1h``: the share of liquidity withdrawn over the last hour, price-neutral:
  a constant-product pool holds ``tvl = 2 * L * sqrt(price)`` (value in quote), so
  ``L_eq = tvl / sqrt(price)`` does not move with the price, only with liquidity;
  ``drain = max(0, 1 - L_eq_now / max(L_eq over the window))``, the window being the
  ``bars_in(3600)`` closed bars before the forming bar and the forming bar itself.
- ``mev_score``: ``mev_swaps / swaps`` over the last ``bars_in(mev_window)`` bars, NaN
  without swaps (see :mod:`rules.features.mev` for what counts as a MEV swap).
- ``breadth``: the advance-decline line: cumulative over closed pool-bars of +1 for a
  positive return, -1 for a negative one, summed over pools.
- ``corr``: the mean pairwise Pearson correlation of the pools' last ``corr_window`` bar
  log returns, via standardised vectors ``z_i`` (``|z_i| = 1``):
  ``mean_{i != j} corr_ij = (|sum_i z_i|^2 - sum_i |z_i|^2) / (K (K - 1))``; NaN with
  fewer than 2 pools with a full, non-flat window.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "SECONDS_PER_YEAR",
    "bars_in",
    "breadth_series",
    "lambert_iv",
    "log_returns",
    "mean_pairwise_corr",
    "mev_share",
    "move_sigma_n_series",
    "move_sigma_series",
    "periods_per_year",
    "realized_vol_series",
    "rolling_sum_series",
    "tvl_drain",
    "tvl_drain_series",
    "tvl_volume_ratio",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

#: A calendar year (crypto markets never close), for annualising bar volatility.
SECONDS_PER_YEAR = 365 * 86400


def bars_in(seconds: int, bar_interval: int) -> int:
    """Number of bars in a window of ``seconds`` (at least 1)."""
    if bar_interval <= 0:
        raise ValueError(f"bar_interval must be > 0, got {bar_interval}")
    return max(1, int(seconds) // int(bar_interval))


def periods_per_year(bar_interval: int) -> float:
    """Bars per calendar year, the annualisation factor of ``realized_vol`` (squared)."""
    if bar_interval <= 0:
        raise ValueError(f"bar_interval must be > 0, got {bar_interval}")
    return SECONDS_PER_YEAR / bar_interval


# --------------------------------------------------------------------------- formulas


def lambert_iv(fee: F64 | float, volume_24h: F64 | float, tick_tvl: F64 | float) -> F64:
    """``2 * fee * sqrt(volume_24h / tick_tvl) * sqrt(365)``; NaN when ``tick_tvl <= 0``.

    ``fee`` is a fraction (0.003 for a 0.3% pool); the result is an annualised volatility
    as a fraction (0.48 = 48%).
    """
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


# --------------------------------------------------------------------------- definitions


def log_returns(close: F64) -> F64:
    """``log(close_t) - log(close_{t-1})``, NaN at ``t = 0``."""
    lc = np.log(np.asarray(close, dtype=np.float64))
    out = np.full(lc.shape, np.nan)
    out[1:] = lc[1:] - lc[:-1]
    return out


def move_sigma_series(close: F64, sigma_window: int) -> F64:
    """``ret_t`` over the sample std of the ``sigma_window`` returns before ``t``."""
    ret = log_returns(close)
    out = np.full(ret.shape, np.nan)
    for t in range(sigma_window + 1, ret.size):
        sigma = float(np.std(ret[t - sigma_window : t], ddof=1))
        if sigma > 0.0:
            out[t] = ret[t] / sigma
    return out


def move_sigma_n_series(close: F64, n: int, sigma_window: int) -> F64:
    """Log return over ``n`` bars over ``sigma * sqrt(n)`` (sigma as in ``move_sigma``)."""
    lc = np.log(np.asarray(close, dtype=np.float64))
    ret = log_returns(close)
    out = np.full(lc.shape, np.nan)
    for t in range(max(sigma_window + 1, n), lc.size):
        sigma = float(np.std(ret[t - sigma_window : t], ddof=1))
        if sigma > 0.0:
            out[t] = (lc[t] - lc[t - n]) / (sigma * math.sqrt(n))
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
    centred = r - r.mean(axis=1, keepdims=True)
    norm = np.sqrt((centred * centred).sum(axis=1))
    keep = norm > 0.0
    k = int(keep.sum())
    if k < 2:
        return math.nan
    z = centred[keep] / norm[keep, None]
    total = z.sum(axis=0)
    return float((total @ total - (z * z).sum()) / (k * (k - 1)))
