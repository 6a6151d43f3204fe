"""JSON-RPC 2.0 over HTTP (aiohttp) with endpoint failover and batching.

Guarantees:
- a request is exactly one HTTP POST: one JSON-RPC object, or one batch array whose
  answers are matched to the calls by id (in any order); no ``Web3`` object and no
  middleware, so no hidden ``eth_chainId`` call per request; each endpoint keeps one
  keep-alive session; large bodies are streamed from memory;
- ``http(s)://`` endpoints serve requests, tried in the configured order; ``ws(s)://``
  endpoints are kept in :attr:`RpcPool.ws_urls` for new-head subscriptions
  (:mod:`adapters.evm.ws`) and never receive requests;
- a timeout, a connection error, an HTTP error status (429, 5xx, ...), a malformed answer
  (not JSON, not JSON-RPC, a batch with answers missing) or a rate-limit error object
  marks the endpoint failed, is reported to ``on_error(endpoint, kind)`` and counted in
  :attr:`RpcPool.errors`, and the call moves to the next endpoint; once every endpoint
  has failed in a round, the next round waits a jittered exponential backoff; after
  ``max_rounds`` rounds :class:`TransientError` is raised; ``retry_primary_after``
  seconds after the last failure a new call starts at the first endpoint again;
- the chain id is checked on every endpoint that answers at start
  (:meth:`RpcPool.check_chain_id`) and, for an endpoint that was down then, before its
  first use: an endpoint serving another chain is a :class:`FatalError` naming it;
- only :class:`adapters.errors.TransientError` / :class:`FatalError` leave this module;
  per-call JSON-RPC errors inside a batch come back as :class:`RpcCallError` values so
  one failed call never hides the others;
- :attr:`RpcPool.requests` counts the HTTP requests sent (benchmarks, tests).

Why not web3's ``AsyncHTTPProvider``: it posts bodies as raw bytes (aiohttp warns above
1 MiB, and a 1,000-pool poll is ~1.5 MB), its default session closes the connection after
every request, and an id-less batch answer raises a warning inside it before the answer
can be judged malformed. ABI handling stays with web3's ``eth_abi``/``eth_utils``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from adapters.errors import FatalError, TransientError

#: ``on_error(endpoint label, kind)``; kinds: ``timeout``, ``connect``, ``http_<status>``,
#: ``malformed``, ``rejected``, ``rate_limited`` (and ``ws_*`` from :mod:`adapters.evm.ws`).
ErrorHook = Callable[[str, str], None]

#: JSON-RPC error codes providers use for "slow down": the endpoint, not the call, failed.
_RATE_LIMIT_CODES = frozenset({429, -32005, -32029})
_RATE_LIMIT_WORDS = ("rate limit", "too many requests", "exceeded the rate")


@dataclass(frozen=True, slots=True)
class RpcCallError:
    """A JSON-RPC error object returned for one call of a batch."""

    code: int
    message: str
    data: Any = None

    @property
    def is_revert(self) -> bool:
        """The call itself reverted (an answer about the contract, not about the node)."""
        return self.code == 3 or "revert" in self.message.lower()

    @property
    def is_rate_limit(self) -> bool:
        text = self.message.lower()
        return self.code in _RATE_LIMIT_CODES and (
            self.code == 429 or any(w in text for w in _RATE_LIMIT_WORDS)
        )


class _EndpointError(Exception):
    """One endpoint failed one request; ``kind`` is the metric label."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def redact_url(url: str) -> str:
    """Endpoint URLs often carry API keys in the path or query: keep scheme and host only."""
    scheme, sep, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0]
    if "@" in host:
        host = host.split("@", 1)[1]
    return f"{scheme}{sep}{host}" if sep else host


class RpcPool:
    """The endpoints of one chain, used in failover order."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 10.0,
        name: str = "",
        on_error: ErrorHook | None = None,
        backoff_base: float = 0.25,
        backoff_max: float = 30.0,
        retry_primary_after: float = 60.0,
        max_rounds: int = 3,
    ) -> None:
        self.name = name
        self.urls = [u for u in urls if u.startswith(("http://", "https://"))]
        self.ws_urls = [u for u in urls if u.startswith(("ws://", "wss://"))]
        self.labels = [redact_url(u) for u in self.urls]
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._sessions: list[aiohttp.ClientSession | None] = [None] * len(self.urls)
        self._verified = [False] * len(self.urls)
        self._expected_chain_id: int | None = None
        self._current = 0
        self._failed_at = 0.0
        self.on_error = on_error
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._retry_primary_after = retry_primary_after
        self._max_rounds = max(1, max_rounds)
        self.requests = 0  # HTTP requests sent
        self.errors: Counter[tuple[str, str]] = Counter()  # (endpoint, kind) -> failures

    @property
    def current_label(self) -> str:
        return self.labels[self._current] if self.labels else self.name

    async def close(self) -> None:
        for session in self._sessions:
            if session is not None:
                with contextlib.suppress(Exception):
                    await session.close()
        self._sessions = [None] * len(self.urls)

    def _no_endpoint(self) -> FatalError:
        what = "only ws:// endpoints" if self.ws_urls else "no endpoint"
        return FatalError(
            f"{what} configured: requests need at least one http(s):// RPC url "
            "(ws:// urls are used for new-head subscriptions only)",
            source=self.name,
        )

    def _pick(self) -> int:
        if self._current != 0 and time.monotonic() - self._failed_at > self._retry_primary_after:
            self._current = 0
        return self._current

    def _fail(self, index: int, kind: str) -> None:
        label = self.labels[index]
        self.errors[(label, kind)] += 1
        if self.on_error is not None:
            self.on_error(label, kind)
        self._failed_at = time.monotonic()
        self._current = (index + 1) % len(self.urls)

    async def request(self, method: str, params: Sequence[Any]) -> Any:
        """One call. A JSON-RPC error answer raises :class:`TransientError` (such answers
        are about the node, e.g. 'header not found', not about our input)."""
        result = (await self.batch([(method, params)]))[0]
        if isinstance(result, RpcCallError):
            raise TransientError(
                f"{method}: {result.message} (code {result.code})", source=self.current_label
            )
        return result

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Send ``calls`` as one JSON-RPC batch (one HTTP request). Results in order;
        calls the node answered with an error come back as :class:`RpcCallError`."""
        if not calls:
            return []
        if not self.urls:
            raise self._no_endpoint()
        n = len(self.urls)
        last = ""
        for attempt in range(self._max_rounds * n):
            if attempt and attempt % n == 0:
                delay = min(self._backoff_max, self._backoff_base * 2 ** (attempt // n))
                await asyncio.sleep(delay * (0.5 + random.random()))
            # The primary comes back only between calls, never inside one call's failover.
            index = self._pick() if attempt == 0 else self._current
            try:
                if not self._verified[index] and self._expected_chain_id is not None:
                    self._check_one(index, await self._send(index, [("eth_chainId", [])]))
                return await self._send(index, calls)
            except _EndpointError as exc:
                last = f"{self.labels[index]}: {exc}"
                self._fail(index, exc.kind)
        raise TransientError(
            f"all {n} RPC endpoint(s) failed {self._max_rounds} time(s); last error: {last}",
            source=self.name,
        )

    def _session(self, index: int) -> aiohttp.ClientSession:
        session = self._sessions[index]
        if session is None or session.closed:
            session = aiohttp.ClientSession(
                timeout=self._timeout, headers={"Content-Type": "application/json"}
            )
            self._sessions[index] = session
        return session

    async def _send(self, index: int, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        objects = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": list(params)}
            for i, (method, params) in enumerate(calls)
        ]
        body = json.dumps(objects if len(objects) > 1 else objects[0], separators=(",", ":"))
        session = self._session(index)
        self.requests += 1
        try:
            async with session.post(self.urls[index], data=io.BytesIO(body.encode())) as resp:
                raw = await resp.read()
                status, reason = resp.status, resp.reason
        except TimeoutError as exc:
            raise _EndpointError("timeout", f"no answer within {self._timeout.total:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _EndpointError("connect", f"{type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise _EndpointError(f"http_{status}", f"HTTP {status} {reason or ''}".rstrip())
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise _EndpointError("malformed", f"malformed answer (not JSON): {raw[:80]!r}") from exc
        if len(objects) == 1:
            return self._results([answer], 1)
        if isinstance(answer, list):
            by_id = {a.get("id"): a for a in answer if isinstance(a, dict)}
            answer = [by_id.get(i) for i in range(len(objects))]
        return self._results(answer, len(objects))

    @staticmethod
    def _results(responses: Any, expected: int) -> list[Any]:
        if isinstance(responses, dict):
            # A batch answered by one error object: the node rejected the whole batch.
            err = responses.get("error")
            message = err.get("message", err) if isinstance(err, dict) else responses
            raise _EndpointError("rejected", f"batch rejected: {message}"[:300])
        if not isinstance(responses, list) or len(responses) != expected:
            raise _EndpointError("malformed", "malformed answer: not a batch answer")
        out: list[Any] = []
        for resp in responses:
            if not isinstance(resp, dict):
                raise _EndpointError("malformed", "malformed answer: a call has no answer object")
            err = resp.get("error")
            if err is not None:
                if not isinstance(err, dict):
                    raise _EndpointError("malformed", "malformed answer: bad error object")
                code = err.get("code", 0)
                call_error = RpcCallError(
                    code if isinstance(code, int) else 0,
                    str(err.get("message", "")),
                    err.get("data"),
                )
                if call_error.is_rate_limit:
                    raise _EndpointError("rate_limited", call_error.message[:200])
                out.append(call_error)
            elif "result" in resp:
                out.append(resp["result"])
            else:
                raise _EndpointError("malformed", "malformed answer: neither result nor error")
        return out

    def _check_one(self, index: int, answer: list[Any]) -> None:
        value = answer[0]
        if isinstance(value, RpcCallError) or not isinstance(value, str):
            raise _EndpointError("malformed", f"unusable eth_chainId answer {value!r:.80}")
        try:
            chain_id = int(value, 16)
        except ValueError:
            raise _EndpointError(
                "malformed", f"unusable eth_chainId answer {value!r:.80}"
            ) from None
        if chain_id != self._expected_chain_id:
            raise FatalError(
                f"serves chain id {chain_id}, but the config says chain_id = "
                f"{self._expected_chain_id}",
                source=self.labels[index],
            )
        self._verified[index] = True

    async def check_chain_id(self, expected: int) -> None:
        """Every endpoint that answers must serve ``expected`` (else :class:`FatalError`);
        an endpoint that is down now is checked before its first use. Raises
        :class:`TransientError` when no endpoint answers at all."""
        if not self.urls:
            raise self._no_endpoint()
        self._expected_chain_id = expected
        failures = []
        for index in range(len(self.urls)):
            if self._verified[index]:
                continue
            try:
                self._check_one(index, await self._send(index, [("eth_chainId", [])]))
            except _EndpointError as exc:
                self.errors[(self.labels[index], exc.kind)] += 1
                if self.on_error is not None:
                    self.on_error(self.labels[index], exc.kind)
                failures.append(f"{self.labels[index]}: {exc}")
        if not any(self._verified):
            raise TransientError(
                "no RPC endpoint answered eth_chainId: " + "; ".join(failures), source=self.name
            )
        if not self._verified[self._current]:
            self._current = self._verified.index(True)
            self._failed_at = time.monotonic()
