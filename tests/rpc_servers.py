"""Misbehaving RPC endpoints for failover tests: real sockets, no mocks.

- :class:`BadRpcServer`: a tiny threaded HTTP server that answers every POST the way
  its current ``mode`` says (malformed JSON, HTTP 500, HTTP 429, a wrong batch size,
  a rate-limit error object, another chain id, no answer at all, a provider's
  ``eth_getLogs`` block-range cap, or a transparent forward to a real node); it counts
  the requests it received;
- :class:`SwitchableProxy`: a TCP proxy in front of a real node that can be turned off
  (listening socket and open connections closed, so clients see connection refused) and
  on again on the same port, to cut an adapter's or a daemon's view of a chain;
- :func:`closed_port`: a loopback port with nothing listening.

Both run in threads, so they serve asyncio tests and daemon subprocesses alike.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

Mode = Literal[
    "malformed",  # 200 with a body that is not JSON
    "http500",
    "http429",
    "short_batch",  # valid JSON-RPC, one answer missing
    "not_jsonrpc",  # JSON, but not JSON-RPC objects
    "rate_limited",  # a JSON-RPC error object saying 'rate limit'
    "hang",  # accept, never answer
    "forward",  # pass through to ``upstream``
    "chain_id",  # forward, but claim chain id ``fake_chain_id``
    "log_range",  # forward, but refuse eth_getLogs over more than ``max_log_range`` blocks
]


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BadRpcServer:
    """HTTP JSON-RPC endpoint on 127.0.0.1 that misbehaves as told."""

    def __init__(
        self,
        mode: Mode = "malformed",
        *,
        upstream: str | None = None,
        fake_chain_id: int = 999,
        max_log_range: int = 4,
    ) -> None:
        self.mode: Mode = mode
        self.upstream = upstream
        self.fake_chain_id = fake_chain_id
        self.max_log_range = max_log_range
        self.refused_log_ranges: list[tuple[int, int]] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with server._lock:
                    server.requests += 1
                status, payload = server._answer(body)
                if status == 0:  # hang
                    server._release.wait(30)
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def _forward(self, body: bytes) -> tuple[int, bytes]:
        assert self.upstream is not None, "forwarding needs an upstream url"
        parts = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        try:
            conn.request("POST", parts.path or "/", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _answer(self, body: bytes) -> tuple[int, bytes]:
        mode = self.mode
        if mode == "hang":
            return 0, b""
        if mode == "malformed":
            return 200, b'{"jsonrpc": "2.0", "result": 0x12'  # truncated, not JSON
        if mode == "http500":
            return 500, b"internal error"
        if mode == "http429":
            return 429, b"too many requests"
        request = json.loads(body)
        calls = request if isinstance(request, list) else [request]
        if mode == "short_batch":
            answers = [{"jsonrpc": "2.0", "id": c["id"], "result": "0x1"} for c in calls[:-1]]
            return 200, json.dumps(answers if isinstance(request, list) else {}).encode()
        if mode == "not_jsonrpc":
            return 200, json.dumps([1, 2, 3] if isinstance(request, list) else "hello").encode()
        if mode == "rate_limited":
            answers = [
                {
                    "jsonrpc": "2.0",
                    "id": c["id"],
                    "error": {"code": 429, "message": "Too Many Requests: rate limit exceeded"},
                }
                for c in calls
            ]
            return 200, json.dumps(answers if isinstance(request, list) else answers[0]).encode()
        if mode == "chain_id" and all(c.get("method") == "eth_chainId" for c in calls):
            answers = [
                {"jsonrpc": "2.0", "id": c["id"], "result": hex(self.fake_chain_id)} for c in calls
            ]
            return 200, json.dumps(answers if isinstance(request, list) else answers[0]).encode()
        if mode == "log_range":
            return self._forward_capping_log_ranges(body, calls, isinstance(request, list))
        return self._forward(body)

    def _forward_capping_log_ranges(
        self, body: bytes, calls: list[dict[str, Any]], is_batch: bool
    ) -> tuple[int, bytes]:
        """Forward; then answer each eth_getLogs over too many blocks with the error
        object a capped provider sends (the rest of the batch is answered normally)."""
        status, payload = self._forward(body)
        answers = json.loads(payload)
        listed = answers if is_batch else [answers]
        by_id = {a.get("id"): a for a in listed}
        for c in calls:
            if c.get("method") != "eth_getLogs":
                continue
            span = c["params"][0]
            lo, hi = int(span["fromBlock"], 16), int(span["toBlock"], 16)
            if hi - lo + 1 > self.max_log_range:
                with self._lock:
                    self.refused_log_ranges.append((lo, hi))
                answer = by_id[c["id"]]
                answer.pop("result", None)
                answer["error"] = {
                    "code": -32602,
                    "message": f"query exceeds max block range {self.max_log_range}",
                }
        return status, json.dumps(answers).encode()

    def start(self) -> Self:
        self._thread.start()
        return self

    def close(self) -> None:
        self._release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SwitchableProxy:
    """A TCP proxy to ``upstream`` (``http://host:port``) that can be switched off and on."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._target = (parts.hostname or "127.0.0.1", int(parts.port or 80))
        self.port = closed_port()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def on(self) -> bool:
        return self._listener is not None

    def turn_on(self) -> None:
        if self._listener is not None:
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 5
        while True:
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    listener.close()
                    raise
                time.sleep(0.05)
        listener.listen(64)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def turn_off(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)

    def __enter__(self) -> Self:
        self.turn_on()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.turn_off()
