"""Prometheus metrics of the daemon (served on ``/metrics`` when ``[http]`` is set).

Guarantees: one private registry per daemon (tests can run several), metric names
prefixed ``alvh_``, labels bounded by the config (chains, endpoints, layers).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.polls = Counter("alvh_polls", "Polls of a chain", ["chain"], registry=r)
        self.blocks = Counter("alvh_blocks_processed", "Blocks processed", ["chain"], registry=r)
        self.rpc_errors = Counter(
            "alvh_rpc_errors", "RPC errors per endpoint", ["chain", "endpoint", "kind"], registry=r
        )
        self.block_lag = Gauge(
            "alvh_block_lag",
            "Blocks between the chain head and the last processed block",
            ["chain"],
            registry=r,
        )
        self.last_block = Gauge("alvh_last_block", "Last processed block", ["chain"], registry=r)
        self.last_poll_time = Gauge(
            "alvh_last_poll_timestamp_seconds",
            "Unix time of the last successful poll of a chain",
            ["chain"],
            registry=r,
        )
        self.last_head_time = Gauge(
            "alvh_last_head_timestamp_seconds",
            "Unix time at which the chain's current head was first seen",
            ["chain"],
            registry=r,
        )
        self.reorgs = Counter("alvh_reorgs", "Chain reorganisations handled", ["chain"], registry=r)
        self.outbox_depth = Gauge(
            "alvh_outbox_depth", "Alert events waiting for the broker", registry=r
        )
        self.outbox_dropped = Counter(
            "alvh_outbox_dropped", "Alert events dropped because the outbox was full", registry=r
        )
        self.alerts = Counter(
            "alvh_alerts", "Alert events produced", ["layer", "event"], registry=r
        )
        self.alerts_published = Counter(
            "alvh_alerts_published",
            "Alert events acknowledged by the broker",
            ["layer"],
            registry=r,
        )
        self.alerts_suppressed = Counter(
            "alvh_alerts_suppressed",
            "Alert events inhibited or silenced",
            ["layer", "why"],
            registry=r,
        )
        self.layers_firing = Gauge(
            "alvh_layers_firing", "Pools with the layer firing", ["layer"], registry=r
        )
        self.degraded_pools = Gauge(
            "alvh_degraded_pools",
            "Pools skipped because their data is unusable",
            ["chain"],
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "alvh_mqtt_connected", "1 while connected to the broker", registry=r
        )
        self.step_seconds = Histogram(
            "alvh_pipeline_step_seconds",
            "Time to run the pipeline on one block",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
