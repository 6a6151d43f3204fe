"""The daemon: one asyncio TaskGroup of named tasks around the pure pipeline.

:class:`Daemon` is the process (signals, reloads, exit code); each run of the service,
the first and one per reload, is a :class:`Run` that builds everything it uses at once
and hands the plugins a :class:`~daemon.service.runtime.Runtime`.

Tasks: ``chain:<name>`` (one per chain: follow blocks, feed the pipeline, queue
alerts), ``publisher`` (MQTT), ``scheduler`` jobs (APScheduler: checkpoints,
housekeeping, calendar announcements, systemd watchdog), and ``http`` when
configured (metrics, dashboard).

Guarantees:
- alerts are committed to the outbox before they are published (see
  :mod:`daemon.service.store`); pipeline state and chain cursors are checkpointed every
  ``checkpoint_interval`` and at shutdown, so a restart continues warm and
  re-processing after a crash reproduces the same ids (never a second firing);
- the retained layer states are checkpointed with the state machines
  (:mod:`daemon.service.layerstate`), so a restart republishes what was true; pools and
  layers that left the config have their retained topics cleared and their notified
  firings resolved ("removed from config"); a changed pool list keeps the unchanged pools
  warm;
- SIGTERM / SIGINT: stop within seconds, publish ``offline``, exit 0;
  SIGHUP: reload the config; an invalid new config is one logged error and the
  daemon keeps running on the old one;
- a chain whose RPC is slow or dead never delays the other chains;
- a transient RPC error is retried with jittered backoff; a fatal one (wrong
  chain id) stops the daemon with exit code 1 and a one-line reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import math
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from adapters.errors import FatalError, TransientError
from adapters.evm.chain import Block, EvmChain, PoolSpec, Reorg
from adapters.evm.rpc import RpcPool
from daemon import __version__, logs
from daemon.config import ChainConfig, Config, ConfigError, load_config
from daemon.errors import UserError
from daemon.service import homeassistant, silences
from daemon.service.health import ChainLiveness
from daemon.service.http import start_http
from daemon.service.jobs import LoopScheduler
from daemon.service.layerstate import (
    OWNERSHIP_KEY,
    ChainMark,
    LayerBook,
    Ownership,
    layer_key,
    retained_topics,
)
from daemon.service.metrics import Metrics
from daemon.service.publisher import Publisher
from daemon.service.runtime import ChainsView, PipelineView, Runtime
from daemon.service.sdnotify import Notifier
from daemon.service.store import QueuedAlert, Store
from rules.alert import Alert, LayerStatus, json_number
from rules.calendar import active_windows, threshold_scale, transitions
from rules.durations import iso_utc
from rules.pipeline import Pipeline, StepResult
from rules.types import PoolId

log = structlog.get_logger(component="alvh.daemon")

#: Features published on the retained pool topic (dashboards).
TELEMETRY_FEATURES = (
    "price",
    "ret",
    "move_sigma",
    "move_sigma_1h",
    "drawdown_24h",
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_pos",
    "realized_vol",
    "iv",
    "tvl",
    "tick_tvl",
    "volume_24h",
    "tvl_volume_ratio",
    "tvl_drain_1h",
    "mev_score",
    "breadth",
    "corr",
    "threshold_scale",
)

CHECKPOINT_KEY = "checkpoint.v1"
_M_MMAP_THRESHOLD = -3  # mallopt(3) parameter number in glibc


@dataclass(slots=True)
class _ChainRuntime:
    cfg: ChainConfig
    adapter: EvmChain
    rows: dict[str, int]
    last_error: str = ""
    head: int = 0
    processed: int = -1
    blocks_seen: int = 0
    telemetry_at: dict[str, float] = field(default_factory=dict)
    tick: asyncio.Event = field(default_factory=asyncio.Event)
    tick_seconds: float = 2.0
    liveness: ChainLiveness = field(default_factory=lambda: ChainLiveness(60, time.time()))


def _pin_malloc_mmap_threshold() -> None:
    """Keep RSS flat over months: glibc raises its mmap threshold each time a large
    block is freed, after which big numpy buffers (feature state copies made for reorg
    rollback) come from the heap and fragment it. A fixed threshold (which also turns
    off the dynamic adjustment) keeps every buffer >= 128 KiB in its own mapping,
    returned to the kernel when freed. No-op outside glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
    except (OSError, AttributeError):
        pass


def run_daemon(path: Path) -> int:
    """``alvh run -c FILE``."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise UserError(exc.errors) from None
    logs.configure(cfg.daemon.log_format, cfg.daemon.log_level)
    _pin_malloc_mmap_threshold()
    daemon = Daemon(cfg, path)
    return asyncio.run(daemon.main())


class Daemon:
    """The process across runs: signals, reloads and the exit code.

    Each run (the first, and one per accepted reload) is a :class:`Run` built whole from
    the config of the moment; what outlives a run (the metrics registry, the systemd
    notifier, the start time, the stop and reload requests) lives here.
    """

    def __init__(self, cfg: Config, path: Path | None = None) -> None:
        self.cfg = cfg
        self.path = path
        self.started_at = iso_utc(int(time.time()))
        self.metrics = Metrics()
        self.notifier = Notifier()
        self.stop = asyncio.Event()
        self.reload = asyncio.Event()
        self.exit_code = 0
        self.fatal: str | None = None

    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._on_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        first = True
        try:
            while True:
                self.reload.clear()
                await self._run_once(first)
                first = False
                if self.stop.is_set() or self.fatal is not None:
                    break
                new = self._reload_config()
                if new is not None:
                    self.cfg = new
                    log.info("config reloaded", path=str(self.path))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        if self.fatal is not None:
            log.error("stopped", reason=self.fatal)
            return 1
        log.info("stopped")
        return self.exit_code

    def _on_stop(self, name: str) -> None:
        log.info("stopping", signal=name)
        self.notifier.stopping()
        self.stop.set()

    def _on_hup(self) -> None:
        if self.path is None:
            return
        try:
            load_config(self.path)
        except ConfigError as exc:
            log.error(
                "config reload refused, keeping the running config",
                path=str(self.path),
                error="; ".join(exc.errors),
            )
            return
        log.info("config reload requested", path=str(self.path))
        self.reload.set()

    def _reload_config(self) -> Config | None:
        if self.path is None:  # a reload is only requested by SIGHUP, with a file
            return None
        try:
            return load_config(self.path)
        except ConfigError as exc:
            log.error(
                "config reload refused, keeping the running config", error="; ".join(exc.errors)
            )
            return None

    def new_run(self) -> Run:
        """The next run, built from the current config."""
        return Run(
            self.cfg,
            metrics=self.metrics,
            notifier=self.notifier,
            started_at=self.started_at,
            stop=self.stop,
        )

    async def _run_once(self, first: bool) -> None:
        run = self.new_run()
        await run.serve(first=first, reload=self.reload)
        if run.fatal is not None:
            self.fatal = run.fatal


class Run:
    """One run of the service, from start (or a reload) until stop (or the next reload).

    Everything a run uses is built in :meth:`__init__`, in dependency order (pipeline,
    store, publisher, chains, restored state, scheduler, plugins), so no field is ever
    ``None`` waiting for a later step. :meth:`serve` starts the scheduler, the HTTP
    endpoint and the tasks, and on the way out checkpoints and closes what it opened.
    """

    def __init__(
        self,
        cfg: Config,
        *,
        metrics: Metrics,
        notifier: Notifier,
        started_at: str,
        stop: asyncio.Event,
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.notifier = notifier
        self.started_at = started_at
        self._stop = stop
        #: Why the run stopped the daemon (a fatal chain error), or None.
        self.fatal: str | None = None
        state_dir = Path(
            os.environ.get("STATE_DIRECTORY", "").split(":")[0] or cfg.daemon.state_dir
        )
        self.pipeline = Pipeline(cfg.pipeline_spec(), cfg.pool_infos())
        self.store = Store(state_dir / "alvh.sqlite", max_rows=cfg.daemon.outbox_max)
        try:
            status = {"state": "online", "version": __version__, "started_at": started_at}
            self.publisher = Publisher(cfg.mqtt, self.store, metrics, status=status)
            self.chains = {chain.name: self._chain_runtime(chain) for chain in cfg.chains}
            self.book = LayerBook()
            saved = self._restore()
            self._who = {
                (info.pool.chain, info.pool.address): (info.chain_id, info.name)
                for info in self.pipeline.pools
            }
            self._clear_removed(saved)
            for layer in self.book.snapshot(self.pipeline.layer_statuses(), self._who):
                self.publisher.retain(layer.topic_suffix, layer.to_payload())
            self._update_firing_gauges()
            self.scheduler = self._scheduler()
            self._plan_calendar()
            self.runtime = Runtime(
                mqtt=cfg.mqtt,
                pools=cfg.pools,
                layers=cfg.layers,
                store=self.store,
                publisher=self.publisher,
                metrics=metrics,
                scheduler=self.scheduler,
                pipeline=PipelineView(self.pipeline),
                chains=ChainsView({name: rt.adapter for name, rt in self.chains.items()}),
                health=self.health,
            )
            self.silences = silences.attach(self.runtime)
            self.homeassistant = homeassistant.attach(self.runtime)
        except BaseException:
            self.store.close()
            raise

    def _scheduler(self) -> LoopScheduler:
        scheduler = LoopScheduler(timezone="UTC")
        scheduler.add_job(
            self._checkpoint,
            "interval",
            seconds=self.cfg.daemon.checkpoint_interval,
            id="checkpoint",
        )
        scheduler.add_job(self._housekeeping, "interval", hours=1, id="housekeeping")
        scheduler.add_job(self._plan_calendar, "interval", hours=12, id="calendar-plan")
        for rt in self.chains.values():
            # Polling where no new-heads stream wakes the chain: "head" polls fast over
            # HTTP, or every 2 s as a safety net under an eth_subscribe newHeads stream.
            if rt.cfg.poll_interval == "head":
                rt.tick_seconds = 2.0 if rt.adapter.rpc.ws_urls else 0.2
            else:
                rt.tick_seconds = float(rt.cfg.poll_interval)
            scheduler.add_job(
                rt.tick.set, "interval", seconds=rt.tick_seconds, id=f"poll-{rt.cfg.name}"
            )
        if self.notifier.watchdog_interval:
            scheduler.add_job(
                self._watchdog,
                "interval",
                seconds=self.notifier.watchdog_interval,
                id="watchdog",
            )
        return scheduler

    async def serve(self, *, first: bool, reload: asyncio.Event) -> None:
        """Follow the chains and publish until ``stop`` or ``reload`` is set; then
        checkpoint and close. Call once."""
        cfg = self.cfg
        self.scheduler.start()
        http_runner = None
        try:
            if cfg.http is not None:
                http_runner, port = await start_http(cfg.http, self.runtime)
                log.info("http listening", listen=cfg.http.listen, port=port)
            async with asyncio.TaskGroup() as tg:
                stop_inner = asyncio.Event()
                tg.create_task(self.publisher.run(stop_inner), name="publisher")
                for rt in self.chains.values():
                    tg.create_task(self._chain_task(rt, stop_inner), name=f"chain:{rt.cfg.name}")
                if first:
                    self.notifier.ready(
                        f"following {len(self.chains)} chain(s), {len(cfg.pools)} pool(s)"
                    )
                else:
                    self.notifier.notify("READY=1")
                waiters = [
                    asyncio.ensure_future(self._stop.wait()),
                    asyncio.ensure_future(reload.wait()),
                ]
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                if reload.is_set() and not self._stop.is_set():
                    self.notifier.notify("RELOADING=1")
                self._checkpoint()
                stop_inner.set()
        finally:
            self.scheduler.shutdown(wait=False)
            if http_runner is not None:
                await http_runner.cleanup()
            for rt in self.chains.values():
                await rt.adapter.close()
            self._checkpoint()
            self.store.close()

    def _chain_runtime(self, chain: ChainConfig) -> _ChainRuntime:
        pools = [p for p in self.cfg.pools if p.chain == chain.name]
        rpc = RpcPool(
            chain.rpc,
            timeout=chain.request_timeout,
            name=chain.name,
            on_error=self._rpc_error_hook(chain.name),
        )
        adapter = EvmChain(
            chain.name,
            chain.chain_id,
            rpc,
            [PoolSpec(p.address, p.kind, p.quote) for p in pools],
            confirmations=chain.confirmations,
            backfill_batch=chain.backfill_batch,
            multicall=chain.multicall,
            keep_hashes=max(256, self.cfg.daemon.reorg_depth * 2),
            on_degraded=self._on_degraded,
        )
        rows = {p.address: self.pipeline.row_of[PoolId(chain.name, p.address)] for p in pools}
        liveness = ChainLiveness(chain.stale_seconds, time.time())
        return _ChainRuntime(cfg=chain, adapter=adapter, rows=rows, liveness=liveness)

    def _rpc_error_hook(self, chain: str) -> Callable[[str, str], None]:
        def hook(endpoint: str, kind: str) -> None:
            self.metrics.rpc_errors.labels(chain=chain, endpoint=endpoint, kind=kind).inc()

        return hook

    # -- chains ----------------------------------------------------------------------

    async def _chain_task(self, rt: _ChainRuntime, stop: asyncio.Event) -> None:
        name = rt.cfg.name
        backoff = 0.5
        while not stop.is_set():
            try:
                await rt.adapter.connect()
                self._apply_fees(rt)
                log.info(
                    "chain connected",
                    chain=name,
                    endpoint=rt.adapter.rpc.current_label,
                    pools=len(rt.adapter.meta),
                    degraded=len(rt.adapter.degraded),
                    multicall=rt.adapter.uses_multicall,
                    new_heads="ws" if rt.adapter.rpc.ws_urls else "polling",
                )
                break
            except TransientError as exc:
                self._chain_error(rt, exc)
            except FatalError as exc:
                self.fatal = f"chain {name}: {exc}"
                self._stop.set()
                return
            backoff = await self._sleep(stop, backoff)
        backoff = 0.5
        while not stop.is_set():
            try:
                head = await rt.adapter.head()
                rt.head = head
                self.metrics.polls.labels(chain=name).inc()
                items = await rt.adapter.poll(head)
                for item in items:
                    if isinstance(item, Reorg):
                        self._on_reorg(rt, item)
                    else:
                        self._on_block(rt, item)
                if rt.processed >= 0:
                    self.metrics.block_lag.labels(chain=name).set(max(0, head - rt.processed))
                self._polled(rt, head)
                backoff = 0.5
                if rt.last_error:
                    log.info("chain recovered", chain=name, endpoint=rt.adapter.rpc.current_label)
                    rt.last_error = ""
                if rt.adapter.behind > 0:
                    await asyncio.sleep(0)
                    continue
            except TransientError as exc:
                self._chain_error(rt, exc)
                backoff = await self._sleep(stop, backoff)
                continue
            except FatalError as exc:
                self.fatal = f"chain {name}: {exc}"
                self._stop.set()
                return
            await self._next_poll(rt, stop)

    async def _next_poll(self, rt: _ChainRuntime, stop: asyncio.Event) -> None:
        """Wait for the next reason to poll: a new head on a ws:// endpoint
        (``eth_subscribe newHeads``), the chain's APScheduler polling tick, or stop."""
        rt.tick.clear()
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(rt.tick.wait()),
            asyncio.ensure_future(stop.wait()),
        ]
        if rt.adapter.rpc.ws_urls:
            waiters.append(asyncio.ensure_future(rt.adapter.wait_new_head(rt.tick_seconds)))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _polled(self, rt: _ChainRuntime, head: int) -> None:
        """A successful poll: the liveness the health check and the metrics report."""
        rt.liveness.polled(head, time.time())
        labels = {"chain": rt.cfg.name}
        self.metrics.last_poll_time.labels(**labels).set(rt.liveness.last_poll or 0)
        self.metrics.last_head_time.labels(**labels).set(rt.liveness.last_new_head or 0)

    def _chain_error(self, rt: _ChainRuntime, exc: Exception) -> None:
        text = str(exc)
        if text != rt.last_error:
            log.warning("chain rpc error, retrying", chain=rt.cfg.name, error=text)
        rt.last_error = text

    @staticmethod
    async def _sleep(stop: asyncio.Event, backoff: float) -> float:
        delay = backoff * (0.5 + random.random())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        return min(backoff * 2, 30.0)

    def _apply_fees(self, rt: _ChainRuntime) -> None:
        for address, meta in rt.adapter.meta.items():
            row = rt.rows[address]
            pool_cfg = next(
                p for p in self.cfg.pools if p.chain == rt.cfg.name and p.address == address
            )
            if pool_cfg.fee is None:
                self.pipeline.set_fee(row, meta.fee)
            if self.cfg.pools[row].name is None:
                self.pipeline.set_name(
                    row, f"{meta.base_symbol}/{meta.quote_symbol} {meta.fee * 100:g}%"
                )

    def _on_degraded(self, pool: PoolId, reason: str) -> None:
        log.warning("pool degraded, skipped", chain=pool.chain, pool=pool.address, reason=reason)
        self.publisher.retain(
            f"pools/{pool.chain}/{pool.address}",
            {"state": "degraded", "reason": reason, "pool": pool.address, "chain": pool.chain},
            qos=0,
        )
        rt = self.chains.get(pool.chain)
        if rt is not None:
            self.metrics.degraded_pools.labels(chain=pool.chain).set(len(rt.adapter.degraded))

    def _on_block(self, rt: _ChainRuntime, block: Block) -> None:
        rt.processed = block.number
        rt.blocks_seen += 1
        self.book.mark_block(
            rt.cfg.name, ChainMark(rt.cfg.chain_id, block.number, block.hash, block.timestamp)
        )
        self.metrics.blocks.labels(chain=rt.cfg.name).inc()
        self.metrics.last_block.labels(chain=rt.cfg.name).set(block.number)
        if not block.samples:
            return
        t0 = time.perf_counter()
        # One block of one chain: all its samples share time, block and hash -> one step.
        (result,) = self.pipeline.step_samples(block.samples)
        self.metrics.step_seconds.observe(time.perf_counter() - t0)
        self._emit(result.alerts, result.suppressed, result.layers)
        self._telemetry(rt, result)

    def _on_reorg(self, rt: _ChainRuntime, reorg: Reorg) -> None:
        self.metrics.reorgs.labels(chain=rt.cfg.name).inc()
        try:
            retracted, statuses = self.pipeline.rollback(rt.cfg.name, reorg.ancestor)
        except ValueError as exc:
            log.error("reorg deeper than the kept history", chain=rt.cfg.name, error=str(exc))
            retracted, statuses = [], self.pipeline.layer_statuses()
        log.warning(
            "chain reorganisation",
            chain=rt.cfg.name,
            ancestor=reorg.ancestor,
            depth=reorg.depth,
            retracted=len(retracted),
        )
        rt.processed = reorg.ancestor
        self._emit(retracted, [], statuses, snapshot=True)

    def _emit(
        self,
        alerts: Sequence[Alert],
        suppressed: Sequence[Alert],
        layers: Sequence[LayerStatus],
        *,
        snapshot: bool = False,
    ) -> None:
        """Queue ``alerts`` and publish ``layers``: the statuses of transitions, or with
        ``snapshot`` the states read off the machines (a reorg)."""
        alerts = self.silences.filter(alerts, layers)
        qos = self.cfg.mqtt.qos
        prefix = self.cfg.mqtt.topic_prefix
        queued = [
            QueuedAlert(
                a.id, f"{prefix}/{a.topic_suffix}", a.to_json(), max(qos, 1) if qos else 0, a.pool
            )
            for a in alerts
        ]
        journal = [
            (
                a.id,
                "inhibited",
                f"{prefix}/{a.topic_suffix}",
                a.to_json(),
                f"inhibited by {a.suppressed_by}",
            )
            for a in suppressed
        ]
        if queued or journal:
            before = self.store.dropped
            self.store.commit(queued, journal=journal)
            if self.store.dropped > before:
                self.metrics.outbox_dropped.inc(self.store.dropped - before)
                log.error("outbox full, oldest alerts dropped", dropped=self.store.dropped - before)
            self.publisher.notify()
        self._count_and_log(alerts)
        for a in suppressed:
            self.metrics.alerts_suppressed.labels(layer=a.layer, why="inhibited").inc()
        self.book.published(alerts)
        if snapshot:
            layers = self.book.snapshot(layers, self._who)
        else:
            layers = self.book.transitions(layers, self._who)
        for status in layers:
            self.publisher.retain(status.topic_suffix, status.to_payload())
        if layers:
            self._update_firing_gauges()

    def _count_and_log(self, alerts: Sequence[Alert]) -> None:
        """Count published alerts in the metrics and log one line each."""
        for a in alerts:
            self.metrics.alerts.labels(layer=a.layer, event=a.event).inc()
            log.info(
                "alert",
                kind=a.event,
                chain=a.chain,
                pool=a.pool,
                layer=a.layer,
                block=a.block,
                id=a.id,
                reason=a.reason,
            )

    def _update_firing_gauges(self) -> None:
        engine = self.pipeline.engine
        for li, spec in enumerate(engine.layers):
            self.metrics.layers_firing.labels(layer=spec.name).set(
                int((engine.state[li] == 2).sum())
            )

    def _telemetry(self, rt: _ChainRuntime, result: StepResult) -> None:
        now = time.monotonic()
        interval = self.cfg.mqtt.telemetry_interval
        snap = result.snapshot
        for ci, row in enumerate(snap.rows.tolist()):
            info = self.pipeline.pools[row]
            key = info.pool.address
            if now - rt.telemetry_at.get(key, -math.inf) < interval:
                continue
            rt.telemetry_at[key] = now
            values: dict[str, float | None] = {}
            for name in TELEMETRY_FEATURES:
                arr = snap.values.get(name)
                value = (
                    float(arr[ci])
                    if arr is not None
                    else (result.threshold_scale if name == "threshold_scale" else math.nan)
                )
                values[name] = json_number(value)
            self.publisher.retain(
                f"pools/{info.pool.chain}/{info.pool.address}",
                {
                    "state": "ok",
                    "chain": info.pool.chain,
                    "pool": info.pool.address,
                    "pool_name": info.name,
                    "time": iso_utc(result.time),
                    "block": rt.processed,
                    "features": values,
                },
                qos=0,
            )

    # -- checkpoints & jobs ------------------------------------------------------------

    def _restore(self) -> dict[str, Any] | None:
        """Continue from the checkpoint: every pool and layer it has that the config still
        has, unchanged, continues warm (see :meth:`Pipeline.set_state`); the log says
        which. Returns the checkpoint (None without one)."""
        saved: dict[str, Any] | None = self.store.get(CHECKPOINT_KEY)
        if saved is None:
            log.info("no checkpoint, starting cold")
            return None
        self.book.set_state(saved.get("layers"))
        try:
            report = self.pipeline.set_state(saved["pipeline"])
        except (ValueError, KeyError) as exc:
            log.warning("checkpoint not restored, starting cold", reason=str(exc))
            return saved
        for name, cursor in saved.get("chains", {}).items():
            rt = self.chains.get(name)
            if rt is None or cursor.get("chain_id") != rt.cfg.chain_id:
                continue
            rt.adapter.restore(cursor["next_block"], cursor["hashes"])
            rt.processed = cursor["next_block"] - 1
        log.info(
            "checkpoint restored",
            chains={n: rt.adapter.next_block for n, rt in self.chains.items()},
            pools_warm=len(report.pools),
            pools_cold=list(report.cold_pools),
            layers_warm=list(report.layers),
            layers_cold=list(report.cold_layers),
        )
        return saved

    def _clear_removed(self, saved: dict[str, Any] | None) -> None:
        """Clear the retained topics of pools and layers an earlier config had and this one
        has not, and close their notified firings with a ``resolved`` alert ("removed from
        config"). What an earlier run owned is in the state store (or, from a version that
        did not record it, the checkpoint's pools and layers)."""
        prefix = self.cfg.mqtt.topic_prefix
        owned = retained_topics(
            prefix,
            [(p.chain, p.address) for p in self.cfg.pools],
            [x.name for x in self.cfg.layers],
        )
        before = Ownership.from_state(self.store.get(OWNERSHIP_KEY))
        if before is None and saved is not None:
            pipeline = saved.get("pipeline", {})
            pools = [tuple(str(p).split("/", 1)) for p in pipeline.get("pools", [])]
            layers = list(pipeline.get("engine", {}).get("layers", []))
            before = Ownership(
                frozenset(retained_topics(prefix, [(c, a) for c, a in pools], layers))
            )
        previous = before.topics | before.clearing if before is not None else frozenset()
        removed = previous - owned
        resolved: list[Alert] = []
        gone = []
        for topic in sorted(removed):
            key = layer_key(topic, prefix)
            if key is None:
                continue
            gone.append(key)
            alert = self.book.removal_alert(key)
            if alert is not None:
                resolved.append(alert)
        self.book.forget(gone)
        self._ownership = Ownership(frozenset(owned), frozenset(removed))
        qos = self.cfg.mqtt.qos
        queued = [
            QueuedAlert(
                a.id, f"{prefix}/{a.topic_suffix}", a.to_json(), max(qos, 1) if qos else 0, a.pool
            )
            for a in resolved
        ]
        if queued or before != self._ownership or self.store.get(OWNERSHIP_KEY) is None:
            self.store.commit(queued, kv=[(OWNERSHIP_KEY, self._ownership.to_state())])
        for topic in sorted(removed):
            self.publisher.retain_abs(topic, None)
        self._count_and_log(resolved)
        if removed:
            log.info(
                "retained topics of removed pools and layers cleared",
                topics=len(removed),
                resolved=len(resolved),
            )

    def _settle_ownership(self) -> None:
        """Forget the removed topics whose empty retained payload the broker acknowledged."""
        ownership = self._ownership
        if not ownership.clearing:
            return
        left = frozenset(t for t in ownership.clearing if not self.publisher.delivered(t))
        if left != ownership.clearing:
            self._ownership = Ownership(ownership.topics, left)
            self.store.put(OWNERSHIP_KEY, self._ownership.to_state())

    def _checkpoint(self) -> None:
        chains = {
            name: {
                "chain_id": rt.cfg.chain_id,
                "next_block": rt.adapter.next_block,
                "hashes": dict(list(rt.adapter.hashes.items())[-64:]),
            }
            for name, rt in self.chains.items()
            if rt.adapter.next_block is not None
        }
        try:
            self.store.put(
                CHECKPOINT_KEY,
                {
                    "pipeline": self.pipeline.get_state(),
                    "chains": chains,
                    "layers": self.book.get_state(),
                },
            )
            self._settle_ownership()
        except Exception as exc:
            log.error("checkpoint failed", error=str(exc))

    def _housekeeping(self) -> None:
        self.store.housekeeping()

    def _watchdog(self) -> None:
        self.notifier.watchdog()

    def _plan_calendar(self) -> None:
        """Announce calendar windows at their edges (APScheduler date jobs), and publish
        the current scale as the retained ``{prefix}/calendar`` topic."""
        windows = self.cfg.calendar_windows()
        if not windows:
            return
        now = int(time.time())
        self._announce_calendar(now)
        for edge in transitions(windows, now, now + 13 * 3600):
            self.scheduler.add_job(
                self._announce_calendar,
                "date",
                run_date=iso_utc(edge.time).replace("Z", "+00:00"),
                args=[edge.time],
                id=f"calendar-{edge.name}-{edge.kind}-{edge.time}",
                replace_existing=True,
            )

    def _announce_calendar(self, at: int) -> None:
        windows = self.cfg.calendar_windows()
        scale = threshold_scale(windows, at)
        active = [w.name for w in active_windows(windows, at)]
        log.info("calendar", time=iso_utc(at), threshold_scale=scale, active=active)
        self.publisher.retain(
            "calendar", {"time": iso_utc(at), "threshold_scale": scale, "active": active}
        )

    # -- introspection for the HTTP endpoint ------------------------------------------

    def health(self) -> dict[str, Any]:
        now = time.time()
        problems = [
            line
            for name, rt in self.chains.items()
            if (line := rt.liveness.problem(name, now)) is not None
        ]
        return {
            "status": "degraded" if problems else "ok",
            "problems": problems,
            "version": __version__,
            "started_at": self.started_at,
            "mqtt_connected": self.publisher.connected.is_set(),
            "chains": {n: self._chain_health(rt, now) for n, rt in self.chains.items()},
            "outbox_depth": self.store.depth(),
        }

    @staticmethod
    def _chain_health(rt: _ChainRuntime, now: float) -> dict[str, Any]:
        live = rt.liveness
        return {
            "head": rt.head,
            "processed": rt.processed,
            "error": rt.last_error or None,
            "stale": live.stale(now),
            "last_poll": iso_utc(int(live.last_poll)) if live.last_poll is not None else None,
            "last_new_head": (
                iso_utc(int(live.last_new_head)) if live.last_new_head is not None else None
            ),
        }
