"""rules.indicators: TA-Lib agreement, edge cases, streaming == batch, save/restore."""

from __future__ import annotations

import csv
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from rules import indicators as ind

F64 = NDArray[np.float64]
TOL = 1e-9


def _random_walk(seed: int, n: int, start: float = 100.0, vol: float = 0.01) -> F64:
    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0.0, vol, n)))


def _eth_closes(shared_data: Path) -> F64:
    path = shared_data / "cex_ohlcv" / "binance_spot_ETH_USDT-1h_2018-2021.csv"
    with path.open(newline="") as fh:
        return np.array([float(row["close"]) for row in csv.DictReader(fh)])


def _assert_close_to_talib(ours: F64, theirs: F64) -> None:
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg="NaN positions")
    valid = ~np.isnan(theirs)
    assert valid.any()
    assert float(np.max(np.abs(ours[valid] - theirs[valid]))) <= TOL


# Each case: name, ours(x) -> tuple of arrays, talib(x) -> tuple of arrays.
Case = tuple[str, Callable[[F64], tuple[F64, ...]], Callable[[F64], tuple[F64, ...]]]
CASES: list[Case] = [
    ("ema10", lambda x: (ind.ema(x, 10),), lambda x: (talib.EMA(x, 10),)),
    ("ema2", lambda x: (ind.ema(x, 2),), lambda x: (talib.EMA(x, 2),)),
    ("ema50", lambda x: (ind.ema(x, 50),), lambda x: (talib.EMA(x, 50),)),
    ("rsi14", lambda x: (ind.rsi(x),), lambda x: (talib.RSI(x, 14),)),
    ("rsi2", lambda x: (ind.rsi(x, 2),), lambda x: (talib.RSI(x, 2),)),
    ("rsi30", lambda x: (ind.rsi(x, 30),), lambda x: (talib.RSI(x, 30),)),
    ("macd", ind.macd, lambda x: talib.MACD(x, 12, 26, 9)),
    ("macd_5_35_5", lambda x: ind.macd(x, 5, 35, 5), lambda x: talib.MACD(x, 5, 35, 5)),
    ("macd_sig1", lambda x: ind.macd(x, 3, 6, 1), lambda x: talib.MACD(x, 3, 6, 1)),
    ("bbands", ind.bbands, lambda x: talib.BBANDS(x, 20, 2.0, 2.0, talib.MA_Type.SMA)),
    (
        "bbands_5_1",
        lambda x: ind.bbands(x, 5, 1.0),
        lambda x: talib.BBANDS(x, 5, 1.0, 1.0, talib.MA_Type.SMA),
    ),
    (
        "bbands_50_3",
        lambda x: ind.bbands(x, 50, 3.0),
        lambda x: talib.BBANDS(x, 50, 3.0, 3.0, talib.MA_Type.SMA),
    ),
]


@pytest.mark.parametrize(("name", "ours", "theirs"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("walk", [(1, 100.0, 0.01), (2, 2500.0, 0.03), (3, 1.0, 1e-4)])
def test_matches_talib_on_random_walks(
    name: str,
    ours: Callable[[F64], tuple[F64, ...]],
    theirs: Callable[[F64], tuple[F64, ...]],
    walk: tuple[int, float, float],
) -> None:
    seed, start, vol = walk
    x = _random_walk(seed, 3000, start, vol)
    for a, b in zip(ours(x), theirs(x), strict=True):
        _assert_close_to_talib(a, b)


@pytest.mark.shared_data
@pytest.mark.parametrize(("name", "ours", "theirs"), CASES, ids=[c[0] for c in CASES])
def test_matches_talib_on_real_eth_hourly(
    shared_data: Path,
    name: str,
    ours: Callable[[F64], tuple[F64, ...]],
    theirs: Callable[[F64], tuple[F64, ...]],
) -> None:
    x = _eth_closes(shared_data)
    assert x.size == 34_943
    for a, b in zip(ours(x), theirs(x), strict=True):
        _assert_close_to_talib(a, b)


@pytest.mark.parametrize(("name", "ours", "theirs"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("length", [0, 1, 2, 5, 13, 14, 15, 19, 20, 33, 34, 35])
def test_short_input_warm_up_matches_talib(
    name: str,
    ours: Callable[[F64], tuple[F64, ...]],
    theirs: Callable[[F64], tuple[F64, ...]],
    length: int,
) -> None:
    x = _random_walk(7, length)
    for a, b in zip(ours(x), theirs(x), strict=True):
        assert a.shape == (length,)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        valid = ~np.isnan(b)
        if valid.any():
            assert float(np.max(np.abs(a[valid] - b[valid]))) <= TOL


def test_short_input_is_all_nan() -> None:
    x = np.arange(1.0, 11.0)
    assert np.isnan(ind.ema(x, 11)).all()
    assert np.isnan(ind.rsi(x, 10)).all()
    assert all(np.isnan(a).all() for a in ind.macd(x, 3, 5, 7))
    assert all(np.isnan(a).all() for a in ind.bbands(x, 11))
    assert ind.ema(np.array([]), 3).shape == (0,)


@pytest.mark.parametrize(("name", "ours", "theirs"), CASES, ids=[c[0] for c in CASES])
def test_flat_series_matches_talib(
    name: str,
    ours: Callable[[F64], tuple[F64, ...]],
    theirs: Callable[[F64], tuple[F64, ...]],
) -> None:
    x = np.full(120, 1234.5)
    for a, b in zip(ours(x), theirs(x), strict=True):
        np.testing.assert_array_equal(a, b)


def test_flat_series_values_are_defined() -> None:
    x = np.full(60, 0.1)  # 0.1 is not exact in binary: no rounding residue may leak out
    assert (ind.rsi(x)[14:] == 0.0).all()  # TA-Lib 0.8.1: no gain and no loss reads 0.0
    upper, middle, lower = ind.bbands(x)
    assert (upper[19:] == middle[19:]).all()
    assert (lower[19:] == middle[19:]).all()
    hist = ind.macd(x)[2]
    assert np.nanmax(np.abs(hist)) < 1e-15


@pytest.mark.parametrize("period", [2, 3, 5, 20])
def test_a_window_that_became_flat_has_zero_width_at_once(period: int) -> None:
    # The window's first value is the one that changed: no change inside the window.
    x = np.array([1.0, 1.1, *[0.3] * period, 0.7, *[0.1] * (2 * period)])
    upper, middle, lower = ind.bbands(x, period, 2.0)
    flat = [period + 1, 2 * period + 2, len(x) - 1]
    for i in flat:
        assert upper[i] == lower[i] == middle[i], i
    assert upper[period + 2] > lower[period + 2]  # the window with 0.7 in it


def test_rsi_one_sided_moves() -> None:
    up = np.arange(1.0, 40.0)
    assert (ind.rsi(up)[14:] == 100.0).all()
    assert (ind.rsi(up[::-1])[14:] == 0.0).all()


def test_leading_nan_is_skipped_like_talib() -> None:
    x = _random_walk(11, 200)
    x[:9] = np.nan
    for _name, ours, theirs in CASES:
        for a, b in zip(ours(x), theirs(x), strict=True):
            _assert_close_to_talib(a, b)


@pytest.mark.parametrize("nan_at", [3, 30, 150])
def test_nan_after_start_poisons_every_later_value(nan_at: int) -> None:
    x = _random_walk(12, 200)
    x[nan_at] = np.nan
    clean = x.copy()
    clean[nan_at:] = np.nan  # what we output: everything from the NaN on is NaN
    outputs: list[tuple[F64, ...]] = [
        (ind.ema(x, 10),),
        (ind.rsi(x),),
        ind.macd(x),
        ind.bbands(x),
    ]
    for arrays in outputs:
        for a in arrays:
            assert np.isnan(a[nan_at:]).all()
    # Before the NaN, values equal those of the series cut at the NaN.
    for a, b in zip(ind.bbands(x), ind.bbands(x[:nan_at]), strict=True):
        np.testing.assert_array_equal(a[:nan_at], b)
    # TA-Lib agrees for EMA, MACD and BBANDS ...
    for ours, theirs in [
        ((ind.ema(x, 10),), (talib.EMA(x, 10),)),
        (ind.macd(x), talib.MACD(x, 12, 26, 9)),
        (ind.bbands(x), talib.BBANDS(x, 20, 2.0, 2.0, talib.MA_Type.SMA)),
    ]:
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    # ... but its RSI reads 0.0 ("oversold") after a NaN: the quirk we do not copy.
    if nan_at > 14:
        assert (talib.RSI(x, 14)[nan_at:] == 0.0).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ind.ema(np.ones(5), 1), "period"),
        (lambda: ind.rsi(np.ones(5), 0), "period"),
        (lambda: ind.macd(np.ones(5), 26, 12, 9), "fast < slow"),
        (lambda: ind.macd(np.ones(5), 12, 12, 9), "fast < slow"),
        (lambda: ind.macd(np.ones(5), 12, 26, 0), "signal"),
        (lambda: ind.bbands(np.ones(5), 20, -1.0), "nbdev"),
        (lambda: ind.bbands(np.ones(5), 20, math.inf), "nbdev"),
        (lambda: ind.ema(np.ones((2, 2)), 3), "1-D"),
        (lambda: ind.StreamingEMA(-1, 3), "n_series"),
    ],
)
def test_invalid_arguments_raise(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- streaming


def _make_streams(k: int, period: int) -> list[Any]:
    return [
        ind.StreamingEMA(k, period),
        ind.StreamingRSI(k, period),
        ind.StreamingMACD(k, period, period + 3, max(1, period - 1)),
        ind.StreamingBBands(k, period, 1.5),
    ]


def _batch(stream: Any, x: F64) -> tuple[F64, ...]:
    if isinstance(stream, ind.StreamingEMA):
        return (ind.ema(x, stream.period),)
    if isinstance(stream, ind.StreamingRSI):
        return (ind.rsi(x, stream.period),)
    if isinstance(stream, ind.StreamingMACD):
        return ind.macd(x, stream.fast, stream.slow, stream.signal)
    assert isinstance(stream, ind.StreamingBBands)
    return ind.bbands(x, stream.period, stream.nbdev)


def _as_tuple(value: Any) -> tuple[F64, ...]:
    return value if isinstance(value, tuple) else (value,)


_step = st.floats(min_value=-0.2, max_value=0.2, allow_nan=False)
_series = st.lists(st.one_of(_step, st.just(0.0), st.just(math.nan)), min_size=0, max_size=70)


def _to_prices(steps: list[float], start: float) -> F64:
    out = []
    price = start
    for s in steps:
        if math.isnan(s):
            out.append(math.nan)
        else:
            price = price * math.exp(s)
            out.append(price)
    return np.array(out, dtype=np.float64)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(_series, min_size=1, max_size=4),
    period=st.integers(min_value=2, max_value=6),
    schedule_seed=st.integers(min_value=0, max_value=2**32 - 1),
    start=st.sampled_from([1.0, 0.001, 2500.0]),
)
def test_streaming_equals_batch_for_any_split(
    steps: list[list[float]], period: int, schedule_seed: int, start: float
) -> None:
    series = [_to_prices(s, start * (i + 1)) for i, s in enumerate(steps)]
    k = len(series)
    streams = _make_streams(k, period)
    got: list[list[list[list[float]]]] = [[[] for _ in range(k)] for _ in streams]
    pos = [0] * k
    rng = np.random.default_rng(schedule_seed)
    while any(pos[i] < series[i].size for i in range(k)):
        # A random subset of the series that still have data gets its next close.
        mask = np.array([pos[i] < series[i].size and rng.random() < 0.6 for i in range(k)])
        x = np.array([series[i][pos[i]] if mask[i] else 0.0 for i in range(k)])
        use_rows = rng.random() < 0.5
        for s_i, stream in enumerate(streams):
            rows = np.flatnonzero(mask)
            peeked = _as_tuple(stream.peek(x[rows], rows))
            if use_rows:
                out = _as_tuple(stream.update_rows(rows, x[rows]))
                for a, b in zip(out, peeked, strict=True):
                    np.testing.assert_array_equal(a, b)
                per_row = {int(r): [float(o[j]) for o in out] for j, r in enumerate(rows)}
            else:
                out = _as_tuple(stream.update(x, mask))
                for a, b in zip(out, peeked, strict=True):
                    np.testing.assert_array_equal(a[rows], b)
                    assert np.isnan(a[~mask]).all()
                per_row = {int(r): [float(o[r]) for o in out] for r in rows}
            for r, values in per_row.items():
                got[s_i][r].append(values)
        for i in range(k):
            pos[i] += int(mask[i])
    for s_i, stream in enumerate(streams):
        for i in range(k):
            expected = _batch(stream, series[i])
            for q, exp in enumerate(expected):
                actual = np.array([v[q] for v in got[s_i][i]])
                np.testing.assert_array_equal(actual, exp)


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(_step, min_size=1, max_size=80),
    period=st.integers(min_value=2, max_value=20),
)
def test_rsi_is_between_0_and_100(steps: list[float], period: int) -> None:
    values = ind.rsi(_to_prices(steps, 50.0), period)
    valid = values[~np.isnan(values)]
    assert ((valid >= 0.0) & (valid <= 100.0)).all()


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(_step, min_size=2, max_size=80),
    cut=st.integers(min_value=0, max_value=80),
    period=st.integers(min_value=2, max_value=5),
    restore_rows=st.booleans(),
)
def test_save_restore_mid_stream_continues_identically(
    steps: list[float], cut: int, period: int, restore_rows: bool
) -> None:
    k = 3
    data = np.stack([_to_prices(steps, 10.0 * (i + 1)) for i in range(k)], axis=1)  # (T, K)
    cut = min(cut, data.shape[0])
    for make in (
        lambda: ind.StreamingEMA(k, period),
        lambda: ind.StreamingRSI(k, period),
        lambda: ind.StreamingMACD(k, period, period + 2, period),
        lambda: ind.StreamingBBands(k, period),
    ):
        reference = make()
        expected = [_as_tuple(reference.update(row)) for row in data]
        stream = make()
        for row in data[:cut]:
            stream.update(row)
        saved = pickle.loads(pickle.dumps(stream.get_state()))
        for row in data[cut:]:  # run ahead, then roll back
            stream.update(row * 1.5)
        if restore_rows:
            # Roll back series 0 and 2 only; series 1 is restored from the reference run.
            stream.set_state(saved, rows=np.array([0, 2]))
            other = make()
            for row in data[:cut]:
                other.update(row)
            stream.set_state(other.get_state(), rows=np.array([1]))
        else:
            fresh = make()
            fresh.set_state(saved)
            stream = fresh
        for t in range(cut, data.shape[0]):
            for a, b in zip(_as_tuple(stream.update(data[t])), expected[t], strict=True):
                np.testing.assert_array_equal(a, b)
        final = stream.get_state()
        ref_state = reference.get_state()
        for key, value in ref_state.items():
            np.testing.assert_array_equal(np.asarray(final[key]), np.asarray(value))


def test_peek_changes_nothing() -> None:
    x = _random_walk(5, 40)
    stream = ind.StreamingBBands(1, 5)
    for v in x[:30]:
        stream.update(np.array([v]))
    before = stream.get_state()
    stream.peek(np.array([123.0]))
    stream.peek(np.array([1.0]), rows=np.array([0]))
    after = stream.get_state()
    for key, value in before.items():
        np.testing.assert_array_equal(np.asarray(after[key]), np.asarray(value))


def test_set_state_rejects_other_parameters() -> None:
    state = ind.StreamingEMA(2, 5).get_state()
    with pytest.raises(ValueError, match="period"):
        ind.StreamingEMA(2, 6).set_state(state)
    with pytest.raises(ValueError, match="n_series"):
        ind.StreamingEMA(3, 5).set_state(state)
    with pytest.raises(ValueError, match="kind"):
        ind.StreamingRSI(2, 5).set_state(state)


def test_update_validates_shapes() -> None:
    stream = ind.StreamingRSI(3)
    with pytest.raises(ValueError, match="expected 3"):
        stream.update(np.ones(2))
    with pytest.raises(ValueError, match="mask"):
        stream.update(np.ones(3), np.ones(2, dtype=bool))
    with pytest.raises(IndexError):
        stream.update_rows(np.array([3]), np.ones(1))


def test_streaming_on_many_series_matches_talib() -> None:
    k, t = 50, 400
    data = np.stack([_random_walk(100 + i, t) for i in range(k)], axis=1)
    macd_stream = ind.StreamingMACD(k)
    rsi_stream = ind.StreamingRSI(k)
    macd_out = np.array([macd_stream.update(row)[2] for row in data])
    rsi_out = np.array([rsi_stream.update(row) for row in data])
    for i in range(k):
        _assert_close_to_talib(macd_out[:, i], talib.MACD(data[:, i], 12, 26, 9)[2])
        _assert_close_to_talib(rsi_out[:, i], talib.RSI(data[:, i], 14))


@settings(max_examples=80, deadline=None)
@given(
    steps=st.lists(_step, min_size=1, max_size=60),
    actions=st.lists(st.sampled_from(["same", "other", "rows", "none", "restore"]), max_size=60),
    period=st.integers(min_value=2, max_value=5),
)
def test_all_series_peek_then_update_is_the_plain_update(
    steps: list[float], actions: list[str], period: int
) -> None:
    """An all-series peek prepares the step; the update must not care whether it matches."""
    k = 3
    data = np.stack([_to_prices(steps, 5.0 * (i + 1)) for i in range(k)], axis=1)
    for make in (
        lambda: ind.StreamingEMA(k, period),
        lambda: ind.StreamingRSI(k, period),
        lambda: ind.StreamingMACD(k, period, period + 2, period),
        lambda: ind.StreamingBBands(k, period),
    ):
        plain, tricky, decoy = make(), make(), make()
        for t, row in enumerate(data):
            action = actions[t] if t < len(actions) else "none"
            if action == "same":
                peeked = _as_tuple(tricky.peek(row))
            elif action == "other":
                tricky.peek(row * 1.01)
            elif action == "rows":
                tricky.peek(row, None)
                tricky.peek(row[:1], np.array([0]))  # a subset peek keeps the prepared step
            elif action == "restore":
                tricky.set_state(decoy.get_state())  # another history ...
                tricky.peek(row)  # ... prepares a step from it ...
                tricky.set_state(plain.get_state())  # ... which a restore must drop
            decoy.update(row * 1.5)
            expected = _as_tuple(plain.update(row))
            got = _as_tuple(tricky.update(row))
            for a, b in zip(got, expected, strict=True):
                np.testing.assert_array_equal(a, b)
            if action == "same":
                for a, b in zip(peeked, expected, strict=True):
                    np.testing.assert_array_equal(a, b)
        for key, value in plain.get_state().items():
            np.testing.assert_array_equal(np.asarray(tricky.get_state()[key]), np.asarray(value))


def test_outputs_do_not_alias_the_state() -> None:
    for stream in (ind.StreamingEMA(2, 2), ind.StreamingMACD(2, 2, 3, 1)):
        for v in (1.0, 2.0, 3.0, 4.0, 5.0):
            out = _as_tuple(stream.update(np.array([v, v + 1])))
        before = stream.get_state()
        for arr in out:
            arr[...] = 123.0  # a caller scribbling on what it got back
        for key, value in before.items():
            np.testing.assert_array_equal(np.asarray(stream.get_state()[key]), np.asarray(value))
