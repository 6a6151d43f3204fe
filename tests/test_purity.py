"""``rules/`` is pure: no I/O libraries, no clock reads (DESIGN.md, STYLE.md)."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import REPO_ROOT

RULES = REPO_ROOT / "rules"
FORBIDDEN_MODULES = (
    "asyncio",
    "web3",
    "aiomqtt",
    "structlog",
    "sqlite3",
    "apscheduler",
    "socket",
    "pandas",
)
FORBIDDEN_CALLS = {
    ("time", "time"),
    ("time", "monotonic"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("date", "today"),
}


def test_rules_sources_import_nothing_forbidden() -> None:
    for path in sorted(RULES.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {name}"
                assert name.split(".")[0] != "time", f"{path.name} imports time (clock)"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                value = node.func.value
                if isinstance(value, ast.Name):
                    assert (value.id, node.func.attr) not in FORBIDDEN_CALLS, (
                        f"{path.name} reads the clock"
                    )
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "open", f"{path.name} opens a file"


def _forbidden_after(imports: list[str]) -> set[str]:
    """Forbidden modules loaded after importing ``imports`` in a fresh interpreter."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in imports)
        + f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_MODULES!r}]\n"
        + "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    return set(filter(None, out.stdout.strip().split(",")))


def _rules_modules() -> list[str]:
    """Every module of the ``rules`` package, subpackages included."""
    out = []
    for path in sorted(RULES.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_importing_every_rules_module_adds_nothing_to_what_numba_loads() -> None:
    # The compiled loops need numba, which itself loads `socket` (importlib.metadata ->
    # email.utils): no I/O library of ours. Importing all of rules must add nothing to that.
    modules = _rules_modules()
    assert "rules.features.kernels" in modules
    assert "rules.layers.engine" in modules
    baseline = _forbidden_after(["numba"])
    assert baseline <= {"socket"}, baseline
    assert _forbidden_after(["numba", *modules]) == baseline
