"""LP position valuation: closed forms, whitepaper formulas, and the raw-unit route."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rules.hedge.lp import Position, break_even, fee_share, fees_over_horizon
from rules.types import ValidationError
from rules.uniswap import TokenPair, amounts_for_liquidity

prices = st.floats(min_value=1e-6, max_value=1e6)
ratios = st.floats(min_value=1e-4, max_value=1e4)


def v2_il(r: float) -> float:
    return 2 * math.sqrt(r) / (1 + r) - 1


def v3_il_in_range(r: float, lower: float, upper: float, entry: float) -> float:
    # Closed form for p and p0 inside [pa, pb], from whitepaper 6.29/6.30 with L = 1:
    # value - hold = -(sqrt p - sqrt p0)**2 / sqrt p0, divided by the hold value. The
    # usual numerator 2 sqrt(r) - 1 - r is written -(sqrt(r) - 1)**2 to avoid cancellation.
    return -((math.sqrt(r) - 1) ** 2) / (
        1 + r - math.sqrt(lower / entry) - r * math.sqrt(entry / upper)
    )


def whitepaper_amounts(liq: float, p: float, pa: float, pb: float) -> tuple[float, float]:
    # Whitepaper 6.29/6.30 written branch by branch (no clamping trick).
    if p <= pa:
        return liq * (1 / math.sqrt(pa) - 1 / math.sqrt(pb)), 0.0
    if p >= pb:
        return 0.0, liq * (math.sqrt(pb) - math.sqrt(pa))
    return liq * (1 / math.sqrt(p) - 1 / math.sqrt(pb)), liq * (math.sqrt(p) - math.sqrt(pa))


# -- construction -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lower", "upper", "value", "entry", "match"),
    [
        (2000.0, 1000.0, 1.0, 1500.0, "lower < upper"),
        (1000.0, 1000.0, 1.0, 1500.0, "lower < upper"),
        (-1.0, None, 1.0, 1500.0, "lower"),
        (None, None, 0.0, 1500.0, "value"),
        (None, None, math.inf, 1500.0, "value"),
        (None, None, 1.0, -3.0, "entry_price"),
        (None, None, 1.0, math.inf, "entry_price"),
        (math.nan, None, 1.0, 1.0, "lower"),
        (1e-4, 1.0000000000000002e-4, 1.0, 1.0, "narrower than float resolution"),
    ],
)
def test_position_rejects_bad_values(
    lower: float | None, upper: float | None, value: float, entry: float, match: str
) -> None:
    with pytest.raises(ValidationError, match=match):
        Position(lower, upper, value, entry)


def test_full_range_spellings_agree() -> None:
    a = Position(None, None, 100.0, 4.0)
    b = Position(0.0, math.inf, 100.0, 4.0)
    assert a.is_full_range
    assert b.is_full_range
    assert a.liquidity == b.liquidity
    # V2: value = 2 L sqrt(p)
    assert a.liquidity == pytest.approx(100.0 / (2 * 2.0), rel=1e-15)


def test_unknown_entry_price_must_be_filled_in() -> None:
    pos = Position(1.0, 4.0, 10.0)
    assert not pos.has_entry_price
    with pytest.raises(ValueError, match="entry_price is unknown"):
        pos.value_at(2.0)
    filled = pos.with_entry_price(2.0)
    assert filled.value_at(2.0) == pytest.approx(10.0, rel=1e-15)
    assert (filled.lower, filled.upper, filled.value) == (1.0, 4.0, 10.0)


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_prices_must_be_positive_and_finite(bad: float) -> None:
    pos = Position.full_range(1.0, 1.0)
    with pytest.raises(ValueError, match="positive and finite"):
        pos.value_at(bad)


# -- V2 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("r", "expected"),
    [
        (1.0, 0.0),
        (4.0, -0.2),  # 2*2/5 - 1
        (0.25, -0.2),  # symmetric in r <-> 1/r
        (2.25, 2 * 1.5 / 3.25 - 1),
        (0.01, 2 * 0.1 / 1.01 - 1),
        (100.0, 2 * 10 / 101 - 1),
    ],
)
def test_v2_il_closed_form_table(r: float, expected: float) -> None:
    pos = Position.full_range(1000.0, 2000.0)
    assert pos.impermanent_loss(2000.0 * r) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@given(entry=prices, r=ratios, value=st.floats(min_value=1e-3, max_value=1e9))
def test_v2_il_closed_form(entry: float, r: float, value: float) -> None:
    pos = Position.full_range(value, entry)
    assert pos.impermanent_loss(entry * r) == pytest.approx(v2_il(r), rel=1e-9, abs=1e-14)


def test_v2_value_and_amounts() -> None:
    pos = Position.full_range(2000.0, 100.0)
    base, quote = pos.amounts(100.0)
    assert (base, quote) == pytest.approx((10.0, 1000.0))
    # constant product: base * quote = L**2
    for p in (1.0, 50.0, 400.0):
        b, q = pos.amounts(p)
        assert b * q == pytest.approx(pos.liquidity**2, rel=1e-12)
        assert q / b == pytest.approx(p, rel=1e-12)


# -- V3 against the whitepaper --------------------------------------------------------

V3_CASES = [
    # lower, upper, entry, price
    (1800.0, 2600.0, 2000.0, 2000.0),
    (1800.0, 2600.0, 2000.0, 2400.0),
    (1800.0, 2600.0, 2000.0, 1850.0),
    (1800.0, 2600.0, 2000.0, 1500.0),  # below the range: all base
    (1800.0, 2600.0, 2000.0, 3000.0),  # above the range: all quote
    (0.9, 1.1, 1.0, 1.05),
    (0.5, 2.0, 0.7, 1.9),
]


@pytest.mark.parametrize(("lower", "upper", "entry", "price"), V3_CASES)
def test_v3_amounts_match_whitepaper(
    lower: float, upper: float, entry: float, price: float
) -> None:
    pos = Position(lower, upper, 250_000.0, entry)
    base, quote = pos.amounts(price)
    wp_base, wp_quote = whitepaper_amounts(pos.liquidity, price, lower, upper)
    assert base == pytest.approx(wp_base, rel=1e-12, abs=1e-12)
    assert quote == pytest.approx(wp_quote, rel=1e-12, abs=1e-9)
    # and L reproduces the configured value at entry
    b0, q0 = whitepaper_amounts(pos.liquidity, entry, lower, upper)
    assert b0 * entry + q0 == pytest.approx(250_000.0, rel=1e-12)


@pytest.mark.parametrize(("lower", "upper", "entry", "price"), V3_CASES)
def test_v3_il_matches_value_over_hold(
    lower: float, upper: float, entry: float, price: float
) -> None:
    pos = Position(lower, upper, 250_000.0, entry)
    b0, q0 = whitepaper_amounts(pos.liquidity, entry, lower, upper)
    b, q = whitepaper_amounts(pos.liquidity, price, lower, upper)
    expected = (b * price + q) / (b0 * price + q0) - 1
    assert pos.impermanent_loss(price) == pytest.approx(expected, rel=1e-9, abs=1e-14)
    assert pos.loss_vs_hold(price) == pytest.approx(
        (b * price + q) - (b0 * price + q0), rel=1e-9, abs=1e-9
    )


@given(
    lower=st.floats(min_value=1e-3, max_value=1e3),
    width=st.floats(min_value=1.001, max_value=100.0),
    entry_at=st.floats(min_value=0.0, max_value=1.0),
    price_at=st.floats(min_value=0.0, max_value=1.0),
)
def test_v3_il_closed_form_in_range(
    lower: float, width: float, entry_at: float, price_at: float
) -> None:
    upper = lower * width
    entry = lower * width**entry_at
    price = lower * width**price_at
    assume(lower <= entry < upper and lower <= price < upper)
    pos = Position(lower, upper, 1.0, entry)
    expected = v3_il_in_range(price / entry, lower, upper, entry)
    assert pos.impermanent_loss(price) == pytest.approx(expected, rel=1e-7, abs=1e-13)


@pytest.mark.parametrize(
    ("pair", "lower", "upper", "entry", "price"),
    [
        (TokenPair(6, 18, quote_is_token0=True), 1800.0, 2600.0, 2000.0, 2300.0),
        (TokenPair(6, 18, quote_is_token0=True), 1800.0, 2600.0, 2000.0, 1200.0),
        (TokenPair(18, 6, quote_is_token0=False), 1800.0, 2600.0, 2000.0, 1900.0),
        (TokenPair(18, 6, quote_is_token0=False), 1800.0, 2600.0, 2000.0, 2900.0),
        (TokenPair(8, 18, quote_is_token0=False), 10.0, 20.0, 15.0, 12.5),
        (TokenPair(18, 18, quote_is_token0=True), 0.5, 2.0, 1.0, 1.7),
    ],
)
def test_v3_amounts_through_raw_integer_path(
    pair: TokenPair, lower: float, upper: float, entry: float, price: float
) -> None:
    # An independent route: raw L, sqrtPriceX96 and the contracts' integer formulas.
    pos = Position(lower, upper, 250_000.0, entry)
    liquidity_raw = pos.liquidity_raw(pair)
    assert pair.liquidity_from_raw(liquidity_raw) == pytest.approx(pos.liquidity, rel=1e-12)
    amount0, amount1 = amounts_for_liquidity(
        liquidity_raw,
        pair.sqrt_price_x96(price),
        pair.sqrt_price_x96(lower),
        pair.sqrt_price_x96(upper),
    )
    base, quote = pair.amounts_to_human(amount0, amount1)
    exp_base, exp_quote = pos.amounts(price)
    assert base == pytest.approx(exp_base, rel=1e-9, abs=1e-9)
    assert quote == pytest.approx(exp_quote, rel=1e-9, abs=1e-6)
    b0, q0 = pos.entry_amounts
    assert (base * price + quote) / (b0 * price + q0) - 1 == pytest.approx(
        pos.impermanent_loss(price), rel=1e-8, abs=1e-12
    )


# -- properties ---------------------------------------------------------------------

bounds = st.one_of(st.none(), st.floats(min_value=1e-4, max_value=1e4))


@given(
    lower=bounds,
    upper=bounds,
    entry=prices,
    price=prices,
    value=st.floats(min_value=1e-6, max_value=1e12),
)
def test_il_never_positive(
    lower: float | None, upper: float | None, entry: float, price: float, value: float
) -> None:
    if lower is not None and upper is not None:
        lower, upper = min(lower, upper), max(lower, upper)
        assume(math.sqrt(lower) < math.sqrt(upper))
    pos = Position(lower, upper, value, entry)
    assert pos.impermanent_loss(price) <= 0
    assert pos.loss_vs_hold(price) <= 0


@given(
    lower=st.floats(min_value=1e-3, max_value=1e3),
    width=st.floats(min_value=1.0001, max_value=1e3),
    entry_at=st.floats(min_value=0.0, max_value=1.0),
    price_at=st.floats(min_value=0.0, max_value=1.0),
)
def test_v3_il_at_least_as_deep_as_v2_within_range(
    lower: float, width: float, entry_at: float, price_at: float
) -> None:
    upper = lower * width
    entry = min(lower * width**entry_at, upper)
    price = min(lower * width**price_at, upper)
    v3 = Position(lower, upper, 1.0, entry).impermanent_loss(price)
    v2 = Position.full_range(1.0, entry).impermanent_loss(price)
    assert v3 <= v2 + 1e-12 * abs(v2)


def test_il_depth_ordering_is_strict_for_a_real_move() -> None:
    # Concentration multiplies IL: +-10% range, 5% move.
    v3 = Position(0.9, 1.1, 1.0, 1.0).impermanent_loss(1.05)
    v2 = Position.full_range(1.0, 1.0).impermanent_loss(1.05)
    assert v3 < 5 * v2 < 0


# -- greeks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lower", "upper", "price"),
    [
        (None, None, 2000.0),
        (1800.0, 2600.0, 2000.0),
        (1800.0, 2600.0, 2500.0),
        (1800.0, 2600.0, 1500.0),  # below: linear in price, no gamma
        (1800.0, 2600.0, 3000.0),  # above: flat, no delta
        (None, 2600.0, 1000.0),
        (1800.0, None, 1e5),
    ],
)
def test_delta_gamma_vs_finite_differences(
    lower: float | None, upper: float | None, price: float
) -> None:
    pos = Position(lower, upper, 250_000.0, 2000.0)
    h = price * 1e-5
    fd_delta = (pos.value_at(price + h) - pos.value_at(price - h)) / (2 * h)
    fd_gamma = (pos.delta(price + h) - pos.delta(price - h)) / (2 * h)
    assert pos.delta(price) == pytest.approx(fd_delta, rel=1e-7, abs=1e-9)
    assert pos.gamma(price) == pytest.approx(fd_gamma, rel=1e-6, abs=1e-12)
    assert pos.delta(price) == pytest.approx(pos.amounts(price)[0], rel=1e-15)


def test_greeks_outside_range_and_at_edges() -> None:
    pos = Position(1800.0, 2600.0, 250_000.0, 2000.0)
    assert pos.delta(3000.0) == 0.0
    assert pos.gamma(3000.0) == 0.0
    assert pos.gamma(1500.0) == 0.0
    assert pos.delta(1500.0) == pytest.approx(pos.value_at(1500.0) / 1500.0)
    # right-hand derivatives at the edges: curved at lower, flat at upper
    assert pos.gamma(1800.0) < 0
    assert pos.gamma(2600.0) == 0.0
    assert pos.in_range(1800.0)
    assert not pos.in_range(2600.0)


def test_vectorised_matches_scalar() -> None:
    pos = Position(1800.0, 2600.0, 250_000.0, 2000.0)
    grid = np.geomspace(100.0, 10_000.0, 257)
    for method in (pos.value_at, pos.impermanent_loss, pos.delta, pos.gamma, pos.loss_vs_hold):
        out = method(grid)
        assert isinstance(out, np.ndarray)
        assert out.shape == grid.shape
        assert np.array_equal(out, np.array([method(float(p)) for p in grid]))
    base, quote = pos.amounts(grid)
    assert np.array_equal(pos.in_range(grid), (grid >= 1800.0) & (grid < 2600.0))
    assert np.allclose(base * grid + quote, pos.value_at(grid), rtol=1e-15)


# -- fees and break-even ----------------------------------------------------------------


def v2_break_even(entry: float, fees: float) -> tuple[float, float]:
    # V2 with L = 1: value = 2 s, hold = x0 s**2 + y0 with x0 = 1/s0, y0 = s0. Fees cover
    # the loss where x0 s**2 - 2 s + (y0 - fees) <= 0: between the roots of the quadratic.
    s0 = math.sqrt(entry)
    x0, y0 = 1 / s0, s0
    disc = math.sqrt(1 - x0 * (y0 - fees))
    lo = max((1 - disc) / x0, 0.0)
    hi = (1 + disc) / x0
    return lo**2, hi**2


@pytest.mark.parametrize(
    ("entry", "fees_fraction"),
    [(2000.0, 0.001), (2000.0, 0.05), (1.0, 0.2), (3e-5, 0.01), (1.0, 0.6)],
)
def test_break_even_v2_closed_form(entry: float, fees_fraction: float) -> None:
    value = 2 * math.sqrt(entry)  # L = 1
    pos = Position.full_range(value, entry)
    assert pos.liquidity == pytest.approx(1.0, rel=1e-15)
    fees = fees_fraction * value
    lo, hi = break_even(pos, fees)
    exp_lo, exp_hi = v2_break_even(entry, fees)
    assert lo == pytest.approx(exp_lo, rel=1e-9)
    assert hi == pytest.approx(exp_hi, rel=1e-9)


@given(
    lower=st.floats(min_value=0.1, max_value=10.0),
    width=st.floats(min_value=1.01, max_value=50.0),
    entry_at=st.floats(min_value=-0.5, max_value=1.5),
    fees_fraction=st.floats(min_value=0.0, max_value=0.5),
)
def test_break_even_brackets_the_roots(
    lower: float, width: float, entry_at: float, fees_fraction: float
) -> None:
    upper = lower * width
    entry = lower * width**entry_at
    pos = Position(lower, upper, 1000.0, entry)
    fees = fees_fraction * 1000.0
    lo, hi = pos.break_even(fees)
    assert 0 <= lo <= entry <= hi
    # At the bounds the fees still cover the loss; just outside they no longer do (up to
    # rounding: where the loss is nearly flat in price, the shortfall is within ulps).
    slack = 1e-12 * pos.value
    if lo > 0:
        assert pos.loss_vs_hold(lo) + fees >= 0
        assert pos.loss_vs_hold(lo * (1 - 1e-9)) + fees < slack
    if math.isfinite(hi):
        assert pos.loss_vs_hold(hi) + fees >= 0
        assert pos.loss_vs_hold(hi * (1 + 1e-9)) + fees < slack


def test_break_even_special_cases() -> None:
    pos = Position(1800.0, 2600.0, 250_000.0, 2000.0)
    # no fees: only the entry price breaks even (to the resolution of sqrt near it)
    assert pos.break_even(0.0) == pytest.approx((2000.0, 2000.0), rel=1e-14)
    # fees above the entry quote amount: going to 0 can never lose that much
    _, quote0 = pos.entry_amounts
    assert pos.break_even(quote0 * 1.01)[0] == 0.0
    assert pos.break_even(quote0 * 0.99)[0] > 0
    # entered above its range: all quote, nothing to lose going up
    above = Position(1800.0, 2600.0, 250_000.0, 3000.0)
    lo, hi = above.break_even(10.0)
    assert hi == math.inf
    assert 2600.0 > lo > 1800.0
    # entered below its range: all base, nothing to lose going down
    assert Position(1800.0, 2600.0, 250_000.0, 1000.0).break_even(10.0)[0] == 0.0
    # more fees, wider range
    a, b = pos.break_even(100.0), pos.break_even(1000.0)
    assert b[0] < a[0] < 2000.0 < a[1] < b[1]
    with pytest.raises(ValueError, match="fees"):
        pos.break_even(-1.0)


def test_fee_share_and_fees() -> None:
    v3 = Position(1800.0, 2600.0, 250_000.0, 2000.0)
    assert fee_share(v3, 2000.0, pool_liquidity_share=0.01, tvl=1e8) == 0.01
    assert fee_share(v3, 2000.0, tvl=1e8) == pytest.approx(250_000.0 / 1e8)
    assert fee_share(v3, 3000.0, pool_liquidity_share=0.01) == 0.0  # out of range earns nothing
    assert fee_share(v3, 2000.0) == 0.0  # no figure, no guess
    assert fee_share(v3, 2000.0, tvl=1.0) == 1.0  # capped
    with pytest.raises(ValueError, match="pool_liquidity_share"):
        fee_share(v3, 2000.0, pool_liquidity_share=1.5)
    assert fees_over_horizon(0.003, 1e6, 7.0, 0.01) == pytest.approx(0.003 * 1e6 * 7 * 0.01)
    assert fees_over_horizon(0.003, math.nan, 7.0, 0.01) == 0.0
    with pytest.raises(ValueError, match="fee"):
        fees_over_horizon(1.5, 1e6, 7.0, 0.01)
