"""The Uniswap math of ``rules.uniswap``, each conversion against an independent truth.

- TickMath against Uniswap's own test snapshot (``TickMath.spec.ts.snap``) and its
  definition; amounts and liquidity against exact rationals (the real contracts on
  anvil agree too: ``tests/test_lp_anvil.py``, ``tests/test_devchain.py``);
- :class:`TokenPair` conversions against ``fractions.Fraction`` and hand-worked pools;
- every float form against the exact integer form of the same definition;
- V2 swap math against the pair's own formula.
"""

from __future__ import annotations

import csv
import math
import re
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rules.types import ValidationError
from rules.uniswap import (
    FEE_BY_TICK_SPACING,
    MAX_SQRT_RATIO,
    MAX_TICK,
    MIN_SQRT_RATIO,
    MIN_TICK,
    Q96,
    TokenPair,
    amounts_for_liquidity,
    amounts_from_liquidity,
    full_range_ticks,
    liquidity_for_amounts,
    quote_per_base,
    sqrt_ratio_at_tick,
    tick_at_sqrt_ratio,
    tick_range,
    tick_tvl,
    v2_amount_in_for_price,
    v2_amount_out,
    widen_to_spacing,
)

prices = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
decimals = st.sampled_from([0, 6, 8, 18])
spacings = st.sampled_from(sorted(FEE_BY_TICK_SPACING))


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def bits(value: float) -> bytes:
    return struct.pack("<d", float(value))


# -- TickMath -------------------------------------------------------------------------------


def test_boundaries() -> None:
    assert sqrt_ratio_at_tick(MIN_TICK) == MIN_SQRT_RATIO
    assert sqrt_ratio_at_tick(MAX_TICK) == MAX_SQRT_RATIO
    assert sqrt_ratio_at_tick(0) == 1 << 96
    assert tick_at_sqrt_ratio(MIN_SQRT_RATIO) == MIN_TICK
    assert tick_at_sqrt_ratio(MAX_SQRT_RATIO - 1) == MAX_TICK - 1
    with pytest.raises(ValueError, match="outside"):
        sqrt_ratio_at_tick(MAX_TICK + 1)
    with pytest.raises(ValueError, match="outside"):
        tick_at_sqrt_ratio(MAX_SQRT_RATIO)
    with pytest.raises(ValueError, match="outside"):
        tick_at_sqrt_ratio(MIN_SQRT_RATIO - 1)


@pytest.mark.shared_data
def test_uniswap_vectors(shared_data: Path) -> None:
    with (shared_data / "derived" / "uniswap_v3_tickmath_vectors.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 40
    for row in rows:
        tick, sqrt_price = int(row["tick"]), int(row["sqrtPriceX96"])
        if row["function"] == "getSqrtRatioAtTick":
            assert sqrt_ratio_at_tick(tick) == sqrt_price, row
        else:
            assert tick_at_sqrt_ratio(sqrt_price) == tick, row


@pytest.mark.shared_data
def test_snapshot_file_directly(shared_data: Path) -> None:
    text = (
        shared_data / "reference_vectors" / "uniswap_v3_core" / "TickMath.spec.ts.snap"
    ).read_text()
    pairs = re.findall(r"#getSqrtRatioAtTick tick (-?\d+) result 1`\] = `\"(\d+)\"`", text)
    checked = 0
    for tick, value in pairs:
        t = int(tick)
        if MIN_TICK <= t <= MAX_TICK and int(value) > 1000:
            assert sqrt_ratio_at_tick(t) == int(value)
            checked += 1
    assert checked >= 10


@given(st.integers(MIN_TICK, MAX_TICK - 1))
def test_tick_round_trip(tick: int) -> None:
    ratio = sqrt_ratio_at_tick(tick)
    assert tick_at_sqrt_ratio(ratio) == tick
    assert tick_at_sqrt_ratio(sqrt_ratio_at_tick(tick + 1) - 1) == tick
    assert sqrt_ratio_at_tick(tick + 1) > ratio


@given(st.integers(MIN_SQRT_RATIO, MAX_SQRT_RATIO - 1))
def test_tick_at_sqrt_ratio_is_its_definition(sqrt_price_x96: int) -> None:
    # The greatest tick whose ratio is <= the input, wherever the input falls.
    tick = tick_at_sqrt_ratio(sqrt_price_x96)
    assert sqrt_ratio_at_tick(tick) <= sqrt_price_x96 < sqrt_ratio_at_tick(tick + 1)


# -- tick ranges ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tick", "spacing", "expected"),
    [
        (0, 10, (0, 10)),
        (9, 10, (0, 10)),
        (10, 10, (10, 20)),
        (-1, 10, (-10, 0)),
        (-10, 10, (-10, 0)),
        (-11, 60, (-60, 0)),
        (MIN_TICK, 60, (MIN_TICK, -887220)),  # floor(-887272 / 60) * 60 = -887280: cut
        (MAX_TICK, 200, (887200, MAX_TICK)),
    ],
)
def test_tick_range_is_the_floor_of_the_tick(
    tick: int, spacing: int, expected: tuple[int, int]
) -> None:
    assert tick_range(tick, spacing) == expected


def test_full_range_ticks_are_inside_the_tick_bounds() -> None:
    assert full_range_ticks(1) == (MIN_TICK, MAX_TICK)
    assert full_range_ticks(10) == (-887270, 887270)
    assert full_range_ticks(60) == (-887220, 887220)
    assert full_range_ticks(200) == (-887200, 887200)
    with pytest.raises(ValueError, match="tick_spacing"):
        full_range_ticks(0)


@pytest.mark.parametrize(
    ("a", "b", "spacing", "expected"),
    [
        (1, 59, 60, (0, 60)),
        (59, 1, 60, (0, 60)),  # either order
        (-61, 61, 60, (-120, 120)),
        (60, 60, 60, (60, 120)),  # never empty
        (MIN_TICK, MAX_TICK, 60, (-887220, 887220)),  # clamped to the usable range
    ],
)
def test_widen_to_spacing(a: int, b: int, spacing: int, expected: tuple[int, int]) -> None:
    assert widen_to_spacing(a, b, spacing) == expected


# -- amounts and liquidity (SqrtPriceMath, LiquidityAmounts) ---------------------------------


def test_amounts_for_liquidity_hand_computed() -> None:
    # sqrt prices 1 (tick 0), 2 and 4 (as Q96); L = 1000 raw.
    s1, s2, s4 = Q96, 2 * Q96, 4 * Q96
    # in range at 2: amount0 = L (1/2 - 1/4) = 250, amount1 = L (2 - 1) = 1000
    assert amounts_for_liquidity(1000, s2, s1, s4) == (250, 1000)
    assert amounts_for_liquidity(1000, s1, s1, s4) == (750, 0)  # at lower: all token0
    assert amounts_for_liquidity(1000, s4, s1, s4) == (0, 3000)  # at upper: all token1
    # L = 1001 at 2: amount0 = 1001/4 = 250.25 -> 250 down, 251 up
    assert amounts_for_liquidity(1001, s2, s1, s4) == (250, 1001)
    assert amounts_for_liquidity(1001, s2, s1, s4, round_up=True) == (251, 1001)
    with pytest.raises(ValueError, match="liquidity_raw"):
        amounts_for_liquidity(-1, s2, s1, s4)
    with pytest.raises(ValueError, match="empty"):
        liquidity_for_amounts(s2, s1, s1, 1, 1)


@given(
    liquidity=st.integers(min_value=0, max_value=2**128 - 1),
    ticks=st.lists(st.integers(min_value=-200_000, max_value=200_000), min_size=3, max_size=3),
)
def test_amounts_rounding_and_liquidity_for_amounts(liquidity: int, ticks: list[int]) -> None:
    lower, current, upper = sorted(ticks)
    assume(lower < upper)
    sa, sp, sb = (sqrt_ratio_at_tick(t) for t in (lower, current, upper))
    down = amounts_for_liquidity(liquidity, sp, sa, sb)
    up = amounts_for_liquidity(liquidity, sp, sa, sb, round_up=True)
    assert all(0 <= d <= u <= d + 1 for d, u in zip(down, up, strict=True))
    # Exact rational amounts lie between the two roundings.
    if sa < sp < sb:
        exact0 = Fraction(liquidity * Q96) * (sb - sp) / (sb * sp)
        exact1 = Fraction(liquidity * (sp - sa), Q96)
        assert down[0] <= exact0 <= up[0]
        assert down[1] <= exact1 <= up[1]
    # Minting with the amounts it would need never asks for more than them.
    try:
        minted = liquidity_for_amounts(sp, sa, sb, up[0], up[1])
    except ValueError:
        return  # over uint128 for extreme inputs, as the contract's toUint128
    # The periphery floors an intermediate product: it may mint a hair less than L.
    assert minted >= liquidity - 1 - liquidity // 10**15
    need = amounts_for_liquidity(minted, sp, sa, sb, round_up=True)
    assert need[0] <= up[0]
    assert need[1] <= up[1]


# -- TokenPair: raw token0/token1 units <-> human base/quote --------------------------------


def test_usdc_weth_orientation() -> None:
    # USDC (6 decimals) is token0 and the quote; WETH (18) is token1 and the base.
    pair = TokenPair(6, 18, quote_is_token0=True)
    assert pair == TokenPair.of(base_is_token0=False, decimals0=6, decimals1=18)
    sqrt_price = pair.sqrt_price_x96(2000.0)
    # raw price = WETH wei per USDC unit = (1/2000) * 1e12 = 5e8
    assert sqrt_price == math.isqrt(5 * 10**8 * 2**192)
    assert pair.price_from_sqrt_price_x96(sqrt_price) == 2000.0
    tick = pair.tick(2000.0)
    assert tick == math.floor(math.log(5e8) / math.log(1.0001))
    assert sqrt_ratio_at_tick(tick) <= sqrt_price < sqrt_ratio_at_tick(tick + 1)
    # a higher ETH price is a lower pool tick: the range flips
    lo, hi = pair.range_from_ticks(tick - 600, tick + 600)
    assert lo < 2000.0 < hi
    assert lo == pair.price_at_tick(tick + 600)
    assert hi == pytest.approx(2000.0 * 1.0001**600, rel=1e-4)
    assert pair.amounts_to_human(2_000_000, 10**18) == (1.0, 2.0)
    assert pair.value_in_quote(2_000_000, 10**18, 2000.0) == 2002.0  # 1 WETH + 2 USDC
    # V2 reserves of 2,000,000 USDC and 1,000 WETH: 2000 USDC per WETH.
    assert pair.price_from_reserves(2_000_000 * 10**6, 1_000 * 10**18) == 2000.0
    with pytest.raises(ValueError, match="tick_lower"):
        pair.range_from_ticks(5, 5)
    with pytest.raises(ValueError, match="reserves"):
        pair.price_from_reserves(0, 1)


def test_token_pair_rejects_bad_decimals() -> None:
    with pytest.raises(ValidationError, match="decimals1"):
        TokenPair(18, 78, quote_is_token0=False)
    with pytest.raises(ValidationError, match="decimals0"):
        TokenPair(True, 6, quote_is_token0=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "pair", [TokenPair(18, 6, False), TokenPair(6, 18, True), TokenPair(0, 0, False)]
)
@pytest.mark.parametrize("price", [1e-6, 0.37, 1.0, 2000.0, 65_432.1])
def test_price_round_trips(pair: TokenPair, price: float) -> None:
    assert pair.price_from_sqrt_price_x96(pair.sqrt_price_x96(price)) == (
        pytest.approx(price, rel=1e-12)
    )
    assert pair.human_price(pair.raw_price(price)) == price


@given(price=prices, base_is_token0=st.booleans(), d0=decimals, d1=decimals)
def test_sqrt_price_round_trip(price: float, base_is_token0: bool, d0: int, d1: int) -> None:
    pair = TokenPair.of(base_is_token0=base_is_token0, decimals0=d0, decimals1=d1)
    assert _rel(pair.price_from_sqrt_price_x96(pair.sqrt_price_x96(price)), price) < 1e-12


def test_sqrt_price_is_the_floor_of_the_exact_root() -> None:
    # 3000 USDC(6) per WETH(18), WETH token0: raw price 3000e-12.
    got = TokenPair(18, 6, quote_is_token0=False).sqrt_price_x96(3000.0)
    exact = Fraction(3000) * Fraction(1, 10**12) * (1 << 192)
    assert got**2 <= exact < (got + 1) ** 2


def test_sqrt_price_outside_what_a_pool_holds_is_refused() -> None:
    pair = TokenPair(0, 0, quote_is_token0=False)
    with pytest.raises(ValueError, match="outside the range"):
        pair.sqrt_price_x96(1e-40)
    with pytest.raises(ValueError, match="outside the range"):
        pair.sqrt_price_x96(1e39)
    with pytest.raises(ValueError, match="positive"):
        pair.sqrt_price_x96(math.nan)


def exact_price(pair: TokenPair, sqrt_price_x96: int) -> Fraction:
    raw = Fraction(sqrt_price_x96 * sqrt_price_x96, 1 << 192)
    token1_per_token0 = raw * Fraction(10) ** (pair.decimals0 - pair.decimals1)
    return 1 / token1_per_token0 if pair.quote_is_token0 else token1_per_token0


@given(
    sqrt_price_x96=st.integers(2**80, 2**120),
    decimals0=st.integers(0, 24),
    decimals1=st.integers(0, 24),
    quote_is_token0=st.booleans(),
)
def test_price_from_sqrt_price_is_the_exact_price_correctly_rounded(
    sqrt_price_x96: int, decimals0: int, decimals1: int, quote_is_token0: bool
) -> None:
    pair = TokenPair(decimals0, decimals1, quote_is_token0=quote_is_token0)
    exact = exact_price(pair, sqrt_price_x96)
    assert pair.price_from_sqrt_price_x96(sqrt_price_x96) == float(exact)
    # Reserves in the same ratio give the same price.
    assert pair.price_from_reserves(1 << 192, sqrt_price_x96**2) == float(exact)


@pytest.mark.parametrize(
    ("price", "base_is_token0", "d0", "d1", "tick"),
    [
        (1.0, True, 18, 18, 0),
        # The float nearest 1.0001 is a hair below it, so below tick 1's sqrt ratio.
        (1.0001, True, 18, 18, 0),
        (0.5, True, 18, 18, -6932),
        (3000.0, True, 18, 6, -196257),  # WETH token0, USDC token1
        (3000.0, False, 6, 18, 196256),  # USDC token0, WETH token1: inverted price
    ],
)
def test_tick_table(price: float, base_is_token0: bool, d0: int, d1: int, tick: int) -> None:
    pair = TokenPair.of(base_is_token0=base_is_token0, decimals0=d0, decimals1=d1)
    assert pair.tick(price) == tick


@given(price=prices, base_is_token0=st.booleans(), d0=decimals, d1=decimals)
def test_tick_of_a_price_is_the_pools_tick(
    price: float, base_is_token0: bool, d0: int, d1: int
) -> None:
    pair = TokenPair.of(base_is_token0=base_is_token0, decimals0=d0, decimals1=d1)
    tick, sqrt_price_x96 = pair.tick(price), pair.sqrt_price_x96(price)
    assert sqrt_ratio_at_tick(tick) <= sqrt_price_x96 < sqrt_ratio_at_tick(tick + 1)


@pytest.mark.parametrize("base_is_token0", [True, False])
@pytest.mark.parametrize("spacing", sorted(FEE_BY_TICK_SPACING))
def test_range_ticks_cover_the_range_and_align(base_is_token0: bool, spacing: int) -> None:
    d0, d1 = (18, 6) if base_is_token0 else (6, 18)
    pair = TokenPair.of(base_is_token0=base_is_token0, decimals0=d0, decimals1=d1)
    lower, upper = pair.range_ticks(2700.0, 3300.0, spacing)
    assert lower < upper
    assert lower % spacing == 0
    assert upper % spacing == 0
    inner = sorted(pair.tick(p) for p in (2700.0, 3300.0))
    assert lower <= inner[0]
    assert upper >= inner[1]
    assert upper - lower <= inner[1] - inner[0] + 2 * spacing  # widened by less than a step
    # Back to prices: the human range covers what was asked.
    low, high = pair.range_from_ticks(lower, upper)
    assert low <= 2700.0
    assert high >= 3300.0
    with pytest.raises(ValueError, match="below"):
        pair.range_ticks(3300.0, 2700.0, spacing)


@given(
    a=prices,
    b=prices,
    base_is_token0=st.booleans(),
    d0=decimals,
    d1=decimals,
    spacing=spacings,
)
def test_range_ticks_give_back_a_range_holding_both_prices(
    a: float, b: float, base_is_token0: bool, d0: int, d1: int, spacing: int
) -> None:
    assume(a < b)
    pair = TokenPair.of(base_is_token0=base_is_token0, decimals0=d0, decimals1=d1)
    lower, upper = pair.range_ticks(a, b, spacing)
    assert lower % spacing == 0
    assert upper % spacing == 0
    low, high = pair.range_from_ticks(lower, upper)
    assert low <= a
    assert high >= b


def test_liquidity_raw_scale() -> None:
    pair = TokenPair(6, 18, quote_is_token0=True)
    assert pair.liquidity_to_raw(1.0) == 10**12
    assert pair.liquidity_from_raw(10**12) == 1.0
    odd = TokenPair(6, 7, quote_is_token0=False)  # sqrt(10**13) is irrational
    assert odd.liquidity_to_raw(1.0) == math.isqrt(10**13)


# -- float forms against the exact ones --------------------------------------------------------


@settings(max_examples=200)
@given(
    ticks=st.lists(st.integers(-400_000, 400_000), min_size=1, max_size=20),
    d0=decimals,
    d1=decimals,
    quote_is_token0=st.booleans(),
)
def test_quote_per_base_is_the_price_at_each_tick(
    ticks: list[int], d0: int, d1: int, quote_is_token0: bool
) -> None:
    pair = TokenPair(d0, d1, quote_is_token0=quote_is_token0)
    got = quote_per_base(np.array(ticks), d0, d1, quote_is_token0=quote_is_token0)
    expected = [pair.price_at_tick(t) for t in ticks]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@settings(max_examples=200)
@given(
    tick=st.integers(-300_000, 300_000),
    liquidity=st.integers(10**6, 10**30),
    spacing=spacings,
    quote_is_token0=st.booleans(),
)
def test_tick_tvl_agrees_with_the_contract_integers(
    tick: int, liquidity: int, spacing: int, quote_is_token0: bool
) -> None:
    d0, d1 = 6, 18
    ticks = np.array([tick])
    price = quote_per_base(ticks, d0, d1, quote_is_token0=quote_is_token0)
    got = tick_tvl(
        ticks,
        np.array([float(liquidity)]),
        tick_spacing=spacing,
        decimals0=d0,
        decimals1=d1,
        price=price,
        quote_is_token0=quote_is_token0,
    )
    lower, upper = tick_range(tick, spacing)
    amount0, amount1 = amounts_for_liquidity(
        liquidity, sqrt_ratio_at_tick(tick), sqrt_ratio_at_tick(lower), sqrt_ratio_at_tick(upper)
    )
    p = float(price[0])
    if quote_is_token0:
        expected, one_unit_each = amount0 / 1e6 + amount1 / 1e18 * p, 1e-6 + p / 1e18
    else:
        expected, one_unit_each = amount1 / 1e18 + amount0 / 1e6 * p, 1e-18 + p / 1e6
    # The integers round each amount down by less than one raw unit.
    assert float(got[0]) == pytest.approx(expected, rel=1e-9, abs=one_unit_each)


def test_tick_tvl_of_nan_liquidity_is_nan() -> None:
    ticks = np.array([0, 10])
    price = quote_per_base(ticks, 6, 6, quote_is_token0=False)
    got = tick_tvl(
        ticks,
        np.array([math.nan, 1e12]),
        tick_spacing=10,
        decimals0=6,
        decimals1=6,
        price=price,
        quote_is_token0=False,
    )
    assert math.isnan(got[0])
    assert got[1] > 0


bounds = st.floats(min_value=1e-4, max_value=1e4)


@given(
    liquidity=st.floats(min_value=1e-6, max_value=1e12),
    price=st.floats(min_value=1e-8, max_value=1e8),
    a=bounds,
    b=bounds,
    full_range=st.booleans(),
)
def test_amounts_from_liquidity_one_float_is_the_array_form_bit_for_bit(
    liquidity: float, price: float, a: float, b: float, full_range: bool
) -> None:
    sqrt_lower, sqrt_upper = (0.0, math.inf) if full_range else sorted(map(math.sqrt, (a, b)))
    assume(sqrt_lower < sqrt_upper)
    one = amounts_from_liquidity(liquidity, price, sqrt_lower, sqrt_upper)
    array = amounts_from_liquidity(liquidity, np.asarray([price]), sqrt_lower, sqrt_upper)
    assert all(isinstance(x, float) for x in one)
    assert [bits(x) for x in one] == [bits(x[0]) for x in array]
    with pytest.raises(ValueError, match="positive"):
        amounts_from_liquidity(liquidity, 0.0, sqrt_lower, sqrt_upper)


@given(
    liquidity=st.integers(10**12, 10**30),
    ticks=st.lists(st.integers(min_value=-200_000, max_value=200_000), min_size=3, max_size=3),
)
def test_amounts_from_liquidity_in_raw_units_are_the_contract_amounts(
    liquidity: int, ticks: list[int]
) -> None:
    lower, current, upper = sorted(ticks)
    assume(lower < upper)
    sa, sp, sb = (sqrt_ratio_at_tick(t) for t in (lower, current, upper))
    amount0, amount1 = amounts_for_liquidity(liquidity, sp, sa, sb)
    x, y = amounts_from_liquidity(float(liquidity), (sp / Q96) ** 2, sa / Q96, sb / Q96)
    assert x == pytest.approx(amount0, rel=1e-9, abs=1.0)
    assert y == pytest.approx(amount1, rel=1e-9, abs=1.0)


# -- V2 -------------------------------------------------------------------------------------


@settings(max_examples=200)
@given(
    reserve_in=st.integers(min_value=10**9, max_value=10**30),
    reserve_out=st.integers(min_value=10**9, max_value=10**30),
    drop=st.floats(min_value=1e-6, max_value=0.9),
)
def test_v2_amount_in_lands_on_the_target(reserve_in: int, reserve_out: int, drop: float) -> None:
    target = Fraction(reserve_out, reserve_in) * (1 - Fraction(drop))
    amount = v2_amount_in_for_price(reserve_in, reserve_out, target)
    out = v2_amount_out(amount, reserve_in, reserve_out)
    ratio = Fraction(reserve_out - out, reserve_in + amount)
    # Integer amounts: one unit of either reserve is the resolution of the landing.
    assert abs(ratio / target - 1) <= Fraction(4, reserve_in) + Fraction(4, reserve_out)


def test_v2_amount_out_matches_the_pair_formula() -> None:
    # 1 in, reserves 1000/1000: 997*1000 / (1000*1000 + 997) floored.
    assert v2_amount_out(1_000, 1_000_000, 1_000_000) == 996
    with pytest.raises(ValueError, match="positive"):
        v2_amount_out(0, 1, 1)
    with pytest.raises(ValueError, match="below the current"):
        v2_amount_in_for_price(1_000, 1_000, Fraction(2))
