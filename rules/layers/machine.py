"""The alert state machine of every (layer, pool): the table, its guards and actions, and
the one compiled loop (numba) that runs them, live one step at a time and in backtests
over whole tables.

Rules this module keeps (everything that affects the state machine lives here):

1. Time is an argument (block or data time, unix seconds). Nothing reads a clock.
2. States move only along :data:`TRANSITIONS`; a (state, signal) pair missing from
   the table is a bug and raises :class:`IllegalTransitionError` before any state of
   that step changes (every move of a step is looked up before the first one is made).
3. ``inactive -> pending`` when ``when`` becomes true (and the layer is not cooling
   down); ``pending -> firing`` once ``when`` has held for ``for`` (``for = 0``:
   ``inactive -> firing`` at once); ``pending -> inactive`` as soon as ``when`` is
   not true. ``firing -> inactive`` (a *resolved* event) once the clear condition
   has held for ``keep_firing_for``, counted from the first evaluation where it held
   (0: at that evaluation); the clear condition is ``clear_when`` when given, else
   ``when`` being *false*. Only a known "not clear" restarts that count.
4. Three-valued logic: a comparison on a NaN feature is unknown. Unknown never
   fires and never clears, so missing data (warm-up, a failed read) cannot resolve
   an alert by itself (4a bounds how long it can hold one). A pool that was not
   sampled is simply not evaluated.
4a. Staleness (Prometheus resolves a series that goes stale): a firing layer whose
   clear decision (the clear condition and its negation) has been *unknown* at every
   evaluation for ``stale_after`` resolves (a ``STALE`` move, a *resolved* event whose
   reason says the inputs were unknown for how long). The count starts at the first
   evaluation where the decision is unknown and any evaluation where it is known (true
   or false) stops it, so one missed sample never resolves; ``stale_after = 0`` turns
   the rule off. Time, not samples: pools not evaluated (a stalled chain) do not count
   down, the daemon's health reports those.
5. Hysteresis comes from ``clear_when`` (a band: fire at ``|move_sigma| >= 2``,
   clear at ``< 0.5``) and ``keep_firing_for`` (time); ``cooldown`` holds a resolved
   layer inactive for that long; ``repeat_interval`` re-notifies a still-firing layer
   whose firing was notified, when nothing else happens to it at that evaluation and
   the clear condition is not true.
6. Inhibition (Alertmanager's inhibit rules): while a layer with ``inhibit_lower``
   fires on a pool, the firing events of lower-level layers of the same pool are not
   notified (suppressed); their state machines keep running. A lower layer still
   firing, unnotified, when the inhibition ends is notified then (a *release*, after
   the step's other events). A resolved event is notified only when its firing was.
7. State can be saved and restored (whole or for a subset of pools), which is how
   warm restarts and reorg rollbacks work: it is the arrays the loop reads and writes,
   nothing else.

Where each rule lives: :func:`_guard` decides the signal of one (layer, pool) from its
state, the truths and its timers (3-5, 4a), :func:`_release_guard` the release (6, which
needs the other layers' new states); :data:`TRANSITIONS` maps (state, signal) to the
next state and the event, handed to the loop as the :data:`_NEXT` and :data:`_EVENT`
arrays (2); :func:`_act` applies a move's timer and notification updates; :func:`steps`
orders the phases of a step. Python only evaluates the expressions into truths and turns
event rows into :class:`~rules.layers.engine.Transition` objects with their reasons.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any, Literal, Protocol

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = [
    "EVENT_COLUMNS",
    "EVENT_KINDS",
    "EV_NOTIFY",
    "EV_RELEASED",
    "NO_TIME",
    "TRANSITIONS",
    "EventKind",
    "IllegalTransitionError",
    "Signal",
    "State",
    "layer_settings",
    "steps",
]

NO_TIME = int(np.iinfo(np.int64).min)


class State(IntEnum):
    INACTIVE = 0
    PENDING = 1
    FIRING = 2


class Signal(IntEnum):
    """What one evaluation says about one (layer, pool), given its current state."""

    HOLD = 0  # nothing changes
    ACTIVATE = 1  # when became true, wait for `for`
    FIRE = 2  # when has held long enough (or `for` is 0)
    DROP = 3  # pending, but when is no longer true
    CLEAR_START = 4  # firing, the clear condition starts to hold
    CLEAR_RESET = 5  # firing, the clear condition stopped holding
    RESOLVE = 6  # firing, the clear condition held for keep_firing_for
    REPEAT = 7  # firing, repeat_interval passed since the last notification
    RELEASE = 8  # firing, unnotified, and the inhibition just ended
    UNKNOWN_START = 9  # firing, the clear decision became unknown (the stale count starts)
    UNKNOWN_RESET = 10  # firing, the clear decision is known again (the count stops)
    STALE = 11  # firing, the clear decision has been unknown for stale_after


EventKind = Literal["firing", "resolved"]

#: (state, signal) -> (next state, event). The only legal moves.
TRANSITIONS: dict[tuple[State, Signal], tuple[State, EventKind | None]] = {
    (State.INACTIVE, Signal.HOLD): (State.INACTIVE, None),
    (State.INACTIVE, Signal.ACTIVATE): (State.PENDING, None),
    (State.INACTIVE, Signal.FIRE): (State.FIRING, "firing"),
    (State.PENDING, Signal.HOLD): (State.PENDING, None),
    (State.PENDING, Signal.FIRE): (State.FIRING, "firing"),
    (State.PENDING, Signal.DROP): (State.INACTIVE, None),
    (State.FIRING, Signal.HOLD): (State.FIRING, None),
    (State.FIRING, Signal.CLEAR_START): (State.FIRING, None),
    (State.FIRING, Signal.CLEAR_RESET): (State.FIRING, None),
    (State.FIRING, Signal.RESOLVE): (State.INACTIVE, "resolved"),
    (State.FIRING, Signal.REPEAT): (State.FIRING, "firing"),
    (State.FIRING, Signal.RELEASE): (State.FIRING, "firing"),
    (State.FIRING, Signal.UNKNOWN_START): (State.FIRING, None),
    (State.FIRING, Signal.UNKNOWN_RESET): (State.FIRING, None),
    (State.FIRING, Signal.STALE): (State.INACTIVE, "resolved"),
}

#: Event codes of the loop (the ``event`` column of :data:`EVENT_COLUMNS`) and their kinds.
EVENT_KINDS: tuple[EventKind | None, ...] = (None, "firing", "resolved")

_ILLEGAL = -1
# The table as arrays for the loop: _NEXT[state, signal] is the next state (-1: illegal),
# _EVENT[state, signal] the event's code in EVENT_KINDS.
_NEXT = np.full((len(State), len(Signal)), _ILLEGAL, dtype=np.int8)
_EVENT = np.zeros((len(State), len(Signal)), dtype=np.int8)
for (_state, _signal), (_next, _event) in TRANSITIONS.items():
    _NEXT[_state, _signal] = _next
    _EVENT[_state, _signal] = EVENT_KINDS.index(_event)
_NEXT.flags.writeable = False
_EVENT.flags.writeable = False

#: Columns of one row of the event table :func:`steps` writes: ``column`` is the row's
#: position in the step's truths (its feature column), ``event`` an :data:`EVENT_KINDS`
#: code (0: a status-only change, pending or dropped, written only when statuses are
#: asked for), ``released`` 1 for a firing notified because its inhibition ended (its
#: ``inhibitor`` is the layer that inhibited it), ``since`` the since-time the transition
#: reports (a resolved event: the firing's), ``unknown_since`` when the clear decision
#: became unknown (a ``STALE`` resolve: how long it has been; else ``NO_TIME``).
EVENT_COLUMNS = (
    "step",
    "layer",
    "row",
    "column",
    "previous",
    "state",
    "signal",
    "inhibitor",
    "since",
    "released",
    "notify",
    "event",
    "unknown_since",
)
(
    EV_STEP,
    EV_LAYER,
    EV_ROW,
    EV_COLUMN,
    EV_PREVIOUS,
    EV_STATE,
    EV_SIGNAL,
    EV_INHIBITOR,
    EV_SINCE,
    EV_RELEASED,
    EV_NOTIFY,
    EV_EVENT,
    EV_UNKNOWN_SINCE,
) = range(len(EVENT_COLUMNS))

# Plain ints for the loop (numba compiles module-level ints in as constants).
_INACTIVE, _PENDING, _FIRING = int(State.INACTIVE), int(State.PENDING), int(State.FIRING)
_HOLD, _ACTIVATE, _FIRE, _DROP = (
    int(Signal.HOLD),
    int(Signal.ACTIVATE),
    int(Signal.FIRE),
    int(Signal.DROP),
)
_CLEAR_START, _CLEAR_RESET = int(Signal.CLEAR_START), int(Signal.CLEAR_RESET)
_RESOLVE, _REPEAT, _RELEASE = int(Signal.RESOLVE), int(Signal.REPEAT), int(Signal.RELEASE)
_UNKNOWN_START, _UNKNOWN_RESET = int(Signal.UNKNOWN_START), int(Signal.UNKNOWN_RESET)
_STALE = int(Signal.STALE)
# A state outside State (a corrupt restore) gets this signal, whose move is illegal.
_INVALID = -1
_N_STATES, _N_SIGNALS = len(State), len(Signal)
_EVENT_NONE, _EVENT_FIRING, _EVENT_RESOLVED = range(len(EVENT_KINDS))

#: Planes of the timers array ``(5, layers, pools)``.
TIMERS = ("since", "clear_since", "last_notified", "cooldown_until", "unknown_since")
_SINCE, _CLEAR_SINCE, _LAST_NOTIFIED, _COOLDOWN_UNTIL, _UNKNOWN_SINCE = range(len(TIMERS))

#: Planes of a step's truths ``(4, layers, columns)``: the layer's ``when`` and its
#: ``clear_when`` (read only when the layer has one), each as true and false masks
#: (neither: unknown).
TRUTHS = ("when_true", "when_false", "clear_true", "clear_false")
_WHEN_TRUE, _WHEN_FALSE, _CLEAR_TRUE, _CLEAR_FALSE = range(len(TRUTHS))

#: Columns of the per-layer settings ``(layers, 8)`` (durations in seconds).
SETTINGS = (
    "level",
    "for",
    "keep_firing_for",
    "cooldown",
    "repeat_interval",
    "clear_when",
    "inhibit_lower",
    "stale_after",
)
(
    _LEVEL,
    _FOR,
    _KEEP_FIRING_FOR,
    _COOLDOWN,
    _REPEAT_INTERVAL,
    _HAS_CLEAR_WHEN,
    _INHIBIT_LOWER,
    _STALE_AFTER,
) = range(len(SETTINGS))


class IllegalTransitionError(RuntimeError):
    """A (state, signal) pair outside :data:`TRANSITIONS`: a bug, never user input."""


class _Layer(Protocol):
    @property
    def level(self) -> int: ...
    @property
    def for_(self) -> int: ...
    @property
    def keep_firing_for(self) -> int: ...
    @property
    def cooldown(self) -> int: ...
    @property
    def repeat_interval(self) -> int: ...
    @property
    def clear_when(self) -> object: ...
    @property
    def inhibit_lower(self) -> bool: ...
    @property
    def stale_after(self) -> int: ...


def layer_settings(layers: Sequence[_Layer]) -> NDArray[np.int64]:
    """The settings array (:data:`SETTINGS`) of ``layers``: one row per layer, in the order
    given (the loop's layer order: the engine sorts them by level, then name)."""
    out = np.array(
        [
            [
                layer.level,
                layer.for_,
                layer.keep_firing_for,
                layer.cooldown,
                layer.repeat_interval,
                layer.clear_when is not None,
                layer.inhibit_lower,
                layer.stale_after,
            ]
            for layer in layers
        ],
        dtype=np.int64,
    ).reshape(len(layers), len(SETTINGS))
    out.flags.writeable = False
    return out


_jit = njit(cache=True, nogil=True, error_model="numpy")
# The guards and actions are inlined into the loop (numba's IR inliner), which spares a
# call per (layer, pool); the guard takes scalars besides (see its docstring).
_inline = njit(cache=True, nogil=True, error_model="numpy", inline="always")


# --------------------------------------------------------------------------- guards


@_inline
def _guard(
    state: int,
    when_true: bool,
    when_false: bool,
    clear_true: bool,
    clear_false: bool,
    since: int,
    clear_since: int,
    last_notified: int,
    cooldown_until: int,
    notified: bool,
    time: int,
    for_: int,
    keep_firing_for: int,
    cooldown: int,
    repeat_interval: int,
    has_clear_when: bool,
    unknown_since: int,
    stale_after: int,
) -> int:
    """The signal of one (layer, pool) at ``time``, from its state, the truths of its
    conditions, its timers and its layer's settings: rules 3-5 of the module docstring,
    the only place they are decided. (Scalars, not arrays: an array argument costs
    reference counting at every call, five times the guard itself.)"""
    if state == _INACTIVE:
        if when_true and (cooldown <= 0 or cooldown_until <= time):
            return _FIRE if for_ == 0 else _ACTIVATE
        return _HOLD
    if state == _PENDING:
        if not when_true:  # false or unknown: pending needs `when` to hold
            return _DROP
        return _FIRE if time - since >= for_ else _HOLD
    if state != _FIRING:
        return _INVALID
    # The clear condition: clear_when when given, else `when` being false.
    clear = clear_true if has_clear_when else when_false
    not_clear = clear_false if has_clear_when else when_true
    clearing = clear_since != NO_TIME
    counting = unknown_since != NO_TIME  # the clear decision is unknown since then (4a)
    if clear:
        held = time - clear_since if clearing else 0
        if held >= keep_firing_for:
            return _RESOLVE
        if not clearing:
            return _CLEAR_START
        return _UNKNOWN_RESET if counting else _HOLD
    # Only a known "not clear" restarts the count; unknown neither restarts nor resolves.
    if not_clear and clearing:
        return _CLEAR_RESET
    unknown = not not_clear
    if unknown and counting and stale_after > 0 and time - unknown_since >= stale_after:
        return _STALE
    if repeat_interval > 0 and notified and time - last_notified >= repeat_interval:
        return _REPEAT  # its action starts or stops the stale count as the decision says
    if unknown and stale_after > 0 and not counting:
        return _UNKNOWN_START
    if not unknown and counting:
        return _UNKNOWN_RESET
    return _HOLD


@_inline
def _inhibitor(li: int, p: int, state: Any, settings: Any) -> int:
    """The first higher-level layer with ``inhibit_lower`` firing on pool ``p`` that
    inhibits layer ``li`` there, or -1 (rule 6)."""
    level = settings[li, _LEVEL]
    for hi in range(state.shape[0]):
        if (
            settings[hi, _INHIBIT_LOWER]
            and settings[hi, _LEVEL] > level
            and state[hi, p] == _FIRING
        ):
            return hi
    return -1


@_inline
def _release_guard(
    li: int,
    p: int,
    signal: int,
    previous: int,
    inhibitor_before: int,
    state: Any,
    notified: Any,
    settings: Any,
) -> bool:
    """Whether layer ``li`` on pool ``p`` is released (rule 6), decided on the states after
    the step: firing, unmoved this step, inhibited before it, not now, never notified."""
    return (
        state[li, p] == _FIRING
        and previous == _FIRING
        and signal != _REPEAT
        and inhibitor_before >= 0
        and not notified[li, p]
        and _inhibitor(li, p, state, settings) < 0
    )


@_inline
def _known(truth: Any, t: int, li: int, c: Any, has_clear_when: bool) -> bool:
    """Whether the clear decision of layer ``li`` in column ``c`` of step ``t`` is known
    (the clear condition known true or known false; rule 4a)."""
    if has_clear_when:
        return bool(truth[t, _CLEAR_TRUE, li, c] or truth[t, _CLEAR_FALSE, li, c])
    return bool(truth[t, _WHEN_TRUE, li, c] or truth[t, _WHEN_FALSE, li, c])


@_inline
def _move(next_state: Any, state: int, signal: int) -> int:
    """The next state of (``state``, ``signal``) in the table, -1 when illegal."""
    if state < 0 or state >= _N_STATES or signal < 0 or signal >= _N_SIGNALS:
        return _ILLEGAL
    return int(next_state[state, signal])


# --------------------------------------------------------------------------- actions


@_inline
def _act(
    signal: int,
    previous: int,
    event: int,
    li: int,
    p: int,
    time: int,
    inhibitor: int,
    known: bool,
    timers: Any,
    notified: Any,
    settings: Any,
) -> tuple[int, bool, int]:
    """Apply the timer and notification updates of a move of layer ``li`` on pool ``p``
    (``signal`` from ``previous``, carrying ``event``; ``inhibitor`` on the new states;
    ``known``: whether the clear decision of this evaluation is known). Returns the
    since-time the transition reports, whether its event is notified, and when the
    clear decision became unknown before this move (``NO_TIME``: it was known)."""
    since = timers[_SINCE, li, p]
    unknown_since = timers[_UNKNOWN_SINCE, li, p]
    if signal == _UNKNOWN_START or (
        signal == _REPEAT
        and not known
        and unknown_since == NO_TIME
        and settings[li, _STALE_AFTER] > 0
    ):
        timers[_UNKNOWN_SINCE, li, p] = time
    elif (signal != _REPEAT or known) and signal != _RELEASE:
        # Every other move is a known decision or leaves the firing state (a release is
        # not a decision: it keeps the count).
        timers[_UNKNOWN_SINCE, li, p] = NO_TIME
    if signal == _ACTIVATE or (signal == _FIRE and previous == _INACTIVE):
        since = time
        timers[_SINCE, li, p] = time
    elif signal == _DROP:
        since = NO_TIME
        timers[_SINCE, li, p] = NO_TIME
    if signal == _CLEAR_START:
        timers[_CLEAR_SINCE, li, p] = time
    elif (
        signal == _CLEAR_RESET or signal == _FIRE or signal == _RESOLVE or signal == _STALE  # noqa: PLR1714 - plain compares compile to plain code
    ):
        timers[_CLEAR_SINCE, li, p] = NO_TIME
    if signal == _RESOLVE or signal == _STALE:  # noqa: PLR1714, SIM109 - as above
        timers[_COOLDOWN_UNTIL, li, p] = time + settings[li, _COOLDOWN]
        # The resolved event reports the firing's since; the inactive state has none.
        timers[_SINCE, li, p] = NO_TIME
    notify = False
    if event == _EVENT_FIRING:
        notify = inhibitor < 0
        if notify:
            notified[li, p] = True
        # A suppressed repeat restarts the repeat timer too, or it would be due at every block.
        timers[_LAST_NOTIFIED, li, p] = time
    elif event == _EVENT_RESOLVED:
        notify = notified[li, p]
        notified[li, p] = False
    return since, notify, unknown_since


# --------------------------------------------------------------------------- the loop

#: What a refused step's row (see :func:`steps`) says in its ``event`` column.
REFUSED_MOVE, REFUSED_ROW = -1, -2


@_inline
def _write(
    events: Any,
    n: int,
    t: int,
    li: int,
    p: int,
    c: int,
    previous: int,
    new: int,
    signal: int,
    inhibitor: int,
    since: int,
    notify: bool,
    event: int,
    unknown_since: int,
) -> int:
    """Write row ``n`` of the event table; returns ``n + 1``."""
    row = events[n]
    row[EV_STEP], row[EV_LAYER], row[EV_ROW], row[EV_COLUMN] = t, li, p, c
    row[EV_PREVIOUS], row[EV_STATE], row[EV_SIGNAL] = previous, new, signal
    row[EV_INHIBITOR], row[EV_SINCE] = inhibitor, since
    row[EV_RELEASED] = 1 if signal == _RELEASE else 0
    row[EV_NOTIFY], row[EV_EVENT] = 1 if notify else 0, event
    row[EV_UNKNOWN_SINCE] = unknown_since if signal == _STALE else NO_TIME
    return n + 1


@_inline
def _refuse(events: Any, n: int, t: int, li: int, p: int, state: int, signal: int, why: int) -> int:
    """Describe a refused step in row ``n`` (see :func:`steps`); returns ``-1 - n``."""
    _write(events, n, t, li, p, -1, state, -1, signal, -1, NO_TIME, False, why, NO_TIME)
    return -1 - n


@_jit
def steps(
    times: Any,
    offsets: Any,
    rows: Any,
    cols: Any,
    truth: Any,
    state: Any,
    timers: Any,
    notified: Any,
    settings: Any,
    next_state: Any,
    event_of: Any,
    statuses: bool,
    states_out: Any,
    events: Any,
) -> int:
    """Evaluate every layer at each of ``T`` times, in place on the state arrays.

    Step ``t`` evaluates the pools ``rows[offsets[t]:offsets[t + 1]]`` in that order, pool
    ``rows[k]`` reading its truths in column ``cols[k]`` of ``truth[t]`` (``(T, 4, L, C)``,
    planes :data:`TRUTHS`). ``state`` ``(L, P)``, ``timers`` ``(5, L, P)`` (:data:`TIMERS`),
    ``notified`` ``(L, P)``: the machine's state. ``settings``: :func:`layer_settings`.
    ``next_state``/``event_of``: :data:`_NEXT`/:data:`_EVENT`.

    Writes one row per event (and with ``statuses`` one per status-only change) into
    ``events`` (:data:`EVENT_COLUMNS`; one row per evaluated (layer, pool) is room
    enough): per step in layer then pool order, then the releases in that order. When
    ``states_out`` has ``T`` rows, writes the state after step ``t`` into
    ``states_out[t]``. Returns the number of rows, or ``-1 - n`` when step
    ``events[n][0]`` is refused before any of its moves: an illegal move (``event`` column
    :data:`REFUSED_MOVE`, with the layer, row, state and signal) or a row outside the
    pools (:data:`REFUSED_ROW`).
    """
    ev = events
    n_layers, n_pools = state.shape
    n_steps = offsets.size - 1
    # Refused before any step: a row outside the pools, a table without the release move
    # (a release comes after the step's other moves, so it is looked up here).
    for k in range(rows.size):
        if rows[k] < 0 or rows[k] >= n_pools:
            return _refuse(ev, 0, 0, -1, rows[k], -1, -1, REFUSED_ROW)
    released_to = _move(next_state, _FIRING, _RELEASE)
    if released_to < 0:
        return _refuse(ev, 0, 0, -1, -1, _FIRING, _RELEASE, REFUSED_MOVE)
    width = 1
    for t in range(n_steps):
        width = max(width, offsets[t + 1] - offsets[t])
    signal = np.empty((n_layers, width), dtype=np.int8)
    previous = np.empty((n_layers, width), dtype=np.int8)
    inhibitor_before = np.empty((n_layers, width), dtype=np.int64)
    moving = np.empty(width, dtype=np.bool_)
    active = np.empty(width, dtype=np.int64)
    n = 0
    for t in range(n_steps):
        time = times[t]
        start, stop = offsets[t], offsets[t + 1]
        # Guards: the signal of every (layer, pool) of the step, layer by layer (the
        # arrays' order: a calm step is this loop only).
        moving[: stop - start] = False
        for li in range(n_layers):
            for_, keep_firing_for = settings[li, _FOR], settings[li, _KEEP_FIRING_FOR]
            cooldown, repeat_interval = settings[li, _COOLDOWN], settings[li, _REPEAT_INTERVAL]
            has_clear_when = settings[li, _HAS_CLEAR_WHEN] != 0
            stale_after = settings[li, _STALE_AFTER]
            for k in range(start, stop):
                # Unsigned (rows were checked above): numba then skips the negative-index
                # wraparound of every load below, a fifth of this loop's time. Indices
                # only: numba's uint64-with-int64 arithmetic is float.
                p, c = np.uint64(rows[k]), np.uint64(cols[k])
                sig = _guard(
                    state[li, p],
                    truth[t, _WHEN_TRUE, li, c],
                    truth[t, _WHEN_FALSE, li, c],
                    truth[t, _CLEAR_TRUE, li, c],
                    truth[t, _CLEAR_FALSE, li, c],
                    timers[_SINCE, li, p],
                    timers[_CLEAR_SINCE, li, p],
                    timers[_LAST_NOTIFIED, li, p],
                    timers[_COOLDOWN_UNTIL, li, p],
                    notified[li, p],
                    time,
                    for_,
                    keep_firing_for,
                    cooldown,
                    repeat_interval,
                    has_clear_when,
                    timers[_UNKNOWN_SINCE, li, p],
                    stale_after,
                )
                signal[li, k - start] = sig
                if sig != _HOLD:
                    moving[k - start] = True
        # Only pools where something happens go further (few, in steady state).
        n_active = 0
        for k in range(start, stop):
            if moving[k - start]:
                active[n_active] = k
                n_active += 1
        if n_active:
            # The moves, all looked up before any state changes.
            for li in range(n_layers):
                for a in range(n_active):
                    k = active[a]
                    p, sig = rows[k], signal[li, k - start]
                    if _move(next_state, state[li, p], sig) < 0:
                        return _refuse(ev, n, t, li, p, state[li, p], sig, REFUSED_MOVE)
            # The new states, and the inhibitors before them (for the releases).
            for a in range(n_active):
                k = active[a]
                p = rows[k]
                for li in range(n_layers):
                    inhibitor_before[li, a] = _inhibitor(li, p, state, settings)
                    previous[li, a] = state[li, p]
                for li in range(n_layers):
                    state[li, p] = next_state[previous[li, a], signal[li, k - start]]
            # Actions and events, on the new states (inhibition reads the other layers').
            for li in range(n_layers):
                for a in range(n_active):
                    k = active[a]
                    sig = signal[li, k - start]
                    if sig == _HOLD:
                        continue
                    p, prev, c = rows[k], previous[li, a], cols[k]
                    new, event = state[li, p], event_of[prev, sig]
                    inh = _inhibitor(li, p, state, settings) if event != _EVENT_NONE else -1
                    known = _known(truth, t, li, c, settings[li, _HAS_CLEAR_WHEN] != 0)
                    since, notify, unknown_since = _act(
                        sig, prev, event, li, p, time, inh, known, timers, notified, settings
                    )
                    if event != _EVENT_NONE or (statuses and new != prev):
                        n = _write(
                            ev,
                            n,
                            t,
                            li,
                            p,
                            c,
                            prev,
                            new,
                            sig,
                            inh,
                            since,
                            notify,
                            event,
                            unknown_since,
                        )
            # Releases: lower layers still firing whose inhibitor just went away.
            for li in range(n_layers):
                for a in range(n_active):
                    k = active[a]
                    p, inh = rows[k], inhibitor_before[li, a]
                    sig, prev = signal[li, k - start], previous[li, a]
                    if not _release_guard(li, p, sig, prev, inh, state, notified, settings):
                        continue
                    sig, new, event = _RELEASE, released_to, event_of[_FIRING, _RELEASE]
                    since, notify, _ = _act(
                        sig, prev, event, li, p, time, -1, True, timers, notified, settings
                    )
                    state[li, p] = new
                    n = _write(
                        ev, n, t, li, p, cols[k], prev, new, sig, inh, since, notify, event, NO_TIME
                    )
        if states_out.shape[0]:
            states_out[t] = state
    return n
