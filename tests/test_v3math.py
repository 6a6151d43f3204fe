"""Tick math against Uniswap's own test snapshot (TickMath.spec.ts.snap)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules.uniswap import (
    MAX_SQRT_RATIO,
    MAX_TICK,
    MIN_SQRT_RATIO,
    MIN_TICK,
    sqrt_ratio_at_tick,
    tick_at_sqrt_ratio,
)


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
