"""Pytest plugin: a real Mosquitto per test, configured as the test needs, and MQTT clients.

Guarantees:
- :class:`Broker` runs ``mosquitto`` (Debian package ``mosquitto``) from its own temp
  dir on free loopback ports; :meth:`Broker.start` returns once every listener accepts
  TCP connections, or raises :class:`BrokerStartError` with the broker's log;
- options: anonymous access, users with passwords (hashed by ``mosquitto_passwd``), an
  ACL file (:class:`AclRule`), a TLS listener with a throw-away CA made by the ``openssl``
  CLI (:func:`make_tls_files`), a WebSockets listener, persistence in the temp dir;
- :meth:`Broker.restart` comes back on the same ports (and, with persistence, with the
  retained messages and the queued QoS 1 messages of persistent sessions);
- :meth:`Broker.close` stops the clients made for the broker, terminates or kills and
  reaps the process and removes the temp dir; it also runs at interpreter exit, and on
  Linux the kernel sends mosquitto SIGTERM if the thread that started it dies;
- a missing ``mosquitto``, ``mosquitto_passwd`` or ``openssl`` raises
  :class:`BrokerNotFoundError` with the install command; the fixtures turn that into a
  test FAILURE (never a skip);
- :class:`Client` and :class:`Subscriber` (paho-mqtt 2, MQTT 5 by default, unique client
  ids) connect synchronously and raise :class:`MqttConnectError` with the broker's
  reason code when it refuses; the subscriber collects messages in paho's network
  thread and :meth:`Subscriber.wait_for` blocks until a predicate over them holds.

Fixtures: ``mosquitto_bin`` (session), ``broker`` (function: anonymous, plain TCP) and
``broker_factory`` (function: ``broker_factory(**options)`` starts a :class:`Broker`;
all are closed at teardown). When a test fails, the tail of each broker's log is printed
in the test's teardown section.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, TypedDict, Unpack

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

INSTALL_HINT = "install it with: sudo apt-get install -y mosquitto mosquitto-clients"
OPENSSL_HINT = "install it with: sudo apt-get install -y openssl"
HOST = "127.0.0.1"

AclAccess = Literal["read", "write", "readwrite", "deny"]
Transport = Literal["tcp", "websockets"]

_ACL_ACCESS = ("read", "write", "readwrite", "deny")
_LOG_TAIL_LINES = 60
_PR_SET_PDEATHSIG = 1
# Without debug lines: a soak run publishes thousands of messages a second.
_LOG_TYPES = ("error", "warning", "notice", "information", "subscribe", "unsubscribe")


class BrokerError(RuntimeError):
    """Base class of the plugin's errors."""


class BrokerNotFoundError(BrokerError):
    """A program the broker needs (mosquitto, mosquitto_passwd, openssl) is missing."""


class BrokerStartError(BrokerError):
    """Mosquitto did not start, or did not listen in time; the message holds its log."""


class MqttConnectError(Exception):
    """The broker refused the connection; ``reason_code`` is its CONNACK reason code."""

    def __init__(self, reason_code: int, reason: str) -> None:
        super().__init__(f"broker refused the connection: {reason} (reason code {reason_code})")
        self.reason_code = reason_code
        self.reason = reason


class MqttSubscribeError(Exception):
    """The broker refused a subscription (e.g. an ACL without read access)."""

    def __init__(self, topic: str, reason_code: int, reason: str) -> None:
        super().__init__(f"subscription to {topic!r} refused: {reason} (reason code {reason_code})")
        self.topic = topic
        self.reason_code = reason_code
        self.reason = reason


# --- programs -------------------------------------------------------------------------


def find_program(name: str, hint: str, extra_dirs: Sequence[str] = ()) -> Path:
    found = shutil.which(name)
    if found is not None:
        return Path(found)
    # Debian installs mosquitto in /usr/sbin, which is not on a normal user's PATH.
    for directory in extra_dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerNotFoundError(f"{name} is not installed (not on PATH); {hint}")


def find_mosquitto() -> Path:
    """The mosquitto broker executable, or :class:`BrokerNotFoundError` with the hint."""
    return find_program("mosquitto", INSTALL_HINT, ("/usr/sbin", "/usr/local/sbin"))


def find_mosquitto_passwd() -> Path:
    """The ``mosquitto_passwd`` tool (Debian package ``mosquitto``)."""
    return find_program("mosquitto_passwd", INSTALL_HINT, ("/usr/bin", "/usr/sbin"))


def find_openssl() -> Path:
    """The ``openssl`` command line tool, used to make throw-away certificates."""
    return find_program("openssl", OPENSSL_HINT, ("/usr/bin",))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --- value types ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AclRule:
    """One line of a Mosquitto ACL file.

    ``user=None`` and ``pattern=False``: a rule for anonymous clients. ``user="ops"``:
    a rule for that user. ``pattern=True``: a rule for every client, where ``%u`` and
    ``%c`` stand for its username and client id. Once a broker has an ACL, a client may
    do only what a rule grants; ``deny`` wins over grants for the same topic.
    """

    topic: str
    access: AclAccess = "readwrite"
    user: str | None = None
    pattern: bool = False

    def __post_init__(self) -> None:
        if not self.topic or any(c.isspace() for c in self.topic):
            raise ValueError(f"ACL topic must be non-empty without spaces, got {self.topic!r}")
        if self.access not in _ACL_ACCESS:
            raise ValueError(f"ACL access must be one of {_ACL_ACCESS}, got {self.access!r}")
        if self.user is not None:
            _check_username(self.user)
            if self.pattern:
                raise ValueError("a pattern rule applies to every client: give no user")

    def line(self) -> str:
        """The rule as written in the ACL file."""
        keyword = "pattern" if self.pattern else "topic"
        return f"{keyword} {self.access} {self.topic}"


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a throw-away PKI: a CA, a server certificate valid for 127.0.0.1 and
    localhost, and a client certificate (CN ``alvh-test-client``), all signed by the CA."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def __post_init__(self) -> None:
        for path in (self.ca_cert, self.server_cert, self.server_key):
            if not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")


@dataclass(frozen=True, slots=True)
class Message:
    """An MQTT message as a subscriber received it (MQTT 5 properties when present)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    content_type: str | None = None
    message_expiry_interval: int | None = None
    user_properties: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        """The payload decoded as UTF-8."""
        return self.payload.decode("utf-8")

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)

    @classmethod
    def from_paho(cls, msg: paho.MQTTMessage) -> Message:
        props = msg.properties
        content_type = getattr(props, "ContentType", None) if props is not None else None
        expiry = getattr(props, "MessageExpiryInterval", None) if props is not None else None
        user_props = getattr(props, "UserProperty", None) if props is not None else None
        return cls(
            topic=msg.topic,
            payload=bytes(msg.payload),
            qos=msg.qos,
            retain=bool(msg.retain),
            dup=bool(msg.dup),
            content_type=content_type,
            message_expiry_interval=expiry,
            user_properties=tuple((str(k), str(v)) for k, v in user_props or ()),
        )


def _check_username(name: str) -> None:
    # ':' separates name and hash in the password file; whitespace breaks the ACL file.
    if not name or ":" in name or any(c.isspace() for c in name):
        raise ValueError(f"MQTT username must be non-empty without ':' or spaces, got {name!r}")


# --- TLS ------------------------------------------------------------------------------

# Our own openssl config, so the system's openssl.cnf cannot add or clash with extensions.
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = alvh-test
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


def make_tls_files(directory: Path, *, openssl: Path | None = None) -> TlsFiles:
    """Make a throw-away CA, server and client certificate (EC P-256, valid 2 days) in
    ``directory`` with the ``openssl`` CLI. Raises :class:`BrokerNotFoundError` without it."""
    tool = str(openssl or find_openssl())
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG)
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        result = subprocess.run(
            [tool, *args], capture_output=True, text=True, check=False, cwd=directory
        )
        if result.returncode != 0:
            raise BrokerError(f"openssl {args[0]} failed: {result.stderr.strip()}")

    files = {name: directory / name for name in ("ca.crt", "ca.key", "ca.srl")}
    run(
        "req", "-x509", *new_key, "-config", str(config), "-extensions", "ca_ext",
        "-subj", "/CN=alvh test CA", "-days", "2",
        "-keyout", str(files["ca.key"]), "-out", str(files["ca.crt"]),
    )  # fmt: skip
    for role, common_name in (("server", "localhost"), ("client", "alvh-test-client")):
        key, csr, cert = (directory / f"{role}.{ext}" for ext in ("key", "csr", "crt"))
        run(
            "req", "-new", *new_key, "-config", str(config), "-subj", f"/CN={common_name}",
            "-keyout", str(key), "-out", str(csr),
        )  # fmt: skip
        run(
            "x509", "-req", "-in", str(csr), "-CA", str(files["ca.crt"]),
            "-CAkey", str(files["ca.key"]), "-CAserial", str(files["ca.srl"]),
            "-CAcreateserial", "-days", "2", "-extfile", str(config),
            "-extensions", f"{role}_ext", "-out", str(cert),
        )  # fmt: skip
    return TlsFiles(
        ca_cert=files["ca.crt"],
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
    )


# --- the broker -----------------------------------------------------------------------


def _death_signal_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking the kernel to SIGTERM mosquitto when its parent dies.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, so it is
    only used from the main thread, whose end is the process's end.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return hook


class BrokerOptions(TypedDict, total=False):
    """The keyword options of :class:`Broker` (what ``broker_factory`` accepts)."""

    allow_anonymous: bool
    users: Mapping[str, str] | None
    acl: Sequence[AclRule] | None
    tls: bool
    require_client_cert: bool
    websockets: bool
    persistence: bool
    autosave_interval: int | None
    extra_config: Sequence[str]
    verbose: bool
    startup_timeout: float


class Broker:
    """One Mosquitto on free 127.0.0.1 ports, with its files in a private temp dir.

    - ``allow_anonymous``: clients without a username may connect;
    - ``users``: username -> password (hashed into a password file);
    - ``acl``: rules of an ACL file; None means no ACL (every client may do anything).
      Mosquitto 2.0 grants a subscription the ACL forbids and filters at delivery; it
      answers a forbidden publish with reason code 135 (MQTT 5) and drops the message;
    - ``tls``: every listener speaks TLS with a certificate from a throw-away CA
      (:attr:`tls_files`); ``require_client_cert`` also demands a client certificate
      signed by that CA;
    - ``websockets``: an extra MQTT-over-WebSockets listener on :attr:`ws_port` (Debian's
      Mosquitto 2.0.11 binds it to every interface: its libwebsockets ignores the address);
    - ``persistence``: retained messages, sessions and their queued messages are saved
      to the temp dir on a clean stop (and every ``autosave_interval`` seconds if set),
      so they survive :meth:`restart` (but not :meth:`kill` between autosaves);
    - ``extra_config``: more ``mosquitto.conf`` lines (general options, before listeners);
    - ``verbose``: log every packet (``log_type all``).

    Use as a context manager (start, then close), or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        *,
        allow_anonymous: bool = True,
        users: Mapping[str, str] | None = None,
        acl: Sequence[AclRule] | None = None,
        tls: bool = False,
        require_client_cert: bool = False,
        websockets: bool = False,
        persistence: bool = False,
        autosave_interval: int | None = None,
        extra_config: Sequence[str] = (),
        verbose: bool = False,
        startup_timeout: float = 10.0,
        binary: str | os.PathLike[str] | None = None,
    ) -> None:
        for name, password in (users or {}).items():
            _check_username(name)
            if not password or "\n" in password:
                raise ValueError(f"password of {name!r} must be non-empty, on one line")
        if not allow_anonymous and not users and not require_client_cert:
            raise ValueError("no client could connect: allow anonymous access or give users")
        if require_client_cert and not tls:
            raise ValueError("require_client_cert needs tls=True")
        if autosave_interval is not None and (not persistence or autosave_interval < 1):
            raise ValueError("autosave_interval needs persistence=True and is >= 1 second")
        if any("\n" in line for line in extra_config):
            raise ValueError("extra_config holds one config line per item")
        if startup_timeout <= 0:
            raise ValueError(f"startup_timeout must be positive, got {startup_timeout}")
        self.allow_anonymous = allow_anonymous
        self.users: dict[str, str] = dict(users or {})
        self.acl: tuple[AclRule, ...] | None = tuple(acl) if acl is not None else None
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.websockets = websockets
        self.persistence = persistence
        self.autosave_interval = autosave_interval
        self.extra_config = tuple(extra_config)
        self.verbose = verbose
        self.startup_timeout = startup_timeout
        # Fail fast, before making any file, when a needed program is missing.
        self.binary = Path(binary) if binary is not None else find_mosquitto()
        self._passwd_bin = find_mosquitto_passwd() if self.users else None
        self._openssl_bin = find_openssl() if tls else None
        self.directory = Path(tempfile.mkdtemp(prefix="alvh-mosquitto-"))
        self.config_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self._output_path = self.directory / "mosquitto.out"  # stderr before logging starts
        self.persistence_path = self.directory / "mosquitto.db"
        self.tls_files: TlsFiles | None = None
        self._port: int | None = None
        self._ws_port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._clients: list[Client] = []
        self._lock = threading.Lock()
        atexit.register(self.close)

    # --- properties -------------------------------------------------------------------

    @property
    def host(self) -> str:
        """Always ``127.0.0.1``: test brokers never listen beyond loopback."""
        return HOST

    @property
    def port(self) -> int:
        """The MQTT listener's port (TLS when ``tls``); fixed from the first start on."""
        if self._port is None:
            raise BrokerError("the broker was never started")
        return self._port

    @property
    def ws_port(self) -> int | None:
        """The WebSockets listener's port, None without ``websockets``."""
        return self._ws_port

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``, or ``mqtts://...`` with TLS: the daemon's ``mqtt.url``."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str | None:
        """``ws://127.0.0.1:PORT/mqtt`` (``wss://`` with TLS), None without ``websockets``."""
        if self._ws_port is None:
            return None
        return f"{'wss' if self.tls else 'ws'}://{HOST}:{self._ws_port}/mqtt"

    @property
    def ca_cert(self) -> Path | None:
        """The throw-away CA certificate that signed the broker's certificate (TLS only)."""
        return self.tls_files.ca_cert if self.tls_files is not None else None

    @property
    def pid(self) -> int | None:
        """The process id of the running (or last) mosquitto, None if never started."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True while the mosquitto process is alive (also while paused)."""
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """Everything mosquitto logged so far, across restarts."""
        parts = []
        for path in (self._output_path, self.log_path):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of :meth:`log_text`."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def client_ssl_context(self, *, client_cert: bool | None = None) -> ssl.SSLContext:
        """A client context trusting this broker's CA (and hostname-checking 127.0.0.1);
        with the client certificate when ``client_cert`` (default: if the broker needs it)."""
        if self.tls_files is None:
            raise BrokerError("this broker has no TLS listener")
        context = ssl.create_default_context(cafile=str(self.tls_files.ca_cert))
        if client_cert is None:
            client_cert = self.require_client_cert
        if client_cert:
            context.load_cert_chain(str(self.tls_files.client_cert), str(self.tls_files.client_key))
        return context

    # --- configuration ----------------------------------------------------------------

    def _write_files(self) -> None:
        if self.users and not (self.directory / "passwd").exists():
            passwd = self.directory / "passwd"
            assert self._passwd_bin is not None
            for index, (name, password) in enumerate(self.users.items()):
                create = ["-c"] if index == 0 else []
                result = subprocess.run(
                    [str(self._passwd_bin), *create, "-b", str(passwd), name, password],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if result.returncode != 0:
                    raise BrokerError(f"mosquitto_passwd failed: {result.stderr.strip()}")
        if self.acl is not None:
            (self.directory / "acl").write_text(acl_file_text(self.acl))
        if self.tls and self.tls_files is None:
            self.tls_files = make_tls_files(self.directory / "tls", openssl=self._openssl_bin)
        self.config_path.write_text(self._config_text())

    def _config_text(self) -> str:
        lines = [
            f"log_dest file {self.log_path}",
            *(["log_type all"] if self.verbose else [f"log_type {t}" for t in _LOG_TYPES]),
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
        ]
        if os.geteuid() == 0:
            # As root, mosquitto would switch to the 'mosquitto' user, which cannot read
            # or write this private temp dir; 'root' keeps it as the test's user.
            lines.append("user root")
        if self.users:
            lines.append(f"password_file {self.directory / 'passwd'}")
        if self.acl is not None:
            lines.append(f"acl_file {self.directory / 'acl'}")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.directory}/",
                f"persistence_file {self.persistence_path.name}",
            ]
            if self.autosave_interval is not None:
                lines.append(f"autosave_interval {self.autosave_interval}")
        else:
            lines.append("persistence false")
        lines += self.extra_config
        lines += self._listener_lines(self.port, "mqtt")
        if self._ws_port is not None:
            lines += self._listener_lines(self._ws_port, "websockets")
        return "\n".join(lines) + "\n"

    def _listener_lines(self, port: int, protocol: str) -> list[str]:
        lines = [f"listener {port} {HOST}", f"protocol {protocol}"]
        if self.tls_files is not None:
            lines += [
                f"cafile {self.tls_files.ca_cert}",
                f"certfile {self.tls_files.server_cert}",
                f"keyfile {self.tls_files.server_key}",
                f"require_certificate {'true' if self.require_client_cert else 'false'}",
            ]
        return lines

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> Self:
        """Start mosquitto and wait until every listener accepts connections.

        The first start picks free ports (retrying if another process takes one first);
        later starts reuse them, so clients reconnect to the same URL.
        """
        if self._closed:
            raise BrokerError("this broker was closed; make a new one")
        if self.running:
            raise BrokerError(f"mosquitto is already running (pid {self.pid})")
        first_start = self._port is None
        attempts = 3 if first_start else 1
        for attempt in range(attempts):
            if first_start:
                self._port = free_port()
                self._ws_port = free_port() if self.websockets else None
                if self._ws_port == self._port:  # pragma: no cover - kernel reuse race
                    self._ws_port = free_port()
            try:
                self._launch()
            except BrokerStartError as exc:
                if "Address already in use" in str(exc) and attempt + 1 < attempts:
                    continue
                raise
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def _launch(self) -> None:
        self._write_files()
        with self._output_path.open("ab") as output:
            process = subprocess.Popen(
                [str(self.binary), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                # Its own session: a Ctrl-C reaches pytest, which then stops the broker
                # in order instead of killing it under a live client.
                start_new_session=True,
                preexec_fn=_death_signal_hook(),  # noqa: PLW1509 - it only calls prctl(2)
            )
        self._process = process
        ports = [self.port] + ([self._ws_port] if self._ws_port is not None else [])
        deadline = time.monotonic() + self.startup_timeout
        pending = list(ports)
        while pending:
            if process.poll() is not None:
                process.wait()
                raise BrokerStartError(
                    f"mosquitto exited with code {process.returncode} before listening on "
                    f"{pending}; its log:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self._terminate(timeout=2.0)
                raise BrokerStartError(
                    f"mosquitto did not listen on {pending} within {self.startup_timeout:g}s;"
                    f" its log:\n{self.log_tail()}"
                )
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((HOST, pending[0])) == 0:
                    pending.pop(0)
                    continue
            time.sleep(0.02)

    def _terminate(self, timeout: float) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a paused broker cannot handle SIGTERM
            process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop mosquitto cleanly (SIGTERM: it saves persistence), killing it after
        ``timeout`` seconds. Keeps ports and files for :meth:`start`. Idempotent."""
        self._terminate(timeout)

    def kill(self) -> None:
        """SIGKILL mosquitto (a crash: nothing is saved since the last autosave) and reap it."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()

    def restart(self, timeout: float = 5.0) -> Self:
        """:meth:`stop` then :meth:`start` on the same ports (an outage as clients see it)."""
        self.stop(timeout)
        return self.start()

    def pause(self) -> None:
        """SIGSTOP: the broker hangs with its sockets open (a stalled, not a dead, broker)."""
        if not self.running:
            raise BrokerError("mosquitto is not running")
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if not self.running:
            raise BrokerError("mosquitto is not running")
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        """Stop the clients made for this broker, stop mosquitto and delete its temp dir.
        Idempotent; the broker cannot be started again."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.stop()
        self._terminate(timeout=5.0)
        shutil.rmtree(self.directory, ignore_errors=True)
        atexit.unregister(self.close)

    def _register(self, client: Client) -> None:
        with self._lock:
            if self._closed:
                raise BrokerError("this broker was closed")
            self._clients.append(client)

    def _unregister(self, client: Client) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._clients.remove(client)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"url={self.url}" if self.running else "stopped"
        return f"<Broker pid={self.pid} {state} dir={self.directory}>"


def acl_file_text(rules: Sequence[AclRule]) -> str:
    # Mosquitto reads rules before the first 'user' line as the anonymous clients' rules,
    # and every rule after a 'user' line as that user's, so group them in that order.
    anonymous = [r.line() for r in rules if r.user is None and not r.pattern]
    patterns = [r.line() for r in rules if r.pattern]
    lines = anonymous + patterns
    for user in dict.fromkeys(r.user for r in rules if r.user is not None):
        lines.append(f"user {user}")
        lines += [r.line() for r in rules if r.user == user]
    return "\n".join(lines) + "\n"


# --- MQTT clients for tests -----------------------------------------------------------


def _close_sockets_in(exc: BaseException) -> None:
    """Close the sockets left in the frames of a failed connect.

    paho 2 does not close the socket whose TLS (or WebSocket) handshake failed; it is
    still a local variable in the traceback's frames. Closing it here keeps the test
    free of a ResourceWarning, which ``filterwarnings=error`` would turn into a failure
    in whatever test runs when the garbage collector finds it.
    """
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        for value in list(frame.f_locals.values()):
            if isinstance(value, socket.socket):
                value.close()


class Client:
    """A synchronous paho-mqtt 2 client of a :class:`Broker`, for publishing in tests.

    The constructor connects and waits for the CONNACK: a refusal raises
    :class:`MqttConnectError` (``.reason_code``: Mosquitto 2.0 answers a wrong password
    and a missing one alike with 135, not authorized); a failed TLS handshake raises
    :class:`ssl.SSLError`; a connection closed before the CONNACK raises
    :class:`ConnectionError`. TLS follows the broker unless ``ssl_context`` is given
    (e.g. ``ssl.create_default_context()`` to trust only the system CAs). After a broker
    restart paho reconnects by itself (1-2 s back-off).

    Sessions: ``session_expiry`` 0 (the default) is a clean session that ends with the
    connection. ``session_expiry`` > 0 is a persistent session: the broker keeps it and
    queues QoS 1 messages for it after :meth:`stop` or a lost connection (MQTT 5: for
    that many seconds; MQTT 3.1.1: ``clean_session=False``, without expiry). Such a
    client connects without clean start, so it resumes the session an earlier client
    with the same ``client_id`` left (with the default unique id there is none).
    Clean start is never used with it because Mosquitto 2.0.11 does not save a session
    opened with clean start to its persistence file, so it would not survive a restart.
    """

    def __init__(
        self,
        broker: Broker,
        *,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        transport: Transport = "tcp",
        client_id: str | None = None,
        protocol: Literal[5, 4] = 5,
        session_expiry: int = 0,
        keepalive: int = 30,
        timeout: float = 10.0,
    ) -> None:
        if session_expiry < 0:
            raise ValueError(f"session_expiry must be >= 0 seconds, got {session_expiry}")
        if transport == "websockets" and broker.ws_port is None:
            raise ValueError("this broker has no WebSockets listener (websockets=True)")
        self.broker = broker
        self.client_id = client_id or f"alvh-test-{uuid.uuid4().hex[:12]}"
        self.protocol = protocol
        self.timeout = timeout
        self._cond = threading.Condition()
        self._connects = 0  # CONNACKs with success
        self._ready = 0  # connections ready for use (a Subscriber's: subscribed, too)
        self._connected = False
        self._connack: ReasonCode | None = None
        self._closed_early: ReasonCode | None = None
        self._acks: dict[int, int] = {}
        self._stopped = False
        version = MQTTProtocolVersion.MQTTv5 if protocol == 5 else MQTTProtocolVersion.MQTTv311
        self._paho = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if protocol == 5 else session_expiry == 0,
            protocol=version,
            transport=transport,
        )
        self._paho.reconnect_delay_set(min_delay=1, max_delay=2)
        if username is not None:
            self._paho.username_pw_set(username, password)
        if ssl_context is None and broker.tls:
            ssl_context = broker.client_ssl_context()
        if ssl_context is not None:
            self._paho.tls_set_context(ssl_context)
        self._paho.on_connect = self._on_connect
        self._paho.on_disconnect = self._on_disconnect
        self._paho.on_publish = self._on_publish
        port = broker.ws_port if transport == "websockets" else broker.port
        assert port is not None
        properties = None
        if protocol == 5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = session_expiry
        self._prepare()
        broker._register(self)  # the broker stops its clients when it closes
        try:
            self._paho.connect(
                HOST,
                port,
                keepalive=keepalive,
                # FIRST_ONLY: paho's own reconnects never clean the session.
                clean_start=False
                if session_expiry and protocol == 5
                else paho.MQTT_CLEAN_START_FIRST_ONLY,
                properties=properties,
            )
            self._paho.loop_start()
            self._await_connack()
        except BaseException as exc:
            _close_sockets_in(exc)
            self.stop()
            raise

    def _prepare(self) -> None:
        """Hook for subclasses: set callbacks before connecting."""

    def _await_connack(self) -> None:
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._connack is not None or self._closed_early is not None, self.timeout
            ):
                raise TimeoutError(f"no CONNACK from {self.broker.url} within {self.timeout:g}s")
            connack, closed_early = self._connack, self._closed_early
        if connack is None:
            # E.g. a TLS 1.3 broker rejecting the client certificate after the handshake.
            raise ConnectionError(
                f"{self.broker.url} closed the connection before its CONNACK ({closed_early})"
            )
        if connack.is_failure:
            raise MqttConnectError(connack.value, connack.getName())

    # paho callbacks (network thread) -------------------------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            if self._connack is None:
                self._connack = reason_code
            if not reason_code.is_failure:
                self._connected = True
                self._connects += 1
            self._cond.notify_all()
        if reason_code.is_failure:
            if self._connects == 0:
                # A refused first connection: do not let paho retry it in the background.
                client.disconnect()
            return
        if self._connection_ready(client, flags):
            with self._cond:
                self._ready += 1
                self._cond.notify_all()

    def _connection_ready(self, client: paho.Client, flags: paho.ConnectFlags) -> bool:
        """Called after each successful CONNACK: True if the connection is ready now;
        False if a later callback will count it ready."""
        return True

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._connected = False
            if self._connack is None and self._closed_early is None:
                self._closed_early = reason_code
            self._cond.notify_all()

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self._acks[mid] = reason_code.value
            self._cond.notify_all()

    # public API ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while connected to the broker."""
        with self._cond:
            return self._connected

    @property
    def connects(self) -> int:
        """How many connections were ready for use so far (1 + reconnects); a Subscriber's
        connection is ready once its subscriptions are acknowledged or were kept."""
        with self._cond:
            return self._ready

    def wait_connected(self, *, after: int = 0, timeout: float | None = None) -> None:
        """Block until connected and ready, with more than ``after`` :attr:`connects` in
        all (pass the value seen before a broker restart to wait for the reconnect)."""
        limit = self.timeout if timeout is None else timeout
        with self._cond:
            if not self._cond.wait_for(lambda: self._connected and self._ready > after, limit):
                raise TimeoutError(
                    f"{self.client_id} not (re)connected to {self.broker.url} within {limit:g}s"
                )

    def publish(
        self,
        topic: str,
        payload: str | bytes = b"",
        *,
        qos: int = 1,
        retain: bool = False,
        content_type: str | None = None,
        message_expiry_interval: int | None = None,
    ) -> int:
        """Publish and wait until it is sent (QoS 0) or acknowledged (QoS 1 and 2).

        Returns the broker's reason code (MQTT 5: 0 success, 16 no matching subscribers,
        135 not authorized; MQTT 3.1.1 acknowledgements carry none: 0).
        """
        properties = None
        if self.protocol == 5 and (content_type is not None or message_expiry_interval):
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if content_type is not None:
                properties.ContentType = content_type
            if message_expiry_interval:
                properties.MessageExpiryInterval = message_expiry_interval
        info = self._paho.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish to {topic!r} failed: {paho.error_string(info.rc)}")
        with self._cond:
            if not self._cond.wait_for(lambda: info.mid in self._acks, self.timeout):
                raise TimeoutError(f"publish to {topic!r} not acknowledged in {self.timeout:g}s")
            return self._acks.pop(info.mid)

    def stop(self) -> None:
        """Disconnect (normally: a persistent session stays on the broker) and stop the
        network thread. Idempotent."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
        with contextlib.suppress(Exception):  # already disconnected or never connected
            self._paho.disconnect()
        self._paho.loop_stop()
        # loop_stop leaves the socket to the garbage collector; close it now.
        with contextlib.suppress(Exception):
            sock = self._paho.socket()
            if sock is not None:
                sock.close()
        self.broker._unregister(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Subscriber(Client):
    """A :class:`Client` that subscribes to ``topics`` (QoS ``qos``, 1 by default) and
    collects every message, retained ones included (``Message.retain``), in order.

    The constructor returns after the SUBACK, so any retained message is already on its
    way and any later publish arrives after it. A refused subscription raises
    :class:`MqttSubscribeError`. After a reconnect without a resumed session the topics
    are subscribed again. With ``session_expiry`` > 0 the broker queues QoS 1 messages
    for the subscription after :meth:`stop`; a new Subscriber with the same
    ``client_id`` and a ``session_expiry`` receives them (also after a restart of a broker
    with persistence).
    """

    def __init__(
        self,
        broker: Broker,
        topics: str | Sequence[str],
        *,
        qos: int = 1,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        transport: Transport = "tcp",
        client_id: str | None = None,
        protocol: Literal[5, 4] = 5,
        session_expiry: int = 0,
        keepalive: int = 30,
        timeout: float = 10.0,
    ) -> None:
        self.topics = (topics,) if isinstance(topics, str) else tuple(topics)
        if not self.topics:
            raise ValueError("give at least one topic filter")
        self.qos = qos
        self._messages: list[Message] = []
        self._suback: list[int] | None = None  # the first SUBACK's reason codes
        self._pending_subscribes: set[int] = set()
        super().__init__(
            broker,
            username=username,
            password=password,
            ssl_context=ssl_context,
            transport=transport,
            client_id=client_id,
            protocol=protocol,
            session_expiry=session_expiry,
            keepalive=keepalive,
            timeout=timeout,
        )
        try:
            self._await_suback()
        except BaseException:
            self.stop()
            raise

    def _prepare(self) -> None:
        self._paho.on_message = self._on_message
        self._paho.on_subscribe = self._on_subscribe

    def _connection_ready(self, client: paho.Client, flags: paho.ConnectFlags) -> bool:
        # A resumed session kept the subscriptions; otherwise the connection is ready
        # only once the broker acknowledged them, or a publish right after a reconnect
        # could reach the broker before the subscription does.
        with self._cond:
            first = self._suback is None and not self._pending_subscribes
        if not first and flags.session_present:
            return True
        _, mid = client.subscribe([(topic, self.qos) for topic in self.topics])
        if mid is not None:
            with self._cond:
                self._pending_subscribes.add(mid)
        return False

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        with self._cond:
            if mid not in self._pending_subscribes:
                return
            self._pending_subscribes.discard(mid)
            if self._suback is None:
                self._suback = [code.value for code in reason_codes]
            self._ready += 1
            self._cond.notify_all()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        message = Message.from_paho(msg)
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()

    def _await_suback(self) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._suback is not None, self.timeout):
                raise TimeoutError(f"no SUBACK from {self.broker.url} within {self.timeout:g}s")
            suback = self._suback
        assert suback is not None
        for topic, code in zip(self.topics, suback, strict=False):
            if code >= 0x80:
                reason = ReasonCode(PacketTypes.SUBACK, identifier=code).getName()
                raise MqttSubscribeError(topic, code, reason)

    @property
    def messages(self) -> list[Message]:
        """A snapshot of every message received so far, in arrival order."""
        with self._cond:
            return list(self._messages)

    def clear(self) -> None:
        """Forget the messages received so far."""
        with self._cond:
            self._messages.clear()

    def wait_for(
        self, predicate: Callable[[list[Message]], bool], timeout: float | None = None
    ) -> list[Message]:
        """Block until ``predicate(messages)`` holds and return those messages; raise
        :class:`TimeoutError` (listing what did arrive) after ``timeout`` seconds."""
        limit = self.timeout if timeout is None else timeout
        with self._cond:
            if self._cond.wait_for(lambda: predicate(list(self._messages)), limit):
                return list(self._messages)
            received = list(self._messages)
        summary = ", ".join(f"{m.topic}={m.payload[:40]!r}" for m in received[-10:])
        raise TimeoutError(
            f"condition not met within {limit:g}s; {len(received)} message(s) received"
            + (f", the last: {summary}" if received else "")
        )

    def wait_for_topic(self, topic: str, timeout: float | None = None) -> Message:
        """Block until a message on exactly ``topic`` arrives; return the first one."""
        messages = self.wait_for(lambda ms: any(m.topic == topic for m in ms), timeout)
        return next(m for m in messages if m.topic == topic)


# --- fixtures -------------------------------------------------------------------------


class BrokerFactory:
    """``broker_factory(**options)``: start a :class:`Broker` with those options; every
    broker it made is closed by :meth:`close_all` (at the fixture's teardown)."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.brokers: list[Broker] = []

    def __call__(self, **options: Unpack[BrokerOptions]) -> Broker:
        try:
            broker = Broker(binary=self.binary, **options)
        except BrokerNotFoundError as exc:
            pytest.fail(str(exc), pytrace=False)
        self.brokers.append(broker)
        return broker.start()

    def close_all(self) -> None:
        for broker in self.brokers:
            broker.close()
        self.brokers.clear()


_REPORT_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Keep each phase's report, so a fixture's teardown can tell whether the test failed.
    report = yield
    item.stash.setdefault(_REPORT_KEY, {})[report.when] = report
    return report


def _print_logs_if_failed(request: pytest.FixtureRequest, brokers: Sequence[Broker]) -> None:
    reports = request.node.stash.get(_REPORT_KEY, {})
    if any(r.failed for r in reports.values()):
        for broker in brokers:
            print(f"--- {broker!r}: last lines of its log ---\n{broker.log_tail()}")


@pytest.fixture(scope="session")
def mosquitto_bin() -> Path:
    """Path of the mosquitto executable; FAILS the test with the install hint if absent."""
    try:
        return find_mosquitto()
    except BrokerNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def broker(mosquitto_bin: Path, request: pytest.FixtureRequest) -> Iterator[Broker]:
    """A fresh anonymous Mosquitto on plain TCP for one test; closed afterwards."""
    with Broker(binary=mosquitto_bin) as instance:
        yield instance
        _print_logs_if_failed(request, [instance])


@pytest.fixture
def broker_factory(mosquitto_bin: Path, request: pytest.FixtureRequest) -> Iterator[BrokerFactory]:
    """Start brokers with options: ``broker_factory(users={"alvh": "pw"}, tls=True)``."""
    factory = BrokerFactory(mosquitto_bin)
    try:
        yield factory
        _print_logs_if_failed(request, factory.brokers)
    finally:
        factory.close_all()
