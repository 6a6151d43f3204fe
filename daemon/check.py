"""Small commands of the CLI: ``check-config``."""

from __future__ import annotations

import sys
from pathlib import Path

from daemon.config import ConfigError, load_config
from daemon.errors import UserError


def check_config(path: Path) -> int:
    """Print every error with its path and return 2, or a short summary and return 0."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise UserError(
            [e if e.startswith(str(path)) else f"{path}: {e}" for e in exc.errors]
        ) from None
    layers = ", ".join(
        f"{layer.name}(level {layer.level})" for layer in sorted(cfg.layers, key=lambda x: x.level)
    )
    print(f"{path}: ok")
    print(f"  chains:   {len(cfg.chains)} ({', '.join(c.name for c in cfg.chains)})")
    print(f"  pools:    {len(cfg.pools)}")
    print(f"  layers:   {layers}")
    print(f"  calendar: {len(cfg.calendar)} window(s)")
    print(
        f"  bars:     {cfg.bars.interval}s; mqtt: {cfg.mqtt.url} prefix {cfg.mqtt.topic_prefix!r}"
    )
    sys.stdout.flush()
    return 0
