"""Liquidity-provider position valuation for Uniswap V2 and V3 pools.

Guarantees kept here:
- prices are human prices of the *base* token in the *quote* token; amounts are
  human token amounts (base, quote); values are in quote;
- a V3 position is described by its liquidity ``L`` and the square roots of its
  range bounds exactly as in the Uniswap V3 whitepaper (formulas 6.29 and 6.30,
  :func:`rules.uniswap.amounts_from_liquidity`):
  ``base = L (1/sqrt(p) - 1/sqrt(pb))``, ``quote = L (sqrt(p) - sqrt(pa))`` with
  ``sqrt(p)`` clamped into ``[sqrt(pa), sqrt(pb)]``; a V2 (constant product)
  position is the full range ``pa = 0``, ``pb = inf`` of the same formulas;
- impermanent loss is ``value / hold - 1`` where *hold* keeps the token amounts the
  position held at ``entry_price``; it is computed in a form whose sign is exact in
  floating point, so it is never positive;
- delta is d value / d price (equal to the base amount held) and gamma its
  derivative; at a range edge they are the right-hand derivatives;
- every price function takes a float or a float64 array and returns the same shape;
  a float is computed in plain Python floats (``math.sqrt`` and Python arithmetic,
  the same IEEE 754 operations in the same order as the numpy code, so the same
  bits, ~20x faster on one value), and a result that is not finite is recomputed by
  the numpy code, so even overflows give the old values and warnings;
- :func:`break_even` solves each bound in closed form and walks the few floats to
  where that plain-float test flips (~20 us; a bisection is the fallback);
- a position's raw units (its liquidity as the pool counts it) come from
  :class:`rules.uniswap.TokenPair`, every other Uniswap conversion from
  :mod:`rules.uniswap` too: nothing here restates one.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import overload

import numpy as np
from numpy.typing import NDArray

from rules.types import ValidationError
from rules.uniswap import TokenPair, amounts_from_liquidity

FloatArray = NDArray[np.float64]


# -- human-unit position math (vectorised) ------------------------------------------


def _prices(price: float | FloatArray) -> FloatArray:
    prices = np.asarray(price, dtype=np.float64)
    if not np.all(np.isfinite(prices) & (prices > 0)):
        raise ValueError("prices must be positive and finite")
    return prices


def _scalar_price(price: float) -> float:
    # The scalar twin of _prices: the same check on one value, as a plain float.
    p = float(price)
    if not 0.0 < p < math.inf:
        raise ValueError("prices must be positive and finite")
    return p


def _usable(x: float) -> bool:
    # A scalar result or denominator the plain-float path may keep: finite and not 0.
    # Anything else is recomputed on the numpy path, so that edge cases (overflow,
    # division by zero) give exactly the old values and the old numpy warnings.
    return 0.0 < abs(x) < math.inf


def _clamp(x: float, lo: float, hi: float) -> float:
    # np.clip(x, lo, hi) for a non-NaN x (lo <= hi): the same value.
    return lo if x < lo else (hi if x > hi else x)


def _value_per_liquidity(price: float, sqrt_lower: float, sqrt_upper: float) -> float:
    # The value of L = 1 at a positive finite price, in plain floats (1.0 * x == x).
    base, quote = amounts_from_liquidity(1.0, float(price), sqrt_lower, sqrt_upper)
    return base * float(price) + quote


def _bound(value: float | None, name: str) -> float:
    if value is None:
        return 0.0 if name == "lower" else math.inf
    if math.isnan(value) or value < 0:
        raise ValidationError(f"Position.{name} must be >= 0 or None, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Position:
    """An LP position: price range ``[lower, upper]`` (human price of base in quote).

    ``value`` is the position's value in quote at ``entry_price``; from it the
    liquidity ``L`` is derived. ``lower`` None or 0 and ``upper`` None or inf is the
    full range (a Uniswap V2 position). ``entry_price`` NaN means "not known yet":
    the position can be priced only after :meth:`with_entry_price`.
    """

    lower: float | None
    upper: float | None
    value: float
    entry_price: float = math.nan
    sqrt_lower: float = field(init=False, repr=False, compare=False)
    sqrt_upper: float = field(init=False, repr=False, compare=False)
    liquidity: float = field(init=False, repr=False, compare=False)
    # Derived from the fields above once (NaN while the entry price is unknown): the
    # clamped sqrt of the entry price and the entry amounts that *hold* keeps.
    _sqrt_entry: float = field(init=False, repr=False, compare=False)
    _entry_base: float = field(init=False, repr=False, compare=False)
    _entry_quote: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lower = _bound(self.lower, "lower")
        upper = _bound(self.upper, "upper")
        if not lower < upper:
            raise ValidationError(f"Position needs lower < upper, got [{self.lower}, {self.upper}]")
        if not (self.value > 0 and math.isfinite(self.value)):
            raise ValidationError(f"Position.value must be positive and finite, got {self.value!r}")
        if not (
            math.isnan(self.entry_price)
            or (self.entry_price > 0 and math.isfinite(self.entry_price))
        ):
            raise ValidationError(
                "Position.entry_price must be positive and finite (or NaN: unknown), "
                f"got {self.entry_price!r}"
            )
        sqrt_lower, sqrt_upper = math.sqrt(lower), math.sqrt(upper)
        if not sqrt_lower < sqrt_upper:
            raise ValidationError(
                f"Position range [{lower}, {upper}] is narrower than float resolution"
            )
        object.__setattr__(self, "sqrt_lower", sqrt_lower)
        object.__setattr__(self, "sqrt_upper", sqrt_upper)
        liquidity = sqrt_entry = entry_base = entry_quote = math.nan
        if not math.isnan(self.entry_price):
            liquidity = self.value / _value_per_liquidity(self.entry_price, sqrt_lower, sqrt_upper)
            sqrt_entry = min(max(math.sqrt(self.entry_price), sqrt_lower), sqrt_upper)
            entry_base, entry_quote = amounts_from_liquidity(
                liquidity, float(self.entry_price), sqrt_lower, sqrt_upper
            )
            if not (math.isfinite(entry_base) and math.isfinite(entry_quote)):
                # Overflow: left to entry_amounts' numpy form (and its warnings), as before.
                entry_base = entry_quote = math.nan
        object.__setattr__(self, "liquidity", liquidity)
        object.__setattr__(self, "_sqrt_entry", sqrt_entry)
        object.__setattr__(self, "_entry_base", entry_base)
        object.__setattr__(self, "_entry_quote", entry_quote)

    @classmethod
    def full_range(cls, value: float, entry_price: float = math.nan) -> Position:
        """A constant-product (Uniswap V2) position."""
        return cls(None, None, value, entry_price)

    @property
    def is_full_range(self) -> bool:
        return self.sqrt_lower == 0 and math.isinf(self.sqrt_upper)

    @property
    def has_entry_price(self) -> bool:
        return not math.isnan(self.entry_price)

    def with_entry_price(self, entry_price: float) -> Position:
        """The same range and value, entered at ``entry_price``."""
        return Position(self.lower, self.upper, self.value, entry_price)

    def liquidity_raw(self, pair: TokenPair) -> int:
        """The position's liquidity in the pool's raw units (what ``positions()`` reports)."""
        return pair.liquidity_to_raw(self._liquidity())

    def _liquidity(self) -> float:
        if math.isnan(self.liquidity):
            raise ValueError("Position.entry_price is unknown: use with_entry_price() first")
        return self.liquidity

    @property
    def entry_amounts(self) -> tuple[float, float]:
        """Human ``(base, quote)`` held at ``entry_price``: what *hold* keeps."""
        liquidity = self._liquidity()
        if math.isnan(self._entry_base):  # an overflow: see __post_init__
            base, quote = amounts_from_liquidity(
                liquidity, np.asarray(self.entry_price), self.sqrt_lower, self.sqrt_upper
            )
            return float(base), float(quote)
        return self._entry_base, self._entry_quote

    # Every price method: float in -> float out, array in -> array out. A float (or a
    # numpy float scalar) takes a plain-float path (math.sqrt and Python arithmetic:
    # the same IEEE 754 operations in the same order as the numpy path, so the same
    # bits) that is ~20x cheaper than numpy on one value; results that are not finite
    # and non-zero denominators are recomputed on the numpy path (see _usable).

    @overload
    def in_range(self, price: float) -> bool: ...
    @overload
    def in_range(self, price: FloatArray) -> NDArray[np.bool_]: ...
    def in_range(self, price: float | FloatArray) -> bool | NDArray[np.bool_]:
        """Whether the position earns fees: ``lower <= price < upper``, as in the pool."""
        if isinstance(price, float):
            sqrt_p = math.sqrt(_scalar_price(price))
            return self.sqrt_lower <= sqrt_p < self.sqrt_upper
        sqrt_price = np.sqrt(_prices(price))
        inside = (sqrt_price >= self.sqrt_lower) & (sqrt_price < self.sqrt_upper)
        return bool(inside) if inside.ndim == 0 else inside

    def _amounts_scalar(self, p: float) -> tuple[float, float]:
        # One validated price, in plain floats (sqrt_price > 0: no 1/0).
        return amounts_from_liquidity(self._liquidity(), p, self.sqrt_lower, self.sqrt_upper)

    @overload
    def amounts(self, price: float) -> tuple[float, float]: ...
    @overload
    def amounts(self, price: FloatArray) -> tuple[FloatArray, FloatArray]: ...
    def amounts(
        self, price: float | FloatArray
    ) -> tuple[float, float] | tuple[FloatArray, FloatArray]:
        """Human ``(base, quote)`` token amounts at ``price``."""
        if isinstance(price, float):
            base_s, quote_s = self._amounts_scalar(_scalar_price(price))
            if math.isfinite(base_s) and math.isfinite(quote_s):
                return base_s, quote_s
        prices = _prices(price)
        base, quote = amounts_from_liquidity(
            self._liquidity(), prices, self.sqrt_lower, self.sqrt_upper
        )
        if prices.ndim == 0:
            return float(base), float(quote)
        return base, quote

    @overload
    def value_at(self, price: float) -> float: ...
    @overload
    def value_at(self, price: FloatArray) -> FloatArray: ...
    def value_at(self, price: float | FloatArray) -> float | FloatArray:
        """Position value in quote at ``price``."""
        if isinstance(price, float):
            p = _scalar_price(price)
            base_s, quote_s = self._amounts_scalar(p)
            value = base_s * p + quote_s
            if _usable(value):
                return value
        prices = _prices(price)
        base, quote = amounts_from_liquidity(
            self._liquidity(), prices, self.sqrt_lower, self.sqrt_upper
        )
        return _out(base * prices + quote)

    @overload
    def hold_value(self, price: float) -> float: ...
    @overload
    def hold_value(self, price: FloatArray) -> FloatArray: ...
    def hold_value(self, price: float | FloatArray) -> float | FloatArray:
        """Value in quote at ``price`` of the entry amounts, had they been held."""
        if isinstance(price, float):
            base0, quote0 = self.entry_amounts
            hold = base0 * _scalar_price(price) + quote0
            if _usable(hold):
                return hold
        prices = _prices(price)
        base0, quote0 = self.entry_amounts
        return _out(base0 * prices + quote0)

    def _loss_scalar(self, p: float) -> float | None:
        """``loss_vs_hold`` of one validated price in plain floats; None: use numpy."""
        sqrt_price = math.sqrt(p)
        s = _clamp(sqrt_price, self.sqrt_lower, self.sqrt_upper)
        s0 = self._sqrt_entry
        denominator = s * s0
        if not _usable(denominator):
            return None
        loss = (
            self._liquidity()
            * (s - s0)
            * (s * (s0 - sqrt_price) + sqrt_price * (s - sqrt_price))
            / denominator
        )
        return loss if math.isfinite(loss) else None

    @overload
    def loss_vs_hold(self, price: float) -> float: ...
    @overload
    def loss_vs_hold(self, price: FloatArray) -> FloatArray: ...
    def loss_vs_hold(self, price: float | FloatArray) -> float | FloatArray:
        """``value - hold`` in quote at ``price`` (impermanent loss in quote, always <= 0).

        With s, s0 the clamped sqrt prices now and at entry and q = sqrt(price),
        value - hold = L (s - s0) (s (s0 - q) + q (s - q)) / (s s0). Both terms of the
        second factor have the sign opposite to (s - s0) in every case (in range,
        below, above), so the product is <= 0 exactly, rounding included.
        """
        if isinstance(price, float):
            loss_s = self._loss_scalar(_scalar_price(price))
            if loss_s is not None:
                return loss_s
        prices = _prices(price)
        sqrt_price = np.sqrt(prices)
        s = np.clip(sqrt_price, self.sqrt_lower, self.sqrt_upper)
        s0 = min(max(math.sqrt(self.entry_price), self.sqrt_lower), self.sqrt_upper)
        loss = (
            self._liquidity()
            * (s - s0)
            * (s * (s0 - sqrt_price) + sqrt_price * (s - sqrt_price))
            / (s * s0)
        )
        return _out(loss)

    @overload
    def impermanent_loss(self, price: float) -> float: ...
    @overload
    def impermanent_loss(self, price: FloatArray) -> FloatArray: ...
    def impermanent_loss(self, price: float | FloatArray) -> float | FloatArray:
        """``value / hold - 1`` at ``price`` relative to ``entry_price`` (a fraction, <= 0)."""
        if isinstance(price, float):
            p = _scalar_price(price)
            loss_s = self._loss_scalar(p)
            base0, quote0 = self.entry_amounts
            hold = base0 * p + quote0
            if loss_s is not None and _usable(hold):
                return loss_s / hold
        prices = _prices(price)
        return _out(np.asarray(self.loss_vs_hold(prices)) / np.asarray(self.hold_value(prices)))

    @overload
    def delta(self, price: float) -> float: ...
    @overload
    def delta(self, price: FloatArray) -> FloatArray: ...
    def delta(self, price: float | FloatArray) -> float | FloatArray:
        """d value / d price: the base amount held (base units); 0 above the range."""
        if isinstance(price, float):
            base_s, _ = self._amounts_scalar(_scalar_price(price))
            if math.isfinite(base_s):
                return base_s
        prices = _prices(price)
        base, _ = amounts_from_liquidity(
            self._liquidity(), prices, self.sqrt_lower, self.sqrt_upper
        )
        return _out(base)

    @overload
    def gamma(self, price: float) -> float: ...
    @overload
    def gamma(self, price: FloatArray) -> FloatArray: ...
    def gamma(self, price: float | FloatArray) -> float | FloatArray:
        """d delta / d price: ``-L / (2 p**1.5)`` inside the range, 0 outside."""
        if isinstance(price, float):
            p = _scalar_price(price)
            sqrt_p = math.sqrt(p)
            denominator = 2.0 * p * sqrt_p
            # The numpy path computes the curvature everywhere: keep its warnings too.
            if _usable(denominator):
                curvature_s = -self._liquidity() / denominator
                if math.isfinite(curvature_s):
                    inside_s = self.sqrt_lower <= sqrt_p < self.sqrt_upper
                    return curvature_s if inside_s else 0.0
        prices = _prices(price)
        sqrt_price = np.sqrt(prices)
        inside = (sqrt_price >= self.sqrt_lower) & (sqrt_price < self.sqrt_upper)
        curvature = -self._liquidity() / (2.0 * prices * sqrt_price)
        return _out(np.where(inside, curvature, 0.0))

    def break_even(self, fees: float) -> tuple[float, float]:
        """See :func:`break_even`."""
        return break_even(self, fees)


def _out(result: FloatArray) -> float | FloatArray:
    return float(result) if result.ndim == 0 else result


# -- fees and break-even ------------------------------------------------------------


def fee_share(
    position: Position,
    price: float,
    *,
    pool_liquidity_share: float | None = None,
    tvl: float = math.nan,
) -> float:
    """The position's share of the pool's swap fees at ``price``.

    - out of its range a position earns nothing: 0;
    - ``pool_liquidity_share`` (position L / pool active L, for V3) when given;
    - else position value / ``tvl`` (exact for V2, an underestimate for a
      concentrated V3 position), capped at 1;
    - else (no usable figure) 0, so the break-even is never flattered by a guess.
    """
    if pool_liquidity_share is not None and not 0 <= pool_liquidity_share <= 1:
        raise ValueError(f"pool_liquidity_share must be in [0, 1], got {pool_liquidity_share!r}")
    if not position.in_range(price):
        return 0.0
    if pool_liquidity_share is not None:
        return float(pool_liquidity_share)
    if math.isfinite(tvl) and tvl > 0:
        return min(position.value_at(price) / tvl, 1.0)
    return 0.0


def fees_over_horizon(fee: float, volume_24h: float, horizon_days: float, share: float) -> float:
    """Quote earned over the horizon: ``fee * volume_24h * horizon_days * share``.

    The pool's recent 24h volume is assumed to continue; a NaN volume (not known
    yet) earns nothing.
    """
    if not 0 <= fee < 1:
        raise ValueError(f"fee must be a fraction in [0, 1), got {fee!r}")
    if horizon_days < 0 or not 0 <= share <= 1:
        raise ValueError("horizon_days must be >= 0 and share in [0, 1]")
    if math.isnan(volume_24h):
        return 0.0
    if volume_24h < 0 or math.isinf(volume_24h):
        raise ValueError(f"volume_24h must be >= 0 and finite, got {volume_24h!r}")
    return fee * volume_24h * horizon_days * share


#: Bisection steps; a bracket within a factor 2 shrinks to one float ulp in ~53.
_BISECTION_STEPS = 200
#: Bracket search steps: halving/doubling reaches 0 or inf from any float in < 1100.
_BRACKET_STEPS = 2200


def break_even(position: Position, fees: float) -> tuple[float, float]:
    """The price range ``[lo, hi]`` within which ``fees`` (quote) cover impermanent loss.

    Solves ``loss_vs_hold(p) + fees = 0`` on both sides of ``entry_price``.
    ``value - hold`` is concave in p with its maximum 0 at the entry price (value is
    concave, hold linear, and their slopes agree there), so the set where fees cover
    the loss is one interval around the entry price and each side has at most one root.

    Method: each root has a closed form (below, in and above the range the loss is a
    quadratic in sqrt(p) or linear in p; see :func:`_root_estimate`); from it, a short
    walk of adjacent floats finds where the float test ``loss_vs_hold(p) + fees >= 0``
    changes. Where that walk does not settle within :data:`_POLISH_STEPS` floats (or
    the estimate is not a usable price), the root is bracketed from the entry price by
    halving (below) or doubling (above) and bisected to float resolution. Every loop
    is bounded. Either way each bound is a price where fees still cover the loss and
    the next float outwards is one where they do not. ``lo`` is 0 when fees exceed the
    entry quote amount (the most that can be lost going down); ``hi`` is inf when
    nothing can be lost going up (a position entered above its range holds only quote).
    """
    if not (fees >= 0 and math.isfinite(fees)):
        raise ValueError(f"fees must be >= 0 and finite, got {fees!r}")
    entry = position.entry_price
    if math.isnan(entry):
        raise ValueError("Position.entry_price is unknown: use with_entry_price() first")

    covered = _coverage_test(position, float(fees))
    _, quote0 = position.entry_amounts
    # Going to 0, value -> 0 and hold -> quote0: the loss tends to quote0.
    lo: float | None = 0.0
    if fees < quote0:
        lo = _polish(covered, _root_estimate(position, float(fees), up=False), up=False)
    if lo is None:
        lo = _bisect_bracket(covered, float(entry), step=0.5)
    hi_estimate = _root_estimate(position, float(fees), up=True)
    hi = math.inf if hi_estimate == math.inf else _polish(covered, hi_estimate, up=True)
    if hi is None:
        hi = _bisect_bracket(covered, float(entry), step=2.0)
    return lo, hi


#: Floats walked from a closed-form root to where the float test changes (the
#: estimate is a few ulps off; rounding noise in the test can widen that a little).
_POLISH_STEPS = 64


def _root_estimate(position: Position, fees: float, *, up: bool) -> float:
    """The price above (``up``) or below the entry where ``loss_vs_hold + fees = 0``,
    in closed form; NaN when it cannot be formed in floats, inf when nothing is lost.

    With L the liquidity, s0 the clamped sqrt entry price and [a, b] the sqrt range:
    in range the loss is ``-L (q - s0)^2 / s0`` (q = sqrt p), so q = s0 +- sqrt(F s0 / L);
    above the range it is ``-L (b - s0)(p - b s0) / (b s0)``, so p = b s0 (1 + F / (L (b - s0)));
    below, ``-L (s0 - a)(a s0 - p) / (a s0)``, so p = a s0 (1 - F / (L (s0 - a))).
    """
    liquidity, s0 = position.liquidity, position._sqrt_entry
    a, b = position.sqrt_lower, position.sqrt_upper
    # plain float arithmetic: an overflow gives inf and a degenerate case NaN or 0, which
    # _polish turns down (the bisection then answers)
    if up:
        if b == s0:
            return math.inf  # entered at or above the range: only quote is held
        q = s0 + math.sqrt(fees * s0 / liquidity)
        if q <= b:
            return q * q
        return b * s0 * (1.0 + fees / (liquidity * (b - s0)))
    if a == s0:
        return 0.0  # entered at or below the range: falling loses nothing more
    q = s0 - math.sqrt(fees * s0 / liquidity)
    if q >= a:
        return q * q
    return a * s0 * (1.0 - fees / (liquidity * (s0 - a)))


def _polish(covered: Callable[[float], bool], estimate: float, *, up: bool) -> float | None:
    """The float near ``estimate`` where fees still cover the loss and the next float
    outwards (up or down) is one where they do not; None if not found within
    :data:`_POLISH_STEPS` floats or ``estimate`` is not a positive finite price."""
    if not 0.0 < estimate < math.inf:  # also NaN
        return None
    outward = math.inf if up else 0.0
    inward = 0.0 if up else math.inf
    price = estimate
    if covered(price):
        for _ in range(_POLISH_STEPS):
            beyond = math.nextafter(price, outward)
            if not 0.0 < beyond < math.inf:
                return None
            if not covered(beyond):
                return price
            price = beyond
        return None
    for _ in range(_POLISH_STEPS):
        price = math.nextafter(price, inward)
        if not 0.0 < price < math.inf:
            return None
        if covered(price):
            return price
    return None


def _coverage_test(position: Position, fees: float) -> Callable[[float], bool]:
    """``price -> position.loss_vs_hold(price) + fees >= 0``, for the root search.

    The body is :meth:`Position.loss_vs_hold`'s plain-float path with the position's
    constants bound once; a price or a result that path would not keep goes to the
    method itself, so every answer is the method's, bit for bit.
    """
    liquidity = position.liquidity
    sqrt_lower, sqrt_upper, s0 = position.sqrt_lower, position.sqrt_upper, position._sqrt_entry
    sqrt, isfinite, inf = math.sqrt, math.isfinite, math.inf

    def covered(price: float) -> bool:
        if 0.0 < price < inf:
            q = sqrt(price)
            s = sqrt_lower if q < sqrt_lower else (sqrt_upper if q > sqrt_upper else q)
            denominator = s * s0
            if 0.0 < denominator < inf:
                loss = liquidity * (s - s0) * (s * (s0 - q) + q * (s - q)) / denominator
                if isfinite(loss):
                    return loss + fees >= 0
        return position.loss_vs_hold(price) + fees >= 0

    return covered


def _bisect_bracket(covered: Callable[[float], bool], entry: float, *, step: float) -> float:
    # The fallback of break_even: bracket by halving/doubling from the entry, bisect.
    inner = entry
    outer = entry
    for _ in range(_BRACKET_STEPS):
        candidate = outer * step
        if candidate == 0:
            return 0.0
        if math.isinf(candidate):
            return math.inf
        if not covered(candidate):
            outer = candidate
            break
        inner = candidate
        outer = candidate
    else:
        return 0.0 if step < 1 else math.inf
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (inner + outer)
        if middle in (inner, outer):
            break
        if covered(middle):
            inner = middle
        else:
            outer = middle
    return inner
