"""The volatility proxies: what each one means, and the constants they share.

What this module guarantees:

- The definitions below are the contract of every proxy. Their one implementation is
  the compiled loop :func:`rules.features.kernels.feature_steps` (running sums over
  windows, O(1) per bar); ``tests/oracles.py`` writes each definition out plainly over
  bar series and the tests hold the loop to it (to 1e-9).
- Windows given in seconds become ``bars_in(seconds, bar_interval) = max(1, seconds //
  bar_interval)`` bars; volatilities are annualised by ``periods_per_year`` (a calendar
  year of bars: crypto markets never close).
- No numpy, no numba: the settings (:mod:`rules.features.params`) import this module.

Definitions (bar ``t`` = the last closed bar, or the forming bar taken as if it closed):

- ``ret``: ``log(close_t) - log(close_{t-1})``.
- ``move_sigma``: ``ret_t / sigma_t`` where ``sigma_t`` is the sample standard deviation
  (ddof 1) of the ``sigma_window`` log returns before bar ``t`` (excluding ``t``: a move
  must not dampen its own yardstick). NaN until that window is full or when it is flat.
- ``move_sigma_n``: ``(log(close_t) - log(close_{t-n})) / (sigma_t * sqrt(n))``, the move
  over ``n`` bars in units of the per-bar sigma scaled to ``n`` bars.
- ``drawdown_24h``: the fall of the price from the highest close of the last 24 hours:
  ``1 - close_t / max(close_{t-n} .. close_t)`` with ``n = bars_in(86400)`` (the ``n``
  closed bars before bar ``t`` and bar ``t`` itself), a fraction in [0, 1); NaN until
  ``n`` bars have closed. Unlike the sigma-scaled moves it is a level: a fall of 7 % is
  7 % in a calm market and in a wild one.
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
  positive return, -1 for a negative one, summed over pools, plus the sign of every
  pool's forming bar (as if all closed now). One value for all pools.
- ``corr``: the mean pairwise Pearson correlation of the pools' last ``corr_window`` bar
  log returns, via standardised vectors ``z_i`` (``|z_i| = 1``):
  ``mean_{i != j} corr_ij = (|sum_i z_i|^2 - sum_i |z_i|^2) / (K (K - 1))``, over closed
  bars only and across the ``K`` pools whose last closed bar is the newest of all pools
  and whose window is full (more than ``corr_window`` closed bars) and not flat (a
  forming bar of a pool not sampled yet would enter as a zero return and bias it
  towards 0); NaN with fewer than 2 such pools. One value for all pools.
"""

from __future__ import annotations

import math

__all__ = ["LAMBERT_IV_SCALE", "SECONDS_PER_YEAR", "bars_in", "periods_per_year"]

#: A calendar year (crypto markets never close), for annualising bar volatility.
SECONDS_PER_YEAR = 365 * 86400

#: Lambert's IV is ``2 * fee * sqrt(volume_24h / tick_tvl) * sqrt(365)``: the constant factors.
LAMBERT_IV_SCALE = 2.0 * math.sqrt(365.0)


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
