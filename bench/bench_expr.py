"""Benchmark: rule expressions of DESIGN.md evaluated over 10,000 pools.

Prints the median time per evaluation of each example expression (``Expr.truth``,
vectorised, Kleene three-valued), the total per bar for the three layers (L1 ``when``
and ``clear_when``, L2, L3), and two baselines measured in the same run:

- pure Python, per row: the same conditions hand-written as Python functions over
  lists of floats (with the same NaN -> unknown rule), what a per-pool loop costs;
- hand-written numpy: the same conditions as direct numpy expressions, true mask only
  (the floor that the interpreter's tree walk and Kleene ``false`` mask add to).

Also prints the one-off parse cost and the per-call cost of the calendar scale, which
the pipeline computes once per sample. Run: ``.venv/bin/python bench/bench_expr.py``.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules.calendar import CalendarWindow, parse_cron, threshold_scale
from rules.expr import parse
from rules.types import FEATURE_NAMES

POOLS = 10_000
LAYERS = {
    "L1 when": "abs(move_sigma) >= 1 * threshold_scale or rsi < 30",
    "L1 clear_when": "abs(move_sigma) < 0.5",
    "L2 when": "abs(move_sigma) >= 2 * threshold_scale and macd_hist < 0",
    "L3 when": "tvl_drain_1h >= 0.2 or mev_score >= 0.5",
}


def median_seconds(run: Callable[[], object], repeats: int, number: int = 1) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            run()
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def snapshot(rng: np.random.Generator) -> dict[str, np.ndarray]:
    features = {name: rng.normal(size=POOLS) for name in FEATURE_NAMES}
    features["move_sigma"] = rng.standard_t(3, size=POOLS)
    features["rsi"] = rng.uniform(0, 100, size=POOLS)
    features["tvl_drain_1h"] = rng.beta(1, 12, size=POOLS)
    features["mev_score"] = rng.beta(1, 8, size=POOLS)
    features["threshold_scale"] = np.full(POOLS, 0.75)
    for name in ("move_sigma", "rsi", "macd_hist"):  # pools still warming up
        features[name][rng.random(POOLS) < 0.02] = math.nan
    return features


def kleene(value: float, threshold: float, op: str) -> bool | None:
    if math.isnan(value) or math.isnan(threshold):
        return None
    return value >= threshold if op == ">=" else value < threshold


def k_or(a: bool | None, b: bool | None) -> bool | None:
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


def k_and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


ROW_FUNCTIONS: dict[str, Callable[[dict[str, list[float]], int], bool | None]] = {
    "L1 when": lambda f, i: k_or(
        kleene(abs(f["move_sigma"][i]), 1 * f["threshold_scale"][i], ">="),
        kleene(f["rsi"][i], 30, "<"),
    ),
    "L1 clear_when": lambda f, i: kleene(abs(f["move_sigma"][i]), 0.5, "<"),
    "L2 when": lambda f, i: k_and(
        kleene(abs(f["move_sigma"][i]), 2 * f["threshold_scale"][i], ">="),
        kleene(f["macd_hist"][i], 0, "<"),
    ),
    "L3 when": lambda f, i: k_or(
        kleene(f["tvl_drain_1h"][i], 0.2, ">="), kleene(f["mev_score"][i], 0.5, ">=")
    ),
}

NUMPY_FUNCTIONS: dict[str, Callable[[dict[str, np.ndarray]], np.ndarray]] = {
    "L1 when": lambda f: (np.abs(f["move_sigma"]) >= 1 * f["threshold_scale"]) | (f["rsi"] < 30),
    "L1 clear_when": lambda f: np.abs(f["move_sigma"]) < 0.5,
    "L2 when": lambda f: (
        (np.abs(f["move_sigma"]) >= 2 * f["threshold_scale"]) & (f["macd_hist"] < 0)
    ),
    "L3 when": lambda f: (f["tvl_drain_1h"] >= 0.2) | (f["mev_score"] >= 0.5),
}


def main() -> None:
    rng = np.random.default_rng(20240510)
    features = snapshot(rng)
    rows = {name: column.tolist() for name, column in features.items()}
    exprs = {label: parse(text, FEATURE_NAMES) for label, text in LAYERS.items()}

    parse_time = median_seconds(lambda: [parse(t, FEATURE_NAMES) for t in LAYERS.values()], 50)
    print(f"pools: {POOLS:,}; parse all {len(LAYERS)} expressions once: {parse_time * 1e6:.0f} us")
    print(f"{'expression':16} {'Expr.truth':>12} {'numpy floor':>12} {'Python rows':>12}  text")
    totals = [0.0, 0.0, 0.0]
    for label, expr in exprs.items():
        truth = expr.truth(features)
        by_row = [ROW_FUNCTIONS[label](rows, i) for i in range(POOLS)]  # same answers?
        assert truth.true.tolist() == [v is True for v in by_row], label
        assert truth.false.tolist() == [v is False for v in by_row], label
        assert (NUMPY_FUNCTIONS[label](features) == truth.true).all(), label

        ours = median_seconds(lambda e=expr: e.truth(features), 31, number=20)
        floor = median_seconds(lambda lb=label: NUMPY_FUNCTIONS[lb](features), 31, number=20)
        python = median_seconds(
            lambda lb=label: [ROW_FUNCTIONS[lb](rows, i) for i in range(POOLS)], 7
        )
        totals = [totals[0] + ours, totals[1] + floor, totals[2] + python]
        print(
            f"{label:16} {ours * 1e6:9.1f} us {floor * 1e6:9.1f} us {python * 1e3:9.2f} ms  {expr}"
        )
    print(
        f"{'per bar (all 4)':16} {totals[0] * 1e6:9.1f} us {totals[1] * 1e6:9.1f} us"
        f" {totals[2] * 1e3:9.2f} ms"
    )
    print(
        f"Expr.truth is {totals[2] / totals[0]:.0f}x faster than the per-row Python baseline "
        f"and {totals[0] / totals[1]:.1f}x the hand-written numpy floor "
        f"(which computes no 'false' mask)"
    )

    cpi = CalendarWindow("US CPI", parse_cron("30 12 10-16 * *"), (), 7200, 14400, 0.75)
    moments = list(range(1_715_300_000, 1_715_300_000 + 86_400 * 30, 86_400 * 30 // 1000))
    per_call = median_seconds(lambda: [threshold_scale([cpi], t) for t in moments], 7)
    print(f"threshold_scale(1 cron window) per call: {per_call / len(moments) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
