"""Backtest results: LP, hedged and holding P&L, hedge trades, drawdowns, summaries.

Everything here is computed after the replay from what the pipeline published, so it
cannot feed back into the alerts. What this module guarantees:

- **Strategies** (per pool, money in quote): *hold* keeps the position's entry amounts;
  *unhedged* is the LP position's value (``rules.hedge.lp.Position.value_at``) plus the swap
  fees it earned (``fee * volume * share`` per row, share = position value / TVL, capped
  at 1, 0 out of range or when the data has no TVL or fee); *hedged* adds the P&L of the
  options a layer's ``firing`` alerts recommended. P&L is relative to the position's
  value at entry; ``max_drawdown`` is the largest fall of ``value + P&L`` from its
  running peak, as a fraction of that peak.
- **Hedge trades**: at a published ``firing`` alert (not a repeat) carrying a hedge, the
  alert's ``notional`` of its put (collar: long put, short call) is bought for its
  ``premium_estimate`` (Black-Scholes, spread included, :mod:`rules.hedge.advice`). One hedge
  per pool and layer at a time: a firing while that layer's hedge is still open buys
  nothing (counted as ``skipped``). With ``close_at="resolution"`` the hedge is sold at
  the layer's ``resolved`` alert for its Black-Scholes value (:mod:`rules.hedge.options`)
  with the volatility known then (the same choice as the advice: the larger of realized
  vol and IV, :func:`rules.hedge.advice.choose_volatility`), the spread taken off what is sold
  and added to what is bought back; with ``"expiry"``, or when expiry comes first, it
  settles at its intrinsic value at the last price known at expiry. A hedge still open
  at the end of the data is valued at its mid Black-Scholes value and flagged open.
  Between trades options are marked at mid, so the P&L curve shows the spread when it is
  paid.
- **Drawdowns** of the price are zigzag swings: a peak is confirmed once the price
  falls ``threshold`` below it, the trough once the price rises ``threshold`` above
  it; each peak-to-trough swing is one drawdown (the last may be still open). For each
  layer, ``first_fire`` / ``last_fire`` are the first and last times in ``(peak,
  trough]`` the layer's state became firing (inhibited or not: inhibition only mutes
  notifications), with whether it was firing at the peak and at the trough.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from rules.alert import Alert
from rules.durations import iso_utc
from rules.hedge.advice import FALLBACK_VOLATILITY, SECONDS_PER_YEAR
from rules.hedge.lp import Position
from rules.hedge.options import black_scholes
from rules.layers.engine import LayerSpec, State

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]

CloseAt = Literal["resolution", "expiry"]
CLOSE_AT: tuple[str, ...] = ("resolution", "expiry")
SCHEMA = "alvh.backtest.v1"
_FIRING = int(State.FIRING)
_ERFC = np.frompyfunc(math.erfc, 1, 1)


# -- vectorised helpers ---------------------------------------------------------------


def choose_volatility_series(realized_vol: F64, iv: F64) -> F64:
    """:func:`rules.hedge.advice.choose_volatility` element-wise (the figure, not its source)."""
    rv_ok = np.isfinite(realized_vol) & (realized_vol > 0)
    iv_ok = np.isfinite(iv) & (iv > 0)
    best: F64 = np.where(
        rv_ok & iv_ok,
        np.fmax(realized_vol, iv),
        np.where(rv_ok, realized_vol, np.where(iv_ok, iv, FALLBACK_VOLATILITY)),
    )
    return best


def _norm_cdf(x: F64) -> F64:
    # The erfc form of rules.hedge.options.norm_cdf, element by element (no scipy).
    erfc = np.asarray(_ERFC(-x / math.sqrt(2.0)), dtype=np.float64)
    out: F64 = 0.5 * erfc
    return out


def option_mid(
    kind: Literal["call", "put"], spot: F64, strike: float | F64, years: F64, vol: F64
) -> F64:
    """Black-Scholes price per unit (r = q = 0), the formula of :func:`rules.hedge.options.
    black_scholes` element-wise; intrinsic value where ``vol * sqrt(years)`` is 0."""
    vol_sqrt_t = vol * np.sqrt(np.maximum(years, 0.0))
    intrinsic = np.maximum(strike - spot, 0.0) if kind == "put" else np.maximum(spot - strike, 0.0)
    live = vol_sqrt_t > 0
    if not live.any():
        return intrinsic
    safe = np.where(live, vol_sqrt_t, 1.0)
    with np.errstate(over="ignore"):  # a tiny vol * sqrt(T): d1 = +-inf, N(d1) = 0 or 1
        d1 = (np.log(spot / strike) + 0.5 * vol * vol * years) / safe
    d2 = d1 - safe
    if kind == "put":
        price = strike * _norm_cdf(-d2) - spot * _norm_cdf(-d1)
    else:
        price = spot * _norm_cdf(d1) - strike * _norm_cdf(d2)
    out: F64 = np.where(live, price, intrinsic)
    return out


def max_drawdown(equity: F64) -> float:
    """Largest fall from a running peak, as a fraction of that peak (0 when it never falls)."""
    if equity.size == 0:
        return 0.0
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        fall = np.where(peak > 0, (peak - equity) / peak, 0.0)
    return float(np.max(fall))


# -- drawdowns ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Drawdown:
    """One peak-to-trough swing of the price (indices into the pool's rows)."""

    peak: int
    trough: int
    depth: float
    open: bool = False


def price_drawdowns(price: F64, threshold: float) -> list[Drawdown]:
    """Zigzag swings of at least ``threshold`` (a fraction, e.g. 0.2), in time order."""
    if not 0 < threshold < 1:
        raise ValueError(f"drawdown threshold must be in (0, 1), got {threshold}")
    values = price.tolist()
    out: list[Drawdown] = []
    if not values:
        return out
    falling = False
    high_i = low_i = 0
    high = low = values[0]
    fall_at = 1.0 - threshold
    rise_at = 1.0 + threshold
    for i, p in enumerate(values):
        if not falling:
            if p > high:
                high, high_i = p, i
            elif p <= high * fall_at:
                falling, low, low_i = True, p, i
        elif p < low:
            low, low_i = p, i
        elif p >= low * rise_at:
            out.append(Drawdown(high_i, low_i, 1.0 - low / high))
            falling, high, high_i = False, p, i
    if falling:
        out.append(Drawdown(high_i, low_i, 1.0 - low / high, open=True))
    return out


# -- hedge trades ------------------------------------------------------------------------


@dataclass(slots=True)
class Trade:
    """One hedge bought at a firing alert. Money in quote; times unix seconds."""

    layer: str
    instrument: str
    opened: int
    open_row: int
    open_price: float
    strike: float
    call_strike: float | None
    expiry: int
    notional: float
    volatility: float
    premium: float
    spread: float
    closed: int | None = None
    close_row: int | None = None
    close_price: float = math.nan
    close_volatility: float = math.nan
    close_value: float = math.nan
    how: str = "open"

    @property
    def pnl(self) -> float:
        return self.close_value - self.premium

    def to_json(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "instrument": self.instrument,
            "opened": iso_utc(self.opened),
            "open_price": self.open_price,
            "strike": self.strike,
            "call_strike": self.call_strike,
            "expiry": iso_utc(self.expiry),
            "notional": self.notional,
            "volatility": self.volatility,
            "premium": self.premium,
            "spread": self.spread,
            "closed": iso_utc(self.closed) if self.closed is not None else None,
            "how": self.how,
            "close_price": _num(self.close_price),
            "close_volatility": _num(self.close_volatility),
            "close_value": _num(self.close_value),
            "pnl": _num(self.pnl),
        }


def _num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _sale_value(trade: Trade, spot: float, seconds_left: int, vol: float) -> float:
    """What closing the hedge early brings: the put sold at bid, the call bought back at ask."""
    years = max(seconds_left, 0) / SECONDS_PER_YEAR
    put = black_scholes("put", spot, trade.strike, years, vol).price
    value = put * (1 - trade.spread)
    if trade.call_strike is not None:
        call = black_scholes("call", spot, trade.call_strike, years, vol).price
        value -= call * (1 + trade.spread)
    return trade.notional * value


def _payoff(trade: Trade, spot: float) -> float:
    value = max(trade.strike - spot, 0.0)
    if trade.call_strike is not None:
        value -= max(spot - trade.call_strike, 0.0)
    return trade.notional * value


@dataclass(frozen=True, slots=True)
class PoolSeries:
    """One pool's rows as the report needs them (its own sample times only)."""

    times: I64
    price: F64
    volume: F64
    tvl: F64
    vol: F64  # the volatility the hedge advice would use, per row
    fee: float


def hedge_trades(
    alerts: Sequence[Alert],
    spec: LayerSpec,
    rows: PoolSeries,
    close_at: CloseAt,
) -> tuple[list[Trade], int]:
    """Trades of one layer on one pool from its published alerts (in time order).

    Returns the trades and the number of firings skipped because a hedge was open.
    """
    if spec.hedge is None:
        return [], 0
    spread = spec.hedge.spread
    trades: list[Trade] = []
    skipped = 0
    current: Trade | None = None
    times = rows.times
    # bisect on a list: np.searchsorted's answers for a sorted array, without its ~3 us
    # of overhead per call (two calls per alert).
    time_list = times.tolist()

    def row_at(t: int) -> int:
        return bisect.bisect_left(time_list, t)

    def settle_if_expired(now: int) -> None:
        nonlocal current
        if current is not None and current.expiry <= now:
            last = bisect.bisect_right(time_list, current.expiry) - 1
            spot = float(rows.price[last])
            current.closed = current.expiry
            current.close_row = min(row_at(current.expiry), times.size - 1)
            current.close_price = spot
            current.close_value = _payoff(current, spot)
            current.how = "expiry"
            current = None

    for alert in alerts:
        settle_if_expired(alert.time)
        if alert.event == "firing" and not alert.repeat and alert.hedge is not None:
            if current is not None:
                skipped += 1
                continue
            hedge = alert.hedge
            call_strike = hedge.get("call_strike")
            current = Trade(
                layer=spec.name,
                instrument=str(hedge["instrument"]),
                opened=alert.time,
                open_row=row_at(alert.time),
                open_price=float(alert.values["price"]),
                strike=float(hedge["strike"]),
                call_strike=float(call_strike) if call_strike is not None else None,
                expiry=alert.time + spec.hedge.expiry,
                notional=float(hedge["notional"]),
                volatility=float(hedge["volatility"]),
                premium=float(hedge["premium_estimate"]),
                spread=spread,
            )
            trades.append(current)
        elif alert.event == "resolved" and close_at == "resolution" and current is not None:
            i = row_at(alert.time)
            spot = float(rows.price[i])
            vol = float(rows.vol[i])
            current.closed = alert.time
            current.close_row = i
            current.close_price = spot
            current.close_volatility = vol
            current.close_value = _sale_value(current, spot, current.expiry - alert.time, vol)
            current.how = "resolution"
            current = None
    settle_if_expired(int(times[-1]))
    if current is not None:
        # Still open at the end of the data: valued at mid.
        last = times.size - 1
        current.close_price = float(rows.price[last])
        current.close_volatility = float(rows.vol[last])
        years = (current.expiry - int(times[last])) / SECONDS_PER_YEAR
        mid = black_scholes(
            "put", current.close_price, current.strike, years, current.close_volatility
        )
        value = mid.price
        if current.call_strike is not None:
            value -= black_scholes(
                "call", current.close_price, current.call_strike, years, current.close_volatility
            ).price
        current.close_value = current.notional * value
    return trades, skipped


def option_pnl_curve(trades: Sequence[Trade], rows: PoolSeries) -> F64:
    """Cumulative P&L of the trades at every row: marked at mid while open, realised after.

    All open-trade rows of all trades are valued in one vectorised pass.
    """
    n = rows.times.size
    pnl = np.zeros(n)
    if not trades:
        return pnl
    starts = np.array([t.open_row for t in trades], dtype=np.int64)
    ends = np.array(
        [t.close_row if t.closed is not None and t.close_row is not None else n for t in trades],
        dtype=np.int64,
    )
    lengths = np.maximum(ends - starts, 0)
    owner = np.repeat(np.arange(len(trades)), lengths)
    if owner.size:
        offsets = np.cumsum(lengths) - lengths
        at = np.arange(owner.size) - offsets[owner] + starts[owner]
        expiry = np.array([t.expiry for t in trades], dtype=np.int64)[owner]
        spot = rows.price[at]
        years = (expiry - rows.times[at]) / SECONDS_PER_YEAR
        vol = rows.vol[at]
        mark = option_mid("put", spot, np.array([t.strike for t in trades])[owner], years, vol)
        calls = np.array(
            [t.call_strike if t.call_strike is not None else math.nan for t in trades]
        )[owner]
        collar = ~np.isnan(calls)
        if collar.any():
            mark[collar] -= option_mid(
                "call", spot[collar], calls[collar], years[collar], vol[collar]
            )
        notional = np.array([t.notional for t in trades])[owner]
        premium = np.array([t.premium for t in trades])[owner]
        pnl += np.bincount(at, weights=notional * mark - premium, minlength=n)
    realised = np.zeros(n + 1)
    for trade, end in zip(trades, ends.tolist(), strict=True):
        if trade.closed is not None and end < n:
            realised[end] += trade.pnl
    pnl += np.cumsum(realised[:n])
    return pnl


# -- strategies ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Strategy:
    """A P&L curve (quote, per row) and its summary figures."""

    pnl: F64
    base: float

    @property
    def final(self) -> float:
        return float(self.pnl[-1]) if self.pnl.size else 0.0

    @property
    def max_drawdown(self) -> float:
        return max_drawdown(self.base + self.pnl)

    def summary(self) -> dict[str, float]:
        return {
            "pnl": self.final,
            "return": self.final / self.base,
            "max_drawdown": self.max_drawdown,
        }


def lp_fees(position: Position, rows: PoolSeries) -> F64:
    """Cumulative swap fees earned by the position (0 where TVL or the fee is unknown).

    The first row is the entry: fees start with the second row's volume.
    """
    fees = np.zeros(rows.times.size)
    if math.isnan(rows.fee) or rows.fee <= 0 or rows.times.size < 2:
        return fees
    value = position.value_at(rows.price)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.minimum(value / rows.tvl, 1.0)
    share = np.where(np.isfinite(share) & (rows.tvl > 0), share, 0.0)
    share = np.where(position.in_range(rows.price), share, 0.0)
    earned = rows.fee * rows.volume * share
    earned[0] = 0.0
    out: F64 = np.cumsum(earned)
    return out


@dataclass(slots=True)
class LayerResult:
    spec: LayerSpec
    firings: int
    notified: int
    resolved: int
    time_in_firing: int
    span: int
    entries: I64  # times the state became firing
    trades: list[Trade] = field(default_factory=list)
    skipped: int = 0
    option_pnl: F64 = field(default_factory=lambda: np.zeros(0))
    hedged: Strategy | None = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "layer": self.spec.name,
            "level": self.spec.level,
            "firings": self.firings,
            "notified": self.notified,
            "resolved": self.resolved,
            "time_in_firing_hours": self.time_in_firing / 3600,
            "time_in_firing_share": self.time_in_firing / self.span if self.span else 0.0,
        }
        if self.hedged is not None:
            out["hedged"] = {
                **self.hedged.summary(),
                "option_pnl": float(self.option_pnl[-1]) if self.option_pnl.size else 0.0,
                "premiums_paid": sum(t.premium for t in self.trades),
                "trades": len(self.trades),
                "skipped": self.skipped,
            }
            out["trades"] = [t.to_json() for t in self.trades]
        else:
            out["hedged"] = None
        return out


@dataclass(slots=True)
class PoolResult:
    """Everything the report says about one pool."""

    name: str
    pool: str
    chain: str
    source: str
    position: Position
    position_kind: str
    rows: PoolSeries
    unhedged: Strategy
    hold: Strategy
    hedged_all: Strategy
    fees: F64
    layers: list[LayerResult]
    drawdowns: list[Drawdown]
    firing_masks: dict[str, NDArray[np.bool_]]
    skipped_rows: int = 0
    duplicate_rows: int = 0

    def drawdown_json(self) -> list[dict[str, Any]]:
        times, price = self.rows.times, self.rows.price
        out: list[dict[str, Any]] = []
        for dd in self.drawdowns:
            t_peak, t_trough = int(times[dd.peak]), int(times[dd.trough])
            layers: dict[str, Any] = {}
            for layer in self.layers:
                hit = first_fire(layer.entries, t_peak, t_trough)
                mask = self.firing_masks[layer.spec.name]
                last = last_fire(layer.entries, t_peak, t_trough)
                early = warning(price, dd, mask)
                entry: dict[str, Any] = {
                    "caught_before_half": early.before_half,
                    "fall_done_when_firing": early.fall_done,
                    "half_way": iso_utc(int(times[early.half])),
                    "fall_in_half_way_bar": early.last_bar,
                    "firing_at_peak": bool(mask[dd.peak]),
                    "firing_at_trough": bool(mask[dd.trough]),
                    "first_fire": None,
                    "last_fire": iso_utc(last) if last is not None else None,
                }
                if hit is not None:
                    i = int(np.searchsorted(times, hit))
                    fall = float(price[dd.peak] - price[dd.trough])
                    entry.update(
                        first_fire=iso_utc(hit),
                        lead_hours=(t_trough - hit) / 3600,
                        price_at_fire=float(price[i]),
                        fall_before_fire=(float(price[dd.peak] - price[i]) / fall)
                        if fall > 0
                        else 0.0,
                    )
                layers[layer.spec.name] = entry
            out.append(
                {
                    "peak": iso_utc(t_peak),
                    "peak_price": float(price[dd.peak]),
                    "trough": iso_utc(t_trough),
                    "trough_price": float(price[dd.trough]),
                    "depth": dd.depth,
                    "open": dd.open,
                    "layers": layers,
                }
            )
        return out

    def to_json(self) -> dict[str, Any]:
        times = self.rows.times
        p = self.position
        return {
            "name": self.name,
            "pool": self.pool,
            "chain": self.chain,
            "source": self.source,
            "rows": int(times.size),
            "first": iso_utc(int(times[0])),
            "last": iso_utc(int(times[-1])),
            "skipped_rows": self.skipped_rows,
            "duplicate_rows": self.duplicate_rows,
            "fee": _num(self.rows.fee),
            "position": {
                "kind": self.position_kind,
                "lower": p.lower if p.lower is not None else 0.0,
                "upper": _num(p.upper if p.upper is not None else math.inf),
                "value": p.value,
                "entry_price": p.entry_price,
            },
            "fees_earned": float(self.fees[-1]),
            "strategies": {
                "unhedged": self.unhedged.summary(),
                "hedged_all_layers": self.hedged_all.summary(),
                "hold": self.hold.summary(),
            },
            "drawdowns": self.drawdown_json(),
            "layers": [self._layer_json(layer) for layer in self.layers],
        }

    def _layer_json(self, layer: LayerResult) -> dict[str, Any]:
        early = warnings(self, layer)
        done = [w.fall_done for w in early if w.fall_done is not None]
        return {
            **layer.summary(),
            "drawdowns": len(early),
            "drawdowns_caught_before_half": sum(w.before_half for w in early),
            "fall_done_when_firing_median": statistics.median(done) if done else None,
            "fall_done_when_firing_max": max(done) if done else None,
        }


def last_fire(entries: I64, start: int, end: int) -> int | None:
    """Last time in ``(start, end]`` of ``entries`` (sorted), or None."""
    i = int(np.searchsorted(entries, end, side="right")) - 1
    if i >= 0 and entries[i] > start:
        return int(entries[i])
    return None


def first_fire(entries: I64, start: int, end: int) -> int | None:
    """First time in ``(start, end]`` of ``entries`` (sorted), or None."""
    i = int(np.searchsorted(entries, start, side="right"))
    if i < entries.size and entries[i] <= end:
        return int(entries[i])
    return None


def pool_result(
    *,
    name: str,
    pool: str,
    chain: str,
    source: str,
    position: Position,
    position_kind: str,
    rows: PoolSeries,
    states: NDArray[np.int8],
    layers: Sequence[LayerSpec],
    alerts_by_layer: Mapping[str, Sequence[Alert]],
    close_at: CloseAt,
    drawdown: float,
    skipped_rows: int = 0,
    duplicate_rows: int = 0,
) -> PoolResult:
    """Strategies, trades and drawdowns of one pool.

    ``states[i, li]`` is layer ``li``'s state after the pool's row ``i``; ``alerts_by_layer``
    holds the pool's published alerts per layer name, in time order.
    """
    times = rows.times
    base = position.value
    value = np.asarray(position.value_at(rows.price), dtype=np.float64)
    fees = lp_fees(position, rows)
    unhedged = Strategy(value - base + fees, base)
    hold = Strategy(np.asarray(position.hold_value(rows.price), dtype=np.float64) - base, base)
    dt = np.diff(times, append=times[-1])
    span = int(times[-1] - times[0])
    results: list[LayerResult] = []
    masks: dict[str, NDArray[np.bool_]] = {}
    total_options = np.zeros(times.size)
    for li, spec in enumerate(layers):
        firing = states[:, li] == _FIRING
        masks[spec.name] = firing
        became = firing.copy()
        became[1:] &= ~firing[:-1]
        alerts = alerts_by_layer.get(spec.name, ())
        result = LayerResult(
            spec=spec,
            firings=int(np.count_nonzero(became)),
            notified=sum(1 for a in alerts if a.event == "firing" and not a.repeat),
            resolved=sum(1 for a in alerts if a.event == "resolved"),
            time_in_firing=int(dt[firing].sum()),
            span=span,
            entries=times[became],
        )
        if spec.hedge is not None:
            result.trades, result.skipped = hedge_trades(alerts, spec, rows, close_at)
            result.option_pnl = option_pnl_curve(result.trades, rows)
            result.hedged = Strategy(unhedged.pnl + result.option_pnl, base)
            total_options += result.option_pnl
        results.append(result)
    return PoolResult(
        name=name,
        pool=pool,
        chain=chain,
        source=source,
        position=position,
        position_kind=position_kind,
        rows=rows,
        unhedged=unhedged,
        hold=hold,
        hedged_all=Strategy(unhedged.pnl + total_options, base),
        fees=fees,
        layers=results,
        drawdowns=price_drawdowns(rows.price, drawdown),
        firing_masks=masks,
        skipped_rows=skipped_rows,
        duplicate_rows=duplicate_rows,
    )


# -- summaries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EarlyWarning:
    """How early a layer warned of one drawdown. ``half`` is the first row whose price
    has fallen half of the peak-to-trough fall or more; ``first`` the first row in
    ``[peak, half)`` where the layer was firing (None: it was not firing before half of
    the fall had happened); ``fall_done`` the share of the fall that had happened by then,
    always below one half (0: already firing at the peak); ``last_bar`` the share of the
    fall made by the one bar that crossed half-way (near one half or more: a gap that no
    alert on bar closes could have seen coming)."""

    half: int
    first: int | None
    fall_done: float | None
    last_bar: float

    @property
    def before_half(self) -> bool:
        """Firing at a row whose price had not yet fallen half of the fall."""
        return self.first is not None


def warning(price: F64, dd: Drawdown, firing: NDArray[np.bool_]) -> EarlyWarning:
    """When ``firing`` first held in the first half of drawdown ``dd`` (see EarlyWarning)."""
    fall = float(price[dd.peak] - price[dd.trough])
    half_level = float(price[dd.peak]) - fall / 2
    span = price[dd.peak : dd.trough + 1]
    half = dd.peak + int(np.argmax(span <= half_level))
    last_bar = float(price[half - 1] - price[half]) / fall if half > dd.peak and fall > 0 else 1.0
    on = np.flatnonzero(firing[dd.peak : half])
    if not on.size:
        return EarlyWarning(half, None, None, last_bar)
    first = dd.peak + int(on[0])
    done = float(price[dd.peak] - price[first]) / fall if fall > 0 else 0.0
    return EarlyWarning(half, first, max(0.0, done), last_bar)


def warnings(result: PoolResult, layer: LayerResult) -> list[EarlyWarning]:
    """The layer's :func:`warning` of every drawdown of the pool, in time order."""
    mask = result.firing_masks[layer.spec.name]
    return [warning(result.rows.price, dd, mask) for dd in result.drawdowns]


def caught(result: PoolResult, layer: LayerResult) -> tuple[int, int, list[float]]:
    """(drawdowns where the layer fired in (peak, trough], drawdowns, lead hours of those)."""
    times = result.rows.times
    leads: list[float] = []
    for dd in result.drawdowns:
        t_trough = int(times[dd.trough])
        hit = first_fire(layer.entries, int(times[dd.peak]), t_trough)
        if hit is not None:
            leads.append((t_trough - hit) / 3600)
    return len(leads), len(result.drawdowns), leads


def _pct(value: float) -> str:
    return f"{value * 100:+.1f}%"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows under a header, the first column left-aligned, the others right-aligned."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(
        h.ljust(w) if i == 0 else h.rjust(w)
        for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    out = [line, "  ".join("-" * w for w in widths)]
    for r in rows:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return out


def summary_lines(results: Sequence[PoolResult]) -> list[str]:
    """The terminal summary: strategies per pool, then layers per pool."""
    strat_rows = []
    layer_rows = []
    for r in results:
        label = r.name if len(r.name) <= 28 else r.name[:25] + "..."
        strat_rows.append(
            [
                label,
                _pct(r.unhedged.final / r.unhedged.base),
                _pct(r.hedged_all.final / r.hedged_all.base),
                _pct(r.hold.final / r.hold.base),
                f"{r.unhedged.max_drawdown * 100:.1f}%",
                f"{r.hedged_all.max_drawdown * 100:.1f}%",
                f"{r.hold.max_drawdown * 100:.1f}%",
                f"{r.fees[-1]:,.0f}",
            ]
        )
        for layer in r.layers:
            hit, total, leads = caught(r, layer)
            early = warnings(r, layer)
            done = [w.fall_done for w in early if w.fall_done is not None]
            share = layer.time_in_firing / layer.span if layer.span else 0.0
            layer_rows.append(
                [
                    label,
                    layer.spec.name,
                    str(layer.firings),
                    str(layer.notified),
                    f"{share * 100:.1f}%",
                    f"{hit}/{total}",
                    f"{sum(w.before_half for w in early)}/{total}",
                    f"{statistics.median(done) * 100:.0f}%/{max(done) * 100:.0f}%" if done else "-",
                    f"{statistics.median(leads):.0f}h" if leads else "-",
                    _pct(layer.hedged.final / layer.hedged.base) if layer.hedged else "-",
                    f"{layer.hedged.max_drawdown * 100:.1f}%" if layer.hedged else "-",
                    str(len(layer.trades)) if layer.hedged else "-",
                ]
            )
    lines = format_table(
        [
            "pool",
            "LP unhedged",
            "LP hedged",
            "hold",
            "maxDD unh",
            "maxDD hedged",
            "maxDD hold",
            "fees",
        ],
        strat_rows,
    )
    lines.append("")
    lines += format_table(
        [
            "pool",
            "layer",
            "fired",
            "notified",
            "in firing",
            "drawdowns hit",
            "before half",
            "fall done med/max",
            "median lead",
            "hedged by layer",
            "maxDD",
            "trades",
        ],
        layer_rows,
    )
    return lines
