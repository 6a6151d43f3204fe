"""EVM chains: :mod:`~adapters.evm.rpc` (JSON-RPC with failover),
:mod:`~adapters.evm.ws` (``eth_subscribe newHeads``) and :mod:`~adapters.evm.chain`
(pool metadata, one Multicall3 round trip per block, Swap logs, reorgs)."""
