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
    for path in sorted(RULES.glob("*.py")):
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


#: rules.kernels is compiled by numba, which is imported only when a batch runs.
COMPILED = "rules.kernels"


def test_importing_rules_loads_no_io_library() -> None:
    # What the daemon loads (rules.kernels only comes with a batch): nothing forbidden.
    modules = [f"rules.{p.stem}" for p in sorted(RULES.glob("*.py")) if p.stem != "__init__"]
    assert COMPILED in modules
    assert _forbidden_after([m for m in modules if m != COMPILED]) == set()


def test_the_compiled_kernels_add_nothing_to_what_numba_loads() -> None:
    # numba itself loads `socket` (importlib.metadata -> email.utils), no I/O library of
    # ours; rules.kernels must add nothing to that.
    baseline = _forbidden_after(["numba"])
    assert baseline <= {"socket"}, baseline
    assert _forbidden_after(["numba", COMPILED]) == baseline


def test_the_daemon_side_of_rules_does_not_load_numba() -> None:
    modules = [
        f"rules.{p.stem}"
        for p in sorted(RULES.glob("*.py"))
        if p.stem not in ("__init__", COMPILED.split(".")[1])
    ]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print('numba' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert out.stdout.strip() == "False"
