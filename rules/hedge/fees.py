"""Swap fees an LP position earns per bar.

Guarantees kept here:
- out of its range a position earns nothing;
- from the pool's volume: ``fee_tier * volume * share`` where ``share`` is the
  position's share of the pool's *active* liquidity at the price (position L / pool
  active L, human units; :meth:`rules.uniswap.TokenPair.liquidity_from_raw` converts
  the pool's figure). When only the pool's TVL is known, its active liquidity is taken
  as that of a full-range pool of that TVL, ``TVL / (2 sqrt(p))`` (exact for a V2
  pool); so a concentrated position earns more per dollar than a full-range one, as
  it does on chain, and not ``value / TVL``;
- from a fee-APR assumption when only prices are known: ``apr * value * dt / year`` on
  the bars the position is in range (the same yield per dollar for every range: say
  so when quoting it);
- NaN volume, TVL or liquidity earn nothing (never a guess); shares are capped at 1.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import numpy as np

from rules.hedge.lp import FloatArray, Position
from rules.hedge.volmodel import YEAR

__all__ = ["active_liquidity_share", "fees_from_apr", "fees_from_volume"]


def active_liquidity_share(
    position: Position,
    prices: FloatArray,
    *,
    pool_liquidity: FloatArray | None = None,
    tvl: FloatArray | None = None,
) -> FloatArray:
    """The position's share of the pool's active liquidity at each price (0 out of range).

    ``pool_liquidity`` (human L, the position's own included) wins over ``tvl``; with
    neither the share is 0.
    """
    p = np.asarray(prices, dtype=np.float64)
    if pool_liquidity is not None:
        active = np.asarray(pool_liquidity, dtype=np.float64)
    elif tvl is not None:
        active = np.asarray(tvl, dtype=np.float64) / (2.0 * np.sqrt(p))
    else:
        return np.zeros_like(p)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(active > 0, position.liquidity / active, 0.0)
    share = np.nan_to_num(np.minimum(share, 1.0), nan=0.0)
    return np.where(position.in_range(p), share, 0.0)


def fees_from_volume(
    position: Position,
    prices: FloatArray,
    volume: FloatArray,
    fee_tier: float,
    *,
    pool_liquidity: FloatArray | None = None,
    tvl: FloatArray | None = None,
) -> FloatArray:
    """Quote earned on each bar from the bar's volume (quote) at the pool's fee tier."""
    if not 0 <= fee_tier < 1:
        raise ValueError(f"fee_tier must be a fraction in [0, 1), got {fee_tier!r}")
    share = active_liquidity_share(position, prices, pool_liquidity=pool_liquidity, tvl=tvl)
    v = np.asarray(volume, dtype=np.float64)
    return np.where(np.isfinite(v) & (v > 0), fee_tier * v * share, 0.0)


def fees_from_apr(
    position: Position, prices: FloatArray, seconds: FloatArray | float, apr: float
) -> FloatArray:
    """Quote earned on each bar of ``seconds`` length at ``apr`` on the in-range value."""
    if not 0 <= apr < 100:
        raise ValueError(f"apr must be a fraction >= 0 (0.2 = 20 %/year), got {apr!r}")
    p = np.asarray(prices, dtype=np.float64)
    value = np.asarray(position.value_at(p), dtype=np.float64)
    earned = apr * value * np.asarray(seconds, dtype=np.float64) / YEAR
    return np.where(position.in_range(p), earned, 0.0)
