"""One pool's replayed history as numpy columns, and how file pieces become one.

Guarantees:
- a :class:`ReplaySeries` checks itself: equal lengths, ``time`` strictly increasing
  unix seconds, ``price`` positive and finite, ``volume`` finite and >= 0, ``tvl`` and
  ``tick_tvl`` >= 0 or NaN, ``fee`` a fraction in [0, 1) or NaN; its arrays are
  read-only;
- :func:`assemble` merges every piece carrying the same pool label (several files
  of one pool, or one pool's rows of a multi-pool file), sorts by time (stable), and
  resolves equal times by keeping the *last* row in reading order (paths in the
  order given, rows in file order), counting the dropped rows inside the cut in
  ``duplicate_rows``; it cuts ``[start, end)`` after that, and refuses to return
  an empty series.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from adapters.errors import AdapterError

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


class ReplayError(AdapterError):
    """A data file cannot be replayed. ``str(error)`` is one line naming the file and,
    for a row, its 1-based line (``data.csv:17: price 'abc' is not a number``) or, in
    binary tables, its 1-based row (``data.feather: row 17: ...``)."""

    def __init__(
        self, message: str, *, path: str = "", line: int | None = None, row: int | None = None
    ) -> None:
        self.path = path
        self.line = line
        self.row = row
        # One line whatever a library put in the message.
        message = message.replace("\r", " ").replace("\n", " ")
        self.reason = message
        where = path
        if path and line is not None:
            where = f"{path}:{line}"
        elif path and row is not None:
            where = f"{path}: row {row}"
        super().__init__(message, source=where)


def _readonly(values: NDArray[np.generic]) -> NDArray[np.generic]:
    # A read-only view: the series cannot be changed through it, and the caller's
    # array keeps its own flags.
    view = values.view()
    view.setflags(write=False)
    return view


@dataclass(frozen=True, slots=True)
class ReplaySeries:
    """One pool's history, time-ordered, in the pipeline's units.

    ``time`` is when the row's price was known (a bar's close, a snapshot's time);
    ``price`` is quote per base; ``volume`` is quote units traded since the previous
    row (0 when the file has none); ``tvl`` and ``tick_tvl`` are in quote units, NaN
    when absent; ``fee`` is a fraction (0.0005 for 0.05%), NaN when unknown.
    ``skipped_rows`` counts malformed rows dropped (only with ``skip_bad_rows``),
    ``duplicate_rows`` rows dropped because a later row had the same time.
    """

    pool: str
    source: str
    time: I64
    price: F64
    tvl: F64
    volume: F64
    tick_tvl: F64
    fee: float = math.nan
    skipped_rows: int = 0
    duplicate_rows: int = 0
    sources: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        n = self.time.size
        if n == 0:
            raise ValueError(f"ReplaySeries {self.pool!r} has no rows")
        for name in ("price", "tvl", "volume", "tick_tvl"):
            column = getattr(self, name)
            if column.shape != (n,) or column.dtype != np.float64:
                raise ValueError(f"ReplaySeries.{name} must be float64 of length {n}")
        if self.time.dtype != np.int64 or self.time.ndim != 1:
            raise ValueError("ReplaySeries.time must be a 1-D int64 array")
        if n > 1 and not bool(np.all(np.diff(self.time) > 0)):
            raise ValueError("ReplaySeries.time must be strictly increasing")
        if self.time[0] < 0:
            raise ValueError("ReplaySeries.time must be >= 0")
        if not bool(np.all(np.isfinite(self.price) & (self.price > 0))):
            raise ValueError("ReplaySeries.price must be positive and finite")
        if not bool(np.all(np.isfinite(self.volume) & (self.volume >= 0))):
            raise ValueError("ReplaySeries.volume must be finite and >= 0")
        for name in ("tvl", "tick_tvl"):
            column = getattr(self, name)
            if not bool(np.all(np.isnan(column) | (np.isfinite(column) & (column >= 0)))):
                raise ValueError(f"ReplaySeries.{name} must be >= 0 and finite, or NaN")
        if not (math.isnan(self.fee) or 0 <= self.fee < 1):
            raise ValueError(
                f"ReplaySeries.fee must be a fraction in [0, 1) or NaN, got {self.fee}"
            )
        if self.skipped_rows < 0 or self.duplicate_rows < 0:
            raise ValueError("ReplaySeries row counts must be >= 0")
        for name in ("time", "price", "tvl", "volume", "tick_tvl"):
            object.__setattr__(self, name, _readonly(getattr(self, name)))

    def __len__(self) -> int:
        return int(self.time.size)


@dataclass(slots=True)
class Chunk:
    """The valid rows one file holds for one pool, in file order (not yet sorted)."""

    path: str
    pool: str
    time: I64
    price: F64
    tvl: F64
    volume: F64
    tick_tvl: F64
    fee: float = math.nan
    skipped: int = 0


def iso(t: int) -> str:
    """Unix seconds as ``2020-03-13T01:00:00Z`` (for messages)."""
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_sources(paths: Sequence[str]) -> str:
    """One line naming the files of a series (long folders are abbreviated)."""
    if len(paths) <= 3:
        return ", ".join(paths)
    return f"{len(paths)} files: {paths[0]} ... {paths[-1]}"


def _merged_fee(pool: str, chunks: Sequence[Chunk]) -> float:
    known = [(c.fee, c.path) for c in chunks if not math.isnan(c.fee)]
    if not known:
        return math.nan
    fee, path = known[0]
    for other, other_path in known[1:]:
        if other != fee:
            raise ReplayError(
                f"pool {pool!r}: files disagree on the fee ({fee:g} in {path}, "
                f"{other:g} in {other_path}); give one with --fee",
                path=other_path,
            )
    return fee


def assemble(
    chunks: Sequence[Chunk],
    *,
    start: int | None,
    end: int | None,
    fee: float | None,
) -> list[ReplaySeries]:
    """Merge pieces by pool label (in order of first appearance) into checked series."""
    by_pool: dict[str, list[Chunk]] = {}
    for chunk in chunks:
        by_pool.setdefault(chunk.pool, []).append(chunk)
    out: list[ReplaySeries] = []
    for pool, parts in by_pool.items():
        paths = list(dict.fromkeys(c.path for c in parts))
        source = describe_sources(paths)
        skipped = sum(c.skipped for c in parts)
        time = np.concatenate([c.time for c in parts])
        if time.size == 0:
            detail = f" ({skipped} malformed rows skipped)" if skipped else ""
            raise ReplayError(f"pool {pool!r} has no valid rows{detail}", path=source)
        # Stable sort keeps reading order among equal times, so "keep the last of each
        # run" is "keep the row read last": a later file or row corrects an earlier one.
        order = np.argsort(time, kind="stable")
        time = time[order]
        last_of_run = np.ones(time.size, dtype=np.bool_)
        last_of_run[:-1] = time[1:] != time[:-1]
        in_cut = np.ones(time.size, dtype=np.bool_)
        if start is not None:
            in_cut &= time >= start
        if end is not None:
            in_cut &= time < end
        duplicates = int(np.count_nonzero(in_cut & ~last_of_run))
        keep = order[last_of_run]
        time = time[last_of_run]
        window = in_cut[last_of_run]
        if not window.any():
            cut = f"[{iso(start) if start is not None else '-inf'}, "
            cut += f"{iso(end) if end is not None else '+inf'})"
            raise ReplayError(
                f"pool {pool!r} has no rows in {cut}; its data covers "
                f"{iso(int(time[0]))} to {iso(int(time[-1]))}",
                path=source,
            )
        rows = keep[window]

        def column(name: str, rows: I64 = rows, parts: list[Chunk] = parts) -> F64:
            return np.ascontiguousarray(np.concatenate([getattr(c, name) for c in parts])[rows])

        out.append(
            ReplaySeries(
                pool=pool,
                source=source,
                time=np.ascontiguousarray(time[window]),
                price=column("price"),
                tvl=column("tvl"),
                volume=column("volume"),
                tick_tvl=column("tick_tvl"),
                fee=fee if fee is not None else _merged_fee(pool, parts),
                skipped_rows=skipped,
                duplicate_rows=duplicates,
                sources=tuple(paths),
            )
        )
    return out
