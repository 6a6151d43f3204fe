"""Exposure (value, delta, gamma, delta at the lower bound) and LP fee income."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rules.hedge.exposure import exposure, exposure_series, protection_price
from rules.hedge.fees import active_liquidity_share, fees_from_apr, fees_from_volume
from rules.hedge.lp import Position
from rules.hedge.volmodel import YEAR

RANGE = Position(80.0, 125.0, 10_000.0, 100.0)
FULL = Position.full_range(10_000.0, 100.0)


def test_in_range_figures_match_hand_values() -> None:
    e = exposure(RANGE, 100.0)
    liquidity = RANGE.liquidity
    assert e.region == "in"
    assert e.value == pytest.approx(10_000.0)
    assert e.delta == pytest.approx(liquidity * (1 / 10 - 1 / math.sqrt(125)))
    assert e.gamma == pytest.approx(-liquidity / (2 * 100.0**1.5))
    # at the lower bound the position is all base
    assert e.protection_price == 80.0
    assert e.delta_at_lower == pytest.approx(liquidity * (1 / math.sqrt(80) - 1 / math.sqrt(125)))


def test_range_above_the_price_has_no_delta_now_but_all_base_at_the_bound() -> None:
    e = exposure(RANGE, 130.0)
    assert e.region == "above"
    assert e.delta == 0.0
    assert e.gamma == 0.0
    assert e.delta_at_lower == pytest.approx(exposure(RANGE, 100.0).delta_at_lower)
    assert e.delta_at_lower > 0


def test_below_the_range_protection_starts_at_the_price() -> None:
    e = exposure(RANGE, 70.0)
    assert e.region == "below"
    assert e.protection_price == 70.0
    assert e.delta_at_lower == pytest.approx(e.delta)
    assert e.gamma == 0.0


def test_full_range_protects_from_a_share_of_the_price() -> None:
    e = exposure(FULL, 100.0, full_range_floor=0.8)
    assert e.region == "in"
    assert e.protection_price == pytest.approx(80.0)
    # V2: base = L / sqrt(p)
    assert e.delta_at_lower == pytest.approx(FULL.liquidity / math.sqrt(80.0))
    assert protection_price(FULL, 50.0, full_range_floor=0.5) == 25.0


@pytest.mark.parametrize("price", [81.0, 95.0, 100.0, 120.0])
@pytest.mark.parametrize("position", [RANGE, FULL])
def test_delta_and_gamma_are_finite_differences_of_value(position: Position, price: float) -> None:
    h = 1e-4 * price
    e = exposure(position, price)
    up, down = position.value_at(price + h), position.value_at(price - h)
    assert e.delta == pytest.approx((up - down) / (2 * h), rel=1e-6)
    assert e.gamma == pytest.approx((up - 2 * e.value + down) / (h * h), rel=1e-3)


def test_series_equals_the_scalar_call() -> None:
    prices = np.array([60.0, 80.0, 100.0, 124.9, 125.0, 200.0])
    s = exposure_series(RANGE, prices)
    for i, p in enumerate(prices):
        e = exposure(RANGE, float(p))
        assert (s.value[i], s.delta[i], s.gamma[i]) == pytest.approx((e.value, e.delta, e.gamma))
        assert s.delta_at_lower[i] == pytest.approx(e.delta_at_lower)
        assert s.region[i] == {"below": -1, "in": 0, "above": 1}[e.region]


def test_fee_share_is_of_active_liquidity_so_a_range_earns_more_per_dollar() -> None:
    prices = np.array([100.0])
    tvl = np.array([1_000_000.0])
    narrow = active_liquidity_share(RANGE, prices, tvl=tvl)[0]
    full = active_liquidity_share(FULL, prices, tvl=tvl)[0]
    # a full-range position's share of a full-range pool is value / TVL
    assert full == pytest.approx(10_000 / 1_000_000)
    assert narrow == pytest.approx(RANGE.liquidity / (1_000_000 / 20))
    assert narrow > 4 * full
    # a given pool liquidity wins; out of range earns nothing; NaN earns nothing
    pool = np.array([RANGE.liquidity * 10, RANGE.liquidity * 10, math.nan])
    share = active_liquidity_share(RANGE, np.array([100.0, 130.0, 100.0]), pool_liquidity=pool)
    assert share.tolist() == pytest.approx([0.1, 0.0, 0.0])


def test_fees_from_volume_and_from_apr() -> None:
    prices = np.array([100.0, 100.0, 130.0])
    volume = np.array([2_000_000.0, math.nan, 2_000_000.0])
    pool = np.full(3, RANGE.liquidity * 4)
    fees = fees_from_volume(RANGE, prices, volume, 0.003, pool_liquidity=pool)
    assert fees.tolist() == pytest.approx([0.003 * 2_000_000 / 4, 0.0, 0.0])
    apr = fees_from_apr(RANGE, prices, 3600.0, 0.2)
    assert apr.tolist() == pytest.approx(
        [0.2 * 10_000 * 3600 / YEAR, 0.2 * 10_000 * 3600 / YEAR, 0]
    )
    assert fees_from_apr(RANGE, prices, 3600.0, 0.2).sum() * YEAR / 3600 == pytest.approx(4_000)
