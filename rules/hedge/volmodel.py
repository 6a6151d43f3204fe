"""An implied-volatility model built only from what was known at the time.

Guarantees kept here:
- every figure at time ``t`` comes from prices at or before ``t``: the realized-vol
  state (:class:`RealizedVol`) is updated one price at a time (:func:`update_realized`),
  and the whole-series call (:func:`realized_series`) is that same update in a loop, so
  the daemon and the backtest get the same numbers bit for bit;
- the 30-day at-the-money implied vol is ``intercept + slope * rv_short`` (an EWMA of
  realized vol with a 5-day half-life), the fit of Deribit's BTC DVOL on the BTC spot
  file, parameters in :data:`CALIBRATED` (``bench/calibrate_iv.py`` refits them and
  prints the figures quoted below);
- the term structure mean-reverts from the 30-day level towards the long-run level:
  ``atm(T) = long_run + (atm30 - long_run) * g(T) / g(30d)`` with
  ``g(T) = (1 - exp(-kappa T)) / (kappa T)``, so short expiries sit further from the
  long-run level (on the side of the current regime) and long ones nearer to it;
- the skew is linear in ``x = ln(K / S) / sqrt(T)``: ``iv = atm + put_skew * max(-x, 0)
  + call_skew * max(x, 0)`` (implied vol rises for lower strikes; a smaller smile on
  the call side), floored at :attr:`VolModel.floor` and capped at ``cap_ratio * atm``;
- the bid/ask half-spread is quoted in vol points, ``iv * (half_spread + wing_spread *
  |x|)``: it widens in the wings and with the vol level; the price half-spread is at
  least ``min_half_spread * spot`` (an exchange's tick);
- a quote's ``mid`` is the price to *mark* with, ``ask`` what buying pays, ``bid`` what
  selling gets: the same model values an option when it is bought, every bar after and
  when it is sold.

Calibration (``bench/calibrate_iv.py``, DVOL 2021-03-24..2021-12-31, 277 days, against
the EWMA of hourly BTC/USDT log returns up to the end of the same day):

    IV30 = 0.612 + 0.406 * RV_ewma5d     all days: R^2 0.69, median |error| 3.7 vol points
    median IV / RV_ewma5d 1.29; long-run level (the fit at the median RV, 0.70) 0.896
    out of sample: fitted on the first 138 days (0.521 + 0.489 RV), scored on the last
    139: median |error| 5.6 vol points (R^2 -1.7: the second half is calm, DVOL std
    4.8 points, where a constant at the first half's median errs by 4.4 points)

A slow (180-day) EWMA as a second regressor fits no better in sample (R^2 0.70, 3.9
points) and worse out of sample (8.3 points), so the long-run level is a constant. The
term structure (``kappa``), the skew and the spreads are *assumptions* stated in
``docs/hedging.md``: the data holds one 30-day ATM index only.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from rules.hedge.options import OptionKind, black_scholes
from rules.types import ValidationError

__all__ = [
    "CALIBRATED",
    "DAY",
    "YEAR",
    "OptionQuote",
    "RealizedVol",
    "VolModel",
    "realized_series",
    "update_realized",
]

FloatArray = NDArray[np.float64]

DAY = 86_400
YEAR = 365 * DAY
#: Half-life of the short realized-vol EWMA (the regressor of the fit).
SHORT_HALF_LIFE = 5 * DAY


@dataclass(frozen=True, slots=True)
class RealizedVol:
    """The realized-vol state after the price at ``time``.

    ``variance`` is the EWMA of squared log returns per second (half-life
    ``half_life`` seconds); ``samples`` counts the returns folded in. NaN variance:
    no return seen yet.
    """

    time: int
    price: float
    variance: float = math.nan
    samples: int = 0
    half_life: int = SHORT_HALF_LIFE

    @property
    def vol(self) -> float:
        """Annualised realized vol (NaN before the first return)."""
        return math.sqrt(self.variance * YEAR) if self.variance >= 0 else math.nan


def update_realized(state: RealizedVol | None, time: int, price: float) -> RealizedVol:
    """Fold the price at ``time`` into ``state`` (None: start from this price).

    The weight of the new return is ``1 - 2 ** (-dt / half_life)``, so a gap of several
    bars counts as much as those bars would have (its return is spread over ``dt``).
    A time not after the state's, or a price not positive and finite, leaves the state
    as it was (a repeated or bad sample adds nothing).
    """
    if state is None:
        return RealizedVol(time=int(time), price=float(price))
    dt = int(time) - state.time
    if dt <= 0 or not 0.0 < price < math.inf:
        return state
    log_return = math.log(price / state.price)
    per_second = log_return * log_return / dt
    if state.samples == 0:
        variance = per_second
    else:
        weight = 1.0 - 2.0 ** (-dt / state.half_life)
        variance = state.variance + weight * (per_second - state.variance)
    return RealizedVol(int(time), float(price), variance, state.samples + 1, state.half_life)


def realized_series(
    times: NDArray[np.int64], prices: FloatArray, *, half_life: int = SHORT_HALF_LIFE
) -> FloatArray:
    """Annualised realized vol after each price (NaN until the first return):
    :func:`update_realized` applied in order."""
    out = np.full(len(prices), math.nan)
    state: RealizedVol | None = None
    for i in range(len(prices)):
        if state is None:
            state = RealizedVol(time=int(times[i]), price=float(prices[i]), half_life=half_life)
            continue
        state = update_realized(state, int(times[i]), float(prices[i]))
        out[i] = state.vol
    return out


@dataclass(frozen=True, slots=True)
class OptionQuote:
    """One option's model quote per unit of the underlying (quote currency)."""

    kind: OptionKind
    strike: float
    years: float
    iv: float
    half_spread_vol: float
    mid: float
    bid: float
    ask: float
    delta: float


@dataclass(frozen=True, slots=True)
class VolModel:
    """ATM 30-day IV from short realized vol, a term structure, a skew and spreads.

    All vols are annualised fractions (0.8 = 80 %); ``kappa`` is per year.
    """

    intercept: float
    slope: float
    long_run: float
    kappa: float
    put_skew: float
    call_skew: float
    half_spread: float
    wing_spread: float
    min_half_spread: float = 1e-4
    floor: float = 0.05
    cap_ratio: float = 3.0

    def __post_init__(self) -> None:
        for name in ("intercept", "slope", "put_skew", "call_skew", "half_spread", "wing_spread"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValidationError(f"VolModel.{name} must be >= 0 and finite, got {value!r}")
        for name in ("long_run", "kappa", "floor", "min_half_spread"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValidationError(f"VolModel.{name} must be > 0 and finite, got {value!r}")
        if not self.cap_ratio >= 1:
            raise ValidationError(f"VolModel.cap_ratio must be >= 1, got {self.cap_ratio!r}")

    def atm30(self, rv_short: float) -> float:
        """The 30-day ATM implied vol given the short realized vol (NaN: long-run level)."""
        if not 0 <= rv_short < math.inf:
            return self.long_run
        return max(self.intercept + self.slope * rv_short, self.floor)

    def atm(self, rv_short: float, years: float) -> float:
        """ATM implied vol for an expiry ``years`` away (term structure of the module doc)."""
        level30 = self.atm30(rv_short)
        ratio = _g(self.kappa, years) / _g(self.kappa, 30 / 365)
        return max(self.long_run + (level30 - self.long_run) * ratio, self.floor)

    def implied_vol(self, rv_short: float, spot: float, strike: float, years: float) -> float:
        """Implied vol at ``strike`` for an expiry ``years`` away (skewed, floored, capped)."""
        atm = self.atm(rv_short, years)
        x = _standard_moneyness(spot, strike, years)
        iv = atm + self.put_skew * max(-x, 0.0) + self.call_skew * max(x, 0.0)
        return min(max(iv, self.floor), self.cap_ratio * atm)

    def mid(
        self, kind: OptionKind, rv_short: float, spot: float, strike: float, years: float
    ) -> float:
        """The mark of one option per unit (one Black-Scholes call: the per-bar path)."""
        iv = self.implied_vol(rv_short, spot, strike, years)
        return black_scholes(kind, spot, strike, years, iv).price

    def quote(
        self, kind: OptionKind, rv_short: float, spot: float, strike: float, years: float
    ) -> OptionQuote:
        """Mid, bid and ask of one option per unit of the underlying."""
        iv = self.implied_vol(rv_short, spot, strike, years)
        x = _standard_moneyness(spot, strike, years)
        half_vol = iv * (self.half_spread + self.wing_spread * abs(x))
        value = black_scholes(kind, spot, strike, years, iv)
        ask = black_scholes(kind, spot, strike, years, iv + half_vol).price
        bid = black_scholes(kind, spot, strike, years, max(iv - half_vol, 0.0)).price
        min_half = self.min_half_spread * spot
        ask = max(ask, value.price + min_half)
        bid = max(min(bid, value.price - min_half), 0.0)
        return OptionQuote(kind, strike, years, iv, half_vol, value.price, bid, ask, value.delta)

    def is_cheap(self, rv_short: float, ratio: float) -> bool:
        """True when the 30-day ATM IV is at most ``ratio`` times the realized vol."""
        if not 0 < rv_short < math.inf:
            return False
        return self.atm30(rv_short) <= ratio * rv_short


def _g(kappa: float, years: float) -> float:
    # (1 - exp(-k T)) / (k T), 1 at T = 0; expm1 keeps it exact for small k T.
    kt = kappa * years
    return 1.0 if kt < 1e-12 else -math.expm1(-kt) / kt


def _standard_moneyness(spot: float, strike: float, years: float) -> float:
    # ln(K / S) / sqrt(T); at T = 0 the sign alone matters (the skew terms are capped).
    if years <= 0:
        return 0.0 if strike == spot else math.copysign(1e6, strike - spot)
    return math.log(strike / spot) / math.sqrt(years)


#: The fitted model (``bench/calibrate_iv.py``): see the module doc for the figures.
#: ``long_run`` is the fit at the median RV of the calibration window; ``kappa`` gives
#: deviations a ~60-day half-life; skew and spreads are stated assumptions.
CALIBRATED = VolModel(
    intercept=0.612,
    slope=0.406,
    long_run=0.896,
    kappa=math.log(2) / (60 / 365),
    put_skew=0.10,
    call_skew=0.04,
    half_spread=0.01,
    wing_spread=0.03,
)
