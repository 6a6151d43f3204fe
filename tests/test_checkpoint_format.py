"""A checkpoint written by another version (another feature-state format) is not
restored: the daemon logs a cold start instead of crashing, and runs on fresh state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from structlog.testing import capture_logs

from daemon.config import load_config
from daemon.service.daemon import CHECKPOINT_KEY, Daemon
from daemon.service.store import Store
from rules.pipeline import Pipeline

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "alvh.toml"


def test_an_old_checkpoint_starts_cold(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE)
    daemon = Daemon(cfg)
    daemon.store = Store(tmp_path / "alvh.sqlite")
    daemon.pipeline = Pipeline(cfg.pipeline_spec(), cfg.pool_infos())
    fresh = daemon.pipeline.get_state()
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
    daemon.store.put(CHECKPOINT_KEY, {"pipeline": saved, "chains": {}})
    with capture_logs() as logs:
        daemon._restore()
    cold = [e for e in logs if e["event"] == "checkpoint not restored, starting cold"]
    assert len(cold) == 1
    assert "format" in cold[0]["reason"]
    state = daemon.pipeline.get_state()
    for key in ("floats", "ints"):
        np.testing.assert_array_equal(state["features"][key], fresh["features"][key])
