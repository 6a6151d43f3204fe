"""``alvh backtest``: replay history through the daemon's own pipeline and report on it.

A backtest is a different adapter (:mod:`adapters.replay`) and a different sink
(files) around the same core: the samples go through :meth:`rules.pipeline.Pipeline.
step_many`, which is the daemon's ``Pipeline.step`` once per time, so an alert in
``alerts.jsonl`` is what the daemon would have published on that history.

Guarantees:
- **Pools come from the data**: one pipeline row per series the loader returns. A
  config pool whose address or name equals the series' label (case-insensitive)
  lends it its chain, fee and LP position; any other series runs on chain
  ``replay`` (chain id 1) under a pseudo-address (its own 0x address when the label is
  one, else derived from the label) with a notional full-range position of
  ``--notional`` quote units. Positions without an entry price enter at the series'
  first price. A backtest config may leave out ``[[chains]]`` and ``[[pools]]``.
- **One time grid**: every time of every series, sorted; at each time the pools that
  have a row there are stepped together (``block`` = the grid index, ``block_hash``
  ``""``, times are data times). A series whose rows are further apart than the bar
  interval is refused (exit 2): each row would be a burst of empty bars.
- **No look-ahead**: nothing computed from later rows reaches an earlier step (the grid
  index of a time does not depend on later times either), so cutting the data after
  ``t`` leaves every alert before ``t`` unchanged (tested).
- **Errors**: a bad config, data file, option or sweep is one line per problem and
  exit 2 (:class:`daemon.errors.UserError`); data-file errors name the file and line.
- **Outputs** in ``--out``: ``alerts.jsonl`` (one ``alvh.alert.v1`` payload per line, in
  publication order), ``report.json`` (see :mod:`daemon.backtest.report`), ``chart.png`` (the
  first pool; ``chart-2.png`` ... for the next ones, up to :data:`MAX_CHARTS`) and
  ``report.html`` embedding them; a summary table on stdout. The progress bar goes to
  stderr only when stderr is a terminal and ``--quiet`` is not given. Large charts
  (:data:`PARALLEL_CHART_ROWS`) are drawn by ``python -m daemon.backtest.chart`` in a second
  process while this one writes the JSON files; the files are the same either way.
- **Sweeps** (``--sweep PATH=V1,V2,...``, repeatable: the grid is their product) run
  each setting in its own process (``--jobs``) on the data loaded once, print one table
  with a row per setting and layer, and write ``sweep.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from eth_utils.address import to_checksum_address
from numpy.typing import NDArray

from adapters.replay import ReplayError, ReplaySeries, load, parse_time
from daemon.backtest.chart import ChartJob, render_jobs, write_html
from daemon.backtest.report import (
    CLOSE_AT,
    SCHEMA,
    CloseAt,
    PoolResult,
    PoolSeries,
    caught,
    choose_volatility_series,
    format_table,
    pool_result,
    summary_lines,
)
from daemon.config import Config, ConfigError, parse_config
from daemon.errors import UserError
from rules.alert import Alert
from rules.durations import format_duration, iso_utc, parse_duration
from rules.hedge.advice import Position
from rules.layers.engine import LayerSpec
from rules.pipeline import BatchResult, Pipeline, PipelineSpec, PoolInfo
from rules.types import PoolId

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

REPLAY_CHAIN = "replay"
REPLAY_CHAIN_ID = 1
DEFAULT_NOTIONAL = 10_000.0
DEFAULT_DRAWDOWN = 0.2
CHART_FEATURES = ("rsi", "macd", "macd_signal", "macd_hist")
#: Features kept per step: the chart panes and the volatility that values the hedges.
KEPT_FEATURES = (*CHART_FEATURES, "realized_vol", "iv")
MAX_CHARTS = 4
#: From this many charted rows on, the charts are drawn in a worker process while this
#: one writes alerts.jsonl and report.json (each takes seconds at that size; the worker
#: costs about a second to start).
PARALLEL_CHART_ROWS = 50_000
MAX_SWEEP_SETTINGS = 64
#: Steps per pipeline batch (the progress bar moves between batches).
STEP_CHUNK = 2048

_PLACEHOLDER_NAME = "(backtest: no [[pools]] in the config)"
_PLACEHOLDER_ADDRESS = "0x000000000000000000000000000000000000dEaD"
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


# -- options ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BacktestOptions:
    """What the command line asks for, checked."""

    spread: float | None = None
    close_at: CloseAt = "resolution"
    drawdown: float = DEFAULT_DRAWDOWN
    notional: float = DEFAULT_NOTIONAL

    def __post_init__(self) -> None:
        problems = []
        if self.spread is not None and not (math.isfinite(self.spread) and 0 <= self.spread < 1):
            problems.append(f"--spread {self.spread} must be a fraction in [0, 1) (0.02 = 2%)")
        if self.close_at not in CLOSE_AT:
            problems.append(f"--close-at must be one of {', '.join(CLOSE_AT)}")
        if not 0 < self.drawdown < 1:
            problems.append(f"--drawdown {self.drawdown} must be a fraction in (0, 1) (0.2 = 20%)")
        if not (math.isfinite(self.notional) and self.notional > 0):
            problems.append(f"--notional {self.notional} must be a positive number")
        if problems:
            raise UserError(problems)


# -- config ---------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None


def load_backtest_config(
    path: Path,
    *,
    interval: str | None = None,
    overrides: Sequence[tuple[SweepAxis, str]] = (),
) -> Config:
    """The config as the daemon validates it, with what a backtest may leave out filled in.

    ``[[chains]]`` / ``[[pools]]`` may be absent (placeholders are validated instead and
    never match a series); ``interval`` replaces ``[bars] interval``; ``overrides`` are
    sweep settings. Every problem is a :class:`UserError` line.
    """
    raw = _read_toml(path)
    if not raw.get("chains"):
        raw["chains"] = [
            {"name": REPLAY_CHAIN, "chain_id": REPLAY_CHAIN_ID, "rpc": ["http://127.0.0.1:8545"]}
        ]
    if not raw.get("pools"):
        chains = raw["chains"]
        chain = chains[0].get("name") if isinstance(chains, list) and chains else REPLAY_CHAIN
        raw["pools"] = [
            {"chain": chain, "address": _PLACEHOLDER_ADDRESS, "name": _PLACEHOLDER_NAME}
        ]
    if interval is not None:
        bars = raw.setdefault("bars", {})
        if isinstance(bars, dict):
            bars["interval"] = interval
    for axis, value in overrides:
        apply_override(raw, axis, value)
    try:
        return parse_config(raw, str(path))
    except ConfigError as exc:
        lines = [e if e.startswith(str(path)) else f"{path}: {e}" for e in exc.errors]
        if overrides:
            settings = ", ".join(f"{axis.label}={value}" for axis, value in overrides)
            lines = [f"{line} (with --sweep {settings})" for line in lines]
        raise UserError(lines) from None


def with_spread(spec: PipelineSpec, spread: float | None) -> PipelineSpec:
    """``spec`` with every layer's hedge spread replaced (``--spread``)."""
    if spread is None:
        return spec
    layers = tuple(
        replace(layer, hedge=replace(layer.hedge, spread=spread)) if layer.hedge else layer
        for layer in spec.layers
    )
    return replace(spec, layers=layers)


# -- pools ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolPlan:
    """One pipeline row: the series, how the pipeline knows the pool, where the position
    came from (``configured`` or ``notional``)."""

    info: PoolInfo
    series: ReplaySeries
    kind: str

    @property
    def position(self) -> Position:
        assert self.info.position is not None
        return self.info.position


def pseudo_address(label: str) -> str:
    """The pool address a series runs under when no config pool claims it."""
    if _ADDRESS.fullmatch(label):
        return str(to_checksum_address(label))
    return str(to_checksum_address("0x" + hashlib.sha256(label.encode()).hexdigest()[:40]))


def plan_pools(config: Config, series: Sequence[ReplaySeries], notional: float) -> list[PoolPlan]:
    """Pipeline rows for the series, in the loader's order (see the module docstring)."""
    candidates = [p for p in config.pools if p.name != _PLACEHOLDER_NAME]
    infos = {info.pool: info for info in config.pool_infos()}
    claimed: dict[str, str] = {}
    plans: list[PoolPlan] = []
    problems: list[str] = []
    for s in series:
        label = s.pool.casefold()
        match = next(
            (
                p
                for p in candidates
                if p.address.casefold() == label or (p.name or "").casefold() == label
            ),
            None,
        )
        first_price = float(s.price[0])
        if match is None:
            fee = s.fee
            info = PoolInfo(
                pool=PoolId(REPLAY_CHAIN, pseudo_address(s.pool)),
                chain_id=REPLAY_CHAIN_ID,
                name=s.pool,
                fee=fee,
                position=Position.full_range(notional, first_price),
            )
            plans.append(PoolPlan(info, s, "notional"))
            continue
        key = f"{match.chain}/{match.address}"
        if key in claimed:
            problems.append(
                f"series {s.pool!r} and {claimed[key]!r} both match the config pool "
                f"{match.name or match.address}"
            )
            continue
        claimed[key] = s.pool
        info = infos[PoolId(match.chain, match.address)]
        if math.isnan(info.fee) and not math.isnan(s.fee):
            info = replace(info, fee=s.fee)
        position = info.position
        kind = "configured"
        if position is None:
            position, kind = Position.full_range(notional, first_price), "notional"
        elif not position.has_entry_price:
            position = position.with_entry_price(first_price)
        plans.append(PoolPlan(replace(info, position=position), s, kind))
    if problems:
        raise UserError(problems)
    return plans


def check_spacing(series: Sequence[ReplaySeries], interval: int) -> None:
    """Refuse series whose rows are further apart (median) than a bar."""
    problems = []
    for s in series:
        if len(s) < 2:
            continue
        spacing = int(np.median(np.diff(s.time)))
        if spacing > interval:
            problems.append(
                f"{s.source}: rows are {format_duration(spacing)} apart but the bars are "
                f"{format_duration(interval)}: every row would close a run of empty bars; "
                f"use --interval {format_duration(spacing)} (or set [bars] interval)"
            )
    if problems:
        raise UserError(problems)


# -- the replay ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Aligned:
    """All series on one time grid: ``(T, K)`` columns, ``present`` where a pool has a row;
    ``index[k]`` is the grid index of each row of series ``k``."""

    times: I64
    present: NDArray[np.bool_]
    price: F64
    tvl: F64
    tick_tvl: F64
    volume: F64
    index: tuple[I64, ...]


def align(series: Sequence[ReplaySeries]) -> Aligned:
    times = np.unique(np.concatenate([s.time for s in series]))
    shape = (times.size, len(series))
    present = np.zeros(shape, dtype=np.bool_)
    columns = {name: np.full(shape, np.nan) for name in ("price", "tvl", "tick_tvl")}
    volume = np.zeros(shape)
    index = []
    for k, s in enumerate(series):
        at = np.searchsorted(times, s.time)
        index.append(at)
        present[at, k] = True
        columns["price"][at, k] = s.price
        columns["tvl"][at, k] = s.tvl
        columns["tick_tvl"][at, k] = s.tick_tvl
        volume[at, k] = s.volume
    # Absent cells are never read; price 1.0 keeps them harmless if a caller slices whole rows.
    columns["price"][~present] = 1.0
    return Aligned(
        times=times,
        present=present,
        price=columns["price"],
        tvl=columns["tvl"],
        tick_tvl=columns["tick_tvl"],
        volume=volume,
        index=tuple(index),
    )


ProgressFn = Callable[[int, int], None]


def replay(
    spec: PipelineSpec,
    plans: Sequence[PoolPlan],
    aligned: Aligned,
    *,
    progress: ProgressFn | None = None,
    chunk: int = STEP_CHUNK,
    pipeline: Pipeline | None = None,
) -> BatchResult:
    """Step a new pipeline (or ``pipeline``, built from ``spec`` and ``plans``) through the
    grid, in batches of ``chunk`` steps."""
    if pipeline is None:
        pipeline = Pipeline(spec, [p.info for p in plans])
    n_steps, n_pools = aligned.present.shape
    swaps = np.zeros((min(chunk, n_steps), n_pools), dtype=np.int64)
    all_present = bool(aligned.present.all())
    parts: list[BatchResult] = []
    for start in range(0, n_steps, chunk):
        end = min(start + chunk, n_steps)
        window = slice(start, end)
        part = pipeline.step_many(
            aligned.times[window],
            aligned.price[window],
            aligned.tvl[window],
            aligned.tick_tvl[window],
            aligned.volume[window],
            swaps[: end - start],
            swaps[: end - start],
            present=None if all_present else aligned.present[window],
            blocks=np.arange(start, end, dtype=np.int64),
            keep=KEPT_FEATURES,
            statuses=False,
        )
        parts.append(part)
        if progress is not None:
            progress(end, n_steps)
    if len(parts) == 1:
        return parts[0]
    return BatchResult(
        times=np.concatenate([p.times for p in parts]),
        states=np.concatenate([p.states for p in parts]),
        values={name: np.concatenate([p.values[name] for p in parts]) for name in KEPT_FEATURES},
        threshold_scale=np.concatenate([p.threshold_scale for p in parts]),
        alerts=[a for p in parts for a in p.alerts],
        suppressed=[a for p in parts for a in p.suppressed],
    )


@dataclass(slots=True)
class BacktestRun:
    """A finished replay and what the report is made of."""

    config_path: str
    spec: PipelineSpec
    layers: tuple[LayerSpec, ...]
    plans: list[PoolPlan]
    aligned: Aligned
    batch: BatchResult
    options: BacktestOptions
    results: list[PoolResult] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def alerts(self) -> list[Alert]:
        return self.batch.alerts


def run_backtest(
    config: Config,
    series: Sequence[ReplaySeries],
    options: BacktestOptions,
    *,
    progress: ProgressFn | None = None,
) -> BacktestRun:
    """Replay ``series`` through the pipeline ``config`` describes and compute the report."""
    spec = with_spread(config.pipeline_spec(), options.spread)
    check_spacing(series, spec.features.bar_interval)
    plans = plan_pools(config, series, options.notional)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    aligned = align([p.series for p in plans])
    t1 = time.perf_counter()
    batch = replay(spec, plans, aligned, progress=progress)
    t2 = time.perf_counter()
    timings["align"] = t1 - t0
    timings["pipeline"] = t2 - t1
    layers = tuple(sorted(spec.layers, key=lambda s: (s.level, s.name)))
    run = BacktestRun(
        config_path=config.source,
        spec=spec,
        layers=layers,
        plans=plans,
        aligned=aligned,
        batch=batch,
        options=options,
        timings=timings,
    )
    run.results = pool_results(run)
    timings["report"] = time.perf_counter() - t2
    return run


def pool_results(run: BacktestRun) -> list[PoolResult]:
    by_pool_layer: dict[tuple[str, str], list[Alert]] = {}
    for alert in run.batch.alerts:
        by_pool_layer.setdefault((alert.pool, alert.layer), []).append(alert)
    results = []
    for k, plan in enumerate(run.plans):
        at = run.aligned.index[k]
        s = plan.series
        rows = PoolSeries(
            times=np.asarray(s.time),
            price=np.asarray(s.price),
            volume=np.asarray(s.volume),
            tvl=np.asarray(s.tvl),
            vol=choose_volatility_series(
                run.batch.values["realized_vol"][at, k], run.batch.values["iv"][at, k]
            ),
            fee=plan.info.fee,
        )
        address = plan.info.pool.address
        results.append(
            pool_result(
                name=plan.info.name,
                pool=address,
                chain=plan.info.pool.chain,
                source=s.source,
                position=plan.position,
                position_kind=plan.kind,
                rows=rows,
                states=run.batch.states[at, :, k],
                layers=run.layers,
                alerts_by_layer={
                    spec.name: by_pool_layer.get((address, spec.name), []) for spec in run.layers
                },
                close_at=run.options.close_at,
                drawdown=run.options.drawdown,
                skipped_rows=s.skipped_rows,
                duplicate_rows=s.duplicate_rows,
            )
        )
    return results


# -- outputs ------------------------------------------------------------------------------------


def report_json(run: BacktestRun, data: Sequence[str]) -> dict[str, Any]:
    times = run.aligned.times
    return {
        "schema": SCHEMA,
        "config": run.config_path,
        "data": list(data),
        "period": {"from": iso_utc(int(times[0])), "to": iso_utc(int(times[-1]))},
        "bar_interval": run.spec.features.bar_interval,
        "steps": int(times.size),
        "alerts": len(run.batch.alerts),
        "suppressed": len(run.batch.suppressed),
        "options": {
            "spread": run.options.spread,
            "close_at": run.options.close_at,
            "drawdown": run.options.drawdown,
            "notional": run.options.notional,
        },
        "layers": [
            {
                "name": spec.name,
                "level": spec.level,
                "when": str(spec.when),
                "clear_when": str(spec.clear_when) if spec.clear_when is not None else None,
                "hedge": None
                if spec.hedge is None
                else {
                    "instrument": spec.hedge.instrument,
                    "strike_sigma": spec.hedge.strike_sigma,
                    "call_sigma": spec.hedge.call_sigma,
                    "coverage": spec.hedge.coverage,
                    "expiry": format_duration(spec.hedge.expiry),
                    "spread": spec.hedge.spread,
                },
            }
            for spec in run.layers
        ],
        "pools": [r.to_json() for r in run.results],
    }


def write_outputs(run: BacktestRun, out: Path, data: Sequence[str], *, chart: bool) -> list[Path]:
    """Write the output files; returns their paths."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the folder: {exc.strerror}") from None
    jobs = chart_jobs(run, out) if chart else []
    with ChartDrawing(jobs) as drawing:
        written = []
        alerts_path = out / "alerts.jsonl"
        with alerts_path.open("wb") as fh:
            fh.writelines(alert.to_json() + b"\n" for alert in run.batch.alerts)
        written.append(alerts_path)
        report_path = out / "report.json"
        # Compact: the C encoder (indent=None) is ~10x faster on 100k trades; `jq .` pretty-prints.
        report_path.write_text(
            json.dumps(report_json(run, data), separators=(",", ":"), allow_nan=False) + "\n",
            encoding="utf-8",
        )
        written.append(report_path)
        if chart:
            drawing.wait()
            written += write_report_html(run, out, data, [(job.name, job.path) for job in jobs])
    return written


def chart_jobs(run: BacktestRun, out: Path) -> list[ChartJob]:
    """The charts of the first :data:`MAX_CHARTS` pools."""
    jobs = []
    for k, result in enumerate(run.results[:MAX_CHARTS]):
        at = run.aligned.index[k]
        jobs.append(
            ChartJob(
                name=result.name,
                result=result,
                indicators={name: run.batch.values[name][at, k] for name in CHART_FEATURES},
                path=out / ("chart.png" if k == 0 else f"chart-{k + 1}.png"),
            )
        )
    return jobs


class ChartDrawing:
    """Draws ``jobs``: in a second process (``python -m daemon.backtest.chart``) started on entry
    when they are large (see :data:`PARALLEL_CHART_ROWS`), else in this one at :meth:`wait`.

    :meth:`wait` returns once the charts are written; should the second process fail,
    they are drawn here (so a real error is raised here). Leaving the ``with`` block
    stops an unfinished second process and removes its job file. The same files either
    way: the same function draws them from the same data.
    """

    def __init__(self, jobs: Sequence[ChartJob]) -> None:
        self.jobs = list(jobs)
        self.process: subprocess.Popen[bytes] | None = None
        self.job_file: Path | None = None
        self.done = False
        #: The second process's exit status once waited for (None: none was started).
        self.worker_exit: int | None = None

    def __enter__(self) -> ChartDrawing:
        rows = sum(job.result.rows.times.size for job in self.jobs)
        if rows >= PARALLEL_CHART_ROWS:
            try:
                self._start_worker()
            except (OSError, pickle.PicklingError, TypeError, AttributeError):
                self.process = None  # no second process: wait() draws them here
        return self

    def _start_worker(self) -> None:
        handle, name = tempfile.mkstemp(prefix="alvh-charts-", suffix=".pickle")
        self.job_file = Path(name)
        with os.fdopen(handle, "wb") as fh:
            pickle.dump(self.jobs, fh, protocol=pickle.HIGHEST_PROTOCOL)
        # The package's own folder first on the path: `-m daemon.backtest.chart` finds this code.
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daemon.backtest.chart", str(self.job_file)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait(self) -> None:
        if self.done:
            return
        if self.process is not None:
            self.worker_exit = self.process.wait()
        if self.worker_exit != 0:
            render_jobs(self.jobs)
        self.done = True

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.job_file is not None:
            self.job_file.unlink(missing_ok=True)


def write_report_html(
    run: BacktestRun, out: Path, data: Sequence[str], charts: Sequence[tuple[str, Path]]
) -> list[Path]:
    """``report.html`` embedding the drawn ``charts``; returns the charts' and its paths."""
    notes = []
    if len(run.results) > MAX_CHARTS:
        notes.append(
            f"Charts show the first {MAX_CHARTS} of {len(run.results)} pools; "
            "report.json has them all."
        )
    html_path = out / "report.html"
    times = run.aligned.times
    write_html(
        html_path,
        title="alvh backtest",
        parameters=[
            ("config", run.config_path),
            ("data", ", ".join(data)),
            ("period", f"{iso_utc(int(times[0]))} to {iso_utc(int(times[-1]))}"),
            ("bars", format_duration(run.spec.features.bar_interval)),
            ("alerts", str(len(run.batch.alerts))),
            ("hedges closed at", run.options.close_at),
            ("drawdown threshold", f"{run.options.drawdown:.0%}"),
        ],
        summary=summary_lines(run.results),
        charts=charts,
        notes=notes,
    )
    return [path for _, path in charts] + [html_path]


# -- progress -------------------------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar on a terminal stream (nothing when disabled)."""

    def __init__(self, stream: TextIO, *, enabled: bool, label: str = "replay") -> None:
        self.stream = stream
        self.enabled = enabled
        self.label = label
        self.started = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * done // max(total, 1)
        elapsed = time.perf_counter() - self.started
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{done:,}/{total:,} steps {elapsed:.1f}s"
        )
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()


# -- sweeps ---------------------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_EXPRESSION_KEYS = ("when", "clear_when")
_AXIS = re.compile(r"^(?P<path>[A-Za-z0-9_.-]+?)(?:\[(?P<index>\d+)\])?=(?P<values>.*)$")


@dataclass(frozen=True, slots=True)
class SweepAxis:
    """One ``--sweep PATH=V1,V2,...`` argument.

    ``PATH`` is ``layers.<layer>.<key>`` (``layers.`` may be left out), a layer's
    ``hedge.<key>``, or ``<section>.<key>`` of a plain section (``bars.interval``,
    ``features.sigma_window``). For ``when`` / ``clear_when`` the values replace the
    ``index``-th number written in the expression (``[2]`` picks the second; default
    the first): ``layers.L2.when=1.5,2,2.5``.
    """

    text: str
    path: tuple[str, ...]
    index: int | None
    values: tuple[str, ...]

    @property
    def label(self) -> str:
        path = ".".join(self.path)
        return f"{path}[{self.index}]" if self.index is not None else path


def parse_sweep(text: str) -> SweepAxis:
    found = _AXIS.match(text.strip())
    if found is None:
        raise UserError(
            f"--sweep {text!r}: expected PATH=V1,V2,... (e.g. layers.L2.when=1.5,2,2.5)"
        )
    path = tuple(found["path"].split("."))
    if path[0] not in ("layers", "bars", "features"):
        path = ("layers", *path)
    values = tuple(v.strip() for v in found["values"].split(",") if v.strip())
    if not values:
        raise UserError(f"--sweep {text!r}: no values after '='")
    index = int(found["index"]) if found["index"] is not None else None
    if path[0] == "layers":
        if len(path) < 3 or len(path) > 4 or (len(path) == 4 and path[2] != "hedge"):
            raise UserError(
                f"--sweep {text!r}: a layer path is layers.<layer>.<key> or "
                "layers.<layer>.hedge.<key>"
            )
    elif len(path) != 2:
        raise UserError(f"--sweep {text!r}: a section path is <section>.<key>")
    is_expression = path[0] == "layers" and len(path) == 3 and path[2] in _EXPRESSION_KEYS
    if index is not None and not is_expression:
        raise UserError(f"--sweep {text!r}: [n] only applies to when / clear_when")
    if index is not None and index < 1:
        raise UserError(f"--sweep {text!r}: [n] counts from 1")
    if is_expression:
        bad = [v for v in values if not _NUMBER.fullmatch(v)]
        if bad:
            raise UserError(
                f"--sweep {text!r}: expression constants must be unsigned numbers, got {bad}"
            )
    return SweepAxis(text=text, path=path, index=index, values=values)


def _typed(value: str) -> Any:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def apply_override(raw: dict[str, Any], axis: SweepAxis, value: str) -> None:
    """Set one sweep value in a raw (parsed TOML) config."""
    where = f"--sweep {axis.label}"
    if axis.path[0] != "layers":
        section = raw.setdefault(axis.path[0], {})
        if not isinstance(section, dict):
            raise UserError(f"{where}: [{axis.path[0]}] is not a table")
        section[axis.path[1]] = _typed(value)
        return
    layers = raw.get("layers")
    name = axis.path[1]
    layer = (
        next(
            (x for x in layers if isinstance(x, dict) and x.get("name") == name),
            None,
        )
        if isinstance(layers, list)
        else None
    )
    if layer is None:
        raise UserError(f"{where}: no [[layers]] entry named {name!r}")
    if len(axis.path) == 4:
        hedge = layer.get("hedge")
        if not isinstance(hedge, dict):
            raise UserError(f"{where}: layer {name!r} has no hedge table")
        hedge[axis.path[3]] = _typed(value)
        return
    key = axis.path[2]
    if key not in _EXPRESSION_KEYS:
        layer[key] = _typed(value)
        return
    text = layer.get(key)
    if not isinstance(text, str):
        raise UserError(f"{where}: layer {name!r} has no {key} expression")
    numbers = list(_NUMBER.finditer(text))
    n = axis.index or 1
    if len(numbers) < n:
        raise UserError(
            f"{where}: {key} of layer {name!r} ({text!r}) has {len(numbers)} number(s), not {n}"
        )
    hit = numbers[n - 1]
    layer[key] = text[: hit.start()] + value + text[hit.end() :]


def sweep_settings(axes: Sequence[SweepAxis]) -> list[tuple[tuple[SweepAxis, str], ...]]:
    combos = list(itertools.product(*[[(axis, v) for v in axis.values] for axis in axes]))
    if len(combos) > MAX_SWEEP_SETTINGS:
        raise UserError(f"--sweep: {len(combos)} settings; at most {MAX_SWEEP_SETTINGS} per run")
    return [tuple(c) for c in combos]


@dataclass(frozen=True, slots=True)
class SweepJob:
    config: Path
    interval: str | None
    settings: tuple[tuple[SweepAxis, str], ...]
    options: BacktestOptions
    series: tuple[ReplaySeries, ...]


def sweep_rows(run: BacktestRun) -> list[dict[str, Any]]:
    """One row per layer, summed over pools (the sweep table's content)."""
    rows = []
    for li, spec in enumerate(run.layers):
        fired = notified = hit = total = 0
        leads: list[float] = []
        hedged = unhedged = 0.0
        share: list[float] = []
        dd: list[float] = []
        for result in run.results:
            layer = result.layers[li]
            fired += layer.firings
            notified += layer.notified
            h, t, lead = caught(result, layer)
            hit, total = hit + h, total + t
            leads += lead
            share.append(layer.time_in_firing / layer.span if layer.span else 0.0)
            unhedged += result.unhedged.final
            if layer.hedged is not None:
                hedged += layer.hedged.final
                dd.append(layer.hedged.max_drawdown)
        has_hedge = spec.hedge is not None
        rows.append(
            {
                "layer": spec.name,
                "firings": fired,
                "notified": notified,
                "time_in_firing_share": statistics.fmean(share) if share else 0.0,
                "drawdowns_hit": hit,
                "drawdowns": total,
                "median_lead_hours": statistics.median(leads) if leads else None,
                "unhedged_pnl": unhedged,
                "hedged_pnl": hedged if has_hedge else None,
                "hedged_max_drawdown": max(dd) if dd else None,
            }
        )
    return rows


def _sweep_worker(job: SweepJob) -> list[dict[str, Any]]:
    config = load_backtest_config(job.config, interval=job.interval, overrides=job.settings)
    run = run_backtest(config, job.series, job.options)
    return sweep_rows(run)


def run_sweep(
    config: Path,
    interval: str | None,
    axes: Sequence[SweepAxis],
    series: Sequence[ReplaySeries],
    options: BacktestOptions,
    jobs: int,
    out: Path,
    stdout: TextIO,
    stderr: TextIO,
    *,
    quiet: bool,
) -> int:
    settings = sweep_settings(axes)
    # Validate every setting here, so a bad one fails before any process starts.
    for setting in settings:
        load_backtest_config(config, interval=interval, overrides=setting)
    workers = max(1, min(jobs or (os.cpu_count() or 1), len(settings)))
    work = [SweepJob(config, interval, setting, options, tuple(series)) for setting in settings]
    progress = ProgressBar(stderr, enabled=not quiet and stderr.isatty(), label="sweep")
    results: list[list[dict[str, Any]]] = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        for done, rows in enumerate(pool.map(_sweep_worker, work), start=1):
            results.append(rows)
            progress(done, len(work))
    table: list[list[str]] = []
    record = []
    for setting, rows in zip(settings, results, strict=True):
        label = ", ".join(f"{axis.label}={value}" for axis, value in setting)
        record.append({"setting": {axis.label: value for axis, value in setting}, "layers": rows})
        for row in rows:
            lead = row["median_lead_hours"]
            table.append(
                [
                    label,
                    row["layer"],
                    str(row["firings"]),
                    f"{row['time_in_firing_share'] * 100:.1f}%",
                    f"{row['drawdowns_hit']}/{row['drawdowns']}",
                    f"{lead:.0f}h" if lead is not None else "-",
                    f"{row['unhedged_pnl']:,.0f}",
                    f"{row['hedged_pnl']:,.0f}" if row["hedged_pnl"] is not None else "-",
                    f"{row['hedged_max_drawdown'] * 100:.1f}%"
                    if row["hedged_max_drawdown"] is not None
                    else "-",
                ]
            )
    header = [
        "setting",
        "layer",
        "fired",
        "in firing",
        "drawdowns hit",
        "median lead",
        "LP unhedged",
        "LP hedged",
        "maxDD hedged",
    ]
    for line in format_table(header, table):
        print(line, file=stdout)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create the folder: {exc.strerror}") from None
    (out / "sweep.json").write_text(
        json.dumps({"schema": "alvh.sweep.v1", "runs": record}, indent=1, allow_nan=False) + "\n",
        encoding="utf-8",
    )
    print(f"\nwrote {out / 'sweep.json'}", file=stdout)
    return 0


# -- the command ----------------------------------------------------------------------------------


def load_series(args: argparse.Namespace) -> list[ReplaySeries]:
    """The ``--data`` files as series (replay errors become one-line user errors)."""
    try:
        start = parse_time(args.start) if args.start is not None else None
        end = parse_time(args.end) if args.end is not None else None
        return load(
            args.data,
            fmt=args.format,
            price_field=args.price,
            start=start,
            end=end,
            skip_bad_rows=args.skip_bad_rows,
            fee=args.fee,
        )
    except ReplayError as exc:
        raise UserError(str(exc)) from None


def _check_interval(text: str | None) -> None:
    if text is None:
        return
    try:
        parse_duration(text)
    except ValueError as exc:
        raise UserError(f"--interval: {exc}") from None


def run_backtest_command(
    args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """The ``alvh backtest`` command; returns the exit code (raises UserError for exit 2)."""
    out_stream = stdout if stdout is not None else sys.stdout
    err_stream = stderr if stderr is not None else sys.stderr
    options = BacktestOptions(
        spread=args.spread,
        close_at=args.close_at,
        drawdown=args.drawdown,
        notional=args.notional,
    )
    _check_interval(args.interval)
    axes = [parse_sweep(text) for text in args.sweep]
    if args.jobs < 0:
        raise UserError(f"--jobs {args.jobs} must be >= 0 (0: one per CPU)")
    config = load_backtest_config(args.config, interval=args.interval)
    t0 = time.perf_counter()
    series = load_series(args)
    t_load = time.perf_counter() - t0
    for s in series:
        if s.skipped_rows:
            print(f"alvh: {s.source}: skipped {s.skipped_rows} malformed row(s)", file=err_stream)
    if axes:
        return run_sweep(
            args.config,
            args.interval,
            axes,
            series,
            options,
            args.jobs,
            args.out,
            out_stream,
            err_stream,
            quiet=args.quiet,
        )
    progress = ProgressBar(err_stream, enabled=not args.quiet and err_stream.isatty())
    run = run_backtest(config, series, options, progress=progress)
    run.timings["load"] = t_load
    for plan in run.plans:
        _warn_position(plan, err_stream)
    t1 = time.perf_counter()
    written = write_outputs(run, args.out, [str(d) for d in args.data], chart=not args.no_chart)
    run.timings["output"] = time.perf_counter() - t1
    for line in summary_lines(run.results):
        print(line, file=out_stream)
    times = run.aligned.times
    print(
        f"\n{times.size:,} steps x {len(run.plans)} pool(s), {iso_utc(int(times[0]))} to "
        f"{iso_utc(int(times[-1]))}: {len(run.alerts):,} alerts; wrote "
        + ", ".join(str(p) for p in written),
        file=out_stream,
    )
    return 0


def _warn_position(plan: PoolPlan, stream: TextIO) -> None:
    position = plan.position
    price = plan.series.price
    inside = position.in_range(np.asarray(price))
    if not inside.any():
        print(
            f"alvh: warning: the position of {plan.info.name} "
            f"[{position.lower}, {position.upper}] is never in range "
            f"(prices {float(price.min()):.4g} to {float(price.max()):.4g})",
            file=stream,
        )


__all__ = [
    "Aligned",
    "BacktestOptions",
    "BacktestRun",
    "ChartDrawing",
    "PoolPlan",
    "ProgressBar",
    "SweepAxis",
    "align",
    "apply_override",
    "load_backtest_config",
    "parse_sweep",
    "plan_pools",
    "pseudo_address",
    "replay",
    "run_backtest",
    "run_backtest_command",
    "sweep_settings",
    "with_spread",
]
