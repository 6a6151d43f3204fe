"""Alert latency: from the triggering block being mined to the alert reaching an
independent MQTT subscriber, on anvil + real Uniswap V3 + Mosquitto + ``alvh run``.

Each measured block moves the pool across its last close, so a ``ret > 0`` layer fires
(or resolves) in exactly that block. The wall clock is read right after ``evm_mine``
returns and when the subscriber's callback gets the alert. Prints p50/p90/p99 for the
daemon following new heads over HTTP polling (``poll_interval = "head"``) and, when
the RPC URL is ws://, over ``eth_subscribe newHeads``. Targets: p50 <= 100 ms,
p99 <= 250 ms when following new heads.

Run: .venv/bin/python bench/bench_latency.py [--firings 100] [--transport http|ws|both]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from daemon.demo.devchain import Anvil, DevChain, V3Pool, deploy_demo_market
from daemon.demo.localbroker import LocalBroker

LAYER = """
[[layers]]
name = "FLIP"
level = 1
when = "ret > 0"
"""


def config(rpc: str, chain_id: int, pool: V3Pool, broker: str, state: Path) -> str:
    quote = "token0" if pool.quote == pool.token0 else "token1"
    return f"""
[daemon]
state_dir = "{state}"
log_format = "json"
log_level = "warning"

[mqtt]
url = "{broker}"
qos = 1

[[chains]]
name = "bench"
chain_id = {chain_id}
rpc = [{rpc}]
poll_interval = "head"

[[pools]]
chain = "bench"
address = "{pool.address}"
quote = "{quote}"

[bars]
interval = "1h"
{LAYER}
"""


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def run(transport: str, firings: int) -> list[float]:
    received: dict[int, float] = {}
    lock = threading.Lock()
    with LocalBroker(websockets=False) as broker, Anvil(timestamp=1_700_000_000) as node:
        chain = DevChain(node.url)
        market = deploy_demo_market(chain, eth_price=3000.0, block_interval=None)
        pool = market.v3_500
        ws = node.url.replace("http://", "ws://")
        rpc = f'"{node.url}"' if transport == "http" else f'"{node.url}", "{ws}"'
        with tempfile.TemporaryDirectory() as tmp:
            cfg = Path(tmp) / "alvh.toml"
            cfg.write_text(config(rpc, market.chain_id, pool, broker.url, Path(tmp) / "state"))

            def on_message(_c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
                now = time.time()
                payload = json.loads(msg.payload)
                with lock:
                    received.setdefault(int(payload["block"]), now)

            sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="alvh-bench-latency")
            sub.on_message = on_message
            sub.connect("127.0.0.1", broker.port)
            sub.subscribe("alvh/alerts/#", qos=1)
            sub.loop_start()
            log = (Path(tmp) / "daemon.log").open("wb")
            daemon = subprocess.Popen(
                [sys.executable, "-m", "daemon.cli", "run", "-c", str(cfg)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                t = int(chain.latest_block().timestamp) + 12
                mined: dict[int, float] = {}
                # warm-up: a first closed bar so that `ret` is defined, and a running daemon
                for price in (3000.0, 3003.0):
                    with chain.block(timestamp=t):
                        chain.swap_to_price(pool, price)
                    t += 3600
                time.sleep(3.0)
                price = 3003.0
                for i in range(firings * 2):
                    price = 3010.0 if i % 2 == 0 else 2995.0  # across the last close each time
                    with chain.block(timestamp=t):
                        chain.swap_to_price(pool, price)
                    mined[chain.latest_block().number] = time.time()
                    t += 12
                    time.sleep(0.25)  # one block at a time, as on a live chain
                deadline = time.time() + 10
                while time.time() < deadline and not all(b in received for b in mined):
                    time.sleep(0.05)
            finally:
                daemon.terminate()
                daemon.wait(timeout=15)
                sub.loop_stop()
                sub.disconnect()
                log.close()
                chain.close()
    lat = [(received[b] - mined[b]) * 1000 for b in mined if b in received]
    missing = len(mined) - len(lat)
    if missing:
        print(f"  ({missing} of {len(mined)} blocks produced no alert within 10 s)")
    return lat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--firings", type=int, default=100)
    ap.add_argument("--transport", choices=["http", "ws", "both"], default="both")
    args = ap.parse_args()
    transports = ["http", "ws"] if args.transport == "both" else [args.transport]
    for transport in transports:
        lat = run(transport, args.firings)
        if not lat:
            print(f"{transport}: no alert received")
            continue
        print(
            f"{transport:>4} new heads: {len(lat)} alert events, block mined -> subscriber: "
            f"p50 {statistics.median(lat):.1f} ms, p90 {percentile(lat, 0.9):.1f} ms, "
            f"p99 {percentile(lat, 0.99):.1f} ms, max {max(lat):.1f} ms"
        )
    print("targets: p50 <= 100 ms, p99 <= 250 ms")


if __name__ == "__main__":
    main()
