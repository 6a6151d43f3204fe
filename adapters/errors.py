"""The adapters' own error classes. Library exceptions are converted into these at
the adapter edge; the daemon's retry policy decides by class (freqtrade style):
:class:`TransientError` is retried with backoff, :class:`FatalError` stops the chain
task with a clear message, :class:`DataError` marks one pool as degraded."""

from __future__ import annotations


class AdapterError(Exception):
    """Base class. ``source`` names the endpoint, file or pool involved."""

    def __init__(self, message: str, *, source: str = "") -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class TransientError(AdapterError):
    """Timeout, connection refused, HTTP 429/5xx, malformed answer: try again / elsewhere."""


class FatalError(AdapterError):
    """Wrong chain id, no usable endpoint configuration: retrying cannot help."""


class DataError(AdapterError):
    """One pool's data is unusable (reverts, zero liquidity, not a contract)."""
