"""A farm of real Uniswap pools on a dev chain, deployed in bulk.

Shared by the EVM adapter tests (``tests/test_evm.py``) and ``bench/bench_poll.py``.

Guarantees of :func:`deploy_pool_farm` on a fresh node started with a block gas limit of
at least :data:`FARM_GAS_LIMIT`:

- tokens with decimals cycling through 18, 6, 8, 12 and 2 (patched OpenZeppelin 4 tokens),
  each with a seeded "value" so pool prices are consistent across pools;
- ``n_v3`` Uniswap V3 pools on distinct (token pair, fee) combinations over the fee tiers
  0.01% (enabled with tick spacing 1), 0.05%, 0.3% and 1%, alternately quoted in token0
  and token1; each holds a full-range position, every third also a ±10% position;
- ``n_v2`` Uniswap V2 pairs on distinct token pairs, alternately quoted in token0/token1;
- every stage (approvals, pool creation, liquidity) goes out as one block of many
  transactions, so a thousand pools deploy in seconds, not minutes;
- everything is a real contract call through the harness: the adapter under test sees
  exactly what it would see on a real chain.

:func:`random_swaps` queues seeded swaps into the caller's open block;
:func:`swap_volumes` decodes what a set of transactions swapped from their receipts with
the contracts' own ABIs (independently of :mod:`adapters.evm.chain`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import combinations

from daemon.demo.devchain import DevChain, Token, V2Pair, V3Pool
from daemon.demo.devchain.artifacts import load_artifact
from rules.uniswap import (
    Q96,
    TokenPair,
    amounts_for_liquidity,
    amounts_from_liquidity,
    full_range_ticks,
    sqrt_ratio_at_tick,
)

#: Block gas limit the farm needs: each stage is one block of many transactions.
FARM_GAS_LIMIT = 50_000_000_000
#: Fee tiers used, with the tick spacing the factory has or gets for them.
FEE_TIERS: tuple[tuple[int, int], ...] = ((100, 1), (500, 10), (3000, 60), (10000, 200))
DECIMALS: tuple[int, ...] = (18, 6, 8, 12, 2)
TOKEN_SUPPLY = 10**15  # whole tokens: far beyond any liquidity or swap here
MAX_UINT256 = (1 << 256) - 1
NO_DEADLINE = MAX_UINT256

_GAS_CREATE_V3 = 6_000_000
_GAS_MINT_V3 = 1_200_000
_GAS_CREATE_V2 = 4_000_000
_GAS_SMALL = 300_000


@dataclass(frozen=True, slots=True)
class PoolFarm:
    """What :func:`deploy_pool_farm` deployed; ``pools`` lists V3 pools first."""

    tokens: tuple[Token, ...]
    v3: tuple[V3Pool, ...]
    v2: tuple[V2Pair, ...]
    start_block: int

    @property
    def pools(self) -> tuple[V3Pool | V2Pair, ...]:
        return (*self.v3, *self.v2)


def kind_of(pool: V3Pool | V2Pair) -> str:
    return "uniswap_v3" if isinstance(pool, V3Pool) else "uniswap_v2"


def quote_of(pool: V3Pool | V2Pair) -> str:
    return "token0" if pool.quote == pool.token0 else "token1"


def _token_count(n_v3: int, n_v2: int) -> int:
    pairs_needed = max(math.ceil(n_v3 / len(FEE_TIERS)), n_v2, 1)
    k = 3
    while k * (k - 1) // 2 < pairs_needed:
        k += 1
    return k


def deploy_pool_farm(chain: DevChain, n_v3: int = 50, n_v2: int = 10, *, seed: int = 1) -> PoolFarm:
    """Deploy ``n_v3`` V3 pools and ``n_v2`` V2 pairs with liquidity (see the module doc)."""
    rng = random.Random(seed)
    erc20 = load_artifact("ERC20PresetFixedSupply").abi
    npm_abi = load_artifact("NonfungiblePositionManager").abi
    factory_abi = load_artifact("UniswapV3Factory").abi
    v2_factory_abi = load_artifact("UniswapV2Factory").abi
    pair_abi = load_artifact("UniswapV2Pair").abi
    uni = chain.uniswap if _has_uniswap(chain) else chain.deploy_uniswap()
    me = chain.deployer

    tokens = tuple(
        chain.deploy_token(f"T{i}", DECIMALS[i % len(DECIMALS)], TOKEN_SUPPLY)
        for i in range(_token_count(n_v3, n_v2))
    )
    value = {t.address: math.exp(rng.uniform(math.log(0.05), math.log(5000.0))) for t in tokens}
    with chain.block():
        for t in tokens:
            for spender in (uni.position_manager, uni.swap_router):
                chain.send(
                    t.address, erc20.encode_call("approve", spender, MAX_UINT256), gas=_GAS_SMALL
                )
        (spacing,) = factory_abi.decode_result(
            "feeAmountTickSpacing",
            chain.call(uni.v3_factory, factory_abi.encode_call("feeAmountTickSpacing", 100)),
        )
        if spacing == 0:
            chain.send(
                uni.v3_factory, factory_abi.encode_call("enableFeeAmount", 100, 1), gas=_GAS_SMALL
            )

    pairs = list(combinations(range(len(tokens)), 2))
    rng.shuffle(pairs)
    v3_specs: list[tuple[Token, Token, int, int]] = []  # base, quote, fee, spacing
    for n in range(n_v3):
        i, j = pairs[(n // len(FEE_TIERS)) % len(pairs)]
        fee, spacing = FEE_TIERS[n % len(FEE_TIERS)]
        t0, t1 = sorted((tokens[i], tokens[j]), key=lambda t: int(t.address, 16))
        base, quote = (t1, t0) if n % 2 == 0 else (t0, t1)
        v3_specs.append((base, quote, fee, spacing))
    v2_specs: list[tuple[Token, Token]] = []
    for n in range(n_v2):
        i, j = pairs[-1 - n]
        t0, t1 = sorted((tokens[i], tokens[j]), key=lambda t: int(t.address, 16))
        v2_specs.append((t1, t0) if n % 2 == 0 else (t0, t1))

    def price(base: Token, quote: Token) -> float:
        return value[base.address] / value[quote.address]

    # Pools: created and initialised in one block.
    with chain.block():
        for base, quote, fee, _ in v3_specs:
            t0, t1 = sorted((base, quote), key=lambda t: int(t.address, 16))
            sqrt_p = TokenPair.of(
                base_is_token0=base == t0, decimals0=t0.decimals, decimals1=t1.decimals
            ).sqrt_price_x96(price(base, quote))
            chain.send(
                uni.position_manager,
                npm_abi.encode_call(
                    "createAndInitializePoolIfNecessary", t0.address, t1.address, fee, sqrt_p
                ),
                gas=_GAS_CREATE_V3,
            )
        for base, quote in v2_specs:
            chain.send(
                uni.v2_factory,
                v2_factory_abi.encode_call("createPair", base.address, quote.address),
                gas=_GAS_CREATE_V2,
            )
    v3: list[V3Pool] = []
    for base, quote, fee, spacing in v3_specs:
        t0, t1 = sorted((base, quote), key=lambda t: int(t.address, 16))
        (address,) = factory_abi.decode_result(
            "getPool",
            chain.call(
                uni.v3_factory, factory_abi.encode_call("getPool", t0.address, t1.address, fee)
            ),
        )
        v3.append(V3Pool(address, t0, t1, fee, spacing, base, quote))
    v2: list[V2Pair] = []
    for base, quote in v2_specs:
        t0, t1 = sorted((base, quote), key=lambda t: int(t.address, 16))
        (address,) = v2_factory_abi.decode_result(
            "getPair",
            chain.call(
                uni.v2_factory, v2_factory_abi.encode_call("getPair", t0.address, t1.address)
            ),
        )
        v2.append(V2Pair(address, t0, t1, base, quote))

    # Liquidity: one block of NPM mints and V2 transfer+mint triples.
    with chain.block():
        for n, pool in enumerate(v3):
            p = price(pool.base, pool.quote)
            pool_value = math.exp(rng.uniform(math.log(1e5), math.log(1e7)))
            ranges = [full_range_ticks(pool.tick_spacing)]
            if n % 3 == 0:
                ranges.append(pool.token_pair.range_ticks(p * 0.9, p * 1.1, pool.tick_spacing))
            for lower, upper in ranges:
                amount0, amount1 = _mint_amounts(pool, p, pool_value / len(ranges), lower, upper)
                params = (
                    pool.token0.address,
                    pool.token1.address,
                    pool.fee,
                    lower,
                    upper,
                    amount0,
                    amount1,
                    0,
                    0,
                    me,
                    NO_DEADLINE,
                )
                chain.send(
                    uni.position_manager, npm_abi.encode_call("mint", params), gas=_GAS_MINT_V3
                )
        for pair in v2:
            p = price(pair.base, pair.quote)
            pool_value = math.exp(rng.uniform(math.log(1e5), math.log(1e7)))
            quote_raw = pair.quote.to_raw(pool_value / 2)
            base_raw = pair.base.to_raw(pool_value / 2 / p)
            for token, raw in ((pair.base, base_raw), (pair.quote, quote_raw)):
                chain.send(
                    token.address,
                    erc20.encode_call("transfer", pair.address, raw),
                    gas=_GAS_SMALL,
                )
            chain.send(pair.address, pair_abi.encode_call("mint", me), gas=_GAS_SMALL)
    head = chain.latest_block()
    return PoolFarm(tuple(tokens), tuple(v3), tuple(v2), head.number)


def _has_uniswap(chain: DevChain) -> bool:
    try:
        _ = chain.uniswap
    except Exception:
        return False
    return True


def _mint_amounts(
    pool: V3Pool, price: float, value: float, tick_lower: int, tick_upper: int
) -> tuple[int, int]:
    """Desired amounts for a position worth about ``value`` quote units, a hair above
    what the pool charges so the position manager mints the liquidity sized here."""
    sqrt_p = pool.token_pair.sqrt_price_x96(price)
    sqrt_a, sqrt_b = sqrt_ratio_at_tick(tick_lower), sqrt_ratio_at_tick(tick_upper)
    raw_p = (sqrt_p / Q96) ** 2
    per_l0, per_l1 = amounts_from_liquidity(1.0, raw_p, sqrt_a / Q96, sqrt_b / Q96)
    quote_raw = value * 10.0**pool.quote.decimals
    value_token1_raw = quote_raw if pool.base_is_token0 else quote_raw * raw_p
    liquidity = int(value_token1_raw / (per_l0 * raw_p + per_l1))
    amount0, amount1 = amounts_for_liquidity(liquidity, sqrt_p, sqrt_a, sqrt_b, round_up=True)
    return amount0 + 1, amount1 + 1


def random_swaps(
    chain: DevChain,
    pools: Sequence[V3Pool | V2Pair],
    rng: random.Random,
    count: int,
    *,
    max_fraction: float = 0.01,
) -> list[str]:
    """Queue ``count`` seeded swaps on pools drawn from ``pools`` (repeats allowed) into
    the open :meth:`DevChain.block`; each moves up to ``max_fraction`` of the input
    token's pool balance. Returns the swap transaction hashes."""
    hashes = []
    for _ in range(count):
        pool = rng.choice(pools)
        zero_for_one = rng.random() < 0.5
        token_in = pool.token0 if zero_for_one else pool.token1
        balance = chain.balance_of(token_in, pool.address)
        amount = max(1, int(balance * rng.uniform(max_fraction / 20, max_fraction)))
        hashes.append(chain.swap(pool, amount, zero_for_one=zero_for_one))
    return hashes


@dataclass(frozen=True, slots=True)
class SwapTruth:
    """Swaps of one pool in one block, decoded from receipts with the contracts' ABIs."""

    swaps: int
    volume_quote: Fraction


def swap_volumes(
    chain: DevChain, pools: Iterable[V3Pool | V2Pair], tx_hashes: Iterable[str]
) -> dict[tuple[int, str], SwapTruth]:
    """``{(block, pool address): SwapTruth}`` for the Swap logs in the receipts."""
    by_address = {p.address.lower(): p for p in pools}
    v3_abi = load_artifact("UniswapV3Pool").abi
    v2_abi = load_artifact("UniswapV2Pair").abi
    v3_topic, v2_topic = v3_abi.event_topic("Swap"), v2_abi.event_topic("Swap")
    out: dict[tuple[int, str], SwapTruth] = {}
    for tx_hash in tx_hashes:
        receipt = chain.receipt(tx_hash)
        block = int(receipt["blockNumber"], 16)
        for log in receipt["logs"]:
            pool = by_address.get(log["address"].lower())
            if pool is None:
                continue
            topics = [bytes.fromhex(t[2:]) for t in log["topics"]]
            data = bytes.fromhex(log["data"][2:])
            if isinstance(pool, V3Pool) and topics[0] == v3_topic:
                event = v3_abi.decode_event("Swap", topics, data)
                quote_raw = event["amount0"] if pool.quote == pool.token0 else event["amount1"]
            elif isinstance(pool, V2Pair) and topics[0] == v2_topic:
                event = v2_abi.decode_event("Swap", topics, data)
                if pool.quote == pool.token0:
                    quote_raw = event["amount0In"] - event["amount0Out"]
                else:
                    quote_raw = event["amount1In"] - event["amount1Out"]
            else:
                continue
            key = (block, pool.address)
            prev = out.get(key, SwapTruth(0, Fraction(0)))
            out[key] = SwapTruth(
                prev.swaps + 1,
                prev.volume_quote + Fraction(abs(quote_raw), 10**pool.quote.decimals),
            )
    return out
