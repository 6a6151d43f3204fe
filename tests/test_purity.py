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


def test_importing_rules_loads_no_io_library() -> None:
    modules = [f"rules.{p.stem}" for p in sorted(RULES.glob("*.py")) if p.stem != "__init__"]
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN_MODULES!r}]\n"
        + "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert out.stdout.strip() == ""
