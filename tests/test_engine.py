"""The layer state machine, in the style of Prometheus' TestKeepFiringFor: an inline
series, a fixed start time, one evaluation per step, and the expected state after
each step.

Series syntax: numbers separated by spaces; ``NxK`` repeats N K times; ``_`` means the
pool was not sampled at that step (not evaluated); ``nan`` is a missing feature.
Expected states: ``i`` inactive, ``p`` pending, ``F`` firing; an event in that step is
written after a colon: ``F:firing``, ``i:resolved``, ``F:repeat``, ``F:firing*`` (suppressed).
"""

from __future__ import annotations

import math
import pickle
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.expr import parse
from rules.layers.engine import (
    TRANSITIONS,
    IllegalTransitionError,
    LayerEngine,
    LayerSpec,
    Signal,
    State,
)
from rules.types import FEATURE_NAMES

T0 = 1_700_000_000
STEP = 60


def expr(text: str):  # type: ignore[no-untyped-def]
    return parse(text, FEATURE_NAMES)


def series(text: str) -> list[float | None]:
    out: list[float | None] = []
    for tok in text.split():
        if "x" in tok:
            v, n = tok.split("x")
            out += [None if v == "_" else float(v)] * int(n)
        else:
            out.append(None if tok == "_" else float(tok))
    return out


def layer(
    name: str = "L1", level: int = 1, when: str = "move_sigma >= 2", **kw: object
) -> LayerSpec:
    clear = kw.pop("clear_when", None)
    return LayerSpec(
        name=name,
        level=level,
        when=expr(when),
        clear_when=expr(str(clear)) if clear is not None else None,
        **kw,  # type: ignore[arg-type]
    )


def run(layers: list[LayerSpec], inputs: dict[str, str], step: int = STEP) -> dict[str, list[str]]:
    """Evaluate one pool; returns per layer the state code after each step."""
    eng = LayerEngine(layers, 1)
    cols = {k: series(v) for k, v in inputs.items()}
    n = len(next(iter(cols.values())))
    assert all(len(c) == n for c in cols.values())
    out: dict[str, list[str]] = {spec.name: [] for spec in eng.layers}
    for i in range(n):
        t = T0 + i * step
        sampled = all(c[i] is not None for c in cols.values())
        events: dict[int, str] = {}
        if sampled:
            feats = {name: np.array([float(cols[name][i])]) for name in cols}  # type: ignore[arg-type]
            feats.setdefault("threshold_scale", np.array([1.0]))
            for tr in eng.evaluate(t, np.array([0], dtype=np.int64), feats):
                if tr.event is not None:
                    ev = "repeat" if tr.repeat else tr.event
                    events[tr.layer] = ev + ("" if tr.notify else "*")
        for li, spec in enumerate(eng.layers):
            code = "ipF"[int(eng.state[li, 0])]
            if li in events:
                code += ":" + events[li]
            out[spec.name].append(code)
    return out


CASES = [
    # name, layer kwargs, move_sigma series, expected states of L1
    ("fires at once with for=0", {}, "0 3 3 0", "i F:firing F i:resolved"),
    ("for holds in pending", {"for_": 120}, "0 3 3 3 3 0", "i p p F:firing F i:resolved"),
    ("pending drops when the condition breaks", {"for_": 120}, "0 3 0 3 3 3", "i p i p p F:firing"),
    (
        "keep_firing_for bridges a short dip",
        {"keep_firing_for": 120},
        "3 0 3 0 0 0 0",
        "F:firing F F F F i:resolved i",
    ),
    (
        "hysteresis: clear only below 0.5",
        {"clear_when": "move_sigma < 0.5"},
        "3 1.9 2.1 1.9 1 0.4 2.1",
        "F:firing F F F F i:resolved F:firing",
    ),
    (
        "cooldown holds a resolved layer",
        {"cooldown": 180},
        "3 0 3 3 3 3",
        "F:firing i:resolved i i F:firing F",
    ),
    (
        "repeat_interval re-sends",
        {"repeat_interval": 120},
        "3 3 3 3 3 0",
        "F:firing F F:repeat F F:repeat i:resolved",
    ),
    ("missing sample never resolves", {}, "3 _ _ 3 0", "F:firing F F F i:resolved"),
    ("NaN never resolves (unknown)", {}, "3 nan nan 0", "F:firing F F i:resolved"),
    ("NaN never fires", {}, "nan nan 3", "i i F:firing"),
    (
        "NaN does not reset keep_firing_for progress into resolution",
        {"keep_firing_for": 60},
        "3 0 nan 0",
        "F:firing F F i:resolved",
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "values", "expected"), CASES, ids=[c[0] for c in CASES])
def test_single_layer_table(
    name: str, kwargs: dict[str, object], values: str, expected: str
) -> None:
    got = run([layer(**kwargs)], {"move_sigma": values})["L1"]
    assert got == expected.split(), name


def test_clear_when_with_nan_is_unknown_and_keeps_firing() -> None:
    got = run([layer(clear_when="rsi > 50")], {"move_sigma": "3 0 0 0", "rsi": "20 nan 40 60"})[
        "L1"
    ]
    assert got == ["F:firing", "F", "F", "i:resolved"]


def test_inhibition_suppresses_lower_and_releases_it() -> None:
    layers = [
        layer("L1", 1, "move_sigma >= 1"),
        layer("L2", 2, "move_sigma >= 2", inhibit_lower=True),
    ]
    got = run(layers, {"move_sigma": "0 1.5 2.5 2.5 1.5 0"})
    assert got["L2"] == ["i", "i", "F:firing", "F", "i:resolved", "i"]
    # L1 fired (notified) before L2; it stays firing under inhibition, its resolve is still
    # notified because its firing was.
    assert got["L1"] == ["i", "F:firing", "F", "F", "F", "i:resolved"]


def test_inhibition_of_a_layer_that_first_fires_under_it() -> None:
    layers = [
        layer("L1", 1, "move_sigma >= 1", for_=60),
        layer("L2", 2, "move_sigma >= 2", inhibit_lower=True),
    ]
    got = run(layers, {"move_sigma": "2.5 2.5 2.5 1.5 1.5 0"})
    assert got["L2"] == ["F:firing", "F", "F", "i:resolved", "i", "i"]
    # L1 fires while inhibited (suppressed), is notified when L2 resolves, then resolves.
    assert got["L1"] == ["p", "F:firing*", "F", "F:firing", "F", "i:resolved"]


def test_inhibited_layer_resolving_under_inhibition_is_silent() -> None:
    layers = [
        layer("L1", 1, "abs(move_sigma) >= 1"),
        layer("L2", 2, "tvl_drain_1h >= 0.2", inhibit_lower=True),
    ]
    got = run(layers, {"move_sigma": "2 2 0 0", "tvl_drain_1h": "0.5 0.5 0.5 0"})
    assert got["L2"] == ["F:firing", "F", "F", "i:resolved"]
    assert got["L1"] == ["F:firing*", "F", "i:resolved*", "i"]


def test_calendar_scale_tightens_threshold() -> None:
    got = run(
        [layer(when="abs(move_sigma) >= 2 * threshold_scale")],
        {"move_sigma": "1.6 1.6 1.6 0", "threshold_scale": "1 0.75 0.75 1"},
    )["L1"]
    assert got == ["i", "F:firing", "F", "i:resolved"]


def test_vectorised_over_pools_matches_single_pool_runs() -> None:
    rng = np.random.default_rng(7)
    n_pools, n_steps = 20, 60
    data = rng.normal(0, 1.5, size=(n_steps, n_pools))
    data[rng.random(size=data.shape) < 0.05] = np.nan
    spec = layer(for_=60, keep_firing_for=120, cooldown=60, repeat_interval=300)
    eng = LayerEngine([spec], n_pools)
    singles = [LayerEngine([spec], 1) for _ in range(n_pools)]
    for i in range(n_steps):
        t = T0 + i * STEP
        rows = np.arange(n_pools, dtype=np.int64)
        feats = {"move_sigma": data[i], "threshold_scale": np.ones(n_pools)}
        vec = {(tr.row, tr.event, tr.repeat) for tr in eng.evaluate(t, rows, feats) if tr.event}
        one = set()
        for k, e in enumerate(singles):
            f1 = {"move_sigma": data[i, k : k + 1], "threshold_scale": np.ones(1)}
            one |= {
                (k, tr.event, tr.repeat)
                for tr in e.evaluate(t, np.array([0], dtype=np.int64), f1)
                if tr.event
            }
        assert vec == one
        assert [int(e.state[0, 0]) for e in singles] == eng.state[0].tolist()


def test_transition_table_is_closed_and_illegal_pairs_raise() -> None:
    for (state, _signal), (nxt, event) in TRANSITIONS.items():
        assert isinstance(nxt, State)
        if event == "firing":
            assert nxt == State.FIRING
        if event == "resolved":
            assert state == State.FIRING
            assert nxt == State.INACTIVE
    eng = LayerEngine([layer()], 1)
    # Force an impossible pair: PENDING with a RESOLVE signal.
    eng.state[0, 0] = State.PENDING

    def bad(*args: object) -> None:
        out = args[-1]
        assert isinstance(out, np.ndarray)
        out[:] = Signal.RESOLVE

    eng._signals = bad  # type: ignore[method-assign]
    with pytest.raises(IllegalTransitionError):
        eng.evaluate(T0, np.array([0], dtype=np.int64), {"move_sigma": np.array([0.0])})
    assert eng.state[0, 0] == State.PENDING  # unchanged


# -- properties ------------------------------------------------------------------

values = st.lists(
    st.one_of(st.floats(-4, 4), st.just(math.nan), st.none()),
    min_size=1,
    max_size=40,
)
layer_params = st.fixed_dictionaries(
    {
        "for_": st.sampled_from([0, 60, 180]),
        "keep_firing_for": st.sampled_from([0, 60, 240]),
        "cooldown": st.sampled_from([0, 120]),
        "repeat_interval": st.sampled_from([0, 180]),
    }
)


def _legal_moves() -> set[tuple[int, int]]:
    return {(int(s), int(n)) for (s, _), (n, _) in TRANSITIONS.items()}


@settings(max_examples=200, deadline=None)
@given(values, layer_params, st.booleans())
def test_properties_of_the_machine(
    vals: list[float | None], params: dict[str, int], use_clear: bool
) -> None:
    spec = layer(clear_when="move_sigma < 0.5" if use_clear else None, **params)
    eng = LayerEngine([spec], 1)
    legal = _legal_moves()
    rows = np.array([0], dtype=np.int64)
    for i, v in enumerate(vals):
        before = int(eng.state[0, 0])
        if v is None:
            continue
        trs = eng.evaluate(T0 + i * STEP, rows, {"move_sigma": np.array([v])})
        after = int(eng.state[0, 0])
        assert (before, after) in legal | {(before, before)}
        for tr in trs:
            # no event without a state change, except repeats
            if tr.event is not None and not tr.repeat:
                assert tr.previous != tr.state or tr.uninhibited
            if tr.event == "firing":
                assert tr.state == State.FIRING
        if before == after:
            assert all(tr.repeat or tr.event is None for tr in trs)


@settings(max_examples=100, deadline=None)
@given(values, layer_params, st.integers(0, 39))
def test_save_restore_gives_same_continuation(
    vals: list[float | None], params: dict[str, int], cut: int
) -> None:
    spec = layer(**params)
    a = LayerEngine([spec], 1)
    rows = np.array([0], dtype=np.int64)
    log_a: list[tuple[int, str | None, bool]] = []
    log_b: list[tuple[int, str | None, bool]] = []
    b: LayerEngine | None = None
    for i, v in enumerate(vals):
        if i == cut:
            b = LayerEngine([spec], 1)
            b.set_state(pickle.loads(pickle.dumps(a.get_state())))
        if v is None:
            continue
        feats = {"move_sigma": np.array([v])}
        log_a += [(i, tr.event, tr.repeat) for tr in a.evaluate(T0 + i * STEP, rows, feats)]
        if b is not None:
            log_b += [(i, tr.event, tr.repeat) for tr in b.evaluate(T0 + i * STEP, rows, feats)]
    if b is not None:
        assert [x for x in log_a if x[0] >= cut] == log_b


def test_set_state_matches_layers_by_name() -> None:
    a = LayerEngine([layer("L1"), layer("L2", 2)], 2)
    a.evaluate(T0, np.array([0, 1], dtype=np.int64), {"move_sigma": np.array([3.0, 0.0])})
    b = LayerEngine([layer("L2", 2), replace(layer("L3", 3))], 2)
    b.set_state(a.get_state())
    assert b.status(b.layer_index("L2"), 0)[0] == State.FIRING
    assert b.status(b.layer_index("L3"), 0)[0] == State.INACTIVE
