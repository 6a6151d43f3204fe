"""Building blocks for daemon integration tests: a config for the demo market on anvil,
price paths driven as real swaps, and helpers to read alerts off a subscriber."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from daemon.demo.devchain import V3Pool
from tests.plugins.broker import Broker, Message
from tests.plugins.chain import DemoChain

FLIP_LAYER = """
[[layers]]
name = "FLIP"
level = 1
when = "ret > 0"
"""

SIGMA_LAYERS = """
[[layers]]
name = "L1"
level = 1
when = "abs(move_sigma) >= 3"
clear_when = "abs(move_sigma) < 1"
hedge = { instrument = "put", strike_sigma = -1.0, coverage = 0.25, expiry = "7d" }

[[layers]]
name = "L2"
level = 2
when = "move_sigma <= -6"
clear_when = "move_sigma > -1"
hedge.instrument = "collar"
hedge.strike_sigma = -2.0
hedge.call_sigma = 1.0
hedge.coverage = 0.5
hedge.expiry = "14d"
"""


def pool_entry(pool: Any, name: str, chain: str = "devchain") -> str:
    kind = "uniswap_v3" if isinstance(pool, V3Pool) else "uniswap_v2"
    quote = "token0" if pool.quote == pool.token0 else "token1"
    return (
        f'[[pools]]\nchain = "{chain}"\naddress = "{pool.address}"\nkind = "{kind}"\n'
        f'name = "{name}"\nquote = "{quote}"\n'
    )


def config_text(
    tmp_path: Path,
    dc: DemoChain,
    broker: Broker | None,
    *,
    layers: str = SIGMA_LAYERS,
    all_pools: bool = False,
    mqtt: str = "",
    extra: str = "",
    state_dir: Path | None = None,
) -> str:
    market = dc.market
    pools = [(market.v3_500, "WETH/USDC 0.05%")]
    if all_pools:
        pools += [(market.v3_3000, "WETH/USDC 0.3%"), (market.v2, "WETH/USDC V2")]
    mqtt_block = mqtt or f'url = "{broker.url if broker else "mqtt://127.0.0.1:1"}"'
    return f"""
[daemon]
state_dir = "{state_dir or tmp_path / "state"}"
log_format = "json"
checkpoint_interval = "1s"

[mqtt]
{mqtt_block}
topic_prefix = "alvh"
qos = 1
reconnect_max = "2s"
telemetry_interval = "0s"

[[chains]]
name = "devchain"
chain_id = {market.chain_id}
rpc = ["{dc.anvil.url}"]
poll_interval = "head"

{"".join(pool_entry(p, n) for p, n in pools)}
[bars]
interval = "1m"

[features]
sigma_window = 10
realized_vol_window = 10
{layers}
{extra}
"""


def write_config(tmp_path: Path, dc: DemoChain, broker: Broker | None, **kw: Any) -> Path:
    cfg = tmp_path / "alvh.toml"
    cfg.write_text(config_text(tmp_path, dc, broker, **kw))
    return cfg


def next_timestamp(dc: DemoChain) -> int:
    return int(dc.chain.latest_block().timestamp) + 12


def drive(
    dc: DemoChain, prices: list[float], start: int, *, step: int = 12, pools: Any = None
) -> int:
    """One block per price at exact timestamps, every pool moved to it; returns the next time."""
    targets = pools if pools is not None else [dc.market.v3_500]
    t = start
    for p in prices:
        with dc.chain.block(timestamp=t):
            for pool in targets:
                dc.chain.swap_to_price(pool, p)
        t += step
    return t


def random_walk(p0: float, n: int, vol: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    out, p = [], p0
    for _ in range(n):
        p *= math.exp(rng.gauss(0.0, vol))
        out.append(p)
    return out


def zigzag(p0: float, n: int, amplitude: float = 0.002) -> list[float]:
    """Up, back, up, back ...: with 1m bars and 12s blocks, ``ret`` of the forming bar
    changes sign at every block, so a ``ret > 0`` layer fires and resolves every block."""
    return [p0 * (1 + amplitude) if i % 2 == 0 else p0 * (1 - amplitude) for i in range(n)]


def alert_payloads(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic.startswith("alvh/alerts/")]


def alerts(messages: list[Message], event: str, layer: str) -> list[dict[str, Any]]:
    return [p for p in alert_payloads(messages) if p["event"] == event and p["layer"] == layer]


def online(messages: list[Message]) -> bool:
    return any(m.topic == "alvh/status" and m.json()["state"] == "online" for m in messages)
