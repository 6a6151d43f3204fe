"""Layer hedge recommendations: specs, hand-recomputed advice, payload shape."""

from __future__ import annotations

import calendar
import json
import math
import re
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.hedge.advice import (
    FALLBACK_VOLATILITY,
    HedgeAdvice,
    HedgeSpec,
    Position,
    choose_volatility,
    recommend,
)
from rules.types import ValidationError

DAY = 86_400
# The DESIGN.md alert example: fired 2026-05-07T14:30:00Z, a 7-day put expires a week later.
NOW = calendar.timegm((2026, 5, 7, 14, 30, 0))


# -- textbook formulas, written out again here so the tests do not trust rules.hedge.options ----


def _n(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _d1_d2(spot: float, strike: float, years: float, vol: float) -> tuple[float, float]:
    d1 = (math.log(spot / strike) + 0.5 * vol * vol * years) / (vol * math.sqrt(years))
    return d1, d1 - vol * math.sqrt(years)


def put_price(spot: float, strike: float, years: float, vol: float) -> float:
    d1, d2 = _d1_d2(spot, strike, years, vol)
    return strike * _n(-d2) - spot * _n(-d1)


def call_price(spot: float, strike: float, years: float, vol: float) -> float:
    d1, d2 = _d1_d2(spot, strike, years, vol)
    return spot * _n(d1) - strike * _n(d2)


def theta_r0(spot: float, strike: float, years: float, vol: float) -> float:
    # r = q = 0: calls and puts share theta = -S n(d1) sigma / (2 sqrt T), per year.
    d1, _ = _d1_d2(spot, strike, years, vol)
    density = math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi)
    return -spot * density * vol / (2 * math.sqrt(years))


# -- HedgeSpec ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"instrument": "straddle"}, "instrument"),
        ({"strike_sigma": 1.0}, "strike_sigma"),
        ({"strike_sigma": math.nan}, "strike_sigma"),
        ({"coverage": 0.0}, "coverage"),
        ({"coverage": 1.5}, "coverage"),
        ({"expiry": 0}, "expiry"),
        ({"expiry": -DAY}, "expiry"),
        ({"expiry": 7.5}, "expiry"),
        ({"expiry": True}, "expiry"),
        ({"spread": -0.1}, "spread"),
        ({"spread": 1.0}, "spread"),
        ({"call_sigma": 1.0}, "only applies to a collar"),
        ({"instrument": "collar"}, "call_sigma is required"),
        ({"instrument": "collar", "call_sigma": -1.0}, "above strike_sigma"),
        ({"instrument": "collar", "call_sigma": -2.0}, "above strike_sigma"),
        ({"instrument": "collar", "call_sigma": math.inf}, "above strike_sigma"),
    ],
)
def test_hedge_spec_rejects(kwargs: dict[str, object], match: str) -> None:
    fields: dict[str, object] = {
        "instrument": "put",
        "strike_sigma": -1.0,
        "coverage": 0.25,
        "expiry": 7 * DAY,
    }
    fields.update(kwargs)
    with pytest.raises(ValidationError, match=match):
        HedgeSpec(**fields)  # type: ignore[arg-type]


def test_hedge_spec_accepts_design_examples() -> None:
    put = HedgeSpec("put", -1.0, 0.25, 7 * DAY)
    collar = HedgeSpec("collar", -2.0, 0.5, 14 * DAY, call_sigma=1.0)
    assert put.call_sigma is None
    assert collar.call_sigma == 1.0
    assert HedgeSpec("put", 0.0, 1.0, 1).strike_sigma == 0.0  # at the money is allowed


# -- volatility --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("realized", "iv", "expected"),
    [
        (0.5, 0.7, (0.7, "iv")),
        (0.9, 0.7, (0.9, "realized_vol")),
        (0.6, 0.6, (0.6, "realized_vol")),
        (0.9, math.nan, (0.9, "realized_vol")),
        (math.nan, 0.4, (0.4, "iv")),
        (0.0, 0.3, (0.3, "iv")),  # a flat price says nothing about risk: ignored
        (math.inf, 0.4, (0.4, "iv")),
        (-0.2, math.nan, (FALLBACK_VOLATILITY, "fallback")),
        (math.nan, math.nan, (FALLBACK_VOLATILITY, "fallback")),
    ],
)
def test_choose_volatility(realized: float, iv: float, expected: tuple[float, str]) -> None:
    assert choose_volatility(realized, iv) == expected


# -- recommend, recomputed by hand ---------------------------------------------------------


def test_put_for_notional_position() -> None:
    spec = HedgeSpec("put", -1.0, 0.25, 7 * DAY)
    fee, volume, tvl = 0.0005, 2e8, 3e8
    advice = recommend(
        spec,
        now=NOW,
        price=2000.0,
        realized_vol=0.5,
        iv=0.7,
        position=None,
        fee=fee,
        volume_24h=volume,
        tvl=tvl,
    )
    years = 7 / 365
    strike = 2000.0 * math.exp(-1.0 * 0.7 * math.sqrt(years))
    # 1 quote unit, full range at 2000: half of it is base, 0.5 / 2000 base tokens.
    notional = 0.25 * 0.5 / 2000.0
    assert advice.notional_position
    assert advice.volatility == 0.7
    assert advice.volatility_source == "iv"
    assert advice.strike == pytest.approx(strike, rel=1e-15)
    assert advice.call_strike is None
    assert advice.expiry == NOW + 7 * DAY
    assert advice.notional == pytest.approx(notional, rel=1e-15)
    assert advice.premium_estimate == pytest.approx(
        notional * put_price(2000.0, strike, years, 0.7), rel=1e-12
    )
    assert advice.theta_daily == pytest.approx(
        notional * theta_r0(2000.0, strike, years, 0.7) / 365, rel=1e-12
    )
    assert advice.il_now == 0.0
    ratio = strike / 2000.0
    assert advice.il_at_strike == pytest.approx(2 * math.sqrt(ratio) / (1 + ratio) - 1, rel=1e-12)
    # fees: the notional position's share of a V2-like pool is its value over TVL
    fees = fee * volume * 7 * (1.0 / tvl)
    assert advice.fees_over_horizon == pytest.approx(fees, rel=1e-15)
    # V2 break-even: L = 1 / (2 sqrt(p0)); fees cover IL between the roots of
    # x0 s**2 - 2 L s + (y0 - fees) = 0 with x0 = L / sqrt(p0), y0 = L sqrt(p0).
    s0 = math.sqrt(2000.0)
    liq = 1 / (2 * s0)
    x0, y0 = liq / s0, liq * s0
    disc = math.sqrt(liq * liq - x0 * (y0 - fees))
    lo, hi = advice.break_even
    assert lo == pytest.approx(((liq - disc) / x0) ** 2, rel=1e-9)
    assert hi == pytest.approx(((liq + disc) / x0) ** 2, rel=1e-9)
    payload = advice.to_payload()
    assert payload["expiry"] == "2026-05-14T14:30:00Z"
    assert payload["position"] == "notional-1-quote"


def whitepaper_liquidity(value: float, entry: float, pa: float, pb: float) -> float:
    # value = L (2 sqrt(p) - p / sqrt(pb) - sqrt(pa)) for pa < p < pb (6.29, 6.30)
    return value / (2 * math.sqrt(entry) - entry / math.sqrt(pb) - math.sqrt(pa))


def test_collar_for_configured_v3_position() -> None:
    spec = HedgeSpec("collar", -2.0, 0.5, 14 * DAY, call_sigma=1.0, spread=0.02)
    pa, pb, entry, price = 1800.0, 2600.0, 2100.0, 2000.0
    position = Position(pa, pb, 250_000.0, entry)
    advice = recommend(
        spec,
        now=NOW,
        price=price,
        realized_vol=0.6,
        iv=math.nan,
        position=position,
        fee=0.0005,
        volume_24h=2e8,
        pool_liquidity_share=0.004,
        tvl=3e8,  # not used: the liquidity share wins
    )
    years = 14 / 365
    put_strike = price * math.exp(-2.0 * 0.6 * math.sqrt(years))
    call_strike = price * math.exp(1.0 * 0.6 * math.sqrt(years))
    liq = whitepaper_liquidity(250_000.0, entry, pa, pb)
    base = liq * (1 / math.sqrt(price) - 1 / math.sqrt(pb))
    notional = 0.5 * base
    assert not advice.notional_position
    assert advice.strike == pytest.approx(put_strike, rel=1e-15)
    assert advice.call_strike == pytest.approx(call_strike, rel=1e-15)
    assert advice.notional == pytest.approx(notional, rel=1e-12)
    premium = notional * (
        put_price(price, put_strike, years, 0.6) * 1.02
        - call_price(price, call_strike, years, 0.6) * 0.98
    )
    assert advice.premium_estimate == pytest.approx(premium, rel=1e-10)
    theta = notional * (
        theta_r0(price, put_strike, years, 0.6) - theta_r0(price, call_strike, years, 0.6)
    )
    assert advice.theta_daily == pytest.approx(theta / 365, rel=1e-10)
    # IL relative to the entry price, closed form for prices inside the range
    for at, il in ((price, advice.il_now), (put_strike, advice.il_at_strike)):
        r = at / entry
        expected = -((math.sqrt(r) - 1) ** 2) / (
            1 + r - math.sqrt(pa / entry) - r * math.sqrt(entry / pb)
        )
        if at < pa:  # the put strike is below the range: the position is all base there
            b0 = liq * (1 / math.sqrt(entry) - 1 / math.sqrt(pb))
            q0 = liq * (math.sqrt(entry) - math.sqrt(pa))
            below = liq * (1 / math.sqrt(pa) - 1 / math.sqrt(pb)) * at
            expected = below / (b0 * at + q0) - 1
        assert il == pytest.approx(expected, rel=1e-9)
    fees = 0.0005 * 2e8 * 14 * 0.004
    assert advice.fees_over_horizon == pytest.approx(fees, rel=1e-15)
    # At the break-even bounds the position's shortfall against holding equals the fees.
    lo, hi = advice.break_even
    assert lo < entry < hi
    for bound in (lo, hi):
        assert position.loss_vs_hold(bound) == pytest.approx(-fees, rel=1e-9)


def test_position_out_of_range_above_needs_no_hedge() -> None:
    spec = HedgeSpec("put", -1.0, 1.0, 7 * DAY)
    position = Position(1800.0, 2600.0, 100_000.0, 2000.0)
    advice = recommend(
        spec,
        now=NOW,
        price=3000.0,
        realized_vol=0.5,
        iv=0.5,
        position=position,
        fee=0.003,
        volume_24h=1e7,
        pool_liquidity_share=0.5,
    )
    # all quote above the range: no base exposure, nothing to protect, nothing paid
    assert advice.notional == 0.0
    assert advice.premium_estimate == 0.0
    assert advice.theta_daily == 0.0
    assert advice.strike == pytest.approx(3000.0 * math.exp(-0.5 * math.sqrt(7 / 365)))
    assert advice.il_now < 0
    assert advice.fees_over_horizon == 0.0  # out of range earns no fees
    # no fees to cover anything: only the entry price breaks even
    assert advice.break_even == pytest.approx((2000.0, 2000.0), rel=1e-12)


def test_position_entered_above_its_range_has_unbounded_break_even() -> None:
    spec = HedgeSpec("put", -1.0, 1.0, 7 * DAY)
    position = Position(1800.0, 2600.0, 100_000.0, 3000.0)  # all quote from the start
    advice = recommend(
        spec,
        now=NOW,
        price=3000.0,
        realized_vol=0.5,
        iv=0.5,
        position=position,
        fee=0.003,
        volume_24h=1e7,
    )
    lo, hi = advice.break_even
    assert hi == math.inf
    assert lo == pytest.approx(2600.0, rel=1e-9)  # no fees, and any dip into the range loses
    payload = advice.to_payload()
    assert payload["break_even"] == [pytest.approx(2600.0, rel=1e-9), None]
    json.dumps(payload, allow_nan=False)


def test_unknown_entry_price_means_entered_now() -> None:
    spec = HedgeSpec("put", -1.0, 0.5, 7 * DAY)
    advice = recommend(
        spec,
        now=NOW,
        price=2000.0,
        realized_vol=math.nan,
        iv=math.nan,
        position=Position(1800.0, 2600.0, 1000.0),
        fee=0.0005,
        volume_24h=math.nan,  # no volume yet: no fee credit
    )
    assert advice.il_now == 0.0
    assert advice.volatility == FALLBACK_VOLATILITY
    assert advice.volatility_source == "fallback"
    assert advice.fees_over_horizon == 0.0
    assert advice.to_payload()["volatility_source"] == "fallback"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"price": 0.0}, "price"),
        ({"price": math.nan}, "price"),
        ({"now": -1}, "now"),
        ({"fee": 1.5}, "fee"),
        ({"volume_24h": -5.0}, "volume_24h"),
        ({"pool_liquidity_share": 2.0}, "pool_liquidity_share"),
    ],
)
def test_recommend_rejects_bad_inputs(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "now": NOW,
        "price": 2000.0,
        "realized_vol": 0.5,
        "iv": 0.5,
        "position": Position(1800.0, 2600.0, 1000.0, 2000.0),
        "fee": 0.003,
        "volume_24h": 1e6,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        recommend(HedgeSpec("put", -1.0, 0.5, DAY), **args)  # type: ignore[arg-type]


# -- properties ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    price: float
    vol: float
    expiry_days: int
    strike_sigma: float
    call_gap: float
    coverage: float
    spread: float


scenarios = st.builds(
    Scenario,
    price=st.floats(min_value=1e-3, max_value=1e5),
    vol=st.floats(min_value=0.05, max_value=3.0),
    expiry_days=st.integers(min_value=1, max_value=365),
    strike_sigma=st.floats(min_value=-3.0, max_value=0.0),
    call_gap=st.floats(min_value=0.01, max_value=3.0),
    coverage=st.floats(min_value=0.01, max_value=1.0),
    spread=st.floats(min_value=0.0, max_value=0.2),
)


@given(scenarios)
def test_collar_costs_less_than_the_put(s: Scenario) -> None:
    common = {"strike_sigma": s.strike_sigma, "coverage": s.coverage, "spread": s.spread}
    put_spec = HedgeSpec("put", expiry=s.expiry_days * DAY, **common)
    collar_spec = HedgeSpec(
        "collar", expiry=s.expiry_days * DAY, call_sigma=s.strike_sigma + s.call_gap, **common
    )
    market = {
        "now": NOW,
        "price": s.price,
        "realized_vol": s.vol,
        "iv": math.nan,
        "position": None,
        "fee": 0.003,
        "volume_24h": 1e6,
    }
    put = recommend(put_spec, **market)  # type: ignore[arg-type]
    collar = recommend(collar_spec, **market)  # type: ignore[arg-type]
    assert put.strike == collar.strike
    assert collar.call_strike is not None
    assert collar.call_strike > collar.strike
    assert collar.premium_estimate < put.premium_estimate
    assert put.premium_estimate > 0


# -- payload -----------------------------------------------------------------------------

DESIGN_FIELDS = {
    "instrument": str,
    "strike": float,
    "expiry": str,
    "notional": float,
    "premium_estimate": float,
    "il_now": float,
    "il_at_strike": float,
    "break_even": list,
}
EXTRA_FIELDS = {
    "theta_daily": float,
    "volatility": float,
    "volatility_source": str,
    "fees_over_horizon": float,
    "position": str,
}


@pytest.mark.parametrize("instrument", ["put", "collar"])
def test_payload_has_design_fields_with_types(instrument: str) -> None:
    spec = HedgeSpec(
        instrument, -1.0, 0.25, 7 * DAY, call_sigma=1.0 if instrument == "collar" else None
    )
    advice = recommend(
        spec,
        now=NOW,
        price=2000.0,
        realized_vol=0.5,
        iv=0.6,
        position=Position(1800.0, 2600.0, 250_000.0, 2100.0),
        fee=0.0005,
        volume_24h=2e8,
        tvl=3e8,
    )
    payload = advice.to_payload()
    expected = DESIGN_FIELDS | EXTRA_FIELDS
    if instrument == "collar":
        expected |= {"call_strike": float}
    assert set(payload) == set(expected)
    for name, kind in expected.items():
        assert type(payload[name]) is kind, name
    assert payload["instrument"] == instrument
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(payload["expiry"]))
    assert payload["expiry"] == "2026-05-14T14:30:00Z"
    assert payload["break_even"] == list(advice.break_even)
    assert all(type(bound) is float for bound in advice.break_even)
    assert payload["position"] == "configured"
    # JSON without NaN/Infinity, and a faithful round trip
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload


def test_advice_validates_itself() -> None:
    good = {
        "instrument": "put",
        "strike": 1900.0,
        "call_strike": None,
        "expiry": NOW,
        "notional": 1.0,
        "premium_estimate": 10.0,
        "il_now": 0.0,
        "il_at_strike": -0.01,
        "break_even": (1800.0, 2200.0),
        "theta_daily": -1.0,
        "volatility": 0.5,
        "notional_position": False,
    }
    HedgeAdvice(**good)  # type: ignore[arg-type]
    for bad, match in (
        ({"call_strike": 2100.0}, "call_strike"),
        ({"break_even": (2200.0, 1800.0)}, "break_even"),
        ({"notional": -1.0}, "notional"),
        ({"volatility_source": "guess"}, "volatility_source"),
    ):
        with pytest.raises(ValidationError, match=match):
            HedgeAdvice(**(good | bad))  # type: ignore[arg-type]
