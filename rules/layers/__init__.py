"""Layers: one alert state machine per (layer, pool).

:mod:`~rules.layers.engine` holds the transition table, the state and the entry points.
"""
