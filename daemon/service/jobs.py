"""APScheduler jobs that run on the event loop.

APScheduler 3's ``AsyncIOExecutor`` runs coroutine functions on the event loop but
plain functions in a thread pool. Every piece of daemon state (pipeline arrays, the
SQLite connection, asyncio events, the MQTT client) belongs to the event loop thread,
so a job running in another thread could read half-updated state or corrupt it.
:func:`on_loop` turns a plain function into a coroutine function so that it always
runs on the loop, between two awaits of the other tasks; :class:`LoopScheduler` does
that to every job it is given, so no caller can forget it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, cast

from apscheduler.schedulers.asyncio import AsyncIOScheduler


def on_loop(func: Callable[..., object]) -> Callable[..., Coroutine[Any, Any, None]]:
    """``func`` as a coroutine function (returned as is when it already is one)."""
    if inspect.iscoroutinefunction(func):
        return cast("Callable[..., Coroutine[Any, Any, None]]", func)

    async def job(*args: Any, **kwargs: Any) -> None:
        func(*args, **kwargs)

    job.__name__ = job.__qualname__ = getattr(func, "__name__", "job")
    return job


class LoopScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """An ``AsyncIOScheduler`` whose jobs all run on the event loop (see :func:`on_loop`)."""

    def add_job(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        # A textual reference ("module:function") is left to APScheduler to resolve.
        return super().add_job(on_loop(func) if callable(func) else func, *args, **kwargs)
