"""Backtest charts: the envelope that long series are drawn by.

A line through :func:`daemon.backtest.chart.envelope`'s points must cover, in every bucket (a
pixel column), the same vertical extent as the whole series, start and end where the
whole series does, and keep NaN gaps.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from daemon.backtest.chart import ENVELOPE_POINTS_PER_PIXEL, envelope

values = st.floats(min_value=-1e6, max_value=1e6) | st.just(float("nan"))


@settings(max_examples=300, deadline=None)
@given(
    y=arrays(np.float64, st.integers(0, 3000), elements=values),
    columns=st.integers(1, 200),
)
def test_envelope_keeps_every_bucket_extent_ends_and_gaps(y: np.ndarray, columns: int) -> None:
    kept = envelope(y, columns)
    assert kept.dtype == np.int64
    if y.size <= ENVELOPE_POINTS_PER_PIXEL * columns:
        assert kept.tolist() == list(range(y.size))
        return
    assert np.all(np.diff(kept) > 0)  # in time order, no repeats
    assert kept[0] == 0
    assert kept[-1] == y.size - 1
    assert kept.size <= 4 * columns
    edges = np.linspace(0, y.size, columns + 1).astype(np.int64)
    for start, end in itertools.pairwise(edges):
        bucket = y[start:end]
        mine = kept[(kept >= start) & (kept < end)]
        assert start in mine
        assert end - 1 in mine
        finite = bucket[np.isfinite(bucket)]
        if finite.size:
            drawn = y[mine][np.isfinite(y[mine])]
            assert drawn.min() == finite.min()
            assert drawn.max() == finite.max()


def test_envelope_of_a_long_walk_is_small_and_exact_per_column() -> None:
    rng = np.random.default_rng(7)
    y = np.cumsum(rng.normal(size=35_000))
    y[:33] = np.nan  # an indicator's warm-up
    kept = envelope(y, 1308)
    assert kept.size <= 4 * 1308
    assert np.isnan(y[kept[0]])  # the gap is still there
    assert np.nanmax(y[kept]) == np.nanmax(y)
    assert np.nanmin(y[kept]) == np.nanmin(y)


@pytest.mark.parametrize("n", [0, 1, 5, 4 * 10])
def test_short_series_are_drawn_whole(n: int) -> None:
    assert envelope(np.arange(n, dtype=np.float64), 10).tolist() == list(range(n))
