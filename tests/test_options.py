"""Black-Scholes against textbook values, parity, closed forms and finite differences."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.hedge.options import OptionKind, OptionValue, black_scholes, norm_cdf, norm_pdf


@dataclass(frozen=True)
class Market:
    spot: float
    strike: float
    years: float
    sigma: float
    r: float = 0.0
    q: float = 0.0

    def value(self, kind: OptionKind) -> OptionValue:
        return black_scholes(
            kind, self.spot, self.strike, self.years, self.sigma, r=self.r, q=self.q
        )


# Hull, Options, Futures, and Other Derivatives: values as printed, with their decimals.
HULL_15_6 = Market(42.0, 40.0, 0.5, 0.2, r=0.1)
HULL_19 = Market(49.0, 50.0, 20 / 52, 0.2, r=0.05)  # the chapter 19 running example
HULL = [
    ("call", HULL_15_6, "price", 4.76, 2),  # Example 15.6
    ("put", HULL_15_6, "price", 0.81, 2),  # Example 15.6
    ("call", HULL_19, "price", 2.40, 2),  # the delta-hedging example's option value
    ("call", HULL_19, "delta", 0.522, 3),  # Example 19.1
    ("call", HULL_19, "gamma", 0.066, 3),  # Example 19.4
    ("call", HULL_19, "vega", 12.1, 1),  # Example 19.6
    ("call", HULL_19, "theta", -4.31, 2),  # Example 19.2
    ("call", Market(930.0, 900.0, 2 / 12, 0.2, r=0.08, q=0.03), "price", 51.83, 2),  # Ex. 17.1
]


@pytest.mark.parametrize(("kind", "market", "field", "printed", "decimals"), HULL)
def test_hull_textbook_values(
    kind: OptionKind, market: Market, field: str, printed: float, decimals: int
) -> None:
    value = getattr(market.value(kind), field)
    assert round(value, decimals) == pytest.approx(printed, abs=1e-12)


def test_hull_example_to_more_digits() -> None:
    # Example 15.6 worked by hand: d1 = 0.7693, d2 = 0.6278; c = 4.7594, p = 0.8086.
    call = black_scholes("call", 42.0, 40.0, 0.5, 0.2, r=0.1)
    put = black_scholes("put", 42.0, 40.0, 0.5, 0.2, r=0.1)
    assert call.price == pytest.approx(4.7594, abs=5e-5)
    assert put.price == pytest.approx(0.8086, abs=5e-5)
    assert call.price - put.price == pytest.approx(42.0 - 40.0 * math.exp(-0.05), abs=1e-12)


@pytest.mark.parametrize("spot", [1.0, 42.0, 2000.0])
@pytest.mark.parametrize("vol_sqrt_t", [0.01, 0.2, 1.0, 3.0])
def test_at_the_money_closed_form(spot: float, vol_sqrt_t: float) -> None:
    # r = q = 0, K = S: d1 = -d2 = v/2, so C = P = S (2 N(v/2) - 1) = S erf(v / (2 sqrt 2)).
    years = 0.25
    sigma = vol_sqrt_t / math.sqrt(years)
    expected = spot * math.erf(vol_sqrt_t / (2 * math.sqrt(2)))
    for kind in ("call", "put"):
        value = black_scholes(kind, spot, spot, years, sigma)
        assert value.price == pytest.approx(expected, rel=1e-13)
    call = black_scholes("call", spot, spot, years, sigma)
    assert call.delta == pytest.approx(norm_cdf(vol_sqrt_t / 2), rel=1e-15)
    assert call.vega == pytest.approx(spot * norm_pdf(vol_sqrt_t / 2) * math.sqrt(years))


def test_normal_distribution() -> None:
    assert norm_cdf(0.0) == 0.5
    assert norm_cdf(1.959963984540054) == pytest.approx(0.975, rel=1e-15)
    assert norm_cdf(-37.0) > 0  # erfc keeps the far lower tail
    assert norm_cdf(-10.0) == pytest.approx(7.619853024160527e-24, rel=1e-12)
    assert norm_pdf(0.0) == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-16)


markets = st.builds(
    lambda spot, moneyness, years, sigma, r, q: Market(spot, spot * moneyness, years, sigma, r, q),
    spot=st.floats(min_value=0.01, max_value=1e5),
    moneyness=st.floats(min_value=0.25, max_value=4.0),
    years=st.floats(min_value=1 / 365, max_value=5.0),
    sigma=st.floats(min_value=0.01, max_value=3.0),
    r=st.floats(min_value=-0.02, max_value=0.2),
    q=st.floats(min_value=0.0, max_value=0.2),
)


@given(markets)
def test_put_call_parity(m: Market) -> None:
    call, put = m.value("call"), m.value("put")
    forward_gap = m.spot * math.exp(-m.q * m.years) - m.strike * math.exp(-m.r * m.years)
    # 1e-12 relative to the size of the prices involved (absolute for S, K ~ 1).
    assert abs(call.price - put.price - forward_gap) <= 1e-12 * max(1.0, m.spot, m.strike)
    assert call.delta - put.delta == pytest.approx(math.exp(-m.q * m.years), rel=1e-12)
    assert call.gamma == put.gamma
    assert call.vega == put.vega


def _bumped(kind: OptionKind, m: Market) -> tuple[dict[str, float], float]:
    def price(**bump: float) -> float:
        return replace(m, **bump).value(kind).price

    # Spot steps on the option's own scale (one standard deviation of log spot to expiry),
    # so truncation error stays small for short, low-volatility options too.
    vol_sqrt_t = m.sigma * math.sqrt(m.years)
    hs, ht, hv = m.spot * 1e-4 * min(1.0, vol_sqrt_t), m.years * 1e-5, m.sigma * 1e-5
    return {
        "delta": (price(spot=m.spot + hs) - price(spot=m.spot - hs)) / (2 * hs),
        "gamma": (price(spot=m.spot + hs) - 2 * price() + price(spot=m.spot - hs)) / hs**2,
        "vega": (price(sigma=m.sigma + hv) - price(sigma=m.sigma - hv)) / (2 * hv),
        # theta: value change as calendar time passes, i.e. as time to expiry shrinks
        "theta": -(price(years=m.years + ht) - price(years=m.years - ht)) / (2 * ht),
    }, hs


@pytest.mark.parametrize("kind", ["call", "put"])
@given(m=markets)
def test_greeks_vs_finite_differences(kind: OptionKind, m: Market) -> None:
    value = m.value(kind)
    bumped, hs = _bumped(kind, m)
    # Tolerances: the differences' truncation and rounding errors, scaled by the price level
    # (a second difference carries about 4 ulps of the price over the squared step).
    scale = max(m.spot, m.strike)
    assert value.delta == pytest.approx(bumped["delta"], abs=1e-6)
    assert value.gamma == pytest.approx(bumped["gamma"], abs=1e-15 * scale / hs**2, rel=1e-3)
    assert value.vega == pytest.approx(bumped["vega"], abs=1e-6 * scale, rel=1e-6)
    assert value.theta == pytest.approx(bumped["theta"], abs=1e-6 * scale / m.years, rel=1e-5)


DISCOUNTED_STRIKE = 100.0 * math.exp(-0.05)


@pytest.mark.parametrize(
    ("kind", "spot", "expected"),
    [
        (
            "call",
            110.0,
            OptionValue(110.0 - DISCOUNTED_STRIKE, 1.0, 0.0, 0.0, -0.05 * DISCOUNTED_STRIKE),
        ),
        ("call", 90.0, OptionValue(0.0, 0.0, 0.0, 0.0, 0.0)),
        (
            "put",
            90.0,
            OptionValue(DISCOUNTED_STRIKE - 90.0, -1.0, 0.0, 0.0, 0.05 * DISCOUNTED_STRIKE),
        ),
        ("put", 110.0, OptionValue(0.0, 0.0, 0.0, 0.0, 0.0)),
    ],
)
def test_zero_volatility_is_discounted_intrinsic(
    kind: OptionKind, spot: float, expected: OptionValue
) -> None:
    # strike 100, one year, r = 5%, no volatility: the payoff is known today.
    value = black_scholes(kind, spot, 100.0, 1.0, 0.0, r=0.05)
    assert value.price == pytest.approx(expected.price, rel=1e-15, abs=1e-15)
    assert value.delta == expected.delta
    assert value.theta == pytest.approx(expected.theta, rel=1e-15, abs=1e-15)
    assert value.gamma == 0.0
    assert value.vega == 0.0


def test_at_expiry() -> None:
    assert black_scholes("put", 90.0, 100.0, 0.0, 0.5).price == 10.0
    assert black_scholes("call", 100.0, 100.0, 0.0, 0.5).delta == 0.5
    assert black_scholes("put", 100.0, 100.0, 0.0, 0.5).delta == -0.5


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("swap", 1.0, 1.0, 1.0, 0.2), "kind"),
        (("call", 0.0, 1.0, 1.0, 0.2), "spot"),
        (("call", 1.0, -1.0, 1.0, 0.2), "strike"),
        (("call", 1.0, 1.0, -1.0, 0.2), "years"),
        (("call", 1.0, 1.0, 1.0, math.nan), "sigma"),
        (("call", 1.0, 1.0, math.inf, 0.2), "years"),
    ],
)
def test_rejects_bad_inputs(args: tuple[str, float, float, float, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        black_scholes(*args)  # type: ignore[arg-type]
