"""Black-Scholes(-Merton) prices and greeks of European calls and puts.

Guarantees kept here:
- the normal CDF is ``erfc``-based (accurate in both tails), no scipy;
- ``r`` is the continuously compounded risk-free rate and ``q`` the continuous
  yield of the underlying (both annual, default 0); ``years`` is time to expiry
  in years (365-day years where callers convert from seconds);
- units of the greeks: ``delta`` per unit of spot, ``gamma`` per unit of spot
  squared, ``vega`` per 1.00 of volatility (not per percentage point), ``theta``
  the value change per year of calendar time passing (usually negative for a
  long option; divide by 365 for a daily figure);
- call and put come from their own formulas, and satisfy put-call parity
  ``C - P = S e^{-qT} - K e^{-rT}`` to rounding;
- at expiry or zero volatility the option is worth its discounted forward
  intrinsic value, with the limiting delta (half at the money), and zero gamma
  and vega.

Formulas: Black & Scholes (1973), Merton (1973); Hull, *Options, Futures, and Other
Derivatives*, chapters 15, 17 and 19.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

OptionKind = Literal["call", "put"]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def norm_cdf(x: float) -> float:
    """Standard normal CDF via ``erfc`` (no cancellation in the lower tail)."""
    return 0.5 * math.erfc(-x / _SQRT2)


def norm_pdf(x: float) -> float:
    """Standard normal density."""
    return _INV_SQRT_2PI * math.exp(-0.5 * x * x)


@dataclass(frozen=True, slots=True)
class OptionValue:
    """Price and greeks of one option on one unit of the underlying (units: module doc)."""

    price: float
    delta: float
    gamma: float
    vega: float
    theta: float


def _check(name: str, value: float, *, positive: bool) -> None:
    ok = value > 0 if positive else value >= 0
    if not (ok and math.isfinite(value)):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be {bound} and finite, got {value!r}")


def black_scholes(
    kind: OptionKind,
    spot: float,
    strike: float,
    years: float,
    sigma: float,
    *,
    r: float = 0.0,
    q: float = 0.0,
) -> OptionValue:
    """Price, delta, gamma, vega and theta of a European ``kind`` option."""
    if kind not in ("call", "put"):
        raise ValueError(f"kind must be 'call' or 'put', got {kind!r}")
    _check("spot", spot, positive=True)
    _check("strike", strike, positive=True)
    _check("years", years, positive=False)
    _check("sigma", sigma, positive=False)
    if not (math.isfinite(r) and math.isfinite(q)):
        raise ValueError("r and q must be finite")

    carry_discount = math.exp(-q * years)
    rate_discount = math.exp(-r * years)
    spot_pv = spot * carry_discount
    strike_pv = strike * rate_discount
    vol_sqrt_t = sigma * math.sqrt(years)

    if vol_sqrt_t == 0:
        return _degenerate(kind, spot_pv, strike_pv, carry_discount, r=r, q=q)

    d1 = (math.log(spot / strike) + (r - q + 0.5 * sigma * sigma) * years) / vol_sqrt_t
    d2 = d1 - vol_sqrt_t
    density = norm_pdf(d1)
    gamma = carry_discount * density / (spot * vol_sqrt_t)
    vega = spot_pv * density * math.sqrt(years)
    decay = -spot_pv * density * sigma / (2.0 * math.sqrt(years))
    if kind == "call":
        n_d1, n_d2 = norm_cdf(d1), norm_cdf(d2)
        return OptionValue(
            price=spot_pv * n_d1 - strike_pv * n_d2,
            delta=carry_discount * n_d1,
            gamma=gamma,
            vega=vega,
            theta=decay - r * strike_pv * n_d2 + q * spot_pv * n_d1,
        )
    n_minus_d1, n_minus_d2 = norm_cdf(-d1), norm_cdf(-d2)
    return OptionValue(
        price=strike_pv * n_minus_d2 - spot_pv * n_minus_d1,
        delta=-carry_discount * n_minus_d1,
        gamma=gamma,
        vega=vega,
        theta=decay + r * strike_pv * n_minus_d2 - q * spot_pv * n_minus_d1,
    )


def _degenerate(
    kind: OptionKind, spot_pv: float, strike_pv: float, carry_discount: float, *, r: float, q: float
) -> OptionValue:
    # sigma * sqrt(T) == 0: the payoff is known, discounted forward intrinsic value.
    # d1 -> +inf / -inf / 0 as the forward is above / below / at the strike, hence the
    # limiting delta; theta is the drift of the discounted intrinsic value.
    moneyness = spot_pv - strike_pv if kind == "call" else strike_pv - spot_pv
    sign = 1.0 if kind == "call" else -1.0
    if moneyness > 0:
        return OptionValue(
            price=moneyness,
            delta=sign * carry_discount,
            gamma=0.0,
            vega=0.0,
            theta=sign * (q * spot_pv - r * strike_pv),
        )
    weight = 0.5 if moneyness == 0 else 0.0
    return OptionValue(
        price=0.0, delta=sign * weight * carry_discount, gamma=0.0, vega=0.0, theta=0.0
    )
