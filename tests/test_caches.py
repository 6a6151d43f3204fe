"""The daemon's memoised helpers stay small however many distinct keys a long run sees.

A daemon formats a new time at every block, decodes swap logs naming ever new senders
and recipients, and reads ticks that wander: caches sized for a backtest's hit rate
(65,536 entries) held 12-18 MiB each once full, which showed as RSS creeping for the
first hours of a soak. Each cache here is fed 45,000 distinct keys and must hold a few
MiB at most, the same after 15,000 keys as after 45,000.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from adapters.evm import chain as evm
from rules.durations import iso_utc

CACHES: dict[str, tuple[Any, Callable[[int], Any]]] = {
    "rules.durations.iso_utc": (iso_utc, lambda i: 1_700_000_000 + 12 * i),
    "adapters.evm.chain._checksum": (evm._checksum, lambda i: f"0x{i * 7919 + 1:040x}"),
    "adapters.evm.chain._sqrt_at_tick": (evm._sqrt_at_tick, lambda i: i - 10_000),
}


@pytest.mark.parametrize("name", sorted(CACHES))
def test_a_cache_fed_distinct_keys_stays_small(name: str) -> None:
    cached, key_of = CACHES[name]
    cached.cache_clear()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        held = []
        for i in range(45_000):
            cached(key_of(i))
            if i % 15_000 == 14_999:
                held.append(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()
        cached.cache_clear()
    # Bounded and small: at most a few MiB once full, and no growth once it is.
    assert held[-1] < 3 * 2**20, f"{name} holds {held[-1] / 2**20:.2f} MiB"
    assert held[-1] - held[0] < 256 * 1024, f"{name} grew {held} bytes"
