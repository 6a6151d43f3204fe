"""Features: samples -> bars -> indicators and volatility proxies, per pool.

:mod:`~rules.features.engine` holds the state and is the only entry point;
:mod:`~rules.features.kernels` is the one implementation of every feature (compiled
loops, used by the live daemon one step at a time and by the backtest over tables);
:mod:`~rules.features.mev` classifies swaps (sandwiches, reverted moves) upstream.
"""
