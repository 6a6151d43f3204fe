"""structlog set-up: JSON lines for journald/collectors, or a console format for a terminal.

Guarantees: every event carries ``ts`` (UTC ISO 8601), ``level`` and ``logger``;
values of keys that look like secrets (password, token, secret, authorization,
api_key) are replaced by ``"***"``; URLs with credentials are reduced to scheme
and host. Library logging (stdlib ``logging``) goes through the same renderer.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|authori[sz]ation|api[_-]?key", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(\w+://)[^/@\s:]+(:[^/@\s]*)?@")


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        value = event[key]
        if _SECRET_KEYS.search(key):
            event[key] = "***"
        elif isinstance(value, str) and "@" in value and "://" in value:
            event[key] = _URL_CREDENTIALS.sub(r"\1***@", value)
    return event


def configure(fmt: str = "json", level: str = "info", stream: Any = None) -> None:
    out = stream if stream is not None else sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        redact,
    ]
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                *shared[1:],
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
            foreign_pre_chain=[],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
