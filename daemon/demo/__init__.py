"""``alvh demo``: the local end-to-end run, and the harness the integration tests share.

:mod:`daemon.demo.devchain` starts anvil and deploys real compiled AMM contracts on it;
:mod:`~daemon.demo.localbroker` starts a local Mosquitto; :mod:`~daemon.demo.run` replays
a real price path as swaps while ``alvh run`` follows the chain. Development tools: the
daemon never imports this package.
"""
