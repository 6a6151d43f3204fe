"""Uniswap V3 math in integers, exactly as the contracts compute it.

Guarantees:
- :func:`sqrt_ratio_at_tick` returns what ``TickMath.getSqrtRatioAtTick`` returns
  (``sqrt(1.0001 ** tick) * 2**96`` as Q64.96, rounded up), bit for bit, and
  :func:`tick_at_sqrt_ratio` the greatest tick whose sqrt ratio is <= its input, which
  is ``TickMath.getTickAtSqrtRatio``'s definition; both are checked against Uniswap's
  own test snapshot (``tests/test_uniswap.py``);
- :func:`amount0_for_liquidity` / :func:`amount1_for_liquidity` are
  ``SqrtPriceMath.getAmount0Delta`` / ``getAmount1Delta`` with either rounding;
  :func:`amounts_for_liquidity` and :func:`liquidity_for_amounts` are the periphery's
  ``LiquidityAmounts.getAmountsForLiquidity`` / ``getLiquidityForAmounts``; their results
  equal what a pool pays on ``burn``, charges on ``mint`` and what the position manager
  mints (``tests/test_lp_anvil.py`` checks this against the real contracts on anvil);
- :func:`mul_div` is ``FullMath.mulDiv`` / ``mulDivRoundingUp``: Python integers never
  overflow, so the contract's 512-bit intermediate is just the exact product;
- tick ranges (:func:`tick_range`, :func:`full_range_ticks`, :func:`widen_to_spacing`)
  are aligned to the tick spacing and stay inside ``[MIN_TICK, MAX_TICK]``.

Sources: Uniswap V3 whitepaper (Adams et al., 2021) section 6.1-6.3 (ticks,
``p(i) = 1.0001**i``, sqrt prices in Q64.96) and 6.29-6.30 (a position's amounts);
v3-core ``TickMath.sol``, ``SqrtPriceMath.sol``, ``FullMath.sol``; v3-periphery
``LiquidityAmounts.sol``.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

Q96 = 1 << 96
Q128 = 1 << 128
#: TickMath.MIN_TICK / MAX_TICK and the sqrt ratios at those ticks.
MIN_TICK = -887272
MAX_TICK = 887272
MIN_SQRT_RATIO = 4295128739
MAX_SQRT_RATIO = 1461446703485210103287273052203988822378723970342
MAX_UINT128 = (1 << 128) - 1
_UINT256_MAX = (1 << 256) - 1

#: Uniswap V3 fee tiers by tick spacing (the factory's enabled fee amounts).
FEE_BY_TICK_SPACING: dict[int, float] = {1: 0.0001, 10: 0.0005, 60: 0.003, 200: 0.01}


def _factors() -> tuple[int, ...]:
    # 2**128 / sqrt(1.0001) ** (2**i), rounded to nearest: the Q128.128 factors the
    # contract multiplies together bit by bit of |tick| (computed, not copied).
    with localcontext() as ctx:
        ctx.prec = 120
        root = Decimal("1.0001").sqrt()
        return tuple(int((Decimal(Q128) / root ** (1 << i)).to_integral_value()) for i in range(20))


_FACTORS = _factors()
#: ln(1.0001) / 2: the log of one tick's step in sqrt price (for the first guess only).
_HALF_LOG_TICK = math.log1p(1e-4) / 2


def sqrt_ratio_at_tick(tick: int) -> int:
    """sqrt(1.0001 ** tick) * 2**96 as a Q64.96 integer, rounded up (TickMath)."""
    if not MIN_TICK <= tick <= MAX_TICK:
        raise ValueError(f"tick {tick} outside [{MIN_TICK}, {MAX_TICK}]")
    abs_tick = abs(tick)
    ratio = _FACTORS[0] if abs_tick & 1 else Q128
    for i in range(1, 20):
        if abs_tick & (1 << i):
            ratio = (ratio * _FACTORS[i]) >> 128
    if tick > 0:
        ratio = _UINT256_MAX // ratio
    return (ratio >> 32) + (1 if ratio & 0xFFFFFFFF else 0)


def tick_at_sqrt_ratio(sqrt_price_x96: int) -> int:
    """The greatest tick t with sqrt_ratio_at_tick(t) <= sqrt_price_x96 (TickMath)."""
    if not MIN_SQRT_RATIO <= sqrt_price_x96 < MAX_SQRT_RATIO:
        raise ValueError(f"sqrtPriceX96 {sqrt_price_x96} outside [MIN_SQRT_RATIO, MAX_SQRT_RATIO)")
    # A float logarithm lands within a tick of the answer (its error is ~1e-10 tick);
    # the exact integer comparisons then settle it, so the result is the definition's.
    tick = math.floor(math.log(sqrt_price_x96 / Q96) / _HALF_LOG_TICK)
    tick = min(max(tick, MIN_TICK), MAX_TICK - 1)
    while tick > MIN_TICK and sqrt_ratio_at_tick(tick) > sqrt_price_x96:
        tick -= 1
    while tick < MAX_TICK - 1 and sqrt_ratio_at_tick(tick + 1) <= sqrt_price_x96:
        tick += 1
    return tick


# -- ranges of ticks ----------------------------------------------------------------------


def _check_spacing(tick_spacing: int) -> None:
    if tick_spacing <= 0:
        raise ValueError(f"tick_spacing must be positive, got {tick_spacing}")


def tick_range(tick: int, tick_spacing: int) -> tuple[int, int]:
    """The initialisable range ``[lower, lower + spacing)`` holding ``tick``.

    ``lower = floor(tick / spacing) * spacing``; both ends are then clamped into
    ``[MIN_TICK, MAX_TICK]`` (only the outermost ranges are cut). Over this range the
    pool's active liquidity is constant around ``tick`` (Lambert's "tick TVL" is the
    value of that liquidity over it).
    """
    _check_spacing(tick_spacing)
    lower = (tick // tick_spacing) * tick_spacing
    return max(MIN_TICK, lower), min(MAX_TICK, lower + tick_spacing)


def full_range_ticks(tick_spacing: int) -> tuple[int, int]:
    """The widest ``(tick_lower, tick_upper)`` a position can use with ``tick_spacing``."""
    _check_spacing(tick_spacing)
    lower = -(-MIN_TICK // tick_spacing) * tick_spacing  # MIN_TICK rounded towards zero
    upper = (MAX_TICK // tick_spacing) * tick_spacing
    return lower, upper


def widen_to_spacing(tick_a: int, tick_b: int, tick_spacing: int) -> tuple[int, int]:
    """The smallest spacing-aligned ``(lower, upper)`` covering both ticks, never empty.

    The lower tick is rounded down and the upper up to the spacing; a range that would
    be empty gets one spacing; the result is clamped to :func:`full_range_ticks`.
    """
    full_lower, full_upper = full_range_ticks(tick_spacing)
    low, high = sorted((tick_a, tick_b))
    lower = (low // tick_spacing) * tick_spacing
    upper = -(-high // tick_spacing) * tick_spacing
    if upper == lower:
        upper += tick_spacing
    return max(lower, full_lower), min(upper, full_upper)


# -- amounts and liquidity ----------------------------------------------------------------


def mul_div(a: int, b: int, denominator: int, *, round_up: bool = False) -> int:
    """``a * b / denominator`` rounded down (``FullMath.mulDiv``) or up (``mulDivRoundingUp``)."""
    if round_up:
        return -(-a * b // denominator)
    return a * b // denominator


def amount0_for_liquidity(
    liquidity_raw: int, sqrt_a_x96: int, sqrt_b_x96: int, *, round_up: bool = False
) -> int:
    """Token0 for ``liquidity_raw`` between two sqrt prices (SqrtPriceMath.getAmount0Delta)."""
    lo, hi = sorted((sqrt_a_x96, sqrt_b_x96))
    if lo <= 0:
        raise ValueError("sqrt prices must be positive")
    numerator = liquidity_raw << 96
    if round_up:
        inner = mul_div(numerator, hi - lo, hi, round_up=True)
        return -(-inner // lo)
    return mul_div(numerator, hi - lo, hi) // lo


def amount1_for_liquidity(
    liquidity_raw: int, sqrt_a_x96: int, sqrt_b_x96: int, *, round_up: bool = False
) -> int:
    """Token1 for ``liquidity_raw`` between two sqrt prices (SqrtPriceMath.getAmount1Delta)."""
    lo, hi = sorted((sqrt_a_x96, sqrt_b_x96))
    return mul_div(liquidity_raw, hi - lo, Q96, round_up=round_up)


def amounts_for_liquidity(
    liquidity_raw: int,
    sqrt_price_x96: int,
    sqrt_lower_x96: int,
    sqrt_upper_x96: int,
    *,
    round_up: bool = False,
) -> tuple[int, int]:
    """Raw ``(amount0, amount1)`` of a position, with the contracts' integer rounding.

    ``round_up=False`` is ``LiquidityAmounts.getAmountsForLiquidity`` and what the pool
    pays out on ``burn`` (then ``collect``); ``round_up=True`` is what the pool charges
    on ``mint``. The range is ``[sqrt_lower_x96, sqrt_upper_x96)`` as in the pool: at
    the lower bound the position is all token0, at the upper bound all token1.
    """
    if liquidity_raw < 0:
        raise ValueError(f"liquidity_raw must be >= 0, got {liquidity_raw}")
    lower, upper = sorted((sqrt_lower_x96, sqrt_upper_x96))
    if sqrt_price_x96 <= lower:
        return amount0_for_liquidity(liquidity_raw, lower, upper, round_up=round_up), 0
    if sqrt_price_x96 < upper:
        return (
            amount0_for_liquidity(liquidity_raw, sqrt_price_x96, upper, round_up=round_up),
            amount1_for_liquidity(liquidity_raw, lower, sqrt_price_x96, round_up=round_up),
        )
    return 0, amount1_for_liquidity(liquidity_raw, lower, upper, round_up=round_up)


def liquidity_for_amounts(
    sqrt_price_x96: int, sqrt_lower_x96: int, sqrt_upper_x96: int, amount0: int, amount1: int
) -> int:
    """The liquidity the periphery mints for the desired raw amounts.

    ``LiquidityAmounts.getLiquidityForAmounts``: the largest liquidity neither desired
    amount is short of (rounded down), as ``NonfungiblePositionManager.mint`` computes it.
    """
    lower, upper = sorted((sqrt_lower_x96, sqrt_upper_x96))
    if lower == upper:
        raise ValueError("the range must not be empty")

    def from_amount0(sqrt_a: int, sqrt_b: int) -> int:
        intermediate = mul_div(sqrt_a, sqrt_b, Q96)
        return mul_div(amount0, intermediate, sqrt_b - sqrt_a)

    def from_amount1(sqrt_a: int, sqrt_b: int) -> int:
        return mul_div(amount1, Q96, sqrt_b - sqrt_a)

    if sqrt_price_x96 <= lower:
        liquidity = from_amount0(lower, upper)
    elif sqrt_price_x96 < upper:
        liquidity = min(from_amount0(sqrt_price_x96, upper), from_amount1(lower, sqrt_price_x96))
    else:
        liquidity = from_amount1(lower, upper)
    if liquidity > MAX_UINT128:
        raise ValueError("liquidity does not fit in uint128")
    return liquidity
