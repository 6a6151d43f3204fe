"""What an LP position is exposed to at a price: value, delta, gamma, and the base it
would hold at the level a hedge protects.

Guarantees kept here:
- ``value`` is in quote, ``delta`` (d value / d price) and ``delta_at_lower`` in base
  units, ``gamma`` in base per quote; they are :class:`~rules.hedge.lp.Position`'s own
  figures, nothing restated;
- ``region`` is ``"below"`` (all base), ``"in"`` or ``"above"`` (all quote) the range; a
  full-range (V2) position is always ``"in"``;
- the *protection price* is where a hedge starts to pay: the range's lower bound for a
  V3 position, the price itself once it is below the range, and ``price *
  full_range_floor`` for a full-range position (it has no lower bound);
- ``delta_at_lower`` is the base held at the protection price: a range above the price
  holds no base now but all of it there, and the program sizes puts on this figure;
- the scalar call and the array call give the same numbers (the array call is the
  position's numpy path, one call per figure).

Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from rules.hedge.lp import FloatArray, Position
from rules.types import ValidationError

__all__ = [
    "DEFAULT_FULL_RANGE_FLOOR",
    "Exposure",
    "ExposureSeries",
    "Region",
    "exposure",
    "exposure_series",
    "protection_price",
]

Region = Literal["below", "in", "above"]
#: Where a full-range position's protection starts, as a share of the price.
DEFAULT_FULL_RANGE_FLOOR = 0.8
#: ``ExposureSeries.region`` codes.
BELOW, IN, ABOVE = -1, 0, 1


def _check_floor(full_range_floor: float) -> None:
    if not 0 < full_range_floor <= 1:
        raise ValidationError(f"full_range_floor must be in (0, 1], got {full_range_floor!r}")


def _lower(position: Position) -> float:
    return 0.0 if position.lower is None else float(position.lower)


def protection_price(
    position: Position, price: float, *, full_range_floor: float = DEFAULT_FULL_RANGE_FLOOR
) -> float:
    """The price below which a hedge of this position pays (module doc)."""
    _check_floor(full_range_floor)
    if position.is_full_range:
        return float(price) * full_range_floor
    return min(_lower(position), float(price))


@dataclass(frozen=True, slots=True)
class Exposure:
    """One position at one price (units: module doc)."""

    price: float
    value: float
    delta: float
    gamma: float
    region: Region
    protection_price: float
    delta_at_lower: float

    def to_payload(self) -> dict[str, object]:
        """JSON-friendly figures."""
        return {
            "price": self.price,
            "value": self.value,
            "delta": self.delta,
            "gamma": self.gamma,
            "region": self.region,
            "protection_price": self.protection_price,
            "delta_at_lower": self.delta_at_lower,
        }


def exposure(
    position: Position, price: float, *, full_range_floor: float = DEFAULT_FULL_RANGE_FLOOR
) -> Exposure:
    """The exposure of ``position`` (entry price known) at ``price``."""
    p = float(price)
    if not 0 < p < math.inf:
        raise ValueError(f"price must be positive and finite, got {price!r}")
    region: Region = "in"
    if not position.in_range(p):
        region = "below" if math.sqrt(p) < position.sqrt_lower else "above"
    floor_price = protection_price(position, p, full_range_floor=full_range_floor)
    return Exposure(
        price=p,
        value=position.value_at(p),
        delta=position.delta(p),
        gamma=position.gamma(p),
        region=region,
        protection_price=floor_price,
        delta_at_lower=position.delta(floor_price),
    )


@dataclass(frozen=True, slots=True)
class ExposureSeries:
    """:class:`Exposure` for every price of an array (``region``: -1 below, 0 in, 1 above)."""

    value: FloatArray
    delta: FloatArray
    gamma: FloatArray
    region: NDArray[np.int8]
    protection_price: FloatArray
    delta_at_lower: FloatArray


def exposure_series(
    position: Position,
    prices: FloatArray,
    *,
    full_range_floor: float = DEFAULT_FULL_RANGE_FLOOR,
) -> ExposureSeries:
    """:func:`exposure` over an array of prices, vectorised."""
    _check_floor(full_range_floor)
    p = np.asarray(prices, dtype=np.float64)
    sqrt_p = np.sqrt(p)
    region = np.where(
        sqrt_p < position.sqrt_lower, BELOW, np.where(sqrt_p < position.sqrt_upper, IN, ABOVE)
    ).astype(np.int8)
    if position.is_full_range:
        floor_price = p * full_range_floor
    else:
        floor_price = np.minimum(_lower(position), p)
    return ExposureSeries(
        value=np.asarray(position.value_at(p), dtype=np.float64),
        delta=np.asarray(position.delta(p), dtype=np.float64),
        gamma=np.asarray(position.gamma(p), dtype=np.float64),
        region=region,
        protection_price=floor_price,
        delta_at_lower=np.asarray(position.delta(floor_price), dtype=np.float64),
    )
