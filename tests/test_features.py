"""rules.features.engine: the streaming engine against independent oracles.

- TA-Lib for RSI, MACD and Bollinger Bands at the bar closes of the streaming engine,
  and :mod:`rules.indicators` (the same step functions) bit for bit;
- ``tests/oracles.py`` (bars and every proxy written out plainly) at every update of
  random sequences: gaps, several samples per bar, partial presence, late samples;
- the state: any cut of a table into ``update_table`` calls is one ``update`` per step,
  ``get_state``/``set_state`` round-trip bit for bit, a restore of some rows replays one
  chain after a reorganisation;
- real data: three pools of Uniswap v3 minute data.
"""

from __future__ import annotations

import csv
import itertools
import math
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import talib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from rules import indicators as ind
from rules.features.engine import (
    ENGINE_FEATURES,
    STATE_FORMAT,
    FeatureEngine,
    FeatureParams,
    FeatureSnapshot,
)
from rules.features.proxies import periods_per_year
from rules.types import FEATURE_NAMES
from tests import oracles

F64 = NDArray[np.float64]
INTERVAL = 300
POLYGON = "uniswap_v3_pool_minute_polygon_usdc_weth_005"
MAINNET = "uniswap_v3_pool_events_2024-01-05"
INDICATORS = ("rsi", "macd", "macd_signal", "macd_hist", "bb_upper", "bb_middle", "bb_lower")


# --------------------------------------------------------------------------- real samples


@dataclass
class Samples:
    """Irregular samples of one pool (sorted by time)."""

    time: NDArray[np.int64]
    price: F64
    tvl: F64
    tick_tvl: F64
    volume: F64
    swaps: NDArray[np.int64]
    mev_swaps: NDArray[np.int64]


def _minute_file_samples(paths: list[Path], shift: int, seed: int) -> Samples:
    """Minute bars of a USDC(6)/WETH(18) Uniswap v3 pool as irregular samples.

    Each kept minute becomes one sample at a random second inside it; a fifth of the
    minutes and one 25-minute stretch are dropped, so bars have 0..5 samples and some
    intervals are empty. ``shift`` moves the data onto a common time axis.
    """
    rng = np.random.default_rng(seed)
    rows: list[dict[str, str]] = []
    for path in paths:
        with path.open(newline="") as fh:
            rows.extend(csv.DictReader(fh))
    times, prices, tvls, volumes = [], [], [], []
    for row in rows:
        stamp = datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        raw_price = 1.0001 ** float(row["closeTick"])  # token1 per token0, raw units
        price = 1e12 / raw_price  # ETH in USDC
        liquidity = float(row["currentLiquidity"])
        times.append(int(stamp.timestamp()) + shift)
        prices.append(price)
        # Value of the liquidity as a full-range position: 2 L sqrt(price), in USDC.
        tvls.append(2.0 * liquidity * math.sqrt(price) / 1e12)
        volumes.append(float(row["inAmount0"]) / 1e6 + float(row["inAmount1"]) / 1e18 * price)
    n = len(times)
    keep = rng.random(n) > 0.2
    keep[300:325] = False
    base = np.array(times)[keep]
    offsets = rng.integers(0, 60, size=base.size)
    idx = np.flatnonzero(keep)
    swaps = 1 + (idx % 4)
    return Samples(
        time=(base + offsets).astype(np.int64),
        price=np.array(prices)[keep],
        tvl=np.array(tvls)[keep],
        tick_tvl=np.array(tvls)[keep] * 0.002,
        volume=np.array(volumes)[keep],
        swaps=swaps.astype(np.int64),
        mev_swaps=np.minimum(swaps, (idx % 5 == 0) * 2).astype(np.int64),
    )


def _real_pools(shared_data: Path) -> list[Samples]:
    """Three pools on one time axis: two 2-day Polygon stretches and one mainnet day."""
    day0 = int(datetime(2022, 7, 19, tzinfo=UTC).timestamp())
    polygon = shared_data / POLYGON
    name = "Polygon-0x45dda9cb7c25131df268515131f647d726f50608-2022-07-{}.csv"
    mainnet = (
        shared_data
        / MAINNET
        / "ethereum-0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640-2024-01-05.minute.csv"
    )
    mainnet_shift = int(datetime(2024, 1, 5, tzinfo=UTC).timestamp()) - day0 - 86400
    return [
        _minute_file_samples([polygon / name.format(19), polygon / name.format(20)], 0, 0),
        _minute_file_samples([polygon / name.format(21), polygon / name.format(22)], -2 * 86400, 1),
        _minute_file_samples([mainnet], -mainnet_shift, 2),
    ]


@dataclass
class Run:
    snapshots: list[FeatureSnapshot] = field(default_factory=list)
    # Per pool: the snapshot index and position of the last sample inside each bar index.
    last_in_bar: list[dict[int, tuple[int, int]]] = field(default_factory=list)


def _run(
    engine: FeatureEngine, pools: list[Samples], start: int = 0, stop: int | None = None
) -> Run:
    """Feed the samples of all pools in time order; equal times go in one update."""
    events = sorted((int(t), r, i) for r, s in enumerate(pools) for i, t in enumerate(s.time))
    times = sorted({e[0] for e in events})[start:stop]
    by_time: dict[int, list[tuple[int, int]]] = {}
    for t, r, i in events:
        by_time.setdefault(t, []).append((r, i))
    run = Run(last_in_bar=[{} for _ in pools])
    for t in times:
        members = by_time[t]
        rows = np.array([r for r, _ in members], dtype=np.int64)

        def column(name: str, members: list[tuple[int, int]] = members) -> NDArray[Any]:
            return np.array([getattr(pools[r], name)[i] for r, i in members])

        snap = engine.update(
            t,
            rows,
            column("price"),
            column("tvl"),
            column("tick_tvl"),
            column("volume"),
            column("swaps").astype(np.int64),
            column("mev_swaps").astype(np.int64),
        )
        for pos, (r, _) in enumerate(members):
            run.last_in_bar[r][t // INTERVAL] = (len(run.snapshots), pos)
        run.snapshots.append(snap)
    return run


def _expected_bars(s: Samples) -> dict[str, F64]:
    """Bars of one pool written the obvious way (samples are in time order here), the
    forming bar last."""
    bar = s.time // INTERVAL
    first, last = int(bar[0]), int(bar[-1])
    names = ("start", "close", "volume", "tvl", "tick_tvl", "swaps", "mev_swaps", "samples")
    out: dict[str, list[float]] = {k: [] for k in names}
    close = tvl = tick_tvl = math.nan
    for b in range(first, last + 1):
        sel = bar == b
        out["start"].append(b * INTERVAL)
        if sel.any():
            close, tvl = float(s.price[sel][-1]), float(s.tvl[sel][-1])
            tick_tvl = float(s.tick_tvl[sel][-1])
            values = [close, float(s.volume[sel].sum()), tvl, tick_tvl]
            counts = [s.swaps[sel].sum(), s.mev_swaps[sel].sum(), sel.sum()]
        else:  # an empty interval carries the close
            values = [close, 0.0, tvl, tick_tvl]
            counts = [0, 0, 0]
        for k, v in zip(("close", "volume", "tvl", "tick_tvl"), values, strict=True):
            out[k].append(v)
        for k, v in zip(("swaps", "mev_swaps", "samples"), counts, strict=True):
            out[k].append(float(v))
    return {k: np.array(v) for k, v in out.items()}


def _at_bar_ends(run: Run, row: int, starts: F64) -> dict[int, dict[str, float]]:
    """Features reported at the last sample of each (non-empty) bar, by bar position:
    what the bar commits when it closes."""
    out = {}
    for pos, start in enumerate(starts):
        key = run.last_in_bar[row].get(int(start) // INTERVAL)
        if key is not None:
            out[pos] = run.snapshots[key[0]].row(key[1])
    return out


@pytest.fixture(scope="module")
def real_run(shared_data: Path) -> tuple[FeatureEngine, list[Samples], Run]:
    pools = _real_pools(shared_data)
    fees = np.array([0.0005, 0.0005, 0.0005])
    engine = FeatureEngine(FeatureParams(bar_interval=INTERVAL), fees)
    return engine, pools, _run(engine, pools)


def _talib_indicators(close: F64, p: FeatureParams) -> dict[str, F64]:
    line, signal, hist = talib.MACD(close, p.macd_fast, p.macd_slow, p.macd_signal)
    upper, middle, lower = talib.BBANDS(
        close, p.bb_period, p.bb_nbdev, p.bb_nbdev, talib.MA_Type.SMA
    )
    return {
        "rsi": talib.RSI(close, p.rsi_period),
        "macd": line,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
    }


def _batch_indicators(close: F64, p: FeatureParams) -> dict[str, F64]:
    line, signal, hist = ind.macd(close, p.macd_fast, p.macd_slow, p.macd_signal)
    upper, middle, lower = ind.bbands(close, p.bb_period, p.bb_nbdev)
    return {
        "rsi": ind.rsi(close, p.rsi_period),
        "macd": line,
        "macd_signal": signal,
        "macd_hist": hist,
        "bb_upper": upper,
        "bb_middle": middle,
        "bb_lower": lower,
    }


@pytest.mark.shared_data
def test_indicators_at_bar_closes_equal_talib_and_the_batch_functions(
    real_run: tuple[FeatureEngine, list[Samples], Run],
) -> None:
    engine, pools, run = real_run
    for row, samples in enumerate(pools):
        bars = _expected_bars(samples)
        assert (bars["samples"] == 0).sum() >= 4  # the dropped stretch: carried bars
        seen = _at_bar_ends(run, row, bars["start"])
        assert len(seen) > 280
        positions = sorted(seen)
        talib_values = _talib_indicators(bars["close"], engine.params)
        batch_values = _batch_indicators(bars["close"], engine.params)
        for name in INDICATORS:
            got = np.array([seen[pos][name] for pos in positions])
            want = talib_values[name][positions]
            assert np.count_nonzero(~np.isnan(want)) > 200
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
            valid = ~np.isnan(want)
            assert float(np.max(np.abs(got[valid] - want[valid]))) <= 1e-9, name
            # rules.indicators runs the same step functions: the same bits.
            np.testing.assert_array_equal(got, batch_values[name][positions], err_msg=name)


@pytest.mark.shared_data
def test_peeked_features_equal_definitions_at_bar_close(
    real_run: tuple[FeatureEngine, list[Samples], Run],
) -> None:
    engine, pools, run = real_run
    p = engine.params
    ppy = periods_per_year(INTERVAL)
    compared: dict[str, int] = {}
    for row, samples in enumerate(pools):
        bars = _expected_bars(samples)
        close, tvl, tick_tvl = bars["close"], bars["tvl"], bars["tick_tvl"]
        volume_24h = oracles.rolling_sum_series(bars["volume"], p.bars_24h)
        swaps = oracles.rolling_sum_series(bars["swaps"], p.mev_bars)
        mev = oracles.rolling_sum_series(bars["mev_swaps"], p.mev_bars)
        indicators = _talib_indicators(close, p)
        upper, lower = indicators["bb_upper"], indicators["bb_lower"]
        expected: dict[str, F64] = {
            "price": close,
            "ret": oracles.log_returns(close),
            "move_sigma": oracles.move_sigma_series(close, p.sigma_window),
            "move_sigma_1h": oracles.move_sigma_n_series(close, p.bars_1h, p.sigma_window),
            "move_sigma_4h": oracles.move_sigma_n_series(close, p.bars_4h, p.sigma_window),
            "move_sigma_24h": oracles.move_sigma_n_series(close, p.bars_24h, p.sigma_window),
            "drawdown_24h": oracles.drawdown_series(close, p.bars_24h),
            "realized_vol": oracles.realized_vol_series(close, p.realized_vol_window, ppy),
            "tvl": tvl,
            "tick_tvl": tick_tvl,
            "volume_24h": volume_24h,
            "tvl_volume_ratio": oracles.tvl_volume_ratio(tvl, volume_24h),
            "iv": oracles.lambert_iv(0.0005, volume_24h, tick_tvl),
            "tvl_drain_1h": oracles.tvl_drain_series(tvl, close, p.bars_1h),
            "mev_score": oracles.mev_share(mev, swaps),
            **indicators,
            "bb_pos": (close - lower) / (upper - lower),
        }
        seen = _at_bar_ends(run, row, bars["start"])
        assert len(seen) > 200
        exact = {"price", "tvl", "tick_tvl", "tvl_drain_1h", "mev_score"}
        for name, values in expected.items():
            got = np.array([seen[pos][name] for pos in sorted(seen)])
            want = values[sorted(seen)]
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
            compared[name] = compared.get(name, 0) + int(np.count_nonzero(~np.isnan(want)))
            if name in exact:
                np.testing.assert_array_equal(got, want, err_msg=name)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9, err_msg=name)
    assert set(compared) == set(ENGINE_FEATURES) - {"breadth", "corr"}
    assert min(compared.values()) > 100, compared  # every feature compared on real values


@pytest.mark.shared_data
def test_breadth_and_corr_equal_their_definitions(
    real_run: tuple[FeatureEngine, list[Samples], Run],
) -> None:
    engine, pools, run = real_run
    bars = [_expected_bars(samples) for samples in pools]
    # Breadth at the end: every closed bar's return sign, plus each forming bar's.
    expected_breadth = 0.0
    for b in bars:
        ret = oracles.log_returns(b["close"])  # the forming bar last
        expected_breadth += float(np.nansum(np.sign(ret)))
    last = run.snapshots[-1]
    assert np.all(last.values["breadth"] == expected_breadth)
    # Corr: pools whose last closed bar is the newest, over their last corr_window returns.
    wc = engine.params.corr_window
    newest = max(int(b["start"][-2]) for b in bars)
    windows = [
        oracles.log_returns(b["close"][:-1])[-wc:] for b in bars if int(b["start"][-2]) == newest
    ]
    assert len(windows) >= 2
    expected_corr = oracles.mean_pairwise_corr(np.array(windows))
    assert np.all(last.values["corr"] == last.values["corr"][0])
    assert last.values["corr"][0] == pytest.approx(expected_corr, abs=1e-9)
    # Along the run, corr is a correlation and breadth moves by at most K per update.
    corr = np.array([s.values["corr"][0] for s in run.snapshots])
    breadth = np.array([s.values["breadth"][0] for s in run.snapshots])
    assert np.nanmin(corr) >= -1.0 - 1e-12
    assert np.nanmax(corr) <= 1.0 + 1e-12
    assert np.count_nonzero(~np.isnan(corr)) > 100
    assert np.abs(np.diff(breadth)).max() <= 2 * len(pools)


@pytest.mark.shared_data
def test_save_restore_mid_run_continues_bit_for_bit(shared_data: Path) -> None:
    pools = _real_pools(shared_data)
    fees = np.array([0.0005, 0.003, math.nan])
    params = FeatureParams(bar_interval=INTERVAL, sigma_window=20, corr_window=30)
    reference = FeatureEngine(params, fees)
    full = _run(reference, pools, 0, 1500)
    engine = FeatureEngine(params, fees)
    _run(engine, pools, 0, 900)
    saved = pickle.loads(pickle.dumps(engine.get_state()))
    _run(engine, pools, 900, 1200)  # run ahead, then roll back
    restored = FeatureEngine(params, fees)
    restored.set_state(saved)
    cont = _run(restored, pools, 900, 1500)
    for a, b in zip(full.snapshots[900:], cont.snapshots, strict=True):
        np.testing.assert_array_equal(a.rows, b.rows)
        for name in ENGINE_FEATURES:
            np.testing.assert_array_equal(a.values[name], b.values[name], err_msg=name)
    _assert_same_state(reference.get_state(), restored.get_state())


def _assert_same_state(a: Any, b: Any, path: str = "state") -> None:
    """Bit-exact equality of two states (NaN equal to NaN with the same bits)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            _assert_same_state(a[key], b[key], f"{path}.{key}")
        return
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    assert a_arr.dtype == b_arr.dtype, path
    assert a_arr.shape == b_arr.shape, path
    if a_arr.dtype.kind == "f":
        a_arr, b_arr = a_arr.view(np.int64), b_arr.view(np.int64)
    np.testing.assert_array_equal(a_arr, b_arr, err_msg=path)


# --------------------------------------------------------------------------- examples


def _synthetic_update(
    engine: FeatureEngine, time: int, rows: list[int], price: list[float]
) -> FeatureSnapshot:
    n = len(rows)
    return engine.update(
        time,
        np.array(rows, dtype=np.int64),
        np.array(price),
        np.full(n, 1e6),
        np.full(n, 1e4),
        np.full(n, 10.0),
        np.ones(n, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
    )


def test_row_wise_restore_replays_one_chain_after_a_reorg() -> None:
    """Pools 0-1 are on chain A, 2-3 on chain B; chain A reorganises at t=3000."""
    params = FeatureParams(bar_interval=60, rsi_period=3, macd_fast=2, macd_slow=4)
    params = FeatureParams(**{**params.as_dict(), "macd_signal": 2, "bb_period": 3})
    fees = np.full(4, 0.003)
    rng = np.random.default_rng(3)
    canonical = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (200, 4)), axis=0))
    forked = canonical * np.exp(rng.normal(0, 0.02, canonical.shape))

    def drive(engine: FeatureEngine, steps: range, prices: F64, rows: list[int]) -> None:
        for i in steps:
            _synthetic_update(engine, 15 * i, rows, list(prices[i, rows]))

    reference = FeatureEngine(params, fees)
    for i in range(200):
        _synthetic_update(reference, 15 * i, [0, 1], list(canonical[i, [0, 1]]))
        _synthetic_update(reference, 15 * i + 7, [2, 3], list(canonical[i, [2, 3]]))

    engine = FeatureEngine(params, fees)
    saved: dict[str, Any] = {}
    for i in range(200):
        if i == 120:
            saved = engine.get_state()  # state after block 119 of both chains
        prices = forked if 120 <= i < 150 else canonical
        _synthetic_update(engine, 15 * i, [0, 1], list(prices[i, [0, 1]]))
        _synthetic_update(engine, 15 * i + 7, [2, 3], list(canonical[i, [2, 3]]))
        if i == 149:
            # Chain A's blocks 120..149 are replaced: roll its pools back, replay them.
            engine.set_state(saved, rows=np.array([0, 1]))
            drive(engine, range(120, 150), canonical, [0, 1])
    _assert_same_state(reference.get_state(), engine.get_state())
    # The next update sees the same cross-pool values too (breadth, corr are derived).
    a = _synthetic_update(reference, 3100, [0, 1, 2, 3], [100.0] * 4)
    b = _synthetic_update(engine, 3100, [0, 1, 2, 3], [100.0] * 4)
    for name in ENGINE_FEATURES:
        np.testing.assert_array_equal(a.values[name], b.values[name], err_msg=name)


def test_snapshot_names_and_first_sample() -> None:
    engine = FeatureEngine(FeatureParams(bar_interval=60), np.array([0.003, math.nan]))
    snap = _synthetic_update(engine, 1000, [1], [5.0])
    assert set(snap.values) == set(FEATURE_NAMES) - {"threshold_scale"}
    assert tuple(n for n in FEATURE_NAMES if n != "threshold_scale") == ENGINE_FEATURES
    row = snap.row(0)
    assert row["price"] == 5.0
    assert row["volume_24h"] == 10.0
    assert row["tvl_volume_ratio"] == 1e5
    assert math.isnan(row["iv"])  # fee unknown
    assert row["tvl_drain_1h"] == 0.0
    assert row["mev_score"] == 0.0
    assert row["breadth"] == 0.0
    for name in ("ret", "move_sigma", "rsi", "macd", "bb_upper", "realized_vol", "corr"):
        assert math.isnan(row[name]), name
    assert snap.late_rows.size == 0
    with pytest.raises(ValueError, match="read-only"):
        snap.values["price"][0] = 1.0


def test_lambert_example_through_the_engine() -> None:
    engine = FeatureEngine(FeatureParams(bar_interval=3600), np.array([0.003]))
    snap = engine.update(
        0,
        np.array([0]),
        np.array([2000.0]),
        np.array([300e6]),
        np.array([4.35e6]),
        np.array([76.52e6]),
        np.array([100]),
        np.array([0]),
    )
    assert snap.values["iv"][0] == pytest.approx(0.4808, abs=5e-4)


def test_tvl_drain_and_mev_score_windows() -> None:
    engine = FeatureEngine(FeatureParams(bar_interval=600, mev_window=1800), np.array([0.003]))
    liquidity = 1000.0

    def sample(t: int, price: float, liq: float, swaps: int, mev: int) -> dict[str, float]:
        snap = engine.update(
            t,
            np.array([0]),
            np.array([price]),
            np.array([2 * liq * math.sqrt(price)]),
            np.array([1.0]),
            np.array([1.0]),
            np.array([swaps]),
            np.array([mev]),
        )
        return snap.row(0)

    sample(0, 100.0, liquidity, 4, 0)
    sample(600, 130.0, liquidity, 4, 2)
    row = sample(1200, 70.0, liquidity, 2, 2)
    assert row["tvl_drain_1h"] == pytest.approx(0.0, abs=1e-12)  # price moves alone
    assert row["mev_score"] == pytest.approx(4 / 10)  # 3 bars of 600 s
    row = sample(1800, 75.0, 0.6 * liquidity, 0, 0)  # 40% of the liquidity withdrawn
    assert row["tvl_drain_1h"] == pytest.approx(0.4)
    assert row["mev_score"] == pytest.approx(4 / 6)  # the first bar left the window
    row = sample(6000, 75.0, 0.6 * liquidity, 0, 0)  # 7 bars later: window has moved on
    assert row["tvl_drain_1h"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(row["mev_score"])  # no swaps in the window


def test_late_sample_is_reported_and_ignored() -> None:
    engine = FeatureEngine(FeatureParams(bar_interval=60), np.array([0.003, 0.003]))
    _synthetic_update(engine, 0, [0, 1], [1.0, 2.0])
    _synthetic_update(engine, 70, [0], [1.1])
    snap = _synthetic_update(engine, 30, [0, 1], [9.0, 2.5])
    np.testing.assert_array_equal(snap.late_rows, [0])
    assert snap.values["price"][0] == 1.1  # pool 0 keeps its forming bar
    assert snap.values["price"][1] == 2.5  # pool 1's bar 0 is still forming
    np.testing.assert_array_equal(engine.late_dropped, [1, 0])
    assert snap.values["volume_24h"][0] == 20.0  # bars 0 and 1: the late volume was dropped


def test_gap_fills_every_interval_and_steps_indicators() -> None:
    params = FeatureParams(bar_interval=60, rsi_period=3, bb_period=3)
    engine = FeatureEngine(params, np.array([0.003]))
    for i, price in enumerate([1.0, 1.1, 1.2, 1.15, 1.3]):
        _synthetic_update(engine, 60 * i, [0], [price])
    snap = _synthetic_update(engine, 60 * 10, [0], [1.3])
    # Bar 4 closed with its sample, bars 5..9 carried its close, bar 10 is forming.
    closes = np.array([1.0, 1.1, 1.2, 1.15, *[1.3] * 7])
    row = snap.row(0)
    assert row["rsi"] == ind.rsi(closes, 3)[-1]
    assert row["rsi"] == pytest.approx(talib.RSI(closes, 3)[-1], abs=1e-9)
    # A flat window: zero width exactly (the middle is the running-sum SMA, as in TA-Lib).
    assert row["bb_upper"] == row["bb_lower"]
    assert row["bb_middle"] == pytest.approx(1.3, rel=1e-15)
    assert math.isnan(row["bb_pos"])
    assert row["volume_24h"] == 10.0 * 6  # carried bars have no volume


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bar_interval": 0}, "bar_interval"),
        ({"bar_interval": 60, "macd_fast": 26, "macd_slow": 12}, "macd_fast"),
        ({"bar_interval": 60, "rsi_period": 1}, "rsi_period"),
        ({"bar_interval": 60, "bb_nbdev": -1.0}, "bb_nbdev"),
        ({"bar_interval": 60, "bb_nbdev": math.nan}, "bb_nbdev"),
        ({"bar_interval": 60, "sigma_window": 1}, "sigma_window"),
        ({"bar_interval": 60, "mev_window": 0}, "mev_window"),
        ({"bar_interval": 60.0}, "bar_interval"),
    ],
)
def test_feature_params_validate(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureParams(**kwargs)


def test_engine_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="fees"):
        FeatureEngine(FeatureParams(bar_interval=60), np.array([0.5, 1.5]))
    engine = FeatureEngine(FeatureParams(bar_interval=60), np.array([0.003, 0.003]))
    with pytest.raises(ValueError, match="distinct"):
        _synthetic_update(engine, 0, [1, 1], [1.0, 1.0])
    with pytest.raises(ValueError, match="price"):
        _synthetic_update(engine, 0, [0], [-1.0])
    with pytest.raises(ValueError, match="time"):
        _synthetic_update(engine, -5, [0], [1.0])
    with pytest.raises(ValueError, match="price must have one value per row"):
        engine.update(0, np.array([0]), *(np.ones(2),) * 4, *(np.ones(1, dtype=np.int64),) * 2)
    with pytest.raises(ValueError, match="whole numbers"):
        engine.update(0, np.array([0]), *(np.ones(1),) * 4, np.array([1.5]), np.array([0]))
    with pytest.raises(ValueError, match="FeatureParams"):
        FeatureEngine(FeatureParams(bar_interval=30), np.array([0.003, 0.003])).set_state(
            engine.get_state()
        )
    with pytest.raises(ValueError, match="pools"):
        FeatureEngine(FeatureParams(bar_interval=60), np.array([0.003])).set_state(
            engine.get_state()
        )


def test_a_state_of_another_format_is_refused_and_changes_nothing() -> None:
    """What a checkpoint of the per-step engine (format 1) looks like: the daemon catches
    the ValueError and starts cold."""
    params = FeatureParams(bar_interval=60)
    engine = FeatureEngine(params, np.array([0.003, 0.003]))
    _synthetic_update(engine, 0, [0, 1], [1.0, 2.0])
    before = engine.get_state()
    old = {
        "params": params.as_dict(),
        "n_pools": 2,
        "bars": {"n_pools": 2, "interval": 60, "close": np.ones(2)},
        "rsi": {"kind": "rsi", "n_series": 2, "count": np.zeros(2, dtype=np.int64)},
        "sigma_win": {"ring": np.zeros((48, 2)), "total": np.zeros(2)},
        "n_closed": np.zeros(2, dtype=np.int64),
    }
    with pytest.raises(ValueError, match="format"):
        engine.set_state(old)
    wrong = {**before, "floats": before["floats"][:-1]}
    with pytest.raises(ValueError, match="floats"):
        engine.set_state(wrong)
    _assert_same_state(engine.get_state(), before)
    assert before["format"] == STATE_FORMAT


# --------------------------------------------------------------------------- properties
# Random sequences of updates, against the oracle and against themselves.

#: Bars of a minute, of half an hour and of 6 hours: with the last, a day is 4 bars, so
#: the 24-hour windows (volume, horizons) fill and empty inside a short sequence.
INTERVALS = (60, 1800, 6 * 3600)


@st.composite
def small_params(draw: st.DrawFn, interval: int) -> FeatureParams:
    """Small windows, so that every warm-up ends inside a short sequence."""
    sigma_window = draw(st.integers(2, 5))
    macd_fast = draw(st.integers(2, 3))
    return FeatureParams(
        bar_interval=interval,
        rsi_period=draw(st.integers(2, 4)),
        macd_fast=macd_fast,
        macd_slow=macd_fast + draw(st.integers(1, 3)),
        macd_signal=draw(st.integers(1, 3)),
        bb_period=draw(st.integers(2, 4)),
        bb_nbdev=draw(st.sampled_from([0.0, 1.5, 2.0])),
        sigma_window=sigma_window,
        realized_vol_window=draw(st.integers(2, 5)),
        corr_window=draw(st.sampled_from([sigma_window, sigma_window + 1, 2])),
        mev_window=draw(st.sampled_from([interval, 3 * interval])),
    )


@dataclass
class Updates:
    """Updates of ``n_pools`` pools: ``updates[u] = (time, rows, columns)``."""

    params: FeatureParams
    fees: F64
    updates: list[tuple[int, NDArray[np.int64], tuple[NDArray[Any], ...]]]


@st.composite
def sequences(draw: st.DrawFn, max_updates: int = 40) -> Updates:
    """Gaps of empty bars, several samples in a bar, a subset of the pools per update,
    samples out of order inside a bar and late ones (for a bar already closed), flat
    stretches and quiet ones (no volume, no swaps)."""
    interval = draw(st.sampled_from(INTERVALS))
    params = draw(small_params(interval))
    n_pools = draw(st.integers(1, 4))
    n_updates = draw(st.integers(1, max_updates))
    steps = [0, 7, interval // 3, interval, interval, interval, 2 * interval, 5 * interval]
    back = [-interval // 2, -2 * interval]  # out of order, or late
    price = 2000.0 * (1.0 + np.arange(n_pools))
    flat = np.zeros(n_pools, dtype=np.bool_)
    time = 1_700_000_000
    updates = []
    for u in range(n_updates):
        time = max(0, time + draw(st.sampled_from(steps + back if u else steps)))
        rows = np.flatnonzero(
            draw(st.lists(st.booleans(), min_size=n_pools, max_size=n_pools))
        ).astype(np.int64)
        if rows.size == 0:
            rows = np.array([u % n_pools], dtype=np.int64)
        if draw(st.integers(0, 5)) == 0:
            flat = ~flat  # flat stretches start and end
        n = rows.size
        for i, r in enumerate(rows.tolist()):
            if flat[r]:
                continue  # the same price exactly: zero returns
            move = draw(st.floats(-0.05, 0.05, allow_nan=False, allow_subnormal=False))
            # A little deterministic noise, so that no window is flat but for rounding
            # (a yardstick of ~0 makes any result meaningless), and no move is tiny.
            move += 1e-3 * (((u * 7919 + i * 104729) % 1000) / 1000.0 - 0.5)
            price[r] *= math.exp(move if abs(move) >= 1e-4 else 1e-4 * (1 + u % 7))
        quiet = draw(st.booleans())
        volume = np.array([0.0 if quiet else float(draw(st.integers(0, 1000))) for _ in range(n)])
        swaps = np.array([0 if quiet else draw(st.integers(0, 5)) for _ in range(n)])
        mev = np.array([draw(st.integers(0, int(s))) for s in swaps])
        # Pools with an even row have a TVL that moves with the price, the others none.
        tvl = np.where(rows % 2 == 0, 1e3 * np.sqrt(price[rows]) * (1.0 + 0.1 * (u % 3)), np.nan)
        columns = (price[rows].copy(), tvl, tvl / 50.0, volume, swaps, mev)
        updates.append((time, rows, columns))
    fees = np.array([(0.003, 0.0005, math.nan, 0.01)[r % 4] for r in range(n_pools)])
    return Updates(params, fees, updates)


#: Features the oracle computes with the same floating-point operations (or exact sums of
#: whole numbers): equal bits. The others run on running sums, or TA-Lib's arithmetic.
EXACT = {
    "price",
    "tvl",
    "tick_tvl",
    "volume_24h",
    "tvl_volume_ratio",
    "tvl_drain_1h",
    "mev_score",
    "breadth",
}


def assert_matches(
    got: Mapping[str, F64],
    want: Mapping[str, F64],
    where: str,
    ok: Mapping[str, NDArray[np.bool_]] | None = None,
) -> None:
    """``got == want`` per feature: bit for bit for :data:`EXACT`, else to 1e-9, on the
    rows where ``ok`` says the value is well conditioned (``tests/oracles.py``)."""
    for name in ENGINE_FEATURES:
        g, w = np.asarray(got[name]), np.asarray(want[name])
        if ok is not None:
            g, w = g[ok[name]], w[ok[name]]
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{where}: {name}")
        if name in EXACT:
            np.testing.assert_array_equal(g, w, err_msg=f"{where}: {name}")
        else:
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9, err_msg=f"{where}: {name}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences())
def test_streaming_engine_equals_the_oracle(seq: Updates) -> None:
    engine = FeatureEngine(seq.params, seq.fees)
    oracle = oracles.FeatureOracle(seq.params, seq.fees)
    compared = skipped = 0
    for u, (time, rows, columns) in enumerate(seq.updates):
        snap = engine.update(time, rows, *columns)
        want, late, ok = oracle.update(time, rows, *columns)
        np.testing.assert_array_equal(snap.late_rows, late, err_msg=f"update {u}")
        assert_matches(snap.values, want, f"update {u} at {time}, rows {rows.tolist()}", ok)
        compared += sum(int(np.count_nonzero(ok[name] & ~np.isnan(want[name]))) for name in ok)
        skipped += sum(int(np.count_nonzero(~ok[name])) for name in ok)
    np.testing.assert_array_equal(engine.late_dropped, [b.late for b in oracle.pools])
    # Ill-conditioned windows are rare: the comparisons are not skipped away.
    assert skipped <= compared


def _table(seq: Updates) -> dict[str, Any]:
    """The updates of ``seq`` in time order as a table (one step per update)."""
    order = sorted(range(len(seq.updates)), key=lambda u: seq.updates[u][0])
    n_steps, n_pools = len(order), seq.fees.size
    times = np.array([seq.updates[u][0] for u in order], dtype=np.int64)
    present = np.zeros((n_steps, n_pools), dtype=np.bool_)
    columns = [np.zeros((n_steps, n_pools)) for _ in range(4)]
    counts = [np.zeros((n_steps, n_pools), dtype=np.int64) for _ in range(2)]
    for t, u in enumerate(order):
        _, rows, values = seq.updates[u]
        present[t, rows] = True
        for table, column in zip([*columns, *counts], values, strict=True):
            table[t, rows] = column
    return {"times": times, "present": present, "columns": (*columns, *counts)}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences(), st.lists(st.integers(0, 40), max_size=4), st.integers(0, 5))
def test_any_cut_of_a_table_is_one_update_per_step(
    seq: Updates, cuts: list[int], ahead: int
) -> None:
    table = _table(seq)
    n_steps, n_pools = table["present"].shape
    stepped = FeatureEngine(seq.params, seq.fees)
    batched = FeatureEngine(seq.params, seq.fees)
    # Some pools already ahead of the table's first times: its first samples are late.
    for engine in (stepped, batched):
        for k in range(ahead):
            rows = np.array([k % n_pools], dtype=np.int64)
            engine.update(
                int(table["times"][0]) + k * seq.params.bar_interval,
                rows,
                *(np.full(1, 1000.0 + k),) * 4,
                *(np.ones(1, dtype=np.int64),) * 2,
            )
    want = np.full((len(ENGINE_FEATURES), n_steps, n_pools), np.nan)
    for t in range(n_steps):
        rows = np.flatnonzero(table["present"][t]).astype(np.int64)
        snap = stepped.update(
            int(table["times"][t]), rows, *(column[t, rows] for column in table["columns"])
        )
        for f, name in enumerate(ENGINE_FEATURES):
            want[f, t, rows] = snap.values[name]
    bounds = sorted({0, n_steps, *(min(c, n_steps) for c in cuts)})
    parts = [
        batched.update_table(
            table["times"][a:b],
            table["present"][a:b],
            *(column[a:b] for column in table["columns"]),
        )
        for a, b in itertools.pairwise(bounds)
    ]
    got = np.concatenate(parts, axis=1)
    _assert_same_state(got, want)
    _assert_same_state(batched.get_state(), stepped.get_state())
    np.testing.assert_array_equal(batched.late_dropped, stepped.late_dropped)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences(), st.integers(0, 40), st.lists(st.booleans(), min_size=4, max_size=4))
def test_state_round_trip_and_row_restore_are_bit_exact(
    seq: Updates, cut: int, restore: list[bool]
) -> None:
    """A whole restore continues as if nothing happened; a restore of some rows (a reorg of
    their chain) with their updates replayed gives the state of a run that never saw the
    discarded updates, whatever the other rows did meanwhile."""
    cut = min(cut, len(seq.updates))
    n_pools = seq.fees.size
    chain = np.flatnonzero(restore[:n_pools]).astype(np.int64)
    other = np.setdiff1d(np.arange(n_pools), chain)

    def run(
        engine: FeatureEngine,
        part: slice,
        rows: NDArray[np.int64] | None = None,
        scale: float = 1.0,
    ) -> list[FeatureSnapshot]:
        out = []
        for time, update_rows, columns in seq.updates[part]:
            keep = np.ones(update_rows.size, dtype=np.bool_)
            if rows is not None:
                keep = np.isin(update_rows, rows)
            if not keep.any():
                continue
            price, *rest = (column[keep] for column in columns)
            out.append(engine.update(time, update_rows[keep], price * scale, *rest))
        return out

    reference = FeatureEngine(seq.params, seq.fees)
    run(reference, slice(0, cut))
    expected = run(reference, slice(cut, None))
    engine = FeatureEngine(seq.params, seq.fees)
    run(engine, slice(0, cut))
    saved = pickle.loads(pickle.dumps(engine.get_state()))
    run(engine, slice(cut, None), scale=1.1)  # a fork, then roll back
    restored = FeatureEngine(seq.params, seq.fees)
    restored.set_state(saved)
    for a, b in zip(expected, run(restored, slice(cut, None)), strict=True):
        _assert_same_state(dict(a.values), dict(b.values))
    _assert_same_state(restored.get_state(), reference.get_state())
    # Row restore: the chain's rows roll back and replay; the other rows keep the fork.
    engine.set_state(saved, rows=chain)
    replayed = run(engine, slice(cut, None), rows=chain)
    forked = FeatureEngine(seq.params, seq.fees)
    forked.set_state(saved)
    run(forked, slice(cut, None), rows=other, scale=1.1)
    for a, b in zip(run(forked, slice(cut, None), rows=chain), replayed, strict=True):
        _assert_same_state(dict(a.values), dict(b.values))
    _assert_same_state(engine.get_state(), forked.get_state())
