"""Benchmark: streaming feature engine vs recomputing indicators every bar.

Run: ``.venv/bin/python bench/bench_features.py [--pools 10000] [--bars 200]``

Measures, in one run and on the same random-walk bars:

1. ``FeatureEngine.update`` with every pool sampled once per bar (each call closes one
   bar per pool, commits RSI/MACD/BBANDS and every proxy, and peeks the forming bar):
   the median wall time per bar, after a warm-up long enough to fill every window. Also
   the daemon's case: one update per block (12 s) for 3, 20 and 200 pools, inside a bar
   and at a bar close (the per-call cost of the one compiled loop, Python included).
2. TA-Lib recomputing RSI, MACD and BBANDS over the last 500 bars of every pool at every
   bar (what a stateless implementation does).
3. pandas recomputing the same indicators and the rolling proxies (sigma, realized
   volatility, 24h volume) with ``ewm``/``rolling`` over a 500-bar window, vectorised over
   pools as DataFrame columns.

The baselines are measured on a subset of the pools and extrapolated linearly to the full
count (both are linear in the number of pools); the output says so.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import talib

# The checkout's own code, not whatever alvh the interpreter has installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules.features.engine import FeatureEngine, FeatureParams

BAR = 300  # 5-minute bars, the config example's default
WINDOW = 500  # bars a recomputing implementation looks back over


def _prices(n_bars: int, n_pools: int, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, 0.002, size=(n_bars, n_pools))
    start = rng.uniform(0.5, 3000.0, size=n_pools)
    return start * np.exp(np.cumsum(steps, axis=0))


def bench_engine(prices: np.ndarray, warmup: int, timed: int) -> list[float]:
    n_pools = prices.shape[1]
    rng = np.random.default_rng(11)
    engine = FeatureEngine(FeatureParams(bar_interval=BAR), np.full(n_pools, 0.0005))
    rows = np.arange(n_pools, dtype=np.int64)
    tvl = rng.uniform(1e5, 1e8, n_pools)
    tick_tvl = tvl * 0.01
    swaps = rng.integers(0, 20, n_pools).astype(np.int64)
    mev = (swaps // 10).astype(np.int64)
    volumes = rng.uniform(0.0, 1e5, size=(warmup + timed, n_pools))
    times = []
    for t in range(warmup + timed):
        start = time.perf_counter()
        engine.update(t * BAR + 17, rows, prices[t], tvl, tick_tvl, volumes[t], swaps, mev)
        times.append(time.perf_counter() - start)
    return times[warmup:]


def bench_engine_peek(prices: np.ndarray, repeats: int) -> float:
    """Median time of an update that stays inside the forming bar (a block, not a bar close)."""
    n_pools = prices.shape[1]
    engine = FeatureEngine(FeatureParams(bar_interval=BAR), np.full(n_pools, 0.0005))
    rows = np.arange(n_pools, dtype=np.int64)
    ones = np.ones(n_pools)
    ints = np.ones(n_pools, dtype=np.int64)
    zeros = np.zeros(n_pools, dtype=np.int64)
    for t in range(400):
        engine.update(t * BAR, rows, prices[t], ones * 1e6, ones * 1e4, ones, ints, zeros)
    base = 400 * BAR
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        engine.update(base + i, rows, prices[400], ones * 1e6, ones * 1e4, ones, ints, zeros)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_blocks(n_pools: int, blocks: int = 3000, block: int = 12) -> tuple[float, float]:
    """Median seconds of an update per block for ``n_pools`` pools: (inside a bar, at the
    first block of a bar)."""
    rng = np.random.default_rng(3)
    engine = FeatureEngine(FeatureParams(bar_interval=BAR), np.full(n_pools, 0.003))
    rows = np.arange(n_pools, dtype=np.int64)
    prices = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, (blocks, n_pools)), axis=0))
    ones = np.ones(n_pools)
    counts = np.ones(n_pools, dtype=np.int64)
    zeros = np.zeros(n_pools, dtype=np.int64)
    inside, closing = [], []
    for i in range(blocks):
        start = time.perf_counter()
        engine.update(i * block, rows, prices[i], ones * 1e6, ones * 1e4, ones, counts, zeros)
        elapsed = time.perf_counter() - start
        if i >= blocks // 3:  # past the warm-up
            (closing if (i * block) % BAR < block else inside).append(elapsed)
    return statistics.median(inside), statistics.median(closing)


def bench_talib(prices: np.ndarray, n_pools: int, bars: int) -> float:
    """Median time per bar to recompute RSI, MACD and BBANDS over WINDOW bars per pool."""
    times = []
    end0 = prices.shape[0] - bars
    for b in range(bars):
        window = np.ascontiguousarray(prices[end0 + b - WINDOW : end0 + b, :n_pools].T)
        start = time.perf_counter()
        for series in window:
            talib.RSI(series, 14)
            talib.MACD(series, 12, 26, 9)
            talib.BBANDS(series, 20, 2.0, 2.0, talib.MA_Type.SMA)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_pandas(prices: np.ndarray, n_pools: int, bars: int) -> float:
    """Median time per bar to recompute the indicators and rolling proxies with pandas."""
    rng = np.random.default_rng(5)
    volume = pd.DataFrame(rng.uniform(0.0, 1e5, size=(WINDOW, n_pools)))
    times = []
    end0 = prices.shape[0] - bars
    for b in range(bars):
        close = pd.DataFrame(prices[end0 + b - WINDOW : end0 + b, :n_pools])
        start = time.perf_counter()
        delta = close.diff()
        gain = delta.clip(lower=0.0).ewm(alpha=1 / 14, adjust=False).mean()
        loss = (-delta).clip(lower=0.0).ewm(alpha=1 / 14, adjust=False).mean()
        _rsi = 100.0 * gain / (gain + loss)
        fast = close.ewm(span=12, adjust=False).mean()
        slow = close.ewm(span=26, adjust=False).mean()
        line = fast - slow
        signal = line.ewm(span=9, adjust=False).mean()
        _hist = line - signal
        mid = close.rolling(20).mean()
        dev = close.rolling(20).std(ddof=0)
        _upper, _lower = mid + 2 * dev, mid - 2 * dev
        log_ret = pd.DataFrame(np.log(close.to_numpy())).diff()
        _move_sigma = log_ret / log_ret.shift(1).rolling(48).std()
        _realized = close.pct_change().rolling(48).std(ddof=0) * np.sqrt(365 * 86400 / BAR)
        _volume_24h = volume.rolling(288, min_periods=1).sum()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=10_000)
    parser.add_argument("--bars", type=int, default=200, help="timed bars for the engine")
    parser.add_argument("--talib-pools", type=int, default=500)
    parser.add_argument("--pandas-pools", type=int, default=1000)
    args = parser.parse_args()
    warmup = 600  # > 288 bars: the 24h windows are full and every indicator is past warm-up
    prices = _prices(warmup + args.bars + 1, args.pools)

    print(
        f"alvh feature engine benchmark: {args.pools:,} pools, {BAR // 60}-minute bars, "
        f"{args.bars} timed bars after {warmup} warm-up bars"
    )
    engine_times = bench_engine(prices, warmup, args.bars)
    engine_ms = statistics.median(engine_times) * 1e3
    p90 = float(np.percentile(engine_times, 90)) * 1e3
    print(
        f"  streaming FeatureEngine.update, all pools, one bar close + peek per call: "
        f"median {engine_ms:.3f} ms/bar (p90 {p90:.3f} ms)"
    )
    peek_ms = bench_engine_peek(prices, 50) * 1e3
    print(f"  same engine, an update inside the forming bar (no close): median {peek_ms:.3f} ms")
    for n in (3, 20, 200):
        inside, closing = bench_blocks(n)
        print(
            f"  the daemon's step, {n} pools, one update per 12-s block: median "
            f"{inside * 1e6:.1f} us inside a bar, {closing * 1e6:.1f} us at a bar close"
        )

    talib_pools = min(args.talib_pools, args.pools)
    talib_sub = bench_talib(prices, talib_pools, 5)
    talib_ms = talib_sub * args.pools / talib_pools * 1e3
    print(
        f"  TA-Lib recompute of RSI+MACD+BBANDS over {WINDOW} bars per pool per bar: "
        f"{talib_sub * 1e3:.1f} ms/bar measured on {talib_pools:,} pools, "
        f"extrapolated to {args.pools:,} pools: {talib_ms:.0f} ms/bar"
    )
    pandas_pools = min(args.pandas_pools, args.pools)
    pandas_sub = bench_pandas(prices, pandas_pools, 5)
    pandas_ms = pandas_sub * args.pools / pandas_pools * 1e3
    print(
        f"  pandas recompute (ewm/rolling: RSI, MACD, BBANDS, sigma, realized vol, 24h volume) "
        f"over {WINDOW} bars: {pandas_sub * 1e3:.1f} ms/bar measured on {pandas_pools:,} pools, "
        f"extrapolated to {args.pools:,} pools: {pandas_ms:.0f} ms/bar"
    )
    print(
        f"  ratios: TA-Lib recompute / streaming = {talib_ms / engine_ms:.0f}x, "
        f"pandas recompute / streaming = {pandas_ms / engine_ms:.0f}x"
    )
    verdict = "met" if engine_ms <= 2.0 else "NOT met"
    print(f"  target <= 2 ms/bar for 10,000 pools: {verdict} ({engine_ms:.3f} ms)")


if __name__ == "__main__":
    main()
