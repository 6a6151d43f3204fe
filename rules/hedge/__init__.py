"""Hedge math: the LP position (:mod:`~rules.hedge.lp`), option pricing
(:mod:`~rules.hedge.options`) and the advice attached to alerts
(:mod:`~rules.hedge.advice`)."""
