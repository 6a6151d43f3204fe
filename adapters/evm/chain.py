"""EVM chain adapter: Uniswap V3 / V2 pools, one round trip per block, confirmations, reorgs.

Guarantees:
- static pool data (tokens, decimals, symbols, fee, tick spacing) is read once, at
  :meth:`EvmChain.connect`; a pool whose static data cannot be read is retried every
  ``META_RETRY_POLLS`` polls;
- a poll that finds new blocks costs two HTTP requests whatever the pool count: the head
  (``eth_getBlockByNumber("latest")``, a poll of the head number that also yields its
  hash), then one JSON-RPC batch holding, for each new block, its header and every
  pool read as Multicall3 ``aggregate3`` call(s) pinned to that block number (plain
  ``eth_call`` entries where Multicall3 is absent), plus one ``eth_getLogs`` for the
  Swap (and V2 Sync) logs of every pool over the whole block range; a poll without new
  blocks costs one request (two when the head's hash changed at the same height: see
  reorgs); only a reorg walk-back and the periodic retry of missing static data add
  requests;
- the ``aggregate3`` calldata is built once per pool set (it does not change between
  blocks) and its answer is decoded by hand for the known fixed layout; more than
  ``calls_per_multicall`` reads are split over several ``aggregate3`` calls of the same
  batch, so one call stays well under a node's ``eth_call`` gas cap (geth: 50M);
- blocks are processed at ``confirmations`` depth, in order, none skipped: after a gap
  the missing range is fetched in requests of at most ``backfill_batch`` blocks (fewer
  when the pool count would make a request huge: ``max_calls_per_request``), and
  :attr:`EvmChain.behind` tells the caller to poll again at once; a refused
  ``eth_getLogs`` range (providers cap the range or the result count) halves the blocks
  per request until it is accepted (down to one block), and is relaxed again later;
- a processed block whose hash changed is reported as :class:`Reorg` with the common
  ancestor, before any block of the new branch; this is noticed either from the parent
  hash of the next block or, without a new block, from the head's hash changing at the
  same height (anvil's ``anvil_reorg`` and real same-height reorgs);
- a pool that reverts, is not a contract, is not initialised or has no active
  liquidity is reported once through ``on_degraded`` (again only if the reason
  changes, or after it recovered), listed in :attr:`Block.degraded` and skipped, never
  failing the chain;
- prices are quote per base in human units, following each pool's ``quote``; TVL,
  tick TVL and volume are in quote units; every price and amount conversion is
  :mod:`rules.uniswap`'s (human prices correctly rounded from the raw integers); V3
  tick TVL uses the contracts' integer amounts (``LiquidityAmounts.getAmountsForLiquidity``)
  for the current initialisable tick range; a V2 swap's ``price_after`` comes from the
  ``Sync`` event the pair emits just before it;
- new heads: :meth:`EvmChain.wait_new_head` wakes on ``eth_subscribe newHeads`` when a
  ws:// endpoint is configured and otherwise just sleeps the timeout;
- only :class:`TransientError` and :class:`FatalError` leave :meth:`connect` and
  :meth:`poll`.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from eth_abi.abi import decode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from adapters.errors import DataError, FatalError, TransientError
from adapters.evm.rpc import RpcCallError, RpcPool
from adapters.evm.ws import NewHeads
from rules.features.mev import classify_swaps
from rules.types import PoolId, PoolSample, SwapRecord
from rules.uniswap import TokenPair, amounts_for_liquidity, sqrt_ratio_at_tick, tick_range

MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
#: While some pool's static data is missing, it is read again every this many polls.
META_RETRY_POLLS = 100
#: Good fetches under a narrowed ``eth_getLogs`` range before it is doubled again.
LOG_RANGE_RELAX_AFTER = 100


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


SEL_AGGREGATE3 = _selector("aggregate3((address,bool,bytes)[])")
SEL_SLOT0 = _selector("slot0()")
SEL_LIQUIDITY = _selector("liquidity()")
SEL_BALANCE_OF = _selector("balanceOf(address)")
SEL_GET_RESERVES = _selector("getReserves()")
SEL_TOKEN0 = _selector("token0()")
SEL_TOKEN1 = _selector("token1()")
SEL_FEE = _selector("fee()")
SEL_TICK_SPACING = _selector("tickSpacing()")
SEL_DECIMALS = _selector("decimals()")
SEL_SYMBOL = _selector("symbol()")


def _topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


TOPIC_SWAP_V3 = _topic("Swap(address,address,int256,int256,uint160,uint128,int24)")
TOPIC_SWAP_V2 = _topic("Swap(address,uint256,uint256,uint256,uint256,address)")
TOPIC_SYNC_V2 = _topic("Sync(uint112,uint112)")
_SYNC_V2_BYTES = bytes.fromhex(TOPIC_SYNC_V2[2:])

PoolKind = Literal["uniswap_v3", "uniswap_v2"]
_KINDS = ("uniswap_v3", "uniswap_v2")

_WORD = 32
_TRUE_WORD = (1).to_bytes(32, "big")
_BYTES_AT_0X60 = (0x60).to_bytes(32, "big")


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """What the adapter needs to know about a configured pool."""

    address: str
    kind: PoolKind
    quote: Literal["token0", "token1"]

    def __post_init__(self) -> None:
        if not (self.address.startswith("0x") and len(self.address) == 42):
            raise ValueError(f"PoolSpec.address must be a 20-byte 0x address: {self.address!r}")
        object.__setattr__(self, "address", str(to_checksum_address(self.address)))
        if self.kind not in _KINDS:
            raise ValueError(f"PoolSpec.kind must be one of {_KINDS}, got {self.kind!r}")
        if self.quote not in ("token0", "token1"):
            raise ValueError(f"PoolSpec.quote must be token0 or token1, got {self.quote!r}")


@dataclass(frozen=True, slots=True)
class PoolMeta:
    """Static data of a pool, read once."""

    address: str
    kind: PoolKind
    token0: str
    token1: str
    decimals0: int
    decimals1: int
    symbol0: str
    symbol1: str
    fee: float  # fraction, e.g. 0.0005
    tick_spacing: int
    quote_is_token0: bool
    #: The raw <-> human conversions of this pool's two tokens (derived).
    token_pair: TokenPair = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (0 <= self.decimals0 <= 77 and 0 <= self.decimals1 <= 77):
            raise ValueError(f"token decimals out of range: {self.decimals0}, {self.decimals1}")
        if not 0 <= self.fee < 1:
            raise ValueError(f"fee must be a fraction in [0, 1), got {self.fee}")
        if self.tick_spacing <= 0:
            raise ValueError(f"tick_spacing must be positive, got {self.tick_spacing}")
        pair = TokenPair(self.decimals0, self.decimals1, quote_is_token0=self.quote_is_token0)
        object.__setattr__(self, "token_pair", pair)

    @property
    def base_symbol(self) -> str:
        return self.symbol1 if self.quote_is_token0 else self.symbol0

    @property
    def quote_symbol(self) -> str:
        return self.symbol0 if self.quote_is_token0 else self.symbol1

    @property
    def quote_decimals(self) -> int:
        return self.decimals0 if self.quote_is_token0 else self.decimals1

    @property
    def base_decimals(self) -> int:
        return self.decimals1 if self.quote_is_token0 else self.decimals0


@dataclass(frozen=True, slots=True)
class SwapEvent:
    """A Swap log decoded field for field, in the contracts' own integers.

    ``amount0``/``amount1`` are the pool's net token flows (positive: the pool
    received that token); V2's four in/out amounts are netted the same way.
    ``sqrt_price_x96``, ``liquidity`` and ``tick`` are V3's post-swap state (None for V2).
    """

    address: str
    kind: PoolKind
    block: int
    tx_index: int
    log_index: int
    tx_hash: str
    sender: str
    recipient: str
    amount0: int
    amount1: int
    sqrt_price_x96: int | None = None
    liquidity: int | None = None
    tick: int | None = None


@dataclass(frozen=True, slots=True)
class Reorg:
    """Blocks after ``ancestor`` were replaced; roll back before processing what follows.

    ``depth`` is how many already processed blocks were replaced."""

    ancestor: int
    depth: int

    def __post_init__(self) -> None:
        if self.ancestor < 0 or self.depth < 1:
            raise ValueError(f"Reorg needs ancestor >= 0 and depth >= 1: {self!r}")


@dataclass(frozen=True, slots=True)
class Block:
    """One processed block: samples of every healthy pool, the swaps, degraded pools."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int
    samples: tuple[PoolSample, ...] = ()
    swaps: tuple[SwapRecord, ...] = ()
    degraded: Mapping[PoolId, str] = field(default_factory=dict)


# -- ABI, by hand for the fixed shapes of the hot path ------------------------------------


def _uint(data: bytes, offset: int) -> int:
    end = offset + _WORD
    if offset < 0 or end > len(data):
        raise DataError("short return data")
    return int.from_bytes(data[offset:end], "big")


def _int(data: bytes, offset: int) -> int:
    end = offset + _WORD
    if offset < 0 or end > len(data):
        raise DataError("short return data")
    return int.from_bytes(data[offset:end], "big", signed=True)


def encode_aggregate3(calls: Sequence[tuple[str, bytes]]) -> bytes:
    """Calldata of ``Multicall3.aggregate3`` with ``allowFailure = true`` for every call.

    Standard ABI layout (what ``eth_abi.encode`` gives, without its per-value checks):
    the array offset, its length, one offset per element, then each element as
    ``(address, true, 0x60, len(data), data padded to 32 bytes)``."""
    heads: list[bytes] = []
    tails: list[bytes] = []
    position = _WORD * len(calls)
    for target, data in calls:
        address = bytes.fromhex(target[2:])
        if len(address) != 20:
            raise ValueError(f"not a 20-byte address: {target!r}")
        tail = b"".join(
            (
                bytes(12),
                address,
                _TRUE_WORD,
                _BYTES_AT_0X60,
                len(data).to_bytes(32, "big"),
                data,
                bytes(-len(data) % _WORD),
            )
        )
        heads.append(position.to_bytes(32, "big"))
        tails.append(tail)
        position += len(tail)
    return b"".join(
        (
            SEL_AGGREGATE3,
            _WORD.to_bytes(32, "big"),
            len(calls).to_bytes(32, "big"),
            *heads,
            *tails,
        )
    )


def decode_aggregate3(data: bytes, expected: int) -> list[tuple[bool, bytes]]:
    """``(success, returnData)`` per call from ``aggregate3``'s answer.

    Follows every offset with bounds checks (a malformed answer raises
    :class:`DataError`, never reads out of range); ``expected`` calls must come back."""
    size = len(data)
    base = _uint(data, 0)
    if _uint(data, base) != expected:
        raise DataError(f"aggregate3 returned {_uint(data, base)} results, expected {expected}")
    heads = base + _WORD
    if heads + _WORD * expected > size:
        raise DataError("short aggregate3 answer")
    out: list[tuple[bool, bytes]] = []
    from_bytes = int.from_bytes
    for k in range(expected):
        at = heads + 32 * k
        start = heads + from_bytes(data[at : at + 32], "big")
        if start + 64 > size:
            raise DataError("aggregate3 element out of range")
        success = from_bytes(data[start : start + 32], "big")
        if success > 1:
            raise DataError("aggregate3 success flag is not a bool")
        offset = start + from_bytes(data[start + 32 : start + 64], "big")
        if offset + 32 > size:
            raise DataError("aggregate3 return data out of range")
        length = from_bytes(data[offset : offset + 32], "big")
        if offset + 32 + length + (-length % 32) > size:  # padding included, as the ABI says
            raise DataError("aggregate3 return data out of range")
        out.append((success == 1, data[offset + 32 : offset + 32 + length]))
    return out


def _hex_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return bytes.fromhex(value[2:] if value.startswith("0x") else value)
    return bytes(value)


def _quantity(value: Any) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    return int(text, 16) if text.startswith("0x") else int(text)


# Both caches are small on purpose: a daemon runs for months, swap logs name ever new
# senders and recipients, ticks wander, and 65,536 entries cost 12-18 MiB each. The hot
# keys (pools, routers, the ticks around the current one) stay in a few thousand.
@functools.lru_cache(maxsize=4096)
def _checksum(address_hex: str) -> str:
    return str(to_checksum_address(address_hex))


def _topic_address(topic: bytes) -> str:
    if len(topic) != 32 or any(topic[:12]):
        raise ValueError("indexed address topic is not a padded 20-byte address")
    return _checksum("0x" + topic[12:].hex())


def decode_swap_event(log: Mapping[str, Any]) -> SwapEvent | None:
    """A raw ``eth_getLogs`` entry -> :class:`SwapEvent` (None for other events and
    removed logs). Strict like ``eth_abi``: bad padding or a value out of its type's
    range raises ``ValueError``. Accepts hex strings or bytes/ints (web3-formatted logs)."""
    if log.get("removed"):
        return None
    topics = [_hex_bytes(t) for t in log["topics"]]
    if not topics:
        return None
    topic0 = "0x" + topics[0].hex()
    if topic0 == TOPIC_SWAP_V3:
        kind: PoolKind = "uniswap_v3"
    elif topic0 == TOPIC_SWAP_V2:
        kind = "uniswap_v2"
    else:
        return None
    if len(topics) != 3:
        raise ValueError("a Swap log has three topics")
    data = _hex_bytes(log["data"])
    event = SwapEvent(
        address=_checksum(str(log["address"]).lower()),
        kind=kind,
        block=_quantity(log["blockNumber"]),
        tx_index=_quantity(log["transactionIndex"]),
        log_index=_quantity(log["logIndex"]),
        tx_hash="0x" + _hex_bytes(log["transactionHash"]).hex(),
        sender=_topic_address(topics[1]),
        recipient=_topic_address(topics[2]),
        amount0=0,
        amount1=0,
    )
    if kind == "uniswap_v3":
        if len(data) != 5 * _WORD:
            raise ValueError("a V3 Swap log carries five words")
        sqrt_price_x96 = _uint(data, 64)
        liquidity = _uint(data, 96)
        tick = _int(data, 128)
        if sqrt_price_x96 >> 160 or liquidity >> 128 or not -(1 << 23) <= tick < (1 << 23):
            raise ValueError("V3 Swap field out of its type's range")
        return replace(
            event,
            amount0=_int(data, 0),
            amount1=_int(data, 32),
            sqrt_price_x96=sqrt_price_x96,
            liquidity=liquidity,
            tick=tick,
        )
    if len(data) != 4 * _WORD:
        raise ValueError("a V2 Swap log carries four words")
    a0_in, a1_in, a0_out, a1_out = (_uint(data, k * _WORD) for k in range(4))
    return replace(event, amount0=a0_in - a0_out, amount1=a1_in - a1_out)


def _decode_sync(log: Mapping[str, Any]) -> tuple[int, int]:
    data = _hex_bytes(log["data"])
    if len(data) != 2 * _WORD:
        raise ValueError("a Sync log carries two words")
    reserve0, reserve1 = _uint(data, 0), _uint(data, 32)
    if reserve0 >> 112 or reserve1 >> 112:
        raise ValueError("Sync reserve out of uint112 range")
    return reserve0, reserve1


def _decode_string(data: bytes) -> str:
    """ERC20 symbol(): ABI string, or bytes32 for old tokens (MKR style)."""
    try:
        (value,) = decode(["string"], data)
        return str(value)
    except (DecodingError, OverflowError, ValueError):
        if len(data) == 32:
            return data.rstrip(b"\0").decode("utf-8", "replace")
        raise


# The one TickMath function, memoised for the ticks a poll meets (bounds: see above).
_sqrt_at_tick = functools.lru_cache(maxsize=4096)(sqrt_ratio_at_tick)


def tick_tvl_v3(
    meta: PoolMeta, sqrt_price_x96: int, tick: int, liquidity: int, price: float
) -> float:
    """Value in quote of the active liquidity inside the current initialisable tick range
    (:func:`rules.uniswap.tick_range`, Lambert's "tick TVL"). The token amounts are the
    contracts' integers (``LiquidityAmounts.getAmountsForLiquidity``, rounded down as a
    burn pays out); :func:`rules.uniswap.tick_tvl` is the same value for tables."""
    lower, upper = tick_range(tick, meta.tick_spacing)
    amount0, amount1 = amounts_for_liquidity(
        liquidity, sqrt_price_x96, _sqrt_at_tick(lower), _sqrt_at_tick(upper)
    )
    return meta.token_pair.value_in_quote(amount0, amount1, price)


@dataclass(frozen=True, slots=True)
class _Plan:
    """The per-block reads of the current pool set, encoded once."""

    calls: tuple[tuple[str, bytes], ...]
    layout: tuple[tuple[PoolMeta, PoolId, int], ...]  # (pool, id, number of calls)
    multicall_data: tuple[str, ...]  # aggregate3 calldata per chunk, 0x-hex (none without)
    plain: tuple[dict[str, str], ...]  # eth_call objects when Multicall3 is absent
    log_filter: dict[str, Any] | None


class EvmChain:
    """Follows one chain and samples its pools at every confirmed block."""

    def __init__(
        self,
        name: str,
        chain_id: int,
        rpc: RpcPool,
        pools: Sequence[PoolSpec],
        *,
        confirmations: int = 0,
        backfill_batch: int = 50,
        multicall: str | None = MULTICALL3,
        keep_hashes: int = 256,
        on_degraded: Callable[[PoolId, str], None] | None = None,
        max_calls_per_request: int = 20_000,
        calls_per_multicall: int = 1500,
    ) -> None:
        if confirmations < 0:
            raise ValueError(f"confirmations must be >= 0, got {confirmations}")
        self.name = name
        self.chain_id = chain_id
        self.rpc = rpc
        self.specs = list(pools)
        if len({s.address for s in self.specs}) != len(self.specs):
            raise ValueError(f"chain {name}: a pool address is listed twice")
        self.confirmations = confirmations
        self.backfill_batch = max(1, backfill_batch)
        self.multicall = multicall
        self.keep_hashes = max(2, keep_hashes)
        self.max_calls_per_request = max(1, max_calls_per_request)
        self.calls_per_multicall = max(1, calls_per_multicall)
        self.meta: dict[str, PoolMeta] = {}
        self.degraded: dict[str, str] = {}  # address -> reason
        self.next_block: int | None = None
        self.hashes: OrderedDict[int, str] = OrderedDict()
        self.behind = 0
        self._use_multicall = False
        self._on_degraded = on_degraded
        self._polls = 0
        self._plan: _Plan | None = None
        self._ids = {s.address: PoolId(name, s.address) for s in self.specs}
        self._latest: tuple[int, str] | None = None  # (number, hash) of the last head seen
        self._tip_checked: str | None = None  # head hash at the last same-height check
        self._heads = (
            NewHeads(rpc.ws_urls, name=name, on_error=rpc.on_error) if rpc.ws_urls else None
        )
        #: Blocks per request after an ``eth_getLogs`` range was refused (None: no cap);
        #: halved at each refusal, doubled back after ``log_range_relax_after`` good
        #: fetches, dropped once it reaches ``backfill_batch`` again.
        self.log_range_cap: int | None = None
        self.log_range_relax_after = LOG_RANGE_RELAX_AFTER
        self._fetches_at_cap = 0

    @property
    def uses_multicall(self) -> bool:
        """True when pool reads go through Multicall3 (detected at :meth:`connect`)."""
        return self._use_multicall

    def restore(self, next_block: int, hashes: Mapping[int, str]) -> None:
        """Continue from a checkpoint: the next block to process and the hashes of the
        blocks processed before it (any order; only the newest ``keep_hashes`` kept)."""
        if next_block < 0:
            raise ValueError(f"next_block must be >= 0, got {next_block}")
        kept = sorted((int(n), str(h)) for n, h in hashes.items() if int(n) < next_block)
        self.next_block = next_block
        self.hashes = OrderedDict(kept[-self.keep_hashes :])
        self._tip_checked = None

    def pool_id(self, address: str) -> PoolId:
        pid = self._ids.get(address)
        return pid if pid is not None else PoolId(self.name, address)

    # -- start ------------------------------------------------------------------

    async def connect(self) -> None:
        """Check the chain id, detect Multicall3, read static pool data."""
        await self.rpc.check_chain_id(self.chain_id)
        use = False
        if self.multicall is not None:
            code = await self.rpc.request("eth_getCode", [self.multicall, "latest"])
            use = isinstance(code, str) and len(code) > 2
        if use != self._use_multicall:
            self._use_multicall = use
            self._plan = None
        await self._load_meta([s for s in self.specs if s.address not in self.meta])

    async def close(self) -> None:
        """Close the HTTP sessions and the new-heads subscription."""
        if self._heads is not None:
            await self._heads.close()
        await self.rpc.close()

    async def _load_meta(self, specs: Sequence[PoolSpec]) -> None:
        if not specs:
            return
        calls: list[tuple[str, bytes]] = []
        for s in specs:
            calls += [(s.address, SEL_TOKEN0), (s.address, SEL_TOKEN1)]
            if s.kind == "uniswap_v3":
                calls += [(s.address, SEL_FEE), (s.address, SEL_TICK_SPACING)]
        results = await self._calls(calls, "latest")
        tokens: dict[str, tuple[str, str]] = {}
        extra: dict[str, tuple[int, int]] = {}
        i = 0
        for s in specs:
            n = 4 if s.kind == "uniswap_v3" else 2
            chunk = results[i : i + n]
            i += n
            try:
                t0 = _checksum("0x" + self._address_word(chunk[0]))
                t1 = _checksum("0x" + self._address_word(chunk[1]))
                if s.kind == "uniswap_v3":
                    fee = _uint(self._ok(chunk[2]), 0)
                    spacing = _int(self._ok(chunk[3]), 0)
                    if spacing <= 0 or fee >= 1_000_000:
                        raise DataError(f"fee() = {fee}, tickSpacing() = {spacing}")
                else:
                    fee, spacing = 3000, 1
            except (DataError, ValueError) as exc:
                self._degrade(s.address, f"not a {s.kind} pool: {exc}")
                continue
            tokens[s.address] = (t0, t1)
            extra[s.address] = (fee, spacing)
        token_set = sorted({t for pair in tokens.values() for t in pair})
        token_calls = [(t, sel) for t in token_set for sel in (SEL_DECIMALS, SEL_SYMBOL)]
        token_results = await self._calls(token_calls, "latest")
        token_info: dict[str, tuple[int, str] | None] = {}
        for j, t in enumerate(token_set):
            try:
                decimals = _uint(self._ok(token_results[2 * j]), 0)
                if decimals > 77:
                    raise DataError(f"decimals() = {decimals}")
                symbol = _decode_string(self._ok(token_results[2 * j + 1]))
                token_info[t] = (decimals, symbol)
            except (DataError, DecodingError, ValueError, OverflowError):
                token_info[t] = None
        for s in specs:
            if s.address not in tokens:
                continue
            t0, t1 = tokens[s.address]
            i0, i1 = token_info.get(t0), token_info.get(t1)
            if i0 is None or i1 is None:
                self._degrade(s.address, "a token does not answer decimals()/symbol()")
                continue
            fee, spacing = extra[s.address]
            self.meta[s.address] = PoolMeta(
                address=s.address,
                kind=s.kind,
                token0=t0,
                token1=t1,
                decimals0=i0[0],
                decimals1=i1[0],
                symbol0=i0[1],
                symbol1=i1[1],
                fee=fee / 1_000_000,
                tick_spacing=spacing,
                quote_is_token0=s.quote == "token0",
            )
            self.degraded.pop(s.address, None)
            self._plan = None

    def _address_word(self, result: tuple[bool, bytes]) -> str:
        data = self._ok(result)
        word = data[:_WORD]
        if len(word) != _WORD or any(word[:12]):
            raise DataError("not an address")
        return word[12:].hex()

    def _degrade(self, address: str, reason: str) -> None:
        if self.degraded.get(address) != reason:
            self.degraded[address] = reason
            if self._on_degraded is not None:
                self._on_degraded(self.pool_id(address), reason)

    @staticmethod
    def _ok(result: tuple[bool, bytes]) -> bytes:
        success, data = result
        if not success:
            raise DataError("call reverted")
        if not data:
            raise DataError("empty return data (not a contract?)")
        return data

    # -- calls --------------------------------------------------------------------

    def _call_batch(
        self, calls: Sequence[tuple[str, bytes]], block: str
    ) -> list[tuple[str, list[Any]]]:
        if self._use_multicall:
            return [
                ("eth_call", [{"to": self.multicall, "data": data}, block])
                for data in self._aggregate3_chunks(calls)
            ]
        return [("eth_call", [{"to": t, "data": "0x" + d.hex()}, block]) for t, d in calls]

    def _chunk_sizes(self, n: int) -> list[int]:
        size = self.calls_per_multicall
        return [min(size, n - i) for i in range(0, n, size)]

    def _aggregate3_chunks(self, calls: Sequence[tuple[str, bytes]]) -> tuple[str, ...]:
        out, i = [], 0
        for size in self._chunk_sizes(len(calls)):
            out.append("0x" + encode_aggregate3(calls[i : i + size]).hex())
            i += size
        return tuple(out)

    def _decode_calls(self, answers: Sequence[Any], n: int) -> list[tuple[bool, bytes]]:
        label = self.rpc.current_label
        if self._use_multicall:
            out: list[tuple[bool, bytes]] = []
            for answer, size in zip(answers, self._chunk_sizes(n), strict=True):
                if isinstance(answer, RpcCallError):
                    raise TransientError(f"multicall failed: {answer.message}", source=label)
                try:
                    if not isinstance(answer, str) or not answer.startswith("0x"):
                        raise ValueError("not 0x-hex")
                    out += decode_aggregate3(bytes.fromhex(answer[2:]), size)
                except (DataError, ValueError) as exc:
                    raise TransientError(
                        f"malformed multicall answer: {exc}", source=label
                    ) from exc
            return out
        decoded: list[tuple[bool, bytes]] = []
        for a in answers:
            if isinstance(a, RpcCallError):
                if not a.is_revert:
                    raise TransientError(f"eth_call failed: {a.message}", source=label)
                decoded.append((False, b""))
            elif isinstance(a, str) and a.startswith("0x"):
                try:
                    decoded.append((True, bytes.fromhex(a[2:])))
                except ValueError as exc:
                    raise TransientError("malformed eth_call answer", source=label) from exc
            else:
                raise TransientError("malformed eth_call answer", source=label)
        return decoded

    async def _calls(
        self, calls: Sequence[tuple[str, bytes]], block: str
    ) -> list[tuple[bool, bytes]]:
        if not calls:
            return []
        answers = await self.rpc.batch(self._call_batch(calls, block))
        return self._decode_calls(answers, len(calls))

    def _current_plan(self) -> _Plan:
        if self._plan is not None:
            return self._plan
        calls: list[tuple[str, bytes]] = []
        layout: list[tuple[PoolMeta, PoolId, int]] = []
        for s in self.specs:
            meta = self.meta.get(s.address)
            if meta is None:
                continue
            if meta.kind == "uniswap_v3":
                owner = bytes(12) + bytes.fromhex(s.address[2:])
                calls += [
                    (s.address, SEL_SLOT0),
                    (s.address, SEL_LIQUIDITY),
                    (meta.token0, SEL_BALANCE_OF + owner),
                    (meta.token1, SEL_BALANCE_OF + owner),
                ]
                layout.append((meta, self.pool_id(s.address), 4))
            else:
                calls.append((s.address, SEL_GET_RESERVES))
                layout.append((meta, self.pool_id(s.address), 1))
        addresses = [m.address for m, _, _ in layout]
        topics = [TOPIC_SWAP_V3, TOPIC_SWAP_V2]
        if any(m.kind == "uniswap_v2" for m, _, _ in layout):
            topics.append(TOPIC_SYNC_V2)
        self._plan = _Plan(
            calls=tuple(calls),
            layout=tuple(layout),
            multicall_data=self._aggregate3_chunks(calls) if self._use_multicall else (),
            plain=tuple({"to": t, "data": "0x" + d.hex()} for t, d in calls),
            log_filter={"address": addresses, "topics": [topics]} if addresses else None,
        )
        return self._plan

    def _blocks_per_request(self, plan: _Plan) -> int:
        per_block = max(1, len(plan.calls))
        blocks = max(1, min(self.backfill_batch, self.max_calls_per_request // per_block))
        return blocks if self.log_range_cap is None else min(blocks, self.log_range_cap)

    def _narrow_log_range(self, start: int, end: int) -> int | None:
        """After ``eth_getLogs start..end`` failed: halve the blocks per request (many
        providers cap the range or the result count); the new cap, or None for one block."""
        if end <= start:
            return None
        self.log_range_cap = max(1, (end - start + 1) // 2)
        self._fetches_at_cap = 0
        return self.log_range_cap

    def _relax_log_range(self) -> None:
        """A fetch succeeded: after enough of them under a cap, try twice the range."""
        if self.log_range_cap is None:
            return
        self._fetches_at_cap += 1
        if self._fetches_at_cap >= self.log_range_relax_after:
            self._fetches_at_cap = 0
            doubled = self.log_range_cap * 2
            self.log_range_cap = None if doubled >= self.backfill_batch else doubled

    # -- following ------------------------------------------------------------------

    async def head(self) -> int:
        """The head block number (``eth_getBlockByNumber("latest")``, one request)."""
        header = await self.rpc.request("eth_getBlockByNumber", ["latest", False])
        try:
            number, block_hash = _quantity(header["number"]), str(header["hash"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TransientError(
                "malformed head block answer", source=self.rpc.current_label
            ) from exc
        self._latest = (number, block_hash)
        return number

    async def wait_new_head(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for a new head; its number, or None.

        With a ws:// endpoint configured this wakes on the node's ``newHeads``
        notification; without one (or while the subscription is down) it sleeps the
        timeout, so a caller can always use it in place of its poll-interval sleep."""
        if self._heads is None:
            await asyncio.sleep(timeout)
            return None
        return await self._heads.wait(timeout)

    @property
    def subscribed(self) -> bool:
        """True while a ``newHeads`` subscription is live."""
        return self._heads is not None and self._heads.active

    async def poll(self, head: int | None = None) -> list[Block | Reorg]:
        """Blocks that became confirmed since the last poll (at most one request's worth;
        call again while :attr:`behind`), or a single :class:`Reorg`."""
        self._polls += 1
        missing = [s for s in self.specs if s.address not in self.meta]
        if missing and self._polls % META_RETRY_POLLS == 0:
            await self._load_meta(missing)
        if head is None:
            head = await self.head()
        target = head - self.confirmations
        if self.next_block is None:
            self.next_block = max(0, target)
        if target < self.next_block:
            self.behind = 0
            return await self._check_tip()
        plan = self._current_plan()
        start = self.next_block
        end = min(target, start + self._blocks_per_request(plan) - 1)
        blocks = await self.fetch(start, end)
        self._relax_log_range()
        prev = self.hashes.get(start - 1)
        if prev is not None and blocks[0].parent_hash != prev:
            self.behind = 0
            reorg = await self._find_ancestor(start - 1)
            return [reorg] if reorg is not None else []
        for b in blocks:
            self.hashes[b.number] = b.hash
        while len(self.hashes) > self.keep_hashes:
            self.hashes.popitem(last=False)
        self.next_block = end + 1
        self.behind = target - end
        return list(blocks)

    async def _check_tip(self) -> list[Block | Reorg]:
        """No new block: is the last processed block still on the chain?"""
        assert self.next_block is not None
        last = self.next_block - 1
        known = self.hashes.get(last)
        if known is None or self._latest is None:
            return []
        number, head_hash = self._latest
        if number == last:
            if head_hash == known:
                return []
        elif number < last or head_hash == self._tip_checked:
            return []  # a lagging node, or a head we have already checked against
        else:
            # The head changed without reaching a new confirmed height: one header tells.
            header = await self.rpc.request("eth_getBlockByNumber", [hex(last), False])
            self._tip_checked = head_hash
            if not isinstance(header, dict) or header.get("hash") in (None, known):
                return []
        reorg = await self._find_ancestor(last)
        return [reorg] if reorg is not None else []

    async def _find_ancestor(self, start: int) -> Reorg | None:
        """Walk back from ``start`` (the last processed block) until the node's hash
        equals ours, 32 headers per request. None when ``start`` itself is still on the
        chain (the node flip-flopped between two reads): nothing to undo."""
        oldest = next(iter(self.hashes), start + 1)
        number = start
        while number >= oldest:
            low = max(oldest, number - 31)
            numbers = list(range(number, low - 1, -1))
            headers = await self.rpc.batch(
                [("eth_getBlockByNumber", [hex(n), False]) for n in numbers]
            )
            for n, h in zip(numbers, headers, strict=True):
                if h is None:
                    continue  # above the node's head: the new branch is shorter
                if not isinstance(h, dict) or "hash" not in h:
                    raise TransientError(
                        f"no usable header for block {n}", source=self.rpc.current_label
                    )
                if h["hash"] == self.hashes.get(n):
                    if n == start:
                        return None
                    for gone in [k for k in self.hashes if k > n]:
                        del self.hashes[gone]
                    self.next_block = n + 1
                    self._tip_checked = None
                    return Reorg(ancestor=n, depth=start - n)
            number = low - 1
        raise FatalError(
            f"the chain no longer contains any of the {len(self.hashes)} recent blocks "
            f"processed (down to block {oldest}): a reorg deeper than that, or a node "
            "reset to another chain with the same chain id",
            source=self.name,
        )

    async def fetch(self, start: int, end: int) -> list[Block]:
        """Headers, pool state and swaps for blocks ``start..end`` in one HTTP request."""
        plan = self._current_plan()
        batch: list[tuple[str, Sequence[Any]]] = []
        for number in range(start, end + 1):
            tag = hex(number)
            batch.append(("eth_getBlockByNumber", [tag, False]))
            if not plan.calls:
                continue
            if self._use_multicall:
                batch.extend(
                    ("eth_call", [{"to": self.multicall, "data": data}, tag])
                    for data in plan.multicall_data
                )
            else:
                batch.extend(("eth_call", [request, tag]) for request in plan.plain)
        if plan.log_filter is not None:
            batch.append(
                ("eth_getLogs", [{"fromBlock": hex(start), "toBlock": hex(end), **plan.log_filter}])
            )
        answers = await self.rpc.batch(batch)
        label = self.rpc.current_label
        swaps_by_block: dict[int, list[SwapRecord]] = {}
        if plan.log_filter is not None:
            logs = answers[-1]
            if isinstance(logs, RpcCallError) or not isinstance(logs, list):
                cap = self._narrow_log_range(start, end)
                retry = f"; retrying with at most {cap} blocks per request" if cap else ""
                raise TransientError(
                    f"eth_getLogs {start}..{end} failed: {getattr(logs, 'message', logs)}" + retry,
                    source=label,
                )
            swaps_by_block = self._decode_logs(logs)
        per_block = len(plan.multicall_data) if self._use_multicall else len(plan.calls)
        step = 1 + per_block
        blocks: list[Block] = []
        for k, number in enumerate(range(start, end + 1)):
            header = answers[k * step]
            if not isinstance(header, dict) or "hash" not in header:
                raise TransientError(f"block {number} not available yet", source=label)
            try:
                block_hash = str(header["hash"])
                parent_hash = str(header["parentHash"])
                timestamp = _quantity(header["timestamp"])
            except (KeyError, ValueError) as exc:
                raise TransientError(f"malformed header of block {number}", source=label) from exc
            if blocks and parent_hash != blocks[-1].hash:
                raise TransientError(f"chain changed while reading block {number}", source=label)
            results = (
                self._decode_calls(answers[k * step + 1 : (k + 1) * step], len(plan.calls))
                if plan.calls
                else []
            )
            swaps = swaps_by_block.get(number, [])
            samples, degraded = self._samples(number, block_hash, timestamp, swaps, results, plan)
            blocks.append(
                Block(
                    number=number,
                    hash=block_hash,
                    parent_hash=parent_hash,
                    timestamp=timestamp,
                    samples=tuple(samples),
                    swaps=tuple(swaps),
                    degraded=degraded,
                )
            )
        return blocks

    def _samples(
        self,
        number: int,
        block_hash: str,
        timestamp: int,
        swaps: Sequence[SwapRecord],
        results: Sequence[tuple[bool, bytes]],
        plan: _Plan,
    ) -> tuple[list[PoolSample], dict[PoolId, str]]:
        volume: dict[PoolId, float] = {}
        for rec in swaps:
            volume[rec.pool] = volume.get(rec.pool, 0.0) + rec.volume_quote
        counts = classify_swaps(swaps) if swaps else {}
        samples: list[PoolSample] = []
        degraded: dict[PoolId, str] = {}
        i = 0
        for meta, pid, n in plan.layout:
            chunk = results[i : i + n]
            i += n
            try:
                price, tvl, tick_tvl = self._read_state(meta, chunk)
            except (DataError, ValueError, ZeroDivisionError, OverflowError) as exc:
                reason = str(exc)
                degraded[pid] = reason
                self._degrade(meta.address, reason)
                continue
            if meta.address in self.degraded:
                del self.degraded[meta.address]
            swap_count, mev = counts.get(pid, (0, 0))
            samples.append(
                PoolSample(
                    pool=pid,
                    time=timestamp,
                    block=number,
                    block_hash=block_hash,
                    price=price,
                    tvl=tvl,
                    tick_tvl=tick_tvl,
                    volume=volume.get(pid, 0.0),
                    swaps=swap_count,
                    mev_swaps=mev,
                )
            )
        return samples, degraded

    def _read_state(
        self, meta: PoolMeta, chunk: Sequence[tuple[bool, bytes]]
    ) -> tuple[float, float, float]:
        if meta.kind == "uniswap_v3":
            slot0 = self._ok(chunk[0])
            sqrt_price_x96 = _uint(slot0, 0)
            tick = _int(slot0, 32)
            liquidity = _uint(self._ok(chunk[1]), 0)
            if sqrt_price_x96 == 0:
                raise DataError("pool is not initialised (sqrtPriceX96 = 0)")
            if liquidity == 0:
                raise DataError("no active liquidity")
            balance0 = _uint(self._ok(chunk[2]), 0)
            balance1 = _uint(self._ok(chunk[3]), 0)
            price = meta.token_pair.price_from_sqrt_price_x96(sqrt_price_x96)
            tvl = meta.token_pair.value_in_quote(balance0, balance1, price)
            return price, tvl, tick_tvl_v3(meta, sqrt_price_x96, tick, liquidity, price)
        data = self._ok(chunk[0])
        reserve0, reserve1 = _uint(data, 0), _uint(data, 32)
        if reserve0 == 0 or reserve1 == 0:
            raise DataError("no liquidity (a reserve is 0)")
        price = meta.token_pair.price_from_reserves(reserve0, reserve1)
        tvl = meta.token_pair.value_in_quote(reserve0, reserve1, price)
        return price, tvl, math.nan

    # -- logs -------------------------------------------------------------------------

    def _decode_logs(self, logs: Sequence[Any]) -> dict[int, list[SwapRecord]]:
        out: dict[int, list[SwapRecord]] = {}
        # V2 pairs emit Sync(reserves after) right before Swap, in the same transaction.
        last_sync: dict[tuple[str, str], tuple[int, int, int]] = {}
        for log in logs:
            try:
                topics = log["topics"]
                if topics and _hex_bytes(topics[0]) == _SYNC_V2_BYTES:
                    key = (str(log["address"]).lower(), str(log["transactionHash"]))
                    last_sync[key] = (_quantity(log["logIndex"]), *_decode_sync(log))
                    continue
                event = decode_swap_event(log)
                if event is None:
                    continue
                reserves = None
                if event.kind == "uniswap_v2":
                    sync = last_sync.get((event.address.lower(), event.tx_hash))
                    if sync is not None and sync[0] == event.log_index - 1:
                        reserves = (sync[1], sync[2])
                rec = self._record(event, reserves)
            except (KeyError, ValueError, TypeError, DataError):
                continue  # a log we cannot read is not a swap of ours; never fail the block
            if rec is not None:
                out.setdefault(rec.block, []).append(rec)
        for recs in out.values():
            recs.sort(key=lambda r: (r.tx_index, r.log_index))
        return out

    def decode_swap(self, log: Mapping[str, Any]) -> SwapRecord | None:
        """A raw ``eth_getLogs`` Swap entry of a known pool -> :class:`SwapRecord`
        (None for other events or pools). A V2 swap's ``price_after`` is its execution
        price here; :meth:`poll` uses the pair's ``Sync`` reserves instead."""
        event = decode_swap_event(log)
        return None if event is None else self._record(event, None)

    def _record(self, event: SwapEvent, reserves: tuple[int, int] | None) -> SwapRecord | None:
        meta = self.meta.get(event.address)
        if meta is None or meta.kind != event.kind:
            return None
        if meta.quote_is_token0:
            base, quote = event.amount1, event.amount0
        else:
            base, quote = event.amount0, event.amount1
        dq = 10**meta.quote_decimals
        pair = meta.token_pair
        if event.sqrt_price_x96 is not None:
            price = (
                pair.price_from_sqrt_price_x96(event.sqrt_price_x96)
                if event.sqrt_price_x96
                else math.nan
            )
        elif reserves is not None and reserves[0] and reserves[1]:
            price = pair.price_from_reserves(*reserves)
        elif event.amount0 and event.amount1:
            # The execution price: the two legs' ratio, as if they were reserves.
            price = pair.price_from_reserves(abs(event.amount0), abs(event.amount1))
        elif base != 0:
            price = 0.0  # nothing of the quote token moved
        else:
            price = math.nan
        return SwapRecord(
            pool=self.pool_id(event.address),
            block=event.block,
            tx_index=event.tx_index,
            log_index=event.log_index,
            tx_hash=event.tx_hash,
            sender=event.sender,
            recipient=event.recipient,
            amount0=event.amount0,
            amount1=event.amount1,
            direction=1 if base < 0 else (-1 if base > 0 else 0),
            volume_quote=abs(quote) / dq,
            price_after=price,
        )
