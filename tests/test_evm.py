"""The EVM adapter: ABI layouts, the Swap decoder on real mainnet logs, and 60 real pools
on anvil polled block by block.

Oracles are independent of :mod:`adapters.evm.chain`: ``eth_abi`` for the hand-rolled
Multicall3 layouts, the decoded columns of the 2024-01-05 log file for the Swap decoder,
and on anvil the contracts themselves read with their own ABIs at each block number
(prices and TVL computed exactly with fractions) and the swap receipts.
"""

from __future__ import annotations

import ast
import csv
import math
import random
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_abi.abi import decode, encode
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.errors import DataError, FatalError, TransientError
from adapters.evm.chain import (
    SEL_AGGREGATE3,
    Block,
    EvmChain,
    PoolMeta,
    PoolSpec,
    Reorg,
    decode_aggregate3,
    decode_swap_event,
    encode_aggregate3,
    tick_tvl_v3,
)
from adapters.evm.rpc import RpcPool, redact_url
from daemon.demo.devchain import MULTICALL3_ADDRESS, Anvil, DevChain, V2Pair, V3Pool
from daemon.demo.devchain.artifacts import load_artifact
from rules.expr import parse
from rules.features.engine import FeatureParams
from rules.layers.engine import LayerSpec
from rules.pipeline import Pipeline, PipelineSpec, PoolInfo
from rules.types import FEATURE_NAMES, PoolId, PoolSample
from rules.uniswap import MAX_TICK, MIN_TICK, Q96, amounts_for_liquidity, sqrt_ratio_at_tick
from tests.many_pools import (
    FARM_GAS_LIMIT,
    PoolFarm,
    deploy_pool_farm,
    kind_of,
    quote_of,
    random_swaps,
    swap_volumes,
)
from tests.plugins.chain import GENESIS_TIMESTAMP
from tests.rpc_servers import BadRpcServer, SwitchableProxy, closed_port

USDC_WETH_005 = "0x88e6A0c2dDD26FEEb64F039a2c41296FcB3f5640"
EVENTS_DIR = "uniswap_v3_pool_events_2024-01-05"
addresses = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())


# --- Multicall3 layouts, against eth_abi ---------------------------------------------------


@given(st.lists(st.tuples(addresses, st.binary(max_size=100)), max_size=12))
def test_encode_aggregate3_is_the_abi_encoding(calls: list[tuple[str, bytes]]) -> None:
    expected = SEL_AGGREGATE3 + encode(
        ["(address,bool,bytes)[]"], [[(t, True, d) for t, d in calls]]
    )
    assert encode_aggregate3(calls) == expected


@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=12))
def test_decode_aggregate3_reads_the_abi_encoding(results: list[tuple[bool, bytes]]) -> None:
    data = encode(["(bool,bytes)[]"], [results])
    assert decode_aggregate3(data, len(results)) == results
    (again,) = decode(["(bool,bytes)[]"], data)
    assert [(bool(ok), bytes(out)) for ok, out in again] == results


@given(
    st.lists(st.tuples(st.booleans(), st.binary(max_size=80)), min_size=1, max_size=6),
    st.data(),
)
def test_decode_aggregate3_never_reads_out_of_range(
    results: list[tuple[bool, bytes]], data: st.DataObject
) -> None:
    encoded = bytearray(encode(["(bool,bytes)[]"], [results]))
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DataError):
        decode_aggregate3(bytes(encoded[:cut]), len(results))
    # Corrupt one word with a huge value: an offset or a length then points out of range.
    word = data.draw(st.integers(0, len(encoded) // 32 - 1))
    encoded[32 * word : 32 * word + 32] = (2**255).to_bytes(32, "big")
    try:
        decoded = decode_aggregate3(bytes(encoded), len(results))
    except DataError:
        return
    assert len(decoded) == len(results)  # the word was a payload byte: still well formed


def test_decode_aggregate3_checks_the_count_and_the_bool() -> None:
    data = encode(["(bool,bytes)[]"], [[(True, b"\x01"), (False, b"")]])
    with pytest.raises(DataError, match="returned 2 results, expected 3"):
        decode_aggregate3(data, 3)
    bad = bytearray(data)
    # The first element's success word sits after: offset, length, two element offsets.
    start = 32 + 32 + int.from_bytes(data[64:96], "big")
    bad[start + 31] = 2
    with pytest.raises(DataError, match="not a bool"):
        decode_aggregate3(bytes(bad), 2)


# --- pool math -------------------------------------------------------------------------------


def meta(
    *,
    decimals0: int = 6,
    decimals1: int = 18,
    quote_is_token0: bool = True,
    spacing: int = 10,
    kind: str = "uniswap_v3",
) -> PoolMeta:
    return PoolMeta(
        address=USDC_WETH_005,
        kind=kind,  # type: ignore[arg-type]
        token0="0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
        token1="0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2",
        decimals0=decimals0,
        decimals1=decimals1,
        symbol0="USDC",
        symbol1="WETH",
        fee=0.0005,
        tick_spacing=spacing,
        quote_is_token0=quote_is_token0,
    )


def exact_price(m: PoolMeta, sqrt_price_x96: int) -> Fraction:
    raw = Fraction(sqrt_price_x96 * sqrt_price_x96, 1 << 192)
    token1_per_token0 = raw * Fraction(10) ** (m.decimals0 - m.decimals1)
    return 1 / token1_per_token0 if m.quote_is_token0 else token1_per_token0


def whitepaper_tick_tvl(
    m: PoolMeta, sqrt_price_x96: int, tick: int, liquidity: int, price: float
) -> float:
    """Whitepaper eqs. 6.29/6.30 in floats, with 1.0001 ** (tick / 2) from logarithms."""
    floor = (tick // m.tick_spacing) * m.tick_spacing
    lower, upper = max(MIN_TICK, floor), min(MAX_TICK, floor + m.tick_spacing)
    sa = math.exp(lower * math.log(1.0001) / 2)
    sb = math.exp(upper * math.log(1.0001) / 2)
    sp = min(max(sqrt_price_x96 / Q96, sa), sb)
    amount0 = liquidity * (sb - sp) / (sp * sb) / 10**m.decimals0
    amount1 = liquidity * (sp - sa) / 10**m.decimals1
    return amount0 + amount1 * price if m.quote_is_token0 else amount1 + amount0 * price


@settings(max_examples=300)
@given(
    tick=st.integers(MIN_TICK, MAX_TICK - 1),
    within=st.floats(0.0, 1.0),
    liquidity=st.integers(1, 2**100),
    spacing=st.sampled_from([1, 10, 60, 200]),
    quote_is_token0=st.booleans(),
)
def test_tick_tvl_uses_the_contract_integers_and_agrees_with_the_whitepaper(
    tick: int, within: float, liquidity: int, spacing: int, quote_is_token0: bool
) -> None:
    m = meta(spacing=spacing, quote_is_token0=quote_is_token0)
    lo, hi = sqrt_ratio_at_tick(tick), sqrt_ratio_at_tick(tick + 1)
    sqrt_price_x96 = lo + int((hi - lo - 1) * within)
    price = m.token_pair.price_from_sqrt_price_x96(sqrt_price_x96)
    got = tick_tvl_v3(m, sqrt_price_x96, tick, liquidity, price)
    floor = (tick // spacing) * spacing
    lower, upper = max(MIN_TICK, floor), min(MAX_TICK, floor + spacing)
    amount0, amount1 = amounts_for_liquidity(
        liquidity, sqrt_price_x96, sqrt_ratio_at_tick(lower), sqrt_ratio_at_tick(upper)
    )
    assert got == m.token_pair.value_in_quote(amount0, amount1, price)
    # The integers round each amount down by less than one raw unit; and TickMath's Q96
    # sqrt ratios are integers: near MIN_TICK a range's width is only ~1e5 units of
    # 2^-96, so the contract's amounts differ from exact 1.0001^(tick/2) by a relative
    # few units of that width (2.5e-6 at tick -886892, spacing 1).
    one_unit_each = m.token_pair.value_in_quote(1, 1, price)
    width = sqrt_ratio_at_tick(upper) - sqrt_ratio_at_tick(lower)
    assert got == pytest.approx(
        whitepaper_tick_tvl(m, sqrt_price_x96, tick, liquidity, price),
        rel=1e-9 + 4 / width,
        abs=one_unit_each,
    )


@pytest.mark.parametrize(
    ("tick", "spacing", "lower"),
    [(0, 10, 0), (9, 10, 0), (10, 10, 10), (-1, 10, -10), (-10, 10, -10), (-11, 60, -60)],
)
def test_tick_tvl_range_is_the_floor_of_the_tick(tick: int, spacing: int, lower: int) -> None:
    m = meta(spacing=spacing)
    sqrt_price_x96 = sqrt_ratio_at_tick(tick)
    liquidity = 10**18
    price = m.token_pair.price_from_sqrt_price_x96(sqrt_price_x96)
    a0, a1 = amounts_for_liquidity(
        liquidity,
        sqrt_price_x96,
        sqrt_ratio_at_tick(lower),
        sqrt_ratio_at_tick(lower + spacing),
    )
    expected = m.token_pair.value_in_quote(a0, a1, price)
    assert tick_tvl_v3(m, sqrt_price_x96, tick, liquidity, price) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"address": "0x1234", "kind": "uniswap_v3", "quote": "token0"}, "20-byte"),
        ({"address": USDC_WETH_005, "kind": "curve", "quote": "token0"}, "kind"),
        ({"address": USDC_WETH_005, "kind": "uniswap_v2", "quote": "token2"}, "quote"),
    ],
)
def test_pool_spec_validates_itself(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PoolSpec(**kwargs)


def test_pool_spec_checksums_the_address() -> None:
    assert PoolSpec(USDC_WETH_005.lower(), "uniswap_v3", "token0").address == USDC_WETH_005


# --- the Swap decoder on a real day of mainnet logs --------------------------------------------


def _events_file(shared_data: Path, suffix: str) -> Path:
    (path,) = (shared_data / EVENTS_DIR).glob(f"*{suffix}")
    return path


def raw_logs(shared_data: Path) -> list[dict[str, Any]]:
    """The raw csv rows as ``eth_getLogs`` entries (the file name holds the address)."""
    out = []
    with _events_file(shared_data, ".raw.csv").open() as f:
        for row in csv.DictReader(f):
            out.append(
                {
                    "address": USDC_WETH_005.lower(),
                    "topics": ast.literal_eval(row["topics"]),
                    "data": row["data"],
                    "blockNumber": hex(int(row["block_number"])),
                    "transactionIndex": hex(int(row["transaction_index"])),
                    "logIndex": hex(int(row["log_index"])),
                    "transactionHash": row["transaction_hash"],
                    "removed": False,
                }
            )
    return out


def offline_chain() -> EvmChain:
    chain = EvmChain(
        "ethereum",
        1,
        RpcPool(["http://127.0.0.1:1"]),
        [PoolSpec(USDC_WETH_005, "uniswap_v3", "token0")],
    )
    chain.meta[USDC_WETH_005] = meta()
    return chain


@pytest.mark.shared_data
def test_swap_decoder_reproduces_the_decoded_log_file(shared_data: Path) -> None:
    logs = raw_logs(shared_data)
    with _events_file(shared_data, ".pool.tick.csv").open() as f:
        decoded_rows = list(csv.DictReader(f))
    assert len(logs) == len(decoded_rows) == 6234
    chain = offline_chain()
    m = chain.meta[USDC_WETH_005]
    swaps = 0
    for log, row in zip(logs, decoded_rows, strict=True):
        assert (int(log["blockNumber"], 16), int(log["logIndex"], 16)) == (
            int(row["block_number"]),
            int(row["log_index"]),
        )
        event = decode_swap_event(log)
        record = chain.decode_swap(log)
        if row["tx_type"] != "SWAP":
            assert event is None
            assert record is None
            continue
        swaps += 1
        assert event is not None
        assert record is not None
        expected = (
            int(row["amount0"]),
            int(row["amount1"]),
            int(row["sqrtPriceX96"]),
            int(float(row["current_tick"])),
            int(row["total_liquidity"]),
            row["sender"],
            row["receipt"],
        )
        got = (
            event.amount0,
            event.amount1,
            event.sqrt_price_x96,
            event.tick,
            event.liquidity,
            event.sender.lower(),
            event.recipient.lower(),
        )
        assert got == expected, row["transaction_hash"]
        assert (record.amount0, record.amount1) == (event.amount0, event.amount1)
        assert (record.sender, record.recipient) == (event.sender, event.recipient)
        assert record.tx_hash == row["transaction_hash"]
        assert record.tx_index == int(row["tx_index"])
        assert record.volume_quote == float(Fraction(abs(int(row["amount0"])), 10**6))
        assert record.direction == (1 if int(row["amount1"]) < 0 else -1)
        exact = exact_price(m, int(row["sqrtPriceX96"]))
        assert record.price_after == float(exact)  # correctly rounded
        assert 1000 < record.price_after < 5000  # USDC per WETH in January 2024
    assert swaps == 6046


def v2_swap_log(
    amounts: tuple[int, int, int, int], *, topics: list[str] | None = None
) -> dict[str, Any]:
    pad = "0x" + "00" * 12
    return {
        "address": USDC_WETH_005,
        "topics": topics
        or [
            "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822",
            pad + "11" * 20,
            pad + "22" * 20,
        ],
        "data": "0x" + encode(["uint256"] * 4, list(amounts)).hex(),
        "blockNumber": 5,
        "transactionIndex": 1,
        "logIndex": 7,
        "transactionHash": bytes(range(32)),
    }


def test_v2_swap_decodes_net_amounts_and_execution_price() -> None:
    chain = offline_chain()
    chain.meta[USDC_WETH_005] = meta(kind="uniswap_v2", spacing=1)
    # 3000 USDC in, 1 WETH out: the pool received token0 and paid token1.
    event = decode_swap_event(v2_swap_log((3000 * 10**6, 0, 0, 10**18)))
    assert event is not None
    assert (event.amount0, event.amount1) == (3000 * 10**6, -(10**18))
    assert event.sqrt_price_x96 is None
    assert event.sender == "0x" + "11" * 20
    assert event.block == 5
    assert event.tx_hash == "0x" + bytes(range(32)).hex()
    record = chain.decode_swap(v2_swap_log((3000 * 10**6, 0, 0, 10**18)))
    assert record is not None
    assert record.direction == 1
    assert record.volume_quote == 3000.0
    assert record.price_after == 3000.0


@pytest.mark.parametrize(
    ("log", "error"),
    [
        (v2_swap_log((1, 0, 0, 1), topics=["0x" + "ab" * 32]), None),  # another event
        ({**v2_swap_log((1, 0, 0, 1)), "removed": True}, None),
        ({**v2_swap_log((1, 0, 0, 1)), "data": "0x" + "00" * 96}, "four words"),
        (
            v2_swap_log(
                (1, 0, 0, 1),
                topics=[
                    "0xd78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822",
                    "0x" + "ff" * 32,  # not a padded address
                    "0x" + "00" * 32,
                ],
            ),
            "padded",
        ),
    ],
)
def test_swap_decoder_is_strict(log: dict[str, Any], error: str | None) -> None:
    if error is None:
        assert decode_swap_event(log) is None
    else:
        with pytest.raises(ValueError, match=error):
            decode_swap_event(log)


# --- 60 real pools on anvil --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FarmChain:
    anvil: Anvil
    chain: DevChain
    farm: PoolFarm


@pytest.fixture(scope="module")
def farm_module(anvil_bin: Path) -> Iterator[FarmChain]:
    """50 V3 + 10 V2 pools with liquidity on one anvil, shared by the module."""
    with Anvil(binary=anvil_bin, timestamp=GENESIS_TIMESTAMP, gas_limit=FARM_GAS_LIMIT) as node:
        chain = DevChain(node.url)
        chain.set_block_timestamp_interval(12)
        chain.install_multicall3()
        farm = deploy_pool_farm(chain, 50, 10, seed=5)
        try:
            yield FarmChain(node, chain, farm)
        finally:
            chain.close()


@pytest.fixture
def farm(farm_module: FarmChain) -> Iterator[FarmChain]:
    """The module's farm, reverted to its freshly deployed state after the test."""
    snapshot = farm_module.chain.snapshot()
    yield farm_module
    farm_module.chain.revert(snapshot)
    farm_module.chain.set_block_timestamp_interval(12)


def specs(pools: Sequence[V3Pool | V2Pair]) -> list[PoolSpec]:
    return [PoolSpec(p.address, kind_of(p), quote_of(p)) for p in pools]  # type: ignore[arg-type]


@pytest.fixture
async def adapter(farm: FarmChain) -> AsyncIterator[EvmChain]:
    chain = EvmChain(
        "dev", farm.chain.chain_id, RpcPool([farm.anvil.url], name="dev"), specs(farm.farm.pools)
    )
    yield chain
    await chain.close()


class Truth:
    """What the contracts say about a pool at a block, read with their own ABIs."""

    def __init__(self, chain: DevChain) -> None:
        self.chain = chain
        self.v3 = load_artifact("UniswapV3Pool").abi
        self.v2 = load_artifact("UniswapV2Pair").abi
        self.erc20 = load_artifact("ERC20PresetFixedSupply").abi

    def _call(self, address: str, abi: Any, name: str, block: int, *args: Any) -> Any:
        return abi.decode_result(
            name, self.chain.call(address, abi.encode_call(name, *args), block=block)
        )

    def check(self, pool: V3Pool | V2Pair, sample: PoolSample, block: int) -> None:
        d0, d1 = pool.token0.decimals, pool.token1.decimals
        if isinstance(pool, V3Pool):
            slot0 = self._call(pool.address, self.v3, "slot0", block)
            (liquidity,) = self._call(pool.address, self.v3, "liquidity", block)
            raw = Fraction(slot0[0] ** 2, 1 << 192)
            (b0,) = self._call(pool.token0.address, self.erc20, "balanceOf", block, pool.address)
            (b1,) = self._call(pool.token1.address, self.erc20, "balanceOf", block, pool.address)
        else:
            r0, r1, _ = self._call(pool.address, self.v2, "getReserves", block)
            raw, b0, b1 = Fraction(r1, r0), r0, r1
        token1_per_token0 = raw * Fraction(10) ** (d0 - d1)
        quote_is_token0 = pool.quote == pool.token0
        price = 1 / token1_per_token0 if quote_is_token0 else token1_per_token0
        h0, h1 = Fraction(b0, 10**d0), Fraction(b1, 10**d1)
        tvl = h0 + h1 * price if quote_is_token0 else h1 + h0 * price
        # rules.uniswap rounds the exact rational price once: the same float.
        assert sample.price == float(price), pool.name
        assert sample.tvl == pytest.approx(float(tvl), rel=1e-13), pool.name
        if isinstance(pool, V3Pool):
            m = PoolMeta(
                address=pool.address,
                kind="uniswap_v3",
                token0=pool.token0.address,
                token1=pool.token1.address,
                decimals0=d0,
                decimals1=d1,
                symbol0=pool.token0.symbol,
                symbol1=pool.token1.symbol,
                fee=pool.fee / 1e6,
                tick_spacing=pool.tick_spacing,
                quote_is_token0=quote_is_token0,
            )
            expected = whitepaper_tick_tvl(m, slot0[0], slot0[1], liquidity, float(price))
            # The contracts' integers round each amount down by less than one raw unit.
            one_unit_each = m.token_pair.value_in_quote(1, 1, float(price))
            assert sample.tick_tvl == pytest.approx(expected, rel=1e-9, abs=one_unit_each)
            assert 0 < sample.tick_tvl < sample.tvl
        else:
            assert math.isnan(sample.tick_tvl)


def check_blocks(
    fc: FarmChain, blocks: Sequence[Block], tx_hashes: Sequence[str]
) -> dict[tuple[int, str], Any]:
    """Every sample against the contracts, every volume against the receipts."""
    truth = Truth(fc.chain)
    by_address = {p.address: p for p in fc.farm.pools}
    volumes = swap_volumes(fc.chain, fc.farm.pools, tx_hashes)
    seen_swaps = 0
    for block in blocks:
        assert block.degraded == {}
        assert len(block.samples) == len(fc.farm.pools)
        header = fc.chain.get_block(block.number)
        assert (block.hash, block.timestamp) == (header.hash, header.timestamp)
        for sample in block.samples:
            pool = by_address[sample.pool.address]
            assert (sample.block, sample.block_hash, sample.time) == (
                block.number,
                block.hash,
                block.timestamp,
            )
            truth.check(pool, sample, block.number)
            expected = volumes.get((block.number, pool.address))
            if expected is None:
                assert (sample.swaps, sample.volume) == (0, 0.0)
            else:
                assert sample.swaps == expected.swaps
                assert sample.volume == pytest.approx(float(expected.volume_quote), rel=1e-13)
                seen_swaps += expected.swaps
                # The last swap's post-swap price is the block's closing price (V2: via Sync).
                last = [r for r in block.swaps if r.pool == sample.pool][-1]
                assert last.price_after == pytest.approx(sample.price, rel=1e-12)
        assert len(block.swaps) == sum(s.swaps for s in block.samples)
    assert seen_swaps == sum(v.swaps for v in volumes.values())
    return volumes


async def poll_now(adapter: EvmChain) -> tuple[list[Block | Reorg], int]:
    """``head()`` + ``poll(head)`` as the daemon runs them; returns the HTTP requests used."""
    before = adapter.rpc.requests
    head = await adapter.head()
    items = await adapter.poll(head)
    return items, adapter.rpc.requests - before


def blocks_of(items: Sequence[Block | Reorg]) -> list[Block]:
    out = [b for b in items if isinstance(b, Block)]
    assert len(out) == len(items)
    return out


@pytest.mark.integration
async def test_sixty_pools_match_the_contracts_block_by_block_in_two_requests(
    farm: FarmChain, adapter: EvmChain
) -> None:
    await adapter.connect()
    assert adapter.uses_multicall
    assert len(adapter.meta) == 60
    assert adapter.degraded == {}
    items, _ = await poll_now(adapter)  # starts at the head: the freshly deployed farm
    check_blocks(farm, blocks_of(items), [])
    rng = random.Random(11)
    for _ in range(4):
        with farm.chain.block():
            # Both kinds, several swaps on some pools in one block.
            hashes = random_swaps(farm.chain, farm.farm.v3, rng, 12)
            hashes += random_swaps(farm.chain, farm.farm.v2, rng, 6)
        items, requests = await poll_now(adapter)
        assert requests == 2
        blocks = blocks_of(items)
        assert len(blocks) == 1
        check_blocks(farm, blocks, hashes)
    # Three blocks at once (a short gap): still one batch, in order.
    hashes = []
    for _ in range(3):
        with farm.chain.block():
            hashes += random_swaps(farm.chain, farm.farm.pools, rng, 8)
    items, requests = await poll_now(adapter)
    assert requests == 2
    blocks = blocks_of(items)
    assert [b.number for b in blocks] == list(range(blocks[0].number, blocks[0].number + 3))
    volumes = check_blocks(farm, blocks, hashes)
    assert sum(v.swaps for v in volumes.values()) == 24
    # Nothing new: one request, nothing returned.
    items, requests = await poll_now(adapter)
    assert (items, requests) == ([], 1)


@pytest.mark.integration
async def test_without_multicall3_a_plain_batch_gives_the_same_samples(
    farm: FarmChain, adapter: EvmChain
) -> None:
    farm.chain.rpc("anvil_setCode", MULTICALL3_ADDRESS, "0x")
    await adapter.connect()
    assert not adapter.uses_multicall
    assert len(adapter.meta) == 60
    await poll_now(adapter)
    rng = random.Random(12)
    for _ in range(2):
        with farm.chain.block():
            hashes = random_swaps(farm.chain, farm.farm.pools, rng, 10)
        items, requests = await poll_now(adapter)
        assert requests == 2
        check_blocks(farm, blocks_of(items), hashes)


@pytest.mark.integration
async def test_reads_split_over_several_aggregate3_calls_give_the_same_samples(
    farm: FarmChain, adapter: EvmChain
) -> None:
    split = EvmChain(
        "dev",
        farm.chain.chain_id,
        RpcPool([farm.anvil.url]),
        specs(farm.farm.pools),
        calls_per_multicall=7,  # 210 reads: 30 aggregate3 calls, pools cut across them
    )
    try:
        await adapter.connect()
        await split.connect()
        assert len(split._current_plan().multicall_data) == 30
        with farm.chain.block():
            hashes = random_swaps(farm.chain, farm.farm.pools, random.Random(16), 10)
        head = await adapter.head()
        assert await split.head() == head
        (whole_block,) = blocks_of(await adapter.poll(head))
        before = split.rpc.requests
        (split_block,) = blocks_of(await split.poll(head))
        assert split.rpc.requests - before == 1
        assert split_block == whole_block
        check_blocks(farm, [split_block], hashes)
    finally:
        await split.close()


@pytest.mark.integration
async def test_confirmations_hold_blocks_back(farm: FarmChain) -> None:
    adapter = EvmChain(
        "dev",
        farm.chain.chain_id,
        RpcPool([farm.anvil.url]),
        specs(farm.farm.pools[:3]),
        confirmations=3,
    )
    try:
        await adapter.connect()
        head = farm.chain.latest_block().number
        items, _ = await poll_now(adapter)
        assert [b.number for b in blocks_of(items)] == [head - 3]
        farm.chain.mine()
        farm.chain.mine()
        items, _ = await poll_now(adapter)
        assert [b.number for b in blocks_of(items)] == [head - 2, head - 1]
        assert adapter.next_block == head
    finally:
        await adapter.close()


@pytest.mark.integration
async def test_same_height_reorg_is_found_without_a_new_block(
    farm: FarmChain, adapter: EvmChain
) -> None:
    await adapter.connect()
    await poll_now(adapter)
    rng = random.Random(13)
    old: list[Block] = []
    for _ in range(3):
        with farm.chain.block():
            random_swaps(farm.chain, farm.farm.v3[:5], rng, 3)
        items, _ = await poll_now(adapter)
        old += blocks_of(items)
    pool = farm.farm.v3[7]
    request = farm.chain.swap_request(pool, pool.token0.to_raw(1), zero_for_one=True)
    new = farm.chain.reorg(2, [(request, 0)])
    assert [b.number for b in new] == [b.number for b in old[1:]]
    items, requests = await poll_now(adapter)
    assert items == [Reorg(ancestor=old[0].number, depth=2)]
    assert requests == 2  # the head, then the headers walking back
    assert adapter.next_block == old[1].number
    items, _ = await poll_now(adapter)
    replayed = blocks_of(items)
    assert [(b.number, b.hash) for b in replayed] == [(b.number, b.hash) for b in new]
    assert replayed[0].parent_hash == old[0].hash
    [swap] = replayed[0].swaps
    assert swap.pool.address == pool.address
    assert replayed[1].swaps == ()
    items, requests = await poll_now(adapter)
    assert (items, requests) == ([], 1)


@pytest.mark.integration
async def test_reorg_under_new_blocks_is_found_from_the_parent_hash(
    farm: FarmChain, adapter: EvmChain
) -> None:
    await adapter.connect()
    await poll_now(adapter)
    farm.chain.mine()
    items, _ = await poll_now(adapter)
    (processed,) = blocks_of(items)
    farm.chain.reorg(1)
    farm.chain.mine()
    farm.chain.mine()
    items, _ = await poll_now(adapter)
    assert items == [Reorg(ancestor=processed.number - 1, depth=1)]
    items, _ = await poll_now(adapter)
    numbers = [b.number for b in blocks_of(items)]
    assert numbers == [processed.number, processed.number + 1, processed.number + 2]


@pytest.mark.integration
async def test_a_restored_cursor_continues_and_still_sees_reorgs(
    farm: FarmChain, adapter: EvmChain
) -> None:
    await adapter.connect()
    await poll_now(adapter)
    for _ in range(3):
        farm.chain.mine()
        await poll_now(adapter)
    assert adapter.next_block is not None
    saved_next, saved = adapter.next_block, dict(adapter.hashes)
    # A restart: a new adapter continues from the checkpoint, during which a reorg hit.
    farm.chain.reorg(2)
    farm.chain.mine()
    again = EvmChain(
        "dev", farm.chain.chain_id, RpcPool([farm.anvil.url]), specs(farm.farm.pools[:2])
    )
    try:
        await again.connect()
        again.restore(saved_next, dict(reversed(saved.items())))  # any order
        assert list(again.hashes) == sorted(saved)
        items, _ = await poll_now(again)
        assert items == [Reorg(ancestor=saved_next - 3, depth=2)]
        items, _ = await poll_now(again)
        assert [b.number for b in blocks_of(items)] == [saved_next - 2, saved_next - 1, saved_next]
    finally:
        await again.close()
    with pytest.raises(ValueError, match="next_block"):
        again.restore(-1, {})


@pytest.mark.integration
async def test_a_reorg_deeper_than_the_kept_hashes_is_fatal(farm: FarmChain) -> None:
    adapter = EvmChain(
        "dev",
        farm.chain.chain_id,
        RpcPool([farm.anvil.url]),
        specs(farm.farm.v2[:1]),
        keep_hashes=2,
    )
    try:
        await adapter.connect()
        await poll_now(adapter)
        for _ in range(3):
            farm.chain.mine()
            await poll_now(adapter)
        farm.chain.reorg(3)
        with pytest.raises(FatalError, match="no longer contains any of the 2 recent blocks"):
            await poll_now(adapter)
    finally:
        await adapter.close()


@pytest.mark.integration
async def test_bad_pools_are_reported_once_and_skipped(farm: FarmChain) -> None:
    chain = farm.chain
    base = chain.deploy_token("NEWB", 18, 10**9)
    quote = chain.deploy_token("NEWQ", 6, 10**9)
    empty_v3 = chain.create_v3_pool(base, quote, 3000, 1.5)  # initialised, no liquidity
    empty_v2 = chain.create_v2_pair(base, quote)  # no reserves
    reverting = farm.farm.v3[10]
    eoa = chain.accounts[7]
    token = farm.farm.tokens[3].address
    healthy = farm.farm.pools[:5]
    bad_specs = [
        PoolSpec(eoa, "uniswap_v3", "token0"),
        PoolSpec(token, "uniswap_v2", "token0"),
        PoolSpec(empty_v3.address, "uniswap_v3", "token1"),
        PoolSpec(empty_v2.address, "uniswap_v2", "token0"),
        PoolSpec(reverting.address, "uniswap_v3", "token0"),
    ]
    reports: list[tuple[PoolId, str]] = []
    adapter = EvmChain(
        "dev",
        chain.chain_id,
        RpcPool([farm.anvil.url]),
        [*specs(healthy), *bad_specs],
        on_degraded=lambda pool, reason: reports.append((pool, reason)),
    )
    try:
        await adapter.connect()
        # Not a contract, and a contract that is no pool: no static data, reported now.
        assert {p.address: r for p, r in reports} == {
            eoa: "not a uniswap_v3 pool: empty return data (not a contract?)",
            token: "not a uniswap_v2 pool: call reverted",
        }
        assert set(adapter.meta) == {p.address for p in healthy} | {
            empty_v3.address,
            empty_v2.address,
            reverting.address,
        }
        # A pool that starts reverting after start-up (its code is replaced).
        chain.rpc("anvil_setCode", reverting.address, "0x60006000fd")
        rng = random.Random(14)
        for _ in range(4):
            with chain.block():
                random_swaps(chain, healthy, rng, 3)
            items, requests = await poll_now(adapter)
            assert requests == 2
            for block in blocks_of(items):
                assert {s.pool.address for s in block.samples} == {p.address for p in healthy}
                assert {p.address: r for p, r in block.degraded.items()} == {
                    empty_v3.address: "no active liquidity",
                    empty_v2.address: "no liquidity (a reserve is 0)",
                    reverting.address: "call reverted",
                }
        assert sorted(r for _, r in reports) == sorted(
            [
                "not a uniswap_v3 pool: empty return data (not a contract?)",
                "not a uniswap_v2 pool: call reverted",
                "no active liquidity",
                "no liquidity (a reserve is 0)",
                "call reverted",
            ]
        )  # each bad pool reported exactly once over four polls
        assert set(adapter.degraded) == {
            eoa,
            token,
            empty_v3.address,
            empty_v2.address,
            reverting.address,
        }
        # Liquidity arrives: the pool is sampled again and leaves the degraded set.
        chain.add_liquidity_v3(empty_v3, value=1e5)
        items, _ = await poll_now(adapter)
        block = blocks_of(items)[-1]
        assert empty_v3.address in {s.pool.address for s in block.samples}
        assert empty_v3.address not in adapter.degraded
    finally:
        await adapter.close()


@pytest.mark.integration
async def test_wrong_chain_id_is_fatal_at_connect(farm: FarmChain) -> None:
    adapter = EvmChain("dev", 1, RpcPool([farm.anvil.url]), specs(farm.farm.v2[:1]))
    try:
        with pytest.raises(
            FatalError, match="serves chain id 31337, but the config says chain_id = 1"
        ):
            await adapter.connect()
    finally:
        await adapter.close()


@pytest.mark.integration
async def test_new_heads_subscription_wakes_the_waiter(farm: FarmChain) -> None:
    errors: list[tuple[str, str]] = []
    ws = f"ws://127.0.0.1:{farm.anvil.port}"
    adapter = EvmChain(
        "dev",
        farm.chain.chain_id,
        RpcPool([farm.anvil.url, ws], on_error=lambda e, k: errors.append((e, k))),
        specs(farm.farm.v2[:1]),
    )
    try:
        await adapter.connect()
        assert await adapter.wait_new_head(0.05) is None  # subscribes; nothing new yet
        assert adapter.subscribed
        mined = farm.chain.mine()
        assert await adapter.wait_new_head(30) == mined.number
        farm.chain.reorg(1)  # same height, new hash: wakes the waiter too
        assert await adapter.wait_new_head(30) == mined.number
        assert errors == []
    finally:
        await adapter.close()
    assert not adapter.subscribed


@pytest.mark.integration
async def test_a_dead_ws_endpoint_falls_back_to_sleeping_the_interval(farm: FarmChain) -> None:
    errors: list[tuple[str, str]] = []
    ws = f"ws://127.0.0.1:{closed_port()}"
    adapter = EvmChain(
        "dev",
        farm.chain.chain_id,
        RpcPool([farm.anvil.url, ws], on_error=lambda e, k: errors.append((e, k))),
        specs(farm.farm.v2[:1]),
    )
    try:
        await adapter.connect()
        farm.chain.mine()
        assert await adapter.wait_new_head(0.2) is None
        assert not adapter.subscribed
        assert errors
        assert errors[0][0] == redact_url(ws)
        assert errors[0][1].startswith("ws_")
        items, _ = await poll_now(adapter)  # polling still works
        assert len(blocks_of(items)) == 1
    finally:
        await adapter.close()


def pipeline_for(pools: Sequence[V3Pool | V2Pair], chain_id: int) -> Pipeline:
    spec = PipelineSpec(
        features=FeatureParams(bar_interval=300),
        layers=(LayerSpec("L1", 1, parse("price < 0", FEATURE_NAMES, boolean=True)),),
    )
    infos = [PoolInfo(PoolId("dev", p.address), chain_id, p.name, fee=0.003) for p in pools]
    return Pipeline(spec, infos)


@pytest.mark.integration
async def test_gap_backfill_counts_every_block_and_swap_exactly_once(farm: FarmChain) -> None:
    """The RPC goes dark for 100 blocks with swaps; after it returns, the adapter backfills
    in bounded batches: every block once, in order, and the pipeline's 24h volume equals
    the receipts' total."""
    fc = farm
    with SwitchableProxy(fc.anvil.url) as proxy:
        rpc = RpcPool([proxy.url], name="dev", backoff_base=0.01, backoff_max=0.02, max_rounds=1)
        adapter = EvmChain("dev", fc.chain.chain_id, rpc, specs(fc.farm.pools), backfill_batch=16)
        pipeline = pipeline_for(fc.farm.pools, fc.chain.chain_id)
        processed: list[Block] = []

        def feed(items: Sequence[Block | Reorg]) -> None:
            for block in blocks_of(items):
                processed.append(block)
                pipeline.step_samples(block.samples)

        try:
            await adapter.connect()
            feed((await poll_now(adapter))[0])
            start = processed[-1].number
            proxy.turn_off()
            rng = random.Random(15)
            hashes: list[str] = []
            for k in range(100):
                with fc.chain.block():
                    hashes += random_swaps(fc.chain, fc.farm.pools, rng, 1 + k % 3)
                if k % 25 == 0:
                    with pytest.raises(TransientError):
                        await poll_now(adapter)
            proxy.turn_on()
            polls = 0
            while True:
                items, requests = await poll_now(adapter)
                assert requests == 2
                assert len(items) <= 16
                feed(items)
                polls += 1
                if not adapter.behind:
                    break
            assert polls == 7  # 100 blocks in batches of at most 16
            assert await adapter.poll(await adapter.head()) == []
        finally:
            await adapter.close()
    numbers = [b.number for b in processed]
    assert numbers == list(range(start, start + 101))
    truth = swap_volumes(fc.chain, fc.farm.pools, hashes)
    assert sum(len(b.swaps) for b in processed) == sum(t.swaps for t in truth.values()) == 199
    total: dict[str, Fraction] = {}
    for (_, address), t in truth.items():
        total[address] = total.get(address, Fraction(0)) + t.volume_quote
    counted: dict[str, float] = {}
    for block in processed:
        for s in block.samples:
            counted[s.pool.address] = counted.get(s.pool.address, 0.0) + s.volume
            t = truth.get((block.number, s.pool.address))
            assert s.swaps == (t.swaps if t else 0)
    for address, expected in total.items():
        assert counted[address] == pytest.approx(float(expected), rel=1e-12)
    # The pipeline's rolling 24h volume saw each swap exactly once.
    volume_24h = pipeline_volume(pipeline, processed[-1])
    for address, expected in total.items():
        assert volume_24h[address] == pytest.approx(float(expected), rel=1e-9)


@pytest.mark.integration
async def test_a_capped_log_range_is_narrowed_and_no_block_is_skipped(farm: FarmChain) -> None:
    """A provider that refuses ``eth_getLogs`` over more than 4 blocks (as hosted RPCs
    cap ranges): a 40-block backlog is fetched in halved requests (16 -> 8 -> 4) once
    they are accepted, every block once and in order, every swap counted once; the cap
    is widened again after good fetches (and narrowed again when that is refused)."""
    fc = farm
    with BadRpcServer("log_range", upstream=fc.anvil.url, max_log_range=4) as server:
        rpc = RpcPool([server.url], name="dev", backoff_base=0.01, backoff_max=0.02, max_rounds=1)
        adapter = EvmChain("dev", fc.chain.chain_id, rpc, specs(fc.farm.pools), backfill_batch=16)
        adapter.log_range_relax_after = 3
        processed: list[Block] = []
        errors: list[str] = []
        try:
            await adapter.connect()
            processed += blocks_of((await poll_now(adapter))[0])
            start = processed[-1].number
            rng = random.Random(16)
            hashes: list[str] = []
            for k in range(40):
                with fc.chain.block():
                    hashes += random_swaps(fc.chain, fc.farm.pools, rng, 1 + k % 2)
            for _ in range(60):
                try:
                    items, _ = await poll_now(adapter)
                except TransientError as exc:
                    errors.append(str(exc))
                    continue
                batch = blocks_of(items)
                assert 1 <= len(batch) <= 4
                processed += batch
                if not adapter.behind:
                    break
            assert not adapter.behind
        finally:
            await adapter.close()
    assert [b.number for b in processed] == list(range(start, start + 41))
    assert "retrying with at most 8 blocks per request" in errors[0]
    assert "retrying with at most 4 blocks per request" in errors[1]
    assert "query exceeds max block range 4" in errors[0]
    refused = server.refused_log_ranges
    assert [hi - lo + 1 for lo, hi in refused[:2]] == [16, 8]
    assert all(hi - lo + 1 > 4 for lo, hi in refused)
    assert len(refused) == len(errors) >= 3  # relaxed to 8 after 3 good fetches, refused
    assert adapter.log_range_cap in (4, 8)
    truth = swap_volumes(fc.chain, fc.farm.pools, hashes)
    assert sum(len(b.swaps) for b in processed) == sum(t.swaps for t in truth.values()) == 60
    for block in processed:
        for sample in block.samples:
            t = truth.get((block.number, sample.pool.address))
            assert sample.swaps == (t.swaps if t else 0)


def pipeline_volume(pipeline: Pipeline, block: Block) -> dict[str, float]:
    """``volume_24h`` per pool after one more (empty) step 1 s after ``block``."""
    rows = np.array([pipeline.row_of[s.pool] for s in block.samples], dtype=np.int64)
    n = rows.size
    result = pipeline.step(
        block.timestamp + 1,
        rows,
        np.array([s.price for s in block.samples]),
        np.array([s.tvl for s in block.samples]),
        np.array([s.tick_tvl for s in block.samples]),
        np.zeros(n),
        np.zeros(n, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
    )
    values = result.snapshot.values["volume_24h"]
    return {
        pipeline.pools[int(row)].pool.address: float(values[i])
        for i, row in enumerate(result.snapshot.rows.tolist())
    }
