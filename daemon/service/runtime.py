"""What the daemon's plugins (HTTP, silences, Home Assistant) see of one run.

A :class:`Runtime` is built once per run of the service (at start and after each
reload), by :class:`~daemon.service.daemon.Run`, once the store, the publisher, the
pipeline, the chain adapters and the scheduler all exist.

Guarantees:

- nothing in a :class:`Runtime` is ``None`` or filled in later: a plugin given one can
  use every field at once, and the object is frozen (a plugin cannot swap the store or
  the publisher under the daemon);
- the plugins read the pipeline and the chains only through :class:`PipelineView` and
  :class:`ChainsView`: pool identities and names, layer states, what the adapters know
  of each pool. They cannot step the pipeline, roll it back, restore it or poll a chain;
  those stay with the daemon, which owns the order in which they happen;
- the views are live: a pool's name or quote symbol read on chain after the start is
  seen by the next call (that is why they are views, not copies);
- the configured pools are the pipeline's pools, in the same order (checked on
  construction), so a plugin can pair the two by position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adapters.evm.chain import EvmChain
from daemon.config import LayerConfig, MqttConfig, PoolConfig
from daemon.service.jobs import LoopScheduler
from daemon.service.metrics import Metrics
from daemon.service.publisher import Publisher
from daemon.service.store import Store
from rules.alert import LayerStatus
from rules.pipeline import Pipeline, PoolInfo
from rules.types import PoolId


@dataclass(frozen=True, slots=True)
class PipelineView:
    """Read-only access to the running pipeline: its pools and its layer states."""

    _pipeline: Pipeline

    def pools(self) -> tuple[PoolInfo, ...]:
        """The pools in pipeline order (names and fees as known now)."""
        return self._pipeline.pools

    def layer_statuses(self) -> list[LayerStatus]:
        """The current state of every (pool, layer)."""
        return self._pipeline.layer_statuses()


@dataclass(frozen=True, slots=True)
class PoolReading:
    """What a chain adapter has read of one pool: its quote token's symbol, or, for a
    pool whose data is unusable, the reason it is skipped (and no symbol)."""

    quote_symbol: str | None
    degraded: str | None = None

    def __post_init__(self) -> None:
        if (self.quote_symbol is None) == (self.degraded is None):
            raise ValueError("a PoolReading has a quote symbol or a degraded reason, not both")


@dataclass(frozen=True, slots=True)
class ChainsView:
    """Read-only access to what the chain adapters have learnt about the pools."""

    _adapters: Mapping[str, EvmChain]

    def reading(self, pool: PoolId) -> PoolReading | None:
        """The pool as its chain read it, or None while its chain is not connected yet
        (or the chain is not followed)."""
        adapter = self._adapters.get(pool.chain)
        if adapter is None:
            return None
        meta = adapter.meta.get(pool.address)
        if meta is not None:
            return PoolReading(meta.quote_symbol)
        reason = adapter.degraded.get(pool.address)
        return None if reason is None else PoolReading(None, reason)


@dataclass(frozen=True, slots=True)
class Runtime:
    """One run of the service, as the plugins see it."""

    mqtt: MqttConfig
    pools: tuple[PoolConfig, ...]
    layers: tuple[LayerConfig, ...]
    store: Store
    publisher: Publisher
    metrics: Metrics
    scheduler: LoopScheduler
    pipeline: PipelineView
    chains: ChainsView
    #: The ``/healthz`` document (version, broker connection, chain cursors, outbox depth).
    health: Callable[[], Mapping[str, Any]]

    def __post_init__(self) -> None:
        configured = [PoolId(p.chain, p.address) for p in self.pools]
        if configured != [info.pool for info in self.pipeline.pools()]:
            raise ValueError("Runtime: the configured pools are not the pipeline's, in order")
        if self.publisher.store is not self.store:
            raise ValueError("Runtime: the publisher must drain this run's store")
        if self.publisher.prefix != self.mqtt.topic_prefix:
            raise ValueError("Runtime: the publisher's topic prefix is not the configured one")
