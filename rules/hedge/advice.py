"""Layer hedge recommendations: protective puts and collars sized on the LP's delta.

Guarantees kept here:
- :func:`recommend` is pure: the time is the ``now`` argument, every market input
  is an argument, the same inputs give the same :class:`HedgeAdvice`;
- the volatility used is the larger of realized vol and Lambert IV, ignoring
  missing (NaN, non-positive) figures; with neither it falls back to
  :data:`FALLBACK_VOLATILITY` and says so (``volatility_source == "fallback"``);
- strikes sit ``strike_sigma`` (``call_sigma``) standard deviations of log price
  over the expiry away from the price: ``price * exp(k * vol * sqrt(T))``;
- the notional (base units) is ``coverage`` times the position's delta, the base
  amount it holds; a V3 position out of range above holds no base, so its hedge
  has notional 0 and costs nothing, while strikes and IL figures are still given;
- without a configured position the advice is for a full-range position worth 1
  quote unit entered at the current price, labelled ``notional_position``;
- a collar is a long put and a short call on the same notional: its premium is the
  put's minus the call's, and ``spread`` (a bid/ask allowance) is paid on what is
  bought and given up on what is sold;
- :meth:`HedgeAdvice.to_payload` is JSON-safe (no NaN or infinity: an unbounded
  break-even side is ``null``).

Time to expiry uses 365-day years; ``theta_daily`` is the hedge's theta / 365.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rules.durations import iso_utc
from rules.hedge.lp import Position, fee_share, fees_over_horizon
from rules.hedge.options import black_scholes
from rules.types import ValidationError

__all__ = [
    "FALLBACK_VOLATILITY",
    "INSTRUMENTS",
    "SECONDS_PER_YEAR",
    "HedgeAdvice",
    "HedgeSpec",
    "Position",
    "choose_volatility",
    "recommend",
]

INSTRUMENTS = ("put", "collar")
SECONDS_PER_DAY = 86_400
SECONDS_PER_YEAR = 365 * SECONDS_PER_DAY
#: Annualised volatility assumed when neither realized vol nor IV is known: high on
#: purpose (crypto majors run 0.5-1.0), so a missing figure never makes a hedge look cheap.
FALLBACK_VOLATILITY = 0.8


@dataclass(frozen=True, slots=True)
class HedgeSpec:
    """A layer's ``hedge`` table from the config.

    ``strike_sigma`` (<= 0) places the put strike, ``call_sigma`` (collars only,
    > ``strike_sigma``) the call strike; ``coverage`` in (0, 1] is the share of the
    position's delta to hedge; ``expiry`` is the option's life in seconds; ``spread``
    in [0, 1) is added to bought premiums and taken off sold ones.
    """

    instrument: str
    strike_sigma: float
    coverage: float
    expiry: int
    call_sigma: float | None = None
    spread: float = 0.0

    def __post_init__(self) -> None:
        if self.instrument not in INSTRUMENTS:
            raise ValidationError(
                f"hedge.instrument must be one of {', '.join(INSTRUMENTS)}, got {self.instrument!r}"
            )
        if not math.isfinite(self.strike_sigma) or self.strike_sigma > 0:
            raise ValidationError(
                "hedge.strike_sigma must be <= 0 (a protective put's strike sits below the "
                f"price), got {self.strike_sigma!r}"
            )
        if not (0 < self.coverage <= 1):
            raise ValidationError(f"hedge.coverage must be in (0, 1], got {self.coverage!r}")
        if isinstance(self.expiry, bool) or not isinstance(self.expiry, int) or self.expiry <= 0:
            raise ValidationError(
                f"hedge.expiry must be a positive number of seconds, got {self.expiry!r}"
            )
        if not (0 <= self.spread < 1):
            raise ValidationError(f"hedge.spread must be in [0, 1), got {self.spread!r}")
        if self.instrument == "collar":
            if self.call_sigma is None:
                raise ValidationError("hedge.call_sigma is required for a collar")
            if not (math.isfinite(self.call_sigma) and self.call_sigma > self.strike_sigma):
                raise ValidationError(
                    f"hedge.call_sigma must be above strike_sigma ({self.strike_sigma}), "
                    f"got {self.call_sigma!r}"
                )
        elif self.call_sigma is not None:
            raise ValidationError("hedge.call_sigma only applies to a collar")


@dataclass(frozen=True, slots=True)
class HedgeAdvice:
    """A concrete hedge for one layer transition (all money in quote, totals not per unit).

    ``expiry`` is unix seconds; ``notional`` is in base units; ``il_now`` and
    ``il_at_strike`` are fractions (``value / hold - 1``, <= 0) relative to the
    position's entry price, ``il_at_strike`` at the put strike; ``break_even`` is the
    price range within which the fees expected over the expiry cover IL (``hi`` may
    be inf); ``theta_daily`` is the hedge's value change per day (negative: a cost).
    """

    instrument: str
    strike: float
    call_strike: float | None
    expiry: int
    notional: float
    premium_estimate: float
    il_now: float
    il_at_strike: float
    break_even: tuple[float, float]
    theta_daily: float
    volatility: float
    notional_position: bool
    volatility_source: str = "realized_vol"
    fees_over_horizon: float = 0.0

    def __post_init__(self) -> None:
        if self.instrument not in INSTRUMENTS:
            raise ValidationError(
                f"HedgeAdvice.instrument must be put or collar, got {self.instrument!r}"
            )
        if (self.call_strike is None) != (self.instrument == "put"):
            raise ValidationError("HedgeAdvice.call_strike is set exactly for collars")
        if not (self.strike > 0 and self.notional >= 0 and self.volatility > 0):
            raise ValidationError("HedgeAdvice needs strike > 0, notional >= 0 and volatility > 0")
        lo, hi = self.break_even
        if not 0 <= lo <= hi:
            raise ValidationError(
                f"HedgeAdvice.break_even must satisfy 0 <= lo <= hi, got {self.break_even}"
            )
        if self.volatility_source not in ("realized_vol", "iv", "fallback"):
            raise ValidationError(f"unknown volatility_source {self.volatility_source!r}")

    def to_payload(self) -> dict[str, object]:
        """The alert's ``hedge`` object (DESIGN.md) plus alvh's extra fields."""
        lo, hi = self.break_even
        payload: dict[str, object] = {
            "instrument": self.instrument,
            "strike": _json_number(self.strike),
            "expiry": iso_utc(self.expiry),
            "notional": _json_number(self.notional),
            "premium_estimate": _json_number(self.premium_estimate),
            "il_now": _json_number(self.il_now),
            "il_at_strike": _json_number(self.il_at_strike),
            "break_even": [_json_number(lo), _json_number(hi)],
        }
        if self.call_strike is not None:
            payload["call_strike"] = _json_number(self.call_strike)
        payload.update(
            theta_daily=_json_number(self.theta_daily),
            volatility=_json_number(self.volatility),
            volatility_source=self.volatility_source,
            fees_over_horizon=_json_number(self.fees_over_horizon),
            position="notional-1-quote" if self.notional_position else "configured",
        )
        return payload


def _json_number(value: float) -> float | None:
    # JSON has no NaN or infinity; null reads as "unbounded / not known".
    return float(value) if math.isfinite(value) else None


def choose_volatility(realized_vol: float, iv: float) -> tuple[float, str]:
    """The annualised volatility to price with, and where it came from.

    The larger of the usable figures (finite and > 0); ``FALLBACK_VOLATILITY`` with
    source ``"fallback"`` when neither is usable. Ties go to ``realized_vol``.
    """
    rv_ok = 0 < realized_vol < math.inf  # False for NaN
    iv_ok = 0 < iv < math.inf
    if rv_ok and (not iv_ok or realized_vol >= iv):
        return realized_vol, "realized_vol"
    if iv_ok:
        return iv, "iv"
    return FALLBACK_VOLATILITY, "fallback"


def recommend(
    spec: HedgeSpec,
    *,
    now: int,
    price: float,
    realized_vol: float,
    iv: float,
    position: Position | None,
    fee: float,
    volume_24h: float,
    pool_liquidity_share: float | None = None,
    tvl: float = math.nan,
    risk_free: float = 0.0,
) -> HedgeAdvice:
    """The hedge a layer's ``spec`` calls for at ``now`` and ``price``.

    ``position`` with an unknown (NaN) entry price is taken as entered at ``price``.
    Fees over the expiry use ``pool_liquidity_share`` (position L / active L) when
    given for a configured position, else position value / ``tvl``, else none
    (see :func:`rules.hedge.lp.fee_share`); a NaN ``volume_24h`` earns no fees.
    """
    if now < 0:
        raise ValueError(f"now must be unix seconds >= 0, got {now}")
    if not (price > 0 and math.isfinite(price)):
        raise ValueError(f"price must be positive and finite, got {price!r}")

    notional_position = position is None
    if position is None:
        position = Position.full_range(1.0, price)
        # The pool's liquidity share belongs to a configured position, not to this one.
        pool_liquidity_share = None
    elif not position.has_entry_price:
        position = position.with_entry_price(price)

    volatility, volatility_source = choose_volatility(realized_vol, iv)
    years = spec.expiry / SECONDS_PER_YEAR
    spread_sigma = volatility * math.sqrt(years)
    strike = price * math.exp(spec.strike_sigma * spread_sigma)
    notional = spec.coverage * position.delta(price)

    put = black_scholes("put", price, strike, years, volatility, r=risk_free)
    premium_per_unit = put.price * (1 + spec.spread)
    theta_per_unit = put.theta
    call_strike: float | None = None
    if spec.instrument == "collar":
        assert spec.call_sigma is not None  # HedgeSpec guarantees it for collars
        call_strike = price * math.exp(spec.call_sigma * spread_sigma)
        call = black_scholes("call", price, call_strike, years, volatility, r=risk_free)
        premium_per_unit -= call.price * (1 - spec.spread)
        theta_per_unit -= call.theta

    share = fee_share(position, price, pool_liquidity_share=pool_liquidity_share, tvl=tvl)
    fees = fees_over_horizon(fee, volume_24h, spec.expiry / SECONDS_PER_DAY, share)
    return HedgeAdvice(
        instrument=spec.instrument,
        strike=strike,
        call_strike=call_strike,
        expiry=now + spec.expiry,
        notional=notional,
        premium_estimate=notional * premium_per_unit,
        il_now=position.impermanent_loss(price),
        il_at_strike=position.impermanent_loss(strike),
        break_even=position.break_even(fees),
        theta_daily=notional * theta_per_unit / 365,
        volatility=volatility,
        notional_position=notional_position,
        volatility_source=volatility_source,
        fees_over_horizon=fees,
    )
