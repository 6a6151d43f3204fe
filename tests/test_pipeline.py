"""The shared pipeline: stable ids across save/restore, reorg retraction, calendar scale."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.calendar import CalendarWindow
from rules.expr import parse
from rules.features.engine import FeatureParams
from rules.hedge.advice import HedgeSpec
from rules.layers.engine import LayerSpec
from rules.pipeline import Pipeline, PipelineSpec, PoolInfo
from rules.types import FEATURE_NAMES, PoolId

T0 = 1_700_000_040  # a minute boundary
POOL = PoolId("devchain", "0x" + "11" * 20)
POOL2 = PoolId("other", "0x" + "22" * 20)


def spec(
    *, calendar: tuple[CalendarWindow, ...] = (), when: str = "abs(move_sigma) >= 3"
) -> PipelineSpec:
    return PipelineSpec(
        features=FeatureParams(bar_interval=60, sigma_window=10, realized_vol_window=10),
        layers=(
            LayerSpec(
                name="L1",
                level=1,
                when=parse(when, FEATURE_NAMES),
                clear_when=parse("abs(move_sigma) < 1", FEATURE_NAMES),
                hedge=HedgeSpec(
                    instrument="put", strike_sigma=-1.0, coverage=0.25, expiry=7 * 86400
                ),
            ),
        ),
        calendar=calendar,
        reorg_depth=16,
    )


def pools() -> list[PoolInfo]:
    return [PoolInfo(POOL, 31337, "A", fee=0.0005), PoolInfo(POOL2, 10, "B", fee=0.003)]


def path(n: int, seed: int, crash_at: int | None = None) -> list[float]:
    rng = np.random.default_rng(seed)
    p, out = 2000.0, []
    for i in range(n):
        p *= math.exp(rng.normal(0, 0.001))
        if crash_at is not None and i == crash_at:
            p *= 0.9
        out.append(p)
    return out


def step(
    pipe: Pipeline, i: int, price: float, *, chain: str = "devchain", fork: str = "a"
) -> list[str]:
    row = pipe.row_of[POOL if chain == "devchain" else POOL2]
    res = pipe.step(
        T0 + 12 * i,
        np.array([row], dtype=np.int64),
        np.array([price]),
        np.array([1e7]),
        np.array([1e6]),
        np.array([1e4]),
        np.array([3], dtype=np.int64),
        np.array([0], dtype=np.int64),
        block=i,
        block_hash=f"0x{fork}{i:063x}",
        chain=chain,
    )
    return [a.id for a in res.alerts]


@settings(max_examples=30, deadline=None)
@given(st.integers(5, 115), st.integers(0, 1000))
def test_ids_are_stable_across_save_and_restore(cut: int, seed: int) -> None:
    prices = path(120, seed, crash_at=80)
    a = Pipeline(spec(), pools())
    ids_a: list[str] = []
    ids_b: list[str] = []
    b: Pipeline | None = None
    for i, p in enumerate(prices):
        if i == cut:
            b = Pipeline(spec(), pools())
            b.set_state(pickle.loads(pickle.dumps(a.get_state())))
        ids_a += [(i, x) for x in step(a, i, p)]  # type: ignore[misc]
        if b is not None:
            ids_b += [(i, x) for x in step(b, i, p)]  # type: ignore[misc]
    assert [x for x in ids_a if x[0] >= cut] == ids_b  # type: ignore[index]


def test_crash_fires_with_hedge_and_reorg_retracts_it() -> None:
    pipe = Pipeline(spec(), pools())
    prices = path(80, 3)
    for i, p in enumerate(prices):
        assert step(pipe, i, p) == []
    crash_block = len(prices)
    res = pipe.step(
        T0 + 12 * crash_block,
        np.array([0], dtype=np.int64),
        np.array([prices[-1] * 0.9]),
        np.array([1e7]),
        np.array([1e6]),
        np.array([1e4]),
        np.array([3], dtype=np.int64),
        np.array([0], dtype=np.int64),
        block=crash_block,
        block_hash="0xcrash",
        chain="devchain",
    )
    (fired,) = res.alerts
    assert fired.event == "firing"
    assert fired.hedge is not None
    assert fired.hedge["instrument"] == "put"
    assert fired.block == crash_block
    # the crash block is reorganised away: a retraction of exactly that firing
    retracted, statuses = pipe.rollback("devchain", crash_block - 1)
    (r,) = retracted
    assert r.event == "retracted"
    assert r.retracts == fired.id
    assert r.id != fired.id
    assert {s.state for s in statuses} == {"inactive"}
    # the new branch has no crash: nothing fires, and state continues normally
    for i in range(crash_block, crash_block + 5):
        assert step(pipe, i, prices[-1], fork="b") == []
    # a second rollback to before the crash finds nothing to retract
    assert pipe.rollback("devchain", crash_block)[0] == []


def test_rollback_restores_exact_state_and_other_chains_untouched() -> None:
    pipe = Pipeline(spec(), pools())
    prices = path(60, 5)
    for i, p in enumerate(prices):
        step(pipe, i, p)
        step(pipe, i, p * 1.1, chain="other")
    ref = Pipeline(spec(), pools())
    for i, p in enumerate(prices[:50]):
        step(ref, i, p)
    for i, p in enumerate(prices):
        step(ref, i, p * 1.1, chain="other")
    pipe.rollback("devchain", 49)
    a, b = pipe.get_state(), ref.get_state()
    for key in ("features", "engine"):
        pa, pb = pickle.dumps(a[key]), pickle.dumps(b[key])
        assert pa == pb, key


def test_rollback_deeper_than_the_journal_is_an_error() -> None:
    pipe = Pipeline(spec(), pools())
    for i, p in enumerate(path(200, 1)):
        step(pipe, i, p)
    with pytest.raises(ValueError, match="deeper than the kept history"):
        pipe.rollback("devchain", 100)


def test_calendar_window_scales_thresholds_in_the_pipeline() -> None:
    # The same 2.5-sigma crash fires only inside a window with threshold_scale 0.75.
    prices = path(80, 11)
    crash = prices[-1] * 0.993
    outs = {}
    for label, dates in (("outside", (T0 + 10 * 86400,)), ("inside", (T0 + 12 * 80,))):
        window = CalendarWindow(
            name="CPI", cron=None, dates=dates, before=3600, after=3600, threshold_scale=0.75
        )
        pipe = Pipeline(
            spec(calendar=(window,), when="abs(move_sigma) >= 4 * threshold_scale"), pools()
        )
        for i, p in enumerate(prices):
            step(pipe, i, p)
        res = pipe.step(
            T0 + 12 * 80,
            np.array([0], dtype=np.int64),
            np.array([crash]),
            np.array([1e7]),
            np.array([1e6]),
            np.array([1e4]),
            np.array([3], dtype=np.int64),
            np.array([0], dtype=np.int64),
        )
        ms = float(res.snapshot.values["move_sigma"][0])
        outs[label] = (res.alerts, res.threshold_scale, ms)
    alerts_out, scale_out, ms = outs["outside"]
    alerts_in, scale_in, _ = outs["inside"]
    assert 3 <= abs(ms) < 4, ms  # the move sits between the scaled and unscaled thresholds
    assert scale_out == 1.0
    assert alerts_out == []
    assert scale_in == 0.75
    assert [a.event for a in alerts_in] == ["firing"]
    assert alerts_in[0].threshold_scale == 0.75


def test_a_changed_pool_table_restores_the_shared_pools_and_unchanged_layers() -> None:
    """A config that adds and removes pools (the kept one on another row) and changes one
    layer's rule: the kept pool continues warm, the changed layer starts cold."""
    always = LayerSpec(name="L2", level=2, when=parse("price > 0", FEATURE_NAMES))
    before = PipelineSpec(features=spec().features, layers=(*spec().layers, always), reorg_depth=16)
    a = Pipeline(before, pools())
    for i, p in enumerate(path(80, 5)):
        step(a, i, p)
        step(a, i, p * 1.5, chain="other")
    pool3 = PoolInfo(PoolId("devchain", "0x" + "33" * 20), 31337, "C", fee=0.003)
    changed = LayerSpec(name="L2", level=2, when=parse("price > 1", FEATURE_NAMES))
    after = PipelineSpec(features=spec().features, layers=(*spec().layers, changed), reorg_depth=16)
    b = Pipeline(after, [pool3, pools()[0]])
    report = b.set_state(pickle.loads(pickle.dumps(a.get_state())))
    assert report.pools == (str(POOL),)
    assert report.cold_pools == (str(pool3.pool),)
    assert (report.layers, report.cold_layers) == (("L1",), ("L2",))
    row_a, row_b = a.row_of[POOL], b.row_of[POOL]
    assert (row_a, row_b) == (0, 1)
    l1, l2 = a.engine.layer_index("L1"), a.engine.layer_index("L2")
    assert a.engine.status(l2, row_a)[0].name == "FIRING"
    assert b.engine.status(l2, row_b)[0].name == "INACTIVE"  # changed: cold
    assert b.engine.status(l1, row_b) == a.engine.status(l1, row_a)
    # the kept pool's features continue exactly: the next step gives the same values
    sample = (
        np.array([2100.0]),
        np.array([1e7]),
        np.array([1e6]),
        np.array([1e4]),
        np.array([3], dtype=np.int64),
        np.array([0], dtype=np.int64),
    )
    t = T0 + 12 * 80
    got_a = a.step(t, np.array([row_a], dtype=np.int64), *sample).snapshot.values
    got_b = b.step(t, np.array([row_b], dtype=np.int64), *sample).snapshot.values
    for name in ("move_sigma", "rsi", "realized_vol", "price"):
        assert not math.isnan(float(got_a[name][0])), name
        assert float(got_b[name][0]) == float(got_a[name][0]), name
