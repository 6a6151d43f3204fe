"""Uniswap V3 tick math for replayed pool data, vectorised in floating point.

Guarantees:
- ``1.0001 ** tick`` is computed as ``exp(tick * log1p(1e-4))``: the base 1.0001 is
  not a binary float, and raising its rounded value to a power of 2e5 would carry a
  relative error of ~1e-12; this form stays within a few ulp;
- :func:`tick_tvl` is the value, in the quote token, of the active liquidity ``L``
  inside the current initialisable tick range ``[lower, lower + spacing)`` with
  ``lower = floor(tick / spacing) * spacing`` (Lambert's "tick TVL", the same
  definition as :func:`adapters.evm.chain.tick_tvl_v3`). Token amounts follow the
  whitepaper (formulas 6.29 and 6.30) with the pool price taken at the tick itself
  (the data has no finer sqrt price):
  ``amount0 = L (sqrt(pb) - sqrt(p)) / (sqrt(p) sqrt(pb))``, ``amount1 = L (sqrt(p) - sqrt(pa))``,
  written with ``expm1`` so the small differences keep full precision.
  They agree with the contracts' integer ``getAmountsForLiquidity`` at the same tick
  to ~1e-10 relative, the integer rounding of the raw amounts (``tests/test_replay.py``).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

#: ln(1.0001) / 2: the log of the sqrt price step of one tick.
_HALF_LOG_TICK = math.log1p(1e-4) / 2

#: Uniswap V3 fee tiers by tick spacing (the factory's enabled fee amounts).
FEE_BY_TICK_SPACING: dict[int, float] = {1: 0.0001, 10: 0.0005, 60: 0.003, 200: 0.01}


def raw_price(tick: I64) -> F64:
    """``1.0001 ** tick``: token1 per token0 in raw (smallest) units."""
    return np.exp(tick.astype(np.float64) * (2 * _HALF_LOG_TICK))


def quote_per_base(
    tick: I64,
    decimals0: int | I64,
    decimals1: int | I64,
    *,
    quote_is_token0: bool,
) -> F64:
    """Human price of the base token in the quote token at ``tick``.

    token1 per token0 in human units is ``1.0001**tick * 10**(decimals0 - decimals1)``;
    with token0 as quote the price is its inverse (USDC/WETH: ``1e12 / 1.0001**tick``).
    """
    shift = np.asarray(decimals0, dtype=np.float64) - np.asarray(decimals1, dtype=np.float64)
    if quote_is_token0:
        return np.exp(-tick.astype(np.float64) * (2 * _HALF_LOG_TICK) - shift * math.log(10.0))
    return np.exp(tick.astype(np.float64) * (2 * _HALF_LOG_TICK) + shift * math.log(10.0))


def tick_tvl(
    tick: I64,
    liquidity: F64,
    *,
    tick_spacing: int | I64,
    decimals0: int | I64,
    decimals1: int | I64,
    price: F64,
    quote_is_token0: bool,
) -> F64:
    """Value in quote of ``liquidity`` (raw ``L``) over the initialisable range holding ``tick``.

    ``price`` is the quote-per-base price of the same rows (from :func:`quote_per_base`).
    NaN liquidity gives NaN.
    """
    spacing = np.asarray(tick_spacing, dtype=np.int64)
    lower = np.floor_divide(tick, spacing) * spacing
    upper = lower + spacing
    # sqrt(pb)/sqrt(p) - 1 and sqrt(p)/sqrt(pa) - 1 via expm1: both are ~1e-4 * spacing,
    # where subtracting two exponentials would lose about four digits.
    sqrt_upper = np.exp(upper.astype(np.float64) * _HALF_LOG_TICK)
    sqrt_lower = np.exp(lower.astype(np.float64) * _HALF_LOG_TICK)
    raw0 = liquidity * np.expm1((upper - tick).astype(np.float64) * _HALF_LOG_TICK) / sqrt_upper
    raw1 = liquidity * sqrt_lower * np.expm1((tick - lower).astype(np.float64) * _HALF_LOG_TICK)
    amount0 = raw0 / np.power(10.0, np.asarray(decimals0, dtype=np.float64))
    amount1 = raw1 / np.power(10.0, np.asarray(decimals1, dtype=np.float64))
    if quote_is_token0:
        return amount0 + amount1 * price
    return amount1 + amount0 * price
