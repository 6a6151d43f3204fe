"""Chain adapters: EVM pools over web3.py, historical replay from files, and the
local dev chain (anvil + real Uniswap contracts) used by the demo and the tests.

Library exceptions never leave this package: they are converted into
:class:`adapters.errors.TransientError` or :class:`adapters.errors.FatalError`.
"""
