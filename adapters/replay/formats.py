"""The supported replay formats: how each is recognised and turned into pool pieces.

Guarantees (each reader's docstring defines its units and times):
- a format is recognised from column names alone (:func:`classify`), so CSV, JSON,
  feather and parquet holding the same columns read the same way;
- every reader returns, per pool, the valid rows in file order with ``time`` the
  moment the row's price was known: a bar's *close* (its open time plus its length)
  for bar formats, the snapshot time for state formats, the time as written in the
  canonical CSV. A replay therefore never shows a bar's close before the bar ended;
- volume is in quote units; prices are quote per base and > 0;
- malformed rows raise :class:`ReplayError` at their line, or are counted when
  skipping (see :mod:`adapters.replay.columns`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from adapters.replay.columns import RowCheck, Source, show, to_float
from adapters.replay.series import Chunk, ReplayError
from rules.uniswap import FEE_BY_TICK_SPACING, MAX_TICK, MIN_TICK, quote_per_base, tick_tvl

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

FORMATS: tuple[str, ...] = ("csv", "klines", "subgraph", "minute", "hourly")

#: What each format needs, for the "unknown format" message.
FORMAT_COLUMNS: dict[str, str] = {
    "csv": "time, price [, tvl, volume, tick_tvl, fee, pool]",
    "klines": "date, open, high, low, close, volume (freqtrade CSV/feather) or CoinAPI JSON "
    "time_period_start, price_close, volume_traded",
    "subgraph": "Uniswap subgraph poolDayDatas JSON: date, token0Price, token1Price, tvlUSD, "
    "volumeUSD",
    "minute": "timestamp, closeTick, inAmount0, inAmount1, currentLiquidity",
    "hourly": "timestamp, poolTick, poolLiquidity, tickSpacing, dec0, dec1",
}

#: A fee above this is almost surely a percentage typed as a fraction.
FEE_LIMIT = 0.1

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_TRAILING_DATE = re.compile(r"[-_ ]\d{4}-\d{2}-\d{2}$")
_TIMEFRAME = re.compile(r"(?:^|[-_])(\d+)([smhdw])(?=$|[-_.])")
_TIMEFRAME_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: Uniswap fee tiers as written in file names, in percent.
_FEE_TIERS_PERCENT = (0.01, 0.05, 0.3, 1.0)


@dataclass(frozen=True, slots=True)
class Options:
    """Reader options from :func:`adapters.replay.load` (already validated)."""

    price_field: str | None = None
    skip_bad_rows: bool = False
    quote: Literal["token0", "token1"] | None = None
    decimals: tuple[int, int] | None = None
    tick_spacing: int | None = None


def classify(columns: set[str]) -> str | None:
    """The format whose columns (lower-cased) the file has, or None."""
    if "closetick" in columns:
        return "minute"
    if {"pooltick", "poolliquidity"} <= columns:
        return "hourly"
    if columns & {"token0price", "token1price"}:
        return "subgraph"
    if {"date", "close"} <= columns or {"time_period_start", "price_close"} <= columns:
        return "klines"
    if {"time", "price"} <= columns:
        return "csv"
    return None


def pool_label(path: str, *, strip_date: bool = False) -> str:
    """A pool's label from its file name: the 0x address in it, else the file stem
    (without a trailing ``-YYYY-MM-DD`` for daily files)."""
    stem = Path(path).stem
    found = _ADDRESS.search(stem)
    if found:
        return found.group(0)
    return _TRAILING_DATE.sub("", stem) if strip_date else stem


def fee_from_name(path: str) -> float:
    """The fee tier a file name encodes (``weth_usdt_0.05__0x...`` -> 0.0005), else NaN.

    Only a decimal number that is a Uniswap tier in percent (0.01, 0.05, 0.3, 1.0)
    standing alone between separators counts, so years and timeframes never match.
    """
    for token in re.split(r"[-_ ]+", Path(path).stem):
        if re.fullmatch(r"\d+\.\d+%?", token):
            percent = float(token.rstrip("%"))
            if percent in _FEE_TIERS_PERCENT:
                return percent / 100
    return math.nan


# -- shared pieces -----------------------------------------------------------------------


def _split(
    src: Source,
    check: RowCheck,
    keep: NDArray[np.bool_],
    labels: NDArray[np.object_] | str,
    *,
    time: I64,
    price: F64,
    tvl: F64,
    volume: F64,
    tick_tvl_values: F64,
    fees: F64 | float,
) -> list[Chunk]:
    """Valid rows -> one chunk per pool label, in order of first appearance.

    Skipped rows count for the pool they name; rows that name none (an empty pool
    cell) count for the first pool of the file.
    """
    if isinstance(labels, str):
        codes = np.zeros(time.size, dtype=np.int64)
        names = [labels]
    else:
        factor_codes, uniques = pd.factorize(pd.Series(labels, dtype=object))
        codes = np.asarray(factor_codes, dtype=np.int64)
        names = [str(u) for u in uniques]
        if "" in names:  # rows with no pool: they are bad rows, never a pool
            empty = names.index("")
            codes = np.where(codes == empty, -1, codes - (codes > empty))
            names.remove("")
    if not names:
        raise ReplayError(
            f"no valid rows ({check.skipped} malformed rows skipped)",
            path=src.path,
        )
    orphans = int(np.count_nonzero((codes < 0) & ~check.excluded))
    chunks: list[Chunk] = []
    for code, name in enumerate(names):
        mine = codes == code
        rows = np.flatnonzero(mine & keep)
        if isinstance(fees, float):
            fee = fees
        else:
            known = fees[rows][~np.isnan(fees[rows])]
            fee = float(known[0]) if known.size else math.nan
        chunks.append(
            Chunk(
                path=src.path,
                pool=name,
                time=time[rows],
                price=price[rows],
                tvl=tvl[rows],
                volume=volume[rows],
                tick_tvl=tick_tvl_values[rows],
                fee=fee,
                skipped=int(np.count_nonzero(mine & ~keep & ~check.excluded))
                + (orphans if code == 0 else 0),
            )
        )
    return chunks


def _bar_seconds(src: Source, opened: I64) -> int:
    """A bar file's bar length: its most common step between open times (gaps from
    exchange maintenance are rarer than regular steps), else the timeframe in its name."""
    distinct = np.unique(opened)
    if distinct.size >= 2:
        steps, counts = np.unique(np.diff(distinct), return_counts=True)
        return int(steps[np.argmax(counts)])
    named = _TIMEFRAME.search(Path(src.path).stem)
    if named:
        return int(named.group(1)) * _TIMEFRAME_SECONDS[named.group(2)]
    raise ReplayError(
        "cannot tell the bar length of a file with one bar: name it like "
        "ETH_USDT-1h.csv or add more bars",
        path=src.path,
    )


def _nan(n: int) -> F64:
    return np.full(n, math.nan)


# -- canonical CSV -------------------------------------------------------------------------


def read_csv(src: Source, opts: Options) -> list[Chunk]:
    """Canonical CSV: ``time`` (ISO 8601, naive = UTC, or unix seconds) is the sample
    time; ``price`` quote per base; optional ``tvl``, ``tick_tvl`` (quote, NaN when
    empty), ``volume`` (quote traded since the previous row, 0 when empty), ``fee``
    (fraction, constant per pool), ``pool`` (label; several pools per file)."""
    src.require("time", "price", format_name="csv")
    check = src.check(skip_bad_rows=opts.skip_bad_rows)
    name = src.columns.get
    time_col, price_col = src.need("time"), src.need("price")
    time = check.times(time_col, "time", label=name("time"))
    price = check.floats(price_col, "price", required=True, minimum="positive", label=name("price"))
    tvl = check.floats(src.column("tvl"), "tvl", minimum="nonnegative", label=name("tvl"))
    volume = check.floats(
        src.column("volume"), "volume", minimum="nonnegative", default=0.0, label=name("volume")
    )
    tick_values = check.floats(
        src.column("tick_tvl"), "tick_tvl", minimum="nonnegative", label=name("tick_tvl")
    )
    pool_col = src.column("pool")
    labels: NDArray[np.object_] | str = (
        pool_label(src.path) if pool_col is None else check.labels(pool_col, name("pool") or "")
    )
    fee_col = src.column("fee")
    fees: F64 | float = math.nan
    if fee_col is not None:
        fees = _fee_column(check, fee_col, labels, name("fee") or "fee")
    keep = check.finish()
    return _split(
        src,
        check,
        keep,
        labels,
        time=time,
        price=price,
        tvl=tvl,
        volume=volume,
        tick_tvl_values=tick_values,
        fees=fees,
    )


def _fee_column(
    check: RowCheck, column: pd.Series[Any], labels: NDArray[np.object_] | str, label: str
) -> F64:
    fees = check.floats(column, "fee", minimum="nonnegative", label=label)
    check.flag(
        fees >= FEE_LIMIT,
        "fee",
        lambda r: (
            f"{label} {show(fees[r])} looks like a percentage: give a fraction (0.003 for 0.3%)"
        ),
    )
    groups = [None] if isinstance(labels, str) else list(dict.fromkeys(labels.tolist()))
    for pool in groups:
        mine = np.ones(fees.size, dtype=np.bool_) if pool is None else labels == pool
        rows = np.flatnonzero(mine & ~check.bad & ~np.isnan(fees))
        if rows.size == 0:
            continue
        reference = float(fees[rows[0]])
        differs = np.zeros(fees.size, dtype=np.bool_)
        differs[rows] = fees[rows] != reference
        whose = "" if pool is None else f" of pool {pool!r}"

        def describe(r: int, reference: float = reference, whose: str = whose) -> str:
            return (
                f"{label} {show(fees[r])} differs from {show(reference)} on an earlier row{whose}"
            )

        check.flag(differs, "fee", describe)
    return fees


# -- klines ----------------------------------------------------------------------------------


def read_klines(src: Source, opts: Options) -> list[Chunk]:
    """Exchange OHLCV bars: freqtrade/Binance ``date, open, high, low, close, volume``
    (CSV or feather) or CoinAPI ``time_period_start, time_period_end, price_close,
    volume_traded`` (JSON).

    ``date``/``time_period_start`` is the bar's *open*; the row is stamped at the bar's
    close (``time_period_end``, else open + the file's bar length), when its close
    price was known. ``price`` is the close. The files' volume is in the *base* token;
    it is converted to quote as ``volume * close``. ``fee`` is NaN (an exchange,
    not a pool) unless given.
    """
    coinapi = "time_period_start" in src.columns
    open_name, close_name, volume_name = (
        ("time_period_start", "price_close", "volume_traded")
        if coinapi
        else ("date", "close", "volume")
    )
    src.require(open_name, close_name, format_name="klines")
    check = src.check(skip_bad_rows=opts.skip_bad_rows)
    name = src.columns.get
    open_col, close_col = src.need(open_name), src.need(close_name)
    opened = check.times(open_col, open_name, label=name(open_name))
    close = check.floats(
        close_col, close_name, required=True, minimum="positive", label=name(close_name)
    )
    base_volume = check.floats(
        src.column(volume_name),
        volume_name,
        minimum="nonnegative",
        default=0.0,
        label=name(volume_name),
    )
    end_col = src.column("time_period_end") if coinapi else None
    closed: I64 | None = None
    if end_col is not None:
        closed = check.times(end_col, "time_period_end", label=name("time_period_end"))
        check.flag(
            closed <= opened,
            "time_period_end",
            lambda r: (
                f"{name('time_period_end')} {show(end_col.iloc[r])} is not after "
                f"{name(open_name)} {show(open_col.iloc[r])}"
            ),
        )
    keep = check.finish()
    if closed is None:
        # Every row with a usable open time tells the bar length, even if its price
        # is bad: skipping rows must not change the length of the others.
        closed = opened + _bar_seconds(src, opened[opened >= 0])
    n = closed.size
    return _split(
        src,
        check,
        keep,
        pool_label(src.path),
        time=closed,
        price=close,
        tvl=_nan(n),
        volume=base_volume * close,
        tick_tvl_values=_nan(n),
        fees=math.nan,
    )


# -- subgraph ----------------------------------------------------------------------------------

#: Subgraph time fields: how long after that time the row's values are final.
_SUBGRAPH_TIMES = (("date", 86400), ("periodstartunix", 3600), ("timestamp", 0))

PRICE_FIELD_HELP = (
    "token0Price is token0 per token1 (the price of token1 counted in token0), "
    "token1Price is token1 per token0 (the price of token0 counted in token1)"
)


def price_field_key(price_field: str | None, path: str) -> str:
    """Validate ``price_field`` for the subgraph format; its lower-cased column name."""
    if price_field is None:
        raise ReplayError(
            f"the subgraph format needs the price field (--price token0Price|token1Price): "
            f"{PRICE_FIELD_HELP}",
            path=path,
        )
    key = price_field.strip().lower()
    if key not in ("token0price", "token1price"):
        raise ReplayError(
            f"price field {price_field!r} must be token0Price or token1Price: {PRICE_FIELD_HELP}",
            path=path,
        )
    return key


def _uninitialised(src: Source) -> NDArray[np.bool_]:
    """Rows whose token prices are both exactly 0: the subgraph's entry for the day a
    pool was created, before its first price (every field is 0)."""
    both = np.ones(len(src.frame), dtype=np.bool_)
    for key in ("token0price", "token1price"):
        column = src.column(key)
        if column is None:
            return np.zeros(len(src.frame), dtype=np.bool_)
        values, _ = to_float(column)
        both &= values == 0
    return both


def read_subgraph(src: Source, opts: Options) -> list[Chunk]:
    """Uniswap subgraph pool data (``poolDayDatas``; also ``poolHourDatas`` and pool
    snapshots with ``timestamp``), rows in any order, numbers as decimal strings.

    ``price`` is the chosen ``token0Price``/``token1Price``; ``date`` is the day's start,
    so the row is stamped at the day's end (``date + 86400``; ``periodStartUnix +
    3600`` for hours; snapshots at their ``timestamp``). ``tvl = tvlUSD`` (or
    ``totalValueLockedUSD``) and ``volume = volumeUSD``: USD, which are quote units
    only when the quote token is a USD stablecoin. ``fee`` is the tier in the file name
    (``..._0.05__0x...`` -> 0.0005), else NaN. The pool label is the address in the name.
    Rows with both token prices exactly 0 (the pool's creation day, before its first
    price) carry no sample: they are dropped, neither an error nor counted as skipped.
    """
    key = price_field_key(opts.price_field, src.path)
    time_key, delay = next(
        ((k, d) for k, d in _SUBGRAPH_TIMES if k in src.columns), ("date", 86400)
    )
    src.require(time_key, opts.price_field or key, format_name="subgraph")
    check = src.check(skip_bad_rows=opts.skip_bad_rows)
    name = src.columns.get
    check.exclude(_uninitialised(src))
    time_col, price_col = src.need(time_key), src.need(key)
    time = check.times(time_col, time_key, label=name(time_key)) + delay
    price = check.floats(price_col, key, required=True, minimum="positive", label=name(key))
    tvl_key = "tvlusd" if "tvlusd" in src.columns else "totalvaluelockedusd"
    tvl = check.floats(src.column(tvl_key), tvl_key, minimum="nonnegative", label=name(tvl_key))
    volume = check.floats(
        src.column("volumeusd"),
        "volumeusd",
        minimum="nonnegative",
        default=0.0,
        label=name("volumeusd"),
    )
    keep = check.finish()
    return _split(
        src,
        check,
        keep,
        pool_label(src.path),
        time=time,
        price=price,
        tvl=tvl,
        volume=volume,
        tick_tvl_values=_nan(time.size),
        fees=fee_from_name(src.path),
    )


# -- tick formats ---------------------------------------------------------------------------------

#: The minute files' pool: Uniswap V3 USDC/WETH 0.05% on Polygon (token0 = USDC).
MINUTE_DECIMALS = (6, 18)
MINUTE_QUOTE: Literal["token0", "token1"] = "token0"
MINUTE_TICK_SPACING = 10
MINUTE_SECONDS = 60


def _tick_fee(path: str, spacing: int | None) -> float:
    named = fee_from_name(path)
    if not math.isnan(named) or spacing is None:
        return named
    return FEE_BY_TICK_SPACING.get(spacing, math.nan)


def read_minute(src: Source, opts: Options) -> list[Chunk]:
    """Uniswap V3 minute bars with ticks (demeter format), one pool per file name.

    ``timestamp`` is the minute's start; ``closeTick`` the tick after its last swap, so
    the row is stamped at ``timestamp + 60``. Pool layout: ``decimals`` (default 6, 18:
    USDC, WETH), ``quote`` (default token0) and ``tick_spacing`` (default 10, the 0.05%
    tier) of the sample pool. ``price = 10**(d1 - d0) / 1.0001**closeTick`` with token0
    as quote (``1e12 / 1.0001**closeTick``), its inverse with token1.
    ``volume = in_quote / 10**d_quote + in_base / 10**d_base * price``: ``inAmount0``
    and ``inAmount1`` are the gross amounts paid *into* the pool (fees included); every
    swap pays in exactly one token, so the sum counts each swap once, the base side
    valued at the minute's close price. ``tick_tvl`` is ``currentLiquidity`` over the
    tick-spacing range holding ``closeTick`` (:func:`rules.uniswap.tick_tvl`).
    ``fee``: the tier in the file name, else the tier of the tick spacing (10 -> 0.0005).
    """
    src.require("timestamp", "closeTick", format_name="minute")
    decimals0, decimals1 = opts.decimals or MINUTE_DECIMALS
    quote_is_token0 = (opts.quote or MINUTE_QUOTE) == "token0"
    spacing = opts.tick_spacing or MINUTE_TICK_SPACING
    check = src.check(skip_bad_rows=opts.skip_bad_rows)
    name = src.columns.get
    time_col, tick_col = src.need("timestamp"), src.need("closetick")
    opened = check.times(time_col, "timestamp", label=name("timestamp"))
    tick = check.integers(
        tick_col, "closetick", low=MIN_TICK, high=MAX_TICK, label=name("closetick")
    )
    liquidity = check.floats(
        src.column("currentliquidity"),
        "currentliquidity",
        minimum="nonnegative",
        label=name("currentliquidity"),
    )
    inflow0, inflow1 = (
        check.floats(src.column(k), k, minimum="nonnegative", default=0.0, label=name(k))
        for k in ("inamount0", "inamount1")
    )
    keep = check.finish()
    price = quote_per_base(tick, decimals0, decimals1, quote_is_token0=quote_is_token0)
    amount0 = inflow0 / 10.0**decimals0
    amount1 = inflow1 / 10.0**decimals1
    volume = amount0 + amount1 * price if quote_is_token0 else amount1 + amount0 * price
    depth = tick_tvl(
        tick,
        liquidity,
        tick_spacing=spacing,
        decimals0=decimals0,
        decimals1=decimals1,
        price=price,
        quote_is_token0=quote_is_token0,
    )
    return _split(
        src,
        check,
        keep,
        pool_label(src.path, strip_date=True),
        time=opened + MINUTE_SECONDS,
        price=price,
        tvl=_nan(price.size),
        volume=volume,
        tick_tvl_values=depth,
        fees=_tick_fee(src.path, spacing),
    )


def read_hourly(src: Source, opts: Options) -> list[Chunk]:
    """Uniswap V3 pool state snapshots with tick and liquidity (hourly, or any step).

    ``timestamp`` (unix s; ``hour`` if absent) is the snapshot time. Decimals
    (``dec0``, ``dec1``) and ``tickSpacing`` come from the file. With token1 as quote
    (the default) ``price = 1.0001**poolTick * 10**(dec0 - dec1)`` (USDT per USDC for
    the USDC/USDT sample); with token0 its inverse. ``tick_tvl`` is ``poolLiquidity``
    over the tick-spacing range holding ``poolTick``. No TVL or volume (NaN, 0).
    ``fee``: the tier in the file name, else the tier of the tick spacing.
    """
    time_key = "hour" if "hour" in src.columns and "timestamp" not in src.columns else "timestamp"
    src.require(
        time_key, "poolTick", "poolLiquidity", "tickSpacing", "dec0", "dec1", format_name="hourly"
    )
    quote_is_token0 = opts.quote == "token0"
    check = src.check(skip_bad_rows=opts.skip_bad_rows)
    name = src.columns.get

    time = check.times(src.need(time_key), time_key, label=name(time_key))
    tick = check.integers(
        src.need("pooltick"), "pooltick", low=MIN_TICK, high=MAX_TICK, label=name("pooltick")
    )
    liquidity = check.floats(
        src.need("poolliquidity"),
        "poolliquidity",
        required=True,
        minimum="nonnegative",
        label=name("poolliquidity"),
    )
    spacing = check.integers(
        src.need("tickspacing"), "tickspacing", low=1, high=16384, label=name("tickspacing")
    )
    decimals0 = check.integers(src.need("dec0"), "dec0", low=0, high=77, label=name("dec0"))
    decimals1 = check.integers(src.need("dec1"), "dec1", low=0, high=77, label=name("dec1"))
    keep = check.finish()
    price = quote_per_base(tick, decimals0, decimals1, quote_is_token0=quote_is_token0)
    # Bad rows hold spacing 0; give them 1 so the (discarded) math stays finite.
    safe_spacing = np.where(keep, spacing, 1)
    depth = tick_tvl(
        tick,
        liquidity,
        tick_spacing=safe_spacing,
        decimals0=decimals0,
        decimals1=decimals1,
        price=price,
        quote_is_token0=quote_is_token0,
    )
    spacings = np.unique(spacing[keep])
    return _split(
        src,
        check,
        keep,
        pool_label(src.path),
        time=time,
        price=price,
        tvl=_nan(time.size),
        volume=np.zeros(time.size),
        tick_tvl_values=depth,
        fees=_tick_fee(src.path, int(spacings[0]) if spacings.size == 1 else None),
    )


Reader = Callable[[Source, Options], list[Chunk]]

#: Format -> (reader, the lower-cased columns it may use).
READERS: dict[str, tuple[Reader, tuple[str, ...]]] = {
    "csv": (read_csv, ("time", "price", "tvl", "volume", "tick_tvl", "fee", "pool")),
    "klines": (
        read_klines,
        (
            "date",
            "close",
            "volume",
            "time_period_start",
            "time_period_end",
            "price_close",
            "volume_traded",
        ),
    ),
    "subgraph": (
        read_subgraph,
        (
            "date",
            "periodstartunix",
            "timestamp",
            "token0price",
            "token1price",
            "tvlusd",
            "totalvaluelockedusd",
            "volumeusd",
        ),
    ),
    "minute": (
        read_minute,
        ("timestamp", "closetick", "inamount0", "inamount1", "currentliquidity"),
    ),
    "hourly": (
        read_hourly,
        ("timestamp", "hour", "pooltick", "poolliquidity", "tickspacing", "dec0", "dec1"),
    ),
}
