"""Uniswap math, each conversion once: ticks, prices, sqrt prices, amounts, liquidity.

Every tick / price / sqrt-price / amount conversion alvh makes lives in this package
and nowhere else; adapters, the hedge model, the dev chain harness, tests and
benchmarks import it from here. Where a value is needed both exactly (one value, as
the contracts compute it) and for whole numpy columns, the two forms sit side by side
and are tested against each other; no definition is written twice.

- :mod:`rules.uniswap.v3`: exact integer math of the V3 contracts (``TickMath``,
  ``FullMath``, ``SqrtPriceMath`` amount deltas, the periphery's ``LiquidityAmounts``)
  and tick ranges aligned to a spacing;
- :mod:`rules.uniswap.prices`: :class:`TokenPair`, a pool's raw token0/token1 units
  against the human base/quote view (prices, ``sqrtPriceX96``, ticks, liquidity,
  amounts), exact up to one final rounding;
- :mod:`rules.uniswap.floats`: the float forms for tables and for the float position
  model (``1.0001 ** tick`` over columns, whitepaper amounts 6.29/6.30, tick TVL);
- :mod:`rules.uniswap.v2`: V2 pair swap math in integers.

Sources: Uniswap V3 whitepaper (Adams et al., 2021) section 6; Uniswap V2 whitepaper
(Adams et al., 2020) section 3.2.1; v3-core ``TickMath.sol``, ``SqrtPriceMath.sol``,
``FullMath.sol``; v3-periphery ``LiquidityAmounts.sol``; v2-periphery
``UniswapV2Library.sol``. Pure: no I/O, no clock.
"""

from rules.uniswap.floats import amounts_from_liquidity, quote_per_base, tick_tvl
from rules.uniswap.prices import TokenPair
from rules.uniswap.v2 import (
    V2_FEE_DENOMINATOR,
    V2_FEE_NUMERATOR,
    v2_amount_in_for_price,
    v2_amount_out,
)
from rules.uniswap.v3 import (
    FEE_BY_TICK_SPACING,
    MAX_SQRT_RATIO,
    MAX_TICK,
    MAX_UINT128,
    MIN_SQRT_RATIO,
    MIN_TICK,
    Q96,
    Q128,
    amount0_for_liquidity,
    amount1_for_liquidity,
    amounts_for_liquidity,
    full_range_ticks,
    liquidity_for_amounts,
    mul_div,
    sqrt_ratio_at_tick,
    tick_at_sqrt_ratio,
    tick_range,
    widen_to_spacing,
)

__all__ = [
    "FEE_BY_TICK_SPACING",
    "MAX_SQRT_RATIO",
    "MAX_TICK",
    "MAX_UINT128",
    "MIN_SQRT_RATIO",
    "MIN_TICK",
    "Q96",
    "Q128",
    "V2_FEE_DENOMINATOR",
    "V2_FEE_NUMERATOR",
    "TokenPair",
    "amount0_for_liquidity",
    "amount1_for_liquidity",
    "amounts_for_liquidity",
    "amounts_from_liquidity",
    "full_range_ticks",
    "liquidity_for_amounts",
    "mul_div",
    "quote_per_base",
    "sqrt_ratio_at_tick",
    "tick_at_sqrt_ratio",
    "tick_range",
    "tick_tvl",
    "v2_amount_in_for_price",
    "v2_amount_out",
    "widen_to_spacing",
]
