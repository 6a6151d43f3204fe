"""Errors raised by the local dev chain harness.

Every failure of the harness (a missing anvil binary, a node that does not start,
an RPC error, a reverted transaction, a missing artifact) surfaces as a
:class:`DevChainError` subclass whose message says what to do next; HTTP,
JSON-RPC and subprocess exceptions do not leak out of :mod:`daemon.demo.devchain`.
"""

from __future__ import annotations

INSTALL_HINT = (
    "install it with `npm ci --ignore-scripts` in the repository root "
    "(or run ./scripts/test, which sets everything up)"
)


class DevChainError(Exception):
    """Base class of every error raised by :mod:`daemon.demo.devchain`."""


class AnvilNotFoundError(DevChainError):
    """The anvil binary is not where the harness looks for it."""


class AnvilStartError(DevChainError):
    """anvil was found but did not come up (it exited, or never printed its port)."""


class RpcError(DevChainError):
    """The node answered a JSON-RPC request with an error, or could not be reached."""

    def __init__(self, method: str, message: str, code: int | None = None) -> None:
        super().__init__(f"{method}: {message}" + (f" (code {code})" if code is not None else ""))
        self.method = method
        self.code = code
        self.reason = message


class TxFailedError(DevChainError):
    """A transaction was mined but reverted, or was not mined into the expected block."""

    def __init__(self, tx_hash: str, what: str, reason: str | None) -> None:
        detail = reason if reason else "no revert reason"
        super().__init__(f"{what} failed in tx {tx_hash}: {detail}")
        self.tx_hash = tx_hash
        self.reason = reason


class ArtifactError(DevChainError):
    """A compiled contract artifact or a bytecode source is missing or malformed."""
