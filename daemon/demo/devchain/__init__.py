"""Local dev chain harness for the demo and the integration tests.

It starts anvil (:class:`Anvil`), deploys real compiled contracts on it
(OpenZeppelin 4 tokens with any decimals, Uniswap V3 factory/position
manager/router, Uniswap V2 factory/pairs, Multicall3) and drives them
(:class:`DevChain`): liquidity, swaps to a target price, explicit mining with
exact timestamps, snapshots and reorgs. :func:`deploy_demo_market` builds the
WETH/USDC market the demo and the tests share.

Guarantees: prices are human prices of a pool's ``base`` in its ``quote``;
blocks are mined only when the harness (or its caller) asks; every failure is a
:class:`DevChainError`. This is a development tool: it sends transactions from
anvil's unlocked accounts and is never used by the daemon at run time.
"""

from daemon.demo.devchain.anvil import ANVIL_ENV, Anvil, find_anvil
from daemon.demo.devchain.artifacts import MULTICALL3_ADDRESS, patch_decimals
from daemon.demo.devchain.chain import BlockBuilder, DevChain, TxRequest
from daemon.demo.devchain.errors import (
    AnvilNotFoundError,
    AnvilStartError,
    ArtifactError,
    DevChainError,
    RpcError,
    TxFailedError,
)
from daemon.demo.devchain.handles import (
    Block,
    Pool,
    PositionAmounts,
    Token,
    UniswapDeployment,
    V2Pair,
    V2PairState,
    V3Pool,
    V3PoolState,
    V3Position,
)
from daemon.demo.devchain.market import DemoMarket, deploy_demo_market

__all__ = [
    "ANVIL_ENV",
    "MULTICALL3_ADDRESS",
    "Anvil",
    "AnvilNotFoundError",
    "AnvilStartError",
    "ArtifactError",
    "Block",
    "BlockBuilder",
    "DemoMarket",
    "DevChain",
    "DevChainError",
    "Pool",
    "PositionAmounts",
    "RpcError",
    "Token",
    "TxFailedError",
    "TxRequest",
    "UniswapDeployment",
    "V2Pair",
    "V2PairState",
    "V3Pool",
    "V3PoolState",
    "V3Position",
    "deploy_demo_market",
    "find_anvil",
    "patch_decimals",
]
