"""The layer engine: the state machines of every (layer, pool), live and in backtests.

What this module guarantees:

- The state machine is :mod:`rules.layers.machine` (its docstring states the rules it
  keeps): :meth:`LayerEngine.evaluate` (one step, live) and
  :meth:`LayerEngine.evaluate_table` (a table of steps, backtests) both run its one
  compiled loop, :func:`~rules.layers.machine.steps`, on the engine's own state arrays, so
  a table of ``T`` steps is ``T`` single steps (the same states, the same events in the
  same order).
- This module does what Python is for: it evaluates the layers' expressions into
  three-valued truths (:func:`rules.expr.truths`), turns the loop's event rows into
  :class:`Transition` objects with their reasons, and saves and restores the state
  (whole or for a subset of pools; layers matched by name).
- An illegal move raises :class:`IllegalTransitionError` and leaves the state of that
  step unchanged; so does a row outside the pools (:class:`IndexError`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from rules.durations import format_duration
from rules.expr import Expr, truths
from rules.hedge.advice import HedgeSpec
from rules.layers import machine
from rules.layers.machine import (
    EV_COLUMN,
    EV_EVENT,
    EV_INHIBITOR,
    EV_LAYER,
    EV_NOTIFY,
    EV_PREVIOUS,
    EV_RELEASED,
    EV_ROW,
    EV_SIGNAL,
    EV_SINCE,
    EV_STATE,
    EV_UNKNOWN_SINCE,
    EVENT_COLUMNS,
    EVENT_KINDS,
    NO_TIME,
    TIMERS,
    TRANSITIONS,
    TRUTHS,
    EventKind,
    IllegalTransitionError,
    Signal,
    State,
)
from rules.types import FEATURE_NAMES

__all__ = [
    "EVENT_COLUMNS",
    "EV_NOTIFY",
    "EV_RELEASED",
    "NO_TIME",
    "TRANSITIONS",
    "EventKind",
    "IllegalTransitionError",
    "LayerEngine",
    "LayerSpec",
    "Signal",
    "State",
    "Transition",
]

# Lookups for building transitions: enum construction and tuple-keyed dict lookups cost
# about a microsecond each, and a busy step has tens of transitions.
_STATE_OF: tuple[State, ...] = tuple(State)
_REPEAT = int(Signal.REPEAT)
_STALE = int(Signal.STALE)
_WHEN_TRUE, _WHEN_FALSE, _CLEAR_TRUE, _CLEAR_FALSE = range(len(TRUTHS))
_FIRING = int(State.FIRING)


def _name_order(name: str) -> int:
    return FEATURE_NAMES.index(name) if name in FEATURE_NAMES else len(FEATURE_NAMES)


def _loop_ints(values: NDArray[Any]) -> NDArray[np.int64]:
    """``values`` as the loop takes integer arrays: int64, C order, writable (a read-only
    or strided array is another numba type, i.e. another compilation of the loop)."""
    out = np.ascontiguousarray(values, dtype=np.int64)
    return out if out.flags.writeable else out.copy()


def _name(kind: type[State] | type[Signal], value: int) -> str:
    """The member name of ``value``, or the number when it is none (a corrupt state)."""
    try:
        return kind(value).name
    except ValueError:
        return str(value)


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One configured layer. Durations are seconds; 0 disables ``repeat_interval`` and
    ``stale_after`` (the config gives every layer a ``stale_after``, see
    :mod:`daemon.config`)."""

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
    stale_after: int = 0

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
            ("stale_after", self.stale_after),
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


class LayerEngine:
    """The state machines of every (layer, pool); see :mod:`rules.layers.machine`."""

    def __init__(self, layers: Sequence[LayerSpec], n_pools: int) -> None:
        names = [spec.name for spec in layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique, got {names}")
        # Sorted by level so that inhibition looks only upwards.
        self.layers: tuple[LayerSpec, ...] = tuple(sorted(layers, key=lambda s: (s.level, s.name)))
        self.n_pools = n_pools
        shape = (len(self.layers), n_pools)
        # The machine's state: the arrays the compiled loop reads and writes in place.
        self.state = np.zeros(shape, dtype=np.int8)
        # The timer planes (machine.TIMERS), one array; by name through the properties below.
        self._timers = np.full((len(TIMERS), *shape), NO_TIME, dtype=np.int64)
        # Whether the current firing has been notified (False while inhibited).
        self.notified = np.zeros(shape, dtype=np.bool_)
        self._settings = machine.layer_settings(self.layers)
        # The transition table the loop follows (the module's, read-only).
        self._next = machine._NEXT
        self._event = machine._EVENT
        self._whens = [spec.when for spec in self.layers]
        self._clear_whens = [
            (li, spec.clear_when)
            for li, spec in enumerate(self.layers)
            if spec.clear_when is not None
        ]
        # A resolved event's reason without clear_when; rendering the rule costs ~10 us.
        self._no_longer_true = tuple(f"no longer true: {spec.when}" for spec in self.layers)
        # The inputs of each layer's clear decision, in FEATURE_NAMES order (stale reasons).
        self._clear_inputs = tuple(
            sorted(
                (spec.clear_when if spec.clear_when is not None else spec.when).names,
                key=_name_order,
            )
            for spec in self.layers
        )
        # Buffers of the one-step path, reused: its per-call cost is what a daemon
        # following a few pools pays at every block.
        self._live_events = np.empty(
            (max(len(self.layers) * n_pools, 1), len(EVENT_COLUMNS)), dtype=np.int64
        )
        self._no_states_out = np.empty((0, *shape), dtype=np.int8)
        self._columns: dict[int, tuple[NDArray[np.int64], NDArray[np.int64]]] = {}
        # Load the compiled loop (or compile it, once per machine): a daemon pays for it
        # when it starts, not at its first block. Zero steps: nothing moves.
        self._run(
            np.zeros(0, dtype=np.int64),
            np.zeros(1, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=np.int64),
            np.zeros((0, len(TRUTHS), len(self.layers), 0), dtype=np.bool_),
            statuses=False,
            states_out=self._no_states_out,
            events=self._live_events,
        )

    # Views, not attributes: a copied or unpickled engine keeps one set of arrays.
    @property
    def since(self) -> NDArray[np.int64]:
        """When the current pending or firing began (``NO_TIME``: inactive)."""
        plane: NDArray[np.int64] = self._timers[0]
        return plane

    @property
    def clear_since(self) -> NDArray[np.int64]:
        """When the clear condition began to hold while firing (``NO_TIME``: not clearing)."""
        plane: NDArray[np.int64] = self._timers[1]
        return plane

    @property
    def last_notified(self) -> NDArray[np.int64]:
        """When the last firing or repeat was sent (or suppressed)."""
        plane: NDArray[np.int64] = self._timers[2]
        return plane

    @property
    def cooldown_until(self) -> NDArray[np.int64]:
        """Until when a resolved layer stays inactive."""
        plane: NDArray[np.int64] = self._timers[3]
        return plane

    @property
    def unknown_since(self) -> NDArray[np.int64]:
        """When the clear decision of a firing layer became unknown (``NO_TIME``: known)."""
        plane: NDArray[np.int64] = self._timers[4]
        return plane

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
        """Evaluate every layer on the pools ``rows`` at ``time`` (one step of the loop).

        ``features`` maps each feature name to an array aligned with ``rows`` (each pool
        at most once).
        Returns the transitions in layer order, then in the order of ``rows``, then the
        released firings: every state change (pending, dropped: no event, no reason) and
        every alert event; with ``events_only`` only those that carry an event (the
        state machines move exactly the same).
        """
        n_cols = int(rows.size)
        if n_cols == 0:
            return []
        if n_cols > self.n_pools:  # the event buffer has room for each pool once
            raise ValueError(f"{n_cols} rows for {self.n_pools} pools: rows repeat a pool")
        rows = _loop_ints(rows)
        offsets, columns = self._step_columns(n_cols)
        truth = self._truth(features, 1, n_cols, live=True)
        events = self._live_events
        n_events = self._run(
            np.array((time,), dtype=np.int64),
            offsets,
            rows,
            columns,
            truth,
            statuses=not events_only,
            states_out=self._no_states_out,
            events=events,
        )
        if n_events < 0:
            self._refused(events[-1 - n_events])
        if n_events == 0:
            return []
        return [
            self._transition(event, time, features, event[EV_COLUMN], block, block_hash)
            for event in events[:n_events].tolist()
        ]

    def evaluate_table(
        self,
        times: NDArray[np.int64],
        present: NDArray[np.bool_],
        features: Mapping[str, NDArray[np.float64]],
        states_out: NDArray[np.int8],
    ) -> NDArray[np.int64]:
        """``evaluate(times[t], rows_t, features at t, events_only=True)`` for each ``t``,
        ``rows_t`` the rows where ``present[t]``, in one call of the same loop.

        ``features[name]`` has shape ``(T * n_pools,)``: step-major, one value per pool at
        each step. Writes the state after step ``t`` into ``states_out[t]`` and returns
        the alert events as rows of :data:`EVENT_COLUMNS`, in the order ``evaluate``
        returns them; :meth:`table_transition` turns one into its :class:`Transition`.
        An illegal move raises with the state of the steps before it applied.
        """
        n_steps, n_pools = int(times.shape[0]), self.n_pools
        if states_out.shape != (n_steps, len(self.layers), n_pools):  # the loop writes each
            raise ValueError(
                f"states_out has shape {states_out.shape}, "
                f"not {(n_steps, len(self.layers), n_pools)}"
            )
        present = np.asarray(present, dtype=np.bool_).reshape(n_steps, n_pools)
        truth = self._truth(features, n_steps, n_pools, live=False)
        counts = np.count_nonzero(present, axis=1)
        offsets = np.zeros(n_steps + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        # Step-major: the pools of each step in order, each reading its own column.
        rows = np.nonzero(present)[1].astype(np.int64)
        # At most one row per evaluated (layer, pool): a release is of an unmoved one.
        events = np.empty((max(len(self.layers) * rows.size, 1), len(EVENT_COLUMNS)), np.int64)
        n_events = self._run(
            _loop_ints(times),
            offsets,
            rows,
            rows,
            truth,
            statuses=False,
            states_out=states_out,
            events=events,
        )
        if n_events < 0:
            self._refused(events[-1 - n_events])
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
        return self._transition(event, time, features, int(event[EV_ROW]), block, block_hash)

    def _run(
        self,
        times: NDArray[np.int64],
        offsets: NDArray[np.int64],
        rows: NDArray[np.int64],
        columns: NDArray[np.int64],
        truth: NDArray[np.bool_],
        *,
        statuses: bool,
        states_out: NDArray[np.int8],
        events: NDArray[np.int64],
    ) -> int:
        """:func:`rules.layers.machine.steps` on this engine's state, settings and table."""
        n_events: int = machine.steps(
            times,
            offsets,
            rows,
            columns,
            truth,
            self.state,
            self._timers,
            self.notified,
            self._settings,
            self._next,
            self._event,
            statuses,
            states_out,
            events,
        )
        return n_events

    def _step_columns(self, n_cols: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Offsets and columns of one step of ``n_cols`` pools (cached per size)."""
        found = self._columns.get(n_cols)
        if found is None:
            if len(self._columns) >= 64:  # a daemon sees a few sizes (pools per block)
                self._columns.clear()
            # Writable like every other argument of the loop: a read-only array is another
            # numba type, i.e. a second compilation of the loop.
            found = (np.array((0, n_cols), dtype=np.int64), np.arange(n_cols, dtype=np.int64))
            self._columns[n_cols] = found
        return found

    def _truth(
        self,
        features: Mapping[str, NDArray[np.float64]],
        n_steps: int,
        n_cols: int,
        *,
        live: bool,
    ) -> NDArray[np.bool_]:
        """The truths (:data:`~rules.layers.machine.TRUTHS`) of every layer, ``(T, 4, L, C)``."""
        truth = np.empty((n_steps, len(TRUTHS), len(self.layers), n_cols), dtype=np.bool_)
        for li, when in enumerate(truths(self._whens, features)):
            truth[:, _WHEN_TRUE, li] = when.true.reshape(n_steps, n_cols)
            truth[:, _WHEN_FALSE, li] = when.false.reshape(n_steps, n_cols)
        wanted: list[tuple[int, Expr]] = []
        for li, clear_when in self._clear_whens:
            if live and not np.count_nonzero(self.state[li] == _FIRING):
                # The loop reads clear_when only on firing pools: a layer firing nowhere
                # skips it (unknown, never read).
                truth[:, _CLEAR_TRUE:, li] = False
            else:
                wanted.append((li, clear_when))
        if wanted:
            clears = truths([clear_when for _, clear_when in wanted], features)
            for (li, _), clear in zip(wanted, clears, strict=True):
                truth[:, _CLEAR_TRUE, li] = clear.true.reshape(n_steps, n_cols)
                truth[:, _CLEAR_FALSE, li] = clear.false.reshape(n_steps, n_cols)
        return truth

    def _refused(self, event: Sequence[int]) -> None:
        """Raise for a step the loop refused (see :func:`rules.layers.machine.steps`)."""
        li, row, state, signal = (
            int(event[EV_LAYER]),
            int(event[EV_ROW]),
            int(event[EV_PREVIOUS]),
            int(event[EV_SIGNAL]),
        )
        if int(event[EV_EVENT]) == machine.REFUSED_ROW:
            raise IndexError(f"row {row} is not a pool of the engine (it has {self.n_pools})")
        where = f"layer {self.layers[li].name}, row {row}: " if li >= 0 else ""
        raise IllegalTransitionError(
            f"{where}no transition for {_name(State, state)} on {_name(Signal, signal)}"
        )

    def _transition(
        self,
        event: Sequence[int],
        time: int,
        features: Mapping[str, NDArray[np.float64]],
        column: int,
        block: int,
        block_hash: str,
    ) -> Transition:
        """The :class:`Transition` of one event row; its reason reads ``features[column]``."""
        li, row = int(event[EV_LAYER]), int(event[EV_ROW])
        kind = EVENT_KINDS[event[EV_EVENT]]
        inhibitor = int(event[EV_INHIBITOR])
        if kind is None:
            # A status-only change (pending, dropped): no reason (explaining costs
            # ~0.1 ms, and these are published without one).
            reason = ""
        elif kind == "firing":
            reason = self.layers[li].when.explain(features, column)
            if event[EV_RELEASED]:
                reason += f" (no longer inhibited by {self.layers[inhibitor].name})"
        elif event[EV_SIGNAL] == _STALE:
            reason = self._stale_reason(li, time - int(event[EV_UNKNOWN_SINCE]), features, column)
        else:
            spec = self.layers[li]
            reason = (
                spec.clear_when.explain(features, column)
                if spec.clear_when is not None
                else self._no_longer_true[li]
            )
        released = bool(event[EV_RELEASED])
        return Transition(
            row=row,
            layer=li,
            previous=_STATE_OF[event[EV_PREVIOUS]],
            state=_STATE_OF[event[EV_STATE]],
            event=kind,
            time=time,
            since=int(event[EV_SINCE]),
            block=block,
            block_hash=block_hash,
            reason=reason,
            repeat=event[EV_SIGNAL] == _REPEAT,
            notify=bool(event[EV_NOTIFY]),
            inhibited_by=(self.layers[inhibitor].name if inhibitor >= 0 and not released else None),
            uninhibited=released,
        )

    def _stale_reason(
        self, li: int, held: int, features: Mapping[str, NDArray[np.float64]], column: int
    ) -> str:
        """The reason of a stale resolve (machine rule 4a): how long, and which inputs."""
        missing = [
            name
            for name in self._clear_inputs[li]
            if name in features and np.isnan(features[name][column])
        ]
        text = f"inputs unknown for {format_duration(held)}"
        return f"{text}: {', '.join(missing)}" if missing else text

    # -- state ---------------------------------------------------------------

    _ARRAYS = (
        "state",
        "since",
        "clear_since",
        "last_notified",
        "cooldown_until",
        "notified",
        "unknown_since",
    )
    #: Arrays a state saved by an older version may lack, and what they start as.
    _ADDED: tuple[tuple[str, int], ...] = (("unknown_since", NO_TIME),)

    def get_state(self) -> dict[str, Any]:
        """A deep copy of the whole state, bit-exact, picklable."""
        return {
            "layers": [spec.name for spec in self.layers],
            **{name: getattr(self, name).copy() for name in self._ARRAYS},
        }

    def set_state(
        self,
        state: Mapping[str, Any],
        rows: NDArray[np.int64] | None = None,
        *,
        source_rows: NDArray[np.int64] | None = None,
        layers: Collection[str] | None = None,
    ) -> None:
        """Restore a state from :meth:`get_state`; only ``rows`` when given.

        Layers are matched by name, so a config reload that adds or removes a layer
        keeps the state of the others (new layers start inactive); with ``layers`` only
        those names are restored (the others keep their state). With ``source_rows``
        (aligned with ``rows``) pool ``rows[i]`` gets the saved pool ``source_rows[i]``:
        a state saved for another table of pools.
        """
        names = list(state["layers"])
        src_rows = rows if source_rows is None else source_rows
        if source_rows is not None and (rows is None or len(rows) != len(source_rows)):
            raise ValueError("source_rows needs rows of the same length")
        for li, spec in enumerate(self.layers):
            if spec.name not in names or (layers is not None and spec.name not in layers):
                continue
            src = names.index(spec.name)
            for attr in self._ARRAYS:
                added = dict(self._ADDED)
                if attr not in state and attr in added:
                    # An older checkpoint: this timer was not kept yet, it starts unset.
                    target = getattr(self, attr)
                    if rows is None:
                        target[li] = added[attr]
                    else:
                        target[li, rows] = added[attr]
                    continue
                saved = np.asarray(state[attr])
                if source_rows is None and saved.shape[1] != self.n_pools:
                    raise ValueError(
                        f"saved engine state has {saved.shape[1]} pools, "
                        f"the engine has {self.n_pools}"
                    )
                target = getattr(self, attr)
                if rows is None:
                    target[li] = saved[src]
                else:
                    target[li, rows] = saved[src, src_rows]

    def status(self, li: int, row: int) -> tuple[State, int]:
        """Current state and since-time (``NO_TIME`` when inactive) of one layer on one pool."""
        return State(int(self.state[li, row])), int(self.since[li, row])
