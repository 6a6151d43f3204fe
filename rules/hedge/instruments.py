"""The hedge instruments and their cost models: a perpetual-futures short and option
structures (protective put, put spread, collar) priced with :mod:`~rules.hedge.volmodel`.

Guarantees kept here:
- each instrument is a pure step ``(spec, book, market at time t) -> (book, fill)``;
  books and fills are frozen values; the time is an argument;
- **perp**: the size is in base units (negative: short). Each step first marks the held
  size from the last price (``pnl``), then pays funding for every funding time
  (multiples of ``funding_interval`` seconds since the epoch: 00, 08, 16 UTC) passed
  since the last step, ``-size * price * rate`` each (positive funding: shorts
  receive), then trades to the target only when the hedge error exceeds ``band`` times
  the reference delta (or the target is 0), paying ``taker_fee`` on the traded value;
- **options**: a structure is bought on ``notional`` base units: a put at ``strike``,
  a put spread (long ``strike``, short ``strike * spread_width``), or a collar (long
  put, short call at ``price * call_moneyness``: only when asked for). Buying pays the
  model's ask on long legs and gets its bid on short legs; selling the reverse; the
  difference from the mid is booked as ``spread``. Every step marks the book at the
  model's mid with the realized vol known then; an expired structure settles at its
  intrinsic value; one with less than ``roll_before`` seconds left is sold (and bought
  again at a fresh strike and expiry if the target still wants it);
- the book is moved to the target notional only when the gap exceeds ``band`` times
  the target (or the target is 0); excess is sold newest first.

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from rules.hedge.volmodel import CALIBRATED, DAY, YEAR, VolModel
from rules.types import ValidationError

__all__ = [
    "STRUCTURES",
    "OptionBook",
    "OptionFill",
    "OptionHolding",
    "OptionSpec",
    "PerpBook",
    "PerpFill",
    "PerpSpec",
    "option_step",
    "option_value",
    "perp_step",
]

Structure = Literal["put", "put_spread", "collar"]
STRUCTURES: tuple[Structure, ...] = ("put", "put_spread", "collar")
FUNDING_INTERVAL = 8 * 3600


# -- perpetual futures --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PerpSpec:
    """``band``: rebalance when |target - size| > band * delta; ``taker_fee``: a fraction
    of the traded value; ``funding_interval``: seconds between funding payments."""

    band: float = 0.1
    taker_fee: float = 0.0005
    funding_interval: int = FUNDING_INTERVAL

    def __post_init__(self) -> None:
        if not 0 <= self.band < 1:
            raise ValidationError(f"perp.band must be in [0, 1), got {self.band!r}")
        if not 0 <= self.taker_fee < 0.1:
            raise ValidationError(f"perp.taker_fee must be in [0, 0.1), got {self.taker_fee!r}")
        if self.funding_interval <= 0:
            raise ValidationError("perp.funding_interval must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class PerpBook:
    """The perp position (base units, negative = short) as of ``time`` at ``price``."""

    size: float = 0.0
    time: int | None = None
    price: float = math.nan


@dataclass(frozen=True, slots=True)
class PerpFill:
    """What one step did: the trade (base units), mark P&L, fee paid, funding received."""

    trade: float
    pnl: float
    fee: float
    funding: float


def perp_step(
    spec: PerpSpec,
    book: PerpBook,
    *,
    time: int,
    price: float,
    target_size: float,
    reference_delta: float,
    funding_rate: float = 0.0,
) -> tuple[PerpBook, PerpFill]:
    """Mark, pay funding, and rebalance to ``target_size`` if outside the band."""
    pnl = funding = 0.0
    if book.time is not None and book.size != 0.0:
        pnl = book.size * (price - book.price)
        passed = time // spec.funding_interval - book.time // spec.funding_interval
        if passed > 0 and math.isfinite(funding_rate):
            funding = -book.size * price * funding_rate * passed
    error = target_size - book.size
    trade = 0.0
    if (target_size == 0.0 and book.size != 0.0) or abs(error) > spec.band * abs(reference_delta):
        trade = error
    fee = spec.taker_fee * abs(trade) * price
    return PerpBook(book.size + trade, int(time), float(price)), PerpFill(trade, pnl, fee, funding)


# -- options ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OptionSpec:
    """How the program buys options (times in seconds, moneyness as a share of price).

    ``full_range_moneyness`` is not used here (the program's protection price carries
    it); ``cheap_ratio``: buy ``cheap_share`` of the delta at the lower bound whenever
    30-day IV <= cheap_ratio * realized vol, whatever the layers say (None: never).
    """

    structure: Structure = "put"
    tenor: int = 30 * DAY
    roll_before: int = 7 * DAY
    spread_width: float = 0.75
    call_moneyness: float | None = None
    band: float = 0.1
    cheap_ratio: float | None = None
    cheap_share: float = 0.0

    def __post_init__(self) -> None:
        if self.structure not in STRUCTURES:
            raise ValidationError(
                f"options.structure must be one of {', '.join(STRUCTURES)}, got {self.structure!r}"
            )
        if not 0 < self.roll_before < self.tenor:
            raise ValidationError("options.roll_before must be in (0, tenor)")
        if not 0 < self.spread_width < 1:
            raise ValidationError(
                f"options.spread_width must be in (0, 1), got {self.spread_width!r}"
            )
        if self.structure == "collar":
            if self.call_moneyness is None or not self.call_moneyness > 1:
                raise ValidationError("options.call_moneyness (> 1) is required for a collar")
        elif self.call_moneyness is not None:
            raise ValidationError("options.call_moneyness only applies to a collar")
        if not 0 <= self.band < 1:
            raise ValidationError(f"options.band must be in [0, 1), got {self.band!r}")
        if self.cheap_ratio is not None and not self.cheap_ratio > 0:
            raise ValidationError("options.cheap_ratio must be > 0")
        if not 0 <= self.cheap_share <= 1:
            raise ValidationError("options.cheap_share must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class OptionHolding:
    """One structure held: long put ``strike``; short put ``low_strike`` (put spread) or
    short call ``call_strike`` (collar); ``notional`` base units; bought at ``opened``."""

    structure: Structure
    strike: float
    expiry: int
    notional: float
    opened: int
    low_strike: float | None = None
    call_strike: float | None = None

    def to_payload(self) -> dict[str, object]:
        out: dict[str, object] = {
            "structure": self.structure,
            "strike": self.strike,
            "expiry": self.expiry,
            "notional": self.notional,
        }
        if self.low_strike is not None:
            out["low_strike"] = self.low_strike
        if self.call_strike is not None:
            out["call_strike"] = self.call_strike
        return out


@dataclass(frozen=True, slots=True)
class OptionBook:
    """The structures held, oldest first."""

    holdings: tuple[OptionHolding, ...] = ()

    @property
    def notional(self) -> float:
        return sum(h.notional for h in self.holdings)


@dataclass(frozen=True, slots=True)
class OptionFill:
    """One step: structures bought and sold (rolls included), cash at mid (``premiums``:
    paid at mid for buys minus got at mid for sales), ``spread`` paid against the mid,
    ``settled`` cash from expiries, and the book's mid value after the step."""

    bought: tuple[OptionHolding, ...]
    sold: tuple[OptionHolding, ...]
    premiums: float
    spread: float
    settled: float
    mark: float


def _legs(h: OptionHolding) -> list[tuple[Literal["call", "put"], float, float]]:
    # (kind, strike, sign) per unit of the structure's notional
    legs: list[tuple[Literal["call", "put"], float, float]] = [("put", h.strike, 1.0)]
    if h.low_strike is not None:
        legs.append(("put", h.low_strike, -1.0))
    if h.call_strike is not None:
        legs.append(("call", h.call_strike, -1.0))
    return legs


def _intrinsic(h: OptionHolding, price: float) -> float:
    total = 0.0
    for kind, strike, sign in _legs(h):
        payoff = max(strike - price, 0.0) if kind == "put" else max(price - strike, 0.0)
        total += sign * payoff
    return total * h.notional


def option_value(
    h: OptionHolding, model: VolModel, *, time: int, price: float, rv_short: float
) -> tuple[float, float, float]:
    """``(mid, buy, sell)`` of the whole holding: mid value, cost to buy it, proceeds of
    selling it (long legs at ask/bid, short legs at bid/ask)."""
    years = (h.expiry - time) / YEAR
    if years <= 0:
        value = _intrinsic(h, price)
        return value, value, value
    mid = buy = sell = 0.0
    for kind, strike, sign in _legs(h):
        q = model.quote(kind, rv_short, price, strike, years)
        mid += sign * q.mid
        buy += sign * (q.ask if sign > 0 else q.bid)
        sell += sign * (q.bid if sign > 0 else q.ask)
    return mid * h.notional, buy * h.notional, sell * h.notional


def _mark(h: OptionHolding, model: VolModel, time: int, price: float, rv_short: float) -> float:
    years = (h.expiry - time) / YEAR
    if years <= 0:
        return _intrinsic(h, price)
    total = 0.0
    for kind, strike, sign in _legs(h):
        total += sign * model.mid(kind, rv_short, price, strike, years)
    return total * h.notional


def option_step(
    spec: OptionSpec,
    book: OptionBook,
    *,
    time: int,
    price: float,
    rv_short: float,
    strike: float,
    target_notional: float,
    model: VolModel = CALIBRATED,
) -> tuple[OptionBook, OptionFill]:
    """Settle, roll, move the book towards ``target_notional`` (new structures at
    ``strike``), and mark it."""
    held: list[OptionHolding] = []
    sold: list[OptionHolding] = []
    bought: list[OptionHolding] = []
    premiums = spread = settled = 0.0

    def sell(h: OptionHolding) -> None:
        nonlocal premiums, spread
        mid, _, proceeds = option_value(h, model, time=time, price=price, rv_short=rv_short)
        premiums -= mid
        spread += mid - proceeds
        sold.append(h)

    for h in book.holdings:
        if time >= h.expiry:
            settled += _intrinsic(h, price)
        elif h.expiry - time < spec.roll_before:
            sell(h)
        else:
            held.append(h)
    target = max(float(target_notional), 0.0)
    notional = sum(h.notional for h in held)
    gap = target - notional
    if gap > spec.band * target and gap > 0:
        new = OptionHolding(
            structure=spec.structure,
            strike=float(strike),
            expiry=int(time) + spec.tenor,
            notional=gap,
            opened=int(time),
            low_strike=float(strike) * spec.spread_width
            if spec.structure == "put_spread"
            else None,
            call_strike=(
                float(price) * spec.call_moneyness if spec.call_moneyness is not None else None
            ),
        )
        mid, cost, _ = option_value(new, model, time=time, price=price, rv_short=rv_short)
        premiums += mid
        spread += cost - mid
        bought.append(new)
        held.append(new)
    elif -gap > spec.band * notional or (target == 0.0 and notional > 0):
        excess = -gap
        while excess > 0 and held:
            last = held.pop()
            if last.notional <= excess + 1e-12 * last.notional:
                sell(last)
                excess -= last.notional
            else:
                sell(replace(last, notional=excess))
                held.append(replace(last, notional=last.notional - excess))
                excess = 0.0
    mark = sum(_mark(h, model, time, price, rv_short) for h in held)
    fill = OptionFill(tuple(bought), tuple(sold), premiums, spread, settled, mark)
    return OptionBook(tuple(held)), fill
