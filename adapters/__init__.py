"""Chain adapters: where samples come from.

- :mod:`adapters.evm`: EVM pools read over JSON-RPC (Multicall3, logs, new heads, reorgs).
- :mod:`adapters.replay`: historical data files turned into tables of samples.

Library exceptions never leave this package: they are converted into
:class:`adapters.errors.TransientError` or :class:`adapters.errors.FatalError`.
"""
