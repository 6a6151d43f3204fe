"""The wheel installs and runs outside the checkout, as the service install does.

The commands of systemd/README.md ("Install"), run in a clean copy of the tree (a
fresh clone has no ``build/``; setuptools would pack whatever an earlier build left in
``build/lib``): a fresh virtualenv in a temporary folder, ``pip install -r
requirements.lock``, ``pip wheel --no-deps -w dist .`` with that venv's pip, and ``pip
install --no-deps`` of the wheel. From a working folder outside the checkout,
with no ``PYTHONPATH``, the installed ``alvh`` then validates a copy of
examples/alvh.toml, backtests two days of the vendored real Polygon minute data and
answers ``alvh run --help``.

Also checked: the wheel holds every file of the daemon/, adapters/ and rules/ trees
(each package with its ``__init__.py``, ``py.typed``, the dashboard's web/ files, the
demo's data) and nothing else; ``pip check`` finds the runtime lock complete for the
wheel's declared dependencies; the installed modules are the venv's.

Needs pip and the package index (the pip cache makes it quick): marked integration
and slow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("daemon", "adapters", "rules")
DEMO_CSV = REPO_ROOT / "daemon" / "demo" / "data" / "polygon_usdc_weth_005_2022-08-18_19.csv"
#: What a clean copy of the checkout leaves out: VCS, environments, caches, outputs.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "node_modules",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "test-artifacts",
    "out",
    "backtest-out",
)


@dataclass(frozen=True, slots=True)
class Installed:
    """A wheel built from the tree and the venv it is installed in."""

    wheel: Path
    source: Path  # the clean copy the wheel was built from
    venv: Path
    workdir: Path  # outside the checkout and the venv
    env: dict[str, str]
    seconds: float  # build + install

    def alvh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.venv / "bin" / "alvh"), *args],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.workdir,
            env=self.env,
            timeout=600,
        )


def _run(*argv: str | Path, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, f"{' '.join(map(str, argv))}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _package_files(root: Path) -> set[str]:
    """Every file of the packages under ``root``, as wheel paths (caches left out)."""
    files: set[str] = set()
    for package in PACKAGES:
        for path in (root / package).rglob("*"):
            parts = path.relative_to(root).parts
            if path.is_file() and "__pycache__" not in parts and path.suffix != ".pyc":
                files.add("/".join(parts))
    return files


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    assert not base.is_relative_to(REPO_ROOT), "the venv must live outside the checkout"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "NUMBA_CACHE_DIR"}
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    started = time.perf_counter()
    source = base / "source"
    shutil.copytree(REPO_ROOT, source, ignore=_NOT_SOURCE, symlinks=True)
    # The install notes' commands, run in the copy: venv, runtime lock, wheel, wheel.
    venv = base / "venv"
    _run(sys.executable, "-m", "venv", venv, env=env, cwd=source)
    pip = (str(venv / "bin" / "python"), "-m", "pip")
    _run(*pip, "install", "-r", "requirements.lock", env=env, cwd=source)
    _run(*pip, "wheel", "--no-deps", "-w", "dist", ".", env=env, cwd=source)
    (wheel,) = (source / "dist").glob("alvh-*.whl")
    _run(*pip, "install", "--no-deps", wheel, env=env, cwd=source)
    seconds = time.perf_counter() - started
    print(f"wheel built and installed with requirements.lock in {seconds:.1f} s")
    workdir = base / "work"
    workdir.mkdir()
    return Installed(wheel, source, venv, workdir, env, seconds)


def test_wheel_holds_every_file_of_the_packages_and_nothing_else(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
    shipped = {n for n in names if not n.split("/")[0].endswith(".dist-info")}
    for package in PACKAGES:
        for init in (REPO_ROOT / package).rglob("__init__.py"):
            assert init.relative_to(REPO_ROOT).as_posix() in shipped, f"package {init.parent}"
    for data in (
        "daemon/py.typed",
        "adapters/py.typed",
        "rules/py.typed",
        "daemon/service/web/index.html",
        "daemon/service/web/app.js",
        "daemon/service/web/mqtt.min.js",
        f"daemon/demo/data/{DEMO_CSV.name}",
        "daemon/demo/data/LICENSE.demeter.MIT.txt",
    ):
        assert data in shipped, data
    assert shipped == _package_files(installed.source)
    assert "alvh-0.1.0.dist-info/entry_points.txt" in names


def test_runtime_lock_satisfies_the_wheel(installed: Installed) -> None:
    out = _run(
        installed.venv / "bin" / "python",
        "-m",
        "pip",
        "check",
        env=installed.env,
        cwd=installed.workdir,
    )
    assert "No broken requirements found" in out


def test_installed_modules_are_the_venvs(installed: Installed) -> None:
    out = _run(
        installed.venv / "bin" / "python",
        "-c",
        "import adapters, daemon, rules; print(daemon.__file__, adapters.__file__, rules.__file__)",
        env=installed.env,
        cwd=installed.workdir,
    )
    for module_file in out.split():
        assert Path(module_file).is_relative_to(installed.venv), module_file


def test_installed_check_config_accepts_the_example(installed: Installed) -> None:
    config = installed.workdir / "alvh.toml"
    shutil.copyfile(REPO_ROOT / "examples" / "alvh.toml", config)
    result = installed.alvh("check-config", "alvh.toml")
    assert result.returncode == 0, result.stderr
    assert "alvh.toml: ok" in result.stdout
    assert "layers:   L1(level 1), L2(level 2), L3(level 3)" in result.stdout


def test_installed_check_config_reports_a_bad_config(installed: Installed) -> None:
    bad = installed.workdir / "bad.toml"
    bad.write_text(
        (REPO_ROOT / "examples" / "alvh.toml")
        .read_text()
        .replace('kind = "uniswap_v3"', 'kind = "v9"')
    )
    result = installed.alvh("check-config", "bad.toml")
    assert result.returncode == 2
    assert "pools[0].kind" in result.stderr


def test_installed_backtest_on_real_minute_data(installed: Installed) -> None:
    shutil.copyfile(REPO_ROOT / "examples" / "alvh.toml", installed.workdir / "bt.toml")
    data = installed.workdir / "polygon-usdc-weth.minute.csv"
    shutil.copyfile(DEMO_CSV, data)  # 2,879 real minute bars, 2022-08-18/19
    result = installed.alvh(
        "backtest", "-c", "bt.toml", "--data", data.name, "--out", "out", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    out = installed.workdir / "out"
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    assert alerts, "two days with a 12.7 % fall fired no layer"
    assert {a["schema"] for a in alerts} == {"alvh.alert.v1"}
    assert {a["event"] for a in alerts} <= {"firing", "resolved"}
    assert any(a["event"] == "firing" for a in alerts)
    assert all("2022-08-18" <= a["time"] < "2022-08-20" for a in alerts)
    report = json.loads((out / "report.json").read_text())
    assert report, "empty report"
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "report.html").is_file()
    assert result.stdout.strip(), "no summary printed"
    # The compiled loops were cached inside the venv: the tree was writable, so the
    # CLI left numba's default alone.
    assert list((installed.venv / "lib").rglob("site-packages/rules/**/__pycache__/*.nbi"))


def test_installed_run_and_version_answer(installed: Installed) -> None:
    result = installed.alvh("run", "--help")
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout
    version = installed.alvh("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == "alvh 0.1.0"
