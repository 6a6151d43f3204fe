"""Features: samples -> bars -> indicators and volatility proxies, per pool.

:mod:`~rules.features.engine` holds the state and is the only entry point;
:mod:`~rules.features.kernels` is the one implementation of bars, indicators and every
feature (compiled loops, run by the live daemon one step at a time and by the backtest
over tables); :mod:`~rules.features.params` the settings (no compiler: a config loads
without it); :mod:`~rules.features.bars` and :mod:`~rules.features.proxies` the rules and
definitions the loops keep; :mod:`~rules.features.mev` classifies swaps upstream.
"""
