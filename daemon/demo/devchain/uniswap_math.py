"""Pure Uniswap price and amount arithmetic used by the dev chain harness.

Guarantees:
- no I/O and no clock: every function is a function of its arguments;
- prices given and returned here are *human* prices of ``base`` in ``quote`` units;
  on chain, Uniswap stores the raw price of token1 in token0 (``token0`` is the
  token with the lower address), so each function takes ``base_is_token0`` and the
  two decimals and does the inversion and the ``10**decimals`` scaling itself;
- ``sqrt_price_x96_from_price`` is exact: the floor of ``sqrt(raw_price) * 2**96``
  computed with integers from the exact binary value of the float price;
- ``v2_amount_in_for_price`` returns an integer input amount whose swap (with the
  0.3% fee and Uniswap V2's integer rounding) lands the pair's reserve ratio within
  the resolution of integer reserves: a relative error of a few units of
  ``1/reserve_in + 1/reserve_out`` (the nearest of the candidates around the root).

Formulas: Uniswap V3 whitepaper (Adams et al., 2021) section 6 (price = 1.0001**tick,
sqrt price in Q64.96, amounts of a position from its liquidity, eqs. 6.29-6.30);
Uniswap V2 whitepaper (Adams et al., 2020) section 3.2.1 (0.3% fee on input,
``amount_out = 997 a r_out / (1000 r_in + 997 a)``).
"""

from __future__ import annotations

import math
from fractions import Fraction

#: Bounds of Uniswap V3 ticks and of sqrt prices (TickMath.MIN_TICK/MAX_TICK and the
#: sqrt ratios at those ticks, as published in the V3 core contracts).
MIN_TICK = -887272
MAX_TICK = 887272
MIN_SQRT_RATIO = 4295128739
MAX_SQRT_RATIO = 1461446703485210103287273052203988822378723970342
Q96 = 1 << 96

#: Uniswap V2 charges 0.3% of the input: 997/1000 of it trades.
V2_FEE_NUMERATOR = 997
V2_FEE_DENOMINATOR = 1000

_LOG_TICK_BASE = math.log(1.0001)


def _check_price(price: float) -> None:
    if not (math.isfinite(price) and price > 0):
        raise ValueError(f"price must be a finite positive number, got {price!r}")


def raw_price(price: float, *, base_is_token0: bool, decimals0: int, decimals1: int) -> Fraction:
    """Exact raw price (token1 base units per token0 base unit) of a human ``price``."""
    _check_price(price)
    token0_in_token1 = Fraction(price) if base_is_token0 else 1 / Fraction(price)
    return token0_in_token1 * Fraction(10) ** (decimals1 - decimals0)


def human_price(
    raw: Fraction | float, *, base_is_token0: bool, decimals0: int, decimals1: int
) -> float:
    """Human price of base in quote from a raw token1-per-token0 price."""
    token0_in_token1 = Fraction(raw) * Fraction(10) ** (decimals0 - decimals1)
    if token0_in_token1 <= 0:
        raise ValueError(f"raw price must be positive, got {raw!r}")
    return float(token0_in_token1 if base_is_token0 else 1 / token0_in_token1)


def sqrt_price_x96_from_price(
    price: float, *, base_is_token0: bool, decimals0: int, decimals1: int
) -> int:
    """``floor(sqrt(raw_price) * 2**96)``; raises if outside Uniswap's sqrt price range."""
    raw = raw_price(price, base_is_token0=base_is_token0, decimals0=decimals0, decimals1=decimals1)
    scaled = raw * (1 << 192)
    sqrt_price_x96 = math.isqrt(scaled.numerator // scaled.denominator)
    if not MIN_SQRT_RATIO <= sqrt_price_x96 < MAX_SQRT_RATIO:
        raise ValueError(f"price {price!r} is outside the range a Uniswap V3 pool can hold")
    return sqrt_price_x96


def price_from_sqrt_price_x96(
    sqrt_price_x96: int, *, base_is_token0: bool, decimals0: int, decimals1: int
) -> float:
    """Human price of base in quote from a pool's ``sqrtPriceX96``."""
    if sqrt_price_x96 <= 0:
        raise ValueError(f"sqrt_price_x96 must be positive, got {sqrt_price_x96}")
    raw = Fraction(sqrt_price_x96 * sqrt_price_x96, 1 << 192)
    return human_price(raw, base_is_token0=base_is_token0, decimals0=decimals0, decimals1=decimals1)


def tick_from_price(price: float, *, base_is_token0: bool, decimals0: int, decimals1: int) -> int:
    """``floor(log_1.0001(raw_price))``.

    Float logarithms can put a price that sits within about 1e-10 of a tick
    boundary on the neighbouring tick; the pool's own ``slot0.tick`` is the
    authority, this is for choosing position bounds.
    """
    raw = raw_price(price, base_is_token0=base_is_token0, decimals0=decimals0, decimals1=decimals1)
    return math.floor(math.log(raw) / _LOG_TICK_BASE)


def price_from_tick(tick: int, *, base_is_token0: bool, decimals0: int, decimals1: int) -> float:
    """Human price of base in quote at the lower edge of ``tick``."""
    return human_price(
        Fraction(math.exp(tick * _LOG_TICK_BASE)),
        base_is_token0=base_is_token0,
        decimals0=decimals0,
        decimals1=decimals1,
    )


def full_range_ticks(tick_spacing: int) -> tuple[int, int]:
    """The widest ``(tick_lower, tick_upper)`` a position can use with ``tick_spacing``."""
    if tick_spacing <= 0:
        raise ValueError(f"tick_spacing must be positive, got {tick_spacing}")
    lower = -(-MIN_TICK // tick_spacing) * tick_spacing  # MIN_TICK rounded towards zero
    upper = (MAX_TICK // tick_spacing) * tick_spacing
    return lower, upper


def range_ticks(
    price_lower: float,
    price_upper: float,
    *,
    base_is_token0: bool,
    decimals0: int,
    decimals1: int,
    tick_spacing: int,
) -> tuple[int, int]:
    """Spacing-aligned ticks of a position covering at least ``[price_lower, price_upper]``.

    Human bounds are of base in quote; when base is token1 a higher human price is
    a lower raw price, so the bounds swap. The range is widened outwards to the
    tick spacing and clamped to the usable full range.
    """
    if not price_lower < price_upper:
        raise ValueError(f"price_lower {price_lower!r} must be below price_upper {price_upper!r}")
    ticks = sorted(
        tick_from_price(p, base_is_token0=base_is_token0, decimals0=decimals0, decimals1=decimals1)
        for p in (price_lower, price_upper)
    )
    lower = (ticks[0] // tick_spacing) * tick_spacing
    upper = -(-ticks[1] // tick_spacing) * tick_spacing
    if upper == lower:
        upper += tick_spacing
    full_lower, full_upper = full_range_ticks(tick_spacing)
    return max(lower, full_lower), min(upper, full_upper)


def sqrt_ratio_at_tick(tick: int) -> float:
    """``sqrt(1.0001**tick)`` as a float (not Q96): good to about 1e-15 relative."""
    return math.exp(tick * _LOG_TICK_BASE / 2)


def amounts_per_liquidity(
    sqrt_price: float, sqrt_lower: float, sqrt_upper: float
) -> tuple[float, float]:
    """Raw token0 and token1 held by one unit of liquidity (whitepaper eqs. 6.29-6.30).

    All three arguments are plain sqrt prices (raw token1 per token0), not Q96.
    """
    if not 0 < sqrt_lower < sqrt_upper:
        raise ValueError("need 0 < sqrt_lower < sqrt_upper")
    if sqrt_price <= sqrt_lower:
        return 1 / sqrt_lower - 1 / sqrt_upper, 0.0
    if sqrt_price >= sqrt_upper:
        return 0.0, sqrt_upper - sqrt_lower
    return 1 / sqrt_price - 1 / sqrt_upper, sqrt_price - sqrt_lower


def v2_amount_out(amount_in: int, reserve_in: int, reserve_out: int) -> int:
    """What a Uniswap V2 pair pays out for ``amount_in`` (its own integer formula)."""
    if amount_in <= 0 or reserve_in <= 0 or reserve_out <= 0:
        raise ValueError("amount_in and both reserves must be positive")
    amount_in_with_fee = amount_in * V2_FEE_NUMERATOR
    return (amount_in_with_fee * reserve_out) // (
        reserve_in * V2_FEE_DENOMINATOR + amount_in_with_fee
    )


def v2_amount_in_for_price(reserve_in: int, reserve_out: int, target: Fraction) -> int:
    """Input amount that moves a V2 pair's ``reserve_out / reserve_in`` down to ``target``.

    With ``a`` in and ``out = 997 a r_out / (1000 r_in + 997 a)`` paid out, the new
    ratio is ``1000 r_in r_out / ((1000 r_in + 997 a)(r_in + a))``. Setting it to the
    target gives ``997 a**2 + 1997 r_in a + 1000 r_in**2 - 1000 r_in r_out / target = 0``
    whose discriminant simplifies to ``9 r_in**2 + 3988000 r_in r_out / target``.
    The integers around the positive root are tried with the pair's exact integer
    payout and the one landing nearest the target wins.
    """
    if reserve_in <= 0 or reserve_out <= 0:
        raise ValueError("both reserves must be positive")
    if not 0 < target < Fraction(reserve_out, reserve_in):
        raise ValueError("target must be positive and below the current reserve ratio")
    f, d = V2_FEE_NUMERATOR, V2_FEE_DENOMINATOR
    disc = (f + d) ** 2 * reserve_in**2 - 4 * f * (
        d * reserve_in**2 - d * reserve_in * reserve_out / target
    )
    # sqrt of a rational to ~2**-64 absolute precision, in integers.
    scale = 1 << 64
    scaled = disc * scale * scale
    sqrt_disc = Fraction(math.isqrt(scaled.numerator // scaled.denominator), scale)
    estimate = math.floor((sqrt_disc - (f + d) * reserve_in) / (2 * f))

    def miss(amount: int) -> Fraction:
        out = v2_amount_out(amount, reserve_in, reserve_out)
        return abs(Fraction(reserve_out - out, reserve_in + amount) - target)

    candidates = [a for a in range(estimate - 1, estimate + 3) if a > 0]
    if not candidates:
        raise ValueError("target is too close to the current price for a one-unit swap")
    return min(candidates, key=miss)
