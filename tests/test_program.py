"""The hedge program: target policy with hysteresis, perp and option cost models, the
step result, and the run over bars."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rules.hedge.exposure import exposure, exposure_series
from rules.hedge.instruments import (
    OptionBook,
    OptionSpec,
    PerpBook,
    PerpSpec,
    option_step,
    option_value,
    perp_step,
)
from rules.hedge.lp import Position
from rules.hedge.program import (
    HedgeProgram,
    PolicyState,
    Target,
    TargetPolicy,
    policy_step,
    program_step,
    run_program,
)
from rules.hedge.volmodel import CALIBRATED, DAY, realized_series
from rules.types import ValidationError

H = 3600
POLICY = TargetPolicy.of(
    Target(0.0),
    {"L1": Target(0.5), "L2": Target(0.75), "L3": Target(1.0, "exit")},
    hold_for=6 * H,
)


def _walk(series: list[tuple[int, set[str]]]) -> list[tuple[float, str]]:
    state: PolicyState | None = None
    out = []
    for hour, active in series:
        state = policy_step(POLICY, state, active, hour * H)
        out.append((state.target.share, state.target.action))
    return out


def test_targets_rise_at_once_and_fall_one_step_per_hold_for() -> None:
    got = _walk(
        [
            (0, set()),
            (1, {"L1"}),
            (2, {"L1", "L2", "L3"}),  # L3: exit the pool
            (3, {"L1"}),  # L2, L3 resolved: held
            (8, {"L1"}),
            (9, {"L1"}),  # 6h after 3: one step down, to L2's target
            (14, {"L1"}),
            (15, {"L1"}),  # another 6h: L1's target
            (16, set()),
            (21, set()),
            (22, {"L1"}),  # back before 6h: held, the wait starts again
            (23, set()),
            (29, set()),  # 6h after 23: to base
        ]
    )
    assert got == [
        (0.0, "hedge"),
        (0.5, "hedge"),
        (1.0, "exit"),
        (1.0, "exit"),
        (1.0, "exit"),
        (0.75, "hedge"),
        (0.75, "hedge"),
        (0.5, "hedge"),
        (0.5, "hedge"),
        (0.5, "hedge"),
        (0.5, "hedge"),
        (0.5, "hedge"),
        (0.0, "hedge"),
    ]


def test_unknown_layers_do_not_move_the_target_and_bad_config_fails() -> None:
    assert _walk([(0, {"L9"})]) == [(0.0, "hedge")]
    with pytest.raises(ValidationError, match="share"):
        Target(1.5)
    with pytest.raises(ValidationError, match="hold_for"):
        TargetPolicy(hold_for=-1)
    with pytest.raises(ValidationError, match="exactly one"):
        HedgeProgram(POLICY)


def test_perp_marks_pays_funding_each_8h_and_rebalances_outside_the_band() -> None:
    spec = PerpSpec(band=0.1, taker_fee=0.001)
    book, fill = perp_step(
        spec, PerpBook(), time=0, price=100.0, target_size=-10.0, reference_delta=10.0
    )
    assert (book.size, fill.trade, fill.fee) == (-10.0, -10.0, pytest.approx(1.0))
    # 9h later at 90: +100 on the short, one funding time (08:00) at +0.01 %: shorts receive
    book, fill = perp_step(
        spec,
        book,
        time=9 * H,
        price=90.0,
        target_size=-10.5,
        reference_delta=10.5,
        funding_rate=1e-4,
    )
    assert fill.pnl == pytest.approx(100.0)
    assert fill.funding == pytest.approx(10 * 90 * 1e-4)
    assert fill.trade == 0.0
    assert book.size == -10.0
    book, fill = perp_step(
        spec, book, time=10 * H, price=90.0, target_size=-12.0, reference_delta=12.0
    )
    assert fill.trade == pytest.approx(-2.0)
    assert fill.fee == pytest.approx(2 * 90 * 0.001)
    book, fill = perp_step(spec, book, time=11 * H, price=90.0, target_size=0.0, reference_delta=12)
    assert book.size == 0.0
    assert fill.funding == 0.0


def test_put_bought_at_ask_marked_at_mid_rolled_and_settled() -> None:
    spec = OptionSpec(structure="put", tenor=30 * DAY, roll_before=7 * DAY)
    book, fill = option_step(
        spec, OptionBook(), time=0, price=100.0, rv_short=0.6, strike=80.0, target_notional=5.0
    )
    (held,) = book.holdings
    assert (held.strike, held.expiry, held.notional) == (80.0, 30 * DAY, 5.0)
    mid, ask, _ = option_value(held, CALIBRATED, time=0, price=100.0, rv_short=0.6)
    assert fill.premiums == pytest.approx(mid)
    assert fill.spread == pytest.approx(ask - mid)
    assert fill.mark == pytest.approx(mid)
    # a small change of target is inside the band: nothing traded
    book, fill = option_step(
        spec, book, time=DAY, price=95.0, rv_short=0.6, strike=80.0, target_notional=5.2
    )
    assert fill.bought == ()
    assert fill.sold == ()
    # 24 days in: under 7 days left, rolled into a fresh 30-day put
    book, fill = option_step(
        spec, book, time=24 * DAY, price=70.0, rv_short=0.9, strike=70.0, target_notional=5.0
    )
    assert len(fill.sold) == 1
    assert len(fill.bought) == 1
    assert book.holdings[0].expiry == 54 * DAY
    assert book.holdings[0].strike == 70.0
    # kept to expiry (roll_before tiny): settles at intrinsic
    spec2 = OptionSpec(structure="put", tenor=2 * DAY, roll_before=1)
    book, _ = option_step(
        spec2, OptionBook(), time=0, price=100.0, rv_short=0.6, strike=90.0, target_notional=2.0
    )
    book, fill = option_step(
        spec2, book, time=2 * DAY, price=60.0, rv_short=0.6, strike=48.0, target_notional=0.0
    )
    assert fill.settled == pytest.approx(2.0 * 30.0)
    assert book.holdings == ()


def test_put_spread_costs_less_than_the_put_and_collar_needs_asking() -> None:
    kwargs = {"time": 0, "price": 100.0, "rv_short": 0.6, "strike": 80.0, "target_notional": 1.0}
    _, put = option_step(OptionSpec("put"), OptionBook(), **kwargs)  # type: ignore[arg-type]
    _, spread = option_step(OptionSpec("put_spread"), OptionBook(), **kwargs)  # type: ignore[arg-type]
    _, collar = option_step(
        OptionSpec("collar", call_moneyness=1.25),
        OptionBook(),
        **kwargs,  # type: ignore[arg-type]
    )
    assert 0 < spread.premiums < put.premiums
    assert collar.premiums < put.premiums
    assert spread.bought[0].low_strike == pytest.approx(60.0)
    with pytest.raises(ValidationError, match="call_moneyness"):
        OptionSpec("collar")


RANGE = Position(80.0, 125.0, 100_000.0, 100.0)


def test_step_sizes_perp_on_delta_and_puts_on_delta_at_lower() -> None:
    perp = HedgeProgram(POLICY, perp=PerpSpec())
    puts = HedgeProgram(POLICY, options=OptionSpec())
    e = exposure(RANGE, 130.0)  # above the range: no delta now
    _, r = program_step(perp, None, time=0, exposure=e, active={"L2"}, rv_short=0.6)
    assert r.target.share == 0.75
    assert r.perp_size == 0.0
    _, r = program_step(puts, None, time=0, exposure=e, active={"L2"}, rv_short=0.6)
    assert r.target_base == pytest.approx(0.75 * e.delta_at_lower)
    assert r.options.notional == pytest.approx(0.75 * e.delta_at_lower)
    assert r.options.holdings[0].strike == 80.0
    e = exposure(RANGE, 100.0)
    _, r = program_step(perp, None, time=0, exposure=e, active={"L1"}, rv_short=0.6)
    assert r.perp_size == pytest.approx(-0.5 * e.delta)
    payload = r.to_payload()
    assert json.loads(json.dumps(payload, allow_nan=False)) == payload
    assert payload["target"] == {
        "share": 0.5,
        "action": "hedge",
        "base": pytest.approx(0.5 * e.delta),
    }


def test_stablecoin_pool_is_told_to_exit_never_an_option() -> None:
    stable = HedgeProgram(POLICY, options=OptionSpec(), stable=True, stable_action="rotate")
    e = exposure(Position(0.99, 1.01, 10_000.0, 1.0), 1.0)
    _, r = program_step(stable, None, time=0, exposure=e, active={"L1"}, rv_short=0.003)
    assert (r.action, r.options.holdings, r.perp_size) == ("hold", (), 0.0)
    _, r = program_step(stable, None, time=0, exposure=e, active={"L2"}, rv_short=0.003)
    assert (r.action, r.options.holdings) == ("rotate", ())


def _bars(n: int = 600) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    times = np.arange(n, dtype=np.int64) * H
    prices = 100 * np.exp(np.cumsum(rng.normal(-0.001, 0.015, n)))
    l1 = np.zeros(n, dtype=bool)
    l1[100:140] = True
    l1[400:420] = True
    return times, prices, {"L1": l1}


@pytest.mark.parametrize("instrument", ["perp", "options"])
def test_run_over_bars_is_the_step_and_looks_nothing_ahead(instrument: str) -> None:
    times, prices, layers = _bars()
    program = (
        HedgeProgram(POLICY, perp=PerpSpec())
        if instrument == "perp"
        else HedgeProgram(POLICY, options=OptionSpec(cheap_ratio=1.1, cheap_share=0.25))
    )
    rv = realized_series(times, prices)
    funding = np.full(len(times), 1e-4)
    full = run_program(
        program,
        times,
        prices,
        exposure_series(RANGE, prices),
        layers,
        rv_short=rv,
        funding_rate=funding,
    )
    k = 300
    cut = run_program(
        program,
        times[:k],
        prices[:k],
        exposure_series(RANGE, prices[:k]),
        {"L1": layers["L1"][:k]},
        rv_short=rv[:k],
        funding_rate=funding[:k],
    )
    assert np.array_equal(full.hedge_pnl[:k], cut.hedge_pnl)
    assert np.array_equal(full.target_share[:k], cut.target_share)
    # step by step gives the same totals
    state = None
    for i in range(len(times)):
        state, result = program_step(
            program,
            state,
            time=int(times[i]),
            exposure=exposure(RANGE, float(prices[i])),
            active={"L1"} if layers["L1"][i] else set(),
            rv_short=float(rv[i]),
            funding_rate=1e-4,
        )
    assert result.totals.hedge_pnl == pytest.approx(full.hedge_pnl[-1])
    # the hedge is held after L1 resolves (hold_for 6h), then dropped
    assert full.target_share[140] == 0.5
    assert full.target_share[146] == 0.0
    assert math.isfinite(full.costs[-1])
    assert full.costs[-1] != 0


def test_a_falling_price_pays_the_hedge() -> None:
    n = 200
    times = np.arange(n, dtype=np.int64) * H
    prices = 100 * np.exp(np.linspace(0, math.log(0.6), n))
    on = {"L1": np.ones(n, dtype=bool)}
    for program in (
        HedgeProgram(POLICY, perp=PerpSpec()),
        HedgeProgram(POLICY, options=OptionSpec()),
    ):
        rv = np.full(n, 0.6)
        series = run_program(
            program, times, prices, exposure_series(RANGE, prices), on, rv_short=rv
        )
        assert series.hedge_pnl[-1] > 0
