"""Where numba caches the compiled loops when alvh is installed read-only (daemon/cli.py).

numba writes its cache next to each source file unless ``NUMBA_CACHE_DIR`` says
otherwise, and refuses to compile a ``cache=True`` function when it can write nowhere.
The decision table is tested with a stand-in for "writable"; the whole path is tested
for real on a copy of the packages mounted read-only in a private mount namespace, as
systemd's ``ProtectSystem=strict`` mounts an install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.cli import RULES_DIR, numba_cache_dir

REPO_ROOT = Path(__file__).resolve().parent.parent


def _tree(root: Path) -> Path:
    """A small package tree like rules/: a folder with a module and a sub-package."""
    (root / "features").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "features" / "__init__.py").write_text("")
    (root / "features" / "kernels.py").write_text("")
    return root


def _writable_except(*read_only: Path) -> Callable[[Path], bool]:
    """A "writable" test that answers False inside ``read_only`` and True elsewhere."""

    def writable(path: Path) -> bool:
        return not any(path == r or path.is_relative_to(r) for r in read_only)

    return writable


def test_the_default_tree_is_the_installed_rules_package() -> None:
    assert (RULES_DIR / "__init__.py").is_file()
    assert (RULES_DIR / "features" / "kernels.py").is_file()


def test_an_explicit_numba_cache_dir_is_left_alone(tmp_path: Path) -> None:
    rules = _tree(tmp_path / "rules")
    environ = {"NUMBA_CACHE_DIR": "/somewhere", "HOME": str(tmp_path)}
    assert numba_cache_dir(environ, rules, writable=_writable_except(rules)) is None


def test_a_writable_tree_keeps_numba_default(tmp_path: Path) -> None:
    rules = _tree(tmp_path / "rules")
    # The real check, on a real writable folder: numba caches next to the sources.
    assert numba_cache_dir({"HOME": str(tmp_path)}, rules) is None


def test_one_read_only_folder_of_the_tree_is_enough_to_move_the_cache(tmp_path: Path) -> None:
    rules = _tree(tmp_path / "rules")
    (rules / "features" / "__pycache__").mkdir()  # numba writes here, not in the folder
    environ = {"HOME": str(tmp_path / "home")}
    writable = _writable_except(rules / "features" / "__pycache__")
    assert numba_cache_dir(environ, rules, writable=writable) == (
        tmp_path / "home" / ".cache" / "alvh" / "numba"
    )


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        # systemd's CacheDirectory= (first entry of a ":"-separated list) comes first...
        (
            {"CACHE_DIRECTORY": "/var/cache/alvh:/var/cache/other", "HOME": "/home/u"},
            "/var/cache/alvh/numba",
        ),
        # ... then the XDG base directory, then ~/.cache.
        ({"XDG_CACHE_HOME": "/xdg", "HOME": "/home/u"}, "/xdg/alvh/numba"),
        ({"HOME": "/home/u"}, "/home/u/.cache/alvh/numba"),
        # A relative XDG_CACHE_HOME is invalid (the XDG spec says to ignore it).
        ({"XDG_CACHE_HOME": "cache", "HOME": "/home/u"}, "/home/u/.cache/alvh/numba"),
        # Nowhere to go: numba's own default stays (and fails with its own message).
        ({}, None),
        ({"HOME": ""}, None),
    ],
    ids=["cache-directory", "xdg", "home", "relative-xdg", "no-home", "empty-home"],
)
def test_read_only_tree_takes_the_first_candidate(
    tmp_path: Path, environ: dict[str, str], expected: str | None
) -> None:
    rules = _tree(tmp_path / "rules")
    found = numba_cache_dir(environ, rules, writable=_writable_except(rules))
    assert found == (None if expected is None else Path(expected))


def test_an_unwritable_candidate_is_skipped(tmp_path: Path) -> None:
    rules = _tree(tmp_path / "rules")
    environ = {"CACHE_DIRECTORY": "/var/cache/alvh", "HOME": "/home/u"}
    writable = _writable_except(rules, Path("/var/cache/alvh"))
    assert numba_cache_dir(environ, rules, writable=writable) == Path("/home/u/.cache/alvh/numba")
    assert numba_cache_dir(environ, rules, writable=_writable_except(rules, Path("/"))) is None


# --- for real: a read-only install ---------------------------------------------------------

_CHILD = """
import os, sys
from daemon.cli import numba_cache_dir
if sys.argv[1] == "alvh":
    cache = numba_cache_dir(os.environ)
    assert cache is not None, "the read-only tree was not detected"
    os.environ["NUMBA_CACHE_DIR"] = str(cache)  # what alvh's CLI does before dispatch
import rules.features.kernels  # numba resolves each cache=True function's cache here
from rules.probe import twice
print(twice(21))
"""

_PROBE = """
from numba import njit


@njit(cache=True)
def twice(x):
    return 2 * x
"""


@pytest.fixture
def read_only_install(tmp_path: Path) -> Path:
    """A copy of the three packages (plus a tiny cache=True probe in rules/) that the
    child processes see read-only: mounted so in their own mount namespace."""
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs unshare(1) and mount(1) (util-linux) for a read-only mount")
    site = tmp_path / "site"
    for package in ("daemon", "adapters", "rules"):
        shutil.copytree(
            REPO_ROOT / package, site / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    (site / "rules" / "probe.py").write_text(_PROBE)
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot make a private mount namespace here: {probe.stderr.strip()}")
    return site


def _run_read_only(
    site: Path, home: Path, cache: Path, mode: str
) -> subprocess.CompletedProcess[str]:
    """Run the child with ``site`` and ``home`` read-only and ``cache`` writable."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "CACHE_DIRECTORY", "PYTHONPATH"}
    }
    env |= {
        "HOME": str(home),
        "CACHE_DIRECTORY": str(cache),
        "PYTHONPATH": str(site),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    mounts = " && ".join(
        f'mount --bind "{p}" "{p}" && mount -o remount,bind,ro "{p}"' for p in (site, home)
    )
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'{mounts} && exec "$0" -c "$1" "$2"',
            sys.executable,
            _CHILD,
            mode,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=cache.parent,
        env=env,
    )


def test_a_read_only_install_caches_in_the_fallback(
    read_only_install: Path, tmp_path: Path
) -> None:
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    cache.mkdir()
    # Without alvh's choice numba finds no writable place (the tree and ~ are read-only):
    without = _run_read_only(read_only_install, home, cache, "numba-only")
    assert without.returncode != 0
    assert "cannot cache function" in without.stderr
    # With it, the same child compiles and caches in $CACHE_DIRECTORY/numba.
    with_alvh = _run_read_only(read_only_install, home, cache, "alvh")
    assert with_alvh.returncode == 0, with_alvh.stderr
    assert with_alvh.stdout.strip() == "42"
    cached = sorted(p.name for p in (cache / "numba").rglob("*") if p.is_file())
    assert any(name.startswith("probe.twice") and name.endswith(".nbi") for name in cached), cached
    assert any(name.endswith(".nbc") for name in cached), cached
    assert not list(read_only_install.rglob("__pycache__"))
