"""The fast paths give the results of the code they replaced, bit for bit (but one).

- ``rules.hedge.lp.Position``'s price methods and ``rules.expr.Expr.explain`` evaluate one
  value in plain Python floats (``math.sqrt`` and Python arithmetic) instead of numpy
  scalars. IEEE 754 rounds every one of those
  operations the same way, so the results must be identical, not close: each property
  compares against the old numpy code, kept below as the reference (``old_*``), with
  ``==`` on the bits.
- ``rules.hedge.lp.break_even`` solves its roots in closed form and walks to the float where
  its float test flips: the bisection's answer, or (where that test is noisy) another
  flip a few ulps away; both are checked against the test itself.
- ``Pipeline.step_many`` checks the sample values of its whole table once (its steps then
  skip the per-step check): a bad value is refused before any step.
- A large backtest draws its charts in a second process while it writes its JSON files:
  the files are the ones drawn in-process, byte for byte.
"""

from __future__ import annotations

import math
import pickle
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from adapters.replay import load
from daemon.backtest import run as backtest
from daemon.backtest.chart import render_jobs
from daemon.backtest.run import (
    BacktestOptions,
    ChartDrawing,
    chart_jobs,
    load_backtest_config,
    run_backtest,
    write_outputs,
)
from rules import expr as expr_module
from rules.expr import MAX_DEPTH, MAX_LENGTH, Expr, parse, truths
from rules.features.engine import FeatureParams
from rules.hedge import lp as lp_module
from rules.hedge.advice import FALLBACK_VOLATILITY, choose_volatility
from rules.hedge.lp import Position
from rules.layers.engine import LayerSpec
from rules.pipeline import Pipeline, PipelineSpec, PoolInfo
from rules.types import FEATURE_NAMES, PoolId
from rules.uniswap import amounts_from_liquidity
from tests.test_expr import LEAF_NAMES, Tree, condition_trees, nesting, render, rows, snapshot_of

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "alvh.toml"


def bits(value: float) -> bytes:
    """The float's 8 bytes: tells 0.0 from -0.0 and compares NaN payloads too."""
    return struct.pack("<d", float(value))


# --------------------------------------------------------------------------- positions

# Reference: the numpy forms as they were before the plain-float paths.


def old_prices(price: float) -> np.ndarray:
    prices = np.asarray(price, dtype=np.float64)
    if not np.all(np.isfinite(prices) & (prices > 0)):
        raise ValueError("prices must be positive and finite")
    return prices


def old_entry_amounts(position: Position) -> tuple[float, float]:
    base, quote = amounts_from_liquidity(
        position.liquidity,
        np.asarray(position.entry_price),
        position.sqrt_lower,
        position.sqrt_upper,
    )
    return float(base), float(quote)


def old_liquidity(lower: float | None, upper: float | None, value: float, entry: float) -> float:
    sqrt_lower = math.sqrt(0.0 if lower is None else lower)
    sqrt_upper = math.sqrt(math.inf if upper is None else upper)
    base, quote = amounts_from_liquidity(1.0, np.asarray(entry), sqrt_lower, sqrt_upper)
    return value / float(base * entry + quote)


def old_loss_vs_hold(position: Position, price: float) -> float:
    prices = old_prices(price)
    sqrt_price = np.sqrt(prices)
    s = np.clip(sqrt_price, position.sqrt_lower, position.sqrt_upper)
    s0 = min(max(math.sqrt(position.entry_price), position.sqrt_lower), position.sqrt_upper)
    loss = (
        position.liquidity
        * (s - s0)
        * (s * (s0 - sqrt_price) + sqrt_price * (s - sqrt_price))
        / (s * s0)
    )
    return float(loss)


def old_break_even(position: Position, fees: float) -> tuple[float, float]:
    entry = position.entry_price

    def covered(price: float) -> bool:
        return old_loss_vs_hold(position, price) + fees >= 0

    _, quote0 = old_entry_amounts(position)
    lo = 0.0 if fees >= quote0 else old_bisect_bracket(covered, entry, step=0.5)
    hi = old_bisect_bracket(covered, entry, step=2.0)
    return lo, hi


def old_bisect_bracket(covered: Callable[[float], bool], entry: float, *, step: float) -> float:
    inner = entry
    outer = entry
    for _ in range(2200):
        candidate = outer * step
        if candidate == 0:
            return 0.0
        if math.isinf(candidate):
            return math.inf
        if not covered(candidate):
            outer = candidate
            break
        inner = candidate
        outer = candidate
    else:
        return 0.0 if step < 1 else math.inf
    for _ in range(200):
        middle = 0.5 * (inner + outer)
        if middle in (inner, outer):
            break
        if covered(middle):
            inner = middle
        else:
            outer = middle
    return inner


magnitudes = st.floats(min_value=1e-12, max_value=1e12, allow_nan=False, allow_infinity=False)
# Every float in a wide band, and the extremes that make the fast path step aside.
prices = st.one_of(
    magnitudes,
    st.floats(min_value=5e-324, max_value=1.7e308, allow_nan=False, allow_infinity=False),
    st.sampled_from([5e-324, 1e-300, 1e300, 1.7976931348623157e308]),
)


@st.composite
def positions(draw: st.DrawFn) -> Position:
    value = draw(st.floats(min_value=1e-6, max_value=1e12))
    if draw(st.booleans()):
        entry = draw(magnitudes)
        return Position.full_range(value, entry)
    lower = draw(magnitudes)
    width = draw(st.floats(min_value=1e-6, max_value=1e6))
    upper = lower * (1.0 + width)
    assume(math.sqrt(lower) < math.sqrt(upper))
    # Entry below, inside or above the range.
    entry = lower * draw(st.floats(min_value=0.01, max_value=(1.0 + width) * 100.0))
    return Position(lower, upper, value, entry)


@given(positions())
@settings(max_examples=300)
def test_derived_constants_match_the_numpy_forms(position: Position) -> None:
    assert bits(position.liquidity) == bits(
        old_liquidity(position.lower, position.upper, position.value, position.entry_price)
    )
    base, quote = position.entry_amounts
    old_base, old_quote = old_entry_amounts(position)
    assert (bits(base), bits(quote)) == (bits(old_base), bits(old_quote))


SCALAR_METHODS = (
    "value_at",
    "hold_value",
    "loss_vs_hold",
    "impermanent_loss",
    "delta",
    "gamma",
)


@given(positions(), prices)
@settings(max_examples=500)
def test_price_methods_on_a_float_equal_the_numpy_path(position: Position, price: float) -> None:
    # A 0-d array takes the numpy path (the code from before); a float the plain one.
    with np.errstate(all="ignore"):
        for name in SCALAR_METHODS:
            method = getattr(position, name)
            fast, slow = method(price), method(np.asarray(price))
            assert type(fast) is float, name
            assert bits(fast) == bits(slow), name
        zero_d: Any = np.asarray(price)  # a 0-d array: the numpy path, float results
        assert position.in_range(price) is position.in_range(zero_d)
        fast_amounts = position.amounts(price)
        slow_amounts = position.amounts(zero_d)
        assert [bits(v) for v in fast_amounts] == [bits(v) for v in slow_amounts]
        assert bits(position.loss_vs_hold(price)) == bits(old_loss_vs_hold(position, price))


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_float_path_rejects_what_the_numpy_path_rejects(bad: float) -> None:
    position = Position(1800.0, 2600.0, 250_000.0, 2000.0)
    for name in (*SCALAR_METHODS, "in_range", "amounts"):
        with pytest.raises(ValueError, match="positive and finite"):
            getattr(position, name)(bad)


def test_float_path_needs_the_entry_price_like_the_numpy_path() -> None:
    position = Position(1800.0, 2600.0, 250_000.0)
    for name in ("value_at", "hold_value", "loss_vs_hold", "impermanent_loss", "delta", "gamma"):
        with pytest.raises(ValueError, match="entry_price is unknown"):
            getattr(position, name)(2000.0)
    with pytest.raises(ValueError, match="entry_price is unknown"):
        _ = position.entry_amounts
    assert position.in_range(2000.0) is True


def test_overflow_still_warns_like_the_numpy_path() -> None:
    # The plain path steps aside when a result overflows, so numpy's warning is kept.
    position = Position.full_range(1e300, 1.0)
    for name in ("value_at", "hold_value", "loss_vs_hold", "impermanent_loss"):
        with pytest.raises(RuntimeWarning, match="overflow"):
            getattr(position, name)(1e20)


fees = st.one_of(
    st.just(0.0),
    st.floats(min_value=0.0, max_value=1e12, allow_nan=False, allow_infinity=False),
    st.floats(min_value=1e-300, max_value=1e-3),
)


@given(positions(), fees)
@settings(max_examples=500, deadline=None)
def test_break_even_is_where_the_float_test_changes_and_agrees_with_bisection(
    position: Position, fee_total: float
) -> None:
    """The closed form + float walk lands where ``loss_vs_hold + fees >= 0`` flips
    between adjacent floats, as the bisection does. Near a root whose float test is
    noisy (fees a large part of the value: cancellation) the two may settle on
    different flips a few ulps apart (about 0.5 % of random cases), both valid."""
    with np.errstate(all="ignore"):
        expected = old_break_even(position, fee_total)
        lo, hi = position.break_even(fee_total)

        def covered(price: float) -> bool:
            return bool(old_loss_vs_hold(position, price) + fee_total >= 0)

        if lo > 0:
            assert covered(lo)
            assert not covered(math.nextafter(lo, 0.0))
        if hi < math.inf:
            assert covered(hi)
            assert not covered(math.nextafter(hi, math.inf))
    assert lo <= position.entry_price <= hi or fee_total == 0
    assert lo == pytest.approx(expected[0], rel=1e-12, abs=0)
    if math.isinf(expected[1]):
        assert math.isinf(hi)
    else:
        assert hi == pytest.approx(expected[1], rel=1e-12, abs=0)


@pytest.mark.parametrize(
    ("position", "fee_total"),
    [
        (Position.full_range(10_000.0, 300.0), 0.0),
        (Position.full_range(10_000.0, 300.0), 12.3),
        (Position.full_range(1.0, 1234.5), 0.001),
        (Position(1800.0, 2600.0, 250_000.0, 2000.0), 500.0),
        (Position(1800.0, 2600.0, 250_000.0, 1000.0), 10.0),  # entered below the range
        (Position(1800.0, 2600.0, 250_000.0, 3000.0), 10.0),  # entered above: hi is inf
        (Position(1800.0, 2600.0, 250_000.0, 2000.0), 1e9),  # fees beyond any loss
    ],
)
def test_break_even_examples_equal_the_numpy_bisection(
    position: Position, fee_total: float
) -> None:
    assert position.break_even(fee_total) == old_break_even(position, fee_total)


@given(positions(), fees)
@settings(max_examples=200, deadline=None)
def test_break_even_fallback_is_the_numpy_bisection(position: Position, fee_total: float) -> None:
    """With no float walk allowed, every bound comes from the fallback bisection:
    bit for bit the old one."""
    steps = lp_module._POLISH_STEPS
    lp_module._POLISH_STEPS = 0
    try:
        with np.errstate(all="ignore"):
            got = position.break_even(fee_total)
            expected = old_break_even(position, fee_total)
    finally:
        lp_module._POLISH_STEPS = steps
    assert (bits(got[0]), bits(got[1])) == (bits(expected[0]), bits(expected[1]))


# --------------------------------------------------------------------------- reasons

# Reference: Expr.explain as it was, on numpy scalars through the nodes' numpy methods.


def old_state(true: Any, false: Any) -> str:
    if bool(np.asarray(true).reshape(-1)[0]):
        return "true"
    if bool(np.asarray(false).reshape(-1)[0]):
        return "false"
    return "unknown"


def old_operand_text(node: Any, value: float) -> str:
    if isinstance(node, expr_module._Number):
        return node.render()
    if node.feature_names() <= {"threshold_scale"}:
        return expr_module._fmt(value)
    label = node.render()
    if not isinstance(node, expr_module._Feature | expr_module._Call):
        label = f"({label})"
    return f"{label}={expr_module._fmt(value)}"


def old_reasons(node: Any, env: dict[str, Any], want: str, out: list[str]) -> None:
    if isinstance(node, expr_module._Not):
        flipped = {"true": "false", "false": "true", "unknown": "unknown"}
        old_reasons(node.operand, env, flipped[want], out)
        return
    if isinstance(node, expr_module._Logic):
        all_decide = (node.op == "and") == (want == "true") and want != "unknown"
        for operand in node.operands:
            if all_decide or old_state(*operand.truth(env)) == want:
                old_reasons(operand, env, want, out)
        return
    values = [float(np.asarray(operand.num(env)).reshape(-1)[0]) for operand in node.operands]
    texts = [old_operand_text(o, v) for o, v in zip(node.operands, values, strict=True)]
    pairs = []
    for k, op in enumerate(node.ops):
        left: Any = np.float64(values[k])
        right: Any = np.float64(values[k + 1])
        is_true, is_false = expr_module._pair_truth(op, left, right)
        pairs.append((bool(is_true), bool(is_false)))
    if want == "true":
        parts = [texts[0]]
        for op, text in zip(node.ops, texts[1:], strict=True):
            parts.append(f"{op} {text}")
        out.append(" ".join(parts))
        return
    for k, (op, (holds, fails)) in enumerate(zip(node.ops, pairs, strict=True)):
        if want == "false" and fails:
            out.append(f"{texts[k]} {expr_module._NEGATED[op]} {texts[k + 1]}")
        elif want == "unknown" and not holds and not fails:
            out.append(f"{texts[k]} {op} {texts[k + 1]} (unknown)")


def old_explain(expr: Expr, features: dict[str, np.ndarray], i: int) -> str:
    row_env = {name: np.asarray(features[name], dtype=np.float64)[i] for name in expr.names}
    out: list[str] = []
    with np.errstate(all="ignore"):
        want = old_state(*expr._root.truth(row_env))
        old_reasons(expr._root, row_env, want, out)
    return "; ".join(dict.fromkeys(out))


@given(condition_trees, rows)
@settings(max_examples=500)
def test_explain_equals_the_numpy_scalar_reasons(tree: Tree, table: list[dict[str, float]]) -> None:
    assume(nesting(tree) <= MAX_DEPTH)
    text = render(tree)
    assume(len(text) <= MAX_LENGTH)
    expr = parse(text, LEAF_NAMES)
    snapshot = snapshot_of(table)
    for i in range(len(table)):
        assert expr.explain(snapshot, i) == old_explain(expr, snapshot, i)


@pytest.mark.parametrize(
    "text",
    [
        "abs(move_sigma) >= 1 * threshold_scale or rsi < 30",
        "abs(move_sigma) >= 2 * threshold_scale and macd_hist < 0",
        "not (rsi > 70 or rsi < 30)",
        "1 / a < b <= min(a, b, -0.0) / 0",
        "max(a, -a) == abs(a) != b",
    ],
)
def test_explain_examples_equal_the_numpy_scalar_reasons(text: str) -> None:
    names = ("a", "b", "rsi", "move_sigma", "macd_hist", "threshold_scale")
    expr = parse(text, names)
    column = [0.0, -0.0, 1.0, -2.5, 31.0, 29.0, math.nan, math.inf, -math.inf, 1e300]
    snapshot = {
        name: np.array(column[k:] + column[:k], dtype=np.float64) for k, name in enumerate(names)
    }
    for i in range(len(column)):
        assert expr.explain(snapshot, i) == old_explain(expr, snapshot, i)


def test_truths_equal_truth_one_by_one() -> None:
    names = ("a", "b", "threshold_scale")
    conditions = [parse(t, names) for t in ("a < b", "1 / a >= b * threshold_scale", "a == a")]
    column = np.array([0.0, -0.0, 1.0, math.nan, math.inf, -2.0])
    snapshot = {"a": column, "b": column[::-1].copy(), "threshold_scale": np.ones(6)}
    for together, alone in zip(
        truths(conditions, snapshot), [c.truth(snapshot) for c in conditions], strict=True
    ):
        assert together.true.tolist() == alone.true.tolist()
        assert together.false.tolist() == alone.false.tolist()


# --------------------------------------------------------------------------- batches


def test_step_many_refuses_a_bad_sample_before_any_step() -> None:
    spec = PipelineSpec(
        features=FeatureParams(bar_interval=60, sigma_window=4, realized_vol_window=4),
        layers=(LayerSpec(name="L1", level=1, when=parse("rsi < 30", FEATURE_NAMES)),),
    )
    pools = [PoolInfo(PoolId("chain", "0x" + f"{k + 1:02x}" * 20), 1, f"P{k}") for k in range(2)]
    pipeline = Pipeline(spec, pools)
    before = pipeline.get_state()
    times = np.array([60, 120, 180], dtype=np.int64)
    price = np.full((3, 2), 100.0)
    price[2, 1] = -1.0  # the last step's second pool
    ints = np.zeros((3, 2), dtype=np.int64)
    nan = np.full((3, 2), math.nan)
    with pytest.raises(ValueError, match="step_many: price must be positive and finite"):
        pipeline.step_many(times, price, nan, nan, np.zeros((3, 2)), ints, ints)
    after = pipeline.get_state()
    assert pickle.dumps(after) == pickle.dumps(before)  # nothing was stepped
    # A cell that is not present is not a sample: it is not checked.
    present = np.ones((3, 2), dtype=np.bool_)
    present[2, 1] = False
    pipeline.step_many(times, price, nan, nan, np.zeros((3, 2)), ints, ints, present=present)


def test_charts_drawn_in_a_second_process_are_the_same_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hours = np.arange(1, 400)
    price = 1500.0 * np.exp(np.cumsum(np.sin(hours / 7.0) * 0.02))
    data = tmp_path / "pool.csv"
    data.write_text(
        "time,price,volume\n"
        + "".join(f"{3600 * h},{p:.6f},{1000 + h}\n" for h, p in zip(hours, price, strict=True))
    )
    config = load_backtest_config(EXAMPLE, interval="1h")
    run = run_backtest(config, load([str(data)]), BacktestOptions())
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    render_jobs(chart_jobs(run, here))
    monkeypatch.setattr(backtest, "PARALLEL_CHART_ROWS", 1)
    with ChartDrawing(chart_jobs(run, there)) as drawing:
        drawing.wait()
    assert drawing.worker_exit == 0  # drawn by `python -m daemon.backtest.chart`, not here
    assert not list(Path(tempfile.gettempdir()).glob("alvh-charts-*"))  # job file removed
    assert sorted(p.name for p in here.iterdir()) == sorted(p.name for p in there.iterdir())
    assert (here / "chart.png").read_bytes() == (there / "chart.png").read_bytes()
    # write_outputs with its charts drawn in the second process: the same report.html.
    write_outputs(run, there, [str(data)], chart=True)
    monkeypatch.setattr(backtest, "PARALLEL_CHART_ROWS", 10**9)
    write_outputs(run, here, [str(data)], chart=True)
    for name in ("report.html", "report.json", "alerts.jsonl", "chart.png"):
        assert (here / name).read_bytes() == (there / name).read_bytes(), name


def old_choose_volatility(realized_vol: float, iv: float) -> tuple[float, str]:
    candidates = [
        (value, source)
        for value, source in ((realized_vol, "realized_vol"), (iv, "iv"))
        if math.isfinite(value) and value > 0
    ]
    if not candidates:
        return FALLBACK_VOLATILITY, "fallback"
    best = max(value for value, _ in candidates)
    return next((value, source) for value, source in candidates if value == best)


volatilities = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 0.5, 0.8])
)


@given(volatilities, volatilities)
def test_choose_volatility_equals_the_old_choice(realized_vol: float, iv: float) -> None:
    value, source = choose_volatility(realized_vol, iv)
    old_value, old_source = old_choose_volatility(realized_vol, iv)
    assert (bits(value), source) == (bits(old_value), old_source)
