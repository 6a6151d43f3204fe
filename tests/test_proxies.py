"""The proxies' definitions (tests/oracles.py) against reference vectors (Tulip, Lambert),
their properties, and the engine against the same vectors; rules.features.proxies'
shared helpers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.features import proxies
from rules.features.engine import FeatureEngine, FeatureParams
from tests import oracles


def _tulip_blocks(path: Path) -> list[tuple[str, list[float], list[list[float]], list[float]]]:
    """Parse Tulip Indicators' test file: ``name options``, ``{inputs}``..., ``{expected}``."""
    blocks = []
    lines: list[str] = []
    for raw in [*path.read_text().splitlines(), ""]:
        line = raw.strip()
        if line.startswith("#"):
            continue
        if line:
            lines.append(line)
            continue
        if lines:
            head = lines[0].split()
            arrays = [
                [float(v) for v in body.strip("{};").split(",") if v.strip()] for body in lines[1:]
            ]
            blocks.append((head[0], [float(o) for o in head[1:]], arrays[:-1], arrays[-1]))
        lines = []
    return blocks


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["untest.txt", "extra.txt"])
def test_realized_vol_reproduces_tulip_volatility(shared_data: Path, name: str) -> None:
    path = shared_data / "reference_vectors" / "tulipindicators" / name
    cases = [b for b in _tulip_blocks(path) if b[0] == "volatility"]
    assert len(cases) == 1
    _, options, inputs, expected = cases[0]
    period = int(options[0])
    ours = oracles.realized_vol_series(np.array(inputs[0]), period, periods=252.0)
    assert np.isnan(ours[:period]).all()  # Tulip's first output is at index `period`
    np.testing.assert_allclose(ours[period:], expected, atol=0.0015)  # vectors have 3 dp
    # The engine, one sample per bar: its realized_vol rescaled from its own year of bars
    # to Tulip's 252 periods.
    interval = 86400
    engine = FeatureEngine(
        FeatureParams(bar_interval=interval, realized_vol_window=period), np.array([0.003])
    )
    got = []
    for day, close in enumerate(inputs[0]):
        snap = engine.update(
            day * interval,
            np.array([0]),
            np.array([close]),
            *(np.ones(1),) * 3,
            np.zeros(1, dtype=np.int64),
            np.zeros(1, dtype=np.int64),
        )
        got.append(float(snap.values["realized_vol"][0]))
    scale = math.sqrt(252.0 / proxies.periods_per_year(interval))
    assert np.isnan(got[:period]).all()
    np.testing.assert_allclose(np.array(got[period:]) * scale, expected, atol=0.0015)


def test_lambert_iv_published_example() -> None:
    # Lambert, "On-chain volatility and Uniswap v3": ETH/USDC 0.3%, 24h volume $76.52M,
    # liquidity in the current tick $4.35M -> about 48% implied volatility.
    iv = float(oracles.lambert_iv(0.003, 76.52e6, 4.35e6))
    assert iv == pytest.approx(0.4808, abs=5e-4)
    assert 0.475 < iv < 0.485


@pytest.mark.parametrize(
    ("fee", "volume", "tick_tvl", "expected"),
    [
        (0.003, 0.0, 1e6, 0.0),  # no volume: zero implied volatility
        (0.003, 1e6, 0.0, math.nan),  # no liquidity in the tick: undefined
        (0.003, 1e6, math.nan, math.nan),
        (math.nan, 1e6, 1e6, math.nan),  # unknown fee tier
        (0.0005, 4e6, 1e6, 2 * 0.0005 * 2.0 * math.sqrt(365)),
    ],
)
def test_lambert_iv_edges(fee: float, volume: float, tick_tvl: float, expected: float) -> None:
    got = float(oracles.lambert_iv(fee, volume, tick_tvl))
    if math.isnan(expected):
        assert math.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("tvl", "volume", "expected"),
    [(1e6, 2e6, 0.5), (1e6, 0.0, math.nan), (math.nan, 1.0, math.nan)],
)
def test_tvl_volume_ratio(tvl: float, volume: float, expected: float) -> None:
    got = float(oracles.tvl_volume_ratio(tvl, volume))
    assert got == pytest.approx(expected, nan_ok=True)


def test_tvl_drain_is_price_neutral_and_sees_withdrawals() -> None:
    # A constant-product pool with fixed liquidity L: tvl = 2 * L * sqrt(price).
    liquidity = 1000.0
    price = np.array([100.0, 120.0, 80.0, 150.0, 60.0])
    tvl = 2 * liquidity * np.sqrt(price)
    drain = oracles.tvl_drain_series(tvl, price, 3)
    np.testing.assert_allclose(drain, 0.0, atol=1e-12)
    # 30% of the liquidity leaves while the price also moves.
    tvl_after = tvl.copy()
    tvl_after[-1] = 2 * 0.7 * liquidity * np.sqrt(price[-1])
    assert oracles.tvl_drain_series(tvl_after, price, 3)[-1] == pytest.approx(0.3)
    # The withdrawal left the 3-bar window: no drain anymore.
    longer_tvl = np.append(tvl_after, [tvl_after[-1]] * 4)
    longer_price = np.append(price, [price[-1]] * 4)
    assert oracles.tvl_drain_series(longer_tvl, longer_price, 3)[-1] == 0.0
    assert math.isnan(float(oracles.tvl_drain(math.nan, 1.0)))
    assert float(oracles.tvl_drain(2.0, 1.0)) == 0.0  # liquidity added: no drain


def test_mev_share() -> None:
    np.testing.assert_array_equal(
        oracles.mev_share(np.array([0, 2, 0]), np.array([0, 4, 3])), [math.nan, 0.5, 0.0]
    )


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    k=st.integers(min_value=2, max_value=8),
    w=st.integers(min_value=3, max_value=30),
)
def test_mean_pairwise_corr_matches_corrcoef(seed: int, k: int, w: int) -> None:
    rng = np.random.default_rng(seed)
    common = rng.normal(size=w)
    returns = rng.normal(size=(k, w)) + rng.uniform(0, 2) * common
    corr = np.corrcoef(returns)
    expected = (corr.sum() - k) / (k * (k - 1))
    assert oracles.mean_pairwise_corr(returns) == pytest.approx(expected, abs=1e-12)


def test_mean_pairwise_corr_edges() -> None:
    assert math.isnan(oracles.mean_pairwise_corr(np.ones((1, 5))))
    flat_and_one = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 3.0]])
    assert math.isnan(oracles.mean_pairwise_corr(flat_and_one))  # flat rows are left out
    same = np.array([[1.0, 2.0, 4.0], [2.0, 4.0, 8.0], [1.0, 2.0, 4.0]])
    assert oracles.mean_pairwise_corr(same) == pytest.approx(1.0)
    opposite = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    assert oracles.mean_pairwise_corr(opposite) == pytest.approx(-1.0)


def test_breadth_series_is_the_advance_decline_line() -> None:
    returns = np.array([[0.1, -0.2, 0.0], [0.1, 0.1, 0.1], [-0.1, -0.1, math.nan]])
    np.testing.assert_array_equal(oracles.breadth_series(returns), [0.0, 3.0, 1.0])


def test_move_sigma_excludes_the_current_bar() -> None:
    close = np.exp(np.cumsum([0.0, 0.01, -0.01, 0.01, -0.01, 0.01, 0.5]))
    ms = oracles.move_sigma_series(close, 5)
    sigma = np.std(np.diff(np.log(close))[:5], ddof=1)
    assert ms[-1] == pytest.approx(0.5 / sigma)
    assert np.isnan(ms[:6]).all()
    ms_n = oracles.move_sigma_n_series(close, 2, 5)
    assert ms_n[-1] == pytest.approx((0.5 + 0.01) / (sigma * math.sqrt(2)))


@pytest.mark.parametrize(
    ("seconds", "interval", "expected"),
    [(3600, 300, 12), (86400, 300, 288), (3600, 7200, 1), (3600, 3600, 1), (100, 60, 1)],
)
def test_bars_in(seconds: int, interval: int, expected: int) -> None:
    assert proxies.bars_in(seconds, interval) == expected


def test_periods_per_year_and_rolling_sum() -> None:
    assert proxies.periods_per_year(300) == 105_120.0
    assert proxies.periods_per_year(86400) == 365.0
    np.testing.assert_array_equal(
        oracles.rolling_sum_series(np.array([1.0, 2.0, 3.0, 4.0]), 2), [1.0, 3.0, 5.0, 7.0]
    )
    with pytest.raises(ValueError, match="bar_interval"):
        proxies.bars_in(10, 0)
