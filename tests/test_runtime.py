"""The plugins' view of a run (daemon.service.runtime): a Run builds its Runtime whole,
the Runtime checks itself, and its views follow the live pipeline and chain adapters.
No broker or chain is needed: nothing here connects."""

from __future__ import annotations

import asyncio
import dataclasses
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon import __version__
from daemon.config import parse_config
from daemon.service.daemon import Run
from daemon.service.homeassistant import FEATURE_SENSORS, HomeAssistantDiscovery
from daemon.service.metrics import Metrics
from daemon.service.runtime import PoolReading
from daemon.service.sdnotify import Notifier
from daemon.service.store import Store
from rules.types import PoolId
from tests.conftest import REPO_ROOT

POOL = PoolId("ethereum", "0x88e6A0c2dDD26FEEb64F039a2c41296FcB3f5640")
OTHER = PoolId("ethereum", "0x8ad599c3A0ff1De082011EFDDc58f1908eb6e6D8")  # the 0.3% pool


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    data = tomllib.loads((REPO_ROOT / "examples" / "alvh.toml").read_text())
    data["daemon"]["state_dir"] = str(tmp_path / "state")
    data["mqtt"] = {"url": "mqtt://127.0.0.1:1", "homeassistant": True}  # never connected
    data["chains"][0]["rpc"] = ["http://127.0.0.1:1"]
    data["pools"].append({"chain": "ethereum", "address": OTHER.address, "quote": "token0"})
    built = Run(
        parse_config(data),
        metrics=Metrics(),
        notifier=Notifier(),
        started_at="2026-01-01T00:00:00Z",
        stop=asyncio.Event(),
    )
    yield built
    for rt in built.chains.values():
        await rt.adapter.close()
    built.store.close()


async def test_the_run_hands_its_own_objects_to_the_plugins(run: Run) -> None:
    runtime = run.runtime
    assert runtime.store is run.store
    assert runtime.publisher is run.publisher
    assert runtime.scheduler is run.scheduler
    assert runtime.metrics is run.metrics
    assert runtime.mqtt is run.cfg.mqtt
    assert run.silences.runtime is runtime
    assert isinstance(run.homeassistant, HomeAssistantDiscovery)
    assert run.homeassistant.runtime is runtime
    assert runtime.health() == {
        "status": "ok",  # a chain is stale only after stale_after without a head
        "problems": [],
        "version": __version__,
        "started_at": "2026-01-01T00:00:00Z",
        "mqtt_connected": False,
        "chains": {
            "ethereum": {
                "head": 0,
                "processed": -1,
                "error": None,
                "stale": False,
                "last_poll": None,
                "last_new_head": None,
            }
        },
        "outbox_depth": 0,
    }


async def test_the_runtime_refuses_parts_of_another_run(run: Run, tmp_path: Path) -> None:
    runtime = run.runtime
    with pytest.raises(ValueError, match="configured pools"):
        dataclasses.replace(runtime, pools=runtime.pools[1:])
    with pytest.raises(ValueError, match="configured pools"):
        dataclasses.replace(runtime, pools=runtime.pools[::-1])
    other = Store(tmp_path / "other.sqlite")
    try:
        with pytest.raises(ValueError, match="this run's store"):
            dataclasses.replace(runtime, store=other)
    finally:
        other.close()
    renamed = run.cfg.mqtt.model_copy(update={"topic_prefix": "elsewhere"})
    with pytest.raises(ValueError, match="topic prefix"):
        dataclasses.replace(runtime, mqtt=renamed)
    with pytest.raises(dataclasses.FrozenInstanceError):
        runtime.store = other  # type: ignore[misc]


async def test_the_pipeline_view_is_live(run: Run) -> None:
    view = run.runtime.pipeline
    row = run.pipeline.row_of[POOL]
    assert view.pools()[row].name == "ETH/USDC 0.05%"
    run.pipeline.set_name(row, "renamed on chain")
    assert view.pools()[row].name == "renamed on chain"
    statuses = view.layer_statuses()
    assert [(s.pool, s.layer) for s in statuses] == [
        (pool.address, layer.name) for pool in (POOL, OTHER) for layer in run.cfg.layers
    ]
    assert all(s.state == "inactive" for s in statuses)


async def test_the_chains_view_follows_what_the_adapters_read(run: Run) -> None:
    chains = run.runtime.chains
    assert chains.reading(POOL) is None  # not connected yet
    assert chains.reading(PoolId("nowhere", POOL.address)) is None  # chain not followed
    # Home Assistant publishes only the pools whose chain was read: none yet.
    assert run.homeassistant is not None
    assert run.homeassistant.messages() == []
    run.chains["ethereum"].adapter.degraded[POOL.address] = "no contract code"
    assert chains.reading(POOL) == PoolReading(None, "no contract code")
    messages = run.homeassistant.messages()
    assert len(messages) == len(FEATURE_SENSORS) + len(run.cfg.layers)  # that pool only
    assert {m.payload["device"]["identifiers"][0] for m in messages} == {
        f"alvh_ethereum_{POOL.address.lower()}"
    }
    price = next(m for m in messages if m.topic.endswith("_price/config"))
    assert "unit_of_measurement" not in price.payload  # a degraded pool has no quote symbol


def test_a_pool_reading_has_a_symbol_or_a_reason() -> None:
    assert PoolReading("USDC").degraded is None
    with pytest.raises(ValueError, match="not both"):
        PoolReading(None)
    with pytest.raises(ValueError, match="not both"):
        PoolReading("USDC", "no contract code")
