"""JSON-RPC over web3.py's ``AsyncHTTPProvider`` with endpoint failover and batching.

Guarantees:
- requests go straight to the provider (``make_request`` / ``make_batch_request``):
  no ``Web3`` middleware, so no hidden ``eth_chainId`` call per ``eth_call``;
- several endpoints per chain, tried in order; a timeout, a connection error,
  HTTP 429 / 5xx or a malformed answer marks the endpoint failed and moves to the
  next one, with jittered exponential backoff once every endpoint has failed;
  after ``retry_primary_after`` seconds the first endpoint is tried again;
- only :class:`adapters.errors.TransientError` / :class:`FatalError` leave this
  module; per-call JSON-RPC errors inside a batch are returned as :class:`RpcCallError`
  values so one bad call never hides the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from web3.providers.rpc import AsyncHTTPProvider
from web3.types import RPCEndpoint

from adapters.errors import FatalError, TransientError

ErrorHook = Callable[[str, str], None]

# web3's own loggers print every request at DEBUG and connection noise at WARNING.
logging.getLogger("web3.providers.AsyncHTTPProvider").setLevel(logging.ERROR)
logging.getLogger("web3._utils.http_session_manager").setLevel(logging.ERROR)


@dataclass(frozen=True, slots=True)
class RpcCallError:
    """A JSON-RPC error object returned for one call of a batch."""

    code: int
    message: str
    data: Any = None


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
        if not urls:
            raise FatalError("no RPC endpoint configured", source=name)
        self.urls = list(urls)
        self.name = name
        self.labels = [redact_url(u) for u in self.urls]
        self._providers = [
            AsyncHTTPProvider(
                u,
                request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout)},
                exception_retry_configuration=None,
            )
            for u in self.urls
        ]
        self._current = 0
        self._failed_at = 0.0
        self._on_error = on_error
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._retry_primary_after = retry_primary_after
        self._max_rounds = max_rounds
        self.requests = 0  # HTTP requests sent (for benchmarks and metrics)

    @property
    def current_label(self) -> str:
        return self.labels[self._current]

    async def close(self) -> None:
        for p in self._providers:
            with contextlib.suppress(Exception):
                await p.disconnect()

    def _pick(self) -> int:
        if self._current != 0 and time.monotonic() - self._failed_at > self._retry_primary_after:
            self._current = 0
        return self._current

    def _fail(self, index: int, kind: str) -> None:
        if self._on_error is not None:
            self._on_error(self.labels[index], kind)
        self._failed_at = time.monotonic()
        self._current = (index + 1) % len(self._providers)

    async def request(self, method: str, params: Sequence[Any]) -> Any:
        """One call; JSON-RPC errors raise :class:`TransientError` (they are answers about
        the node, e.g. 'header not found', not about our input)."""
        result = (await self.batch([(method, params)]))[0]
        if isinstance(result, RpcCallError):
            raise TransientError(
                f"{method}: {result.message} (code {result.code})", source=self.name
            )
        return result

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Send ``calls`` as one JSON-RPC batch (one HTTP request). Results in order;
        failed calls come back as :class:`RpcCallError`."""
        if not calls:
            return []
        attempt = 0
        last: Exception | None = None
        total = self._max_rounds * len(self._providers)
        while attempt < total:
            index = self._pick()
            try:
                return await self._send(index, calls)
            except TransientError as exc:
                last = exc
                self._fail(index, type(exc.__cause__).__name__ if exc.__cause__ else "answer")
                attempt += 1
                if attempt % len(self._providers) == 0 and attempt < total:
                    round_ = attempt // len(self._providers)
                    delay = min(self._backoff_max, self._backoff_base * 2**round_)
                    await asyncio.sleep(delay * (0.5 + random.random()))
        raise TransientError(
            f"all {len(self._providers)} RPC endpoint(s) failed; last error: {last}",
            source=self.name,
        )

    async def _send(self, index: int, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        provider = self._providers[index]
        label = self.labels[index]
        self.requests += 1
        try:
            if len(calls) == 1:
                responses: Any = [
                    await provider.make_request(RPCEndpoint(calls[0][0]), list(calls[0][1]))
                ]
            else:
                responses = await provider.make_batch_request(
                    [(RPCEndpoint(m), list(p)) for m, p in calls]
                )
        except aiohttp.ClientResponseError as exc:
            raise TransientError(f"HTTP {exc.status} {exc.message}", source=label) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}".rstrip(": "), source=label) from exc
        except (ValueError, TypeError, KeyError) as exc:
            raise TransientError(f"malformed answer: {exc}", source=label) from exc
        if isinstance(responses, dict):
            # A batch answered by one error object (the node rejected the whole batch).
            err = responses.get("error") or {}
            raise TransientError(f"batch rejected: {err.get('message', responses)}", source=label)
        if not isinstance(responses, list) or len(responses) != len(calls):
            raise TransientError("malformed answer: batch size mismatch", source=label)
        out: list[Any] = []
        for resp in responses:
            if not isinstance(resp, dict):
                raise TransientError("malformed answer: not a JSON-RPC object", source=label)
            if "error" in resp and resp["error"] is not None:
                err = resp["error"]
                if not isinstance(err, dict):
                    raise TransientError("malformed answer: bad error object", source=label)
                out.append(
                    RpcCallError(
                        int(err.get("code", 0)), str(err.get("message", "")), err.get("data")
                    )
                )
            elif "result" in resp:
                out.append(resp["result"])
            else:
                raise TransientError("malformed answer: neither result nor error", source=label)
        return out

    async def check_chain_id(self, expected: int) -> None:
        """Every endpoint that answers must serve ``expected``; a mismatch is fatal."""
        for index, label in enumerate(self.labels):
            try:
                got = await self._send(index, [("eth_chainId", [])])
            except TransientError:
                continue  # a dead endpoint is failover's business, not a config error
            value = got[0]
            if isinstance(value, RpcCallError) or not isinstance(value, str):
                continue
            chain_id = int(value, 16)
            if chain_id != expected:
                raise FatalError(
                    f"serves chain id {chain_id}, but the config says chain_id = {expected}",
                    source=label,
                )
