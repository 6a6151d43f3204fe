"""Benchmark: one poll of N pools, alvh's EVM adapter vs the naive web3.py way.

On one anvil (block gas limit raised so the farm deploys in a few blocks) with Multicall3
and a farm of 900 Uniswap V3 + 100 V2 pools (``tests/many_pools.py``), for 10 / 100 /
1,000 of those pools (90% V3, 10% V2) this prints, per poll of one new block holding 10
swaps:

- alvh: ``EvmChain.head()`` + ``EvmChain.poll(head)`` (every pool's state in one
  Multicall3 ``aggregate3`` pinned to the block, the header, and one ``eth_getLogs``, all
  in one JSON-RPC batch): HTTP requests per poll and wall time per poll (median and
  90th percentile over the rounds);
- naive: ``Web3(AsyncHTTPProvider(url))`` with its default middleware, one contract call
  per value (``slot0``, ``liquidity``, two ``balanceOf`` per V3 pool, ``getReserves`` per
  V2 pool, all at the block number), plus ``get_block`` and ``get_logs``, awaited one by
  one, measured in the same run on the same pools. Its HTTP requests are counted by an
  aiohttp trace on the provider's session. For 1,000 pools the naive poll is measured on
  the first 100 pools and extrapolated linearly (the table says so);
- a CPU split of the 1,000-pool poll: decoding the aggregate3 answer and building the
  samples, without the node.

Targets (issue #5): at most 2 HTTP requests per poll at any pool count, and <= 150 ms per
poll for 1,000 pools on anvil.

Run: ``.venv/bin/python bench/bench_poll.py [ROUNDS]`` (default 15 rounds per size).
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from web3 import AsyncWeb3
from web3.providers.rpc import AsyncHTTPProvider

from adapters.evm.chain import (
    TOPIC_SWAP_V2,
    TOPIC_SWAP_V3,
    TOPIC_SYNC_V2,
    Block,
    EvmChain,
    PoolSpec,
)
from adapters.evm.rpc import RpcPool
from daemon.demo.devchain import Anvil, DevChain, V2Pair, V3Pool
from daemon.demo.devchain.artifacts import load_artifact
from tests.many_pools import FARM_GAS_LIMIT, deploy_pool_farm, kind_of, quote_of, random_swaps

GENESIS = 1_700_000_000
SIZES = (10, 100, 1000)
NAIVE_MAX = 100  # pools measured for the naive approach; larger sizes are extrapolated
SWAPS_PER_BLOCK = 10


def subset(v3: Sequence[V3Pool], v2: Sequence[V2Pair], n: int) -> list[V3Pool | V2Pair]:
    n_v2 = max(1, n // 10)
    return [*v3[: n - n_v2], *v2[:n_v2]]


def ms(values: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1000, p90 * 1000


async def alvh_polls(
    url: str, chain: DevChain, pools: Sequence[V3Pool | V2Pair], rounds: int, rng: random.Random
) -> tuple[list[float], list[int], EvmChain]:
    specs = [PoolSpec(p.address, kind_of(p), quote_of(p)) for p in pools]  # type: ignore[arg-type]
    adapter = EvmChain("bench", chain.chain_id, RpcPool([url]), specs)
    await adapter.connect()
    assert adapter.uses_multicall
    await adapter.poll(await adapter.head())
    times, requests = [], []
    for _ in range(rounds):
        with chain.block():
            random_swaps(chain, pools, rng, SWAPS_PER_BLOCK)
        before = adapter.rpc.requests
        t0 = time.perf_counter()
        items = await adapter.poll(await adapter.head())
        times.append(time.perf_counter() - t0)
        requests.append(adapter.rpc.requests - before)
        (block,) = items
        assert isinstance(block, Block)
        assert len(block.samples) == len(pools), block.degraded
    return times, requests, adapter


class CountingSession:
    """An aiohttp session that counts the HTTP requests sent through it."""

    def __init__(self) -> None:
        self.count = 0
        trace = aiohttp.TraceConfig()

        async def on_start(*_: Any) -> None:
            self.count += 1

        trace.on_request_start.append(on_start)
        self.session = aiohttp.ClientSession(trace_configs=[trace])


async def naive_polls(
    url: str, chain: DevChain, pools: Sequence[V3Pool | V2Pair], rounds: int, rng: random.Random
) -> tuple[list[float], list[int]]:
    counter = CountingSession()
    provider = AsyncHTTPProvider(url)
    await provider.cache_async_session(counter.session)
    w3 = AsyncWeb3(provider)
    v3_abi = load_artifact("UniswapV3Pool").abi._entries
    v2_abi = load_artifact("UniswapV2Pair").abi._entries
    erc20_abi = load_artifact("ERC20PresetFixedSupply").abi._entries
    contracts: list[tuple[Any, ...]] = []
    for p in pools:
        if isinstance(p, V3Pool):
            contracts.append(
                (
                    w3.eth.contract(address=p.address, abi=v3_abi),
                    w3.eth.contract(address=p.token0.address, abi=erc20_abi),
                    w3.eth.contract(address=p.token1.address, abi=erc20_abi),
                )
            )
        else:
            contracts.append((w3.eth.contract(address=p.address, abi=v2_abi),))
    addresses = [p.address for p in pools]
    times, requests = [], []
    try:
        for _ in range(rounds):
            with chain.block():
                random_swaps(chain, pools, rng, SWAPS_PER_BLOCK)
            before = counter.count
            t0 = time.perf_counter()
            block = await w3.eth.get_block("latest")
            number = block["number"]
            for pool, handles in zip(pools, contracts, strict=True):
                if isinstance(pool, V3Pool):
                    contract, token0, token1 = handles
                    await contract.functions.slot0().call(block_identifier=number)
                    await contract.functions.liquidity().call(block_identifier=number)
                    await token0.functions.balanceOf(pool.address).call(block_identifier=number)
                    await token1.functions.balanceOf(pool.address).call(block_identifier=number)
                else:
                    (contract,) = handles
                    await contract.functions.getReserves().call(block_identifier=number)
            await w3.eth.get_logs(
                {
                    "fromBlock": number,
                    "toBlock": number,
                    "address": addresses,
                    "topics": [[TOPIC_SWAP_V3, TOPIC_SWAP_V2, TOPIC_SYNC_V2]],
                }
            )
            times.append(time.perf_counter() - t0)
            requests.append(counter.count - before)
    finally:
        await provider.disconnect()
        await counter.session.close()
    return times, requests


async def cpu_split(adapter: EvmChain, url: str, rounds: int) -> tuple[float, float]:
    """Hex + aggregate3 decoding and the samples of the last block, without the node
    (median ms of each)."""
    plan = adapter._current_plan()
    number = adapter.next_block - 1 if adapter.next_block else 0
    answers = await adapter.rpc.batch(
        [
            ("eth_call", [{"to": adapter.multicall, "data": d}, hex(number)])
            for d in plan.multicall_data
        ]
    )
    decode_times, sample_times = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        results = adapter._decode_calls(answers, len(plan.calls))
        t1 = time.perf_counter()
        adapter._samples(number, "0x" + "00" * 32, 0, [], results, plan)
        t2 = time.perf_counter()
        decode_times.append(t1 - t0)
        sample_times.append(t2 - t1)
    return statistics.median(decode_times) * 1000, statistics.median(sample_times) * 1000


async def run(
    url: str, chain: DevChain, v3: Sequence[V3Pool], v2: Sequence[V2Pair], rounds: int
) -> None:
    rng = random.Random(7)
    rows = []
    split = (0.0, 0.0)
    for n in SIZES:
        pools = subset(v3, v2, n)
        times, requests, adapter = await alvh_polls(url, chain, pools, rounds, rng)
        if n == max(SIZES):
            split = await cpu_split(adapter, url, rounds)
        await adapter.close()
        measured = min(n, NAIVE_MAX)
        naive_rounds = max(3, rounds // (1 + measured // 20))
        n_times, n_requests = await naive_polls(url, chain, pools[:measured], naive_rounds, rng)
        scale = n / measured
        rows.append((n, times, requests, n_times, n_requests, scale, measured))
    print()
    print(f"per poll of one new block with {SWAPS_PER_BLOCK} swaps; {rounds} rounds per size")
    print(
        f"{'pools':>6} | {'alvh HTTP req':>13} | {'alvh ms (median / p90)':>22} | "
        f"{'naive HTTP req':>14} | {'naive ms (median)':>17} | speed-up"
    )
    print("-" * 100)
    for n, times, requests, n_times, n_requests, scale, measured in rows:
        med, p90 = ms(times)
        n_med, _ = ms(n_times)
        n_req = statistics.median(n_requests) * scale
        n_ms = n_med * scale
        note = "" if scale == 1 else f"  (naive measured on {measured} pools, x{scale:g})"
        print(
            f"{n:>6} | {max(requests):>6} (max)   | {med:>9.1f} / {p90:>8.1f}   | "
            f"{n_req:>14.0f} | {n_ms:>17.1f} | {n_ms / med:>6.0f}x{note}"
        )
    n, _, _, _, n_requests, _, measured = rows[0]
    pools = subset(v3, v2, n)[:measured]
    values = 2 + sum(4 if isinstance(p, V3Pool) else 1 for p in pools)
    print(
        f"naive: {statistics.median(n_requests) / values:.1f} HTTP requests per value read "
        "(web3's default middleware asks eth_chainId around each eth_call)"
    )
    print()
    print(
        f"1,000-pool poll CPU (no node): aggregate3 decode {split[0]:.1f} ms, "
        f"samples (prices, TVL, tick TVL) {split[1]:.1f} ms"
    )
    worst = max(max(r[2]) for r in rows)
    big = ms(rows[-1][1])[0]
    print(
        f"targets: <= 2 HTTP requests per poll -> {worst} "
        f"({'met' if worst <= 2 else 'MISSED'}); <= 150 ms per poll for 1,000 pools -> "
        f"{big:.1f} ms ({'met' if big <= 150 else 'MISSED'})"
    )


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with Anvil(timestamp=GENESIS, gas_limit=FARM_GAS_LIMIT) as anvil:
        chain = DevChain(anvil.url)
        chain.set_block_timestamp_interval(12)
        chain.install_multicall3()
        t0 = time.perf_counter()
        farm = deploy_pool_farm(chain, 900, 100, seed=1)
        print(
            f"deployed {len(farm.v3)} V3 + {len(farm.v2)} V2 pools on "
            f"{len(farm.tokens)} tokens in {time.perf_counter() - t0:.1f} s"
        )
        asyncio.run(run(anvil.url, chain, farm.v3, farm.v2, rounds))
        chain.close()


if __name__ == "__main__":
    main()
