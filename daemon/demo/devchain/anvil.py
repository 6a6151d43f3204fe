"""The anvil process: find it, start it on a free port, stop it without leaks.

Guarantees:
- the binary is ``$ALVH_ANVIL`` if set, else the one the npm package
  ``@foundry-rs/anvil`` installs under ``node_modules/`` of the repository root; if
  it is missing, :class:`AnvilNotFoundError` says how to install it;
- anvil listens on ``127.0.0.1`` on a port the kernel picks (``--port 0``); the port
  is read from its ``Listening on 127.0.0.1:PORT`` line, within ``startup_timeout``
  seconds or :class:`AnvilStartError` (with anvil's last output) is raised;
- by default anvil mines only on request (``--no-mining``), so a caller controls
  block contents and timestamps, and orders a block's transactions first-in
  first-out (``--order fifo``), so a block holds them in the order they were sent;
- :meth:`Anvil.stop` terminates, waits, kills after a grace period and reaps the
  process (no zombie); it runs at interpreter exit too, and on Linux anvil gets
  SIGTERM from the kernel if the Python thread that started it dies abruptly;
- anvil's output is drained continuously (it logs every request, and a full pipe
  would block it) and the last lines are kept for error messages;
- disk use is bounded: anvil spills old block states to disk (about 10 MB a block with
  a few hundred pools, unbounded by default), so it gets a private ``--cache-path``
  removed by :meth:`Anvil.stop` and at most :data:`MAX_PERSISTED_STATES` states on it.
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from daemon.demo.devchain.errors import INSTALL_HINT, AnvilNotFoundError, AnvilStartError

ANVIL_ENV = "ALVH_ANVIL"
REPO_ROOT = Path(__file__).resolve().parents[3]
ANVIL_RELATIVE = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
DEFAULT_CHAIN_ID = 31337

_LISTENING_RE = re.compile(r"Listening on 127\.0\.0\.1:(\d+)")
#: Old block states anvil may keep on disk (beyond those it keeps in memory).
MAX_PERSISTED_STATES = 64
_LOG_TAIL_LINES = 60
_PR_SET_PDEATHSIG = 1


def find_anvil(binary: str | os.PathLike[str] | None = None) -> Path:
    """The anvil executable: ``binary``, else ``$ALVH_ANVIL``, else ``node_modules``.

    Raises :class:`AnvilNotFoundError` with an install hint when there is none.
    """
    if binary is not None:
        path = Path(binary)
        source = f"the given anvil path {path}"
    elif os.environ.get(ANVIL_ENV):
        path = Path(os.environ[ANVIL_ENV])
        source = f"${ANVIL_ENV}={path}"
    else:
        path = REPO_ROOT / ANVIL_RELATIVE
        if not path.exists():
            raise AnvilNotFoundError(f"anvil is not installed at {path}; {INSTALL_HINT}")
        source = str(path)
    if not path.is_file():
        raise AnvilNotFoundError(f"{source} is not a file; {INSTALL_HINT}")
    if not os.access(path, os.X_OK):
        raise AnvilNotFoundError(f"{source} is not executable; {INSTALL_HINT}")
    return path


def _death_signal_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGTERM the child when its parent dies.

    Linux only. ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child
    exits, so it is only used when starting from the main thread, whose end is the
    process's end; from a worker thread, atexit and :meth:`Anvil.stop` remain.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # libc is in the process already
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


class Anvil:
    """One anvil process on a free loopback port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Mining: ``block_time`` set means interval mining every ``block_time`` seconds;
    otherwise ``automine=True`` mines a block per transaction (anvil's default) and
    ``automine=False`` (the default here) mines only on ``evm_mine``.
    ``timestamp`` is the genesis block's timestamp (unix seconds); ``gas_limit`` the
    block gas limit (anvil's default, 30M, holds ten of the harness's V3 swaps).
    """

    def __init__(
        self,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        block_time: float | None = None,
        automine: bool = False,
        timestamp: int | None = None,
        accounts: int = 10,
        gas_limit: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        startup_timeout: float = 20.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        if chain_id <= 0:
            raise ValueError(f"chain_id must be positive, got {chain_id}")
        if block_time is not None and block_time <= 0:
            raise ValueError(f"block_time must be positive, got {block_time}")
        if block_time is not None and automine:
            raise ValueError("block_time (interval mining) and automine are exclusive")
        if timestamp is not None and timestamp < 0:
            raise ValueError(f"timestamp must be unix seconds >= 0, got {timestamp}")
        if accounts < 1:
            raise ValueError(f"accounts must be at least 1, got {accounts}")
        if gas_limit is not None and gas_limit < 1_000_000:
            raise ValueError(f"gas_limit must be at least 1M, got {gas_limit}")
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be positive, got {startup_timeout}")
        self.chain_id = chain_id
        self.block_time = block_time
        self.automine = automine
        self.timestamp = timestamp
        self.accounts = accounts
        self.gas_limit = gas_limit
        self.startup_timeout = startup_timeout
        self._binary = binary
        self._extra_args = tuple(extra_args)
        self._cache_dir: str | None = None
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=_LOG_TAIL_LINES)
        self._port: int | None = None
        self._port_seen = threading.Event()
        self._lock = threading.Lock()

    # --- properties ---------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port anvil listens on (only while running)."""
        if self._port is None:
            raise AnvilStartError("anvil is not running")
        return self._port

    @property
    def url(self) -> str:
        """The JSON-RPC HTTP endpoint, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id of the last started anvil, or None if never started."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._process is not None and self._process.poll() is None

    def log_tail(self) -> str:
        """The last lines anvil printed (for diagnostics)."""
        with self._lock:
            return "".join(self._tail)

    def command(self) -> list[str]:
        """The full command line :meth:`start` runs."""
        args = [str(find_anvil(self._binary)), "--host", "127.0.0.1", "--port", "0"]
        args += ["--max-persisted-states", str(MAX_PERSISTED_STATES)]
        if self._cache_dir is not None:
            args += ["--cache-path", self._cache_dir]
        args += ["--chain-id", str(self.chain_id), "--accounts", str(self.accounts)]
        args += ["--order", "fifo"]
        if self.block_time is not None:
            args += ["--block-time", f"{self.block_time:g}"]
        elif not self.automine:
            args.append("--no-mining")
        if self.timestamp is not None:
            args += ["--timestamp", str(self.timestamp)]
        if self.gas_limit is not None:
            args += ["--gas-limit", str(self.gas_limit)]
        return args + list(self._extra_args)

    # --- lifecycle ----------------------------------------------------------------

    def start(self) -> Self:
        """Start anvil and wait until it listens. Raises if it is already running."""
        if self._process is not None:
            raise AnvilStartError("this Anvil was already started; make a new one")
        self._cache_dir = tempfile.mkdtemp(prefix="alvh-anvil-")
        command = self.command()
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
                # Its own session: a Ctrl-C in the terminal reaches Python, which then
                # stops anvil in order, instead of killing the node under a live client.
                start_new_session=True,
                preexec_fn=_death_signal_hook(),  # noqa: PLW1509 - it only calls prctl(2)
            )
        except OSError as exc:
            raise AnvilStartError(f"could not run {command[0]}: {exc}") from exc
        self._process = process
        atexit.register(self.stop)
        self._reader = threading.Thread(
            target=self._drain, args=(process,), name=f"anvil-{process.pid}-stdout", daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self._port_seen.wait(0.05):
            if process.poll() is not None:
                self._reap()
                raise AnvilStartError(
                    f"anvil exited with code {process.returncode} before listening; "
                    f"its output:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise AnvilStartError(
                    f"anvil did not print 'Listening on 127.0.0.1:PORT' within "
                    f"{self.startup_timeout:g}s; its output:\n{self.log_tail()}"
                )
        return self

    def _drain(self, process: subprocess.Popen[str]) -> None:
        stdout = process.stdout
        if stdout is None:  # pragma: no cover - Popen was given stdout=PIPE
            return
        for line in stdout:
            with self._lock:
                self._tail.append(line)
            if self._port is None:
                match = _LISTENING_RE.search(line)
                if match is not None:
                    self._port = int(match.group(1))
                    self._port_seen.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate anvil, kill it after ``timeout`` seconds, and reap it. Idempotent."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            try:
                process.terminate()
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            except ProcessLookupError:  # pragma: no cover - exited between poll and signal
                pass
        self._reap()

    def _reap(self) -> None:
        process = self._process
        if process is None:
            return
        process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5.0)
        if process.stdout is not None:
            process.stdout.close()
        self._port = None
        atexit.unregister(self.stop)
        if self._cache_dir is not None:
            shutil.rmtree(self._cache_dir, ignore_errors=True)
            self._cache_dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"url={self.url}" if self.running and self._port else "stopped"
        return f"<Anvil pid={self.pid} chain_id={self.chain_id} {state}>"
