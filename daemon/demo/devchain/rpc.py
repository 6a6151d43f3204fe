"""A minimal synchronous JSON-RPC client over one keep-alive HTTP connection.

Why not web3's HTTPProvider (the harness does not use web3 at all): the dev chain
replays hundreds of swaps, each a handful of requests to a local node, and requests'
per-call environment and proxy look-ups cost more than anvil's own work. This client
keeps one ``http.client`` connection open and does nothing else.

Guarantees:
- :meth:`JsonRpcClient.request` returns the ``result`` or raises :class:`RpcError`
  carrying the node's message and code; transport failures raise it too;
- a request that fails because the node closed an idle keep-alive connection is
  sent once more on a fresh connection (the node had not answered it);
- batch requests return results in call order.
"""

from __future__ import annotations

import http.client
import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from daemon.demo.devchain.errors import RpcError

_STALE_CONNECTION = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class JsonRpcClient:
    """JSON-RPC 2.0 over HTTP to ``url`` (``http://host:port``)."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http://host:port URL, got {url!r}")
        self.url = url
        self._host = parts.hostname
        self._port = parts.port or 80
        self._path = parts.path or "/"
        self._timeout = timeout
        self._ids = itertools.count(1)
        self._connection: http.client.HTTPConnection | None = None

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __del__(self) -> None:
        # A forgotten client must not leave its socket to the garbage collector's
        # ResourceWarning (tests run with warnings as errors).
        self.close()

    def _post(self, body: bytes, what: str) -> Any:
        for attempt in (1, 2):
            reused = self._connection is not None
            if self._connection is None:
                self._connection = http.client.HTTPConnection(
                    self._host, self._port, timeout=self._timeout
                )
            try:
                self._connection.request(
                    "POST", self._path, body, {"Content-Type": "application/json"}
                )
                response = self._connection.getresponse()
                payload = response.read()
            except _STALE_CONNECTION as exc:
                self.close()
                if reused and attempt == 1:
                    continue
                raise RpcError(what, f"no answer from {self.url}: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise RpcError(what, f"no answer from {self.url}: {exc}") from exc
            if response.status != 200:
                raise RpcError(what, f"HTTP {response.status}: {payload[:200]!r}")
            try:
                return json.loads(payload)
            except ValueError as exc:
                raise RpcError(what, f"malformed JSON answer: {payload[:200]!r}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _result(method: str, answer: Any) -> Any:
        if not isinstance(answer, Mapping):
            raise RpcError(method, f"malformed answer: {answer!r:.200}")
        error = answer.get("error")
        if error is not None:
            if isinstance(error, Mapping):
                code = error.get("code")
                raise RpcError(
                    method, str(error.get("message")), code if isinstance(code, int) else None
                )
            raise RpcError(method, str(error))
        return answer.get("result")

    def request(self, method: str, params: Sequence[Any]) -> Any:
        """Call ``method`` with positional ``params``; returns its result."""
        body = json.dumps(
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        ).encode()
        return self._result(method, self._post(body, method))

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several calls in one HTTP request; results in call order."""
        if not calls:
            return []
        ids = [next(self._ids) for _ in calls]
        body = json.dumps(
            [
                {"jsonrpc": "2.0", "id": i, "method": method, "params": list(params)}
                for i, (method, params) in zip(ids, calls, strict=True)
            ]
        ).encode()
        answers = self._post(body, "batch")
        if not isinstance(answers, list):
            raise RpcError("batch", f"expected a list of answers, got {answers!r:.200}")
        by_id = {a.get("id"): a for a in answers if isinstance(a, Mapping)}
        return [
            self._result(method, by_id.get(i)) for i, (method, _) in zip(ids, calls, strict=True)
        ]
