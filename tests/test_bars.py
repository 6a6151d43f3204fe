"""rules.features.bars: epoch-aligned bars, empty intervals, late and out-of-order samples."""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.features.bars import BarAggregator, ClosedBars

INTERVAL = 60


def _feed(
    agg: BarAggregator,
    time: int,
    rows: list[int],
    prices: list[float],
    *,
    volumes: list[float] | None = None,
    tvls: list[float] | None = None,
) -> ClosedBars:
    steps, _late = agg.update(
        time,
        np.array(rows, dtype=np.int64),
        np.array(prices),
        volume=None if volumes is None else np.array(volumes),
        tvl=None if tvls is None else np.array(tvls),
        swaps=np.ones(len(rows), dtype=np.int64),
        mev_swaps=np.zeros(len(rows), dtype=np.int64),
    )
    return ClosedBars.concat(steps)


def _bars(closed: ClosedBars) -> list[tuple[int, int, float, float, float, float, float, int]]:
    return [
        (
            int(closed.rows[i]),
            int(closed.start[i]),
            float(closed.open[i]),
            float(closed.high[i]),
            float(closed.low[i]),
            float(closed.close[i]),
            float(closed.volume[i]),
            int(closed.samples[i]),
        )
        for i in range(len(closed))
    ]


def test_one_pool_ohlcv_and_epoch_alignment() -> None:
    agg = BarAggregator(1, INTERVAL)
    assert len(_feed(agg, 125, [0], [10.0], volumes=[1.0])) == 0  # bar [120, 180)
    assert len(_feed(agg, 130, [0], [12.0], volumes=[2.0])) == 0
    assert len(_feed(agg, 150, [0], [9.0], volumes=[3.0])) == 0
    assert len(_feed(agg, 179, [0], [11.0], volumes=[4.0])) == 0
    closed = _feed(agg, 180, [0], [11.5], volumes=[5.0])  # first sample of [180, 240)
    assert _bars(closed) == [(0, 120, 10.0, 12.0, 9.0, 11.0, 10.0, 4)]
    assert agg.open[0] == 11.5
    assert agg.volume[0] == 5.0


def test_empty_intervals_carry_the_close() -> None:
    agg = BarAggregator(1, INTERVAL)
    _feed(agg, 0, [0], [10.0], volumes=[1.0], tvls=[100.0])
    _feed(agg, 30, [0], [11.0], volumes=[1.0], tvls=[110.0])
    closed = _feed(agg, 200, [0], [13.0], volumes=[1.0], tvls=[130.0])  # bar 3 ([180, 240))
    assert _bars(closed) == [
        (0, 0, 10.0, 11.0, 10.0, 11.0, 2.0, 2),
        (0, 60, 11.0, 11.0, 11.0, 11.0, 0.0, 0),
        (0, 120, 11.0, 11.0, 11.0, 11.0, 0.0, 0),
    ]
    np.testing.assert_array_equal(closed.tvl, [110.0, 110.0, 110.0])
    np.testing.assert_array_equal(closed.swaps, [2, 0, 0])


def test_late_sample_is_dropped_and_counted() -> None:
    agg = BarAggregator(2, INTERVAL)
    _feed(agg, 10, [0, 1], [1.0, 2.0])
    _feed(agg, 70, [0], [1.5])  # pool 0 closes bar 0; pool 1 is still in bar 0
    steps, late = agg.update(20, np.array([0, 1]), np.array([9.0, 2.5]))
    np.testing.assert_array_equal(late, [0])  # bar 0 of pool 0 is closed: immutable
    assert steps == []
    np.testing.assert_array_equal(agg.late_dropped, [1, 0])
    assert agg.high[0] == 1.5  # not touched by the late sample
    assert agg.close[1] == 2.5  # pool 1's bar 0 is still forming: accepted


def test_out_of_order_inside_the_forming_bar() -> None:
    agg = BarAggregator(1, INTERVAL)
    _feed(agg, 30, [0], [10.0], volumes=[1.0], tvls=[100.0])
    _feed(agg, 50, [0], [11.0], volumes=[1.0], tvls=[110.0])
    _feed(
        agg, 40, [0], [20.0], volumes=[1.0], tvls=[999.0]
    )  # older than the close: high/volume only
    _feed(agg, 10, [0], [5.0], volumes=[1.0], tvls=[555.0])  # older than the open: becomes the open
    _feed(
        agg, 50, [0], [12.0], volumes=[1.0], tvls=[120.0]
    )  # same time as the close: the later call wins
    closed = _feed(agg, 60, [0], [13.0])
    assert _bars(closed) == [(0, 0, 5.0, 20.0, 5.0, 12.0, 5.0, 5)]
    assert closed.tvl[0] == 120.0


def test_pools_have_independent_timelines() -> None:
    agg = BarAggregator(3, INTERVAL)
    _feed(agg, 0, [0, 1], [1.0, 2.0])
    closed = _feed(agg, 130, [0], [1.1])  # only pool 0 rolls
    assert [b[:2] for b in _bars(closed)] == [(0, 0), (0, 60)]
    closed = _feed(agg, 131, [1, 2], [2.2, 3.0])  # pool 1 rolls now, pool 2 starts
    assert [b[:2] for b in _bars(closed)] == [(1, 0), (1, 60)]
    np.testing.assert_array_equal(agg.bar_index, [2, 2, 2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"price": [0.0]}, "price"),
        ({"price": [math.inf]}, "price"),
        ({"price": [1.0], "volume": [-1.0]}, "volume"),
        ({"price": [1.0], "tvl": [math.inf]}, "tvl"),
        ({"price": [1.0], "swaps": [1], "mev_swaps": [2]}, "mev_swaps"),
        ({"price": [1.0, 2.0]}, "price"),
        ({"price": [1.0], "swaps": [1.5]}, "swaps"),
        ({"price": [1.0], "swaps": [math.nan]}, "swaps"),
        ({"price": [1.0], "swaps": ["1"]}, "swaps"),
    ],
)
def test_invalid_samples_raise(kwargs: dict[str, list[float]], message: str) -> None:
    agg = BarAggregator(2, INTERVAL)
    args = {k: np.array(v) for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=message):
        agg.update(0, np.array([0]), **args)


@pytest.mark.parametrize(
    ("rows", "error"),
    [([0, 0], ValueError), ([2], IndexError), ([-1], IndexError), ([[0]], ValueError)],
)
def test_invalid_rows_raise(rows: list[int], error: type[Exception]) -> None:
    agg = BarAggregator(2, INTERVAL)
    with pytest.raises(error):
        agg.update(0, np.array(rows), np.ones(np.array(rows).shape[-1]))


def test_counts_may_come_as_whole_floats() -> None:
    agg = BarAggregator(1, INTERVAL)
    agg.update(0, np.array([0]), np.array([1.0]), swaps=np.array([3.0]), mev_swaps=np.array([1.0]))
    assert agg.swaps[0] == 3
    assert agg.mev_swaps[0] == 1


def test_invalid_construction_raises() -> None:
    with pytest.raises(ValueError, match="interval"):
        BarAggregator(1, 0)
    with pytest.raises(ValueError, match="n_pools"):
        BarAggregator(-1, 60)
    with pytest.raises(ValueError, match="time"):
        BarAggregator(1, 60).update(-5, np.array([0]), np.array([1.0]))


# --------------------------------------------------------------------------- reference model


@dataclass
class _RefPool:
    """One pool, written the obvious way: the model the vectorised aggregator must match."""

    bar: int = -1
    bars: list[tuple[int, float, float, float, float, float, int]] = field(default_factory=list)
    cur: list[float] = field(default_factory=list)  # o, h, l, c, volume, open_t, close_t, n
    late: int = 0

    def add(self, time: int, price: float, volume: float) -> None:
        b = time // INTERVAL
        if self.bar >= 0 and b < self.bar:
            self.late += 1
            return
        if self.bar >= 0 and b > self.bar:
            o, h, lo, c, v, _ot, _ct, n = self.cur
            self.bars.append((self.bar * INTERVAL, o, h, lo, c, v, int(n)))
            for g in range(self.bar + 1, b):
                self.bars.append((g * INTERVAL, c, c, c, c, 0.0, 0))
            self.bar = -2
        if self.bar < 0:
            self.bar = b
            self.cur = [price, price, price, price, volume, time, time, 1]
            return
        o, h, lo, c, v, ot, ct, n = self.cur
        if time < ot:
            o, ot = price, time
        if time >= ct:
            c, ct = price, time
        self.cur = [o, max(h, price), min(lo, price), c, v + volume, ot, ct, n + 1]


@settings(max_examples=120, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=2),  # pool
            st.integers(min_value=-90, max_value=200),  # time step (negative: out of order)
            st.floats(min_value=0.5, max_value=2.0),  # price
            st.floats(min_value=0.0, max_value=5.0),  # volume
        ),
        max_size=60,
    )
)
def test_vectorised_aggregator_matches_reference(
    events: list[tuple[int, int, float, float]],
) -> None:
    agg = BarAggregator(3, INTERVAL)
    refs = [_RefPool() for _ in range(3)]
    got: list[list[tuple[int, float, float, float, float, float, int]]] = [[], [], []]
    time = 1000
    for pool, step, price, volume in events:
        time = max(0, time + step)
        refs[pool].add(time, price, volume)
        closed = _feed(agg, time, [pool], [price], volumes=[volume])
        for r, start, o, h, lo, c, v, n in _bars(closed):
            got[r].append((start, o, h, lo, c, v, n))
    for pool in range(3):
        assert got[pool] == refs[pool].bars
        assert agg.late_dropped[pool] == refs[pool].late


def test_state_round_trip_and_row_restore() -> None:
    agg = BarAggregator(2, INTERVAL)
    _feed(agg, 0, [0, 1], [1.0, 2.0], volumes=[1.0, 1.0])
    saved = pickle.loads(pickle.dumps(agg.get_state()))
    after_a = _feed(agg, 70, [0, 1], [1.1, 2.1], volumes=[1.0, 1.0])
    # Roll back pool 0 only, replay its sample: the same bar closes again.
    agg.set_state(saved, rows=np.array([0]))
    assert agg.bar_index[1] == 1
    replay = _feed(agg, 70, [0], [1.1], volumes=[1.0])
    assert _bars(replay) == [b for b in _bars(after_a) if b[0] == 0]
    fresh = BarAggregator(2, INTERVAL)
    fresh.set_state(agg.get_state())
    for name in BarAggregator._STATE:
        np.testing.assert_array_equal(getattr(fresh, name), getattr(agg, name))
    with pytest.raises(ValueError, match="interval"):
        BarAggregator(2, 30).set_state(saved)


def test_closed_bars_validates_and_concatenates() -> None:
    empty = ClosedBars.empty()
    assert len(ClosedBars.concat([])) == 0
    assert len(ClosedBars.concat([empty, empty])) == 0
    with pytest.raises(ValueError, match="rows must be int64"):
        ClosedBars(
            np.zeros(0),  # type: ignore[arg-type]  # wrong dtype on purpose
            *(getattr(empty, name) for name in ClosedBars.__slots__[1:]),
        )
    agg = BarAggregator(2, INTERVAL)
    _feed(agg, 0, [0, 1], [1.0, 2.0])
    closed = _feed(agg, 130, [0, 1], [1.0, 2.0])
    assert len(closed.for_row(1)) == 2
