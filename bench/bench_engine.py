"""Layer engine benchmark: the three DESIGN.md layers over 10,000 pools per bar.

Prints the median time per evaluation of ``LayerEngine.evaluate`` (expressions +
the compiled state machine, ``rules.layers.machine.steps`` + transitions), next to a
baseline measured in the same run: the same state machine written as a plain per-pool
Python loop (what an engine without compiled or vectorised code costs). Target: <= 1 ms
per bar for 10,000 pools. Then the per-call time at the pool counts a daemon follows
(3-200 pools per block), where the fixed cost of a call dominates.

Run: .venv/bin/python bench/bench_engine.py [--pools N] [--bars N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from rules.expr import parse
from rules.layers.engine import LayerEngine, LayerSpec
from rules.types import FEATURE_NAMES

LAYERS = (
    (
        "L1",
        1,
        "abs(move_sigma) >= 1 * threshold_scale or rsi < 30",
        "abs(move_sigma) < 0.5",
        600,
        1800,
    ),
    ("L2", 2, "abs(move_sigma) >= 2 * threshold_scale and macd_hist < 0", None, 0, 0),
    ("L3", 3, "tvl_drain_1h >= 0.2 or mev_score >= 0.5", None, 0, 0),
)


def specs() -> list[LayerSpec]:
    return [
        LayerSpec(
            name=n,
            level=lvl,
            when=parse(w, FEATURE_NAMES),
            clear_when=parse(c, FEATURE_NAMES) if c else None,
            for_=f,
            keep_firing_for=k,
            inhibit_lower=lvl == 2,
        )
        for n, lvl, w, c, f, k in LAYERS
    ]


def feature_path(
    rng: np.random.Generator, k: int, n_bars: int, shock_rate: float = 0.0002
) -> list[dict[str, np.ndarray]]:
    """Persistent features (AR(1) with rare shocks), so that, as on real pools, most
    pools keep their state from one bar to the next and a few move."""
    ms = rng.normal(0, 0.4, k)
    rsi = rng.uniform(35, 65, k)
    mh = rng.normal(0, 1, k)
    out = []
    for _ in range(n_bars):
        shock = rng.random(k) < shock_rate
        ms = 0.9 * ms + rng.normal(0, 0.15, k) + shock * rng.normal(0, 3, k)
        rsi = np.clip(0.95 * rsi + 0.05 * 50 + rng.normal(0, 1.5, k) - shock * 15, 0, 100)
        mh = 0.9 * mh + rng.normal(0, 0.3, k)
        out.append(
            {
                "move_sigma": ms.copy(),
                "rsi": rsi.copy(),
                "macd_hist": mh.copy(),
                "tvl_drain_1h": rng.beta(1, 60, k),
                "mev_score": rng.beta(1, 80, k),
                "threshold_scale": np.ones(k),
            }
        )
    return out


def naive(n_pools: int, bars: list[dict[str, np.ndarray]], interval: int) -> list[float]:
    """The same semantics (for, keep_firing_for, clear_when), one pool at a time in Python."""
    state = [[0] * n_pools for _ in LAYERS]
    since = [[0] * n_pools for _ in LAYERS]
    clear_since = [[-1] * n_pools for _ in LAYERS]
    times = []
    for b, f in enumerate(bars):
        t = b * interval
        cols = {k: v.tolist() for k, v in f.items()}
        t0 = time.perf_counter()
        for li, (_n, _lvl, _w, _c, for_, kff) in enumerate(LAYERS):
            for i in range(n_pools):
                ms, rsi, mh = cols["move_sigma"][i], cols["rsi"][i], cols["macd_hist"][i]
                sc = cols["threshold_scale"][i]
                if li == 0:
                    w = abs(ms) >= sc or rsi < 30
                    c = abs(ms) < 0.5
                elif li == 1:
                    w = abs(ms) >= 2 * sc and mh < 0
                    c = not w
                else:
                    w = cols["tvl_drain_1h"][i] >= 0.2 or cols["mev_score"][i] >= 0.5
                    c = not w
                s = state[li][i]
                if s == 0 and w:
                    state[li][i], since[li][i] = (2 if for_ == 0 else 1), t
                elif s == 1:
                    if not w:
                        state[li][i] = 0
                    elif t - since[li][i] >= for_:
                        state[li][i] = 2
                elif s == 2:
                    if c:
                        if clear_since[li][i] < 0:
                            clear_since[li][i] = t
                        if t - clear_since[li][i] >= kff:
                            state[li][i], clear_since[li][i] = 0, -1
                    else:
                        clear_since[li][i] = -1
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pools", type=int, default=10_000)
    ap.add_argument("--bars", type=int, default=300)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    k = args.pools
    rows = np.arange(k, dtype=np.int64)

    def run(bars: list[dict[str, np.ndarray]]) -> tuple[float, float, float]:
        eng = LayerEngine(specs(), k)
        times, events = [], 0
        for b, f in enumerate(bars):
            t0 = time.perf_counter()
            trs = eng.evaluate(b * 300, rows, f, block=b, block_hash="")
            times.append(time.perf_counter() - t0)
            events += sum(1 for tr in trs if tr.event)
        warm = times[10:]
        return statistics.median(warm), sorted(warm)[int(len(warm) * 0.9)], events / len(bars)

    quiet = feature_path(rng, k, args.bars, shock_rate=0.0)
    for f in quiet:  # a calm market: no pool crosses a threshold, every bar is evaluated
        f["move_sigma"] *= 0.25
        f["rsi"] = np.clip(f["rsi"], 35, 65)
    calm_med, calm_p90, calm_events = run(quiet)
    med, p90, per_bar = run(feature_path(rng, k, args.bars))
    storm_med, _, storm_events = run(feature_path(rng, k, 60, shock_rate=0.005))
    per_event = (storm_med - calm_med) / max(storm_events - calm_events, 1)
    base = naive(k, quiet[:20], 300)
    base_med = statistics.median(base[2:])
    print(f"LayerEngine.evaluate, 3 layers x {k:,} pools per bar (median, p90):")
    print(
        f"  calm bars, no transition:            {calm_med * 1e3:6.3f} ms  {calm_p90 * 1e3:6.3f} ms"
    )
    print(f"  busy bars, {per_bar:5.1f} alert events/bar: {med * 1e3:6.3f} ms  {p90 * 1e3:6.3f} ms")
    print(f"  alert storm, {storm_events:4.0f} events/bar:     {storm_med * 1e3:6.3f} ms")
    print(f"  cost per alert event (reason text, transition): ~{per_event * 1e6:.0f} us")
    print(f"baseline, per-pool Python loop of the same state machine: {base_med * 1e3:.1f} ms/bar")
    print(
        f"ratio baseline / compiled (calm): {base_med / calm_med:.0f}x; "
        f"target <= 1 ms/bar: calm {'met' if calm_med <= 1e-3 else 'MISSED'}, "
        f"busy {'met' if med <= 1e-3 else 'MISSED'}"
    )
    print("per call at daemon sizes (median, statuses included, as the daemon steps):")
    for n_pools in (3, 30, 200):
        small = feature_path(rng, n_pools, 2000)
        eng = LayerEngine(specs(), n_pools)
        small_rows = np.arange(n_pools, dtype=np.int64)
        per_call = []
        for b, f in enumerate(small):
            t0 = time.perf_counter()
            eng.evaluate(b * 300, small_rows, f, block=b, block_hash="")
            per_call.append(time.perf_counter() - t0)
        print(f"  {n_pools:4d} pools: {statistics.median(per_call[100:]) * 1e6:6.1f} us")


if __name__ == "__main__":
    main()
