"""A throw-away local Mosquitto for ``alvh demo``: free ports, a WebSockets listener
for the dashboard, anonymous access on 127.0.0.1 only, everything in a temp dir.

Guarantees: :meth:`LocalBroker.start` returns once the broker accepts TCP
connections (or raises :class:`BrokerError` with the reason and the broker's log);
:meth:`LocalBroker.stop` always reaps the process and removes the temp dir.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

INSTALL_HINT = "install it with: sudo apt-get install -y mosquitto mosquitto-clients"


class BrokerError(RuntimeError):
    pass


def find_mosquitto() -> str:
    path = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists()), None
    )
    if path is None:
        raise BrokerError(f"mosquitto is not installed; {INSTALL_HINT}")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBroker:
    def __init__(self, *, websockets: bool = True) -> None:
        self.websockets = websockets
        self.port = 0
        self.ws_port: int | None = None
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str | None:
        return f"ws://127.0.0.1:{self.ws_port}" if self.ws_port else None

    def start(self, timeout: float = 10.0) -> LocalBroker:
        binary = find_mosquitto()
        self._dir = Path(tempfile.mkdtemp(prefix="alvh-mosquitto-"))
        self.port = free_port()
        lines = [
            "per_listener_settings false",
            "allow_anonymous true",
            "persistence false",
            f"log_dest file {self._dir / 'mosquitto.log'}",
            f"listener {self.port} 127.0.0.1",
        ]
        if self.websockets:
            self.ws_port = free_port()
            lines += [f"listener {self.ws_port} 127.0.0.1", "protocol websockets"]
        conf = self._dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        self._proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self.stop()
                raise BrokerError(f"mosquitto exited at start: {err.strip() or self.log_tail()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on port {self.port} within {timeout:.0f}s")

    def log_tail(self, lines: int = 5) -> str:
        if self._dir is None:
            return ""
        log = self._dir / "mosquitto.log"
        return (
            "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""
        )

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
