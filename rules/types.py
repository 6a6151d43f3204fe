"""Value types shared by the pure core, the adapters and the daemon.

Guarantees kept here:
- every type is a frozen, slotted dataclass that checks itself in ``__post_init__``;
- time is an ``int`` of unix seconds (block or data time), never read from a clock;
- amounts and prices that leave this module are ``float`` in human units of the
  pool's quote token, except the raw integer fields of :class:`SwapRecord`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Feature names usable in rule expressions (DESIGN.md, "Volatility proxies").
#: The feature engine produces every one of them for every pool; the expression
#: checker rejects any other name.
FEATURE_NAMES: tuple[str, ...] = (
    "price",
    "ret",
    "move_sigma",
    "move_sigma_1h",
    "move_sigma_4h",
    "move_sigma_24h",
    "drawdown_24h",
    "realized_vol",
    "rsi",
    "macd",
    "macd_signal",
    "macd_hist",
    "bb_upper",
    "bb_middle",
    "bb_lower",
    "bb_pos",
    "tvl",
    "tick_tvl",
    "volume_24h",
    "tvl_volume_ratio",
    "iv",
    "tvl_drain_1h",
    "mev_score",
    "breadth",
    "corr",
    "threshold_scale",
)


class ValidationError(ValueError):
    """A value type was built with values that break its invariants."""


def _finite_or_nan(name: str, value: float) -> None:
    if math.isinf(value):
        raise ValidationError(f"{name} must be finite or NaN, got {value!r}")


@dataclass(frozen=True, slots=True)
class PoolId:
    """A pool on a chain. ``address`` is the EIP-55 checksummed address."""

    chain: str
    address: str

    def __post_init__(self) -> None:
        if not self.chain:
            raise ValidationError("PoolId.chain must not be empty")
        if not (self.address.startswith("0x") and len(self.address) == 42):
            raise ValidationError(
                f"PoolId.address must be a 0x-prefixed 20-byte hex address, got {self.address!r}"
            )

    def __str__(self) -> str:
        return f"{self.chain}/{self.address}"


@dataclass(frozen=True, slots=True)
class PoolSample:
    """One observation of one pool at one block (live) or one data row (replay).

    ``volume`` and ``swaps`` count what happened since the previous sample of the
    same pool (so summing them over samples never double counts); ``mev_swaps`` is
    the number of those swaps that took part in a sandwich-like pattern or an
    intra-block reverted price move (see :mod:`rules.features.mev`).
    """

    pool: PoolId
    time: int
    block: int
    block_hash: str
    price: float
    tvl: float = math.nan
    tick_tvl: float = math.nan
    volume: float = 0.0
    swaps: int = 0
    mev_swaps: int = 0

    def __post_init__(self) -> None:
        if self.time < 0:
            raise ValidationError(f"PoolSample.time must be >= 0, got {self.time}")
        if not (self.price > 0 and math.isfinite(self.price)):
            raise ValidationError(
                f"PoolSample.price must be a positive finite number, got {self.price!r}"
            )
        _finite_or_nan("PoolSample.tvl", self.tvl)
        _finite_or_nan("PoolSample.tick_tvl", self.tick_tvl)
        if not (self.volume >= 0 and math.isfinite(self.volume)):
            raise ValidationError(f"PoolSample.volume must be >= 0 and finite, got {self.volume!r}")
        if self.swaps < 0 or self.mev_swaps < 0 or self.mev_swaps > self.swaps:
            raise ValidationError(
                "PoolSample swap counts must satisfy 0 <= mev_swaps <= swaps, "
                f"got {self.mev_swaps}/{self.swaps}"
            )


@dataclass(frozen=True, slots=True)
class SwapRecord:
    """One decoded Swap event, kept per swap for volume and MEV detection.

    ``amount0``/``amount1`` are the raw signed integers of the event (positive: the
    pool received that token). ``direction`` is +1 when the swap bought the base
    token with quote (price of base in quote goes up), -1 when it sold base.
    ``volume_quote`` is the absolute quote-token amount in human units.
    ``price_after`` is the pool price (quote per base) after the swap.
    """

    pool: PoolId
    block: int
    tx_index: int
    log_index: int
    tx_hash: str
    sender: str
    recipient: str
    amount0: int
    amount1: int
    direction: int
    volume_quote: float
    price_after: float

    def __post_init__(self) -> None:
        if self.direction not in (-1, 0, 1):
            raise ValidationError(f"SwapRecord.direction must be -1, 0 or 1, got {self.direction}")
        if self.block < 0 or self.tx_index < 0 or self.log_index < 0:
            raise ValidationError("SwapRecord block, tx_index and log_index must be >= 0")
