"""Uniswap V2 swap math in integers, as a pair contract computes it.

Guarantees:
- :func:`v2_amount_out` is ``UniswapV2Library.getAmountOut``: the 0.3% fee taken on
  the input and the output rounded down, bit for bit;
- :func:`v2_amount_in_for_price` returns an integer input amount whose swap (with that
  fee and rounding) lands the pair's reserve ratio within the resolution of integer
  reserves: a relative error of a few units of ``1/reserve_in + 1/reserve_out`` (the
  nearest of the candidates around the exact root).

Sources: Uniswap V2 whitepaper (Adams et al., 2020) section 3.2.1 (0.3% fee on input,
``amount_out = 997 a r_out / (1000 r_in + 997 a)``); v2-periphery ``UniswapV2Library.sol``.
Prices of a pair (its reserve ratio in human units) are
:meth:`rules.uniswap.prices.TokenPair.price_from_reserves`.
"""

from __future__ import annotations

import math
from fractions import Fraction

#: Uniswap V2 charges 0.3% of the input: 997/1000 of it trades.
V2_FEE_NUMERATOR = 997
V2_FEE_DENOMINATOR = 1000


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
