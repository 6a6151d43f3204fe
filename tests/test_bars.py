"""The bar rules of rules.features.bars, through what the engine reports: epoch-aligned
bars, per-pool timelines, carried empty intervals, late and out-of-order samples, and the
checks of rows and sample values. (The reference model of the same rules,
``tests/oracles.PoolBars``, is held to the engine on random sequences in test_features.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import talib

from rules.features.engine import FeatureEngine, FeatureParams

INTERVAL = 60


def engine(n_pools: int = 1, **params: int) -> FeatureEngine:
    return FeatureEngine(FeatureParams(bar_interval=INTERVAL, **params), np.full(n_pools, 0.003))


def feed(
    eng: FeatureEngine,
    time: int,
    rows: list[int],
    prices: list[float],
    *,
    volumes: list[float] | None = None,
    tvls: list[float] | None = None,
) -> list[dict[str, float]]:
    """One update; the features of each listed row."""
    n = len(rows)
    snap = eng.update(
        time,
        np.array(rows, dtype=np.int64),
        np.array(prices),
        np.array(tvls) if tvls is not None else np.full(n, 1e6),
        np.full(n, 1e4),
        np.array(volumes) if volumes is not None else np.ones(n),
        np.ones(n, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
    )
    return [snap.row(i) for i in range(n)]


def test_one_pool_close_volume_and_epoch_alignment() -> None:
    eng = engine()
    for time, price, volume in ((125, 10.0, 1.0), (130, 12.0, 2.0), (150, 9.0, 3.0)):
        (row,) = feed(eng, time, [0], [price], volumes=[volume])  # bar [120, 180)
        assert row["price"] == price
        assert math.isnan(row["ret"])  # no closed bar yet
    (row,) = feed(eng, 179, [0], [11.0], volumes=[4.0])
    assert row["volume_24h"] == 10.0
    (row,) = feed(eng, 180, [0], [11.5], volumes=[5.0])  # first sample of [180, 240)
    assert row["price"] == 11.5
    assert row["ret"] == pytest.approx(math.log(11.5 / 11.0), rel=1e-12)  # closed at 11
    assert row["volume_24h"] == 15.0


def test_empty_intervals_carry_the_close() -> None:
    eng = engine(rsi_period=2, mev_window=3 * INTERVAL)
    feed(eng, 0, [0], [10.0], tvls=[100.0])
    feed(eng, 30, [0], [11.0], tvls=[110.0])
    (row,) = feed(eng, 200, [0], [13.0], tvls=[90.0])  # bar 3 ([180, 240))
    # Bar 0 closed at 11; bars 1 and 2 carried it: three closed bars, then the forming one.
    assert row["ret"] == pytest.approx(math.log(13.0 / 11.0), rel=1e-12)
    assert row["rsi"] == pytest.approx(talib.RSI(np.array([11.0, 11.0, 11.0, 13.0]), 2)[-1])
    assert row["rsi"] == 100.0
    assert row["volume_24h"] == 3.0  # the carried bars have no volume
    assert row["mev_score"] == 0.0  # one swap in the last 3 bars (none carried)
    # The carried bars kept the TVL at the close: L_eq fell from 110 / sqrt(11).
    drain = 1.0 - (90.0 / math.sqrt(13.0)) / (110.0 / math.sqrt(11.0))
    assert row["tvl_drain_1h"] == pytest.approx(drain, rel=1e-12)


def test_late_sample_is_dropped_and_counted() -> None:
    eng = engine(2)
    feed(eng, 10, [0, 1], [1.0, 2.0])
    feed(eng, 70, [0], [1.5])  # pool 0 closes bar 0; pool 1 is still in bar 0
    snap = eng.update(
        20,
        np.array([0, 1]),
        np.array([9.0, 2.5]),
        *(np.ones(2),) * 3,
        np.ones(2, dtype=np.int64),
        np.zeros(2, dtype=np.int64),
    )
    np.testing.assert_array_equal(snap.late_rows, [0])  # bar 0 of pool 0 is closed
    np.testing.assert_array_equal(eng.late_dropped, [1, 0])
    assert snap.values["price"][0] == 1.5  # pool 0's forming bar is untouched
    assert snap.values["volume_24h"][0] == 2.0
    assert snap.values["price"][1] == 2.5  # pool 1's bar 0 is still forming: accepted
    assert snap.values["volume_24h"][1] == 2.0


def test_out_of_order_inside_the_forming_bar() -> None:
    eng = engine()
    feed(eng, 30, [0], [10.0], tvls=[100.0])
    feed(eng, 50, [0], [11.0], tvls=[110.0])
    (row,) = feed(eng, 40, [0], [20.0], tvls=[999.0])  # older than the close: volume only
    assert (row["price"], row["tvl"]) == (11.0, 110.0)
    feed(eng, 10, [0], [5.0], tvls=[555.0])  # older than the open: volume only too
    (row,) = feed(eng, 50, [0], [12.0], tvls=[120.0])  # a tie with the close: later call wins
    assert (row["price"], row["tvl"], row["volume_24h"]) == (12.0, 120.0, 5.0)
    (row,) = feed(eng, 60, [0], [13.0])
    assert row["ret"] == pytest.approx(math.log(13.0 / 12.0), rel=1e-12)


def test_pools_have_independent_timelines() -> None:
    eng = engine(3)
    feed(eng, 0, [0, 1], [1.0, 2.0])
    (row,) = feed(eng, 130, [0], [1.1])  # only pool 0 rolls: bars 0, 1 closed
    assert row["ret"] == pytest.approx(math.log(1.1), rel=1e-12)
    # Pool 1 is still in its bar 0: a sample at 30 joins it (not late) ...
    (row,) = feed(eng, 30, [1], [2.1])
    assert row["price"] == 2.1
    assert math.isnan(row["ret"])
    # ... and its bars close only now, with its own sample; pool 2 starts.
    one, two = feed(eng, 131, [1, 2], [2.2, 3.0])
    assert one["ret"] == pytest.approx(math.log(2.2 / 2.1), rel=1e-12)
    assert math.isnan(two["ret"])
    np.testing.assert_array_equal(eng.late_dropped, [0, 0, 0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"price": [0.0]}, "price"),
        ({"price": [math.inf]}, "price"),
        ({"price": [math.nan]}, "price"),
        ({"volume": [-1.0]}, "volume"),
        ({"tvl": [math.inf]}, "tvl"),
        ({"tick_tvl": [-math.inf]}, "tick_tvl"),
        ({"swaps": [1], "mev_swaps": [2]}, "mev_swaps"),
        ({"mev_swaps": [-1]}, "mev_swaps"),
        ({"price": [1.0, 2.0]}, "price"),
        ({"swaps": [1.5]}, "swaps"),
        ({"swaps": [math.nan]}, "swaps"),
        ({"swaps": ["1"]}, "swaps"),
    ],
)
def test_invalid_samples_raise_and_change_nothing(
    kwargs: dict[str, list[float]], message: str
) -> None:
    eng = engine(2)
    before = eng.get_state()
    columns = {
        "price": [1.0],
        "tvl": [1.0],
        "tick_tvl": [1.0],
        "volume": [1.0],
        "swaps": [1],
        "mev_swaps": [0],
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        eng.update(0, np.array([0]), **{k: np.array(v) for k, v in columns.items()})
    after = eng.get_state()
    for key in ("floats", "ints"):
        np.testing.assert_array_equal(after[key], before[key])


@pytest.mark.parametrize(
    ("rows", "error"),
    [([0, 0], ValueError), ([2], IndexError), ([-1], IndexError), ([[0]], ValueError)],
)
def test_invalid_rows_raise(rows: list[int], error: type[Exception]) -> None:
    eng = engine(2)
    n = np.array(rows).shape[-1]
    with pytest.raises(error):
        eng.update(
            0,
            np.array(rows),
            *(np.ones(n),) * 4,
            np.ones(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
        )


def test_counts_may_come_as_whole_floats() -> None:
    eng = engine()
    ones = np.ones(1)
    snap = eng.update(0, np.array([0]), ones, ones, ones, ones, np.array([4.0]), np.array([1.0]))
    assert snap.values["mev_score"][0] == 0.25
