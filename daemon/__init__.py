"""The ``alvh`` programs around the pure core (:mod:`rules`).

- :mod:`daemon.cli`: the command line; :mod:`daemon.config`: the TOML config, parsed
  once into typed objects shared by every command; :mod:`daemon.check`: ``check-config``.
- :mod:`daemon.service`: ``alvh run``, the long-running daemon (chains, MQTT, outbox,
  HTTP, silences, Home Assistant).
- :mod:`daemon.backtest`: ``alvh backtest``, history through the same pipeline, reports.
- :mod:`daemon.demo`: ``alvh demo``, a local chain with real AMM contracts replaying a
  real price path, a local broker and the daemon; also the harness the tests use.
"""

__version__ = "0.1.0"
