"""A pool's raw token0/token1 units against alvh's human base/quote view, exactly.

Guarantees:
- a pool's raw price is token1 base units per token0 base unit (``token0`` is the
  token with the lower address); a *human* price is the price of one base token in
  quote tokens, in whole-token units, and :class:`TokenPair` does the inversion (when
  the quote is token0) and the ``10**decimals`` scaling;
- every conversion is exact up to its one final rounding: human prices are computed
  from integers or fractions and rounded once to the nearest float (CPython's int /
  int true division is correctly rounded), so :meth:`TokenPair.price_from_sqrt_price_x96`
  of the same ``slot0`` gives the same float everywhere, and costs about as much as
  the float formula it replaces;
- :meth:`TokenPair.sqrt_price_x96` is ``floor(sqrt(raw price) * 2**96)`` computed in
  integers from the float's exact binary value, and refuses a price no pool can hold;
- :meth:`TokenPair.tick` is the tick the pool reports in ``slot0`` at that sqrt price
  (``TickMath.getTickAtSqrtRatio``), :meth:`TokenPair.price_at_tick` the price at the
  tick's exact sqrt ratio; tick ranges come from :mod:`rules.uniswap.v3`.

Sources: Uniswap V3 whitepaper (Adams et al., 2021) section 6.1-6.2 (``p = y / x``,
``sqrtPriceX96``); the float forms of the same conversions for whole tables are in
:mod:`rules.uniswap.floats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from fractions import Fraction

from rules.types import ValidationError
from rules.uniswap.v3 import (
    MAX_SQRT_RATIO,
    MIN_SQRT_RATIO,
    sqrt_ratio_at_tick,
    tick_at_sqrt_ratio,
    widen_to_spacing,
)

_Q192 = 1 << 192


def _check_price(price: float) -> None:
    if not (price > 0 and math.isfinite(price)):
        raise ValueError(f"price must be positive and finite, got {price!r}")


@dataclass(frozen=True, slots=True)
class TokenPair:
    """How a pool's raw token0/token1 map onto alvh's human base/quote view.

    ``quote_is_token0`` says which token prices are expressed in (config ``quote``):
    with USDC (6 decimals) as token0 and quote and WETH (18) as token1 and base,
    ``TokenPair(6, 18, quote_is_token0=True)``.
    """

    decimals0: int
    decimals1: int
    quote_is_token0: bool
    # Human token1 per token0 = raw * 10**(decimals0 - decimals1): the power of ten goes
    # on the side that keeps both integers (derived once; the other factor is 1).
    _scale1: int = field(init=False, repr=False, compare=False)
    _scale0: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, decimals in (("decimals0", self.decimals0), ("decimals1", self.decimals1)):
            if (
                isinstance(decimals, bool)
                or not isinstance(decimals, int)
                or not 0 <= decimals <= 77
            ):
                raise ValidationError(f"TokenPair.{name} must be in [0, 77], got {decimals!r}")
        shift = self.decimals0 - self.decimals1
        object.__setattr__(self, "_scale1", 10 ** max(shift, 0))
        object.__setattr__(self, "_scale0", 10 ** max(-shift, 0))

    @classmethod
    def of(cls, *, base_is_token0: bool, decimals0: int, decimals1: int) -> TokenPair:
        """The pair seen from the base token's side (the dev chain's handles)."""
        return cls(decimals0, decimals1, quote_is_token0=not base_is_token0)

    # -- prices ---------------------------------------------------------------------------

    def _human(self, token1_raw: int, token0_raw: int) -> float:
        """Human price of a raw ratio ``token1_raw / token0_raw``, rounded once."""
        token1 = token1_raw * self._scale1
        token0 = token0_raw * self._scale0
        return token0 / token1 if self.quote_is_token0 else token1 / token0

    def raw_price(self, price: float) -> Fraction:
        """Pool raw price (token1 raw per token0 raw) for a human price, exactly."""
        _check_price(price)
        human = Fraction(price)
        token1_per_token0 = 1 / human if self.quote_is_token0 else human
        return token1_per_token0 * Fraction(10) ** (self.decimals1 - self.decimals0)

    def human_price(self, raw_price: Fraction) -> float:
        """Human price (quote per base) for a pool raw price, correctly rounded."""
        if raw_price <= 0:
            raise ValueError(f"raw price must be positive, got {raw_price!r}")
        return self._human(raw_price.numerator, raw_price.denominator)

    def price_from_reserves(self, reserve0: int, reserve1: int) -> float:
        """Human price implied by raw token amounts: V2 reserves, or a swap's two legs."""
        if reserve0 <= 0 or reserve1 <= 0:
            raise ValueError(f"reserves must be positive, got {reserve0}, {reserve1}")
        return self._human(reserve1, reserve0)

    def sqrt_price_x96(self, price: float) -> int:
        """``floor(sqrt(raw price) * 2**96)`` for a human price, exactly.

        Raises ValueError for a price outside what a V3 pool can hold
        (``[MIN_SQRT_RATIO, MAX_SQRT_RATIO)``).
        """
        raw = self.raw_price(price) * _Q192
        sqrt_price_x96 = math.isqrt(raw.numerator // raw.denominator)
        if not MIN_SQRT_RATIO <= sqrt_price_x96 < MAX_SQRT_RATIO:
            raise ValueError(f"price {price!r} is outside the range a Uniswap V3 pool can hold")
        return sqrt_price_x96

    def price_from_sqrt_price_x96(self, sqrt_price_x96: int) -> float:
        """Human price for a pool ``sqrtPriceX96`` (``slot0``, a Swap log), correctly rounded."""
        if sqrt_price_x96 <= 0:
            raise ValueError(f"sqrt_price_x96 must be positive, got {sqrt_price_x96}")
        return self._human(sqrt_price_x96 * sqrt_price_x96, _Q192)

    # -- ticks ----------------------------------------------------------------------------

    def price_at_tick(self, tick: int) -> float:
        """Human price at a tick's exact sqrt ratio (``TickMath.getSqrtRatioAtTick``)."""
        return self.price_from_sqrt_price_x96(sqrt_ratio_at_tick(tick))

    def tick(self, price: float) -> int:
        """The pool tick a human price falls in (the pool's ``slot0.tick`` at that price)."""
        return tick_at_sqrt_ratio(self.sqrt_price_x96(price))

    def range_from_ticks(self, tick_lower: int, tick_upper: int) -> tuple[float, float]:
        """Human ``(lower, upper)`` price range of a pool tick range.

        When the quote is token0 the human price is the inverse of the pool price, so
        the pool's upper tick gives the human lower bound.
        """
        if tick_lower >= tick_upper:
            raise ValueError(f"tick_lower must be < tick_upper, got {tick_lower} >= {tick_upper}")
        a, b = self.price_at_tick(tick_lower), self.price_at_tick(tick_upper)
        return (min(a, b), max(a, b))

    def range_ticks(
        self, price_lower: float, price_upper: float, tick_spacing: int
    ) -> tuple[int, int]:
        """Spacing-aligned ``(tick_lower, tick_upper)`` covering ``[price_lower, price_upper]``.

        The inverse of :meth:`range_from_ticks`, which gives back a range holding both
        prices (unless clamped to the usable full range): when the quote is token0 a
        higher human price is a lower pool tick, so the bounds swap; the lower raw
        bound's tick is at or below it and the upper raw bound gets the tick above its
        own; the range is then widened outwards to the spacing
        (:func:`rules.uniswap.v3.widen_to_spacing`).
        """
        if not price_lower < price_upper:
            raise ValueError(
                f"price_lower {price_lower!r} must be below price_upper {price_upper!r}"
            )
        low, high = sorted(self.sqrt_price_x96(p) for p in (price_lower, price_upper))
        return widen_to_spacing(tick_at_sqrt_ratio(low), tick_at_sqrt_ratio(high) + 1, tick_spacing)

    # -- liquidity and amounts -------------------------------------------------------------

    def _liquidity_scale(self) -> Decimal:
        # Human L -> raw L: base = L (1/sqrt p - ...) and quote = L (sqrt p - ...) with
        # raw amounts 10**d times the human ones and sqrt(raw p) = sqrt(p) 10**((d1-d0)/2)
        # (or its inverse), so raw L = L * 10**((d0 + d1) / 2) in both orientations.
        return Decimal(10) ** (self.decimals0 + self.decimals1)

    def liquidity_to_raw(self, liquidity: float) -> int:
        """Raw uint128 liquidity (rounded down) for a human liquidity ``L``."""
        if not (liquidity >= 0 and math.isfinite(liquidity)):
            raise ValueError(f"liquidity must be >= 0 and finite, got {liquidity!r}")
        with localcontext() as ctx:
            ctx.prec = 100
            raw = (Decimal(liquidity) ** 2 * self._liquidity_scale()).sqrt()
            return int(raw.to_integral_value(rounding="ROUND_FLOOR"))

    def liquidity_from_raw(self, liquidity_raw: int) -> float:
        """Human liquidity ``L`` for a raw pool or position liquidity."""
        if liquidity_raw < 0:
            raise ValueError(f"liquidity_raw must be >= 0, got {liquidity_raw}")
        with localcontext() as ctx:
            ctx.prec = 100
            return float(Decimal(liquidity_raw) / self._liquidity_scale().sqrt())

    def amounts_to_human(self, amount0_raw: int, amount1_raw: int) -> tuple[float, float]:
        """Raw token0/token1 amounts as human ``(base, quote)`` amounts, correctly rounded."""
        human0 = amount0_raw / 10**self.decimals0
        human1 = amount1_raw / 10**self.decimals1
        return (human1, human0) if self.quote_is_token0 else (human0, human1)

    def value_in_quote(self, amount0_raw: int, amount1_raw: int, price: float) -> float:
        """Raw token0/token1 amounts valued in quote at ``price`` (quote per base)."""
        base, quote = self.amounts_to_human(amount0_raw, amount1_raw)
        return base * price + quote
