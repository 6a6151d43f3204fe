"""The hedge program of one pool: the layers set a target share of the LP's delta, with
hysteresis, and one instrument (a perp short or an option structure) is moved to it.

Rules this module keeps (everything that moves the target lives in :func:`policy_step`):
- a layer maps to a :class:`Target` (a share of delta in [0, 1] and an action:
  ``hedge``, or ``exit`` / ``rotate`` the pool); layers the policy does not name do not
  move the target; the pool's wanted target is the highest of ``base`` and the active
  layers' targets (ordered by share, then action: exit > rotate > hedge);
- a wanted target above the held one is taken at once; one below it is taken only
  after it has stood for ``hold_for`` seconds, and then one step down the policy's
  ladder of targets (never below the wanted one), the next step after another
  ``hold_for``: a layer's resolution never dumps the hedge at once;
- the perp target is ``-share * delta`` (base units); the option target is ``share *
  delta_at_lower`` at the protection price (:mod:`~rules.hedge.exposure`), raised to
  ``cheap_share`` when the model's IV is cheap against realized vol;
- a stablecoin pool (``stable = True``) has no option or perp market: its book stays
  empty, and a target of ``stable_from`` or more is advised as ``stable_action``
  (exit or rotate), never an option;
- :func:`program_step` is pure; a :class:`StepResult` and :class:`ProgramState` are
  frozen and :meth:`StepResult.to_payload` is JSON-friendly; :func:`run_program`
  is :func:`program_step` over arrays (the backtest), returning arrays.

Money is in quote, sizes in base units, times in unix seconds.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from rules.hedge.exposure import Exposure, ExposureSeries
from rules.hedge.instruments import (
    OptionBook,
    OptionFill,
    OptionSpec,
    PerpBook,
    PerpFill,
    PerpSpec,
    option_step,
    perp_step,
)
from rules.hedge.volmodel import CALIBRATED, VolModel
from rules.types import ValidationError

__all__ = [
    "ACTIONS",
    "HedgeProgram",
    "PolicyState",
    "ProgramSeries",
    "ProgramState",
    "StepResult",
    "Target",
    "TargetPolicy",
    "Totals",
    "policy_step",
    "program_step",
    "run_program",
]

Action = Literal["hedge", "rotate", "exit"]
ACTIONS: tuple[Action, ...] = ("hedge", "rotate", "exit")  # in rising order


@dataclass(frozen=True, slots=True, order=True)
class Target:
    """A share of delta to hedge and what to do with the pool."""

    share: float
    action: Action = "hedge"

    def __post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise ValidationError(f"target share must be in [0, 1], got {self.share!r}")
        if self.action not in ACTIONS:
            raise ValidationError(
                f"target action must be one of {', '.join(ACTIONS)}, got {self.action!r}"
            )

    @property
    def rank(self) -> tuple[float, int]:
        return self.share, ACTIONS.index(self.action)


def _key(target: Target) -> tuple[float, int]:
    return target.rank


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """``base``: the target with no layer firing; ``layers``: layer name -> target;
    ``hold_for``: seconds a lower target must stand before each step down."""

    base: Target = Target(0.0)
    layers: tuple[tuple[str, Target], ...] = ()
    hold_for: int = 24 * 3600
    ladder: tuple[Target, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.hold_for, bool) or not isinstance(self.hold_for, int):
            raise ValidationError("hold_for must be a whole number of seconds")
        if self.hold_for < 0:
            raise ValidationError(f"hold_for must be >= 0 seconds, got {self.hold_for!r}")
        names = [name for name, _ in self.layers]
        if len(set(names)) != len(names):
            raise ValidationError("a layer has two hedge targets")
        levels = {self.base, *(t for _, t in self.layers)}
        object.__setattr__(self, "ladder", tuple(sorted(levels, key=_key)))

    @classmethod
    def of(
        cls, base: Target, layers: Mapping[str, Target], hold_for: int = 24 * 3600
    ) -> TargetPolicy:
        return cls(base, tuple(sorted(layers.items())), hold_for)

    def wanted(self, active: Collection[str]) -> Target:
        """The highest of ``base`` and the active layers' targets."""
        best = self.base
        for name, target in self.layers:
            if name in active and target.rank > best.rank:
                best = target
        return best


@dataclass(frozen=True, slots=True)
class PolicyState:
    """The target held, and since when a lower one has been wanted (None: not lower)."""

    target: Target
    lower_since: int | None = None


def policy_step(
    policy: TargetPolicy, state: PolicyState | None, active: Collection[str], now: int
) -> PolicyState:
    """The target after the active layers at ``now`` (rules: module doc)."""
    wanted = policy.wanted(active)
    if state is None or wanted.rank >= state.target.rank:
        return PolicyState(wanted)
    since = state.lower_since if state.lower_since is not None else int(now)
    if now - since < policy.hold_for:
        return PolicyState(state.target, since)
    below = [t for t in policy.ladder if wanted.rank <= t.rank < state.target.rank]
    step = below[-1] if below else wanted
    return PolicyState(step, None if step == wanted else int(now))


# -- the program --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HedgeProgram:
    """A pool's program: the policy and one instrument (``perp`` or ``options``)."""

    policy: TargetPolicy
    perp: PerpSpec | None = None
    options: OptionSpec | None = None
    stable: bool = False
    stable_action: Action = "exit"
    stable_from: float = 0.75
    model: VolModel = CALIBRATED

    def __post_init__(self) -> None:
        if (self.perp is None) == (self.options is None) and not self.stable:
            raise ValidationError("a hedge program needs exactly one of perp or options")
        if self.stable_action == "hedge":
            raise ValidationError("stable_action must be exit or rotate")


@dataclass(frozen=True, slots=True)
class Totals:
    """Running sums since the program started (quote)."""

    perp_pnl: float = 0.0
    fees: float = 0.0
    funding: float = 0.0
    premiums: float = 0.0
    spread: float = 0.0
    settled: float = 0.0
    option_mark: float = 0.0

    @property
    def hedge_pnl(self) -> float:
        """The hedge's net P&L: perp marks and funding less fees; options' mark and
        settlements less premiums (at mid) and spread."""
        perp = self.perp_pnl + self.funding - self.fees
        return perp + self.option_mark + self.settled - self.premiums - self.spread

    @property
    def costs(self) -> float:
        """Trading costs alone: fees and spread, less funding received."""
        return self.fees + self.spread - self.funding

    def to_payload(self) -> dict[str, float]:
        return {
            "hedge_pnl": self.hedge_pnl,
            "fees": self.fees,
            "funding": self.funding,
            "premiums": self.premiums,
            "spread": self.spread,
            "settled": self.settled,
            "option_mark": self.option_mark,
        }


@dataclass(frozen=True, slots=True)
class ProgramState:
    policy: PolicyState
    perp: PerpBook = field(default_factory=PerpBook)
    options: OptionBook = field(default_factory=OptionBook)
    totals: Totals = field(default_factory=Totals)


@dataclass(frozen=True, slots=True)
class StepResult:
    """The target, the book after the step, the trade that moved it there, the totals."""

    time: int
    target: Target
    action: Action | Literal["hold"]
    target_base: float
    perp_size: float
    options: OptionBook
    perp_trade: float
    options_fill: OptionFill | None
    totals: Totals

    def to_payload(self) -> dict[str, object]:
        """JSON-friendly (no NaN: unknown figures are null)."""
        trade: dict[str, object] = {"perp": self.perp_trade}
        if self.options_fill is not None:
            trade["bought"] = [h.to_payload() for h in self.options_fill.bought]
            trade["sold"] = [h.to_payload() for h in self.options_fill.sold]
        return {
            "target": {
                "share": self.target.share,
                "action": self.action,
                "base": _num(self.target_base),
            },
            "book": {
                "perp": self.perp_size,
                "options": [h.to_payload() for h in self.options.holdings],
            },
            "trade": trade,
            "totals": {k: _num(v) for k, v in self.totals.to_payload().items()},
        }


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def program_step(
    program: HedgeProgram,
    state: ProgramState | None,
    *,
    time: int,
    exposure: Exposure,
    active: Collection[str],
    rv_short: float = math.nan,
    funding_rate: float = 0.0,
) -> tuple[ProgramState, StepResult]:
    """One sample: the target from the layers, then the instrument moved towards it."""
    policy = policy_step(program.policy, None if state is None else state.policy, active, time)
    prior = ProgramState(policy) if state is None else state
    target = policy.target
    totals = prior.totals
    perp_book, options_book = prior.perp, prior.options
    perp_trade, fill = 0.0, None
    if program.stable:
        action: Action | Literal["hold"] = (
            program.stable_action if target.share >= program.stable_from else "hold"
        )
        return ProgramState(policy, perp_book, options_book, totals), StepResult(
            time, target, action, 0.0, 0.0, options_book, 0.0, None, totals
        )
    action = target.action if target.share > 0 or target.action != "hedge" else "hold"
    price = exposure.price
    if program.perp is not None:
        target_base = target.share * exposure.delta
        perp_book, perp_fill = perp_step(
            program.perp,
            prior.perp,
            time=time,
            price=price,
            target_size=-target_base,
            reference_delta=exposure.delta,
            funding_rate=funding_rate,
        )
        perp_trade = perp_fill.trade
        totals = _add_perp(totals, perp_fill)
    else:
        spec = program.options
        assert spec is not None  # HedgeProgram checks exactly one instrument
        share = target.share
        if spec.cheap_ratio is not None and program.model.is_cheap(rv_short, spec.cheap_ratio):
            share = max(share, spec.cheap_share)
        target_base = share * exposure.delta_at_lower
        options_book, fill = option_step(
            spec,
            prior.options,
            time=time,
            price=price,
            rv_short=rv_short,
            strike=exposure.protection_price,
            target_notional=target_base,
            model=program.model,
        )
        totals = Totals(
            totals.perp_pnl,
            totals.fees,
            totals.funding,
            totals.premiums + fill.premiums,
            totals.spread + fill.spread,
            totals.settled + fill.settled,
            fill.mark,
        )
    result = StepResult(
        time,
        target,
        action,
        target_base,
        perp_book.size,
        options_book,
        perp_trade,
        fill,
        totals,
    )
    return ProgramState(policy, perp_book, options_book, totals), result


def _add_perp(totals: Totals, fill: PerpFill) -> Totals:
    return Totals(
        totals.perp_pnl + fill.pnl,
        totals.fees + fill.fee,
        totals.funding + fill.funding,
        totals.premiums,
        totals.spread,
        totals.settled,
        totals.option_mark,
    )


@dataclass(frozen=True, slots=True)
class ProgramSeries:
    """:func:`run_program`'s output, one value per bar."""

    target_share: NDArray[np.float64]
    target_base: NDArray[np.float64]
    perp_size: NDArray[np.float64]
    option_notional: NDArray[np.float64]
    hedge_pnl: NDArray[np.float64]
    costs: NDArray[np.float64]
    premiums: NDArray[np.float64]
    funding: NDArray[np.float64]
    exit: NDArray[np.bool_]


def run_program(
    program: HedgeProgram,
    times: NDArray[np.int64],
    prices: NDArray[np.float64],
    exposure: ExposureSeries,
    layer_active: Mapping[str, NDArray[np.bool_]],
    *,
    rv_short: NDArray[np.float64] | None = None,
    funding_rate: NDArray[np.float64] | None = None,
) -> ProgramSeries:
    """:func:`program_step` over every bar (the backtest's call)."""
    n = len(times)
    out = {name: np.zeros(n) for name in ProgramSeries.__slots__ if name != "exit"}
    exits = np.zeros(n, dtype=bool)
    names = list(layer_active)
    columns = [np.asarray(layer_active[name], dtype=bool) for name in names]
    state: ProgramState | None = None
    for i in range(n):
        active = [names[j] for j, col in enumerate(columns) if col[i]]
        price = float(prices[i])
        here = Exposure(
            price=price,
            value=float(exposure.value[i]),
            delta=float(exposure.delta[i]),
            gamma=float(exposure.gamma[i]),
            region="in",  # not read by the step
            protection_price=float(exposure.protection_price[i]),
            delta_at_lower=float(exposure.delta_at_lower[i]),
        )
        state, result = program_step(
            program,
            state,
            time=int(times[i]),
            exposure=here,
            active=active,
            rv_short=math.nan if rv_short is None else float(rv_short[i]),
            funding_rate=0.0 if funding_rate is None else float(funding_rate[i]),
        )
        totals = result.totals
        out["target_share"][i] = result.target.share
        out["target_base"][i] = result.target_base
        out["perp_size"][i] = result.perp_size
        out["option_notional"][i] = result.options.notional
        out["hedge_pnl"][i] = totals.hedge_pnl
        out["costs"][i] = totals.costs
        out["premiums"][i] = totals.premiums
        out["funding"][i] = totals.funding
        exits[i] = result.action in ("exit", "rotate")
    return ProgramSeries(exit=exits, **out)
