"""EVM chain adapter: Uniswap V3 / V2 pools, one round trip per block, confirmations, reorgs.

Guarantees:
- static pool data (tokens, decimals, symbols, fee, tick spacing) is read once;
- a poll costs two HTTP requests whatever the pool count: ``eth_blockNumber``, then
  one JSON-RPC batch holding, for each new block, its header and one Multicall3
  ``aggregate3`` call pinned to that block (a plain batch of ``eth_call`` where
  Multicall3 is absent), plus one ``eth_getLogs`` over the whole block range;
- blocks are processed at ``confirmations`` depth, in order, none skipped: after a
  gap the missing range is fetched in batches of ``backfill_batch`` blocks;
- a processed block whose hash changed is reported as :class:`Reorg` with the
  common ancestor, before any block of the new branch;
- a pool that reverts, is not a contract or has no liquidity is reported in
  :attr:`Block.degraded` and skipped, never failing the chain;
- prices are quote per base in human units, following each pool's ``quote``; TVL,
  tick TVL and volume are in quote units.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from eth_abi.abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from adapters.errors import DataError, FatalError, TransientError
from adapters.rpc import RpcCallError, RpcPool
from rules.mev import classify_swaps
from rules.types import PoolId, PoolSample, SwapRecord
from rules.v3math import Q96, sqrt_ratio_at_tick

MULTICALL3 = "0xcA11bde05977b3631167028862bE2a173976CA11"


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

TOPIC_SWAP_V3 = (
    "0x" + keccak(text="Swap(address,address,int256,int256,uint160,uint128,int24)").hex()
)
TOPIC_SWAP_V2 = "0x" + keccak(text="Swap(address,uint256,uint256,uint256,uint256,address)").hex()

PoolKind = Literal["uniswap_v3", "uniswap_v2"]


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """What the adapter needs to know about a configured pool."""

    address: str
    kind: PoolKind
    quote: Literal["token0", "token1"]


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

    @property
    def base_symbol(self) -> str:
        return self.symbol1 if self.quote_is_token0 else self.symbol0

    @property
    def quote_symbol(self) -> str:
        return self.symbol0 if self.quote_is_token0 else self.symbol1

    def price_from_sqrt(self, sqrt_price_x96: int) -> float:
        """Quote per base from Uniswap's Q64.96 sqrt price (token1 per token0, raw units)."""
        # token1 per token0 in human units; squaring the float keeps ~1e-16 relative precision.
        ratio = float((sqrt_price_x96 / Q96) ** 2 * 10.0 ** (self.decimals0 - self.decimals1))
        return 1.0 / ratio if self.quote_is_token0 else ratio

    def price_from_reserves(self, reserve0: int, reserve1: int) -> float:
        ratio = float((reserve1 / 10**self.decimals1) / (reserve0 / 10**self.decimals0))
        return 1.0 / ratio if self.quote_is_token0 else ratio

    def value_in_quote(self, amount0: float, amount1: float, price: float) -> float:
        """Human token amounts -> value in quote units at ``price`` (quote per base)."""
        if self.quote_is_token0:
            return amount0 + amount1 * price
        return amount1 + amount0 * price


@dataclass(frozen=True, slots=True)
class Reorg:
    """Blocks after ``ancestor`` were replaced; roll back before processing what follows."""

    ancestor: int
    depth: int


@dataclass(slots=True)
class Block:
    """One processed block: samples of every healthy pool, the swaps, degraded pools."""

    number: int
    hash: str
    parent_hash: str
    timestamp: int
    samples: list[PoolSample] = field(default_factory=list)
    swaps: list[SwapRecord] = field(default_factory=list)
    degraded: dict[PoolId, str] = field(default_factory=dict)


def _word_int(data: bytes, index: int, signed: bool = False) -> int:
    chunk = data[32 * index : 32 * (index + 1)]
    if len(chunk) != 32:
        raise DecodingError("short return data")
    return int.from_bytes(chunk, "big", signed=signed)


def _decode_string(data: bytes) -> str:
    """ERC20 symbol(): ABI string, or bytes32 for old tokens (MKR style)."""
    try:
        (value,) = decode(["string"], data)
        return str(value)
    except (DecodingError, OverflowError, ValueError):
        if len(data) == 32:
            return data.rstrip(b"\0").decode("utf-8", "replace")
        raise


def tick_tvl_v3(
    meta: PoolMeta, sqrt_price_x96: int, tick: int, liquidity: int, price: float
) -> float:
    """Value in quote of the active liquidity inside the current initialisable tick range
    (Lambert's "tick TVL"), from the whitepaper's amounts for a range [a, b] containing p:
    x = L (sqrt(b) - sqrt(p)) / (sqrt(p) sqrt(b)), y = L (sqrt(p) - sqrt(a))."""
    spacing = meta.tick_spacing
    lower = (tick // spacing) * spacing
    sa = sqrt_ratio_at_tick(lower) / Q96
    sb = sqrt_ratio_at_tick(lower + spacing) / Q96
    sp = min(max(sqrt_price_x96 / Q96, sa), sb)
    amount0 = liquidity * (sb - sp) / (sp * sb) / 10**meta.decimals0
    amount1 = liquidity * (sp - sa) / 10**meta.decimals1
    return meta.value_in_quote(amount0, amount1, price)


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
    ) -> None:
        self.name = name
        self.chain_id = chain_id
        self.rpc = rpc
        self.specs = list(pools)
        self.confirmations = confirmations
        self.backfill_batch = max(1, backfill_batch)
        self.multicall = multicall
        self.keep_hashes = keep_hashes
        self.meta: dict[str, PoolMeta] = {}
        self.degraded: dict[str, str] = {}
        self.next_block: int | None = None
        self.hashes: OrderedDict[int, str] = OrderedDict()
        self._use_multicall = False
        self._on_degraded = on_degraded
        self._polls = 0

    def pool_id(self, address: str) -> PoolId:
        return PoolId(self.name, address)

    # -- start ------------------------------------------------------------------

    async def connect(self) -> None:
        """Check the chain id, detect Multicall3, read static pool data."""
        await self.rpc.check_chain_id(self.chain_id)
        if self.multicall is not None:
            code = await self.rpc.request("eth_getCode", [self.multicall, "latest"])
            self._use_multicall = isinstance(code, str) and len(code) > 2
        await self._load_meta([s for s in self.specs if s.address not in self.meta])

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
                t0 = str(to_checksum_address(_word_int(self._ok(chunk[0]), 0).to_bytes(20, "big")))
                t1 = str(to_checksum_address(_word_int(self._ok(chunk[1]), 0).to_bytes(20, "big")))
                if s.kind == "uniswap_v3":
                    fee = _word_int(self._ok(chunk[2]), 0)
                    spacing = _word_int(self._ok(chunk[3]), 0, signed=True)
                    if spacing <= 0:
                        raise DataError("tickSpacing() is not positive")
                else:
                    fee, spacing = 3000, 1
            except (DataError, DecodingError, ValueError) as exc:
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
                decimals = _word_int(self._ok(token_results[2 * j]), 0)
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

    def _aggregate3(self, calls: Sequence[tuple[str, bytes]]) -> str:
        payload = encode(["(address,bool,bytes)[]"], [[(t, True, d) for t, d in calls]])
        return "0x" + (SEL_AGGREGATE3 + payload).hex()

    @staticmethod
    def _decode_aggregate3(result: str) -> list[tuple[bool, bytes]]:
        (items,) = decode(["(bool,bytes)[]"], bytes.fromhex(result[2:]))
        return [(bool(ok), bytes(data)) for ok, data in items]

    def _call_batch(
        self, calls: Sequence[tuple[str, bytes]], block: str
    ) -> list[tuple[str, list[Any]]]:
        if self._use_multicall:
            return [("eth_call", [{"to": self.multicall, "data": self._aggregate3(calls)}, block])]
        return [("eth_call", [{"to": t, "data": "0x" + d.hex()}, block]) for t, d in calls]

    def _decode_calls(self, answers: Sequence[Any], n: int) -> list[tuple[bool, bytes]]:
        if self._use_multicall:
            (answer,) = answers
            if isinstance(answer, RpcCallError):
                raise TransientError(
                    f"multicall failed: {answer.message}", source=self.rpc.current_label
                )
            try:
                out = self._decode_aggregate3(answer)
            except (DecodingError, ValueError, TypeError) as exc:
                raise TransientError(
                    f"malformed multicall answer: {exc}", source=self.rpc.current_label
                ) from exc
            if len(out) != n:
                raise TransientError(
                    "multicall answer has the wrong length", source=self.rpc.current_label
                )
            return out
        decoded: list[tuple[bool, bytes]] = []
        for a in answers:
            if isinstance(a, RpcCallError):
                decoded.append((False, b""))
            elif isinstance(a, str) and a.startswith("0x"):
                decoded.append((True, bytes.fromhex(a[2:])))
            else:
                raise TransientError("malformed eth_call answer", source=self.rpc.current_label)
        return decoded

    async def _calls(
        self, calls: Sequence[tuple[str, bytes]], block: str
    ) -> list[tuple[bool, bytes]]:
        if not calls:
            return []
        answers = await self.rpc.batch(self._call_batch(calls, block))
        return self._decode_calls(answers, len(calls))

    def _state_calls(self) -> tuple[list[tuple[str, bytes]], list[tuple[str, int]]]:
        """Per-block reads of every healthy pool, and (address, number of calls) to split them."""
        calls: list[tuple[str, bytes]] = []
        layout: list[tuple[str, int]] = []
        for s in self.specs:
            meta = self.meta.get(s.address)
            if meta is None:
                continue
            if meta.kind == "uniswap_v3":
                owner = bytes.fromhex(s.address[2:]).rjust(32, b"\0")
                calls += [
                    (s.address, SEL_SLOT0),
                    (s.address, SEL_LIQUIDITY),
                    (meta.token0, SEL_BALANCE_OF + owner),
                    (meta.token1, SEL_BALANCE_OF + owner),
                ]
                layout.append((s.address, 4))
            else:
                calls.append((s.address, SEL_GET_RESERVES))
                layout.append((s.address, 1))
        return calls, layout

    # -- following ------------------------------------------------------------------

    async def head(self) -> int:
        value = await self.rpc.request("eth_blockNumber", [])
        if not isinstance(value, str):
            raise TransientError("malformed eth_blockNumber answer", source=self.rpc.current_label)
        return int(value, 16)

    async def poll(self, head: int | None = None) -> list[Block | Reorg]:
        """Blocks that became confirmed since the last poll (at most ``backfill_batch``;
        call again while :attr:`behind`), or a single :class:`Reorg`."""
        self._polls += 1
        if self.degraded and self._polls % 100 == 0:
            await self._load_meta([s for s in self.specs if s.address in self.degraded])
        if head is None:
            head = await self.head()
        target = head - self.confirmations
        if self.next_block is None:
            self.next_block = max(0, target)
        self.behind = 0
        if target < self.next_block:
            return []
        end = min(target, self.next_block + self.backfill_batch - 1)
        self.behind = target - end
        blocks = await self.fetch(self.next_block, end)
        prev = self.hashes.get(self.next_block - 1)
        if prev is not None and blocks[0].parent_hash != prev:
            return [await self._find_ancestor(self.next_block - 1)]
        for b in blocks:
            self.hashes[b.number] = b.hash
        while len(self.hashes) > self.keep_hashes:
            self.hashes.popitem(last=False)
        self.next_block = end + 1
        return list(blocks)

    behind: int = 0

    async def _find_ancestor(self, start: int) -> Reorg:
        """Walk back from ``start`` until the node's hash equals ours."""
        number = start
        while number in self.hashes:
            lo = max(min(self.hashes), number - 31)
            numbers = list(range(number, lo - 1, -1))
            headers = await self.rpc.batch(
                [("eth_getBlockByNumber", [hex(n), False]) for n in numbers]
            )
            for n, h in zip(numbers, headers, strict=True):
                if not isinstance(h, dict) or "hash" not in h:
                    raise TransientError(f"no header for block {n}", source=self.rpc.current_label)
                if h["hash"] == self.hashes[n]:
                    for gone in [k for k in self.hashes if k > n]:
                        del self.hashes[gone]
                    self.next_block = n + 1
                    return Reorg(ancestor=n, depth=start - n + 1)
            number = lo - 1
        raise FatalError(
            f"reorg deeper than the {len(self.hashes)} block hashes kept (below block {start})",
            source=self.name,
        )

    async def fetch(self, start: int, end: int) -> list[Block]:
        """Headers, pool state and swaps for blocks ``start..end`` in one HTTP request."""
        calls, layout = self._state_calls()
        per_block = self._call_batch(calls, "latest") if calls else []
        n_state = len(per_block)
        batch: list[tuple[str, Sequence[Any]]] = []
        for number in range(start, end + 1):
            batch.append(("eth_getBlockByNumber", [hex(number), False]))
            for method, params in self._call_batch(calls, hex(number)) if calls else []:
                batch.append((method, params))
        addresses = [s.address for s in self.specs if s.address in self.meta]
        if addresses:
            batch.append(
                (
                    "eth_getLogs",
                    [
                        {
                            "fromBlock": hex(start),
                            "toBlock": hex(end),
                            "address": addresses,
                            "topics": [[TOPIC_SWAP_V3, TOPIC_SWAP_V2]],
                        }
                    ],
                )
            )
        del per_block
        answers = await self.rpc.batch(batch)
        logs: list[Any] = []
        if addresses:
            raw_logs = answers[-1]
            if isinstance(raw_logs, RpcCallError) or not isinstance(raw_logs, list):
                raise TransientError(
                    f"eth_getLogs {start}..{end} failed: {getattr(raw_logs, 'message', raw_logs)}",
                    source=self.rpc.current_label,
                )
            logs = raw_logs
        swaps_by_block = self._decode_logs(logs)
        blocks: list[Block] = []
        step = 1 + n_state
        for k, number in enumerate(range(start, end + 1)):
            header = answers[k * step]
            if not isinstance(header, dict) or "hash" not in header:
                raise TransientError(
                    f"block {number} not available yet", source=self.rpc.current_label
                )
            block = Block(
                number=number,
                hash=str(header["hash"]),
                parent_hash=str(header["parentHash"]),
                timestamp=int(header["timestamp"], 16),
            )
            if blocks and block.parent_hash != blocks[-1].hash:
                raise TransientError(
                    f"chain changed while reading block {number}", source=self.rpc.current_label
                )
            results = (
                self._decode_calls(answers[k * step + 1 : (k + 1) * step], len(calls))
                if calls
                else []
            )
            block.swaps = swaps_by_block.get(number, [])
            self._samples(block, results, layout)
            blocks.append(block)
        return blocks

    def _samples(
        self, block: Block, results: list[tuple[bool, bytes]], layout: list[tuple[str, int]]
    ) -> None:
        volume: dict[str, float] = {}
        for rec in block.swaps:
            volume[rec.pool.address] = volume.get(rec.pool.address, 0.0) + rec.volume_quote
        counts = classify_swaps(block.swaps)
        i = 0
        for address, n in layout:
            chunk = results[i : i + n]
            i += n
            meta = self.meta[address]
            pid = self.pool_id(address)
            try:
                price, tvl, tick_tvl = self._read_state(meta, chunk)
            except (DataError, DecodingError, ValueError, ZeroDivisionError, OverflowError) as exc:
                block.degraded[pid] = str(exc)
                self._degrade(address, str(exc))
                continue
            if address in self.degraded:
                del self.degraded[address]
            swaps, mev = counts.get(pid, (0, 0))
            block.samples.append(
                PoolSample(
                    pool=pid,
                    time=block.timestamp,
                    block=block.number,
                    block_hash=block.hash,
                    price=price,
                    tvl=tvl,
                    tick_tvl=tick_tvl,
                    volume=volume.get(address, 0.0),
                    swaps=swaps,
                    mev_swaps=mev,
                )
            )

    def _read_state(
        self, meta: PoolMeta, chunk: Sequence[tuple[bool, bytes]]
    ) -> tuple[float, float, float]:
        if meta.kind == "uniswap_v3":
            slot0 = self._ok(chunk[0])
            sqrt_price_x96 = _word_int(slot0, 0)
            tick = _word_int(slot0, 1, signed=True)
            liquidity = _word_int(self._ok(chunk[1]), 0)
            if sqrt_price_x96 == 0:
                raise DataError("pool is not initialised (sqrtPriceX96 = 0)")
            if liquidity == 0:
                raise DataError("no active liquidity")
            bal0 = _word_int(self._ok(chunk[2]), 0) / 10**meta.decimals0
            bal1 = _word_int(self._ok(chunk[3]), 0) / 10**meta.decimals1
            price = meta.price_from_sqrt(sqrt_price_x96)
            tvl = meta.value_in_quote(bal0, bal1, price)
            return price, tvl, tick_tvl_v3(meta, sqrt_price_x96, tick, liquidity, price)
        data = self._ok(chunk[0])
        reserve0, reserve1 = _word_int(data, 0), _word_int(data, 1)
        if reserve0 == 0 or reserve1 == 0:
            raise DataError("no liquidity (a reserve is 0)")
        price = meta.price_from_reserves(reserve0, reserve1)
        tvl = meta.value_in_quote(
            reserve0 / 10**meta.decimals0, reserve1 / 10**meta.decimals1, price
        )
        return price, tvl, math.nan

    def _decode_logs(self, logs: Sequence[Any]) -> dict[int, list[SwapRecord]]:
        out: dict[int, list[SwapRecord]] = {}
        for log in logs:
            try:
                rec = self.decode_swap(log)
            except (KeyError, ValueError, TypeError, DecodingError):
                continue  # a log we cannot read is not a swap of ours; never fail the block for it
            if rec is not None:
                out.setdefault(rec.block, []).append(rec)
        for recs in out.values():
            recs.sort(key=lambda r: (r.tx_index, r.log_index))
        return out

    def decode_swap(self, log: dict[str, Any]) -> SwapRecord | None:
        """A raw ``eth_getLogs`` entry -> :class:`SwapRecord` (None for other events/pools)."""
        address = to_checksum_address(log["address"])
        meta = self.meta.get(address)
        if meta is None or log.get("removed"):
            return None
        topics = [t if isinstance(t, str) else "0x" + bytes(t).hex() for t in log["topics"]]
        data = (
            bytes.fromhex(log["data"][2:]) if isinstance(log["data"], str) else bytes(log["data"])
        )
        if topics[0] == TOPIC_SWAP_V3 and meta.kind == "uniswap_v3":
            amount0, amount1, sqrt_price_x96, _liquidity, _tick = decode(
                ["int256", "int256", "uint160", "uint128", "int24"], data
            )
            price = meta.price_from_sqrt(sqrt_price_x96)
            sender = to_checksum_address("0x" + topics[1][-40:])
            recipient = to_checksum_address("0x" + topics[2][-40:])
        elif topics[0] == TOPIC_SWAP_V2 and meta.kind == "uniswap_v2":
            a0in, a1in, a0out, a1out = decode(["uint256", "uint256", "uint256", "uint256"], data)
            amount0, amount1 = a0in - a0out, a1in - a1out
            price = math.nan
            sender = to_checksum_address("0x" + topics[1][-40:])
            recipient = to_checksum_address("0x" + topics[2][-40:])
        else:
            return None
        base, quote = (amount1, amount0) if meta.quote_is_token0 else (amount0, amount1)
        dq = meta.decimals0 if meta.quote_is_token0 else meta.decimals1
        direction = 1 if base < 0 else (-1 if base > 0 else 0)
        if math.isnan(price) and base != 0:
            db = meta.decimals1 if meta.quote_is_token0 else meta.decimals0
            price = abs(quote / 10**dq) / abs(base / 10**db)
        return SwapRecord(
            pool=self.pool_id(address),
            block=int(log["blockNumber"], 16),
            tx_index=int(log["transactionIndex"], 16),
            log_index=int(log["logIndex"], 16),
            tx_hash=str(log["transactionHash"]),
            sender=sender,
            recipient=recipient,
            amount0=int(amount0),
            amount1=int(amount1),
            direction=direction,
            volume_quote=abs(quote) / 10**dq,
            price_after=price,
        )
