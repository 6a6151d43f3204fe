"""rules.features.engine: the streaming engine against batch recomputation on real data."""

from __future__ import annotations

import csv
import math
import pickle
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from rules import indicators as ind
from rules.features import proxies
from rules.features.engine import (
    CLOSED_VALUE_NAMES,
    ENGINE_FEATURES,
    FeatureEngine,
    FeatureParams,
    FeatureSnapshot,
)
from rules.types import FEATURE_NAMES

F64 = NDArray[np.float64]
INTERVAL = 300
POLYGON = "uniswap_v3_pool_minute_polygon_usdc_weth_005"
MAINNET = "uniswap_v3_pool_events_2024-01-05"


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
    """Bars of one pool written the obvious way (samples are in time order here)."""
    bar = s.time // INTERVAL
    first, last = int(bar[0]), int(bar[-1])
    out: dict[str, list[float]] = {k: [] for k in ("start", "open", "high", "low", "close")}
    out.update({k: [] for k in ("volume", "tvl", "swaps", "mev_swaps", "samples")})
    close = math.nan
    tvl = math.nan
    for b in range(first, last):  # the last bar is still forming
        sel = bar == b
        out["start"].append(b * INTERVAL)
        if sel.any():
            p = s.price[sel]
            close, tvl = float(p[-1]), float(s.tvl[sel][-1])
            values = [p[0], p.max(), p.min(), close, s.volume[sel].sum(), tvl]
            counts = [s.swaps[sel].sum(), s.mev_swaps[sel].sum(), sel.sum()]
        else:
            values = [close, close, close, close, 0.0, tvl]
            counts = [0, 0, 0]
        for k, v in zip(("open", "high", "low", "close", "volume", "tvl"), values, strict=True):
            out[k].append(float(v))
        for k, v in zip(("swaps", "mev_swaps", "samples"), counts, strict=True):
            out[k].append(float(v))
    return {k: np.array(v) for k, v in out.items()}


def _closed_of(run: Run, row: int) -> dict[str, F64]:
    parts: dict[str, list[F64]] = {}
    for snap in run.snapshots:
        sel = snap.closed.rows == row
        for name in ("start", "open", "high", "low", "close", "volume", "tvl", "swaps"):
            parts.setdefault(name, []).append(getattr(snap.closed, name)[sel].astype(float))
        for name in ("mev_swaps", "samples"):
            parts.setdefault(name, []).append(getattr(snap.closed, name)[sel].astype(float))
        for name in CLOSED_VALUE_NAMES:
            parts.setdefault("cv_" + name, []).append(snap.closed_values[name][sel])
    return {k: np.concatenate(v) for k, v in parts.items()}


@pytest.fixture(scope="module")
def real_run(shared_data: Path) -> tuple[FeatureEngine, list[Samples], Run]:
    pools = _real_pools(shared_data)
    fees = np.array([0.0005, 0.0005, 0.0005])
    engine = FeatureEngine(FeatureParams(bar_interval=INTERVAL), fees)
    return engine, pools, _run(engine, pools)


@pytest.mark.shared_data
def test_bars_match_direct_aggregation(real_run: tuple[FeatureEngine, list[Samples], Run]) -> None:
    _, pools, run = real_run
    for row, samples in enumerate(pools):
        got = _closed_of(run, row)
        expected = _expected_bars(samples)
        assert got["start"].size == expected["start"].size > 280
        assert (expected["samples"] == 0).sum() >= 4  # the dropped stretch: carried bars
        for name, values in expected.items():
            if name in ("volume",):
                np.testing.assert_allclose(got[name], values, rtol=1e-12)
            else:
                np.testing.assert_array_equal(got[name], values, err_msg=name)


@pytest.mark.shared_data
def test_committed_indicators_equal_batch_exactly(
    real_run: tuple[FeatureEngine, list[Samples], Run],
) -> None:
    _, pools, run = real_run
    for row in range(len(pools)):
        got = _closed_of(run, row)
        closes = got["close"]
        line, signal, hist = ind.macd(closes)
        upper, middle, lower = ind.bbands(closes)
        expected = {
            "rsi": ind.rsi(closes),
            "macd": line,
            "macd_signal": signal,
            "macd_hist": hist,
            "bb_upper": upper,
            "bb_middle": middle,
            "bb_lower": lower,
        }
        for name, values in expected.items():
            assert np.count_nonzero(~np.isnan(values)) > 200
            np.testing.assert_array_equal(got["cv_" + name], values, err_msg=name)


def _at_bar_ends(run: Run, row: int, starts: F64) -> dict[int, dict[str, float]]:
    """Features reported at the last sample of each (non-empty) bar, by bar position."""
    out = {}
    for pos, start in enumerate(starts):
        key = run.last_in_bar[row].get(int(start) // INTERVAL)
        if key is not None:
            snap = run.snapshots[key[0]]
            out[pos] = snap.row(key[1])
    return out


@pytest.mark.shared_data
def test_peeked_features_equal_definitions_at_bar_close(
    real_run: tuple[FeatureEngine, list[Samples], Run],
) -> None:
    engine, pools, run = real_run
    p = engine.params
    ppy = proxies.periods_per_year(INTERVAL)
    compared: dict[str, int] = {}
    for row in range(len(pools)):
        bars = _closed_of(run, row)
        close, tvl = bars["close"], bars["tvl"]
        tick_tvl = tvl * 0.002  # as sampled (tick TVL at close follows TVL at close)
        volume_24h = proxies.rolling_sum_series(bars["volume"], p.bars_24h)
        swaps = proxies.rolling_sum_series(bars["swaps"], p.mev_bars)
        mev = proxies.rolling_sum_series(bars["mev_swaps"], p.mev_bars)
        line, signal, hist = ind.macd(close)
        upper, middle, lower = ind.bbands(close)
        expected: dict[str, F64] = {
            "price": close,
            "ret": proxies.log_returns(close),
            "move_sigma": proxies.move_sigma_series(close, p.sigma_window),
            "move_sigma_1h": proxies.move_sigma_n_series(close, p.bars_1h, p.sigma_window),
            "move_sigma_4h": proxies.move_sigma_n_series(close, p.bars_4h, p.sigma_window),
            "move_sigma_24h": proxies.move_sigma_n_series(close, p.bars_24h, p.sigma_window),
            "realized_vol": proxies.realized_vol_series(close, p.realized_vol_window, ppy),
            "tvl": tvl,
            "tick_tvl": tick_tvl,
            "volume_24h": volume_24h,
            "tvl_volume_ratio": proxies.tvl_volume_ratio(tvl, volume_24h),
            "iv": proxies.lambert_iv(0.0005, volume_24h, tick_tvl),
            "tvl_drain_1h": proxies.tvl_drain_series(tvl, close, p.bars_1h),
            "mev_score": proxies.mev_share(mev, swaps),
            "rsi": ind.rsi(close, p.rsi_period),
            "macd": line,
            "macd_signal": signal,
            "macd_hist": hist,
            "bb_upper": upper,
            "bb_middle": middle,
            "bb_lower": lower,
            "bb_pos": (close - lower) / (upper - lower),
        }
        seen = _at_bar_ends(run, row, bars["start"])
        assert len(seen) > 200
        exact = {"price", "tvl", "rsi", "macd", "macd_signal", "macd_hist"}
        exact |= {"bb_upper", "bb_middle", "bb_lower"}
        for name, values in expected.items():
            got = np.array([seen[pos][name] for pos in sorted(seen)])
            want = values[sorted(seen)]
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
            compared[name] = compared.get(name, 0) + int(np.count_nonzero(~np.isnan(want)))
            if name in exact:
                np.testing.assert_array_equal(got, want, err_msg=name)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=name)
    assert set(compared) == set(ENGINE_FEATURES) - {"breadth", "corr"}
    assert min(compared.values()) > 100, compared  # every feature compared on real values


@pytest.mark.shared_data
def test_breadth_and_corr_equal_their_definitions(
    real_run: tuple[FeatureEngine, list[Samples], Run],
) -> None:
    engine, pools, run = real_run
    closed = [_closed_of(run, row) for row in range(len(pools))]
    # Breadth at the end: every closed bar's return sign, plus each forming bar's.
    expected_breadth = 0.0
    for row, bars in enumerate(closed):
        ret = proxies.log_returns(bars["close"])
        expected_breadth += float(np.nansum(np.sign(ret)))
        forming = math.log(pools[row].price[-1]) - math.log(bars["close"][-1])
        expected_breadth += float(np.sign(forming))
    last = run.snapshots[-1]
    assert last.values["breadth"][0] == expected_breadth
    assert engine.breadth() == expected_breadth
    # Corr: pools whose last closed bar is the newest, over their last corr_window returns.
    wc = engine.params.corr_window
    newest = max(int(b["start"][-1]) for b in closed)
    windows = [
        proxies.log_returns(b["close"])[-wc:] for b in closed if int(b["start"][-1]) == newest
    ]
    assert len(windows) >= 2
    expected_corr = proxies.mean_pairwise_corr(np.array(windows))
    assert engine.corr() == pytest.approx(expected_corr, abs=1e-9)
    assert np.all(last.values["corr"] == engine.corr())
    # Along the run, corr is a correlation and breadth moves by at most K per update.
    corr = np.array([s.values["corr"][0] for s in run.snapshots])
    assert np.nanmin(corr) >= -1.0 - 1e-12
    assert np.nanmax(corr) <= 1.0 + 1e-12
    assert np.count_nonzero(~np.isnan(corr)) > 100


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
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for key in a:
            _assert_same_state(a[key], b[key], f"{path}.{key}")
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=path)


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
    _assert_same_state(reference.get_state()["bars"], engine.get_state()["bars"])
    ref_state, state = reference.get_state(), engine.get_state()
    for key in ref_state:
        _assert_same_state(ref_state[key], state[key], key)


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
    assert len(snap.closed) == 0
    assert all(v.shape == (0,) for v in snap.closed_values.values())


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
    np.testing.assert_array_equal(engine.bars.late_dropped, [1, 0])


def test_gap_fills_every_interval_and_steps_indicators() -> None:
    params = FeatureParams(bar_interval=60, rsi_period=3, bb_period=3)
    engine = FeatureEngine(params, np.array([0.003]))
    for i, price in enumerate([1.0, 1.1, 1.2, 1.15, 1.3]):
        _synthetic_update(engine, 60 * i, [0], [price])
    snap = _synthetic_update(engine, 60 * 10, [0], [1.25])
    assert len(snap.closed) == 6  # bar 4 with its sample, then bars 5..9 carried
    np.testing.assert_array_equal(snap.closed.start, [240, 300, 360, 420, 480, 540])
    closes = np.array([1.0, 1.1, 1.2, 1.15, 1.3, 1.3, 1.3, 1.3, 1.3, 1.3])
    np.testing.assert_array_equal(snap.closed_values["rsi"], ind.rsi(closes, 3)[4:])
    # A flat window: zero width (the middle is the running-sum SMA, as in TA-Lib).
    assert snap.closed_values["bb_upper"][-1] == snap.closed_values["bb_lower"][-1]
    assert snap.closed_values["bb_middle"][-1] == pytest.approx(1.3, rel=1e-15)


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
    with pytest.raises(ValueError, match="FeatureParams"):
        FeatureEngine(FeatureParams(bar_interval=30), np.array([0.003, 0.003])).set_state(
            engine.get_state()
        )
    with pytest.raises(ValueError, match="pools"):
        FeatureEngine(FeatureParams(bar_interval=60), np.array([0.003])).set_state(
            engine.get_state()
        )


def test_all_rows_hot_path_matches_batch_exactly() -> None:
    """All-pool updates (where the last peek of a bar prepares its commit) mixed with
    subset updates (which invalidate that preparation) still commit the batch values."""
    k = 5
    params = FeatureParams(bar_interval=60, rsi_period=5, macd_fast=3, macd_slow=7)
    engine = FeatureEngine(params, np.full(k, 0.003))
    rng = np.random.default_rng(9)
    price = np.full(k, 100.0)
    closed: list[list[float]] = [[] for _ in range(k)]
    values: dict[str, list[list[float]]] = {n: [[] for _ in range(k)] for n in CLOSED_VALUE_NAMES}
    time = 0
    for _ in range(900):
        time += int(rng.integers(1, 40))
        everyone = rng.random() < 0.7
        rows = np.arange(k) if everyone else np.flatnonzero(rng.random(k) < 0.5)
        if rows.size == 0:
            continue
        price[rows] *= np.exp(rng.normal(0, 0.01, rows.size))
        n = rows.size
        snap = engine.update(
            time,
            rows.astype(np.int64),
            price[rows],
            np.full(n, 1e6),
            np.full(n, 1e4),
            np.full(n, 5.0),
            np.ones(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
        )
        for i, r in enumerate(snap.closed.rows):
            closed[int(r)].append(float(snap.closed.close[i]))
            for name in CLOSED_VALUE_NAMES:
                values[name][int(r)].append(float(snap.closed_values[name][i]))
    for r in range(k):
        closes = np.array(closed[r])
        assert closes.size > 250
        line, signal, hist = ind.macd(closes, 3, 7, 9)
        upper, middle, lower = ind.bbands(closes, 20, 2.0)
        expected = {
            "rsi": ind.rsi(closes, 5),
            "macd": line,
            "macd_signal": signal,
            "macd_hist": hist,
            "bb_upper": upper,
            "bb_middle": middle,
            "bb_lower": lower,
        }
        for name, want in expected.items():
            np.testing.assert_array_equal(np.array(values[name][r]), want, err_msg=name)
