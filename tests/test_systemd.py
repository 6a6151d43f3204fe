"""The systemd unit (systemd/alvh.service) and the daemon's notify client (daemon/sdnotify.py).

The unit is checked by systemd's own tools: ``systemd-analyze verify`` must print
nothing, and ``systemd-analyze security --offline=true`` must rate its exposure at 2.0
or lower. The notify client is checked against a real AF_UNIX datagram socket standing
in for systemd's ``$NOTIFY_SOCKET``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.service.sdnotify import Notifier

REPO_ROOT = Path(__file__).resolve().parent.parent
UNIT = REPO_ROOT / "systemd" / "alvh.service"
ENV_EXAMPLE = REPO_ROOT / "systemd" / "alvh.env.example"
SYSTEMD_HINT = "install it with: sudo apt-get install -y systemd"
MAX_EXPOSURE = 2.0

_EXPOSURE_RE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def _unit_entries(text: str) -> dict[str, list[str]]:
    """``[Service]``-style ``Key=value`` lines of every section as key -> values, in order
    (systemd keys may repeat). Comments and section headers are skipped."""
    entries: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a Key=value line: {raw!r}"
        entries.setdefault(key.strip(), []).append(value.strip())
    return entries


@pytest.fixture(scope="module")
def systemd_analyze() -> Path:
    """The systemd-analyze executable; FAILS the test with the install hint if absent."""
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail(f"systemd-analyze is not installed; {SYSTEMD_HINT}", pytrace=False)
    return Path(found)


@pytest.fixture
def checkable_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart program exists on this machine.

    ``systemd-analyze verify`` reports an ExecStart binary that does not exist, and
    /usr/local/bin/alvh is where an installed alvh lives, not where a checkout has it.
    The copy runs the repository's own ``.venv/bin/alvh`` (next to this Python) with the
    unit's arguments, or ``/bin/true`` in an environment without that script; both are
    executables, which is all verify and the offline security rating look at. Every
    other line is the unit's own.
    """
    program = Path(sys.executable).with_name("alvh")
    if not (program.is_file() and os.access(program, os.X_OK)):
        program = Path("/bin/true")
    text, count = re.subn(
        r"^ExecStart=/usr/local/bin/alvh ",
        f"ExecStart={program} ",
        UNIT.read_text(),
        flags=re.MULTILINE,
    )
    assert count == 1, "the unit should have one ExecStart=/usr/local/bin/alvh line"
    copy = tmp_path / UNIT.name  # verify wants the real unit name
    copy.write_text(text)
    return copy


def test_unit_verifies_without_any_message(systemd_analyze: Path, checkable_unit: Path) -> None:
    result = subprocess.run(
        [str(systemd_analyze), "verify", str(checkable_unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    # verify exits 0 on mere warnings (an unknown key, a bad value it ignores): any
    # output at all is a failure here.
    assert result.stderr == ""
    assert result.stdout == ""
    assert result.returncode == 0


def test_unit_security_exposure_at_most_2(systemd_analyze: Path, checkable_unit: Path) -> None:
    result = subprocess.run(
        [str(systemd_analyze), "security", "--offline=true", "--no-pager", str(checkable_unit)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )
    match = _EXPOSURE_RE.search(result.stdout)
    assert match is not None, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
    exposure = float(match.group(1))
    print(f"systemd-analyze security --offline=true: overall exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0


# What the daemon relies on: changing one of these breaks it or its hardening story.
UNIT_CONTRACT = [
    ("Type", "notify"),  # daemon sends READY=1 / STOPPING=1
    ("NotifyAccess", "main"),
    ("WatchdogSec", "60"),  # daemon pings at WATCHDOG_USEC / 2
    ("Restart", "on-failure"),
    ("RestartSec", "5"),
    ("RestartPreventExitStatus", "2"),  # exit 2 = bad config: a restart cannot fix it
    ("ExecStart", "/usr/local/bin/alvh run -c /etc/alvh/alvh.toml"),
    ("ExecReload", "/bin/kill -HUP $MAINPID"),  # SIGHUP reloads the config
    ("EnvironmentFile", "-/etc/alvh/alvh.env"),
    ("LoadCredential", "mqtt-password:/etc/alvh/mqtt-password"),
    ("DynamicUser", "yes"),
    ("StateDirectory", "alvh"),  # $STATE_DIRECTORY overrides daemon.state_dir
    ("ConfigurationDirectory", "alvh"),
    ("UMask", "0077"),
    ("ProtectSystem", "strict"),
    ("NoNewPrivileges", "yes"),
    ("PrivateTmp", "yes"),
    ("CacheDirectory", "alvh"),  # numba's cache of the compiled feature loops
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),  # RPC, broker, notify socket
    ("CapabilityBoundingSet", ""),
    ("AmbientCapabilities", ""),
    ("SystemCallArchitectures", "native"),
    # numpy's OpenBLAS calls mbind(2), which ~@resources filters: EPERM, not SIGSYS.
    ("SystemCallErrorNumber", "EPERM"),
]


@pytest.mark.parametrize(("key", "value"), UNIT_CONTRACT, ids=[k for k, _ in UNIT_CONTRACT])
def test_unit_keeps_the_daemon_contract(key: str, value: str) -> None:
    assert _unit_entries(UNIT.read_text()).get(key) == [value]


def test_unit_filters_system_calls_to_a_service_set() -> None:
    assert _unit_entries(UNIT.read_text())["SystemCallFilter"] == [
        "@system-service",
        "~@privileged @resources",
    ]


def test_unit_never_blocks_outbound_ip() -> None:
    # RPC endpoints are arbitrary remote hosts: an IP allow list belongs in a local drop-in.
    entries = _unit_entries(UNIT.read_text())
    assert "IPAddressDeny" not in entries
    assert "PrivateNetwork" not in entries


def test_env_example_lines_are_valid_assignments_once_uncommented() -> None:
    text = ENV_EXAMPLE.read_text()
    assignments = [
        line[1:].strip() for line in text.splitlines() if re.match(r"^#\s*[A-Z][A-Z0-9_]*=", line)
    ]
    assert any(a.startswith("ALVH_MQTT_PASSWORD=") for a in assignments)
    for assignment in assignments:
        # systemd's EnvironmentFile syntax: KEY=value, the key a shell-style name.
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S.*", assignment), assignment
    active = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert active == [], "the example must not set anything until the user uncomments it"


# --- the notify protocol ----------------------------------------------------------------


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's notify socket, named by NOTIFY_SOCKET.

    It lives in a short temp dir: AF_UNIX paths are limited to 107 bytes, and pytest's
    tmp_path can be longer than that.
    """
    with (
        tempfile.TemporaryDirectory(prefix="alvh-sd-") as directory,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server,
    ):
        path = str(Path(directory) / "notify")
        server.bind(path)
        server.settimeout(5.0)  # a deadline for a datagram that never comes, not a timing
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        monkeypatch.delenv("WATCHDOG_USEC", raising=False)
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        yield server


def test_notifier_sends_ready_watchdog_status_stopping(notify_socket: socket.socket) -> None:
    notifier = Notifier()
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.ready("following 1 chain(s), 2 pool(s)")
    assert notifier.watchdog()
    assert notifier.status("backfilling")
    assert notifier.stopping()
    datagrams = [notify_socket.recv(4096).decode() for _ in range(5)]
    assert datagrams == [
        "READY=1",
        "READY=1\nSTATUS=following 1 chain(s), 2 pool(s)",
        "WATCHDOG=1",
        "STATUS=backfilling",
        "STOPPING=1",
    ]


def test_notifier_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    # systemd may hand out "@name": a socket in Linux's abstract namespace.
    name = f"alvh-test-{os.getpid()}-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(5.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert Notifier().ready()
        assert server.recv(4096) == b"READY=1"


@pytest.mark.parametrize(
    "notify_socket_value",
    [None, "", "/nonexistent/alvh/notify"],
    ids=["unset", "empty", "missing-path"],
)
def test_notifier_never_raises(
    monkeypatch: pytest.MonkeyPatch, notify_socket_value: str | None
) -> None:
    if notify_socket_value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", notify_socket_value)
    notifier = Notifier()
    assert notifier.enabled is bool(notify_socket_value)
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False


@pytest.mark.parametrize(
    ("usec", "pid", "interval"),
    [
        ("60000000", None, 30.0),  # the unit's WatchdogSec=60
        ("60000000", "self", 30.0),
        ("60000000", "other", None),  # the watchdog is another process's
        ("3000000", None, 1.5),
        ("not-a-number", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, interval: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            own = str(os.getpid())
            resolved = {"self": own, "other": str(os.getpid() + 1)}.get(value, value)
            monkeypatch.setenv(name, resolved)
    assert Notifier().watchdog_interval == interval


def test_unit_watchdog_matches_the_daemon_ping(monkeypatch: pytest.MonkeyPatch) -> None:
    (watchdog_sec,) = _unit_entries(UNIT.read_text())["WatchdogSec"]
    # systemd passes WatchdogSec to the service as WATCHDOG_USEC.
    monkeypatch.setenv("WATCHDOG_USEC", str(int(watchdog_sec) * 1_000_000))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert Notifier().watchdog_interval == int(watchdog_sec) / 2


# --- MemoryDenyWriteExecute ---------------------------------------------------------------

_PR_SET_MDWE = 65  # Linux 6.3+: the kernel's own W^X lock, close to what systemd enforces
_PR_MDWE_REFUSE_EXEC_GAIN = 1

_UNDER_MDWE = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({set_mdwe}, {refuse}, 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_MDWE) failed: errno %d" % ctypes.get_errno())
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError:
    pass
else:
    sys.exit("a writable+executable mapping was allowed: MDWE is not in force")
import numpy as np
from rules.features.engine import FeatureEngine, FeatureParams
try:
    FeatureEngine(FeatureParams(bar_interval=60), np.full(1, 0.003))  # loads the loops
except OSError as exc:
    print("refused:", exc)
else:
    print("loaded")
"""


def _mdwe_available() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    # PR_GET_MDWE (66) answers EINVAL on kernels without the feature.
    return libc.prctl(66, 0, 0, 0, 0) >= 0 or ctypes.get_errno() != errno.EINVAL


def test_the_compiled_loops_need_executable_memory_so_the_unit_allows_it() -> None:
    """The feature loops are machine code numba maps into memory when it loads them: under
    the kernel's PR_SET_MDWE lock (what systemd's MemoryDenyWriteExecute=yes enforces) it
    cannot, so the unit leaves that setting out. Should a numba version load them under
    the lock, this fails: the unit can then set it again."""
    assert "MemoryDenyWriteExecute" not in _unit_entries(UNIT.read_text())
    if not sys.platform.startswith("linux") or not _mdwe_available():
        pytest.skip("needs Linux 6.3+ for PR_SET_MDWE; systemd's own check needs systemd")
    script = _UNDER_MDWE.format(set_mdwe=_PR_SET_MDWE, refuse=_PR_MDWE_REFUSE_EXEC_GAIN)
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("refused: "), result.stdout


def test_numba_caches_the_compiled_loops_in_the_cache_directory() -> None:
    # The venv is read-only for the dynamic user: without a writable NUMBA_CACHE_DIR every
    # start would compile the loops again.
    entries = _unit_entries(UNIT.read_text())
    (cache,) = entries["CacheDirectory"]
    assert f"NUMBA_CACHE_DIR=/var/cache/{cache}/numba" in entries["Environment"]
