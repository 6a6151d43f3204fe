"""Layers: one alert state machine per (layer, pool).

:mod:`~rules.layers.machine` is the state machine (its rules, the transition table, the
guard and action functions and the one compiled loop); :mod:`~rules.layers.engine` is its
entry point (expressions into truths, event rows into transitions, save and restore).
"""
