"""``alvh backtest``: real history through the same pipeline as the daemon.

:mod:`daemon.backtest.run` reads the data (through :mod:`adapters.replay`), steps the
pipeline over whole tables of samples and writes ``alerts.jsonl``;
:mod:`~daemon.backtest.report` values the LP and its hedges against baselines
(``report.json``, the summary table); :mod:`~daemon.backtest.chart` draws the chart.
"""
