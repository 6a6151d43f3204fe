"""The ``alvh`` command line (DESIGN.md): ``run``, ``check-config``, ``backtest``, ``demo``.

Exit codes: 0 ok, 2 bad input (config, data file, arguments), 1 anything else.
User mistakes are one clear line each on stderr, never a traceback.

Before a command that runs the pipeline, numba's cache is pointed at a writable place
when the installed package cannot hold it (:func:`numba_cache_dir`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path

from daemon import __version__
from daemon.errors import UserError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: The tree whose ``__pycache__`` folders numba writes its compiled loops to by default.
RULES_DIR = Path(__file__).resolve().parent.parent / "rules"
#: Commands that compile or load numba's loops (``check-config`` does not).
_PIPELINE_COMMANDS = frozenset({"run", "backtest", "demo"})


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse exits with 2 on usage errors already; keep its one-line form.
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"alvh: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="alvh",
        description="Adaptive Layered Volatility Hedge monitor for AMM liquidity providers",
    )
    p.add_argument("--version", action="version", version=f"alvh {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", required=True, type=Path, help="TOML config file")

    check = sub.add_parser("check-config", help="validate a config file and its rules")
    check.add_argument("file", type=Path)

    bt = sub.add_parser("backtest", help="replay history through the same pipeline")
    bt.add_argument("-c", "--config", required=True, type=Path)
    bt.add_argument(
        "--data", required=True, action="append", help="data file, folder or glob (repeatable)"
    )
    bt.add_argument(
        "--out",
        type=Path,
        default=Path("backtest-out"),
        help="output folder (default: %(default)s)",
    )
    bt.add_argument(
        "--format",
        choices=["auto", "csv", "klines", "subgraph", "minute", "hourly"],
        default="auto",
        help="data format (default: detected from the file)",
    )
    bt.add_argument(
        "--price", choices=["token0Price", "token1Price"], default=None, help="subgraph price field"
    )
    bt.add_argument(
        "--from", dest="start", default=None, help="start time (ISO 8601 or unix seconds)"
    )
    bt.add_argument("--to", dest="end", default=None, help="end time (ISO 8601 or unix seconds)")
    bt.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="skip and count malformed rows instead of failing",
    )
    bt.add_argument(
        "--fee",
        type=float,
        default=None,
        help="pool fee as a fraction (0.003), overriding the data",
    )
    bt.add_argument(
        "--interval",
        default=None,
        help="bar interval (e.g. 1h), overriding [bars] interval; not finer than the data",
    )
    bt.add_argument(
        "--spread",
        type=float,
        default=None,
        help="option bid/ask spread (fraction), replacing every layer's hedge.spread",
    )
    bt.add_argument(
        "--close-at",
        choices=["resolution", "expiry"],
        default="resolution",
        help="sell each hedge when its layer resolves, or hold it to expiry (default: %(default)s)",
    )
    bt.add_argument(
        "--drawdown",
        type=float,
        default=0.2,
        help="price fall (fraction) that makes a drawdown in the report (default: %(default)s)",
    )
    bt.add_argument(
        "--notional",
        type=float,
        default=10_000.0,
        help="value of the full-range position of pools with none configured (default: 10000)",
    )
    bt.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="PATH=V1,V2,...",
        help="parameter sweep, e.g. layers.L2.when=1.5,2,2.5 (repeatable: a grid)",
    )
    bt.add_argument(
        "--jobs", type=int, default=0, help="parallel processes for --sweep (default: CPU count)"
    )
    bt.add_argument("--no-chart", action="store_true", help="skip chart.png / report.html")
    bt.add_argument(
        "--quiet", action="store_true", help="no progress bar (shown only on a terminal anyway)"
    )

    demo = sub.add_parser(
        "demo", help="local end-to-end demo: anvil + Uniswap V3 + mosquitto + alvh"
    )
    demo.add_argument(
        "--speed",
        type=float,
        default=0.0,
        help="seconds between replayed swaps (default: as fast as possible)",
    )
    demo.add_argument(
        "--hours", type=int, default=0, help="limit the replay to this many hours of data (0: all)"
    )
    demo.add_argument(
        "--keep-running", action="store_true", help="keep everything running after the replay"
    )
    demo.add_argument(
        "--http", default=None, help="serve the dashboard on host:port (default: a free port)"
    )
    return p


def _writable_dir(path: Path) -> bool:
    """True if ``path`` is (or can be made) a folder this process can create files in:
    numba's own test (access(2) alone misses e.g. a read-only bind mount as root)."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _tree_writable(root: Path, writable: Callable[[Path], bool]) -> bool:
    """Whether numba can cache next to every module of ``root``: it writes to each
    source folder's ``__pycache__`` (creating it if missing)."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [d for d in subfolders if d != "__pycache__"]
        if not any(f.endswith(".py") for f in files):
            continue
        pycache = Path(folder) / "__pycache__"
        if not writable(pycache if pycache.is_dir() else Path(folder)):
            return False
    return True


def numba_cache_dir(
    environ: Mapping[str, str],
    rules_dir: Path = RULES_DIR,
    *,
    writable: Callable[[Path], bool] = _writable_dir,
) -> Path | None:
    """The folder to give numba as ``NUMBA_CACHE_DIR``, or None to leave numba's default.

    None when ``NUMBA_CACHE_DIR`` is already set, or when numba can write next to the
    sources (a checkout, a user's own venv). Otherwise (an install read-only to the user
    running it, e.g. /opt/alvh under systemd's ``ProtectSystem=strict``) the first
    writable of ``$CACHE_DIRECTORY/numba`` (systemd's ``CacheDirectory=``),
    ``$XDG_CACHE_HOME/alvh/numba`` and ``~/.cache/alvh/numba``. Without a writable cache
    numba refuses to compile a ``cache=True`` function at all ("no locator available").
    """
    if environ.get("NUMBA_CACHE_DIR"):
        return None
    if _tree_writable(rules_dir, writable):
        return None
    candidates: list[Path] = []
    if environ.get("CACHE_DIRECTORY"):
        # systemd passes one absolute path per CacheDirectory= entry, ":"-separated.
        candidates.append(Path(environ["CACHE_DIRECTORY"].split(":")[0]) / "numba")
    xdg = environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):  # the XDG spec: a relative value is to be ignored
        candidates.append(Path(xdg) / "alvh" / "numba")
    if os.path.isabs(environ.get("HOME", "")):
        candidates.append(Path(environ["HOME"]) / ".cache" / "alvh" / "numba")
    return next((c for c in candidates if writable(c)), None)


def _set_numba_cache_dir(environ: MutableMapping[str, str]) -> None:
    # Must run before numba is imported: it reads NUMBA_CACHE_DIR once, at import.
    cache = numba_cache_dir(environ)
    if cache is not None:
        environ["NUMBA_CACHE_DIR"] = str(cache)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in _PIPELINE_COMMANDS:
        _set_numba_cache_dir(os.environ)
    try:
        if args.command == "check-config":
            from daemon.check import check_config  # noqa: PLC0415 - lazy: keep check-config fast

            return check_config(args.file)
        if args.command == "run":
            from daemon.service.daemon import run_daemon  # noqa: PLC0415 - lazy: keep check-config fast

            return run_daemon(args.config)
        if args.command == "backtest":
            from daemon.backtest.run import run_backtest_command  # noqa: PLC0415 - lazy: keep check-config fast

            return run_backtest_command(args)
        if args.command == "demo":
            from daemon.demo.run import run_demo  # noqa: PLC0415 - lazy: keep check-config fast

            return run_demo(args)
    except UserError as exc:
        for line in exc.lines:
            print(f"alvh: {line}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
