"""Benchmark: a 4-year, 50-pool hourly backtest through the full pipeline, by stage.

Run: ``.venv/bin/python bench/bench_backtest.py [--pools 50] [--steps 0] [--no-chart]``

Data: the real Binance ETH/USDT hourly series (2018-2021, ``../shared/data``), replicated
into ``--pools`` pools: pool ``k`` replays ETH's hourly log returns rotated by ``k * 701``
hours, plus a little independent noise (0.1% per hour), from its own start price, on
ETH's own time grid (gaps included). Each pool is written as a canonical CSV, so the
load stage is the real loader reading real files.

Config: ``examples/alvh.toml`` (the DESIGN.md layers and calendar) with ``[bars]
interval = "1h"``, as ``alvh backtest --interval 1h`` runs it.

Stages (wall time; the pipeline stages are timed inside the same run by wrapping the
pipeline's own methods): load (files -> series), align (common grid), jit (loading the
compiled loops from numba's cache, or compiling them when there is none: set-up does it
once), features (``FeatureEngine.update_table``: the one feature loop over each table;
``update`` runs the same loop for one step), rules (``LayerEngine.evaluate_table``:
expressions over the table, then the state machines, transitions and inhibition in
compiled loops; ``evaluate`` one step at a time, which also builds the reasons), alert
reasons (the text of each alert event from its operand values, ``table_transition``),
alerts (building ``Alert``
objects: ids, values) of which hedge (``recommend``: Black-Scholes, IL, break-even),
pipeline rest (``step_many``'s own work), report (P&L, trades, drawdowns), output
(alerts.jsonl, report.json, charts, HTML). Every figure is wall time on this machine;
the output stage draws large charts in a second process while it writes the JSON files
(the line after the table says whether it did), so on one core it takes longer by up to
the charts' own time.

Baselines, measured in the same run on the first ``--baseline-steps`` times, each with a
fresh pipeline: (a) one ``Pipeline.step`` call per pool per time (no batching over
pools), (b) one ``Pipeline.step`` per time for all pools (what the daemon does per
block), (c) ``Pipeline.step_many`` (what the backtest does); for (b) and (c) also
indicators + rules alone, alert reasons included on both sides.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import rules.hedge.lp  # noqa: E402
from adapters.replay import load  # noqa: E402
from daemon.backtest.run import (  # noqa: E402
    MAX_CHARTS,
    PARALLEL_CHART_ROWS,
    BacktestOptions,
    BacktestRun,
    align,
    load_backtest_config,
    plan_pools,
    pool_results,
    replay,
    with_spread,
    write_outputs,
)
from rules.pipeline import Pipeline  # noqa: E402

ETH = REPO.parent / "shared" / "data" / "cex_ohlcv" / "binance_spot_ETH_USDT-1h_2018-2021.csv"
EXAMPLE = REPO / "examples" / "alvh.toml"


def write_pools(folder: Path, n_pools: int, steps: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    (eth,) = load([str(ETH)])
    n = len(eth) if steps <= 0 else min(steps, len(eth))
    times = np.asarray(eth.time[:n])
    log_ret = np.diff(np.log(np.asarray(eth.price[:n])), prepend=np.log(eth.price[0]))
    rng = np.random.default_rng(2020)
    paths = []
    for k in range(n_pools):
        rotated = np.roll(log_ret, -k * 701)
        rotated[0] = 0.0
        noise = rng.normal(0.0, 0.001, n)
        price = float(eth.price[0]) * rng.uniform(0.5, 2.0) * np.exp(np.cumsum(rotated + noise))
        volume = np.roll(np.asarray(eth.volume[:n]), -k * 701)
        path = folder / f"pool{k:02d}.csv"
        with path.open("w") as fh:
            fh.write("time,price,volume\n")
            fh.writelines(
                f"{t},{p:.10g},{v:.6g}\n"
                for t, p, v in zip(times.tolist(), price.tolist(), volume.tolist(), strict=True)
            )
        paths.append(str(path))
    return paths


class Timer:
    """Accumulates the wall time of wrapped callables, per stage name."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total[name] = self.total.get(name, 0.0) + time.perf_counter() - start
                self.calls[name] = self.calls.get(name, 0) + 1

        return timed


def core_timer(pipeline: Pipeline) -> Timer:
    """Times indicators + rules of ``pipeline`` under the name "core": the feature engine
    (a step or a table) and the layer engine (a step, or a table and the reasons of its
    events: the per-step ``evaluate`` builds them itself), for like-for-like figures."""
    core = Timer()
    for owner, names in (
        (pipeline.features, ("update", "update_table")),
        (pipeline.engine, ("evaluate", "evaluate_table", "table_transition")),
    ):
        for name in names:
            setattr(owner, name, core.wrap("core", getattr(owner, name)))
    return core


def baseline_steps(
    pipeline: Pipeline, aligned: Any, steps: int, per_pool: bool
) -> tuple[float, float]:
    """(whole, of which indicators + rules) seconds for ``steps`` times through
    ``Pipeline.step`` (per pool or all pools)."""
    core = core_timer(pipeline)
    n_pools = aligned.price.shape[1]
    rows_all = np.arange(n_pools, dtype=np.int64)
    zeros = np.zeros(n_pools, dtype=np.int64)
    start = time.perf_counter()
    for t in range(steps):
        stamp = int(aligned.times[t])
        if per_pool:
            for k in range(n_pools):
                rows = rows_all[k : k + 1]
                pipeline.step(
                    stamp,
                    rows,
                    aligned.price[t, k : k + 1],
                    aligned.tvl[t, k : k + 1],
                    aligned.tick_tvl[t, k : k + 1],
                    aligned.volume[t, k : k + 1],
                    zeros[:1],
                    zeros[:1],
                    block=t,
                )
        else:
            pipeline.step(
                stamp,
                rows_all,
                aligned.price[t],
                aligned.tvl[t],
                aligned.tick_tvl[t],
                aligned.volume[t],
                zeros,
                zeros,
                block=t,
            )
    return time.perf_counter() - start, core.total.get("core", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pools", type=int, default=50)
    parser.add_argument("--steps", type=int, default=0, help="hours of data (0: all, ~35k)")
    parser.add_argument("--baseline-steps", type=int, default=300)
    parser.add_argument("--no-chart", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"writing {args.pools} pool files from {ETH.name} ...", flush=True)
        files = write_pools(folder / "data", args.pools, args.steps)

        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        series = load(files)
        stages["load"] = time.perf_counter() - t0

        config = load_backtest_config(EXAMPLE, interval="1h")
        options = BacktestOptions()
        spec = with_spread(config.pipeline_spec(), options.spread)
        plans = plan_pools(config, series, options.notional)
        t0 = time.perf_counter()
        aligned = align([p.series for p in plans])
        stages["align"] = time.perf_counter() - t0
        n_steps, n_pools = aligned.price.shape
        pool_bars = n_steps * n_pools

        infos = [p.info for p in plans]

        def batch_seconds(steps: int) -> tuple[float, float]:
            """(whole step_many, of which indicators + rules) seconds on a prefix."""
            zeros = np.zeros((steps, n_pools), dtype=np.int64)
            pipeline = Pipeline(spec, infos)
            core = core_timer(pipeline)
            start = time.perf_counter()
            pipeline.step_many(
                aligned.times[:steps],
                aligned.price[:steps],
                aligned.tvl[:steps],
                aligned.tick_tvl[:steps],
                aligned.volume[:steps],
                zeros,
                zeros,
                statuses=False,
            )
            return time.perf_counter() - start, core.total.get("core", 0.0)

        # The compiled loops load from numba's cache (or compile, the first time ever):
        # a stage of its own, part of the total.
        stages["jit"] = batch_seconds(2)[0]

        # Baselines on a prefix (fresh pipelines each, the same steps for all three).
        b = min(args.baseline_steps, n_steps)
        per_pool, _ = baseline_steps(Pipeline(spec, infos), aligned, b, per_pool=True)
        per_time, per_time_core = baseline_steps(Pipeline(spec, infos), aligned, b, False)
        batched, batched_core = batch_seconds(b)

        pipeline = Pipeline(spec, infos)
        timer = Timer()
        # Both the one-step and the table entry points are timed (a batch takes tables).
        features, engine = pipeline.features, pipeline.engine
        features.update = timer.wrap("features", features.update)  # type: ignore[method-assign]
        features.update_table = timer.wrap("features", features.update_table)  # type: ignore[method-assign]
        engine.evaluate = timer.wrap("rules", engine.evaluate)  # type: ignore[method-assign]
        engine.evaluate_table = timer.wrap("rules", engine.evaluate_table)  # type: ignore[method-assign]
        # Turning an event row of the compiled loops into its Transition: the decision is
        # made; what is left is per alert (the reason text), timed on its own.
        engine.table_transition = timer.wrap("reasons", engine.table_transition)  # type: ignore[method-assign]
        pipeline._alert = timer.wrap("alerts", pipeline._alert)  # type: ignore[method-assign]
        pipeline._hedge = timer.wrap("hedge", pipeline._hedge)  # type: ignore[method-assign]
        # Position.break_even calls this module function: time it inside the hedge stage.
        rules.hedge.lp.break_even = timer.wrap("break_even", rules.hedge.lp.break_even)
        t0 = time.perf_counter()
        batch = replay(spec, plans, aligned, pipeline=pipeline)
        t_pipeline = time.perf_counter() - t0
        stages["features"] = timer.total.get("features", 0.0)
        stages["rules"] = timer.total.get("rules", 0.0)
        stages["alert reasons"] = timer.total.get("reasons", 0.0)
        stages["alerts (excl. hedge)"] = timer.total.get("alerts", 0.0) - timer.total.get(
            "hedge", 0.0
        )
        stages["hedge"] = timer.total.get("hedge", 0.0)
        stages["pipeline rest"] = t_pipeline - sum(
            timer.total.get(k, 0.0) for k in ("features", "rules", "reasons", "alerts")
        )

        run = BacktestRun(
            config_path=str(EXAMPLE),
            spec=spec,
            layers=tuple(sorted(spec.layers, key=lambda s: (s.level, s.name))),
            plans=plans,
            aligned=aligned,
            batch=batch,
            options=options,
        )
        t0 = time.perf_counter()
        run.results = pool_results(run)
        stages["report"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_outputs(run, folder / "out", files[:1], chart=not args.no_chart)
        stages["output"] = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (folder / "out").iterdir())

    total = sum(stages.values())
    firings = sum(1 for a in batch.alerts if a.event == "firing")
    print(
        f"\n{n_steps:,} hourly steps x {n_pools} pools = {pool_bars:,} pool-bars; "
        f"{len(batch.alerts):,} alerts ({firings:,} firings with hedge advice), "
        f"{timer.calls.get('hedge', 0):,} hedge computations; outputs {size / 1e6:.1f} MB"
    )
    print(f"\n{'stage':<22}{'seconds':>10}{'share':>8}{'pool-bars/s':>16}")
    for name, seconds in stages.items():
        rate = pool_bars / seconds if seconds > 0 else float("inf")
        print(f"{name:<22}{seconds:>10.2f}{seconds / total:>8.1%}{rate:>16,.0f}")
    print(f"{'total':<22}{total:>10.2f}{1:>8.0%}{pool_bars / total:>16,.0f}")
    core = stages["features"] + stages["rules"]
    print(
        f"\nindicators + rules: {core:.2f} s = {pool_bars / core:,.0f} pool-bars/s "
        f"(features {pool_bars / stages['features']:,.0f}/s, "
        f"rules {pool_bars / stages['rules']:,.0f}/s); "
        f"per step: features {stages['features'] / n_steps * 1e6:.0f} us, "
        f"rules {stages['rules'] / n_steps * 1e6:.0f} us"
    )
    if timer.calls.get("reasons"):
        with_reasons = core + stages["alert reasons"]
        print(
            f"with the alert reasons (text per alert event, {timer.calls['reasons']:,} of them, "
            f"{stages['alert reasons'] / timer.calls['reasons'] * 1e6:.1f} us each): "
            f"{with_reasons:.2f} s = {pool_bars / with_reasons:,.0f} pool-bars/s"
        )
    chart_rows = 0 if args.no_chart else sum(len(p.series) for p in plans[:MAX_CHARTS])
    if chart_rows:
        where = (
            "in a second process, alongside the JSON files"
            if chart_rows >= PARALLEL_CHART_ROWS
            else "in this process, after the JSON files"
        )
        print(f"output: {min(MAX_CHARTS, n_pools)} charts ({chart_rows:,} rows) drawn {where}")
    if timer.calls.get("alerts"):
        print(
            f"alerts: {stages['alerts (excl. hedge)'] / timer.calls['alerts'] * 1e6:.1f} us "
            "per alert (ids, values) besides the hedge"
        )
    if timer.calls.get("hedge"):
        print(
            f"hedge advice: {stages['hedge'] / timer.calls['hedge'] * 1e3:.2f} ms per firing, "
            f"of which rules.hedge.lp.break_even "
            f"{timer.total.get('break_even', 0.0) / timer.calls['hedge'] * 1e3:.2f} ms"
        )
    print(
        f"\nthe first {b} steps ({b * n_pools:,} pool-bars) three ways:\n"
        f"  one Pipeline.step per pool per time:     {per_pool:7.2f} s "
        f"({b * n_pools / per_pool:9,.0f} pool-bars/s)\n"
        f"  one Pipeline.step per time (all pools):  {per_time:7.2f} s "
        f"({b * n_pools / per_time:9,.0f} pool-bars/s)\n"
        f"  Pipeline.step_many (tables):             {batched:7.2f} s "
        f"({b * n_pools / batched:9,.0f} pool-bars/s)\n"
        f"indicators + rules (with the alert reasons) on those steps: one step per time "
        f"{b * n_pools / per_time_core:,.0f} pool-bars/s, tables "
        f"{b * n_pools / batched_core:,.0f} pool-bars/s ({per_time_core / batched_core:.0f}x)"
    )
    targets = [
        ("indicators + rules >= 1,000,000 pool-bars/s", pool_bars / core >= 1_000_000),
        ("whole backtest < 30 s", total < 30.0),
    ]
    # The targets are for the whole 4 years of 50 pools; a shorter run says nothing on them.
    full = args.steps <= 0 and args.pools >= 50 and not args.no_chart
    for text, ok in targets:
        verdict = ("met" if ok else "MISSED") if full else "not measured (not the full run)"
        print(f"target {text}: {verdict}")


if __name__ == "__main__":
    main()
