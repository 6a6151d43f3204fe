"""Backtest charts (PNG) and the HTML report that embeds them.

Guarantees:
- rendering uses matplotlib's Agg canvas directly (no pyplot, no display, no global
  state), so it works headless and from worker processes;
- one chart per pool, four panes on a shared time axis: the price with each layer's
  firing periods as coloured bands (and the zigzag drawdowns' peaks and troughs), RSI
  with its 30/70 lines, MACD (line, signal, histogram), and the cumulative P&L of the
  unhedged LP position, the LP hedged by every layer's recommendations, and holding;
- ``report.html`` is one self-contained file: the run's parameters, the summary tables
  and the charts as inline PNGs (base64), every text HTML-escaped;
- ``python -m daemon.backtest.chart JOBS`` draws the :class:`ChartJob` list pickled in the file
  ``JOBS`` (how a backtest draws its charts in a second process while it writes its
  JSON files); it exits 0 once every chart is written.
"""

from __future__ import annotations

import base64
import html
import pickle
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from daemon.backtest.report import PoolResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes

F64 = NDArray[np.float64]

#: Band colours per layer, by position in level order (then repeated).
LAYER_COLOURS = ("#f2c744", "#e6550d", "#756bb1", "#d62728", "#1f77b4")
#: Band opacity per layer position: the outer (rarer) layers stand out over the inner ones.
LAYER_ALPHA = (0.28, 0.45, 0.45, 0.45, 0.45)


#: Lines longer than this many points per horizontal pixel are reduced to their
#: envelope (see :func:`envelope`): what Agg draws into one pixel column is the same.
ENVELOPE_POINTS_PER_PIXEL = 4


def _dates(times: NDArray[np.int64]) -> NDArray[np.datetime64]:
    return times.astype("datetime64[s]")


def envelope(y: F64, columns: int) -> NDArray[np.int64]:
    """Indices of ``y`` that keep its drawn shape on ``columns`` pixel columns.

    ``y`` is cut into ``columns`` consecutive buckets of (nearly) equal length; each
    keeps its first and last point and its minimum and maximum, in time order, so a
    line through the kept points covers exactly the vertical extent the full line
    covers in that bucket and joins the neighbouring buckets where the full line does.
    NaN points (gaps, warm-up) are kept where they are the bucket's first or last, so
    gaps stay gaps. Series no longer than ``ENVELOPE_POINTS_PER_PIXEL * columns``
    points are returned whole (every index).
    """
    n = y.size
    if columns < 1 or n <= ENVELOPE_POINTS_PER_PIXEL * columns:
        return np.arange(n, dtype=np.int64)
    edges = np.linspace(0, n, columns + 1).astype(np.int64)
    starts, ends = edges[:-1], edges[1:]
    width = int((ends - starts).max())
    # one row per bucket, padded with the bucket's own first value (it cannot win)
    offsets = np.arange(width, dtype=np.int64)
    index = starts[:, None] + offsets[None, :]
    inside = index < ends[:, None]
    index = np.where(inside, index, starts[:, None])
    values = y[index]
    finite = np.isfinite(values)
    low = np.where(finite, values, np.inf).argmin(axis=1)
    high = np.where(finite, values, -np.inf).argmax(axis=1)
    kept = np.concatenate(
        (
            starts,
            ends - 1,
            index[np.arange(columns), low],
            index[np.arange(columns), high],
        )
    )
    return np.unique(kept)


def render_pool_chart(
    result: PoolResult, indicators: Mapping[str, F64], path: Path, *, dpi: int = 110
) -> None:
    """Write ``path`` (PNG) for one pool. ``indicators`` holds ``rsi``, ``macd``,
    ``macd_signal`` and ``macd_hist`` aligned with the pool's rows."""
    # matplotlib is imported here, not with the module: it takes ~0.5 s, and importing
    # this module (ChartJob, write_html) must stay cheap.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    rows = result.rows
    x = _dates(rows.times)
    fig = Figure(figsize=(13, 10), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(4, 1, height_ratios=(3.2, 1.1, 1.3, 2.2), hspace=0.08)
    ax_price = fig.add_subplot(grid[0])
    ax_rsi = fig.add_subplot(grid[1], sharex=ax_price)
    ax_macd = fig.add_subplot(grid[2], sharex=ax_price)
    ax_pnl = fig.add_subplot(grid[3], sharex=ax_price)
    # pixel columns of the axes (see subplots_adjust below): long series are drawn by
    # their envelope, which Agg renders the same as the whole series, many times faster
    columns = int(13 * dpi * (0.985 - 0.07))

    def line(ax: Axes, y: F64, **style: Any) -> None:
        kept = envelope(y, columns)
        ax.plot(x[kept], y[kept], **style)

    line(ax_price, rows.price, color="#222222", linewidth=0.9, label="price")
    for i, layer in enumerate(result.layers):
        mask = result.firing_masks[layer.spec.name]
        if not mask.any():
            continue
        colour = LAYER_COLOURS[i % len(LAYER_COLOURS)]
        # each firing run [first, last] as a 2-point segment plus a break point: the
        # same rectangles as filling the whole series where the mask holds
        padded = np.concatenate(([False], mask, [False]))
        first = np.flatnonzero(padded[1:-1] & ~padded[:-2])
        last = np.flatnonzero(padded[1:-1] & ~padded[2:])
        band_x = np.stack((x[first], x[last], x[last]), axis=1).ravel()
        band_on = np.tile(np.array([True, True, False]), first.size)
        ax_price.fill_between(
            band_x,
            0,
            1,
            where=band_on,
            step="post",
            color=colour,
            alpha=LAYER_ALPHA[i % len(LAYER_ALPHA)],
            linewidth=0,
            transform=ax_price.get_xaxis_transform(),
            label=f"{layer.spec.name} firing",
        )
        # A tick at the top for each time the layer started firing: short firings
        # are thinner than a pixel at a multi-month scale, the ticks are not.
        onsets = mask.copy()
        onsets[1:] &= ~mask[:-1]
        ax_price.scatter(
            x[onsets],
            np.full(int(onsets.sum()), 0.985 - 0.035 * i),
            marker="|",
            s=40,
            color=colour,
            transform=ax_price.get_xaxis_transform(),
            zorder=4,
        )
    if result.drawdowns:
        peaks = [dd.peak for dd in result.drawdowns]
        troughs = [dd.trough for dd in result.drawdowns]
        ax_price.scatter(x[peaks], rows.price[peaks], marker="v", color="#2ca02c", s=18, zorder=3)
        ax_price.scatter(
            x[troughs],
            rows.price[troughs],
            marker="^",
            color="#d62728",
            s=18,
            zorder=3,
            label="drawdown peak / trough",
        )
    ax_price.set_ylabel("price")
    ax_price.set_title(
        f"{result.name}  ({result.chain}/{result.pool[:10]}...)  "
        f"{str(x[0])[:16]} to {str(x[-1])[:16]} UTC"
    )
    ax_price.legend(loc="best", fontsize=8, ncol=2)

    line(ax_rsi, indicators["rsi"], color="#6a3d9a", linewidth=0.8)
    for level in (30, 70):
        ax_rsi.axhline(level, color="#999999", linewidth=0.7, linestyle="--")
    ax_rsi.set_ylim(0, 100)
    ax_rsi.set_ylabel("RSI")

    hist = np.nan_to_num(indicators["macd_hist"], nan=0.0)
    kept = envelope(hist, columns)
    hist_x, hist = x[kept], hist[kept]
    ax_macd.fill_between(hist_x, 0, hist, where=hist >= 0, color="#2ca02c", alpha=0.5, linewidth=0)
    ax_macd.fill_between(hist_x, 0, hist, where=hist < 0, color="#d62728", alpha=0.5, linewidth=0)
    line(ax_macd, indicators["macd"], color="#1f77b4", linewidth=0.8, label="MACD")
    line(ax_macd, indicators["macd_signal"], color="#ff7f0e", linewidth=0.8, label="signal")
    ax_macd.axhline(0, color="#999999", linewidth=0.6)
    ax_macd.set_ylabel("MACD")
    ax_macd.legend(loc="upper left", fontsize=8, ncol=2)

    line(ax_pnl, result.unhedged.pnl, color="#1f77b4", linewidth=1.0, label="LP unhedged")
    line(
        ax_pnl,
        result.hedged_all.pnl,
        color="#d62728",
        linewidth=1.0,
        label="LP hedged (all layers)",
    )
    line(ax_pnl, result.hold.pnl, color="#7f7f7f", linewidth=1.0, label="hold")
    hedged_layers = [layer for layer in result.layers if layer.hedged is not None]
    if len(hedged_layers) > 1:
        for i, layer in enumerate(result.layers):
            if layer.hedged is not None:
                line(
                    ax_pnl,
                    layer.hedged.pnl,
                    color=LAYER_COLOURS[i % len(LAYER_COLOURS)],
                    linewidth=0.8,
                    linestyle="--",
                    label=f"LP hedged by {layer.spec.name}",
                )
    ax_pnl.axhline(0, color="#999999", linewidth=0.6)
    ax_pnl.set_ylabel(f"P&L (quote, position {result.position.value:,.0f})")
    ax_pnl.legend(loc="upper left", fontsize=8, ncol=3)
    # matplotlib's date helpers carry no annotations.
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    ax_pnl.xaxis.set_major_locator(locator)
    ax_pnl.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax_pnl.set_xlim(x[0], x[-1])
    for ax in (ax_price, ax_rsi, ax_macd):
        ax.tick_params(labelbottom=False)
    for ax in (ax_price, ax_rsi, ax_macd, ax_pnl):
        ax.grid(True, linewidth=0.3, alpha=0.6)
    fig.subplots_adjust(left=0.07, right=0.985, top=0.96, bottom=0.05)
    fig.align_ylabels()
    fig.savefig(path, format="png")


@dataclass(frozen=True, slots=True)
class ChartJob:
    """One pool's chart: what :func:`render_pool_chart` draws, and where."""

    name: str
    result: PoolResult
    indicators: Mapping[str, F64]
    path: Path

    def render(self) -> None:
        render_pool_chart(self.result, self.indicators, self.path)


def render_jobs(jobs: Sequence[ChartJob]) -> None:
    for job in jobs:
        job.render()


def main(argv: Sequence[str]) -> int:
    """``python -m daemon.backtest.chart JOBS``: draw the pickled chart jobs in ``JOBS``."""
    if len(argv) != 1:
        print(
            "usage: python -m daemon.backtest.chart JOBS (a pickled list of ChartJob)",
            file=sys.stderr,
        )
        return 2
    jobs = pickle.loads(Path(argv[0]).read_bytes())  # written by this package's backtest
    render_jobs(jobs)
    return 0


def write_html(
    path: Path,
    *,
    title: str,
    parameters: Sequence[tuple[str, str]],
    summary: Sequence[str],
    charts: Sequence[tuple[str, Path]],
    notes: Sequence[str] = (),
) -> None:
    """Write the self-contained HTML report (charts inlined as base64 PNG)."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
        "pre{background:#f6f6f6;padding:1em;overflow-x:auto}"
        "table{border-collapse:collapse}td,th{padding:2px 10px;text-align:left}"
        "img{max-width:100%;border:1px solid #ddd}</style>",
        "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<table>",
    ]
    parts += [f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in parameters]
    parts.append("</table>")
    parts.append("<h2>Summary</h2>")
    parts.append(f"<pre>{html.escape(chr(10).join(summary))}</pre>")
    for note in notes:
        parts.append(f"<p>{html.escape(note)}</p>")
    for name, chart in charts:
        data = base64.b64encode(chart.read_bytes()).decode("ascii")
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
    parts.append("</body></html>")
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
