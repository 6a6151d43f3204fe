"""New-head notifications over ``eth_subscribe newHeads`` on ws:// / wss:// endpoints.

:class:`NewHeads` turns a subscription into an awaitable wake-up for the chain loop:
``await heads.wait(timeout)`` returns the number of the head a node announced, or None
after ``timeout`` seconds without one. It never raises for network trouble.

Guarantees:
- no background task: the socket is read inside :meth:`NewHeads.wait`, so cancelling the
  waiter (daemon shutdown) leaves nothing running; notifications that arrive between two
  waits queue in the socket and wake the next wait at once;
- a failed connect, a refused subscription or a dropped socket marks the subscription
  down (reported to ``on_error(endpoint, kind)``, kinds ``ws_connect``, ``ws_timeout``,
  ``ws_refused``, ``ws_closed``): ``wait`` then simply sleeps its timeout (the caller
  keeps polling on its interval), and the next endpoint is tried after a jittered
  exponential backoff, so a dead ws endpoint degrades to plain polling, never to a
  stalled chain;
- every notification wakes the waiter, a same-height head too (a reorg replacing the
  head announces the same number with a new hash).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Sequence
from typing import Any

import aiohttp

from adapters.evm.rpc import ErrorHook, redact_url


class NewHeads:
    """A ``newHeads`` subscription on the first ws endpoint that accepts it."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        name: str = "",
        on_error: ErrorHook | None = None,
        connect_timeout: float = 5.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        if not urls:
            raise ValueError("NewHeads needs at least one ws:// or wss:// url")
        for url in urls:
            if not url.startswith(("ws://", "wss://")):
                raise ValueError(f"not a ws:// or wss:// url: {redact_url(url)}")
        self.urls = list(urls)
        self.labels = [redact_url(u) for u in self.urls]
        self.name = name
        self._on_error = on_error
        self._connect_timeout = connect_timeout
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._subscription: str | None = None
        self._index = 0
        self._failures = 0
        self._retry_at = 0.0
        self.notifications = 0  # heads announced so far (for tests and metrics)

    @property
    def active(self) -> bool:
        """True while subscribed."""
        return self._ws is not None and not self._ws.closed and self._subscription is not None

    @property
    def current_label(self) -> str:
        return self.labels[self._index]

    async def wait(self, timeout: float) -> int | None:
        """The number of the next announced head, or None after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        if not self.active and loop.time() >= self._retry_at:
            await self._connect(deadline)
        while self.active:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            assert self._ws is not None
            try:
                message = await self._ws.receive(timeout=remaining)
            except TimeoutError:
                return None
            except (aiohttp.ClientError, OSError, RuntimeError):
                await self._down("closed")
                break
            if message.type != aiohttp.WSMsgType.TEXT:
                await self._down("closed")
                break
            number = self._head_number(message.data)
            if number is not None:
                self.notifications += 1
                return number
        remaining = deadline - loop.time()
        if remaining > 0:
            await asyncio.sleep(remaining)
        return None

    def _head_number(self, text: str) -> int | None:
        try:
            payload = json.loads(text)
            params = payload["params"]
            if payload.get("method") != "eth_subscription":
                return None
            if params["subscription"] != self._subscription:
                return None
            return int(params["result"]["number"], 16)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # not a notification of ours (or garbled): keep listening

    async def _connect(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        budget = min(self._connect_timeout, max(0.05, deadline - loop.time()))
        url = self.urls[self._index]
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession()
            async with asyncio.timeout(budget):
                ws = await self._session.ws_connect(url, autoping=True, heartbeat=30.0)
                self._ws = ws
                await ws.send_str(
                    json.dumps(
                        {
                            "jsonrpc": "2.0",
                            "id": 1,
                            "method": "eth_subscribe",
                            "params": ["newHeads"],
                        }
                    )
                )
                while True:
                    reply = await ws.receive()
                    if reply.type != aiohttp.WSMsgType.TEXT:
                        raise ConnectionError("socket closed before the subscription answer")
                    answer: Any = json.loads(reply.data)
                    if isinstance(answer, dict) and answer.get("id") == 1:
                        break
                result = answer.get("result")
                if not isinstance(result, str):
                    raise ConnectionError(f"subscription refused: {answer.get('error')}")
                self._subscription = result
                self._failures = 0
        except TimeoutError:
            await self._down("timeout")
        except (aiohttp.ClientError, OSError) as exc:
            # A refused subscription raises ConnectionError (an OSError) on purpose.
            refused = isinstance(exc, ConnectionError) and not isinstance(exc, aiohttp.ClientError)
            await self._down("refused" if refused else "connect")
        except ValueError:
            await self._down("refused")  # not JSON: not a JSON-RPC node

    async def _down(self, kind: str) -> None:
        if self._on_error is not None:
            self._on_error(self.labels[self._index], f"ws_{kind}")
        ws, self._ws, self._subscription = self._ws, None, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        self._failures += 1
        self._index = (self._index + 1) % len(self.urls)
        delay = min(self._backoff_max, self._backoff_base * 2 ** min(self._failures - 1, 16))
        self._retry_at = asyncio.get_running_loop().time() + delay * (0.5 + random.random())

    async def close(self) -> None:
        ws, self._ws, self._subscription = self._ws, None, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None
