"""alvh's pure core: bars, indicators, volatility proxies, the layer rules engine and hedge math.

Nothing in this package does I/O or reads a clock: time is always an argument.
It never imports asyncio, web3, aiomqtt, structlog or sqlite3
(``tests/test_purity.py`` checks this).
"""
