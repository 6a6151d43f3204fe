"""Uniswap V3 prices and amounts in floating point, vectorised over whole tables.

The integer forms in :mod:`rules.uniswap.v3` are what the contracts compute, one value
at a time; these are the same definitions for numpy columns (history files, features)
and for the float position model of :mod:`rules.hedge.lp`.

Guarantees:
- ``1.0001 ** tick`` is computed as ``exp(tick * log1p(1e-4))``: the base 1.0001 is
  not a binary float, and raising its rounded value to a power of 2e5 would carry a
  relative error of ~1e-12; this form stays within a few ulp;
- :func:`quote_per_base` is :meth:`rules.uniswap.prices.TokenPair.price_at_tick` for a
  column of ticks, to ~1e-12 relative;
- :func:`amounts_from_liquidity` is the whitepaper's formulas 6.29 and 6.30 with the
  price clamped into the range: ``x = L (1/sqrt(p) - 1/sqrt(pb))``,
  ``y = L (sqrt(p) - sqrt(pa))``, with ``sqrt(pa) = 0`` and ``sqrt(pb) = inf`` allowed
  (the full range of a V2 position); a float price is computed in plain Python floats,
  an array in numpy, with the same IEEE 754 operations in the same order, so the same
  bits;
- :func:`tick_tvl` is the value in quote of the active liquidity ``L`` over the
  initialisable range holding the tick (:func:`rules.uniswap.v3.tick_range`, Lambert's
  "tick TVL"), with the pool price taken at the tick itself, written with ``expm1`` so
  the small differences keep full precision; it agrees with the contracts' integer
  ``getAmountsForLiquidity`` at the same tick to ~1e-10 relative, the integer rounding
  of the raw amounts (``tests/test_uniswap.py``).

Sources: Uniswap V3 whitepaper (Adams et al., 2021) sections 6.1 and 6.29-6.30;
G. Lambert, "On-chain volatility and Uniswap v3" (2021) for tick TVL.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
from numpy.typing import NDArray

from rules.uniswap.v3 import MAX_TICK, MIN_TICK

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

#: ln(1.0001) / 2: the log of the sqrt price step of one tick.
_HALF_LOG_TICK = math.log1p(1e-4) / 2
_LOG_10 = math.log(10.0)


def quote_per_base(
    tick: I64,
    decimals0: int | I64,
    decimals1: int | I64,
    *,
    quote_is_token0: bool,
) -> F64:
    """Human price of the base token in the quote token at each ``tick``.

    token1 per token0 in human units is ``1.0001**tick * 10**(decimals0 - decimals1)``;
    with token0 as quote the price is its inverse (USDC/WETH: ``1e12 / 1.0001**tick``).
    """
    shift = np.asarray(decimals0, dtype=np.float64) - np.asarray(decimals1, dtype=np.float64)
    log_raw = tick.astype(np.float64) * (2 * _HALF_LOG_TICK)
    if quote_is_token0:
        return np.exp(-log_raw - shift * _LOG_10)
    return np.exp(log_raw + shift * _LOG_10)


@overload
def amounts_from_liquidity(
    liquidity: float, price: float, sqrt_lower: float, sqrt_upper: float
) -> tuple[float, float]: ...
@overload
def amounts_from_liquidity(
    liquidity: float, price: F64, sqrt_lower: float, sqrt_upper: float
) -> tuple[F64, F64]: ...
def amounts_from_liquidity(
    liquidity: float, price: float | F64, sqrt_lower: float, sqrt_upper: float
) -> tuple[float, float] | tuple[F64, F64]:
    """Whitepaper 6.29/6.30 with clamping: ``(x, y)`` held by liquidity ``L`` at ``price``.

    In human units (human price and L) this is ``(base, quote)``; in raw units (raw
    price, raw L) it is ``(amount0, amount1)``. ``sqrt_lower`` may be 0 and
    ``sqrt_upper`` inf (full range). A float ``price`` must be positive (one value is
    returned as plain floats); an array gives arrays.
    """
    if isinstance(price, float):
        if not price > 0:
            raise ValueError(f"price must be positive, got {price!r}")
        # np.clip's value for a non-NaN sqrt, in plain floats.
        sqrt_price = math.sqrt(price)
        if sqrt_price < sqrt_lower:
            sqrt_price = sqrt_lower
        elif sqrt_price > sqrt_upper:
            sqrt_price = sqrt_upper
        return (
            liquidity * (1.0 / sqrt_price - 1.0 / sqrt_upper),
            liquidity * (sqrt_price - sqrt_lower),
        )
    sqrt_prices = np.clip(np.sqrt(price), sqrt_lower, sqrt_upper)
    base = liquidity * (1.0 / sqrt_prices - 1.0 / sqrt_upper)
    quote = liquidity * (sqrt_prices - sqrt_lower)
    return base, quote


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
    # rules.uniswap.v3.tick_range, for every row at once.
    floor: I64 = np.floor_divide(tick, spacing) * spacing
    lower: I64 = np.maximum(floor, MIN_TICK)
    upper: I64 = np.minimum(floor + spacing, MAX_TICK)
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
