"""Can ``pytest ARGS`` select a test marked ``integration``?  Prints ``yes`` or ``no``.

scripts/test asks this before setting up npm, Mosquitto and Chromium, which only the
integration tests need. Only the marker expression is looked at (``-m EXPR`` or
``-mEXPR``, from the ini ``addopts``, then ``$PYTEST_ADDOPTS``, then the arguments:
the last one wins, as in pytest); it is evaluated with pytest's own expression
evaluator for every combination of the marker names it mentions plus ``integration``.
The answer is ``no`` only when none of them selects a test: anything this script
cannot read (no expression, a syntax error, a pytest without the evaluator) is
``yes``, so a wrong answer costs at most a set-up that was not needed.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

INTEGRATION = "integration"
_IDENT = re.compile(r"(?:\w|:|\+|-|\.|\[|\]|\\|/)+")
_KEYWORDS = {"and", "or", "not", "True", "False", "None"}
#: 2**12 evaluations at most: an expression naming more markers is answered "yes".
_MAX_NAMES = 12


def marker_expression(args: list[str]) -> str | None:
    """The ``-m`` value pytest would use with these arguments, or None."""
    expression = None
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "-m" and i + 1 < len(args):
            expression = args[i + 1]
        elif arg.startswith("-m") and len(arg) > 2:
            expression = arg[2:]
    return expression


def can_select_integration(expression: str | None) -> bool:
    if expression is None or not expression.strip():
        return True
    try:
        from _pytest.mark.expression import Expression  # noqa: PLC0415 - pytest's own parser

        compiled = Expression.compile(expression)
    except Exception:  # unreadable: assume it selects everything
        return True
    names = sorted({m.group(0) for m in _IDENT.finditer(expression)} - _KEYWORDS - {INTEGRATION})
    if len(names) > _MAX_NAMES:
        return True
    for size in range(len(names) + 1):
        for others in itertools.combinations(names, size):
            try:
                if compiled.evaluate(_has_marks({INTEGRATION, *others})):
                    return True
            except Exception:
                return True
    return False


def _has_marks(marks: set[str]) -> Callable[..., bool]:
    """pytest's matcher for a test carrying exactly ``marks`` (any arguments)."""

    def matcher(name: str, /, **_kwargs: object) -> bool:
        return name in marks

    return matcher


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    ini = tomllib.loads((root / "pyproject.toml").read_text())
    addopts = ini.get("tool", {}).get("pytest", {}).get("ini_options", {}).get("addopts", "")
    if isinstance(addopts, list):
        addopts = " ".join(addopts)
    args = [*shlex.split(addopts), *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *argv]
    print("yes" if can_select_integration(marker_expression(args)) else "no")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
