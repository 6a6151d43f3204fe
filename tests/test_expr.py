"""Tests of rules.expr: evaluation tables (Kleene logic with NaN), reasons, errors with
columns, canonical text, and hypothesis fuzzing of the parser (random strings and random
syntax trees checked against a per-row reference evaluator written here)."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rules.expr import MAX_DEPTH, MAX_LENGTH, ExprError, Truth, parse
from rules.types import FEATURE_NAMES

NAN = math.nan
INF = math.inf
NAMES = ("a", "b", "c", "x", "rsi", "move_sigma", "macd_hist", "threshold_scale")


def features(**columns: list[float]) -> dict[str, np.ndarray]:
    size = len(next(iter(columns.values())))
    snapshot = {name: np.zeros(size) for name in NAMES}
    snapshot.update({name: np.asarray(v, dtype=np.float64) for name, v in columns.items()})
    return snapshot


# --------------------------------------------------------------------------- evaluation

# Kleene truth tables: row k has a = A[k], b = B[k]; "x < 1" is T for 0, F for 2, U for NaN.
A = [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, NAN, NAN, NAN]
B = [0.0, 2.0, NAN, 0.0, 2.0, NAN, 0.0, 2.0, NAN]
#             TT   TF   TU   FT   FF   FU   UT   UF   UU
KLEENE = [
    ("a < 1 and b < 1", "TFUFFFUFU"),
    ("a < 1 or b < 1", "TTTTFUTUU"),
    ("not a < 1", "FFFTTTUUU"),
    ("not (a < 1 and b < 1)", "FTUTTTUTU"),
    ("not a < 1 or not b < 1", "FTUTTTUTU"),  # De Morgan holds in Kleene logic
    ("a < 1 and not a < 1", "FFFFFFUUU"),  # no excluded middle: unknown stays unknown
    ("a < 1 or a >= 1", "TTTTTTUUU"),
]


def expect(truth: Truth, pattern: str) -> None:
    assert "".join(
        "T" if t else "F" if f else "U" for t, f in zip(truth.true, truth.false, strict=True)
    ) == (pattern)


@pytest.mark.parametrize(("text", "pattern"), KLEENE)
def test_kleene_logic(text: str, pattern: str) -> None:
    truth = parse(text, NAMES).truth(features(a=A, b=B))
    expect(truth, pattern)
    assert not (truth.true & truth.false).any()
    np.testing.assert_array_equal(truth.unknown, [p == "U" for p in pattern])


X = [-1.0, 0.0, 1.0, NAN, INF, -INF]
COMPARISONS = [
    # (text, pattern over X)
    ("x < 0", "TFFUFT"),
    ("x <= 0", "TTFUFT"),
    ("x > 0", "FFTUTF"),
    ("x >= 0", "FTTUTF"),
    ("x == 0", "FTFUFF"),
    ("x != 0", "TFTUTT"),  # NaN != 0 is unknown here, not true as in IEEE
    ("x == x", "TTTUTT"),
    ("x != x", "FFFUFF"),
    ("-1 <= x <= 1", "TTTUFF"),  # chained as in Python
    ("-1 < x < 1", "FTFUFF"),
    ("0 < x > -1", "FFTUTF"),
    ("1 < 2", "TTTTTT"),  # constant, broadcast to every pool
    ("1 > 2", "FFFFFF"),
]


@pytest.mark.parametrize(("text", "pattern"), COMPARISONS)
def test_comparisons(text: str, pattern: str) -> None:
    expect(parse(text, NAMES).truth(features(x=X)), pattern)


ARITHMETIC = [
    # (text, x, expected value)
    ("x + 1", [1.0, NAN, INF], [2.0, NAN, INF]),
    ("x - x", [1.0, NAN, INF], [0.0, NAN, NAN]),
    ("x * 0", [3.0, NAN, INF], [0.0, NAN, NAN]),
    ("1 / x", [2.0, 0.0, -0.0], [0.5, INF, -INF]),  # division by zero is +-inf ...
    ("x / 0", [1.0, -1.0, 0.0], [INF, -INF, NAN]),  # ... and 0 / 0 is NaN, no warning
    ("-x", [1.0, -2.0, NAN], [-1.0, 2.0, NAN]),
    ("--x", [1.0, -2.0, NAN], [1.0, -2.0, NAN]),
    ("+x", [1.0, -2.0, NAN], [1.0, -2.0, NAN]),
    ("abs(x)", [-1.5, 2.0, NAN], [1.5, 2.0, NAN]),
    ("min(x, 1)", [0.0, 5.0, NAN], [0.0, 1.0, NAN]),  # NaN propagates whatever its position
    ("min(1, x)", [0.0, 5.0, NAN], [0.0, 1.0, NAN]),
    ("max(x, 1, -x)", [0.0, -5.0, NAN], [1.0, 5.0, NAN]),
    ("2 * x + 1", [1.0, 2.0, 3.0], [3.0, 5.0, 7.0]),
    ("2 * (x + 1)", [1.0, 2.0, 3.0], [4.0, 6.0, 8.0]),
    ("x - 1 - 1", [1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]),  # left-associative
    ("x - (1 - 1)", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),
    ("8 / x / 2", [1.0, 2.0, 4.0], [4.0, 2.0, 1.0]),
    ("-x * 2", [1.0, 2.0, 3.0], [-2.0, -4.0, -6.0]),
    ("1e-3 * x", [1.0, 2.0, 3.0], [0.001, 0.002, 0.003]),
    (".5 + 1. + 2E1", [0.0, 0.0, 0.0], [21.5, 21.5, 21.5]),
    ("1e308 * 10 * x", [1.0, -1.0, 0.0], [INF, -INF, NAN]),  # overflow: inf, no warning
    ("3", [0.0, 1.0, 2.0], [3.0, 3.0, 3.0]),  # constant, broadcast
]


@pytest.mark.parametrize(("text", "x", "expected"), ARITHMETIC)
def test_arithmetic(text: str, x: list[float], expected: list[float]) -> None:
    value = parse(text, NAMES, boolean=False).value(features(x=x))
    assert value.dtype == np.float64
    np.testing.assert_array_equal(value, expected)


def test_nan_arithmetic_makes_comparisons_unknown() -> None:
    truth = parse("x / 0 > 1 and abs(x) * 0 < 1", NAMES).truth(features(x=[0.0, INF, 1.0]))
    expect(truth, "UUT")


def test_design_examples_evaluate() -> None:
    snapshot = features(
        move_sigma=[-2.31, 0.4, 1.2, NAN, 0.2],
        rsi=[50.0, 25.0, 50.0, 50.0, NAN],
        macd_hist=[-3.2, 1.0, -1.0, -1.0, 1.0],
        threshold_scale=[1.0, 1.0, 0.75, 1.0, 1.0],
    )
    l1 = parse("abs(move_sigma) >= 1 * threshold_scale or rsi < 30", FEATURE_NAMES)
    l2 = parse("abs(move_sigma) >= 2 * threshold_scale and macd_hist < 0", FEATURE_NAMES)
    clear = parse("abs(move_sigma) < 0.5", FEATURE_NAMES)
    expect(l1.truth(snapshot), "TTTUU")
    expect(l2.truth(snapshot), "TFFUF")
    expect(clear.truth(snapshot), "FTFUT")


def test_value_returns_a_copy_of_a_bare_feature() -> None:
    snapshot = features(x=[1.0, 2.0])
    value = parse("(x)", NAMES, boolean=False).value(snapshot)
    value[0] = 99.0
    assert snapshot["x"][0] == 1.0


def test_integer_feature_arrays_are_read_as_float() -> None:
    snapshot = {"x": np.array([1, 2, 3])}
    np.testing.assert_array_equal(
        parse("x / 2", ["x"], boolean=False).value(snapshot), [0.5, 1, 1.5]
    )


def test_snapshot_problems_are_reported() -> None:
    expr = parse("x < a", NAMES)
    with pytest.raises(KeyError, match="'a' is missing"):
        expr.truth({"x": np.zeros(2)})
    with pytest.raises(ValueError, match="rows"):
        expr.truth({"x": np.zeros(2), "a": np.zeros(3)})
    with pytest.raises(ValueError, match="1-D"):
        expr.truth({"x": np.zeros((2, 2)), "a": np.zeros(2)})
    with pytest.raises(ValueError, match="empty feature snapshot"):
        parse("1 < 2", NAMES).truth({})
    with pytest.raises(TypeError, match="use value"):
        parse("x", NAMES, boolean=False).truth({"x": np.zeros(2)})
    with pytest.raises(TypeError, match="use truth"):
        expr.value({"x": np.zeros(2), "a": np.zeros(2)})
    with pytest.raises(IndexError):
        expr.explain({"x": np.zeros(2), "a": np.zeros(2)}, 2)


def test_truth_validates_itself() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        Truth(np.zeros(2, dtype=bool), np.zeros(3, dtype=bool))
    with pytest.raises(ValueError, match="bool"):
        Truth(np.zeros(2), np.zeros(2, dtype=bool))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- reasons

EXPLAIN = [
    # (text, columns, row, reason)
    (
        "abs(move_sigma) >= 2 * threshold_scale and macd_hist < 0",
        {"move_sigma": [-2.3137], "macd_hist": [-3.2], "threshold_scale": [1.0]},
        0,
        "abs(move_sigma)=2.314 >= 2; macd_hist=-3.2 < 0",
    ),
    (
        "abs(move_sigma) >= 2 * threshold_scale and macd_hist < 0",
        {"move_sigma": [-1.6], "macd_hist": [-3.2], "threshold_scale": [0.75]},
        0,
        "abs(move_sigma)=1.6 >= 1.5; macd_hist=-3.2 < 0",
    ),
    (
        "move_sigma <= -2 and macd_hist < 0",
        {"move_sigma": [-2.31], "macd_hist": [-3.2]},
        0,
        "move_sigma=-2.31 <= -2; macd_hist=-3.2 < 0",
    ),
    # or: only the true branches; false: the deciding comparisons, operator negated
    ("rsi < 30 or macd_hist < 0", {"rsi": [25.0], "macd_hist": [1.0]}, 0, "rsi=25 < 30"),
    (
        "rsi < 30 or macd_hist < 0",
        {"rsi": [45.0], "macd_hist": [1.0]},
        0,
        "rsi=45 >= 30; macd_hist=1 >= 0",
    ),
    ("rsi < 30 and macd_hist < 0", {"rsi": [45.0], "macd_hist": [-1.0]}, 0, "rsi=45 >= 30"),
    ("not rsi < 30", {"rsi": [45.0]}, 0, "rsi=45 >= 30"),
    ("not rsi == 30", {"rsi": [45.0]}, 0, "rsi=45 != 30"),
    ("0 < rsi < 30", {"rsi": [25.0]}, 0, "0 < rsi=25 < 30"),
    ("0 < rsi < 30", {"rsi": [35.0]}, 0, "rsi=35 >= 30"),
    ("rsi < macd_hist", {"rsi": [1.0], "macd_hist": [2.0]}, 0, "rsi=1 < macd_hist=2"),
    ("x + 1 > 2 * a", {"x": [1234567.0], "a": [3.0]}, 0, "(x + 1)=1.235e+06 > (2 * a)=6"),
    ("-x > 0", {"x": [-0.000123456]}, 0, "(-x)=0.0001235 > 0"),
    ("x * 0 > -1", {"x": [5.0]}, 0, "(x * 0)=0 > -1"),  # "-0" is shown as 0
    # unknown: the comparisons with a NaN operand
    ("rsi < 30 or macd_hist < 0", {"rsi": [NAN], "macd_hist": [1.0]}, 0, "rsi=nan < 30 (unknown)"),
    ("x < 1", {"x": [5.0, INF]}, 1, "x=inf >= 1"),
    ("x < 1", {"x": [5.0, 0.5]}, -1, "x=0.5 < 1"),  # negative rows count from the end
    ("x < 1 or x < 1", {"x": [0.0]}, 0, "x=0 < 1"),  # repeated reasons are shown once
    ("1 < 2", {"x": [0.0]}, 0, "1 < 2"),
]


@pytest.mark.parametrize(("text", "columns", "row", "reason"), EXPLAIN)
def test_explain(text: str, columns: dict[str, list[float]], row: int, reason: str) -> None:
    assert parse(text, NAMES).explain(features(**columns), row) == reason


# --------------------------------------------------------------------------- errors

ERRORS = [
    # (text, column, message fragment)
    ("", 1, "empty expression"),
    ("   \t", 1, "empty expression"),
    ("rsii < 30", 1, "unknown name 'rsii' (did you mean 'rsi'?)"),
    ("rsi < 30 and movesigma > 1", 14, "did you mean 'move_sigma'?"),
    ("zzz > 1", 1, "unknown name 'zzz'"),
    ("AND", 1, "keywords and functions are lowercase: 'and'"),
    ("Abs(x) > 1", 1, "lowercase: 'abs'"),
    ("ab(x) > 1", 1, "did you mean 'abs'?"),
    ("(rsi < 30", 1, "unclosed '('"),
    ("((rsi < 30)", 1, "unclosed '('"),
    ("rsi < 30)", 9, "unmatched ')'"),
    ("(rsi < 30 x", 11, "expected ')' to close the '(' at column 1"),
    ("()", 2, "expected an operand before ')'"),
    ("abs(x, 1) > 1", 1, "abs() takes exactly 1 argument, got 2"),
    ("abs() > 1", 1, "abs() takes exactly 1 argument, got 0"),
    ("x > max(x)", 5, "max() needs at least 2 arguments, got 1"),
    ("min(x, a", 4, "unclosed '(' of min("),
    ("min(x a) > 1", 7, "expected ',' or ')' in min(...)"),
    ("abs > 1", 1, "'abs' is a function; call it as abs(...)"),
    ("rsi(1) > 1", 1, "'rsi' is a feature, not a function"),
    ("rsi", 1, "expected a condition"),
    ("abs(move_sigma) * 2", 1, "expected a condition"),
    ("7", 1, "expected a condition"),
    ("(rsi < 30) + 1", 1, "'+' needs a number, but 'rsi < 30' is a condition"),
    ("1 - (rsi < 30)", 5, "'-' needs a number"),
    ("-(rsi < 30) < 1", 2, "unary '-' needs a number"),
    ("abs(rsi < 30) > 1", 5, "abs() needs a number"),
    ("(x < 1) < 2", 1, "'<' needs a number"),
    ("x < (a < 1)", 5, "'<' needs a number"),
    ("rsi and x < 1", 1, "'and' needs a condition, but 'rsi' is a number"),
    ("x < 1 or 2", 10, "'or' needs a condition"),
    ("not x", 5, "'not' needs a condition"),
    ("x < ", 5, "got the end of the expression"),
    ("x < < 1", 5, "got '<'"),
    ("x < 1 a", 7, "expected an operator or the end of the expression, got 'a'"),
    ("x < 1 2", 7, "got number '2'"),
    ("x < and", 5, "got 'and'"),
    ("x = 1", 3, "unexpected character '='; use '==' to compare"),
    ("x < 1 && a < 1", 7, "use 'and'"),
    ("x < 1 || a < 1", 7, "use 'or'"),
    ("!(x < 1)", 1, "use 'not'"),
    ("x ** 2 > 1", 4, "expected a number"),
    ("x ^ 2 > 1", 3, "no power operator"),
    ("x < 'a'", 5, "the language has no strings"),
    ("x < 2x", 5, "invalid number '2x'"),
    ("x < 1.2.3", 5, "invalid number '1.2.3'"),
    ("x < 1e", 5, "exponent has no digits"),
    ("x < 1e+", 5, "exponent has no digits"),
    ("x < 1e999", 5, "number '1e999' is too large"),
    ("x < ٣", 5, "unexpected character '٣'"),  # only ASCII digits
    ("x < 1 ; a < 1", 7, "unexpected character ';'"),
    ("x.real < 1", 2, "unexpected character '.'"),
    ("x[0] < 1", 2, "unexpected character '['"),
    ("zzz < 1 $", 1, "unknown name 'zzz'"),  # errors are reported in text order
    ("x < 1 $ zzz", 7, "unexpected character '$'"),
    ("-" * (MAX_DEPTH + 1) + "x < 1", MAX_DEPTH + 1, f"nested deeper than {MAX_DEPTH} levels"),
    ("(" * (MAX_DEPTH + 1) + "x < 1" + ")" * (MAX_DEPTH + 1), MAX_DEPTH + 1, "nested deeper"),
    ("not " * (MAX_DEPTH + 1) + "x < 1", 4 * MAX_DEPTH + 1, "nested deeper"),
    ("x < " + "1" * (MAX_LENGTH - 3), MAX_LENGTH + 1, f"the limit is {MAX_LENGTH}"),
]


@pytest.mark.parametrize(("text", "column", "fragment"), ERRORS)
def test_errors_carry_column_and_message(text: str, column: int, fragment: str) -> None:
    with pytest.raises(ExprError) as caught:
        parse(text, NAMES)
    error = caught.value
    assert fragment in error.message
    assert error.column == column
    assert error.text == text
    assert str(error) == f"column {column}: {error.message}"
    assert isinstance(error, ValueError)


def test_numeric_mode_rejects_conditions() -> None:
    with pytest.raises(ExprError, match="column 1: expected a number, but 'x < 1' is a condition"):
        parse("x < 1", NAMES, boolean=False)


def test_limits_are_inclusive() -> None:
    assert parse("-" * MAX_DEPTH + "x < 1", NAMES).names == {"x"}
    assert len(parse("x < " + " " * (MAX_LENGTH - 5) + "1", NAMES).text) == MAX_LENGTH
    with pytest.raises(ExprError, match=r"number '1111111111111111111111\.\.\.' is too large"):
        parse("x < " + "1" * 400, NAMES)


@pytest.mark.parametrize("bad", ["and", "abs", "1x", "", "a-b", "ünï"])
def test_feature_names_must_be_identifiers(bad: str) -> None:
    with pytest.raises(ValueError, match="feature name"):
        parse("x < 1", ["x", bad])


# --------------------------------------------------------------------------- canonical text

CANONICAL = [
    ("x<1", "x < 1"),
    ("(x)<(1)", "x < 1"),
    ("x < 1.0", "x < 1"),
    ("x < 1e-3", "x < 0.001"),
    ("x < 1e-5", "x < 1e-05"),
    ("x < 1e20", "x < 1e+20"),
    ("x < 000.50", "x < 0.5"),
    ("((a < 1) or (b < 1)) and c < 1", "(a < 1 or b < 1) and c < 1"),
    ("a < 1 or (b < 1 and c < 1)", "a < 1 or b < 1 and c < 1"),
    ("not (a < 1)", "not a < 1"),
    ("not (a < 1 or b < 1)", "not (a < 1 or b < 1)"),
    ("a - (b - c) > 0", "a - (b - c) > 0"),
    ("(a - b) - c > 0", "a - b - c > 0"),
    ("a / (b * c) > 0", "a / (b * c) > 0"),
    ("(a + b) * c > 0", "(a + b) * c > 0"),
    ("-(a * b) > 0", "-(a * b) > 0"),
    ("(-a) * b > 0", "-a * b > 0"),
    ("- - a > +b", "--a > b"),
    ("min( a,b ,c)>max(a,1)", "min(a, b, c) > max(a, 1)"),
    ("0<x<=1", "0 < x <= 1"),
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_canonical_text(text: str, canonical: str) -> None:
    expr = parse(text, NAMES)
    assert str(expr) == canonical
    assert str(parse(canonical, NAMES)) == canonical
    assert expr.text == text


def test_expr_is_immutable_and_hashable() -> None:
    expr = parse("x < 1", NAMES)
    with pytest.raises(AttributeError):
        expr.text = "y"  # type: ignore[misc]
    assert expr == parse("(x) < 1.0", NAMES)
    assert hash(expr) == hash(parse("(x) < 1.0", NAMES))
    assert expr != parse("x <= 1", NAMES)
    assert parse("x < 1 and a > b", NAMES).names == frozenset({"x", "a", "b"})


# --------------------------------------------------------------------------- never executes


def test_parse_never_executes_anything(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    attacks = [
        f"__import__('os').system('touch {marker}')",
        f'__import__("os").system("touch {marker}") == 0',
        "open('/etc/passwd').read() > 0",
        "x.__class__ < 1",
        "(lambda: 1)() > 0",
        "[c for c in ().__class__.__bases__] > 0",
        "exec('1') > 0",
        "eval('1') > 0",
        "x if x else a",
        "x < 1; import os",
    ]
    for attack in attacks:
        with pytest.raises(ExprError):
            parse(attack, (*NAMES, "os", "system", "open", "read"))
    assert not marker.exists()


def test_module_has_no_dynamic_evaluation() -> None:
    """The module must not even reference eval/exec/compile/ast/getattr-style escapes."""
    import rules.expr

    source = Path(rules.expr.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    forbidden = {"eval", "exec", "compile", "literal_eval", "__import__", "getattr", "ast"}
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    used |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    imported |= {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not (used & forbidden)
    assert not (imported & {"ast", "builtins", "importlib", "os", "subprocess"})


# --------------------------------------------------------------------------- fuzzing

FUZZ_NAMES = (*FEATURE_NAMES, "a", "b", "x")
LANGUAGE_ALPHABET = list("abxrsimnotdc_0123456789.eE+-*/<>=!(), \t")
TOKENS = [
    "a", "b", "x", "rsi", "and", "or", "not", "abs", "min", "max", "(", ")", ",", "<", "<=",
    ">", ">=", "==", "!=", "+", "-", "*", "/", "0", "1", "2.5", "1e-3", "nope", "=", "!",
]  # fmt: skip


def check_parse_outcome(text: str, *, boolean: bool = True) -> None:
    error: ExprError | None
    try:
        expr = parse(text, FUZZ_NAMES, boolean=boolean)
    except ExprError as caught:
        error = caught
    else:
        error = None
    if error is not None:
        assert 1 <= error.column <= len(text) + 1
        assert error.message
        return
    canonical = str(expr)
    assert str(parse(canonical, FUZZ_NAMES, boolean=boolean)) == canonical
    snapshot = {name: np.array([0.0, NAN, -1.5, INF]) for name in FUZZ_NAMES}
    if boolean:
        truth = expr.truth(snapshot)
        assert not (truth.true & truth.false).any()
        for row in range(4):
            expr.explain(snapshot, row)
    else:
        assert expr.value(snapshot).shape == (4,)


@given(st.text(alphabet=LANGUAGE_ALPHABET, max_size=60), st.booleans())
@settings(max_examples=600)
def test_fuzz_language_alphabet(text: str, boolean: bool) -> None:
    check_parse_outcome(text, boolean=boolean)


@given(st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join), st.booleans())
@settings(max_examples=600)
def test_fuzz_token_soup(text: str, boolean: bool) -> None:
    check_parse_outcome(text, boolean=boolean)


@given(st.text(max_size=80))
@settings(max_examples=300)
def test_fuzz_arbitrary_unicode(text: str) -> None:
    check_parse_outcome(text)


@given(st.text(alphabet="()-+ x<1notabs,", min_size=900, max_size=1100))
@settings(max_examples=50)
def test_fuzz_long_and_deep(text: str) -> None:
    check_parse_outcome(text)


# Random syntax trees, rendered fully parenthesised, evaluated by a per-row reference.
# Numeric trees: ("num", v) ("name", n) ("neg", t) ("bin", op, l, r) ("call", f, args)
# Conditions: ("cmp", operands, ops) ("and"/"or", children) ("not", c)
Tree = tuple[Any, ...]
LEAF_NAMES = ("a", "b", "x")


def literal(value: float, style: int) -> str:
    if style == 0:
        return repr(value)
    if style == 1:
        return f"{value:e}"
    return str(int(value)) if value.is_integer() and value < 1e15 else f"{value:.17g}"


numbers = st.builds(
    lambda v, s: ("num", float(literal(v, s)), literal(v, s)),
    st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 1e-3, 1e300, 123456789.0, 2.5e-8]),
    st.integers(0, 2),
)
numeric_trees: st.SearchStrategy[Tree] = st.recursive(
    st.one_of(numbers, st.sampled_from(LEAF_NAMES).map(lambda n: ("name", n))),
    lambda inner: st.one_of(
        inner.map(lambda t: ("neg", t)),
        st.tuples(st.just("bin"), st.sampled_from("+-*/"), inner, inner),
        st.tuples(st.just("call"), st.just("abs"), st.tuples(inner)),
        st.tuples(
            st.just("call"),
            st.sampled_from(["min", "max"]),
            st.lists(inner, min_size=2, max_size=3).map(tuple),
        ),
    ),
    max_leaves=12,
)
comparisons = st.integers(1, 3).flatmap(
    lambda n: st.tuples(
        st.just("cmp"),
        st.lists(numeric_trees, min_size=n + 1, max_size=n + 1).map(tuple),
        st.lists(st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), min_size=n, max_size=n).map(
            tuple
        ),
    )
)
condition_trees: st.SearchStrategy[Tree] = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        inner.map(lambda t: ("not", t)),
        st.tuples(
            st.sampled_from(["and", "or"]), st.lists(inner, min_size=2, max_size=3).map(tuple)
        ),
    ),
    max_leaves=6,
)


def render(tree: Tree) -> str:
    kind = tree[0]
    if kind == "num":
        return str(tree[2])
    if kind == "name":
        return str(tree[1])
    if kind == "neg":
        return f"(-{render(tree[1])})"
    if kind == "bin":
        return f"({render(tree[2])} {tree[1]} {render(tree[3])})"
    if kind == "call":
        return f"{tree[1]}({', '.join(render(arg) for arg in tree[2])})"
    if kind == "cmp":
        parts = [f"({render(tree[1][0])})"]
        for op, operand in zip(tree[2], tree[1][1:], strict=True):
            parts.append(f"{op} ({render(operand)})")
        return " ".join(parts)
    if kind == "not":
        return f"(not {render(tree[1])})"
    return "(" + f" {kind} ".join(render(child) for child in tree[1]) + ")"


def nesting(tree: Tree) -> int:
    """An upper bound of the parser's nesting depth for render(tree)."""
    children: list[Tree] = []
    if tree[0] in ("neg", "not"):
        children = [tree[1]]
    elif tree[0] == "bin":
        children = [tree[2], tree[3]]
    elif tree[0] == "call":
        children = list(tree[2])
    elif tree[0] in ("cmp", "and", "or"):
        children = list(tree[1])
    return 2 + max((nesting(c) for c in children), default=0)


def tree_names(tree: Tree) -> set[str]:
    if tree[0] == "name":
        return {tree[1]}
    found: set[str] = set()
    for part in tree[1:]:
        if isinstance(part, tuple) and part and isinstance(part[0], str):
            found |= tree_names(part)
        elif isinstance(part, tuple):
            for child in part:
                if isinstance(child, tuple):
                    found |= tree_names(child)
    return found


def ref_divide(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or math.isnan(a):
            return NAN
        return math.copysign(INF, a) * math.copysign(1.0, b)
    return a / b


REF_ARITH: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": ref_divide,
}


def ref_number(tree: Tree, row: dict[str, float]) -> float:
    kind = tree[0]
    if kind == "num":
        return float(tree[1])
    if kind == "name":
        return row[tree[1]]
    if kind == "neg":
        return -ref_number(tree[1], row)
    if kind == "bin":
        return REF_ARITH[tree[1]](ref_number(tree[2], row), ref_number(tree[3], row))
    values = [ref_number(arg, row) for arg in tree[2]]
    if tree[1] == "abs":
        return abs(values[0])
    if any(math.isnan(v) for v in values):
        return NAN
    result = values[0]
    for v in values[1:]:
        # On a tie (0.0 vs -0.0) numpy's minimum/maximum keep the later operand.
        keep = result < v if tree[1] == "min" else result > v
        result = result if keep else v
    return result


REF_CMP: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


def ref_truth(tree: Tree, row: dict[str, float]) -> bool | None:
    """Kleene truth for one row: True, False or None (unknown)."""
    kind = tree[0]
    if kind == "cmp":
        values = [ref_number(operand, row) for operand in tree[1]]
        pairs: list[bool | None] = [
            None if math.isnan(left) or math.isnan(right) else REF_CMP[op](left, right)
            for op, left, right in zip(tree[2], values[:-1], values[1:], strict=True)
        ]
        return ref_and(pairs)
    if kind == "not":
        inner = ref_truth(tree[1], row)
        return None if inner is None else not inner
    results = [ref_truth(child, row) for child in tree[1]]
    return ref_and(results) if kind == "and" else ref_or(results)


def ref_and(values: list[bool | None]) -> bool | None:
    if any(v is False for v in values):
        return False
    return True if all(v is True for v in values) else None


def ref_or(values: list[bool | None]) -> bool | None:
    if any(v is True for v in values):
        return True
    return False if all(v is False for v in values) else None


row_values = st.sampled_from([0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 3.0, 1e300, -1e300, NAN, INF, -INF])
rows = st.lists(
    st.fixed_dictionaries(dict.fromkeys(LEAF_NAMES, row_values)), min_size=1, max_size=6
)


def snapshot_of(table: list[dict[str, float]]) -> dict[str, np.ndarray]:
    return {n: np.array([r[n] for r in table], dtype=np.float64) for n in LEAF_NAMES}


@given(condition_trees, rows)
@settings(max_examples=400)
def test_random_conditions_match_reference(tree: Tree, table: list[dict[str, float]]) -> None:
    assume(nesting(tree) <= MAX_DEPTH)
    text = render(tree)
    assume(len(text) <= MAX_LENGTH)
    expr = parse(text, LEAF_NAMES)
    canonical = str(expr)
    again = parse(canonical, LEAF_NAMES)
    assert str(again) == canonical  # canonical text is a fixed point
    expected = [ref_truth(tree, row) for row in table]
    for candidate in (expr, again):
        truth = candidate.truth(snapshot_of(table))
        assert truth.true.tolist() == [v is True for v in expected]
        assert truth.false.tolist() == [v is False for v in expected]
    for i in range(len(table)):
        expr.explain(snapshot_of(table), i)


@given(numeric_trees, rows)
@settings(max_examples=400)
def test_random_numbers_match_reference(tree: Tree, table: list[dict[str, float]]) -> None:
    assume(nesting(tree) <= MAX_DEPTH)
    text = render(tree)
    assume(len(text) <= MAX_LENGTH)
    expr = parse(text, LEAF_NAMES, boolean=False)
    canonical = str(expr)
    again = parse(canonical, LEAF_NAMES, boolean=False)
    assert str(again) == canonical
    expected = np.array([ref_number(tree, row) for row in table], dtype=np.float64)
    np.testing.assert_array_equal(expr.value(snapshot_of(table)), expected)
    np.testing.assert_array_equal(again.value(snapshot_of(table)), expected)
    assert expr.names == tree_names(tree)


def test_every_feature_name_is_usable() -> None:
    text = " and ".join(f"{name} >= 0" for name in FEATURE_NAMES)
    assert parse(text, FEATURE_NAMES).names == frozenset(FEATURE_NAMES)


def test_parse_accepts_any_collection_of_names() -> None:
    for names in (["x"], ("x",), {"x"}, frozenset({"x"}), {"x": 1}.keys()):
        expr = parse("x < 1", names)
        assert expr.names == frozenset({"x"})
        expect(expr.truth({"x": np.array([0.0, 2.0])}), "TF")
        with pytest.raises(ExprError, match="unknown"):  # still checked against the names
            parse("y < 1", names)


@given(
    condition_trees,
    st.lists(
        st.tuples(
            st.integers(0, 10**6),
            st.sampled_from(
                [*LANGUAGE_ALPHABET, "", "", "", "(", ")", " and ", " or ", "not ", "abs(", ","]
            ),
        ),
        min_size=1,
        max_size=3,
    ),
)
@settings(max_examples=400)
def test_fuzz_mutated_valid_expressions(tree: Tree, edits: list[tuple[int, str]]) -> None:
    """Near-valid texts (a valid rule with a few characters replaced, dropped or added)
    reach the parser's deeper error paths; still only an Expr or an ExprError."""
    text = render(tree)
    for position, replacement in edits:
        at = position % (len(text) + 1)
        text = text[:at] + replacement + text[at + 1 :]
    check_parse_outcome(text)


def test_expr_error_survives_pickling() -> None:
    import pickle

    with pytest.raises(ExprError) as caught:
        parse("rsii < 1", NAMES)
    again = pickle.loads(pickle.dumps(caught.value))
    assert (again.message, again.column, again.text) == (
        "unknown name 'rsii' (did you mean 'rsi'?)",
        1,
        "rsii < 1",
    )
    assert str(again) == str(caught.value)
