"""The safe rule language of layer conditions (``when``, ``clear_when``), parsed once at load.

Guarantees kept here:

- user text is only ever *tokenized and parsed* by the hand-written scanner and
  recursive-descent parser below; nothing is passed to ``eval``/``exec``/``compile``
  or Python's ``ast``, so a rule can do nothing but arithmetic and comparisons on
  the feature arrays it names;
- every identifier is checked against the known feature names at parse time, and every
  problem (unknown name, bad syntax, unbalanced parentheses, wrong arity, a number where
  a condition is needed or the reverse, too long, too deep) is an :class:`ExprError` that
  carries a 1-based column; no other exception escapes :func:`parse` for any ``str``;
- evaluation is vectorised over all pools at once (one numpy operation per node, no
  per-row Python) and never warns: arithmetic follows IEEE 754 (NaN in, NaN out;
  ``x / 0`` is ``+inf``/``-inf``, ``0 / 0`` is NaN; ``min``/``max`` propagate NaN);
  :func:`truths` evaluates several conditions under one switch of numpy's error state;
- reasons (:meth:`Expr.explain`) evaluate their one row in plain Python floats with
  the same IEEE 754 results (division by zero and ``min``/``max`` done as numpy does),
  and the operand labels are rendered once per comparison, when it is built;
- conditions use Kleene's three-valued logic: a comparison with a NaN operand is
  *unknown* (neither true nor false), ``and``/``or``/``not`` follow Kleene. So missing
  data never fires a rule (``Truth.true`` is false) and never clears one
  (``Truth.false`` is false either);
- an :class:`Expr` is immutable and keeps no evaluation results.

Grammar (lowest precedence first; ``a < b < c`` chains as in Python, meaning
``a < b and b < c`` with ``b`` evaluated once)::

    or_expr   := and_expr ("or" and_expr)*
    and_expr  := not_expr ("and" not_expr)*
    not_expr  := "not" not_expr | compare
    compare   := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)*
    sum       := term (("+" | "-") term)*
    term      := unary (("*" | "/") unary)*
    unary     := ("-" | "+") unary | atom
    atom      := NUMBER | FEATURE | ("abs" | "min" | "max") "(" args ")" | "(" or_expr ")"
"""

from __future__ import annotations

import difflib
import functools
import math
import operator
import string
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "FUNCTIONS",
    "KEYWORDS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "Expr",
    "ExprError",
    "Truth",
    "parse",
    "truths",
]

FloatArray: TypeAlias = NDArray[np.float64]
BoolArray: TypeAlias = NDArray[np.bool_]
_Env: TypeAlias = Mapping[str, FloatArray]

#: Longest accepted rule text, in characters: rules are one-liners in a TOML file.
MAX_LENGTH = 1000
#: Deepest accepted nesting of parentheses, calls, unary minus and ``not`` together;
#: it bounds the parser's and the evaluator's recursion far below Python's limit.
MAX_DEPTH = 50
KEYWORDS = frozenset({"and", "or", "not"})
FUNCTIONS = frozenset({"abs", "min", "max"})
#: In reasons, an operand built only from constants and this feature is a threshold
#: and is shown by its value alone ("abs(move_sigma)=2.31 >= 1.5").
_THRESHOLD_SCALE = "threshold_scale"

_DIGITS = frozenset(string.digits)
_IDENT_START = frozenset(string.ascii_letters + "_")
_IDENT_CHARS = _IDENT_START | _DIGITS
_WHITESPACE = frozenset(" \t\r\n")
_COMPARISONS = frozenset({"<", "<=", ">", ">=", "==", "!="})
_TWO_CHAR_OPS = frozenset({"<=", ">=", "==", "!="})
_ONE_CHAR_OPS = frozenset("<>+-*/(),")
_CHAR_HINTS = {
    "=": "; use '==' to compare",
    "!": "; use 'not' to negate or '!=' to compare",
    "&": "; use 'and'",
    "|": "; use 'or'",
    "^": "; there is no power operator",
    "%": "; there is no modulo operator",
    "'": "; the language has no strings",
    '"': "; the language has no strings",
}
# Comparisons negated, for reasons why a condition is false: exact because a
# comparison is false only when neither operand is NaN.
_NEGATED = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


class ExprError(ValueError):
    """A rule expression is not valid; ``column`` (1-based) points into ``text``."""

    def __init__(self, message: str, column: int, text: str) -> None:
        super().__init__(f"column {column}: {message}")
        self.message = message
        self.column = column
        self.text = text

    def __reduce__(self) -> tuple[type[ExprError], tuple[str, int, str]]:
        return type(self), (self.message, self.column, self.text)


@dataclass(frozen=True, slots=True)
class Truth:
    """Three-valued result of a condition over K pools.

    ``true[i]`` and ``false[i]`` are never both set; neither set means *unknown*
    (a NaN reached a comparison). Fire on ``true``; clear only on ``false``.
    """

    true: BoolArray
    false: BoolArray

    def __post_init__(self) -> None:
        # Shape and dtype only: checking disjointness would cost a pass per evaluation,
        # and it holds by construction (see tests/test_expr.py for the property).
        for label, mask in (("true", self.true), ("false", self.false)):
            if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.ndim != 1:
                raise ValueError(f"Truth.{label} must be a 1-D bool array")
        if self.true.shape != self.false.shape:
            raise ValueError(
                "Truth.true and Truth.false differ in length: "
                f"{self.true.size} != {self.false.size}"
            )

    @property
    def unknown(self) -> BoolArray:
        """Rows where the condition is neither true nor false."""
        result: BoolArray = ~(self.true | self.false)
        return result


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["number", "name", "op", "end", "bad"]
    text: str  # for "bad": the error message
    column: int

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the expression"
        if self.kind == "number":
            return f"number {self.text!r}"
        if self.kind == "name":
            return f"{self.text!r}"
        return f"{self.text!r}"


def _scan_number(text: str, start: int) -> int:
    """End index of the number literal at ``start``; ASCII digits only."""
    n = len(text)
    j = start
    while j < n and text[j] in _DIGITS:
        j += 1
    if j < n and text[j] == ".":
        j += 1
        while j < n and text[j] in _DIGITS:
            j += 1
    if j < n and text[j] in "eE":
        k = j + 1
        if k < n and text[k] in "+-":
            k += 1
        if k < n and text[k] in _DIGITS:
            while k < n and text[k] in _DIGITS:
                k += 1
            j = k
        else:
            raise ExprError(
                f"invalid number {text[start:k]!r}: exponent has no digits", start + 1, text
            )
    if j < n and (text[j] in _IDENT_CHARS or text[j] == "."):
        # "2x", "1.2.3": say so here rather than as a confusing "expected an operator".
        m = j
        while m < n and (text[m] in _IDENT_CHARS or text[m] == "."):
            m += 1
        raise ExprError(f"invalid number {text[start:m]!r}", start + 1, text)
    return j


def _tokenize(text: str) -> list[_Token]:
    """Tokens up to the first lexical error, which becomes a final "bad" token.

    The error is raised only when the parser reaches it, so problems are reported
    in text order (an unknown name before a later stray character).
    """
    tokens: list[_Token] = []
    try:
        _scan(text, tokens)
    except ExprError as error:
        tokens.append(_Token("bad", error.message, error.column))
    else:
        tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _scan(text: str, tokens: list[_Token]) -> None:
    n = len(text)
    i = 0
    while i < n:
        ch = text[i]
        if ch in _WHITESPACE:
            i += 1
            continue
        column = i + 1
        if ch in _DIGITS or (ch == "." and i + 1 < n and text[i + 1] in _DIGITS):
            j = _scan_number(text, i)
            tokens.append(_Token("number", text[i:j], column))
        elif ch in _IDENT_START:
            j = i + 1
            while j < n and text[j] in _IDENT_CHARS:
                j += 1
            tokens.append(_Token("name", text[i:j], column))
        elif text[i : i + 2] in _TWO_CHAR_OPS:
            j = i + 2
            tokens.append(_Token("op", text[i:j], column))
        elif ch in _ONE_CHAR_OPS:
            j = i + 1
            tokens.append(_Token("op", ch, column))
        else:
            raise ExprError(f"unexpected character {ch!r}{_CHAR_HINTS.get(ch, '')}", column, text)
        i = j


# --------------------------------------------------------------------------- syntax tree

# Rendering precedences (higher binds tighter).
_P_OR, _P_AND, _P_NOT, _P_COMPARE, _P_SUM, _P_TERM, _P_NEG, _P_ATOM = range(1, 9)


def _fmt(value: float) -> str:
    """A value in a reason: 4 significant digits, no "-0"."""
    if value == 0:
        return "0"
    return f"{value:.4g}"


def _literal_text(value: float) -> str:
    """Canonical text of a (non-negative, finite) literal that the tokenizer reads back."""
    if value.is_integer() and value < 1e15:
        return str(int(value))
    return repr(value)


class _Node:
    """A syntax-tree node; subclasses are frozen slotted dataclasses."""

    __slots__ = ()
    is_condition: ClassVar[bool] = False
    precedence: ClassVar[int] = _P_ATOM
    column: int

    def render(self) -> str:
        raise NotImplementedError

    def feature_names(self) -> frozenset[str]:
        raise NotImplementedError

    def num(self, env: _Env) -> FloatArray:
        raise NotImplementedError

    def truth(self, env: _Env) -> tuple[BoolArray, BoolArray]:
        raise NotImplementedError

    # One row in plain Python floats (for reasons): the same IEEE 754 operations as
    # the numpy forms above, see _divide and _Call.row_num for the two that differ.

    def row_num(self, row: _RowEnv) -> float:
        raise NotImplementedError

    def row_truth(self, row: _RowEnv, memo: _Memo) -> tuple[bool, bool]:
        """Truth of a condition node on one row; records in ``memo`` (keyed by node id)
        what :meth:`reasons` reads back: each condition's truth, each comparison's
        operand values and per-operator truths."""
        raise NotImplementedError

    def reasons(self, memo: _Memo, want: _Want, out: list[str]) -> None:
        """Append why this node has the state ``want``, from a filled ``memo``."""
        raise NotImplementedError


_Want: TypeAlias = Literal["true", "false", "unknown"]
_RowEnv: TypeAlias = Mapping[str, float]
_Memo: TypeAlias = dict[int, Any]


def _divide(left: float, right: float) -> float:
    """``np.divide`` of two floats under ``np.errstate(all="ignore")``, without numpy.

    Python raises on a zero divisor where IEEE 754 (and numpy) give +-inf by the signs
    of both operands, and NaN for 0 / 0 and NaN / 0.
    """
    if right == 0.0:
        if left == 0.0 or left != left:  # noqa: PLR0124 - NaN test
            return math.nan
        return math.copysign(math.inf, left) * math.copysign(1.0, right)
    return left / right


def _row_state(truth: tuple[bool, bool]) -> _Want:
    true, false = truth
    return "true" if true else ("false" if false else "unknown")


def _wrap(child: _Node, parens: bool) -> str:
    return f"({child.render()})" if parens else child.render()


@dataclass(frozen=True, slots=True)
class _Number(_Node):
    value: float
    column: int = field(compare=False)
    scalar: np.float64 = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scalar", np.float64(self.value))

    def render(self) -> str:
        return _literal_text(self.value)

    def feature_names(self) -> frozenset[str]:
        return frozenset()

    def num(self, env: _Env) -> FloatArray:
        # A numpy scalar, not a Python float: numpy arithmetic obeys np.errstate,
        # Python's would raise ZeroDivisionError on "1 / 0".
        return self.scalar  # type: ignore[return-value]

    def row_num(self, row: _RowEnv) -> float:
        return self.value


@dataclass(frozen=True, slots=True)
class _Feature(_Node):
    name: str
    column: int = field(compare=False)

    def render(self) -> str:
        return self.name

    def feature_names(self) -> frozenset[str]:
        return frozenset((self.name,))

    def num(self, env: _Env) -> FloatArray:
        return env[self.name]

    def row_num(self, row: _RowEnv) -> float:
        return row[self.name]


@dataclass(frozen=True, slots=True)
class _Negate(_Node):
    operand: _Node
    column: int = field(compare=False)
    precedence: ClassVar[int] = _P_NEG

    def render(self) -> str:
        return "-" + _wrap(self.operand, self.operand.precedence < _P_NEG)

    def feature_names(self) -> frozenset[str]:
        return self.operand.feature_names()

    def num(self, env: _Env) -> FloatArray:
        result: FloatArray = np.negative(self.operand.num(env))
        return result

    def row_num(self, row: _RowEnv) -> float:
        return -self.operand.row_num(row)


_ARITHMETIC: dict[str, Callable[[FloatArray, FloatArray], FloatArray]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
}
_ROW_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _divide,
}


@dataclass(frozen=True, slots=True)
class _Arithmetic(_Node):
    """``first op1 x1 op2 x2 ...`` left to right; all ops of one precedence level."""

    first: _Node
    rest: tuple[tuple[str, _Node], ...]
    column: int = field(compare=False)

    @property
    def precedence(self) -> int:  # type: ignore[override]
        return _P_SUM if self.rest[0][0] in "+-" else _P_TERM

    def render(self) -> str:
        level = self.precedence
        parts = [_wrap(self.first, self.first.precedence < level)]
        for op, operand in self.rest:
            # Same-level right operands keep their parentheses: "a - (b - c)".
            parts.append(f"{op} {_wrap(operand, operand.precedence <= level)}")
        return " ".join(parts)

    def feature_names(self) -> frozenset[str]:
        names = self.first.feature_names()
        for _, operand in self.rest:
            names |= operand.feature_names()
        return names

    def num(self, env: _Env) -> FloatArray:
        acc = self.first.num(env)
        for op, operand in self.rest:
            acc = _ARITHMETIC[op](acc, operand.num(env))
        return acc

    def row_num(self, row: _RowEnv) -> float:
        acc = self.first.row_num(row)
        for op, operand in self.rest:
            acc = _ROW_ARITHMETIC[op](acc, operand.row_num(row))
        return acc


@dataclass(frozen=True, slots=True)
class _Call(_Node):
    function: str
    args: tuple[_Node, ...]
    column: int = field(compare=False)

    def render(self) -> str:
        return f"{self.function}({', '.join(arg.render() for arg in self.args)})"

    def feature_names(self) -> frozenset[str]:
        return frozenset().union(*(arg.feature_names() for arg in self.args))

    def num(self, env: _Env) -> FloatArray:
        values = [arg.num(env) for arg in self.args]
        if self.function == "abs":
            result: FloatArray = np.abs(values[0])
            return result
        # np.minimum/np.maximum propagate NaN whatever its position (builtin min would not).
        combine = np.minimum if self.function == "min" else np.maximum
        return functools.reduce(combine, values)

    def row_num(self, row: _RowEnv) -> float:
        values = [arg.row_num(row) for arg in self.args]
        if self.function == "abs":
            return abs(values[0])
        # numpy's own minimum/maximum: NaN wherever it is, and its choice between 0.0
        # and -0.0 (the second operand on ties), which Python's min/max do not share.
        combine = np.minimum if self.function == "min" else np.maximum
        with np.errstate(all="ignore"):  # as the numpy evaluation: never a warning
            return float(functools.reduce(combine, values))


def _pair_truth(op: str, left: FloatArray, right: FloatArray) -> tuple[BoolArray, BoolArray]:
    """(true, false) of one comparison; every comparison with NaN is False in IEEE 754,
    so writing `false` as the complementary comparison leaves NaN rows unknown."""
    if op == "<":
        return np.less(left, right), np.greater_equal(left, right)
    if op == "<=":
        return np.less_equal(left, right), np.greater(left, right)
    if op == ">":
        return np.greater(left, right), np.less_equal(left, right)
    if op == ">=":
        return np.greater_equal(left, right), np.less(left, right)
    apart = np.less(left, right) | np.greater(left, right)  # "!=" would be True for NaN
    if op == "==":
        return np.equal(left, right), apart
    return apart, np.equal(left, right)


def _row_pair_truth(op: str, left: float, right: float) -> tuple[bool, bool]:
    """:func:`_pair_truth` of two floats (Python compares floats as IEEE 754 does)."""
    if op == "<":
        return left < right, left >= right
    if op == "<=":
        return left <= right, left > right
    if op == ">":
        return left > right, left <= right
    if op == ">=":
        return left >= right, left < right
    apart = left < right or left > right
    if op == "==":
        return left == right, apart
    return apart, left == right


def _operand_prefix(node: _Node) -> str | None:
    """How an operand shows in a reason: its text then the value (``"label="``), the
    value alone (``""``: a threshold), or the literal alone (None: a number)."""
    if isinstance(node, _Number):
        return None
    if node.feature_names() <= {_THRESHOLD_SCALE}:
        return ""
    label = node.render()
    if not isinstance(node, _Feature | _Call):
        label = f"({label})"
    return f"{label}="


@dataclass(frozen=True, slots=True)
class _Compare(_Node):
    operands: tuple[_Node, ...]
    ops: tuple[str, ...]
    column: int = field(compare=False)
    # Per operand, _operand_prefix, or the literal text of a number: worked out once
    # (the tree is immutable), so that a reason only formats the values.
    prefixes: tuple[tuple[str | None, str], ...] = field(init=False, repr=False, compare=False)
    is_condition: ClassVar[bool] = True
    precedence: ClassVar[int] = _P_COMPARE

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "prefixes",
            tuple((_operand_prefix(node), node.render()) for node in self.operands),
        )

    def render(self) -> str:
        parts = [self.operands[0].render()]
        for op, operand in zip(self.ops, self.operands[1:], strict=True):
            parts.append(f"{op} {operand.render()}")
        return " ".join(parts)

    def feature_names(self) -> frozenset[str]:
        return frozenset().union(*(operand.feature_names() for operand in self.operands))

    def truth(self, env: _Env) -> tuple[BoolArray, BoolArray]:
        values = [operand.num(env) for operand in self.operands]
        true, false = _pair_truth(self.ops[0], values[0], values[1])
        for k in range(1, len(self.ops)):
            t, f = _pair_truth(self.ops[k], values[k], values[k + 1])
            true = true & t
            false = false | f
        return true, false

    def row_truth(self, row: _RowEnv, memo: _Memo) -> tuple[bool, bool]:
        values = [operand.row_num(row) for operand in self.operands]
        pairs = [_row_pair_truth(op, values[k], values[k + 1]) for k, op in enumerate(self.ops)]
        true, false = pairs[0]
        for t, f in pairs[1:]:
            true = true and t
            false = false or f
        memo[id(self)] = (true, false), values, pairs
        return true, false

    def reasons(self, memo: _Memo, want: _Want, out: list[str]) -> None:
        _, values, pairs = memo[id(self)]
        texts = [
            literal if prefix is None else prefix + _fmt(value)
            for (prefix, literal), value in zip(self.prefixes, values, strict=True)
        ]
        if want == "true":
            parts = [texts[0]]
            for op, text in zip(self.ops, texts[1:], strict=True):
                parts.append(f"{op} {text}")
            out.append(" ".join(parts))
            return
        for k, (op, (holds, fails)) in enumerate(zip(self.ops, pairs, strict=True)):
            if want == "false" and fails:
                out.append(f"{texts[k]} {_NEGATED[op]} {texts[k + 1]}")
            elif want == "unknown" and not holds and not fails:
                out.append(f"{texts[k]} {op} {texts[k + 1]} (unknown)")


@dataclass(frozen=True, slots=True)
class _Logic(_Node):
    op: Literal["and", "or"]
    operands: tuple[_Node, ...]
    column: int = field(compare=False)
    is_condition: ClassVar[bool] = True

    @property
    def precedence(self) -> int:  # type: ignore[override]
        return _P_AND if self.op == "and" else _P_OR

    def render(self) -> str:
        level = self.precedence
        parts = [_wrap(self.operands[0], self.operands[0].precedence < level)]
        parts.extend(_wrap(o, o.precedence <= level) for o in self.operands[1:])
        return f" {self.op} ".join(parts)

    def feature_names(self) -> frozenset[str]:
        return frozenset().union(*(operand.feature_names() for operand in self.operands))

    def truth(self, env: _Env) -> tuple[BoolArray, BoolArray]:
        # Kleene: and is true when all are true, false when any is false; or is the dual.
        true, false = self.operands[0].truth(env)
        for operand in self.operands[1:]:
            t, f = operand.truth(env)
            if self.op == "and":
                true, false = true & t, false | f
            else:
                true, false = true | t, false & f
        return true, false

    def row_truth(self, row: _RowEnv, memo: _Memo) -> tuple[bool, bool]:
        true, false = self.operands[0].row_truth(row, memo)
        for operand in self.operands[1:]:
            t, f = operand.row_truth(row, memo)
            if self.op == "and":
                true, false = true and t, false or f
            else:
                true, false = true or t, false and f
        memo[id(self)] = ((true, false),)
        return true, false

    def reasons(self, memo: _Memo, want: _Want, out: list[str]) -> None:
        # Which children decide the result: all of them when every child must agree
        # (a true "and", a false "or"), otherwise those in the deciding state.
        all_decide = (self.op == "and") == (want == "true") and want != "unknown"
        for operand in self.operands:
            if all_decide or _row_state(memo[id(operand)][0]) == want:
                operand.reasons(memo, want, out)


@dataclass(frozen=True, slots=True)
class _Not(_Node):
    operand: _Node
    column: int = field(compare=False)
    is_condition: ClassVar[bool] = True
    precedence: ClassVar[int] = _P_NOT

    def render(self) -> str:
        return "not " + _wrap(self.operand, self.operand.precedence < _P_NOT)

    def feature_names(self) -> frozenset[str]:
        return self.operand.feature_names()

    def truth(self, env: _Env) -> tuple[BoolArray, BoolArray]:
        true, false = self.operand.truth(env)
        return false, true

    def row_truth(self, row: _RowEnv, memo: _Memo) -> tuple[bool, bool]:
        true, false = self.operand.row_truth(row, memo)
        memo[id(self)] = ((false, true),)
        return false, true

    def reasons(self, memo: _Memo, want: _Want, out: list[str]) -> None:
        flipped: dict[_Want, _Want] = {"true": "false", "false": "true", "unknown": "unknown"}
        self.operand.reasons(memo, flipped[want], out)


# --------------------------------------------------------------------------- parser


class _Parser:
    """Recursive descent over the token list; one method per grammar rule."""

    def __init__(self, text: str, tokens: list[_Token], names: frozenset[str]) -> None:
        self.text = text
        self.tokens = tokens
        self.names = names
        self.index = 0
        self.depth = 0

    def error(self, message: str, column: int) -> ExprError:
        return ExprError(message, column, self.text)

    def peek(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind == "bad":
            raise self.error(token.text, token.column)
        return token

    def advance(self) -> _Token:
        token = self.peek()
        if token.kind != "end":
            self.index += 1
        return token

    def at(self, kind: str, *texts: str) -> bool:
        token = self.peek()
        return token.kind == kind and token.text in texts

    def enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"expression is nested deeper than {MAX_DEPTH} levels", token.column)

    def leave(self) -> None:
        self.depth -= 1

    def parse(self) -> _Node:
        node = self.parse_or()
        token = self.peek()
        if token.kind != "end":
            if token.text == ")":
                raise self.error("unmatched ')'", token.column)
            raise self.error(
                f"expected an operator or the end of the expression, got {token.describe()}",
                token.column,
            )
        return node

    def require_condition(self, node: _Node, context: str) -> None:
        if not node.is_condition:
            raise self.error(
                f"{context} needs a condition, but {node.render()!r} is a number "
                "(compare it with <, <=, >, >=, == or !=)",
                node.column,
            )

    def require_number(self, node: _Node, context: str) -> None:
        if node.is_condition:
            raise self.error(
                f"{context} needs a number, but {node.render()!r} is a condition", node.column
            )

    def parse_logic(self, op: Literal["and", "or"]) -> _Node:
        parse_operand = self.parse_not if op == "and" else self.parse_and
        operands = [parse_operand()]
        while self.at("name", op):
            self.advance()
            operands.append(parse_operand())
        if len(operands) == 1:
            return operands[0]
        for operand in operands:
            self.require_condition(operand, f"'{op}'")
        return _Logic(op, tuple(operands), operands[0].column)

    def parse_or(self) -> _Node:
        return self.parse_logic("or")

    def parse_and(self) -> _Node:
        return self.parse_logic("and")

    def parse_not(self) -> _Node:
        if self.at("name", "not"):
            token = self.advance()
            self.enter(token)
            operand = self.parse_not()
            self.leave()
            self.require_condition(operand, "'not'")
            return _Not(operand, token.column)
        return self.parse_compare()

    def parse_compare(self) -> _Node:
        operands = [self.parse_sum()]
        ops: list[str] = []
        while self.peek().kind == "op" and self.peek().text in _COMPARISONS:
            ops.append(self.advance().text)
            operands.append(self.parse_sum())
        if not ops:
            return operands[0]
        for k, operand in enumerate(operands):
            self.require_number(operand, f"'{ops[max(k - 1, 0)]}'")
        return _Compare(tuple(operands), tuple(ops), operands[0].column)

    def parse_arithmetic(self, ops: tuple[str, str], parse_operand: Callable[[], _Node]) -> _Node:
        first = parse_operand()
        rest: list[tuple[str, _Node]] = []
        while self.at("op", *ops):
            op = self.advance().text
            rest.append((op, parse_operand()))
        if not rest:
            return first
        self.require_number(first, f"'{rest[0][0]}'")
        for op, operand in rest:
            self.require_number(operand, f"'{op}'")
        return _Arithmetic(first, tuple(rest), first.column)

    def parse_sum(self) -> _Node:
        return self.parse_arithmetic(("+", "-"), self.parse_term)

    def parse_term(self) -> _Node:
        return self.parse_arithmetic(("*", "/"), self.parse_unary)

    def parse_unary(self) -> _Node:
        if self.at("op", "-", "+"):
            token = self.advance()
            self.enter(token)
            operand = self.parse_unary()
            self.leave()
            self.require_number(operand, f"unary '{token.text}'")
            if token.text == "+":
                return replace(operand, column=token.column)  # type: ignore[type-var]
            return _Negate(operand, token.column)
        return self.parse_atom()

    def parse_atom(self) -> _Node:
        token = self.advance()
        if token.kind == "number":
            value = float(token.text)
            if not math.isfinite(value):
                shown = token.text if len(token.text) <= 24 else token.text[:22] + "..."
                raise self.error(f"number {shown!r} is too large", token.column)
            return _Number(value, token.column)
        if token.kind == "name" and token.text in FUNCTIONS:
            return self.parse_call(token)
        if token.kind == "name" and token.text not in KEYWORDS:
            return self.parse_feature(token)
        if token.kind == "op" and token.text == "(":
            self.enter(token)
            inner = self.parse_or()
            self.leave()
            closing = self.peek()
            if closing.kind == "end":
                raise self.error("unclosed '('", token.column)
            if closing.text != ")":
                raise self.error(
                    f"expected ')' to close the '(' at column {token.column}, "
                    f"got {closing.describe()}",
                    closing.column,
                )
            self.advance()
            # The group's column is its '(' so that errors about it point there.
            return replace(inner, column=token.column)  # type: ignore[type-var]
        if token.kind == "op" and token.text == ")":
            raise self.error(
                "unmatched ')'" if self.depth == 0 else "expected an operand before ')'",
                token.column,
            )
        raise self.error(
            f"expected a number, a feature name, '(' or a function, got {token.describe()}",
            token.column,
        )

    def parse_feature(self, token: _Token) -> _Node:
        name = token.text
        if name not in self.names:
            raise self.error(self.unknown_name(name), token.column)
        if self.at("op", "("):
            raise self.error(f"{name!r} is a feature, not a function", token.column)
        return _Feature(name, token.column)

    def unknown_name(self, name: str) -> str:
        lowered = name.lower()
        if lowered in KEYWORDS or lowered in FUNCTIONS:
            return f"unknown name {name!r} (keywords and functions are lowercase: {lowered!r})"
        candidates = sorted(FUNCTIONS) if self.at("op", "(") else sorted(self.names)
        close = difflib.get_close_matches(name, candidates, n=1)
        if close:
            return f"unknown name {name!r} (did you mean {close[0]!r}?)"
        return f"unknown name {name!r}"

    def parse_call(self, token: _Token) -> _Node:
        function = token.text
        opening = self.peek()
        if not self.at("op", "("):
            raise self.error(
                f"{function!r} is a function; call it as {function}(...)", token.column
            )
        self.advance()
        self.enter(opening)
        args: list[_Node] = []
        if not self.at("op", ")"):
            while True:
                args.append(self.parse_or())
                if not self.at("op", ","):
                    break
                self.advance()
        self.leave()
        closing = self.peek()
        if closing.kind == "end":
            raise self.error(f"unclosed '(' of {function}(", opening.column)
        if closing.text != ")":
            raise self.error(
                f"expected ',' or ')' in {function}(...), got {closing.describe()}", closing.column
            )
        self.advance()
        if function == "abs" and len(args) != 1:
            raise self.error(f"abs() takes exactly 1 argument, got {len(args)}", token.column)
        if function != "abs" and len(args) < 2:
            raise self.error(
                f"{function}() needs at least 2 arguments, got {len(args)}", token.column
            )
        for arg in args:
            self.require_number(arg, f"{function}()")
        return _Call(function, tuple(args), token.column)


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True, slots=True)
class Expr:
    """A parsed, validated rule expression. Build it with :func:`parse`.

    Two expressions are equal when their syntax trees are (``a<b`` == ``(a < b)``).
    """

    text: str = field(compare=False)
    names: frozenset[str]
    boolean: bool
    _root: _Node = field(repr=False)

    def __str__(self) -> str:
        """Canonical text: normalised spacing, literals and parentheses; parses back to itself."""
        return self._root.render()

    def _env(self, features: Mapping[str, FloatArray]) -> tuple[dict[str, FloatArray], int]:
        env: dict[str, FloatArray] = {}
        size = -1
        for name in self.names:
            try:
                column = np.asarray(features[name], dtype=np.float64)
            except KeyError:
                raise KeyError(f"feature {name!r} is missing from the snapshot") from None
            if column.ndim != 1:
                raise ValueError(f"feature {name!r} must be a 1-D array, got shape {column.shape}")
            if size < 0:
                size = column.size
            elif column.size != size:
                raise ValueError(
                    f"feature {name!r} has {column.size} rows, other features have {size}"
                )
            env[name] = column
        if size < 0:  # no feature referenced: the pool count comes from any feature
            if not features:
                raise ValueError("empty feature snapshot: cannot tell the number of pools")
            size = int(np.asarray(next(iter(features.values()))).shape[0])
        return env, size

    def truth(self, features: Mapping[str, FloatArray]) -> Truth:
        """Kleene truth of this condition for every pool (row) of ``features``."""
        with np.errstate(all="ignore"):
            return self._truth(features)

    def _truth(self, features: Mapping[str, FloatArray]) -> Truth:
        # truth() for a caller that holds np.errstate(all="ignore") already (truths()).
        if not self.boolean:
            raise TypeError(f"{str(self)!r} is a number, not a condition; use value()")
        env, size = self._env(features)
        true, false = self._root.truth(env)
        return Truth(_bool_rows(true, size), _bool_rows(false, size))

    def value(self, features: Mapping[str, FloatArray]) -> FloatArray:
        """The numeric value for every pool (a new array; NaN where undefined)."""
        if self.boolean:
            raise TypeError(f"{str(self)!r} is a condition; use truth()")
        env, size = self._env(features)
        with np.errstate(all="ignore"):
            result = self._root.num(env)
        values = _float_rows(result, size)
        # A bare feature evaluates to the caller's own array: hand back a copy.
        return values.copy() if isinstance(self._root, _Feature) else values

    def explain(self, features: Mapping[str, FloatArray], i: int) -> str:
        """Why the condition has its value at row ``i``, with the operand values.

        True: the comparisons that make it true ("move_sigma=-2.31 <= -2; macd_hist=-3.2 < 0").
        False: those that make it false, with the operator negated ("rsi=45 >= 30").
        Unknown: the comparisons with a NaN operand, marked "(unknown)".
        """
        if not self.boolean:
            raise TypeError(f"{str(self)!r} is a number, not a condition")
        env, size = self._env(features)
        if not -size <= i < size:
            raise IndexError(f"row {i} is out of range for {size} pools")
        row = i % size
        # Plain floats: the same IEEE 754 results as the numpy evaluation, ~10x cheaper
        # on one row (see _Node.row_num).
        row_env = {name: column.item(row) for name, column in env.items()}
        out: list[str] = []
        memo: _Memo = {}
        self._root.reasons(memo, _row_state(self._root.row_truth(row_env, memo)), out)
        return "; ".join(dict.fromkeys(out))  # dedupe, keep order


def truths(conditions: Sequence[Expr], features: Mapping[str, FloatArray]) -> list[Truth]:
    """``[c.truth(features) for c in conditions]``, with one switch of numpy's error state
    for all of them (a switch costs about as much as evaluating a small comparison)."""
    with np.errstate(all="ignore"):
        return [condition._truth(features) for condition in conditions]


def _bool_rows(result: object, size: int) -> BoolArray:
    """Broadcast a condition result (a scalar for constant subtrees) to ``size`` rows."""
    array: BoolArray = np.asarray(result, dtype=np.bool_)
    return np.full(size, array, dtype=np.bool_) if array.ndim == 0 else array


def _float_rows(result: object, size: int) -> FloatArray:
    """Broadcast a numeric result (a scalar for constant subtrees) to ``size`` rows."""
    array: FloatArray = np.asarray(result, dtype=np.float64)
    return np.full(size, array, dtype=np.float64) if array.ndim == 0 else array


def parse(text: str, names: Collection[str], *, boolean: bool = True) -> Expr:
    """Parse and validate ``text`` against the feature ``names``.

    With ``boolean=True`` the expression must be a condition (a comparison, ``and``,
    ``or`` or ``not``); with ``boolean=False`` it must be a number.
    Raises :class:`ExprError` (with a 1-based column) for every invalid text.
    """
    known = frozenset(names)
    for name in known:
        if not (name and name[0] in _IDENT_START and all(c in _IDENT_CHARS for c in name)):
            raise ValueError(f"feature name {name!r} is not an identifier")
        if name in KEYWORDS or name in FUNCTIONS:
            raise ValueError(f"feature name {name!r} collides with a keyword or function")
    if not isinstance(text, str):
        raise TypeError(f"expression must be a str, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExprError(
            f"expression is {len(text)} characters long; the limit is {MAX_LENGTH}",
            MAX_LENGTH + 1,
            text,
        )
    tokens = _tokenize(text)
    if tokens[0].kind == "end":
        raise ExprError("empty expression", 1, text)
    root = _Parser(text, tokens, known).parse()
    if boolean and not root.is_condition:
        raise ExprError(
            f"expected a condition (a comparison, 'and', 'or' or 'not'), "
            f"but {root.render()!r} is a number",
            root.column,
            text,
        )
    if not boolean and root.is_condition:
        raise ExprError(
            f"expected a number, but {root.render()!r} is a condition", root.column, text
        )
    return Expr(text, root.feature_names(), boolean, root)
