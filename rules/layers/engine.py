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

from rules.expr import Expr, truths
from rules.features.bars import is_all_rows
from rules.hedge.advice import HedgeSpec

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
# Indexed by state * len(Signal) + signal (one flat gather per evaluation).
_NEXT_FLAT = _NEXT.ravel()


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


#: Columns of one row of :meth:`LayerEngine.evaluate_table`'s event table (written by
#: :func:`rules.features.kernels.layer_steps`): released is 1 for a firing notified because its
#: inhibition ended.
EVENT_COLUMNS = (
    "step",
    "layer",
    "row",
    "previous",
    "state",
    "signal",
    "inhibitor",
    "since",
    "released",
    "notify",
)
EV_RELEASED, EV_NOTIFY = EVENT_COLUMNS.index("released"), EVENT_COLUMNS.index("notify")

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
        # Per-layer settings as (layers, 1) columns: the state machines of every layer
        # move in one set of (layers, pools) array operations per evaluation.
        specs = self.layers
        self._cooldowns = np.array([[spec.cooldown] for spec in specs], dtype=np.int64)
        self._for = np.array([[spec.for_] for spec in specs], dtype=np.int64)
        self._keep_firing_for = np.array([[spec.keep_firing_for] for spec in specs], dtype=np.int64)
        self._repeat_interval = np.array([[spec.repeat_interval] for spec in specs], dtype=np.int64)
        self._start_signal = np.array(
            [[_FIRE if spec.for_ == 0 else _ACTIVATE] for spec in specs], dtype=np.int8
        )
        self._no_cooldown = self._cooldowns <= 0
        self._any_cooldown = any(spec.cooldown > 0 for spec in specs)
        self._repeats = self._repeat_interval > 0
        self._any_repeat = any(spec.repeat_interval > 0 for spec in specs)
        self._any_inhibitor = any(spec.inhibit_lower for spec in specs)
        self._whens = [spec.when for spec in specs]
        self._clear_whens: list[tuple[int, Expr]] = []
        for li, spec in enumerate(specs):
            if spec.clear_when is not None:
                self._clear_whens.append((li, spec.clear_when))
        # A resolved event's reason without clear_when; rendering the rule costs ~10 us.
        self._no_longer_true = tuple(f"no longer true: {spec.when}" for spec in specs)
        # _inhibits[hi, li]: layer hi (inhibit_lower) inhibits the lower-level layer li.
        self._inhibits = np.array(
            [[hi.inhibit_lower and low.level < hi.level for low in specs] for hi in specs],
            dtype=np.bool_,
        ).reshape(len(specs), len(specs))
        # Per layer, for the compiled loops: for, keep_firing_for, cooldown, repeat, start.
        self._table_settings = np.concatenate(
            [
                self._for,
                self._keep_firing_for,
                self._cooldowns,
                self._repeat_interval,
                self._start_signal.astype(np.int64),
            ],
            axis=1,
        )

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
        sel: slice | NDArray[np.int64] = slice(None) if is_all_rows(rows, self.n_pools) else rows
        signals = np.zeros((len(self.layers), rows.size), dtype=np.int8)
        self._signals(time, sel, features, signals)
        if not np.count_nonzero(signals):
            return []
        # Only the columns where something happens go further (few, in steady state).
        # (take() rather than [:, cols]: the same gather, a fifth of the overhead.)
        cols = np.bitwise_or.reduce(signals, axis=0).nonzero()[0]
        crow = rows.take(cols)
        states = self.state.take(crow, axis=1)
        csig = signals.take(cols, axis=1)
        nxt = _NEXT_FLAT.take(states * _N_SIGNALS + csig)
        if np.count_nonzero(nxt == _ILLEGAL):
            li, ci = np.argwhere(nxt == _ILLEGAL)[0]
            raise IllegalTransitionError(
                f"layer {self.layers[li].name}, row {crow[ci]}: no transition for "
                f"{State(int(states[li, ci])).name} on {Signal(int(csig[li, ci])).name}"
            )
        return self._apply(
            time, cols, crow, features, states, csig, nxt, block, block_hash, events_only
        )

    def evaluate_table(
        self,
        times: NDArray[np.int64],
        present: NDArray[np.bool_],
        features: Mapping[str, NDArray[np.float64]],
        states_out: NDArray[np.int8],
    ) -> NDArray[np.int64]:
        """``evaluate(times[t], rows_t, features at t, events_only=True)`` for each ``t``,
        ``rows_t`` the rows where ``present[t]`` (a step without any is skipped), in
        compiled loops.

        ``features[name]`` has shape ``(T * n_pools,)``: step-major, one value per pool at
        each step. Writes the state after step ``t`` into ``states_out[t]`` and returns
        the alert events as rows of :data:`EVENT_COLUMNS`, in the order ``evaluate``
        returns them; :meth:`table_transition` turns one into its :class:`Transition`.
        The state after is the state the ``evaluate`` calls leave (``tests/test_kernels.py``).
        """
        from rules.features import kernels  # noqa: PLC0415 - numba loads only for batches

        n_steps, n_layers, n_pools = int(times.shape[0]), len(self.layers), self.n_pools
        shape = (n_layers, n_steps, n_pools)
        when_true = np.empty(shape, dtype=np.bool_)
        when_false = np.empty(shape, dtype=np.bool_)
        for li, when in enumerate(truths(self._whens, features)):
            when_true[li] = when.true.reshape(n_steps, n_pools)
            when_false[li] = when.false.reshape(n_steps, n_pools)
        # The clear condition: clear_when when given, else when being false.
        clear_true, clear_false = when_false, when_true
        if self._clear_whens:
            clear_true, clear_false = when_false.copy(), when_true.copy()
            conditions = [clear_when for _, clear_when in self._clear_whens]
            for (li, _), truth in zip(self._clear_whens, truths(conditions, features), strict=True):
                clear_true[li] = truth.true.reshape(n_steps, n_pools)
                clear_false[li] = truth.false.reshape(n_steps, n_pools)
        timers = np.stack([self.since, self.clear_since, self.last_notified, self.cooldown_until])
        # At most one event per (layer, pool, step): a released firing is unchanged.
        events = np.empty((max(n_layers * n_steps * n_pools, 1), len(EVENT_COLUMNS)), np.int64)
        n_events = kernels.layer_steps(
            np.ascontiguousarray(times, dtype=np.int64),
            np.ascontiguousarray(present, dtype=np.bool_),
            when_true,
            when_false,
            clear_true,
            clear_false,
            self.state,
            timers,
            self.notified,
            self._table_settings,
            self._inhibits,
            _NEXT,
            states_out,
            events,
        )
        self.since, self.clear_since, self.last_notified, self.cooldown_until = timers
        if n_events < 0:
            li, row = divmod(-1 - n_events, n_pools)
            raise IllegalTransitionError(
                f"layer {self.layers[li].name}, row {row}: no transition for "
                f"{State(int(events[0, 3])).name} on {Signal(int(events[0, 5])).name}"
            )
        return events[:n_events]

    def table_transition(
        self,
        event: Sequence[int],
        time: int,
        features: Mapping[str, NDArray[np.float64]],
        *,
        block: int,
        block_hash: str,
    ) -> Transition:
        """The :class:`Transition` of one event row of :meth:`evaluate_table`, with its
        reason read from ``features`` (the step's values, one per pool)."""
        _, li, row, prev, new, sig, inh, since = (int(v) for v in event[:8])
        if event[EV_RELEASED]:
            reason = (
                f"{self._reason(li, features, row)} (no longer "
                f"inhibited by {self.layers[inh].name})"
            )
            return Transition(
                row=row,
                layer=li,
                previous=State.FIRING,
                state=State.FIRING,
                event="firing",
                time=time,
                since=since,
                block=block,
                block_hash=block_hash,
                reason=reason,
                uninhibited=True,
            )
        event_kind = _EVENT_OF[prev][sig]
        reason = (
            self._reason(li, features, row)
            if event_kind == "firing"
            else self._clear_reason(li, features, row)
        )
        return Transition(
            row=row,
            layer=li,
            previous=_STATE_OF[prev],
            state=_STATE_OF[new],
            event=event_kind,
            time=time,
            since=since,
            block=block,
            block_hash=block_hash,
            reason=reason,
            repeat=sig == _REPEAT,
            notify=bool(event[EV_NOTIFY]),
            inhibited_by=self.layers[inh].name if inh >= 0 else None,
        )

    def _signals(
        self,
        time: int,
        sel: slice | NDArray[np.int64],
        features: Mapping[str, NDArray[np.float64]],
        out: NDArray[np.int8],
    ) -> None:
        """Write each (layer, column)'s :class:`Signal` into ``out`` (zeros = HOLD).

        All layers at once: a row of ``out`` per layer, the layers' settings as columns.
        Masks of different states are disjoint, and within a state the later writes win
        exactly as the rules in the module docstring order them.
        """
        n_layers, n_cols = out.shape
        when_true = np.empty((n_layers, n_cols), dtype=np.bool_)
        when_false = np.empty((n_layers, n_cols), dtype=np.bool_)
        for li, when in enumerate(truths(self._whens, features)):
            when_true[li] = when.true
            when_false[li] = when.false
        state = self.state[:, sel]

        start = state == _INACTIVE
        start &= when_true
        if self._any_cooldown:
            start &= (self.cooldown_until[:, sel] <= time) | self._no_cooldown
        np.multiply(start, self._start_signal, out=out)

        pending = state == _PENDING
        if np.count_nonzero(pending):
            out[pending & ~when_true] = _DROP
            elapsed = (time - self.since[:, sel]) >= self._for
            elapsed &= pending
            elapsed &= when_true
            out[elapsed] = _FIRE

        firing = state == _FIRING
        if not np.count_nonzero(firing):
            return
        # The clear condition: clear_when when given, else when being false.
        clear, not_clear = when_false, when_true
        clear_layers = [(li, c) for li, c in self._clear_whens if np.count_nonzero(firing[li])]
        if clear_layers:
            clear, not_clear = when_false.copy(), when_true.copy()
            conditions = [clear_when for _, clear_when in clear_layers]
            for (li, _), clear_truth in zip(
                clear_layers, truths(conditions, features), strict=True
            ):
                clear[li] = clear_truth.true
                not_clear[li] = clear_truth.false
        clear_since = self.clear_since[:, sel]
        clearing = clear_since != NO_TIME
        firing_clear = firing & clear
        out[firing_clear & ~clearing] = _CLEAR_START
        # Only a known "not clear" resets the timer; unknown (NaN) neither resets nor resolves.
        out[firing & not_clear & clearing] = _CLEAR_RESET
        # keep_firing_for counts from the first evaluation where the clear
        # condition held; 0 resolves at that very evaluation.
        held = np.where(clearing, time - clear_since, 0)
        out[firing_clear & (held >= self._keep_firing_for)] = _RESOLVE
        if self._any_repeat:
            # A repeat takes only rows where nothing else happens; a row that must reset
            # its clear timer repeats at its next evaluation.
            due = self.notified[:, sel] & (
                time - self.last_notified[:, sel] >= self._repeat_interval
            )
            due &= self._repeats
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
        # so the masks below are disjoint and their order does not matter). Which signals
        # occur at all is counted once, so that absent ones cost nothing.
        seen = np.bincount(signals.ravel(), minlength=_N_SIGNALS).tolist()
        fire = signals == _FIRE if seen[_FIRE] else None
        if seen[_ACTIVATE] or seen[_FIRE] or seen[_DROP]:
            since = self.since.take(rows, axis=1)
            if seen[_ACTIVATE] or seen[_FIRE]:
                starts = signals == _ACTIVATE
                if fire is not None:
                    starts |= fire & (states == _INACTIVE)
                since[starts] = time
            if seen[_DROP]:
                since[signals == _DROP] = NO_TIME
            self.since[:, rows] = since
        resolve = signals == _RESOLVE if seen[_RESOLVE] else None
        if seen[_CLEAR_START] or seen[_FIRE] or seen[_RESOLVE] or seen[_CLEAR_RESET]:
            clear_since = self.clear_since.take(rows, axis=1)
            if seen[_CLEAR_START]:
                clear_since[signals == _CLEAR_START] = time
            if seen[_FIRE] or seen[_RESOLVE] or seen[_CLEAR_RESET]:
                clear_stop = signals == _CLEAR_RESET
                if fire is not None:
                    clear_stop |= fire
                if resolve is not None:
                    clear_stop |= resolve
                clear_since[clear_stop] = NO_TIME
            self.clear_since[:, rows] = clear_since
        if resolve is not None:
            resolved_li, resolved_ci = np.nonzero(resolve)
            self.cooldown_until[resolved_li, rows[resolved_ci]] = (
                time + self._cooldowns[resolved_li, 0]
            )

        # Inhibition is decided on the states after this step; it can only change in
        # columns where some layer changed, i.e. these. Without an inhibiting layer
        # nothing is ever inhibited.
        old_inhibitor = self._inhibitors(states) if self._any_inhibitor else None
        self.state[:, rows] = nxt
        new_inhibitor = self._inhibitors(nxt) if self._any_inhibitor else None

        changed = nxt != states
        if seen[_REPEAT]:
            changed |= signals == _REPEAT
        where_li, where_ci = np.nonzero(changed)
        if where_li.size:
            state_list, next_list, signal_list = states.tolist(), nxt.tolist(), signals.tolist()
            inhibitor_list = (
                new_inhibitor.tolist()
                if new_inhibitor is not None
                else [[-1] * len(cols)] * len(self.layers)
            )
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
        if old_inhibitor is None or new_inhibitor is None:
            return self._end_firings(out)
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
        return self._end_firings(out)

    def _end_firings(self, out: list[Transition]) -> list[Transition]:
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
        for hi, lower in enumerate(self._inhibits):
            if not lower.any():
                continue
            firing = states[hi] == State.FIRING
            for li in np.flatnonzero(lower).tolist():
                out[li] = np.where((out[li] < 0) & firing, hi, out[li])
        return out

    def _reason(self, li: int, features: Mapping[str, NDArray[np.float64]], ci: int) -> str:
        return self.layers[li].when.explain(features, ci)

    def _clear_reason(self, li: int, features: Mapping[str, NDArray[np.float64]], ci: int) -> str:
        spec = self.layers[li]
        if spec.clear_when is not None:
            return spec.clear_when.explain(features, ci)
        return self._no_longer_true[li]

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
