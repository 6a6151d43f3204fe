"""Uniswap V3 tick math in integers, as the contracts compute it.

Guarantees: :func:`sqrt_ratio_at_tick` returns exactly what ``TickMath.getSqrtRatioAtTick``
returns (Q64.96, rounded up), and :func:`tick_at_sqrt_ratio` the greatest tick whose
sqrt ratio is <= the input, which is ``TickMath.getTickAtSqrtRatio``'s definition.
Both are checked against Uniswap's own test snapshot (``tests/test_v3math.py``).
"""

from __future__ import annotations

from decimal import Decimal, localcontext

Q96 = 1 << 96
Q128 = 1 << 128
MIN_TICK = -887272
MAX_TICK = 887272
MIN_SQRT_RATIO = 4295128739
MAX_SQRT_RATIO = 1461446703485210103287273052203988822378723970342
_UINT256_MAX = (1 << 256) - 1


def _factors() -> tuple[int, ...]:
    # 2**128 / sqrt(1.0001) ** (2**i), rounded to nearest: the Q128.128 factors the
    # contract multiplies together bit by bit of |tick| (computed, not copied).
    with localcontext() as ctx:
        ctx.prec = 120
        root = Decimal("1.0001").sqrt()
        return tuple(int((Decimal(Q128) / root ** (1 << i)).to_integral_value()) for i in range(20))


_FACTORS = _factors()


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
    lo, hi = MIN_TICK, MAX_TICK
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sqrt_ratio_at_tick(mid) <= sqrt_price_x96:
            lo = mid
        else:
            hi = mid - 1
    return lo


def sqrt_price_x96_from_price(price_token1_per_token0_raw: float) -> int:
    """A raw price (token1 units per token0 unit) -> the nearest Q64.96 sqrt price."""
    if not price_token1_per_token0_raw > 0:
        raise ValueError("price must be positive")
    with localcontext() as ctx:
        ctx.prec = 80
        return int((Decimal(price_token1_per_token0_raw).sqrt() * Q96).to_integral_value())
