"""The layer state machine (rules/layers), in the style of Prometheus' TestKeepFiringFor:
an inline series, a fixed start time, one evaluation per step, and the expected state
and events after each step; then hypothesis properties against a small reference model
written below from the rules in :mod:`rules.layers.machine`'s docstring.

Series syntax: numbers separated by spaces; ``NxK`` repeats N K times; ``_`` means the
pool was not sampled at that step (not evaluated); ``nan`` is a missing feature.
Expected states: ``i`` inactive, ``p`` pending, ``F`` firing; an event in that step is
written after a colon: ``F:firing``, ``i:resolved``, ``F:repeat``, ``F:firing*``
(suppressed: not notified), ``F:released`` (notified when its inhibition ended).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from rules.expr import parse
from rules.layers import machine
from rules.layers.engine import (
    NO_TIME,
    TRANSITIONS,
    IllegalTransitionError,
    LayerEngine,
    LayerSpec,
    Signal,
    State,
    Transition,
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


def code(tr: Transition) -> str:
    """An event as the tables write it."""
    assert tr.event is not None
    if tr.uninhibited:
        return "released"
    return ("repeat" if tr.repeat else tr.event) + ("" if tr.notify else "*")


def run(layers: list[LayerSpec], inputs: dict[str, str], step: int = STEP) -> dict[str, list[str]]:
    """Evaluate one pool; returns per layer the state code (and event) after each step."""
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
                    assert tr.layer not in events, "one event per layer and step"
                    events[tr.layer] = code(tr)
        for li, spec in enumerate(eng.layers):
            state = "ipF"[int(eng.state[li, 0])]
            out[spec.name].append(state + (":" + events[li] if li in events else ""))
    return out


CASES = [
    # name, layer kwargs, move_sigma series, expected states of L1
    ("fires at once with for=0", {}, "0 3 3 0", "i F:firing F i:resolved"),
    ("for holds in pending", {"for_": 120}, "0 3 3 3 3 0", "i p p F:firing F i:resolved"),
    ("pending drops when the condition breaks", {"for_": 120}, "0 3 0 3 3 3", "i p i p p F:firing"),
    ("pending drops on unknown", {"for_": 120}, "3 nan 3 3 3", "p i p p F:firing"),
    (
        "for counts time, not samples: gaps keep pending",
        {"for_": 120},
        "0 3 _ _ 3 0",
        "i p p p F:firing i:resolved",
    ),
    (
        "keep_firing_for bridges a short dip",
        {"keep_firing_for": 120},
        "3 0 3 0 0 0 0",
        "F:firing F F F F i:resolved i",
    ),
    (
        "keep_firing_for counts from the first clear evaluation, across a gap",
        {"keep_firing_for": 120},
        "3 0 _ 0 0",
        "F:firing F F i:resolved i",
    ),
    (
        "hysteresis: clear only below 0.5",
        {"clear_when": "move_sigma < 0.5"},
        "3 1.9 2.1 1.9 1 0.4 2.1",
        "F:firing F F F F i:resolved F:firing",
    ),
    (
        "band and keep_firing_for: inside the band restarts the count",
        {"clear_when": "move_sigma < 0.5", "keep_firing_for": 60},
        "3 0 1 0 0 0",
        "F:firing F F F i:resolved i",
    ),
    (
        "cooldown holds a resolved layer",
        {"cooldown": 180},
        "3 0 3 3 3 3",
        "F:firing i:resolved i i F:firing F",
    ),
    (
        "cooldown delays pending too",
        {"cooldown": 120, "for_": 60},
        "3 3 0 3 3 3 3",
        "p F:firing i:resolved i p F:firing F",
    ),
    (
        "repeat_interval re-sends",
        {"repeat_interval": 120},
        "3 3 3 3 3 0",
        "F:firing F F:repeat F F:repeat i:resolved",
    ),
    (
        "no repeat while the clear condition holds",
        {"repeat_interval": 60, "keep_firing_for": 120},
        "3 0 0 0 3",
        "F:firing F F i:resolved F:firing",
    ),
    (
        "a repeat may come on an unknown evaluation",
        {"repeat_interval": 120},
        "3 3 nan 3",
        "F:firing F F:repeat F",
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
    (
        "a known not-clear resets keep_firing_for progress",
        {"keep_firing_for": 60},
        "3 0 3 0 0",
        "F:firing F F F i:resolved",
    ),
    # Rule 4a: staleness.
    (
        "unknown for stale_after resolves, counted from the first unknown evaluation",
        {"stale_after": 120},
        "3 nan nan nan 3",
        "F:firing F F i:resolved F:firing",
    ),
    (
        "one missed sample never resolves: a known evaluation stops the count",
        {"stale_after": 60},
        "3 nan 3 nan 3 nan 0",
        "F:firing F F F F F i:resolved",
    ),
    (
        "a known clear stops the count too",
        {"stale_after": 120, "keep_firing_for": 120},
        "3 nan 0 nan nan 3",
        "F:firing F F F F F",
    ),
    (
        "the stale count runs on time, across pools not sampled",
        {"stale_after": 120},
        "3 nan _ _ nan",
        "F:firing F F F i:resolved",
    ),
    (
        "a repeat due at the first unknown evaluation starts the count",
        {"repeat_interval": 120, "stale_after": 180},
        "3 3 nan nan nan nan",
        "F:firing F F:repeat F F:repeat i:resolved",
    ),
    (
        "stale_after 0: unknown holds a firing layer (rule 4 alone)",
        {"stale_after": 0},
        "3 nanx20",
        "F:firing " + "F " * 20,
    ),
    (
        "a stale resolve starts the cooldown",
        {"stale_after": 60, "cooldown": 120},
        "3 nan nan 3 3 3",
        "F:firing F i:resolved i F:firing F",
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "values", "expected"), CASES, ids=[c[0] for c in CASES])
def test_single_layer_table(
    name: str, kwargs: dict[str, object], values: str, expected: str
) -> None:
    got = run([layer(**kwargs)], {"move_sigma": values})["L1"]
    assert got == expected.split(), name


def test_a_stale_resolve_says_how_long_and_which_inputs() -> None:
    eng = LayerEngine(
        [
            layer("L3", 3, "tvl_drain_1h >= 0.2 or mev_score >= 0.5", stale_after=7200),
            layer("L1", 1, "rsi < 30", clear_when="rsi > 50 and macd > 0", stale_after=7200),
        ],
        1,
    )
    rows = np.array([0], dtype=np.int64)
    nan = math.nan

    def at(hours: float, drain: float, mev: float, rsi: float, macd: float) -> list[Transition]:
        feats = {
            "tvl_drain_1h": np.array([drain]),
            "mev_score": np.array([mev]),
            "rsi": np.array([rsi]),
            "macd": np.array([macd]),
        }
        return eng.evaluate(T0 + int(hours * 3600), rows, feats, events_only=True)

    assert [t.event for t in at(0, 0.3, nan, 20, nan)] == ["firing", "firing"]
    assert at(1, 0.1, nan, 60, nan) == []  # both decisions unknown from here
    assert at(2.5, 0.1, nan, 60, nan) == []
    got = at(3.25, 0.1, nan, 60, nan)
    assert [(t.event, t.previous, t.state) for t in got] == [
        ("resolved", State.FIRING, State.INACTIVE)
    ] * 2
    assert {eng.layers[t.layer].name: t.reason for t in got} == {
        "L1": "inputs unknown for 2h15m: macd",
        "L3": "inputs unknown for 2h15m: mev_score",
    }
    assert all(t.since == T0 and t.notify for t in got)


def test_a_state_saved_before_stale_after_restores_with_the_count_unset() -> None:
    spec = layer(stale_after=120)
    old = LayerEngine([spec], 2)
    rows = np.arange(2, dtype=np.int64)
    old.evaluate(T0, rows, {"move_sigma": np.array([3.0, 3.0])})
    saved = old.get_state()
    del saved["unknown_since"]  # the layer state a checkpoint of the previous format holds
    for subset in (None, np.array([1], dtype=np.int64)):
        new = LayerEngine([spec], 2)
        new.unknown_since[:] = T0  # whatever was there before
        new.set_state(saved, subset)
        restored = slice(None) if subset is None else subset
        assert (new.unknown_since[0, restored] == NO_TIME).all()
        assert (new.state[0, restored] == State.FIRING).all()
    new = LayerEngine([spec], 2)
    new.set_state(saved)
    for i in range(1, 4):  # the count starts at the first unknown evaluation after it
        got = new.evaluate(T0 + i * STEP, rows, {"move_sigma": np.array([math.nan, 3.0])})
        assert [t.event for t in got] == (["resolved"] if i == 3 else [])


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
    assert got["L1"] == ["p", "F:firing*", "F", "F:released", "F", "i:resolved"]


def test_inhibited_layer_resolving_under_inhibition_is_silent() -> None:
    layers = [
        layer("L1", 1, "abs(move_sigma) >= 1"),
        layer("L2", 2, "tvl_drain_1h >= 0.2", inhibit_lower=True),
    ]
    got = run(layers, {"move_sigma": "2 2 0 0", "tvl_drain_1h": "0.5 0.5 0.5 0"})
    assert got["L2"] == ["F:firing", "F", "F", "i:resolved"]
    assert got["L1"] == ["F:firing*", "F", "i:resolved*", "i"]


def test_inhibited_repeats_are_suppressed_and_restart_the_repeat_timer() -> None:
    layers = [
        layer("L1", 1, "abs(move_sigma) >= 1", repeat_interval=120),
        layer("L2", 2, "tvl_drain_1h >= 0.2", inhibit_lower=True),
    ]
    got = run(layers, {"move_sigma": "2x7", "tvl_drain_1h": "0 0 0.5 0.5 0.5 0 0"})
    assert got["L2"] == ["i", "i", "F:firing", "F", "F", "i:resolved", "i"]
    # Notified at 0; due at 2 but inhibited (suppressed, timer restarts), due again at 4
    # (suppressed again); the inhibition ends at 5 but L1 had been notified: no release.
    assert got["L1"] == ["F:firing", "F", "F:repeat*", "F", "F:repeat*", "F", "F:repeat"]


def test_a_layer_without_inhibit_lower_inhibits_nothing_and_equal_levels_never() -> None:
    layers = [
        layer("L1", 2, "move_sigma >= 1"),
        layer("L2", 2, "move_sigma >= 2", inhibit_lower=True),
        layer("L3", 3, "move_sigma >= 2"),
    ]
    got = run(layers, {"move_sigma": "3 0"})
    assert got == {
        "L1": ["F:firing", "i:resolved"],
        "L2": ["F:firing", "i:resolved"],
        "L3": ["F:firing", "i:resolved"],
    }


def test_calendar_scale_tightens_threshold() -> None:
    got = run(
        [layer(when="abs(move_sigma) >= 2 * threshold_scale")],
        {"move_sigma": "1.6 1.6 1.6 0", "threshold_scale": "1 0.75 0.75 1"},
    )["L1"]
    assert got == ["i", "F:firing", "F", "i:resolved"]


def test_statuses_carry_pending_and_dropped_changes_without_reasons() -> None:
    eng = LayerEngine([layer(for_=120)], 2)
    rows = np.array([0, 1], dtype=np.int64)
    got: list[list[tuple[Any, ...]]] = []
    for i, (a, b) in enumerate([(3, 0), (0, 3), (0, 3), (0, 3)]):
        feats = {"move_sigma": np.array([a, b], dtype=np.float64)}
        got.append(
            [
                (tr.row, tr.previous.name, tr.state.name, tr.event, tr.since, tr.reason != "")
                for tr in eng.evaluate(T0 + i * STEP, rows, feats)
            ]
        )
    t1 = T0 + STEP
    assert got == [
        [(0, "INACTIVE", "PENDING", None, T0, False)],
        [
            (0, "PENDING", "INACTIVE", None, NO_TIME, False),
            (1, "INACTIVE", "PENDING", None, t1, False),
        ],
        [],
        [(1, "PENDING", "FIRING", "firing", t1, True)],
    ]
    # events_only: the same machine, only the event.
    again = LayerEngine([layer(for_=120)], 2)
    for i, (a, b) in enumerate([(3, 0), (0, 3), (0, 3), (0, 3)]):
        feats = {"move_sigma": np.array([a, b], dtype=np.float64)}
        trs = again.evaluate(T0 + i * STEP, rows, feats, events_only=True)
        assert [tr.event for tr in trs] == ([] if i < 3 else ["firing"])
    assert same_state(again.get_state(), eng.get_state())


def test_reasons_and_since_of_the_events() -> None:
    eng = LayerEngine([layer(clear_when="move_sigma < 0.5", for_=60)], 1)
    rows = np.array([0], dtype=np.int64)
    out = []
    for i, v in enumerate([3.0, 2.5, 0.2]):
        out += eng.evaluate(T0 + i * STEP, rows, {"move_sigma": np.array([v])}, block=7 + i)
    pending, firing, resolved = out
    assert (pending.event, pending.since) == (None, T0)
    assert (firing.event, firing.since, firing.block) == ("firing", T0, 8)
    assert firing.reason == "move_sigma=2.5 >= 2"
    assert (resolved.event, resolved.since, resolved.time) == ("resolved", T0, T0 + 2 * STEP)
    assert resolved.reason == "move_sigma=0.2 < 0.5"
    assert eng.status(0, 0) == (State.INACTIVE, NO_TIME)


def test_pools_not_sampled_are_not_evaluated() -> None:
    eng = LayerEngine([layer(for_=60)], 3)
    eng.evaluate(T0, np.arange(3, dtype=np.int64), {"move_sigma": np.array([3.0, 3.0, 3.0])})
    before = eng.get_state()
    # Only pool 1 is sampled (its value breaks the condition): 0 and 2 stay pending with
    # their timers, even though a long time passed.
    trs = eng.evaluate(T0 + 600, np.array([1], dtype=np.int64), {"move_sigma": np.array([0.0])})
    assert [(tr.row, tr.state) for tr in trs] == [(1, State.INACTIVE)]
    after = eng.get_state()
    for name in LayerEngine._ARRAYS:
        assert np.array_equal(after[name][:, [0, 2]], before[name][:, [0, 2]]), name
    # Rows in any order: the features are aligned with rows, the transitions in that order.
    trs = eng.evaluate(
        T0 + 660, np.array([2, 0], dtype=np.int64), {"move_sigma": np.array([3.0, 0.0])}
    )
    assert [(tr.row, tr.previous, tr.state) for tr in trs] == [
        (2, State.PENDING, State.FIRING),
        (0, State.PENDING, State.INACTIVE),
    ]


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
        vec = [(tr.row, tr.event, tr.repeat) for tr in eng.evaluate(t, rows, feats) if tr.event]
        one = []
        for k, e in enumerate(singles):
            f1 = {"move_sigma": data[i, k : k + 1], "threshold_scale": np.ones(1)}
            one += [
                (k, tr.event, tr.repeat)
                for tr in e.evaluate(t, np.array([0], dtype=np.int64), f1)
                if tr.event
            ]
        assert vec == one
        assert [int(e.state[0, 0]) for e in singles] == eng.state[0].tolist()


# -- the table and the guard -------------------------------------------------------


def test_transition_table_is_closed_and_is_what_the_loop_reads() -> None:
    for (state, signal), (nxt, event) in TRANSITIONS.items():
        assert isinstance(nxt, State)
        if event == "firing":
            assert nxt == State.FIRING
        if event == "resolved":
            assert state == State.FIRING
            assert nxt == State.INACTIVE
        if signal == Signal.HOLD:
            assert (nxt, event) == (state, None)
    for state in State:
        for signal in Signal:
            move = TRANSITIONS.get((state, signal))
            assert machine._NEXT[state, signal] == (-1 if move is None else move[0])
            assert machine._EVENT[state, signal] == (
                0 if move is None else machine.EVENT_KINDS.index(move[1])
            )


_F, _U = False, None  # readability of the guard table: false, unknown
NO_CLEAR = "no clear_when"  # the layer has none: its clear condition is `when` being false


def _truth(value: bool | None) -> tuple[bool, bool]:
    return (value is True, value is False)


GUARD_CASES = [
    # state, when, clear (None: no clear_when), timers (since, clear_since, last_notified,
    # cooldown_until), notified, settings (for, keep_firing_for, cooldown, repeat), signal
    (State.INACTIVE, True, NO_CLEAR, (NO_TIME,) * 4, False, (0, 0, 0, 0), Signal.FIRE),
    (State.INACTIVE, True, NO_CLEAR, (NO_TIME,) * 4, False, (60, 0, 0, 0), Signal.ACTIVATE),
    (State.INACTIVE, _U, NO_CLEAR, (NO_TIME,) * 4, False, (0, 0, 0, 0), Signal.HOLD),
    (
        State.INACTIVE,
        True,
        None,
        (NO_TIME, NO_TIME, NO_TIME, 130),
        False,
        (0, 0, 60, 0),
        Signal.HOLD,
    ),
    (
        State.INACTIVE,
        True,
        None,
        (NO_TIME, NO_TIME, NO_TIME, 100),
        False,
        (0, 0, 60, 0),
        Signal.FIRE,
    ),
    (
        State.INACTIVE,
        True,
        None,
        (NO_TIME, NO_TIME, NO_TIME, 130),
        False,
        (0, 0, 0, 0),
        Signal.FIRE,
    ),
    (
        State.PENDING,
        True,
        NO_CLEAR,
        (50, NO_TIME, NO_TIME, NO_TIME),
        False,
        (60, 0, 0, 0),
        Signal.HOLD,
    ),
    (
        State.PENDING,
        True,
        NO_CLEAR,
        (40, NO_TIME, NO_TIME, NO_TIME),
        False,
        (60, 0, 0, 0),
        Signal.FIRE,
    ),
    (
        State.PENDING,
        _U,
        NO_CLEAR,
        (40, NO_TIME, NO_TIME, NO_TIME),
        False,
        (60, 0, 0, 0),
        Signal.DROP,
    ),
    (State.FIRING, _F, NO_CLEAR, (0, NO_TIME, 0, NO_TIME), True, (0, 0, 0, 0), Signal.RESOLVE),
    (State.FIRING, _F, NO_CLEAR, (0, NO_TIME, 0, NO_TIME), True, (0, 60, 0, 0), Signal.CLEAR_START),
    (State.FIRING, _F, NO_CLEAR, (0, 50, 0, NO_TIME), True, (0, 60, 0, 0), Signal.HOLD),
    (State.FIRING, _F, NO_CLEAR, (0, 40, 0, NO_TIME), True, (0, 60, 0, 0), Signal.RESOLVE),
    (State.FIRING, True, NO_CLEAR, (0, 40, 0, NO_TIME), True, (0, 60, 0, 0), Signal.CLEAR_RESET),
    (State.FIRING, _U, NO_CLEAR, (0, 40, 0, NO_TIME), True, (0, 60, 0, 0), Signal.HOLD),
    (State.FIRING, True, _F, (0, NO_TIME, 0, NO_TIME), True, (0, 0, 0, 0), Signal.HOLD),
    (State.FIRING, _F, True, (0, NO_TIME, 0, NO_TIME), True, (0, 0, 0, 0), Signal.RESOLVE),
    (State.FIRING, _F, _U, (0, NO_TIME, 0, NO_TIME), True, (0, 0, 0, 0), Signal.HOLD),
    (State.FIRING, True, NO_CLEAR, (0, NO_TIME, 40, NO_TIME), True, (0, 0, 0, 60), Signal.REPEAT),
    (State.FIRING, True, NO_CLEAR, (0, NO_TIME, 50, NO_TIME), True, (0, 0, 0, 60), Signal.HOLD),
    (State.FIRING, True, NO_CLEAR, (0, NO_TIME, 40, NO_TIME), False, (0, 0, 0, 60), Signal.HOLD),
    (State.FIRING, _U, NO_CLEAR, (0, 40, 40, NO_TIME), True, (0, 90, 0, 60), Signal.REPEAT),
]


STALE_GUARD_CASES = [
    # state, when, clear, (since, clear_since, last_notified, cooldown_until), notified,
    # (for, keep_firing_for, cooldown, repeat), unknown_since, stale_after, signal
    (
        State.FIRING,
        _U,
        NO_CLEAR,
        (0, NO_TIME, 0, NO_TIME),
        True,
        (0, 0, 0, 0),
        NO_TIME,
        60,
        Signal.UNKNOWN_START,
    ),
    (
        State.FIRING,
        _U,
        NO_CLEAR,
        (0, NO_TIME, 0, NO_TIME),
        True,
        (0, 0, 0, 0),
        NO_TIME,
        0,
        Signal.HOLD,
    ),
    (State.FIRING, _U, NO_CLEAR, (0, NO_TIME, 0, NO_TIME), True, (0, 0, 0, 0), 50, 60, Signal.HOLD),
    (
        State.FIRING,
        _U,
        NO_CLEAR,
        (0, NO_TIME, 0, NO_TIME),
        True,
        (0, 0, 0, 0),
        40,
        60,
        Signal.STALE,
    ),
    (State.FIRING, _U, NO_CLEAR, (0, NO_TIME, 0, NO_TIME), True, (0, 0, 0, 0), 40, 0, Signal.HOLD),
    (
        State.FIRING,
        True,
        NO_CLEAR,
        (0, NO_TIME, 0, NO_TIME),
        True,
        (0, 0, 0, 0),
        40,
        60,
        Signal.UNKNOWN_RESET,
    ),
    (
        State.FIRING,
        _F,
        NO_CLEAR,
        (0, 90, 0, NO_TIME),
        True,
        (0, 60, 0, 0),
        95,
        60,
        Signal.UNKNOWN_RESET,
    ),
    (State.FIRING, _F, NO_CLEAR, (0, 40, 0, NO_TIME), True, (0, 60, 0, 0), 40, 60, Signal.RESOLVE),
    (
        State.FIRING,
        _F,
        NO_CLEAR,
        (0, NO_TIME, 0, NO_TIME),
        True,
        (0, 60, 0, 0),
        40,
        60,
        Signal.CLEAR_START,
    ),
    (
        State.FIRING,
        True,
        NO_CLEAR,
        (0, 40, 0, NO_TIME),
        True,
        (0, 60, 0, 0),
        40,
        60,
        Signal.CLEAR_RESET,
    ),
    (State.FIRING, True, _U, (0, NO_TIME, 0, NO_TIME), True, (0, 0, 0, 0), 40, 60, Signal.STALE),
    (
        State.FIRING,
        True,
        _F,
        (0, NO_TIME, 0, NO_TIME),
        True,
        (0, 0, 0, 0),
        40,
        60,
        Signal.UNKNOWN_RESET,
    ),
    (
        State.FIRING,
        _U,
        NO_CLEAR,
        (0, NO_TIME, 40, NO_TIME),
        True,
        (0, 0, 0, 60),
        NO_TIME,
        60,
        Signal.REPEAT,
    ),
    (
        State.FIRING,
        _U,
        NO_CLEAR,
        (0, NO_TIME, 40, NO_TIME),
        True,
        (0, 0, 0, 60),
        40,
        60,
        Signal.STALE,
    ),
    (
        State.FIRING,
        True,
        NO_CLEAR,
        (0, NO_TIME, 40, NO_TIME),
        True,
        (0, 0, 0, 60),
        40,
        60,
        Signal.REPEAT,
    ),
    (
        State.PENDING,
        _U,
        NO_CLEAR,
        (40, NO_TIME, NO_TIME, NO_TIME),
        False,
        (60, 0, 0, 0),
        NO_TIME,
        60,
        Signal.DROP,
    ),
]


@pytest.mark.parametrize(
    (
        "state",
        "when",
        "clear",
        "timers",
        "notified",
        "layer_settings",
        "unknown_since",
        "stale_after",
        "expected",
    ),
    STALE_GUARD_CASES,
)
def test_the_guard_decides_the_stale_signals(
    state: State,
    when: bool | None,
    clear: bool | str | None,
    timers: tuple[int, int, int, int],
    notified: bool,
    layer_settings: tuple[int, int, int, int],
    unknown_since: int,
    stale_after: int,
    expected: Signal,
) -> None:
    # At time 100.
    when_true, when_false = _truth(when)
    clear_true, clear_false = _truth(None if clear == NO_CLEAR else clear)  # type: ignore[arg-type]
    got = machine._guard(
        int(state),
        when_true,
        when_false,
        clear_true,
        clear_false,
        *timers,
        notified,
        100,
        *layer_settings,
        clear != NO_CLEAR,
        unknown_since,
        stale_after,
    )
    assert Signal(got) == expected


@pytest.mark.parametrize(
    ("state", "when", "clear", "timers", "notified", "layer_settings", "expected"), GUARD_CASES
)
def test_the_guard_decides_each_signal(
    state: State,
    when: bool | None,
    clear: bool | str | None,
    timers: tuple[int, int, int, int],
    notified: bool,
    layer_settings: tuple[int, int, int, int],
    expected: Signal,
) -> None:
    # At time 100.
    when_true, when_false = _truth(when)
    clear_true, clear_false = _truth(None if clear == NO_CLEAR else clear)  # type: ignore[arg-type]
    got = machine._guard(
        int(state),
        when_true,
        when_false,
        clear_true,
        clear_false,
        *timers,
        notified,
        100,
        *layer_settings,
        clear != NO_CLEAR,
        NO_TIME,  # unknown_since: the clear decision was known
        0,  # stale_after: off
    )
    assert Signal(got) == expected


# -- refusals ------------------------------------------------------------------------


def same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["layers"] == b["layers"] and all(
        np.array_equal(a[k], b[k]) for k in a if k != "layers"
    )


def _two_by_two() -> tuple[LayerEngine, NDArray[np.int64]]:
    """Two layers on two pools; L1 on pool 0 is pending (for = 60)."""
    eng = LayerEngine([layer("L1", 1, "move_sigma >= 1", for_=60), layer("L2", 2)], 2)
    rows = np.arange(2, dtype=np.int64)
    eng.evaluate(T0, rows, {"move_sigma": np.array([1.5, 0.0])})
    assert eng.status(0, 0)[0] == State.PENDING
    return eng, rows


def test_an_illegal_move_raises_before_any_state_changes() -> None:
    eng, rows = _two_by_two()
    table = machine._NEXT.copy()
    table[State.PENDING, Signal.FIRE] = -1  # a table that forgot a move
    table.flags.writeable = False  # as the module's (one compiled loop)
    eng._next = table
    before = eng.get_state()
    # Pool 1 would fire both layers (legal), pool 0's L1 would go PENDING -> FIRING.
    with pytest.raises(
        IllegalTransitionError, match="layer L1, row 0: no transition for PENDING on FIRE"
    ):
        eng.evaluate(T0 + STEP, rows, {"move_sigma": np.array([1.5, 3.0])})
    assert same_state(eng.get_state(), before)


def test_a_corrupt_state_raises_before_any_state_changes() -> None:
    eng, rows = _two_by_two()
    eng.state[1, 1] = 7  # e.g. a saved state from elsewhere
    before = eng.get_state()
    with pytest.raises(IllegalTransitionError, match="layer L2, row 1: no transition for 7"):
        eng.evaluate(T0 + STEP, rows, {"move_sigma": np.array([1.5, 3.0])})
    assert same_state(eng.get_state(), before)


def test_a_table_without_the_release_move_is_refused_before_anything() -> None:
    eng, rows = _two_by_two()
    table = machine._NEXT.copy()
    table[State.FIRING, Signal.RELEASE] = -1
    table.flags.writeable = False
    eng._next = table
    before = eng.get_state()
    with pytest.raises(IllegalTransitionError, match="no transition for FIRING on RELEASE"):
        eng.evaluate(T0 + STEP, rows, {"move_sigma": np.array([1.5, 3.0])})
    assert same_state(eng.get_state(), before)


def test_a_row_outside_the_pools_raises_before_any_state_changes() -> None:
    eng, _ = _two_by_two()
    before = eng.get_state()
    with pytest.raises(IndexError, match="row 2 is not a pool"):
        eng.evaluate(T0 + STEP, np.array([0, 2], dtype=np.int64), {"move_sigma": np.ones(2)})
    with pytest.raises(IndexError, match="row -1 is not a pool"):
        eng.evaluate(T0 + STEP, np.array([-1], dtype=np.int64), {"move_sigma": np.ones(1)})
    assert same_state(eng.get_state(), before)


def test_buffers_the_loop_writes_are_checked_before_it_runs() -> None:
    eng, _ = _two_by_two()
    before = eng.get_state()
    with pytest.raises(ValueError, match="3 rows for 2 pools"):
        eng.evaluate(T0 + STEP, np.array([0, 1, 1], dtype=np.int64), {"move_sigma": np.ones(3)})
    with pytest.raises(ValueError, match=r"states_out has shape \(1, 2, 2\), not \(2, 2, 2\)"):
        eng.evaluate_table(
            T0 + STEP * np.arange(1, 3, dtype=np.int64),
            np.ones((2, 2), dtype=np.bool_),
            {"move_sigma": np.ones(4)},
            np.empty((1, 2, 2), dtype=np.int8),
        )
    assert same_state(eng.get_state(), before)


def test_a_table_stops_at_the_illegal_step_with_the_steps_before_applied() -> None:
    eng = LayerEngine([layer(for_=60)], 1)
    table = machine._NEXT.copy()
    table[State.PENDING, Signal.FIRE] = -1
    table.flags.writeable = False
    eng._next = table
    n_steps = 4
    states = np.full((n_steps, 1, 1), -9, dtype=np.int8)
    values = np.array([0.0, 3.0, 3.0, 3.0])  # pending at 1, would fire at 2
    with pytest.raises(IllegalTransitionError):
        eng.evaluate_table(
            T0 + STEP * np.arange(n_steps, dtype=np.int64),
            np.ones((n_steps, 1), dtype=np.bool_),
            {"move_sigma": values},
            states,
        )
    assert states[:2, 0, 0].tolist() == [State.INACTIVE, State.PENDING]
    assert states[2:, 0, 0].tolist() == [-9, -9]
    assert eng.status(0, 0) == (State.PENDING, T0 + STEP)


# -- save and restore ----------------------------------------------------------------


def test_set_state_matches_layers_by_name() -> None:
    a = LayerEngine([layer("L1"), layer("L2", 2)], 2)
    a.evaluate(T0, np.array([0, 1], dtype=np.int64), {"move_sigma": np.array([3.0, 0.0])})
    b = LayerEngine([layer("L2", 2), replace(layer("L3", 3))], 2)
    b.set_state(a.get_state())
    assert b.status(b.layer_index("L2"), 0)[0] == State.FIRING
    assert b.status(b.layer_index("L3"), 0)[0] == State.INACTIVE


def test_set_state_refuses_another_pool_count() -> None:
    a = LayerEngine([layer()], 2)
    with pytest.raises(ValueError, match="saved engine state has 2 pools, the engine has 3"):
        LayerEngine([layer()], 3).set_state(a.get_state())


# -- properties against a reference model ---------------------------------------------
#
# The model below is written from the rules of rules/layers/machine.py's docstring, one
# (layer, pool) at a time in plain Python, and knows nothing of signals or arrays. Its
# inputs are the truths themselves: layer i's `when` is `WHEN[i] > 0` and its clear_when
# `CLEAR[i] > 0`, fed 1 (true), -1 (false) or NaN (unknown).

WHEN = ("move_sigma", "rsi", "macd")
CLEAR = ("macd_hist", "tvl", "iv")
VALUE = {True: 1.0, False: -1.0, None: math.nan}


@dataclass(frozen=True)
class RefLayer:
    level: int
    for_: int = 0
    keep_firing_for: int = 0
    cooldown: int = 0
    repeat_interval: int = 0
    clear_when: bool = False
    inhibit_lower: bool = False
    stale_after: int = 0


@dataclass
class RefCell:
    """One (layer, pool)."""

    state: str = "inactive"
    since: int | None = None
    clear_since: int | None = None
    last_notified: int | None = None
    cooldown_until: int | None = None
    notified: bool = False
    unknown_since: int | None = None


@dataclass(frozen=True)
class RefEvent:
    layer: int
    row: int
    previous: str
    state: str
    event: str | None
    since: int | None
    repeat: bool = False
    notify: bool = False
    inhibited_by: int | None = None
    released: bool = False


@dataclass
class Reference:
    layers: list[RefLayer]
    n_pools: int
    cells: list[list[RefCell]] = field(init=False)

    def __post_init__(self) -> None:
        self.cells = [[RefCell() for _ in range(self.n_pools)] for _ in self.layers]

    def inhibitor(self, li: int, states: list[str]) -> int | None:
        """Rule 6: the first higher-level layer with inhibit_lower firing on the pool."""
        for hi, spec in enumerate(self.layers):
            higher = spec.inhibit_lower and spec.level > self.layers[li].level
            if higher and states[hi] == "firing":
                return hi
        return None

    def step(
        self, time: int, rows: Sequence[int], truths: dict[int, list[tuple[bool | None, ...]]]
    ) -> list[RefEvent]:
        """Evaluate the pools ``rows`` (truths[row][li] = (when, clear)); the transitions
        in layer order, then in the order of rows, then the releases."""
        moved: list[tuple[int, int, RefEvent]] = []
        released: list[tuple[int, int, RefEvent]] = []
        for position, row in enumerate(rows):
            before = [self.cells[li][row].state for li in range(len(self.layers))]
            changes: dict[int, tuple[str | None, bool]] = {}
            for li, spec in enumerate(self.layers):
                changes[li] = self._rule_3_to_5(spec, self.cells[li][row], time, *truths[row][li])
            after = [self.cells[li][row].state for li in range(len(self.layers))]
            for li, (event, repeat) in changes.items():
                cell = self.cells[li][row]
                previous = before[li]
                if event is None and previous == cell.state:
                    continue
                since = cell.since
                inhibited_by = self.inhibitor(li, after) if event else None
                notify = False
                if event == "firing":
                    notify = inhibited_by is None
                    cell.notified = cell.notified or notify
                    cell.last_notified = time
                elif event == "resolved":
                    notify, cell.notified = cell.notified, False
                    cell.since = None
                ev = RefEvent(
                    li, row, previous, cell.state, event, since, repeat, notify, inhibited_by
                )
                moved.append((li, position, ev))
            for li in range(len(self.layers)):
                cell = self.cells[li][row]
                unmoved = before[li] == "firing" == cell.state and not changes[li][1]
                was = self.inhibitor(li, before)
                now = self.inhibitor(li, after)
                if unmoved and was is not None and now is None and not cell.notified:
                    cell.notified, cell.last_notified = True, time
                    ev = RefEvent(
                        li, row, "firing", "firing", "firing", cell.since, False, True, was, True
                    )
                    released.append((li, position, ev))
        return [ev for *_, ev in sorted(moved, key=lambda m: m[:2])] + [
            ev for *_, ev in sorted(released, key=lambda m: m[:2])
        ]

    @staticmethod
    def _rule_3_to_5(
        spec: RefLayer, cell: RefCell, time: int, when: bool | None, clear_when: bool | None
    ) -> tuple[str | None, bool]:
        """Move one (layer, pool); returns (event, repeat)."""
        if cell.state == "inactive":
            cooling = cell.cooldown_until is not None and time < cell.cooldown_until
            if when is True and not (spec.cooldown > 0 and cooling):
                cell.since = time
                if spec.for_ == 0:
                    cell.state, cell.clear_since = "firing", None
                    return "firing", False
                cell.state = "pending"
            return None, False
        if cell.state == "pending":
            assert cell.since is not None
            if when is not True:
                cell.state, cell.since = "inactive", None
            elif time - cell.since >= spec.for_:
                cell.state, cell.clear_since = "firing", None
                return "firing", False
            return None, False
        clear = clear_when if spec.clear_when else (None if when is None else not when)
        if clear is None and spec.stale_after > 0:  # rule 4a
            if cell.unknown_since is None:
                cell.unknown_since = time
            elif time - cell.unknown_since >= spec.stale_after:
                cell.state, cell.clear_since, cell.unknown_since = "inactive", None, None
                cell.cooldown_until = time + spec.cooldown
                return "resolved", False
        elif clear is not None:
            cell.unknown_since = None
        if clear is True:
            if cell.clear_since is None:
                cell.clear_since = time
            if time - cell.clear_since >= spec.keep_firing_for:
                cell.state, cell.clear_since = "inactive", None
                cell.cooldown_until = time + spec.cooldown
                return "resolved", False
            return None, False
        if clear is False and cell.clear_since is not None:
            cell.clear_since = None
            return None, False
        assert cell.last_notified is not None or not cell.notified
        if (
            spec.repeat_interval > 0
            and cell.notified
            and cell.last_notified is not None
            and time - cell.last_notified >= spec.repeat_interval
        ):
            return "firing", True
        return None, False


ref_layers = st.lists(
    st.builds(
        RefLayer,
        level=st.integers(1, 3),
        for_=st.sampled_from([0, 60, 180]),
        keep_firing_for=st.sampled_from([0, 60, 240]),
        cooldown=st.sampled_from([0, 120]),
        repeat_interval=st.sampled_from([0, 120, 180]),
        clear_when=st.booleans(),
        inhibit_lower=st.booleans(),
        stale_after=st.sampled_from([0, 0, 60, 120]),
    ),
    min_size=1,
    max_size=3,
).map(lambda layers: sorted(layers, key=lambda s: s.level))
truth_values = st.sampled_from([True, True, False, False, None])


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[RefLayer], int, list[dict[int, Any]]]:
    """Layers, a pool count and per step the truths of each sampled pool (dict order:
    the order of rows in that step)."""
    layers = draw(ref_layers)
    n_pools = draw(st.integers(1, 3))
    n_steps = draw(st.integers(1, 30))
    steps = []
    for _ in range(n_steps):
        rows = draw(st.permutations(range(n_pools)))
        sampled = [row for row in rows if draw(st.integers(0, 5))]  # ~1 in 6 not sampled
        steps.append(
            {row: [(draw(truth_values), draw(truth_values)) for _ in layers] for row in sampled}
        )
    return layers, n_pools, steps


def engine_of(layers: Sequence[RefLayer], n_pools: int) -> LayerEngine:
    specs = [
        LayerSpec(
            name=f"L{li}",
            level=spec.level,
            when=expr(f"{WHEN[li]} > 0"),
            clear_when=expr(f"{CLEAR[li]} > 0") if spec.clear_when else None,
            for_=spec.for_,
            keep_firing_for=spec.keep_firing_for,
            cooldown=spec.cooldown,
            repeat_interval=spec.repeat_interval,
            inhibit_lower=spec.inhibit_lower,
            stale_after=spec.stale_after,
        )
        for li, spec in enumerate(layers)
    ]
    eng = LayerEngine(specs, n_pools)
    # The layers were drawn sorted by level; names keep equal levels in drawing order.
    assert [spec.name for spec in eng.layers] == [f"L{li}" for li in range(len(layers))]
    return eng


def features_of(n_layers: int, truths: dict[int, Any]) -> dict[str, NDArray[np.float64]]:
    """Feature columns aligned with the rows of ``truths``."""
    out = {}
    for li in range(n_layers):
        out[WHEN[li]] = np.array([VALUE[t[li][0]] for t in truths.values()])
        out[CLEAR[li]] = np.array([VALUE[t[li][1]] for t in truths.values()])
    return out


_STATE_NAMES = {State.INACTIVE: "inactive", State.PENDING: "pending", State.FIRING: "firing"}


def as_ref(tr: Transition, eng: LayerEngine) -> RefEvent:
    return RefEvent(
        layer=tr.layer,
        row=tr.row,
        previous=_STATE_NAMES[tr.previous],
        state=_STATE_NAMES[tr.state],
        event=tr.event,
        since=None if tr.since == NO_TIME else tr.since,
        repeat=tr.repeat,
        notify=tr.notify,
        inhibited_by=(
            eng.layer_index(tr.inhibited_by)
            if tr.inhibited_by is not None
            else (_inhibitor_in(tr.reason, eng) if tr.uninhibited else None)
        ),
        released=tr.uninhibited,
    )


def _inhibitor_in(reason: str, eng: LayerEngine) -> int:
    """The layer a released firing names in its reason."""
    name = reason.rsplit("(no longer inhibited by ", 1)[1].rstrip(")")
    return eng.layer_index(name)


@settings(max_examples=300, deadline=None)
@given(histories())
def test_the_machine_is_the_reference_model(
    history: tuple[list[RefLayer], int, list[dict[int, Any]]],
) -> None:
    layers, n_pools, steps = history
    eng = engine_of(layers, n_pools)
    ref = Reference(layers, n_pools)
    for i, truths in enumerate(steps):
        time = T0 + i * STEP
        rows = np.array(list(truths), dtype=np.int64)
        got = eng.evaluate(time, rows, features_of(len(layers), truths))
        want = ref.step(time, list(truths), truths)
        assert [as_ref(tr, eng) for tr in got] == want, f"step {i}"
        for li in range(len(layers)):
            for row in range(n_pools):
                assert _STATE_NAMES[State(int(eng.state[li, row]))] == ref.cells[li][row].state


@settings(max_examples=150, deadline=None)
@given(histories(), st.booleans())
def test_a_table_of_steps_is_the_single_steps(
    history: tuple[list[RefLayer], int, list[dict[int, Any]]], warm_start: bool
) -> None:
    layers, n_pools, steps = history
    n_steps = len(steps)
    stepped, tabled = engine_of(layers, n_pools), engine_of(layers, n_pools)
    if warm_start:
        # Both start from the same non-trivial state (a restored one).
        warm = engine_of(layers, n_pools)
        for i, truths in enumerate(steps[: n_steps // 2]):
            rows = np.array(list(truths), dtype=np.int64)
            warm.evaluate(T0 - (n_steps - i) * STEP, rows, features_of(len(layers), truths))
        stepped.set_state(warm.get_state())
        tabled.set_state(warm.get_state())
    times = T0 + STEP * np.arange(n_steps, dtype=np.int64)
    present = np.zeros((n_steps, n_pools), dtype=np.bool_)
    per_pool = {name: np.full((n_steps, n_pools), math.nan) for name in (*WHEN, *CLEAR)}
    want: list[Transition] = []
    want_states = []
    for i, truths in enumerate(steps):
        rows = sorted(truths)  # a table steps its pools in row order
        present[i, rows] = True
        ordered = {row: truths[row] for row in rows}
        feats = features_of(len(layers), ordered)
        for name, column in feats.items():
            per_pool[name][i, rows] = column
        want += stepped.evaluate(
            int(times[i]), np.array(rows, dtype=np.int64), feats, block=i, events_only=True
        )
        want_states.append(stepped.state.copy())
    states_out = np.empty((n_steps, len(layers), n_pools), dtype=np.int8)
    flat = {name: values.reshape(-1) for name, values in per_pool.items()}
    events = tabled.evaluate_table(times, present, flat, states_out)
    got = [
        tabled.table_transition(
            event,
            int(times[event[0]]),
            {name: values[event[0]] for name, values in per_pool.items()},
            block=int(event[0]),
            block_hash="",
        )
        for event in events.tolist()
    ]
    assert got == want
    assert np.array_equal(states_out, np.array(want_states).reshape(states_out.shape))
    assert same_state(tabled.get_state(), stepped.get_state())
    # One compiled loop: the live step and the table run the same specialisation.
    assert len(machine.steps.signatures) == 1


@settings(max_examples=100, deadline=None)
@given(histories(), st.integers(0, 30), st.sets(st.integers(0, 2)))
def test_save_restore_of_a_subset_of_rows_gives_the_same_continuation(
    history: tuple[list[RefLayer], int, list[dict[int, Any]]], cut: int, subset: set[int]
) -> None:
    layers, n_pools, steps = history
    subset_rows = sorted(row for row in subset if row < n_pools)
    a = engine_of(layers, n_pools)
    b = engine_of(layers, n_pools)
    # b has a history of its own on every pool (the steps reversed) before the restore.
    for i, truths in enumerate(reversed(steps)):
        rows = np.array(list(truths), dtype=np.int64)
        b.evaluate(T0 + i * STEP, rows, features_of(len(layers), truths))
    base = T0 + len(steps) * STEP
    for i, truths in enumerate(steps[:cut]):
        rows = np.array(list(truths), dtype=np.int64)
        a.evaluate(base + i * STEP, rows, features_of(len(layers), truths))
    own = b.get_state()
    b.set_state(pickle.loads(pickle.dumps(a.get_state())), np.array(subset_rows, dtype=np.int64))
    restored = b.get_state()
    others = [row for row in range(n_pools) if row not in subset_rows]
    for name in LayerEngine._ARRAYS:
        assert np.array_equal(restored[name][:, others], own[name][:, others]), name
        assert np.array_equal(restored[name][:, subset_rows], a.get_state()[name][:, subset_rows])
    for i, truths in enumerate(steps[cut:], start=cut):
        rows = [row for row in truths if row in subset_rows]
        if not rows:
            continue
        ordered = {row: truths[row] for row in rows}
        feats = features_of(len(layers), ordered)
        time = base + i * STEP
        got = b.evaluate(time, np.array(rows, dtype=np.int64), feats)
        want = a.evaluate(time, np.array(rows, dtype=np.int64), feats)
        assert got == want
    for name in LayerEngine._ARRAYS:
        assert np.array_equal(
            b.get_state()[name][:, subset_rows], a.get_state()[name][:, subset_rows]
        )


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


@settings(max_examples=200, deadline=None)
@given(values, layer_params, st.booleans())
def test_no_event_without_a_transition(
    vals: list[float | None], params: dict[str, int], use_clear: bool
) -> None:
    spec = layer(clear_when="move_sigma < 0.5" if use_clear else None, **params)
    eng = LayerEngine([spec], 1)
    legal = {(int(s), int(n)) for (s, _), (n, _) in TRANSITIONS.items()}
    rows = np.array([0], dtype=np.int64)
    for i, v in enumerate(vals):
        before = int(eng.state[0, 0])
        if v is None:
            continue
        trs = eng.evaluate(T0 + i * STEP, rows, {"move_sigma": np.array([v])})
        after = int(eng.state[0, 0])
        assert (before, after) in legal
        for tr in trs:
            # no event without a state change, except repeats
            if tr.event is not None and not tr.repeat:
                assert tr.previous != tr.state or tr.uninhibited
            if tr.event == "firing":
                assert tr.state == State.FIRING
        if before == after:
            assert all(tr.repeat or tr.event is None for tr in trs)
        if math.isnan(v):  # unknown never fires nor clears (a repeat is no new firing)
            assert all(tr.event is None or tr.repeat for tr in trs)
