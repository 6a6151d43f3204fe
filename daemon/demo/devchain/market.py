"""The demo market: WETH/USDC on Uniswap V3 (0.05% and 0.3%) and V2, ready to trade.

Guarantees of :func:`deploy_demo_market` on a fresh node:
- WETH has 18 decimals, USDC 6 (patched OpenZeppelin 4 tokens); the deployer
  (``chain.deployer``) holds the rest of both supplies, enough for any replay;
- every pool starts at ``eth_price`` USDC per WETH (V3 exactly at the floor sqrt
  price, V2 at reserves rounded to base units, ~1e-15 relative), whatever the
  token address order;
- liquidity, all owned by the deployer, in quote (USDC) value, ``depth`` = D:
  V3 0.05%: full range D and ±10% around the price D/2;
  V3 0.3%: full range D/4 and ±25% D/8; V2: D/4;
- Multicall3 answers at its canonical address;
- block timestamps advance by ``block_interval`` seconds per block from here on
  (unless None), so the same calls give the same blocks;
- the returned :class:`DemoMarket` holds everything a config needs
  (:meth:`DemoMarket.to_dict` is JSON-ready).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from daemon.demo.devchain.chain import DevChain
from daemon.demo.devchain.handles import (
    Token,
    UniswapDeployment,
    V2Pair,
    V3Pool,
    V3Position,
    checksum,
)

#: Whole-token supplies of the demo tokens: far beyond what any replay moves.
WETH_SUPPLY = 10**9
USDC_SUPPLY = 10**13


@dataclass(frozen=True, slots=True)
class DemoMarket:
    """What :func:`deploy_demo_market` deployed."""

    chain_id: int
    rpc_url: str
    multicall3: str
    uniswap: UniswapDeployment
    weth: Token
    usdc: Token
    v3_500: V3Pool
    v3_3000: V3Pool
    v2: V2Pair
    positions: tuple[V3Position, ...]
    eth_price: float
    start_block: int
    start_timestamp: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "multicall3", checksum(self.multicall3))
        if self.chain_id <= 0 or not self.eth_price > 0:
            raise ValueError(f"DemoMarket needs chain_id > 0 and eth_price > 0: {self!r}")
        for pool in self.pools:
            if pool.base != self.weth or pool.quote != self.usdc:
                raise ValueError(f"{pool.name}: demo pools price WETH in USDC")

    @property
    def pools(self) -> tuple[V3Pool | V2Pair, ...]:
        """The three pools, V3 0.05% first."""
        return (self.v3_500, self.v3_3000, self.v2)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (addresses checksummed, fees in hundredths of a bp)."""
        tokens = {
            t.symbol: {"address": t.address, "decimals": t.decimals} for t in (self.weth, self.usdc)
        }
        pools = [
            {
                "name": pool.name,
                "address": pool.address,
                "kind": "uniswap_v3" if isinstance(pool, V3Pool) else "uniswap_v2",
                "fee": pool.fee,
                "token0": pool.token0.symbol,
                "token1": pool.token1.symbol,
                "base": pool.base.symbol,
                "quote": "token0" if pool.quote == pool.token0 else "token1",
            }
            for pool in self.pools
        ]
        return {
            "chain_id": self.chain_id,
            "rpc_url": self.rpc_url,
            "multicall3": self.multicall3,
            "uniswap": self.uniswap.to_dict(),
            "tokens": tokens,
            "pools": pools,
            "positions": [
                {
                    "token_id": p.token_id,
                    "pool": p.pool.address,
                    "tick_lower": p.tick_lower,
                    "tick_upper": p.tick_upper,
                    "liquidity": str(p.liquidity),
                }
                for p in self.positions
            ],
            "eth_price": self.eth_price,
            "start_block": self.start_block,
            "start_timestamp": self.start_timestamp,
        }


def deploy_demo_market(
    chain: DevChain,
    *,
    eth_price: float = 3000.0,
    depth: float = 20_000_000.0,
    block_interval: int | None = 12,
) -> DemoMarket:
    """Deploy the demo market on ``chain`` (see the module docstring for what it holds)."""
    if not eth_price > 0 or not depth > 0:
        raise ValueError("eth_price and depth must be positive")
    if block_interval is not None:
        chain.set_block_timestamp_interval(block_interval)
    multicall3 = chain.install_multicall3()
    weth = chain.deploy_token("WETH", 18, WETH_SUPPLY, name="Wrapped Ether")
    usdc = chain.deploy_token("USDC", 6, USDC_SUPPLY, name="USD Coin")
    uniswap = chain.deploy_uniswap(weth9=weth.address)

    v3_500 = chain.create_v3_pool(weth, usdc, 500, eth_price)
    v3_3000 = chain.create_v3_pool(weth, usdc, 3000, eth_price)
    positions = (
        chain.add_liquidity_v3(v3_500, value=depth),
        chain.add_liquidity_v3(
            v3_500, value=depth / 2, price_lower=eth_price * 0.9, price_upper=eth_price * 1.1
        ),
        chain.add_liquidity_v3(v3_3000, value=depth / 4),
        chain.add_liquidity_v3(
            v3_3000, value=depth / 8, price_lower=eth_price * 0.75, price_upper=eth_price * 1.25
        ),
    )
    v2 = chain.create_v2_pair(weth, usdc)
    chain.add_liquidity_v2(v2, value=depth / 4, price=eth_price)

    head = chain.latest_block()
    return DemoMarket(
        chain_id=chain.chain_id,
        rpc_url=chain.url,
        multicall3=multicall3,
        uniswap=uniswap,
        weth=weth,
        usdc=usdc,
        v3_500=v3_500,
        v3_3000=v3_3000,
        v2=v2,
        positions=positions,
        eth_price=eth_price,
        start_block=head.number,
        start_timestamp=head.timestamp,
    )
