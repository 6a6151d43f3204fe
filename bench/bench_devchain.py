"""Benchmark: how fast the dev chain replays a price path as real swaps.

The demo replays a historical price path as one ``swap_to_price`` per block at
the data's timestamps (``with chain.block(timestamp=t): chain.swap_to_price(...)``).
This prints, on a fresh anvil with the demo market:

- anvil start-up time and ``deploy_demo_market`` time;
- blocks per second of the replay loop on the V3 0.05% pool and on the V2 pair
  (one real swap per block, prices following a seeded random walk);
- three-swap blocks per second (the sandwich shape the MEV tests build);
- two baselines measured in the same run: empty ``mine()`` calls per second (the
  floor set by anvil itself), and the same V3 replay done the plain web3.py way
  (contract ``transact()`` with web3's gas estimate and fee fill, ``evm_mine``,
  ``wait_for_transaction_receipt``).

Run: ``.venv/bin/python bench/bench_devchain.py [STEPS]`` (default 300 steps).
"""

from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from web3 import HTTPProvider, Web3

from daemon.demo.devchain import Anvil, DevChain, deploy_demo_market
from daemon.demo.devchain.artifacts import load_artifact

GENESIS = 1_700_000_000
SEED = 7


def price_path(start: float, steps: int) -> list[float]:
    """A seeded log-normal walk with 0.5% per step volatility, like 5-minute ETH moves."""
    rng = random.Random(SEED)
    prices, price = [], start
    for _ in range(steps):
        price *= math.exp(rng.gauss(0.0, 0.005))
        prices.append(price)
    return prices


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:8.1f}/s  ({seconds / count * 1000:6.2f} ms each, n={count})"


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    t0 = time.perf_counter()
    with Anvil(timestamp=GENESIS) as anvil:
        started = time.perf_counter() - t0
        chain = DevChain(anvil.url)
        t0 = time.perf_counter()
        market = deploy_demo_market(chain)
        deployed = time.perf_counter() - t0
        print(f"anvil start-up                 {started * 1000:8.1f} ms")
        print(f"deploy_demo_market             {deployed * 1000:8.1f} ms")

        path = price_path(market.eth_price, steps)
        clock = chain.latest_block().timestamp

        # Baseline 1: anvil's own floor, one empty block per call.
        t0 = time.perf_counter()
        for _ in range(steps):
            clock += 12
            chain.mine(timestamp=clock)
        print(f"baseline: empty mine()         {rate(steps, time.perf_counter() - t0)}")

        for label, pool in (("V3 0.05%", market.v3_500), ("V2", market.v2)):
            chain.swap_to_price(pool, path[0])  # approvals out of the timed loop
            t0 = time.perf_counter()
            for price in path:
                clock += 12
                with chain.block(timestamp=clock):
                    chain.swap_to_price(pool, price)
            elapsed = time.perf_counter() - t0
            error = abs(chain.price(pool) / path[-1] - 1)
            print(
                f"swap_to_price+mine {label:<11} {rate(steps, elapsed)}  last rel err {error:.1e}"
            )

        # Sandwich-shaped blocks: two accounts, three swaps per block.
        pool = market.v3_500
        attacker, victim = chain.accounts[1], chain.accounts[2]
        for account in (attacker, victim):
            chain.transfer(market.usdc, account, market.usdc.to_raw(10**9))
            chain.transfer(market.weth, account, market.weth.to_raw(10**5))
        clock = chain.latest_block().timestamp  # the transfers mined blocks of their own
        usdc_is_token0 = pool.token0 == market.usdc
        size = market.usdc.to_raw(100_000)
        blocks = max(steps // 3, 1)
        t0 = time.perf_counter()
        for _ in range(blocks):
            clock += 12
            with chain.block(timestamp=clock):
                chain.swap(pool, size, zero_for_one=usdc_is_token0, sender=attacker)
                chain.swap(pool, size, zero_for_one=usdc_is_token0, sender=victim)
                chain.swap_to_price(pool, path[-1], sender=attacker)
        print(f"3-swap sandwich blocks         {rate(blocks, time.perf_counter() - t0)}")

        # Baseline 2: the same V3 replay through web3.py's contract API (web3 is a
        # development dependency, for these baselines only: the harness does not use it).
        w3 = Web3(HTTPProvider(anvil.url))
        router = w3.eth.contract(
            address=market.uniswap.swap_router,  # type: ignore[arg-type]
            abi=load_artifact_abi("SwapRouter"),
        )
        deployer = chain.deployer
        token0, token1 = pool.token0.address, pool.token1.address
        n = max(steps // 3, 1)
        t0 = time.perf_counter()
        for price in path[:n]:
            clock += 12
            target = pool.token_pair.sqrt_price_x96(price)
            current = router.w3.eth.call(
                {"to": pool.address, "data": "0x3850c7bd"}  # type: ignore[typeddict-item]
            )
            zero_for_one = target < int.from_bytes(bytes(current)[:32], "big")
            token_in, token_out = (token0, token1) if zero_for_one else (token1, token0)
            params = (token_in, token_out, pool.fee, deployer, 2**256 - 1, 2**255 - 1, 0, target)
            tx_hash = router.functions.exactInputSingle(params).transact({"from": deployer})
            w3.provider.make_request("evm_mine", [clock])  # type: ignore[arg-type]
            w3.eth.wait_for_transaction_receipt(tx_hash)
        print(f"baseline: web3.py transact     {rate(n, time.perf_counter() - t0)}")
        chain.close()


def load_artifact_abi(name: str) -> list[dict[str, object]]:
    """The raw ABI list of an artifact (for web3's contract factory)."""
    import json

    from daemon.demo.devchain.artifacts import ARTIFACT_PATHS, NODE_MODULES

    load_artifact(name)  # raises a clear error if it is missing
    return list(json.loads((NODE_MODULES / ARTIFACT_PATHS[name]).read_text())["abi"])


if __name__ == "__main__":
    main()
