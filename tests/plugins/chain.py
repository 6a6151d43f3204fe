"""Pytest fixtures for tests against a real anvil chain.

- ``anvil_bin`` (session): the anvil executable; the test FAILS (never skips) with
  the install hint when it is missing.
- ``anvil`` (function): a fresh :class:`~daemon.demo.devchain.Anvil` on a free port,
  mining on request, genesis at :data:`GENESIS_TIMESTAMP`; stopped after the test.
- ``devchain_module`` (module): one anvil with the demo market deployed
  (:func:`~daemon.demo.devchain.deploy_demo_market`), shared by a test module.
- ``devchain`` (function): that shared chain, snapshotted before the test and
  reverted after it, so every test starts from the same freshly deployed market
  (same state, same head block, same clock).

Tests that stop, kill or otherwise break the node take ``anvil`` and deploy what
they need themselves, never ``devchain``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon.demo.devchain import (
    Anvil,
    AnvilNotFoundError,
    DemoMarket,
    DevChain,
    deploy_demo_market,
    find_anvil,
)

#: Genesis timestamp of every fixture chain (2023-11-14T22:13:20Z).
GENESIS_TIMESTAMP = 1_700_000_000
#: Seconds between blocks on the demo chain unless a test mines at a given time.
BLOCK_INTERVAL = 12


@dataclass(frozen=True, slots=True)
class DemoChain:
    """A running anvil, a :class:`DevChain` on it and the deployed demo market."""

    anvil: Anvil
    chain: DevChain
    market: DemoMarket


@pytest.fixture(scope="session")
def anvil_bin() -> Path:
    """Path of the anvil binary; fails the test with the install hint if absent."""
    try:
        return find_anvil()
    except AnvilNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def anvil(anvil_bin: Path) -> Iterator[Anvil]:
    """A fresh anvil for one test (mining on request), stopped afterwards."""
    with Anvil(binary=anvil_bin, timestamp=GENESIS_TIMESTAMP) as node:
        yield node


@pytest.fixture(scope="module")
def devchain_module(anvil_bin: Path) -> Iterator[DemoChain]:
    """One anvil with the demo market, shared by the tests of a module."""
    with Anvil(binary=anvil_bin, timestamp=GENESIS_TIMESTAMP) as node:
        chain = DevChain(node.url)
        market = deploy_demo_market(chain, block_interval=BLOCK_INTERVAL)
        try:
            yield DemoChain(node, chain, market)
        finally:
            chain.close()


@pytest.fixture
def devchain(devchain_module: DemoChain) -> Iterator[DemoChain]:
    """The module's demo chain, reverted to its freshly deployed state after the test."""
    chain = devchain_module.chain
    snapshot = chain.snapshot()
    yield devchain_module
    chain.revert(snapshot)
    chain.set_block_timestamp_interval(BLOCK_INTERVAL)  # a test may have changed it
