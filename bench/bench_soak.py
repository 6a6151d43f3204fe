"""Soak: ``alvh run`` on anvil with 200 real pools and a block every 100 ms, for 10 minutes.

Prints the daemon's RSS a minute into the run (after warm-up allocations) and at the
end, its growth, the CPU it used (user + system, from /proc), the blocks it processed
and its block lag at the end. Target: RSS growth under 5 %.

The chain side: 170 Uniswap V3 + 30 V2 pools (tests/many_pools.py), each block holding
a few seeded random swaps; the daemon follows new heads over ws:// and publishes to a
local Mosquitto, with the pipeline, outbox and telemetry all live.

Run: .venv/bin/python bench/bench_soak.py [--minutes 10] [--pools 200]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from daemon.demo.devchain import Anvil, DevChain
from daemon.demo.localbroker import LocalBroker, free_port
from tests.many_pools import FARM_GAS_LIMIT, deploy_pool_farm, kind_of, quote_of, random_swaps

LAYERS = """
[[layers]]
name = "L1"
level = 1
when = "abs(move_sigma) >= 3 or rsi < 20"
clear_when = "abs(move_sigma) < 1"
keep_firing_for = "2m"

[[layers]]
name = "L2"
level = 2
when = "move_sigma_1h <= -3 and macd_hist < 0"
inhibit_lower = true

[[layers]]
name = "L3"
level = 3
when = "tvl_drain_1h >= 0.2 or mev_score >= 0.5"
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--pools", type=int, default=200)
    ap.add_argument("--block-ms", type=int, default=100)
    args = ap.parse_args()
    n_v2 = max(1, args.pools * 15 // 100)
    n_v3 = args.pools - n_v2
    rng = random.Random(7)
    with (
        LocalBroker(websockets=False) as broker,
        Anvil(timestamp=1_700_000_000, gas_limit=FARM_GAS_LIMIT) as node,
        tempfile.TemporaryDirectory() as tmp,
    ):
        chain = DevChain(node.url)
        farm = deploy_pool_farm(chain, n_v3=n_v3, n_v2=n_v2, seed=3)
        chain.install_multicall3()
        http_port = free_port()
        pools = "".join(
            f'[[pools]]\nchain = "soak"\naddress = "{p.address}"\nkind = "{kind_of(p)}"\n'
            f'quote = "{quote_of(p)}"\n'
            for p in farm.pools
        )
        cfg = Path(tmp) / "alvh.toml"
        cfg.write_text(
            f"""
[daemon]
state_dir = "{tmp}/state"
log_format = "json"
log_level = "warning"
checkpoint_interval = "30s"

[mqtt]
url = "{broker.url}"
telemetry_interval = "5s"

[[chains]]
name = "soak"
chain_id = {chain.chain_id}
rpc = ["{node.url}", "{node.url.replace("http://", "ws://")}"]
poll_interval = "head"

{pools}
[bars]
interval = "1m"

[http]
listen = "127.0.0.1:{http_port}"
{LAYERS}
"""
        )
        log = (Path(tmp) / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "-c", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            t = int(chain.latest_block().timestamp) + 1
            start = time.monotonic()
            end = start + args.minutes * 60
            rss_start = None
            cpu_start = 0.0
            blocks = 0
            samples: list[tuple[float, int]] = []
            next_sample = start + 30
            step = args.block_ms / 1000
            next_at = start
            while time.monotonic() < end:
                with chain.block(timestamp=t):
                    random_swaps(chain, farm.pools, rng, 4)
                t += 2  # 2 s of chain time per block: 5 bars of 1 m per 15 s of wall time
                blocks += 1
                if time.monotonic() >= next_sample:
                    samples.append((time.monotonic() - start, rss_kib(daemon.pid)))
                    next_sample += 30
                if rss_start is None and time.monotonic() - start >= 60:
                    rss_start, cpu_start = rss_kib(daemon.pid), cpu_seconds(daemon.pid)
                    t_rss = time.monotonic()
                next_at += step
                time.sleep(max(0.0, next_at - time.monotonic()))
                if daemon.poll() is not None:
                    raise SystemExit(
                        f"daemon exited: {daemon.returncode}; log {Path(tmp) / 'daemon.log'}"
                    )
            time.sleep(2.0)
            rss_end, cpu_end = rss_kib(daemon.pid), cpu_seconds(daemon.pid)
            elapsed = time.monotonic() - t_rss
            lag = metric(http_port, "alvh_block_lag")
            processed = metric(http_port, 'alvh_blocks_processed_total{chain="soak"}')
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            log.close()
            chain.close()
    assert rss_start is not None
    growth = (rss_end - rss_start) / rss_start * 100
    pct = (cpu_end - cpu_start) / elapsed * 100
    print(
        f"soak: {len(farm.pools)} pools ({n_v3} V3 + {n_v2} V2), a block every {args.block_ms} ms"
    )
    print(
        f"  {args.minutes:g} min: {blocks} blocks mined, {processed:.0f} processed, lag {lag:.0f}"
    )
    print(
        f"  RSS after 1 min {rss_start / 1024:.1f} MiB, at the end {rss_end / 1024:.1f} MiB: "
        f"growth {growth:+.2f} %"
    )
    print(
        f"  daemon CPU {cpu_end - cpu_start:.1f} s over {elapsed:.0f} s = {pct:.1f} % of one core"
    )
    series = ", ".join(f"{t / 60:.1f}m {r / 1024:.0f}" for t, r in samples)
    print(f"  RSS series (MiB): {series}")
    half = [r for t, r in samples if t >= args.minutes * 30]
    if len(half) >= 2:
        second = (max(half) - min(half)) / min(half) * 100
        print(f"  RSS spread over the second half of the run: {second:.2f} %")
    print(f"  target: RSS growth < 5 %: {'met' if growth < 5 else 'MISSED'}")


if __name__ == "__main__":
    main()
