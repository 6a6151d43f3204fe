"""Drive a local anvil chain: deploy tokens and Uniswap, make liquidity, move prices.

Guarantees:
- the harness mines explicitly: on construction it turns anvil's automine off, and
  every public operation that sends transactions mines them in one block of its
  own, unless a :meth:`DevChain.block` context is open, in which case they join
  that block (first-in first-out when anvil runs with ``--order fifo``, as
  :class:`~daemon.demo.devchain.anvil.Anvil` starts it) and are mined when it closes;
- every mined transaction is checked: a revert, or a transaction left out of the
  block, raises :class:`TxFailedError` with anvil's revert reason;
- block timestamps are exactly what the caller asks (``mine(timestamp=...)``,
  ``block(timestamp=...)``) or follow the interval set with
  :meth:`DevChain.set_block_timestamp_interval`;
- prices are human prices of a pool's ``base`` in its ``quote``; ``swap_to_price``
  leaves a V3 pool's ``sqrtPriceX96`` exactly at the target's (floor) sqrt price
  and a V2 pair at the integer reserves nearest the target;
- transactions come from anvil's unlocked accounts (``eth_accounts``), the first
  being :attr:`DevChain.deployer`, which holds every token's initial supply; no
  private key is handled;
- only :class:`~daemon.demo.devchain.errors.DevChainError` subclasses escape.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from fractions import Fraction
from types import TracebackType
from typing import Any, Self, cast

from daemon.demo.devchain.artifacts import (
    MULTICALL3_ABI,
    MULTICALL3_ADDRESS,
    Abi,
    load_artifact,
    multicall3_runtime,
    patch_decimals,
)
from daemon.demo.devchain.errors import DevChainError, RpcError, TxFailedError
from daemon.demo.devchain.handles import (
    Block,
    PositionAmounts,
    Token,
    UniswapDeployment,
    V2Pair,
    V2PairState,
    V3Pool,
    V3PoolState,
    V3Position,
    checksum,
)
from daemon.demo.devchain.rpc import JsonRpcClient
from rules.uniswap import (
    MAX_SQRT_RATIO,
    MIN_SQRT_RATIO,
    Q96,
    TokenPair,
    amounts_from_liquidity,
    full_range_ticks,
    sqrt_ratio_at_tick,
    v2_amount_in_for_price,
    v2_amount_out,
)

#: A transaction request as anvil's JSON-RPC takes it (hex quantities).
TxRequest = dict[str, str]

MAX_UINT256 = (1 << 256) - 1
MAX_UINT128 = (1 << 128) - 1
#: ``exactInputSingle`` converts ``amountIn`` to int256: the largest it accepts.
MAX_EXACT_INPUT = (1 << 255) - 1
#: Routers and the position manager check ``block.timestamp <= deadline``.
NO_DEADLINE = MAX_UINT256
#: Placeholder for WETH9 / the NFT descriptor: nothing here wraps ETH or renders NFTs.
PLACEHOLDER_ADDRESS = "0x0000000000000000000000000000000000000000"
#: Fees enabled by UniswapV3Factory's constructor, with their tick spacings.
V3_DEFAULT_FEES: Mapping[int, int] = {500: 10, 3000: 60, 10000: 200}
_GAS_MARGIN = Fraction(13, 10)
#: Fixed gas limits of the hot-path transactions (no estimate round trip). A V3
#: swap crossing a few hundred empty tick-bitmap words stays well under 3M; the
#: default 30M block gas limit therefore holds ten V3 swaps per block.
GAS_V3_SWAP = 3_000_000
GAS_V2_SWAP = 250_000
GAS_ERC20 = 120_000


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _quantity(value: int) -> str:
    return hex(value)


def _from_hex(value: str) -> bytes:
    return bytes.fromhex(value.removeprefix("0x"))


class BlockBuilder:
    """The block being filled inside :meth:`DevChain.block`.

    ``tx_hashes`` lists what was sent into it; ``mined`` is set when the context
    exits normally (it stays None if the body raised: its transactions are dropped).
    """

    __slots__ = ("mined", "timestamp", "tx_hashes")

    def __init__(self, timestamp: int | None) -> None:
        self.timestamp = timestamp
        self.tx_hashes: list[str] = []
        self.mined: Block | None = None

    def __repr__(self) -> str:
        txs = len(self.tx_hashes)
        return f"<BlockBuilder timestamp={self.timestamp} txs={txs} mined={self.mined}>"


class DevChain:
    """A handle on a dev node (anvil) at ``url``, with Uniswap helpers.

    ``uniswap`` attaches to an existing deployment (for example one made by
    another process); otherwise call :meth:`deploy_uniswap` before pool methods.
    """

    def __init__(
        self, url: str, *, timeout: float = 30.0, uniswap: UniswapDeployment | None = None
    ) -> None:
        self.url = url
        self._client = JsonRpcClient(url, timeout=timeout)
        accounts = self.rpc("eth_accounts")
        if not accounts:
            raise DevChainError(f"the node at {url} has no unlocked accounts")
        #: anvil's unlocked accounts; ``accounts[0]`` is the deployer.
        self.accounts: tuple[str, ...] = tuple(checksum(a) for a in accounts)
        self.chain_id = int(self.rpc("eth_chainId"), 16)
        self.rpc("evm_setAutomine", False)
        self._uniswap = uniswap
        self._pending: list[tuple[str, str]] = []  # (tx hash, what it does)
        self._receipts: dict[str, dict[str, Any]] = {}  # of the last mined block(s)
        self._allowances: set[tuple[str, str, str]] = set()  # (token, owner, spender)
        self._batch: BlockBuilder | None = None
        self._in_operation = False
        self._erc20 = load_artifact("ERC20PresetFixedSupply").abi
        self._v3_factory = load_artifact("UniswapV3Factory").abi
        self._v3_pool = load_artifact("UniswapV3Pool").abi
        self._npm = load_artifact("NonfungiblePositionManager").abi
        self._router = load_artifact("SwapRouter").abi
        self._v2_factory = load_artifact("UniswapV2Factory").abi
        self._v2_pair = load_artifact("UniswapV2Pair").abi
        self._multicall = Abi(MULTICALL3_ABI)

    # --- raw access ---------------------------------------------------------------

    @property
    def deployer(self) -> str:
        """The account that deploys contracts and receives initial token supplies."""
        return self.accounts[0]

    @property
    def uniswap(self) -> UniswapDeployment:
        """The Uniswap deployment pool methods use."""
        if self._uniswap is None:
            raise DevChainError("Uniswap is not deployed: call deploy_uniswap() first")
        return self._uniswap

    def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call; errors become :class:`RpcError`."""
        return self._client.request(method, params)

    def close(self) -> None:
        """Close the HTTP connection to the node (the handle reopens it on use)."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def call(
        self, to: str, data: bytes, *, sender: str | None = None, block: str | int = "latest"
    ) -> bytes:
        """``eth_call``; ``block`` is a tag (``latest``, ``pending``) or a number."""
        request = {"to": to, "data": _hex(data)}
        if sender is not None:
            request["from"] = sender
        tag = block if isinstance(block, str) else _quantity(block)
        return _from_hex(self.rpc("eth_call", request, tag))

    def _read_tag(self) -> str:
        # Inside an open block, reads see its queued transactions.
        return "pending" if self._pending else "latest"

    # --- sending and mining -------------------------------------------------------

    def send(
        self,
        to: str | None,
        data: bytes,
        *,
        sender: str | None = None,
        what: str = "transaction",
        value: int = 0,
        gas: int | None = None,
    ) -> str:
        """Queue a transaction from an unlocked account; returns its hash.

        Without ``gas``, gas is estimated against the pending state (so it accounts
        for the transactions queued before it in the same block) with a 30% margin,
        and a revert is reported here, with its reason; with ``gas`` (the swap hot
        path, where estimating would double the cost) a revert is reported when the
        block is mined. The transaction is mined by :meth:`mine` or at the end of
        the open :meth:`block`; callers outside a block should prefer the operation
        methods, which mine for them.
        """
        request: TxRequest = {"from": sender or self.deployer, "data": _hex(data)}
        if to is not None:
            request["to"] = to
        if value:
            request["value"] = _quantity(value)
        if gas is None:
            try:
                estimate = int(self.rpc("eth_estimateGas", request, "pending"), 16)
            except RpcError as exc:
                raise TxFailedError("(not sent)", what, exc.reason) from exc
            gas = math.ceil(estimate * _GAS_MARGIN)
        request["gas"] = _quantity(gas)
        tx_hash = str(self.rpc("eth_sendTransaction", request))
        self._pending.append((tx_hash, what))
        if self._batch is not None:
            self._batch.tx_hashes.append(tx_hash)
        return tx_hash

    def mine(self, timestamp: int | None = None, blocks: int = 1) -> Block:
        """Mine ``blocks`` blocks now; the first at ``timestamp`` if given.

        Later blocks (and all of them without ``timestamp``) follow anvil's clock:
        the interval set by :meth:`set_block_timestamp_interval`, else wall time.
        Queued transactions go into the first block. Returns the last block.
        """
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        if timestamp is not None and timestamp < 0:
            raise ValueError(f"timestamp must be unix seconds >= 0, got {timestamp}")
        mined = self.rpc("evm_mine_detailed", {"timestamp": timestamp, "blocks": blocks})
        if not isinstance(mined, list) or len(mined) != blocks:
            raise RpcError("evm_mine_detailed", f"expected {blocks} blocks, got {mined!r:.200}")
        pending, self._pending = self._pending, []
        self._check_mined(mined, pending)
        last = mined[-1]
        return Block(int(last["number"], 16), last["hash"], int(last["timestamp"], 16))

    def _check_mined(
        self, mined: Sequence[Mapping[str, Any]], pending: list[tuple[str, str]]
    ) -> None:
        # Receipts, not block membership, decide: with interval mining (Anvil's
        # block_time) a queued transaction may have gone into an earlier block.
        reasons: dict[str, str | None] = {}
        for block in mined:
            for tx in block["transactions"]:
                reasons[tx["hash"]] = tx.get("revertReason")
        receipts = self._client.batch([("eth_getTransactionReceipt", [h]) for h, _ in pending])
        self._receipts = {}
        for (tx_hash, what), receipt in zip(pending, receipts, strict=True):
            if receipt is None:
                raise TxFailedError(tx_hash, what, "not mined (dropped, or over the gas limit)")
            if int(receipt["status"], 16) != 1:
                self._allowances.clear()  # a failed approve must not stay cached
                raise TxFailedError(tx_hash, what, reasons.get(tx_hash))
            self._receipts[tx_hash] = receipt

    def receipt(self, tx_hash: str) -> dict[str, Any]:
        """The receipt of a mined transaction (raises if it is not mined)."""
        found = self._receipts.get(tx_hash) or self.rpc("eth_getTransactionReceipt", tx_hash)
        if found is None:
            raise DevChainError(f"transaction {tx_hash} is not mined")
        return cast(dict[str, Any], found)

    @contextmanager
    def block(self, timestamp: int | None = None) -> Iterator[BlockBuilder]:
        """Put every transaction sent in the body into one block, mined on exit.

        Exactly one block is mined (even with no transaction), at ``timestamp`` if
        given. If the body raises, or the block cannot be mined (a timestamp before
        the head's), the queued transactions are dropped from anvil's pool and
        nothing is mined. Does not nest.
        """
        if self._batch is not None:
            raise DevChainError("DevChain.block() does not nest")
        if self._pending:
            raise DevChainError("transactions are queued outside a block: call mine() first")
        builder = BlockBuilder(timestamp)
        self._batch = builder
        try:
            yield builder
        except BaseException:
            self._batch = None
            self._drop_pending()
            raise
        self._batch = None
        try:
            builder.mined = self.mine(timestamp)
        except RpcError:  # e.g. a timestamp before the head's: nothing was mined
            self._drop_pending()
            raise

    def _drop_pending(self) -> None:
        self._pending = []
        self._allowances.clear()
        self.rpc("anvil_dropAllTransactions")

    @contextmanager
    def _operation(self) -> Iterator[None]:
        """Join the caller's open block (or an enclosing operation), else mine on exit.

        So one public call is one block: an approval an operation needs goes into
        the same block as the operation. Nothing sent, nothing mined.
        """
        if self._batch is not None or self._in_operation:
            yield
            return
        self._in_operation = True
        try:
            yield
        except BaseException:
            self._in_operation = False
            if self._pending:
                self._drop_pending()
            raise
        self._in_operation = False
        if self._pending:
            self.mine()

    @contextmanager
    def _own_block(self, what: str) -> Iterator[None]:
        """For operations that need their receipts now: refused inside an open block."""
        if self._batch is not None:
            raise DevChainError(f"{what} mines its own block: call it outside DevChain.block()")
        with self._operation():
            yield

    def set_block_timestamp_interval(self, seconds: int | None) -> None:
        """Each new block's timestamp is the previous one plus ``seconds`` (None: wall clock)."""
        if seconds is None:
            self.rpc("anvil_removeBlockTimestampInterval")
            return
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self.rpc("anvil_setBlockTimestampInterval", seconds)

    def latest_block(self) -> Block:
        """The head block."""
        return self.get_block("latest")

    def get_block(self, number: int | str) -> Block:
        """Block ``number`` (or a tag such as ``latest``)."""
        tag = number if isinstance(number, str) else _quantity(number)
        raw = self.rpc("eth_getBlockByNumber", tag, False)
        if raw is None:
            raise DevChainError(f"no block {number}")
        return Block(int(raw["number"], 16), raw["hash"], int(raw["timestamp"], 16))

    def snapshot(self) -> int:
        """``evm_snapshot``: an id to :meth:`revert` to.

        A revert restores state, blocks and the chain clock, but not the node's
        timestamp interval (:meth:`set_block_timestamp_interval`): set it again.
        """
        if self._pending:
            raise DevChainError("cannot snapshot with queued transactions: mine() first")
        return int(self.rpc("evm_snapshot"), 16)

    def revert(self, snapshot_id: int) -> None:
        """``evm_revert`` to ``snapshot_id`` (which is consumed, as are later ones)."""
        if self._batch is not None:
            raise DevChainError("cannot revert inside DevChain.block()")
        self._pending = []
        self._allowances.clear()
        self._receipts = {}
        self.rpc("anvil_dropAllTransactions")  # queued but never mined: not in any snapshot
        if self.rpc("evm_revert", _quantity(snapshot_id)) is not True:
            raise DevChainError(f"evm_revert: no snapshot {snapshot_id}")

    def reorg(self, depth: int, txs: Sequence[tuple[TxRequest, int]] = ()) -> list[Block]:
        """Replace the last ``depth`` blocks with new ones (``anvil_reorg``).

        The replaced blocks' transactions are discarded (not replayed, not re-queued).
        The new blocks keep the old numbers and timestamps and get new hashes.
        ``txs`` are ``(request, index)`` pairs: ``request`` (see :meth:`swap_request`)
        goes into new block ``index`` (0 = the oldest replaced block, < depth).
        Returns the new blocks, oldest first.
        """
        if self._batch is not None or self._pending:
            raise DevChainError("cannot reorg with queued transactions: mine() first")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        for _, index in txs:
            if not 0 <= index < depth:
                raise ValueError(f"tx block index {index} must be in [0, {depth})")
        head = self.latest_block().number
        if depth > head:
            raise ValueError(f"cannot reorg {depth} blocks on a chain of height {head}")
        self._allowances.clear()
        self._receipts = {}
        self.rpc("anvil_reorg", depth, [[dict(request), index] for request, index in txs])
        return [self.get_block(n) for n in range(head - depth + 1, head + 1)]

    # --- tokens -------------------------------------------------------------------

    def _deploy(self, artifact: str, *args: Any, sender: str | None = None) -> str:
        code = load_artifact(artifact).creation_code(*args)
        with self._own_block(f"deploy {artifact}"):
            tx_hash = self.send(None, code, sender=sender, what=f"deploy {artifact}")
        address = self._receipts[tx_hash].get("contractAddress")
        if not address:
            raise TxFailedError(tx_hash, f"deploy {artifact}", "no contract address in receipt")
        return checksum(address)

    def deploy_token(
        self,
        symbol: str,
        decimals: int,
        supply: int | float | Decimal,
        *,
        name: str | None = None,
        owner: str | None = None,
    ) -> Token:
        """Deploy an OpenZeppelin 4 ``ERC20PresetFixedSupply`` with ``decimals`` decimals.

        ``supply`` is in whole tokens, all minted to ``owner`` (default: the
        deployer). OZ4 returns 18 from ``decimals()``; any other value is patched
        into the runtime code (see :func:`~daemon.demo.devchain.artifacts.patch_decimals`)
        and checked by calling ``decimals()``.
        """
        if not 0 <= decimals <= 255:
            raise ValueError(f"decimals must fit a uint8, got {decimals}")
        raw_supply = int((Decimal(str(supply)) * Decimal(10) ** decimals).to_integral_value())
        if not 0 < raw_supply <= MAX_UINT256:
            raise ValueError(f"supply must be positive and fit a uint256, got {supply}")
        owner = checksum(owner) if owner else self.deployer
        address = self._deploy("ERC20PresetFixedSupply", name or symbol, symbol, raw_supply, owner)
        if decimals != 18:
            runtime = _from_hex(self.rpc("eth_getCode", address, "latest"))
            self.rpc("anvil_setCode", address, _hex(patch_decimals(runtime, decimals)))
        (onchain,) = self._erc20.decode_result(
            "decimals", self.call(address, self._erc20.encode_call("decimals"))
        )
        if onchain != decimals:
            raise DevChainError(f"{symbol}: decimals() returns {onchain}, wanted {decimals}")
        return Token(address, symbol, decimals)

    def balance_of(self, token: Token, account: str) -> int:
        """Raw balance of ``account`` (reads the pending state inside an open block)."""
        data = self._erc20.encode_call("balanceOf", checksum(account))
        (balance,) = self._erc20.decode_result(
            "balanceOf", self.call(token.address, data, block=self._read_tag())
        )
        return int(balance)

    def transfer(self, token: Token, to: str, amount_raw: int, *, sender: str | None = None) -> str:
        """ERC20 transfer of ``amount_raw`` base units; returns the tx hash."""
        if amount_raw <= 0:
            raise ValueError(f"amount_raw must be positive, got {amount_raw}")
        data = self._erc20.encode_call("transfer", checksum(to), amount_raw)
        with self._operation():
            return self.send(token.address, data, sender=sender, what=f"transfer {token.symbol}")

    def _ensure_allowance(self, token: Token, owner: str, spender: str) -> None:
        key = (token.address, owner, spender)
        if key in self._allowances:
            return
        data = self._erc20.encode_call("allowance", owner, spender)
        (allowance,) = self._erc20.decode_result(
            "allowance", self.call(token.address, data, block=self._read_tag())
        )
        if allowance < MAX_EXACT_INPUT:
            approve = self._erc20.encode_call("approve", spender, MAX_UINT256)
            with self._operation():
                self.send(
                    token.address,
                    approve,
                    sender=owner,
                    what=f"approve {token.symbol}",
                    gas=GAS_ERC20,
                )
        self._allowances.add(key)

    def install_multicall3(self) -> str:
        """Put Multicall3's runtime code at its canonical address; checks it answers."""
        self.rpc("anvil_setCode", MULTICALL3_ADDRESS, _hex(multicall3_runtime()))
        data = self._multicall.encode_call("getBlockNumber")
        (number,) = self._multicall.decode_result(
            "getBlockNumber", self.call(MULTICALL3_ADDRESS, data)
        )
        if number != self.latest_block().number:
            raise DevChainError("Multicall3.getBlockNumber() disagrees with eth_blockNumber")
        return MULTICALL3_ADDRESS

    def multicall(self, calls: Sequence[tuple[str, bytes]]) -> list[tuple[bool, bytes]]:
        """``aggregate3`` static call of ``(target, calldata)`` pairs (failures allowed)."""
        data = self._multicall.encode_call(
            "aggregate3", [(checksum(target), True, calldata) for target, calldata in calls]
        )
        (results,) = self._multicall.decode_result(
            "aggregate3", self.call(MULTICALL3_ADDRESS, data)
        )
        return [(bool(ok), bytes(out)) for ok, out in results]

    # --- Uniswap deployment -------------------------------------------------------

    def deploy_uniswap(self, *, weth9: str | None = None) -> UniswapDeployment:
        """Deploy UniswapV3Factory, NonfungiblePositionManager, SwapRouter and the V2 factory.

        ``weth9`` is only stored by the periphery (nothing here wraps ETH): pass the
        demo's WETH token, or leave the zero-address placeholder.
        """
        weth = checksum(weth9) if weth9 else PLACEHOLDER_ADDRESS
        v3_factory = self._deploy("UniswapV3Factory")
        position_manager = self._deploy(
            "NonfungiblePositionManager", v3_factory, weth, PLACEHOLDER_ADDRESS
        )
        swap_router = self._deploy("SwapRouter", v3_factory, weth)
        v2_factory = self._deploy("UniswapV2Factory", self.deployer)
        self._uniswap = UniswapDeployment(
            v3_factory=v3_factory,
            position_manager=position_manager,
            swap_router=swap_router,
            v2_factory=v2_factory,
            weth9=weth,
        )
        return self._uniswap

    # --- V3 pools -----------------------------------------------------------------

    def create_v3_pool(
        self,
        base: Token,
        quote: Token,
        fee: int,
        price: float,
        *,
        tick_spacing: int | None = None,
    ) -> V3Pool:
        """Create a V3 pool and initialise it at ``price`` (base in quote).

        The three fees the factory enables by default need no ``tick_spacing``;
        another fee is enabled first with the given spacing.
        """
        factory = self.uniswap.v3_factory
        token0, token1 = sorted((base, quote), key=lambda t: int(t.address, 16))
        (spacing,) = self._v3_factory.decode_result(
            "feeAmountTickSpacing",
            self.call(factory, self._v3_factory.encode_call("feeAmountTickSpacing", fee)),
        )
        if spacing == 0:
            if tick_spacing is None:
                raise ValueError(f"fee {fee} is not enabled: pass its tick_spacing")
            enable = self._v3_factory.encode_call("enableFeeAmount", fee, tick_spacing)
            with self._own_block("enableFeeAmount"):
                self.send(factory, enable, what=f"enable fee {fee}")
            spacing = tick_spacing
        elif tick_spacing is not None and tick_spacing != spacing:
            raise ValueError(f"fee {fee} already has tick spacing {spacing}, not {tick_spacing}")
        sqrt_price_x96 = TokenPair.of(
            base_is_token0=base.address == token0.address,
            decimals0=token0.decimals,
            decimals1=token1.decimals,
        ).sqrt_price_x96(price)
        data = self._npm.encode_call(
            "createAndInitializePoolIfNecessary",
            token0.address,
            token1.address,
            fee,
            sqrt_price_x96,
        )
        with self._own_block("create V3 pool"):
            self.send(self.uniswap.position_manager, data, what=f"create V3 pool fee {fee}")
        (address,) = self._v3_factory.decode_result(
            "getPool",
            self.call(
                factory,
                self._v3_factory.encode_call("getPool", token0.address, token1.address, fee),
            ),
        )
        pool = V3Pool(address, token0, token1, fee, int(spacing), base, quote)
        if self.pool_state(pool).sqrt_price_x96 != sqrt_price_x96:
            raise DevChainError(f"{pool.name} already existed at another price")
        return pool

    def _sqrt_price_x96(self, pool: V3Pool) -> int:
        out = self.call(pool.address, self._v3_pool.encode_call("slot0"), block=self._read_tag())
        return int(self._v3_pool.decode_result("slot0", out)[0])

    def pool_state(self, pool: V3Pool) -> V3PoolState:
        """``slot0`` and ``liquidity`` (pending state inside an open block)."""
        tag = self._read_tag()
        slot0 = self._v3_pool.decode_result(
            "slot0", self.call(pool.address, self._v3_pool.encode_call("slot0"), block=tag)
        )
        (liquidity,) = self._v3_pool.decode_result(
            "liquidity", self.call(pool.address, self._v3_pool.encode_call("liquidity"), block=tag)
        )
        sqrt_price_x96 = int(slot0[0])
        if sqrt_price_x96 == 0:
            raise DevChainError(f"{pool.name} is not initialised")
        price = pool.token_pair.price_from_sqrt_price_x96(sqrt_price_x96)
        return V3PoolState(sqrt_price_x96, int(slot0[1]), int(liquidity), price)

    def add_liquidity_v3(
        self,
        pool: V3Pool,
        *,
        value: float,
        price_lower: float | None = None,
        price_upper: float | None = None,
        owner: str | None = None,
    ) -> V3Position:
        """Mint a position worth about ``value`` (in quote units) through the NPM.

        Without bounds the position is full range; with them it covers at least
        ``[price_lower, price_upper]`` (human prices, widened to the tick spacing).
        The liquidity is sized at the current pool price so principal ≈ ``value``;
        ``owner`` (default: the deployer) must hold the tokens. Mines its own block.
        """
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"value must be positive, got {value!r}")
        owner = checksum(owner) if owner else self.deployer
        if price_lower is None and price_upper is None:
            tick_lower, tick_upper = full_range_ticks(pool.tick_spacing)
        elif price_lower is not None and price_upper is not None:
            tick_lower, tick_upper = pool.token_pair.range_ticks(
                price_lower, price_upper, pool.tick_spacing
            )
        else:
            raise ValueError("give both price_lower and price_upper, or neither (full range)")
        state = self.pool_state(pool)
        sqrt_price = state.sqrt_price_x96 / Q96
        raw_p = sqrt_price * sqrt_price  # token1 raw per token0 raw
        # Raw token0 and token1 per unit of raw liquidity (whitepaper 6.29/6.30).
        per_l0, per_l1 = amounts_from_liquidity(
            1.0,
            raw_p,
            sqrt_ratio_at_tick(tick_lower) / Q96,
            sqrt_ratio_at_tick(tick_upper) / Q96,
        )
        quote_raw = value * 10.0**pool.quote.decimals
        value_token1_raw = quote_raw if pool.base_is_token0 else quote_raw * raw_p
        liquidity = value_token1_raw / (per_l0 * raw_p + per_l1)
        # A hair above the exact amounts, so the NPM's min(L0, L1) is the L we sized.
        amount0 = math.ceil(liquidity * per_l0 * (1 + 1e-9)) + 1 if per_l0 > 0 else 0
        amount1 = math.ceil(liquidity * per_l1 * (1 + 1e-9)) + 1 if per_l1 > 0 else 0
        npm = self.uniswap.position_manager
        for token in (pool.token0, pool.token1):
            self._ensure_allowance(token, owner, npm)
        params = (
            pool.token0.address,
            pool.token1.address,
            pool.fee,
            tick_lower,
            tick_upper,
            amount0,
            amount1,
            0,
            0,
            owner,
            NO_DEADLINE,
        )
        with self._own_block("add_liquidity_v3"):
            tx_hash = self.send(
                npm, self._npm.encode_call("mint", params), sender=owner, what="NPM mint"
            )
        minted = self._event(tx_hash, npm, self._npm, "IncreaseLiquidity")
        return V3Position(
            token_id=int(minted["tokenId"]),
            pool=pool,
            owner=owner,
            tick_lower=tick_lower,
            tick_upper=tick_upper,
            liquidity=int(minted["liquidity"]),
            amount0=int(minted["amount0"]),
            amount1=int(minted["amount1"]),
        )

    def _event(self, tx_hash: str, address: str, abi: Abi, name: str) -> dict[str, Any]:
        topic = abi.event_topic(name)
        for log in self.receipt(tx_hash)["logs"]:
            topics = [_from_hex(t) for t in log["topics"]]
            if checksum(log["address"]) == address and topics and topics[0] == topic:
                return abi.decode_event(name, topics, _from_hex(log["data"]))
        raise DevChainError(f"no {name} event from {address} in tx {tx_hash}")

    def position_amounts(self, position: V3Position) -> PositionAmounts:
        """What the NPM says ``position`` is worth now: principal and uncollected fees.

        A static call (from the owner) of the NPM's own ``multicall`` running
        ``decreaseLiquidity`` of all the liquidity the NPM holds for it now (read
        from ``positions``), then ``collect(max)``: the first returns the principal
        the pool would release, the second principal plus fees. Nothing is sent.
        Tokens already released by an earlier ``decreaseLiquidity`` but not yet
        collected count as fees (the NPM does not tell them apart).
        """
        npm = self.uniswap.position_manager
        tag = self._read_tag()
        info = self._npm.decode_result(
            "positions",
            self.call(npm, self._npm.encode_call("positions", position.token_id), block=tag),
        )
        liquidity = int(info[7])  # what the NPM holds now, not what was minted
        collect = self._npm.encode_call(
            "collect", (position.token_id, position.owner, MAX_UINT128, MAX_UINT128)
        )
        calls = [collect]
        if liquidity > 0:  # decreaseLiquidity(0) reverts
            decrease = self._npm.encode_call(
                "decreaseLiquidity", (position.token_id, liquidity, 0, 0, NO_DEADLINE)
            )
            calls.insert(0, decrease)
        out = self.call(
            npm, self._npm.encode_call("multicall", calls), sender=position.owner, block=tag
        )
        (results,) = self._npm.decode_result("multicall", out)
        amount0, amount1 = (
            self._npm.decode_result("decreaseLiquidity", results[0]) if liquidity > 0 else (0, 0)
        )
        total0, total1 = self._npm.decode_result("collect", results[-1])
        pool = position.pool
        fees0, fees1 = int(total0) - int(amount0), int(total1) - int(amount1)
        base_raw, quote_raw = (amount0, amount1) if pool.base_is_token0 else (amount1, amount0)
        base_fee_raw, quote_fee_raw = (fees0, fees1) if pool.base_is_token0 else (fees1, fees0)
        return PositionAmounts(
            token_id=position.token_id,
            amount0=int(amount0),
            amount1=int(amount1),
            fees0=fees0,
            fees1=fees1,
            base=pool.base.to_human(int(base_raw)),
            quote=pool.quote.to_human(int(quote_raw)),
            base_fees=pool.base.to_human(base_fee_raw),
            quote_fees=pool.quote.to_human(quote_fee_raw),
        )

    # --- V2 pairs -----------------------------------------------------------------

    def create_v2_pair(self, base: Token, quote: Token) -> V2Pair:
        """Create an (empty) V2 pair; seed it with :meth:`add_liquidity_v2`."""
        factory = self.uniswap.v2_factory
        data = self._v2_factory.encode_call("createPair", base.address, quote.address)
        with self._own_block("create V2 pair"):
            self.send(factory, data, what="create V2 pair")
        (address,) = self._v2_factory.decode_result(
            "getPair",
            self.call(
                factory, self._v2_factory.encode_call("getPair", base.address, quote.address)
            ),
        )
        token0, token1 = sorted((base, quote), key=lambda t: int(t.address, 16))
        return V2Pair(address, token0, token1, base, quote)

    def pair_state(self, pair: V2Pair) -> V2PairState:
        """Reserves and price (pending state inside an open block); raises if empty."""
        reserve0, reserve1 = self._reserves(pair)
        if reserve0 == 0 or reserve1 == 0:
            raise DevChainError(f"{pair.name} has no liquidity")
        return V2PairState(
            reserve0, reserve1, pair.token_pair.price_from_reserves(reserve0, reserve1)
        )

    def _reserves(self, pair: V2Pair) -> tuple[int, int]:
        out = self.call(
            pair.address, self._v2_pair.encode_call("getReserves"), block=self._read_tag()
        )
        reserve0, reserve1, _ = self._v2_pair.decode_result("getReserves", out)
        return int(reserve0), int(reserve1)

    def add_liquidity_v2(
        self,
        pair: V2Pair,
        *,
        value: float,
        price: float | None = None,
        owner: str | None = None,
    ) -> int:
        """Add liquidity worth about ``value`` (quote units); returns LP tokens minted.

        Half the value in each token, at ``price`` for an empty pair (required
        then) or at the reserves' price otherwise (``price`` must then be None).
        Tokens are transferred to the pair and ``mint`` is called, in one block.
        """
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"value must be positive, got {value!r}")
        owner = checksum(owner) if owner else self.deployer
        reserve0, reserve1 = self._reserves(pair)
        if reserve0 == 0 and reserve1 == 0:
            if price is None:
                raise ValueError(f"{pair.name} is empty: give the initial price")
            quote_raw = pair.quote.to_raw(value / 2)
            base_raw = pair.base.to_raw(value / 2 / price)
            amount0, amount1 = (
                (base_raw, quote_raw) if pair.base_is_token0 else (quote_raw, base_raw)
            )
        else:
            if price is not None:
                raise ValueError(f"{pair.name} has reserves: liquidity goes in at their price")
            half_quote = pair.quote.to_raw(value / 2)
            if pair.base_is_token0:
                amount1 = half_quote
                amount0 = half_quote * reserve0 // reserve1
            else:
                amount0 = half_quote
                amount1 = half_quote * reserve1 // reserve0
        if amount0 <= 0 or amount1 <= 0:
            raise ValueError(f"value {value} is too small to add to {pair.name}")
        with self._own_block("add_liquidity_v2"):
            self.send(
                pair.token0.address,
                self._erc20.encode_call("transfer", pair.address, amount0),
                sender=owner,
                what=f"transfer {pair.token0.symbol} to pair",
            )
            self.send(
                pair.token1.address,
                self._erc20.encode_call("transfer", pair.address, amount1),
                sender=owner,
                what=f"transfer {pair.token1.symbol} to pair",
            )
            tx_hash = self.send(
                pair.address, self._v2_pair.encode_call("mint", owner), sender=owner, what="V2 mint"
            )
        minted = [
            event
            for event in self._events(tx_hash, pair.address, self._v2_pair, "Transfer")
            if checksum(event["to"]) == owner
        ]
        if len(minted) != 1:
            raise DevChainError(f"V2 mint in {tx_hash}: expected one LP transfer to the owner")
        return int(minted[0]["value"])

    def _events(self, tx_hash: str, address: str, abi: Abi, name: str) -> list[dict[str, Any]]:
        topic = abi.event_topic(name)
        found = []
        for log in self.receipt(tx_hash)["logs"]:
            topics = [_from_hex(t) for t in log["topics"]]
            if checksum(log["address"]) == address and topics and topics[0] == topic:
                found.append(abi.decode_event(name, topics, _from_hex(log["data"])))
        return found

    # --- swaps --------------------------------------------------------------------

    def price(self, pool: V3Pool | V2Pair) -> float:
        """Human price of ``pool.base`` in ``pool.quote``."""
        if isinstance(pool, V3Pool):
            return self.pool_state(pool).price
        return self.pair_state(pool).price

    def swap_request(
        self,
        pool: V3Pool,
        amount_in_raw: int,
        *,
        zero_for_one: bool,
        sender: str | None = None,
        sqrt_price_limit_x96: int | None = None,
    ) -> TxRequest:
        """The unsent ``exactInputSingle`` request of a V3 swap (e.g. for :meth:`reorg`).

        So that the request can execute later, the router's allowance for the input
        token is made now if missing (an approval transaction, mined at once or
        joining the open block).
        """
        if amount_in_raw <= 0:
            raise ValueError(f"amount_in_raw must be positive, got {amount_in_raw}")
        token_in, token_out = (
            (pool.token0, pool.token1) if zero_for_one else (pool.token1, pool.token0)
        )
        sender = checksum(sender) if sender else self.deployer
        with self._operation():
            self._ensure_allowance(token_in, sender, self.uniswap.swap_router)
        if sqrt_price_limit_x96 is None:
            sqrt_price_limit_x96 = MIN_SQRT_RATIO + 1 if zero_for_one else MAX_SQRT_RATIO - 1
        params = (
            token_in.address,
            token_out.address,
            pool.fee,
            sender,
            NO_DEADLINE,
            min(amount_in_raw, MAX_EXACT_INPUT),
            0,
            sqrt_price_limit_x96,
        )
        data = self._router.encode_call("exactInputSingle", params)
        return {"from": sender, "to": self.uniswap.swap_router, "data": _hex(data)}

    def swap(
        self,
        pool: V3Pool | V2Pair,
        amount_in_raw: int,
        *,
        zero_for_one: bool,
        sender: str | None = None,
    ) -> str:
        """Swap exactly ``amount_in_raw`` of token0 (``zero_for_one``) or token1.

        V3 goes through SwapRouter ``exactInputSingle`` with no price limit; V2
        transfers the input to the pair and calls ``swap`` for the exact payout.
        ``sender`` (default: the deployer) must hold the input token; approvals are
        made as needed. Returns the hash of the swap transaction.
        """
        if amount_in_raw <= 0:
            raise ValueError(f"amount_in_raw must be positive, got {amount_in_raw}")
        sender = checksum(sender) if sender else self.deployer
        with self._operation():
            if isinstance(pool, V2Pair):
                return self._swap_v2(pool, amount_in_raw, zero_for_one, sender)
            return self._swap_v3(pool, amount_in_raw, zero_for_one, sender, None)

    def _swap_v3(
        self,
        pool: V3Pool,
        amount_in_raw: int,
        zero_for_one: bool,
        sender: str,
        sqrt_price_limit_x96: int | None,
    ) -> str:
        request = self.swap_request(
            pool,
            amount_in_raw,
            zero_for_one=zero_for_one,
            sender=sender,
            sqrt_price_limit_x96=sqrt_price_limit_x96,
        )
        return self.send(
            request["to"],
            _from_hex(request["data"]),
            sender=sender,
            what=f"swap on {pool.name}",
            gas=GAS_V3_SWAP,
        )

    def _swap_v2(self, pair: V2Pair, amount_in_raw: int, zero_for_one: bool, sender: str) -> str:
        reserve0, reserve1 = self._reserves(pair)
        if zero_for_one:
            token_in = pair.token0
            out0, out1 = 0, v2_amount_out(amount_in_raw, reserve0, reserve1)
        else:
            token_in = pair.token1
            out0, out1 = v2_amount_out(amount_in_raw, reserve1, reserve0), 0
        if out0 == 0 and out1 == 0:
            raise ValueError(f"{amount_in_raw} raw {token_in.symbol} buys nothing on {pair.name}")
        self.send(
            token_in.address,
            self._erc20.encode_call("transfer", pair.address, amount_in_raw),
            sender=sender,
            what=f"transfer {token_in.symbol} to {pair.name}",
            gas=GAS_ERC20,
        )
        data = self._v2_pair.encode_call("swap", out0, out1, sender, b"")
        return self.send(
            pair.address, data, sender=sender, what=f"swap on {pair.name}", gas=GAS_V2_SWAP
        )

    def swap_to_price(
        self, pool: V3Pool | V2Pair, price: float, *, sender: str | None = None
    ) -> str | None:
        """Move ``pool`` to ``price`` (base in quote) with one real swap; returns its hash.

        V3: ``exactInputSingle`` with an unbounded input and ``sqrtPriceLimitX96`` at
        the target, so the pool stops exactly there (the router only pulls what the
        pool used). V2: the exact constant-product input with the 0.3% fee, found
        by :func:`rules.uniswap.v2_amount_in_for_price`.
        Returns None (and sends nothing) when the pool is already at the target
        (V2: when the move is smaller than one base unit of the output token).
        """
        sender = checksum(sender) if sender else self.deployer
        with self._operation():
            if isinstance(pool, V2Pair):
                return self._swap_v2_to_price(pool, price, sender)
            target = pool.token_pair.sqrt_price_x96(price)
            current = self._sqrt_price_x96(pool)
            if target == current:
                return None
            # Selling token0 lowers the token1-per-token0 price, so it is the way down.
            zero_for_one = target < current
            return self._swap_v3(pool, MAX_EXACT_INPUT, zero_for_one, sender, target)

    def _swap_v2_to_price(self, pair: V2Pair, price: float, sender: str) -> str | None:
        reserve0, reserve1 = self._reserves(pair)
        if reserve0 == 0 or reserve1 == 0:
            raise DevChainError(f"{pair.name} has no liquidity")
        target = pair.token_pair.raw_price(price)
        current = Fraction(reserve1, reserve0)
        if target == current:
            return None
        zero_for_one = target < current
        reserve_in, reserve_out = (reserve0, reserve1) if zero_for_one else (reserve1, reserve0)
        ratio = target if zero_for_one else 1 / target
        amount_in = v2_amount_in_for_price(reserve_in, reserve_out, ratio)
        if v2_amount_out(amount_in, reserve_in, reserve_out) == 0:
            return None  # closer than one base unit of the output: already there
        return self._swap_v2(pair, amount_in, zero_for_one, sender)
