"""What alvh declares and locks, checked against what its code imports (no network).

- ``[project] dependencies`` are exactly the distributions of the third-party modules
  that daemon/, adapters/ and rules/ import at run time (imports under
  ``if TYPE_CHECKING:`` do not count), plus the run-time-only needs listed below;
- every third-party import of tests/ and bench/ is declared (runtime or ``test``);
- ``requirements.lock`` pins the runtime closure and nothing of the ``test`` extra;
  ``requirements-dev.lock`` pins the same versions plus the ``test`` extra;
- scripts/selects_integration.py answers "no" exactly for marker expressions that
  leave out every integration test (scripts/test then sets up no npm, Mosquitto or
  Chromium).

The wheel itself is built, installed and run by tests/test_wheel.py.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]

#: Needed at run time without being imported by alvh: name -> why.
RUNTIME_ONLY = {
    "eth-hash": "the keccak backend eth-utils needs (extra pycryptodome); nothing else pulls it",
}
#: First-party top-level names.
FIRST_PARTY = {"daemon", "adapters", "rules", "tests", "bench"}
#: Must never be in the runtime lock, whatever the extras say.
DEV_ONLY = {"pytest", "pytest-asyncio", "hypothesis", "ta-lib", "ruff", "mypy", "pandas-stubs"}


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement or pin (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def _pins(lock: str) -> dict[str, str]:
    """name -> version of a lock file; every line but comments must be ``name==version``."""
    pins: dict[str, str] = {}
    for line in (REPO_ROOT / lock).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        assert match, f"{lock}: not an exact pin: {line!r}"
        assert _name(line) not in pins, f"{lock}: {line!r} is pinned twice"
        pins[_name(line)] = match.group(2)
    return pins


def _runtime_imports(node: ast.AST) -> Iterator[str]:
    """Top-level module names imported by absolute imports, outside TYPE_CHECKING blocks."""
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        for child in node.orelse:
            yield from _runtime_imports(child)
        return
    if isinstance(node, ast.Import):
        yield from (alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        yield node.module.split(".")[0]
    for child in ast.iter_child_nodes(node):
        yield from _runtime_imports(child)


def _third_party_distributions(*folders: str) -> dict[str, set[str]]:
    """distribution -> the files importing it, for the third-party imports of ``folders``."""
    providers = importlib.metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            for module in set(_runtime_imports(ast.parse(path.read_text()))):
                if module in sys.stdlib_module_names or module in FIRST_PARTY:
                    continue
                dists = providers.get(module)
                assert dists, (
                    f"{path.relative_to(REPO_ROOT)}: no installed distribution has {module!r}"
                )
                for dist in dists:
                    found.setdefault(_name(dist), set()).add(str(path.relative_to(REPO_ROOT)))
    return found


def test_runtime_dependencies_are_exactly_the_imports() -> None:
    declared = {_name(r) for r in PROJECT["dependencies"]}
    imported = set(_third_party_distributions("daemon", "adapters", "rules"))
    assert declared - set(RUNTIME_ONLY) == imported


def test_tests_and_benchmarks_import_only_declared_packages() -> None:
    declared = {
        _name(r) for r in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["test"]
    }
    imported = _third_party_distributions("tests", "bench")
    assert {d: sorted(f) for d, f in imported.items() if d not in declared} == {}


def test_every_test_requirement_is_used() -> None:
    # The test extra holds what tests, bench, linters and type checking use: nothing else.
    # jsonschema: the alvh.alert.v1 schema checks that come with docs/ (issue 13).
    tools = {"pytest-asyncio", "ruff", "mypy", "pandas-stubs", "jsonschema"}
    imported = set(_third_party_distributions("tests", "bench"))
    test = {_name(r) for r in PROJECT["optional-dependencies"]["test"]}
    assert test - tools <= imported


def test_runtime_lock_pins_the_runtime_closure_and_nothing_of_development() -> None:
    runtime = _pins("requirements.lock")
    assert {_name(r) for r in PROJECT["dependencies"]} <= set(runtime)
    test = {_name(r) for r in PROJECT["optional-dependencies"]["test"]}
    assert sorted(set(runtime) & (test | DEV_ONLY)) == []


def test_dev_lock_is_the_runtime_lock_plus_the_test_extra() -> None:
    runtime, dev = _pins("requirements.lock"), _pins("requirements-dev.lock")
    assert {n: v for n, v in runtime.items() if dev.get(n) != v} == {}
    assert {_name(r) for r in PROJECT["optional-dependencies"]["test"]} <= set(dev)
    assert "web3" not in runtime  # only the benchmarks' baselines use it


def test_lock_files_say_how_they_are_made() -> None:
    for lock in ("requirements.lock", "requirements-dev.lock"):
        assert "Made by scripts/lock" in (REPO_ROOT / lock).read_text(), lock


# --- scripts/test: is the integration set-up needed? -----------------------------------


def _selects_integration(*args: str, addopts: str = "") -> str:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "selects_integration.py"), *args],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTEST_ADDOPTS": addopts, "PATH": "/usr/bin:/bin"},
    )
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("expression", "answer"),
    [
        ("not integration", "no"),
        ("not integration and not slow", "no"),
        ("shared_data and not integration", "no"),
        ("not (integration or slow)", "no"),
        ("integration", "yes"),
        ("slow", "yes"),  # a slow integration test is selected
        ("not slow", "yes"),
        ("(not integration) or slow", "yes"),
        ("not integration or not slow", "yes"),
        ("", "yes"),  # an empty -m selects everything
        ("not (", "yes"),  # unreadable: set everything up
    ],
)
def test_marker_expression_decides_the_integration_set_up(expression: str, answer: str) -> None:
    assert _selects_integration("-q", "-m", expression) == answer


def test_no_marker_expression_needs_the_integration_set_up() -> None:
    assert _selects_integration() == "yes"
    assert _selects_integration("tests/test_indicators.py", "-k", "not integration") == "yes"


def test_the_last_marker_expression_wins_as_in_pytest() -> None:
    assert _selects_integration("-mnot integration") == "no"
    assert _selects_integration("-m", "slow", "-m", "not integration") == "no"
    assert _selects_integration("-m", "not integration", "-m", "slow") == "yes"
    assert _selects_integration(addopts='-m "not integration"') == "no"
    assert _selects_integration("-m", "slow", addopts='-m "not integration"') == "yes"
