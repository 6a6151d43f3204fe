"""A checkpoint written by another version (another feature-state format) is not
restored: the daemon logs a cold start instead of crashing, and runs on fresh state."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path

import numpy as np
from structlog.testing import capture_logs

from daemon.config import parse_config
from daemon.service.daemon import CHECKPOINT_KEY, Run
from daemon.service.metrics import Metrics
from daemon.service.sdnotify import Notifier
from daemon.service.store import Store
from rules.pipeline import Pipeline
from tests.conftest import REPO_ROOT


async def test_an_old_checkpoint_starts_cold(tmp_path: Path) -> None:
    data = tomllib.loads((REPO_ROOT / "examples" / "alvh.toml").read_text())
    data["daemon"]["state_dir"] = str(tmp_path)
    data["mqtt"] = {"url": "mqtt://127.0.0.1:1"}  # never connected
    data["chains"][0]["rpc"] = ["http://127.0.0.1:1"]
    cfg = parse_config(data)
    fresh = Pipeline(cfg.pipeline_spec(), cfg.pool_infos()).get_state()
    saved = Pipeline(cfg.pipeline_spec(), cfg.pool_infos()).get_state()
    n_pools = len(cfg.pool_infos())
    # The per-step engine's feature state (format 1): objects per indicator and window.
    saved["features"] = {
        "params": saved["features"]["params"],
        "n_pools": n_pools,
        "bars": {"n_pools": n_pools, "interval": cfg.bars.interval, "close": np.ones(n_pools)},
        "rsi": {"kind": "rsi", "n_series": n_pools, "count": np.zeros(n_pools, dtype=np.int64)},
        "n_closed": np.zeros(n_pools, dtype=np.int64),
    }
    store = Store(tmp_path / "alvh.sqlite")
    store.put(CHECKPOINT_KEY, {"pipeline": saved, "chains": {}})
    store.close()
    with capture_logs() as logs:
        run = Run(
            cfg,
            metrics=Metrics(),
            notifier=Notifier(),
            started_at="2026-01-01T00:00:00Z",
            stop=asyncio.Event(),
        )
    try:
        cold = [e for e in logs if e["event"] == "checkpoint not restored, starting cold"]
        assert len(cold) == 1
        assert "format" in cold[0]["reason"]
        state = run.pipeline.get_state()
        for key in ("floats", "ints"):
            np.testing.assert_array_equal(state["features"][key], fresh["features"][key])
    finally:
        for rt in run.chains.values():
            await rt.adapter.close()
        run.store.close()


async def test_a_checkpoint_without_the_stale_count_restores_warm(tmp_path: Path) -> None:
    """Layer state saved before ``stale_after`` existed (no ``unknown_since`` timer) is
    restored warm: the layers keep firing, the stale count starts unset."""
    data = tomllib.loads((REPO_ROOT / "examples" / "alvh.toml").read_text())
    data["daemon"]["state_dir"] = str(tmp_path)
    data["mqtt"] = {"url": "mqtt://127.0.0.1:1"}  # never connected
    data["chains"][0]["rpc"] = ["http://127.0.0.1:1"]
    cfg = parse_config(data)
    before = Pipeline(cfg.pipeline_spec(), cfg.pool_infos())
    l3 = before.engine.layer_index("L3")
    before.engine.state[l3, 0] = 2  # firing
    before.engine.since[l3, 0] = 1_700_000_000
    saved = before.get_state()
    del saved["engine"]["unknown_since"]
    store = Store(tmp_path / "alvh.sqlite")
    store.put(CHECKPOINT_KEY, {"pipeline": saved, "chains": {}})
    store.close()
    with capture_logs() as logs:
        run = Run(
            cfg,
            metrics=Metrics(),
            notifier=Notifier(),
            started_at="2026-01-01T00:00:00Z",
            stop=asyncio.Event(),
        )
    try:
        assert [e["event"] for e in logs if "checkpoint" in e["event"]] == ["checkpoint restored"]
        engine = run.pipeline.engine
        assert engine.state[l3, 0] == 2
        assert engine.since[l3, 0] == 1_700_000_000
        assert (engine.unknown_since == np.iinfo(np.int64).min).all()
    finally:
        for rt in run.chains.values():
            await rt.adapter.close()
        run.store.close()
