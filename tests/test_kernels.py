"""The compiled loops (``rules.features.kernels``) are the per-step code, bit for bit.

``Pipeline.step_many`` runs its steps in compiled loops when no layer status is wanted
and nothing reads ``corr``. Each test here steps
the same table twice, compiled and with ``Pipeline.compiled = False`` (the per-step code,
itself checked against single steps in tests/test_backtest.py), and asserts the same
alerts (payloads, order), the same states after every step, the same feature values and
the same engine state at the end, compared on the bits.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.replay import load
from daemon.backtest.run import align, load_backtest_config, plan_pools, with_spread
from rules import pipeline as pipeline_module
from rules.calendar import CalendarWindow
from rules.features import kernels
from rules.features.engine import ENGINE_FEATURES, FeatureParams
from rules.hedge.advice import HedgeSpec
from rules.layers.engine import LayerSpec
from rules.pipeline import BatchResult, Pipeline, PipelineSpec, PoolInfo, compile_kernels
from tests.test_backtest import (
    BAR,
    ETH_HOURLY,
    EXAMPLE,
    expr,
    pool_infos,
    same,
    sample_tables,
)

COLUMNS = ("price", "tvl", "tick_tvl", "volume", "swaps", "mev_swaps")
#: Every feature the compiled loops produce, and the calendar's scale.
KEEP = (*(n for n in ENGINE_FEATURES if n != "corr"), "threshold_scale")


KERNEL_ROWS = {
    "_PRICE": "price",
    "_RET": "ret",
    "_MOVE_SIGMA": "move_sigma",
    "_MOVE_1H": "move_sigma_1h",
    "_MOVE_4H": "move_sigma_4h",
    "_MOVE_24H": "move_sigma_24h",
    "_REALIZED_VOL": "realized_vol",
    "_RSI": "rsi",
    "_MACD": "macd",
    "_MACD_SIGNAL": "macd_signal",
    "_MACD_HIST": "macd_hist",
    "_BB_UPPER": "bb_upper",
    "_BB_MIDDLE": "bb_middle",
    "_BB_LOWER": "bb_lower",
    "_BB_POS": "bb_pos",
    "_TVL": "tvl",
    "_TICK_TVL": "tick_tvl",
    "_VOLUME_24H": "volume_24h",
    "_TVL_VOLUME": "tvl_volume_ratio",
    "_IV": "iv",
    "_TVL_DRAIN": "tvl_drain_1h",
    "_MEV_SCORE": "mev_score",
    "_BREADTH": "breadth",
    "_CORR": "corr",
}


def test_kernel_constants_are_the_engines() -> None:
    assert list(kernels.FEATURE_INDEX) == list(ENGINE_FEATURES)
    assert sorted(KERNEL_ROWS.values()) == sorted(ENGINE_FEATURES)
    for constant, feature in KERNEL_ROWS.items():
        assert getattr(kernels, constant) == ENGINE_FEATURES.index(feature), constant


@st.composite
def specs(draw: st.DrawFn, bar: int = BAR) -> PipelineSpec:
    """Small windows (so that warm-ups end inside short tables) and every layer setting;
    durations in bars of ``bar`` seconds."""
    BAR = bar
    sigma_window = draw(st.integers(2, 5))
    macd_fast = draw(st.integers(2, 3))
    features = FeatureParams(
        bar_interval=BAR,
        rsi_period=draw(st.integers(2, 4)),
        macd_fast=macd_fast,
        macd_slow=macd_fast + draw(st.integers(1, 3)),
        macd_signal=draw(st.integers(1, 3)),
        bb_period=draw(st.integers(2, 4)),
        bb_nbdev=draw(st.sampled_from([0.0, 1.5, 2.0])),
        sigma_window=sigma_window,
        realized_vol_window=draw(st.integers(2, 5)),
        # corr is not computed, but its window is state that must come out the same.
        corr_window=draw(st.sampled_from([sigma_window, sigma_window + 1])),
        mev_window=draw(st.sampled_from([BAR, 3 * BAR])),
    )
    threshold = draw(st.sampled_from([0.5, 1.0, 2.0]))
    dates = tuple(draw(st.lists(st.integers(0, 40), max_size=2)))
    calendar = (
        (
            CalendarWindow(
                "event", None, tuple(1_700_000_000 + d * BAR for d in dates), 120, 240, 0.5
            ),
        )
        if dates
        else ()
    )
    layers = (
        LayerSpec(
            "L1",
            1,
            expr(f"abs(move_sigma) >= {threshold} * threshold_scale or rsi < 30"),
            clear_when=draw(st.sampled_from([None, expr("abs(move_sigma) < 0.5")])),
            for_=draw(st.sampled_from([0, BAR, 2 * BAR])),
            keep_firing_for=draw(st.sampled_from([0, BAR, 3 * BAR])),
            repeat_interval=draw(st.sampled_from([0, 2 * BAR])),
            hedge=HedgeSpec("put", -1.0, 0.25, 7 * 86400, spread=0.01),
        ),
        LayerSpec(
            "L2",
            2,
            expr(f"abs(move_sigma_1h) >= {2 * threshold} * threshold_scale and macd_hist < 0"),
            inhibit_lower=draw(st.booleans()),
            for_=draw(st.sampled_from([0, BAR])),
            repeat_interval=draw(st.sampled_from([0, 3 * BAR])),
            cooldown=draw(st.sampled_from([0, 2 * BAR])),
            hedge=HedgeSpec("collar", -2.0, 0.5, 14 * 86400, call_sigma=1.0),
        ),
        LayerSpec(
            "L3",
            3,
            expr(
                "breadth <= -2 or mev_score >= 0.5 or tvl_drain_1h >= 0.05 "
                "or bb_pos > 1 or realized_vol > 3 or iv > 2 or tvl_volume_ratio < 0.5"
            ),
            clear_when=expr("bb_pos < 0.8 and mev_score < 0.2"),
            inhibit_lower=draw(st.booleans()),
            for_=draw(st.sampled_from([0, BAR])),
            cooldown=draw(st.sampled_from([0, 2 * BAR])),
            keep_firing_for=draw(st.sampled_from([0, BAR])),
        ),
    )
    return PipelineSpec(features=features, layers=layers, calendar=calendar)


def run(
    pipeline: Pipeline, table: dict[str, Any], cuts: list[int], keep: tuple[str, ...] = KEEP
) -> tuple[list[Any], list[Any], np.ndarray, dict[str, np.ndarray]]:
    """Step ``table`` in batches cut at ``cuts``: (alerts, suppressed, states, values)."""
    alerts: list[Any] = []
    suppressed: list[Any] = []
    states, values = [], {name: [] for name in keep}
    for start, end in itertools.pairwise(cuts):
        part: BatchResult = pipeline.step_many(
            table["times"][start:end],
            *(table[c][start:end] for c in COLUMNS),
            present=table["present"][start:end] if "present" in table else None,
            blocks=np.arange(start, end, dtype=np.int64),
            block_hash="0xab",
            keep=keep,
            statuses=False,
        )
        alerts += [a.to_payload() for a in part.alerts]
        suppressed += [a.to_payload() for a in part.suppressed]
        states.append(part.states)
        for name in keep:
            values[name].append(part.values[name])
    return (
        alerts,
        suppressed,
        np.concatenate(states),
        {name: np.concatenate(v) for name, v in values.items()},
    )


def assert_same_runs(
    spec: PipelineSpec, infos: list[PoolInfo], table: dict[str, Any], cuts: list[int]
) -> tuple[Pipeline, list[Any]]:
    """Step ``table`` compiled and on the per-step code; assert every result the same.
    Returns the compiled pipeline and its alert payloads."""
    compiled = Pipeline(spec, infos)
    reference = Pipeline(spec, infos)
    reference.compiled = False
    got = run(compiled, table, cuts)
    want = run(reference, table, cuts)
    assert got[0] == want[0]
    assert got[1] == want[1]
    assert same(got[2], want[2])
    for name in KEEP:
        assert same(got[3][name], want[3][name]), name
    assert same(compiled.get_state(), reference.get_state())
    return compiled, got[0]


#: Bars of 6 hours: a day is 4 bars, so the 24-hour windows (volume, horizons) fill and
#: empty inside a short table.
LONG_BAR = 6 * 3600


@st.composite
def cases(draw: st.DrawFn) -> tuple[dict[str, Any], PipelineSpec]:
    """A table (half of them with every pool at every time) and a spec on its scale."""
    table = draw(sample_tables())
    bar = draw(st.sampled_from([BAR, LONG_BAR]))
    times = table["times"]
    table["times"] = times[0] + (times - times[0]) * (bar // BAR)
    n_steps = times.size
    # Quiet stretches (no volume, no swaps) and flat ones (the same price): the windows'
    # "all zero" rules, not only their running sums.
    if draw(st.booleans()):
        a = draw(st.integers(0, n_steps - 1))
        b = draw(st.integers(a, n_steps))
        table["volume"][a:b] = 0.0
        table["swaps"][a:b] = 0
        table["mev_swaps"][a:b] = 0
    if draw(st.booleans()):
        a = draw(st.integers(0, n_steps - 1))
        table["price"][a : draw(st.integers(a, n_steps))] = table["price"][a]
    return table, draw(specs(bar))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.integers(1, 9))
def test_compiled_steps_are_the_per_step_code(
    case: tuple[dict[str, Any], PipelineSpec], chunk: int
) -> None:
    # Several samples in a bar, gaps of empty bars, batches cut anywhere, compiled chunks
    # of any length: the compiled loops give the per-step code's results bit for bit.
    table, spec = case
    n_steps, n_pools = table["price"].shape
    cuts = sorted({0, n_steps, *table["chunks"]})
    original = pipeline_module.TABLE_CELLS
    pipeline_module.TABLE_CELLS = chunk * n_pools
    try:
        compiled, _ = assert_same_runs(spec, pool_infos(n_pools), table, cuts)
    finally:
        pipeline_module.TABLE_CELLS = original
    # Both batches ran compiled (they were eligible): nothing was left to the step loop.
    assert compiled._table_applies(table["times"][-1:], KEEP, statuses=False)


def test_the_compiled_loops_take_only_what_they_reproduce() -> None:
    spec = PipelineSpec(
        features=FeatureParams(bar_interval=BAR, sigma_window=4, realized_vol_window=4),
        layers=(LayerSpec("L1", 1, expr("abs(move_sigma) >= 1")),),
    )
    with_corr = PipelineSpec(
        features=spec.features, layers=(LayerSpec("L1", 1, expr("corr > 0.5")),)
    )
    pipe = Pipeline(spec, pool_infos(2))
    times = np.array([1_700_000_000, 1_700_000_060], dtype=np.int64)
    assert pipe._table_applies(times, (), statuses=False)
    # Layer statuses (the daemon's catch-up) are built by the per-step code.
    assert not pipe._table_applies(times, (), statuses=True)
    # corr, read by a layer or kept: numpy's and BLAS's sums, not reproducible in a loop.
    assert not pipe._table_applies(times, ("corr",), statuses=False)
    assert not Pipeline(with_corr, pool_infos(2))._table_applies(times, (), statuses=False)
    # A first sample before a pool's forming bar would be late: the per-step code drops it.
    counts = np.zeros(2, dtype=np.int64)
    later = int(times[1]) + 10 * BAR
    pipe.step(later, np.arange(2), np.ones(2), *(np.zeros(2),) * 3, counts, counts)
    assert not pipe._table_applies(times, (), statuses=False)
    # An empty batch has nothing to compile.
    assert not pipe._table_applies(times[:0], (), statuses=False)


@pytest.mark.shared_data
@pytest.mark.slow
def test_four_years_of_eth_compiled_are_the_per_step_code(shared_data: Path) -> None:
    # Real data, the example config (DESIGN.md's layers and calendar): 3 pools replaying
    # ETH/USDT hourly 2018-2021 (two of them rotated by months), compiled vs per step.
    (eth,) = load([str(shared_data / ETH_HOURLY)])
    config = load_backtest_config(EXAMPLE, interval="1h")
    spec = with_spread(config.pipeline_spec(), 0.02)
    plans = plan_pools(config, [eth], 10_000.0)
    aligned = align([plans[0].series])
    n_steps = aligned.price.shape[0]
    log_ret = np.diff(np.log(aligned.price[:, 0]), prepend=np.log(aligned.price[0, 0]))
    price = np.stack(
        [aligned.price[0, 0] * np.exp(np.cumsum(np.roll(log_ret, -k * 2000))) for k in range(3)],
        axis=1,
    )
    volume = np.stack([np.roll(aligned.volume[:, 0], -k * 2000) for k in range(3)], axis=1)
    zeros = np.zeros((n_steps, 3), dtype=np.int64)
    table = {
        "times": aligned.times,
        "price": price,
        "tvl": np.full((n_steps, 3), np.nan),
        "tick_tvl": np.full((n_steps, 3), np.nan),
        "volume": volume,
        "swaps": zeros,
        "mev_swaps": zeros,
    }
    infos = [plans[0].info, *(pool_infos(3)[1:])]
    _, alerts = assert_same_runs(spec, infos, table, [0, 5000, n_steps])
    assert len(alerts) > 1000  # the example config fires often on hourly crypto


def test_compile_kernels_steps_a_table_through_the_compiled_loops() -> None:
    # What scripts/setup.sh runs so that the first backtest finds the loops compiled
    # (compile_kernels itself checks the alerts of the table it steps).
    compile_kernels()
    for loop in (kernels.feature_steps, kernels.layer_steps):
        assert loop.signatures, f"{loop.__name__} was not compiled"
