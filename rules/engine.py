"""The layer engine: one alert state machine per (layer, pool), vectorised over pools.

Rules this module keeps (everything that affects the state machine lives here):

1. Time is an argument (block or data time, unix seconds). Nothing reads a clock.
2. States move only along :data:`TRANSITIONS`; a (state, signal) pair missing from
   the table is a bug and raises :class:`IllegalTransitionError` before any state changes.
3. ``inactive -> pending`` when ``when`` becomes true (and the layer is not cooling
   down); ``pending -> firing`` once ``when`` has held for ``for`` (``for = 0``:
   ``inactive -> firing`` at once); ``pending -> inactive`` as soon as ``when`` is
   not true. ``firing -> inactive`` (a *resolved* event) once the clear condition
   has held for ``keep_firing_for``; the clear condition is ``clear_when`` when
   given, else ``when`` being *false*.
4. Three-valued logic: a comparison on a NaN feature is unknown. Unknown never
   fires and never clears, so missing data (warm-up, a failed read) cannot resolve
   an alert by itself. A pool that was not sampled is simply not evaluated.
5. Hysteresis comes from ``clear_when`` (a band: fire at ``|move_sigma| >= 2``,
   clear at ``< 0.5``) and ``keep_firing_for`` (time); ``cooldown`` holds a resolved
   layer inactive for that long; ``repeat_interval`` re-notifies a still-firing layer.
6. Inhibition (Alertmanager's inhibit rules): while a layer with
   ``inhibit_lower`` fires on a pool, notifications of lower-level layers of the
   same pool are suppressed; their state machines keep running. A lower layer
   still firing when the inhibition ends is notified then. A resolved event is
   notified only when its firing was.
7. State can be saved and restored (whole or for a subset of pools), which is how
   warm restarts and reorg rollbacks work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from rules.expr import Expr
from rules.hedge import HedgeSpec

NO_TIME = np.iinfo(np.int64).min


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
}

_N_STATES = len(State)
_N_SIGNALS = len(Signal)
_ILLEGAL = -1
# The table as lookup arrays so that a whole vector of pools moves in one step.
_NEXT = np.full((_N_STATES, _N_SIGNALS), _ILLEGAL, dtype=np.int8)
for (_s, _g), (_n, _e) in TRANSITIONS.items():
    _NEXT[_s, _g] = _n


# Plain ints for the hot path (enum attribute access is slow in numpy expressions).
_INACTIVE, _PENDING, _FIRING = int(State.INACTIVE), int(State.PENDING), int(State.FIRING)
_HOLD, _ACTIVATE, _FIRE, _DROP = (
    int(Signal.HOLD),
    int(Signal.ACTIVATE),
    int(Signal.FIRE),
    int(Signal.DROP),
)
_CLEAR_START, _CLEAR_RESET = int(Signal.CLEAR_START), int(Signal.CLEAR_RESET)
_RESOLVE, _REPEAT = int(Signal.RESOLVE), int(Signal.REPEAT)


# Lookups for the transition loop: enum construction and tuple-keyed dict lookups cost
# about a microsecond each, and a busy step has tens of transitions.
_STATE_OF: tuple[State, ...] = tuple(State)
_SIGNAL_OF: tuple[Signal, ...] = tuple(Signal)
_EVENT_OF: tuple[tuple[EventKind | None, ...], ...] = tuple(
    tuple(
        TRANSITIONS[(state, signal)][1] if (state, signal) in TRANSITIONS else None
        for signal in Signal
    )
    for state in State
)


class IllegalTransitionError(RuntimeError):
    """A (state, signal) pair outside :data:`TRANSITIONS`: a bug, never user input."""


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One configured layer. Durations are seconds; 0 disables ``repeat_interval``."""

    name: str
    level: int
    when: Expr
    clear_when: Expr | None = None
    for_: int = 0
    keep_firing_for: int = 0
    cooldown: int = 0
    repeat_interval: int = 0
    inhibit_lower: bool = False
    hedge: HedgeSpec | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("LayerSpec.name must not be empty")
        if self.level < 1:
            raise ValueError(f"layer {self.name}: level must be >= 1, got {self.level}")
        for field, value in (
            ("for", self.for_),
            ("keep_firing_for", self.keep_firing_for),
            ("cooldown", self.cooldown),
            ("repeat_interval", self.repeat_interval),
        ):
            if value < 0:
                raise ValueError(f"layer {self.name}: {field} must be >= 0, got {value}")

    @property
    def names(self) -> frozenset[str]:
        """Feature names the layer reads."""
        extra = self.clear_when.names if self.clear_when is not None else frozenset()
        return self.when.names | extra


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of one (layer, pool) state machine. ``event`` is set when it is an
    alert event; ``notify`` is False when the event is suppressed (``inhibited_by``)."""

    row: int
    layer: int
    previous: State
    state: State
    event: EventKind | None
    time: int
    since: int
    block: int
    block_hash: str
    reason: str
    repeat: bool = False
    notify: bool = True
    inhibited_by: str | None = None
    uninhibited: bool = False


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:.4g}"


class LayerEngine:
    """The state machines of every (layer, pool); see the module docstring."""

    def __init__(self, layers: Sequence[LayerSpec], n_pools: int) -> None:
        names = [spec.name for spec in layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique, got {names}")
        # Sorted by level so that inhibition looks only upwards.
        self.layers: tuple[LayerSpec, ...] = tuple(sorted(layers, key=lambda s: (s.level, s.name)))
        self.n_pools = n_pools
        shape = (len(self.layers), n_pools)
        self.state = np.zeros(shape, dtype=np.int8)
        self.since = np.full(shape, NO_TIME, dtype=np.int64)
        self.clear_since = np.full(shape, NO_TIME, dtype=np.int64)
        self.last_notified = np.full(shape, NO_TIME, dtype=np.int64)
        self.cooldown_until = np.full(shape, NO_TIME, dtype=np.int64)
        # Whether the current firing has been notified (False while inhibited).
        self.notified = np.zeros(shape, dtype=np.bool_)
        self._all = np.arange(n_pools, dtype=np.int64)
        self._cooldowns = np.array([[spec.cooldown] for spec in self.layers], dtype=np.int64)

    @property
    def names(self) -> frozenset[str]:
        out: frozenset[str] = frozenset()
        for spec in self.layers:
            out |= spec.names
        return out

    def layer_index(self, name: str) -> int:
        for i, spec in enumerate(self.layers):
            if spec.name == name:
                return i
        raise KeyError(name)

    # -- evaluation ---------------------------------------------------------

    def evaluate(
        self,
        time: int,
        rows: NDArray[np.int64],
        features: Mapping[str, NDArray[np.float64]],
        *,
        block: int = 0,
        block_hash: str = "",
        events_only: bool = False,
    ) -> list[Transition]:
        """Evaluate every layer on the pools ``rows`` at ``time``.

        ``features`` maps each feature name to an array aligned with ``rows``.
        Returns the transitions in layer order, then row order; with ``events_only``
        only those that carry an event (the state machines move exactly the same).
        """
        if rows.size == 0:
            return []
        # All pools in order (the common case) -> slices, i.e. views instead of copies.
        sel: slice | NDArray[np.int64]
        if rows.size == self.n_pools and rows[0] == 0 and rows[-1] == self.n_pools - 1:
            sel = slice(None) if np.array_equal(rows, self._all) else rows
        else:
            sel = rows
        signals = np.zeros((len(self.layers), rows.size), dtype=np.int8)
        for li, spec in enumerate(self.layers):
            self._signals(li, spec, time, sel, features, signals[li])
        # Only the columns where something happens go further (few, in steady state).
        cols = np.flatnonzero(signals.any(axis=0))
        if cols.size == 0:
            return []
        crow = rows[cols]
        states = self.state[:, crow]
        csig = signals[:, cols]
        nxt = _NEXT[states, csig]
        if (nxt == _ILLEGAL).any():
            li, ci = np.argwhere(nxt == _ILLEGAL)[0]
            raise IllegalTransitionError(
                f"layer {self.layers[li].name}, row {crow[ci]}: no transition for "
                f"{State(int(states[li, ci])).name} on {Signal(int(csig[li, ci])).name}"
            )
        return self._apply(
            time, cols, crow, features, states, csig, nxt, block, block_hash, events_only
        )

    def _signals(
        self,
        li: int,
        spec: LayerSpec,
        time: int,
        sel: slice | NDArray[np.int64],
        features: Mapping[str, NDArray[np.float64]],
        out: NDArray[np.int8],
    ) -> None:
        """Write each column's :class:`Signal` for layer ``li`` into ``out`` (zeros = HOLD)."""
        when = spec.when.truth(features)
        state = self.state[li, sel]

        start = when.true & (state == _INACTIVE)
        if spec.cooldown > 0:
            start &= self.cooldown_until[li, sel] <= time
        out[start] = _FIRE if spec.for_ == 0 else _ACTIVATE

        pending = state == _PENDING
        if pending.any():
            out[pending & ~when.true] = _DROP
            out[pending & when.true & (time - self.since[li, sel] >= spec.for_)] = _FIRE

        firing = state == _FIRING
        if not firing.any():
            return
        if spec.clear_when is not None:
            clear_truth = spec.clear_when.truth(features)
            clear, not_clear = clear_truth.true, clear_truth.false
        else:
            clear, not_clear = when.false, when.true
        clear_since = self.clear_since[li, sel]
        clearing = clear_since != NO_TIME
        out[firing & clear & ~clearing] = _CLEAR_START
        # Only a known "not clear" resets the timer; unknown (NaN) neither resets nor resolves.
        out[firing & not_clear & clearing] = _CLEAR_RESET
        # keep_firing_for counts from the first evaluation where the clear
        # condition held; 0 resolves at that very evaluation.
        held = np.where(clearing, time - clear_since, 0)
        out[firing & clear & (held >= spec.keep_firing_for)] = _RESOLVE
        if spec.repeat_interval > 0:
            # A repeat takes only rows where nothing else happens; a row that must reset
            # its clear timer repeats at its next evaluation.
            due = self.notified[li, sel] & (
                time - self.last_notified[li, sel] >= spec.repeat_interval
            )
            out[firing & due & (out == _HOLD) & ~clear] = _REPEAT

    def _apply(
        self,
        time: int,
        cols: NDArray[np.intp],
        rows: NDArray[np.int64],
        features: Mapping[str, NDArray[np.float64]],
        states: NDArray[np.int8],
        signals: NDArray[np.int8],
        nxt: NDArray[np.int8],
        block: int,
        block_hash: str,
        events_only: bool = False,
    ) -> list[Transition]:
        """Apply the transitions of the active columns ``cols`` (pool rows ``rows``)."""
        out: list[Transition] = []
        # Timers, vectorised over layers and columns (a column gets one signal per layer,
        # so the masks below are disjoint and their order does not matter).
        fire = signals == _FIRE
        starts = (signals == _ACTIVATE) | (fire & (states == _INACTIVE))
        drops = signals == _DROP
        if starts.any() or drops.any():
            since = self.since[:, rows]
            since[starts] = time
            since[drops] = NO_TIME
            self.since[:, rows] = since
        resolve = signals == _RESOLVE
        clear_start = signals == _CLEAR_START
        clear_stop = fire | resolve | (signals == _CLEAR_RESET)
        if clear_start.any() or clear_stop.any():
            clear_since = self.clear_since[:, rows]
            clear_since[clear_start] = time
            clear_since[clear_stop] = NO_TIME
            self.clear_since[:, rows] = clear_since
        if resolve.any():
            cooldown_until = self.cooldown_until[:, rows]
            cooldown_until[resolve] = np.broadcast_to(time + self._cooldowns, resolve.shape)[
                resolve
            ]
            self.cooldown_until[:, rows] = cooldown_until

        # Inhibition is decided on the states after this step; it can only change in
        # columns where some layer changed, i.e. these.
        old_inhibitor = self._inhibitors(states)
        self.state[:, rows] = nxt
        new_inhibitor = self._inhibitors(nxt)

        changed = (nxt != states) | (signals == _REPEAT)
        where_li, where_ci = np.nonzero(changed)
        if where_li.size:
            state_list, next_list, signal_list = states.tolist(), nxt.tolist(), signals.tolist()
            inhibitor_list = new_inhibitor.tolist()
            cols_list = cols.tolist()
            for li, ci in zip(where_li.tolist(), where_ci.tolist(), strict=True):
                prev = state_list[li][ci]
                sig = signal_list[li][ci]
                if events_only and _EVENT_OF[prev][sig] is None:
                    continue
                inh = inhibitor_list[li][ci]
                out.append(
                    self._transition(
                        li,
                        ci,
                        cols_list[ci],
                        rows,
                        features,
                        time,
                        _STATE_OF[prev],
                        _STATE_OF[next_list[li][ci]],
                        _SIGNAL_OF[sig],
                        self.layers[inh].name if inh >= 0 else None,
                        block,
                        block_hash,
                    )
                )
        # Lower layers still firing whose inhibitor just went away: notify them now.
        released = (
            (old_inhibitor >= 0)
            & (new_inhibitor < 0)
            & (nxt == _FIRING)
            & ~changed
            & ~self.notified[:, rows]
        )
        for li, ci in zip(*np.nonzero(released), strict=True):
            row = int(rows[ci])
            self.notified[li, row] = True
            self.last_notified[li, row] = time
            out.append(
                Transition(
                    row=row,
                    layer=int(li),
                    previous=State.FIRING,
                    state=State.FIRING,
                    event="firing",
                    time=time,
                    since=int(self.since[li, row]),
                    block=block,
                    block_hash=block_hash,
                    reason=f"{self._reason(int(li), features, int(cols[ci]))} (no longer "
                    f"inhibited by {self.layers[int(old_inhibitor[li, ci])].name})",
                    uninhibited=True,
                )
            )
        # Firing ended: reset the since marker after the event has captured it.
        for tr in out:
            if tr.state == State.INACTIVE:
                self.since[tr.layer, tr.row] = NO_TIME
        return out

    def _transition(
        self,
        li: int,
        ci: int,
        fc: int,
        rows: NDArray[np.int64],
        features: Mapping[str, NDArray[np.float64]],
        time: int,
        prev: State,
        new: State,
        sig: Signal,
        inhibited_by: str | None,
        block: int,
        block_hash: str,
    ) -> Transition:
        row = int(rows[ci])
        event = _EVENT_OF[prev][sig]
        notify = True
        if event == "firing":
            notify = inhibited_by is None
            if notify:
                self.notified[li, row] = True
            # A suppressed repeat restarts the repeat timer too, or it would be due at every block.
            self.last_notified[li, row] = time
            reason = self._reason(li, features, fc)
        elif event == "resolved":
            notify = bool(self.notified[li, row])
            self.notified[li, row] = False
            reason = self._clear_reason(li, features, fc)
        else:
            # No event: skip the reason (explaining costs ~0.1 ms; pending/dropped
            # states are published without one).
            notify = False
            reason = ""
        return Transition(
            row=row,
            layer=li,
            previous=prev,
            state=new,
            event=event,
            time=time,
            since=int(self.since[li, row]),
            block=block,
            block_hash=block_hash,
            reason=reason,
            repeat=sig == _REPEAT,
            notify=notify,
            inhibited_by=inhibited_by if event is not None else None,
        )

    def _inhibitors(self, states: NDArray[np.int8]) -> NDArray[np.int8]:
        """For each (layer, column): the index of a higher firing layer with
        ``inhibit_lower`` that inhibits it, or -1."""
        out = np.full(states.shape, -1, dtype=np.int8)
        for hi, spec in enumerate(self.layers):
            if not spec.inhibit_lower:
                continue
            firing = states[hi] == State.FIRING
            for li, low in enumerate(self.layers):
                if low.level < spec.level:
                    out[li] = np.where((out[li] < 0) & firing, hi, out[li])
        return out

    def _reason(self, li: int, features: Mapping[str, NDArray[np.float64]], ci: int) -> str:
        return self.layers[li].when.explain(features, ci)

    def _clear_reason(self, li: int, features: Mapping[str, NDArray[np.float64]], ci: int) -> str:
        spec = self.layers[li]
        if spec.clear_when is not None:
            return spec.clear_when.explain(features, ci)
        return f"no longer true: {spec.when}"

    # -- state ---------------------------------------------------------------

    _ARRAYS = ("state", "since", "clear_since", "last_notified", "cooldown_until", "notified")

    def get_state(self) -> dict[str, Any]:
        """A deep copy of the whole state, bit-exact, picklable."""
        return {
            "layers": [spec.name for spec in self.layers],
            **{name: getattr(self, name).copy() for name in self._ARRAYS},
        }

    def set_state(self, state: Mapping[str, Any], rows: NDArray[np.int64] | None = None) -> None:
        """Restore a state from :meth:`get_state`; only ``rows`` when given.

        Layers are matched by name, so a config reload that adds or removes a layer
        keeps the state of the others (new layers start inactive).
        """
        names = list(state["layers"])
        for li, spec in enumerate(self.layers):
            if spec.name not in names:
                continue
            src = names.index(spec.name)
            for attr in self._ARRAYS:
                saved = np.asarray(state[attr])
                if saved.shape[1] != self.n_pools:
                    raise ValueError(
                        f"saved engine state has {saved.shape[1]} pools, "
                        f"the engine has {self.n_pools}"
                    )
                target = getattr(self, attr)
                if rows is None:
                    target[li] = saved[src]
                else:
                    target[li, rows] = saved[src, rows]

    def status(self, li: int, row: int) -> tuple[State, int]:
        """Current state and since-time (``NO_TIME`` when inactive) of one layer on one pool."""
        return State(int(self.state[li, row])), int(self.since[li, row])
