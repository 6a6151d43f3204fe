"""Small frozen handles for what the dev chain deploys, and the states it reads.

Guarantees:
- every handle is a frozen, slotted dataclass that checks itself on construction;
- addresses are EIP-55 checksummed (they are normalised on construction);
- ``price`` everywhere means the human price of a pool's ``base`` token in units of
  its ``quote`` token; ``token0``/``token1`` are Uniswap's address-sorted order;
- raw amounts are ``int`` base units (``*_raw`` or documented as raw), human
  amounts are ``float``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from eth_utils.address import is_address, to_checksum_address

from rules.uniswap import TokenPair, full_range_ticks


def checksum(address: str) -> str:
    """EIP-55 form of ``address``; raises ValueError if it is not a 20-byte address."""
    if not is_address(address):
        raise ValueError(f"not an address: {address!r}")
    return str(to_checksum_address(address))


@dataclass(frozen=True, slots=True)
class Block:
    """A mined block: number, hash (0x hex) and timestamp (unix seconds)."""

    number: int
    hash: str
    timestamp: int

    def __post_init__(self) -> None:
        if self.number < 0 or self.timestamp < 0:
            raise ValueError(f"block number and timestamp must be >= 0: {self!r}")
        if not (self.hash.startswith("0x") and len(self.hash) == 66):
            raise ValueError(f"block hash must be 32 bytes of 0x hex, got {self.hash!r}")


@dataclass(frozen=True, slots=True)
class Token:
    """An ERC20 token on the dev chain."""

    address: str
    symbol: str
    decimals: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", checksum(self.address))
        if not self.symbol:
            raise ValueError("Token.symbol must not be empty")
        if not 0 <= self.decimals <= 255:
            raise ValueError(f"Token.decimals must fit a uint8, got {self.decimals}")

    def to_raw(self, amount: float | int | Decimal) -> int:
        """Base units of a human ``amount`` (rounded to the nearest unit)."""
        scaled = Decimal(str(amount)) * (Decimal(10) ** self.decimals)
        return int(scaled.to_integral_value())

    def to_human(self, raw: int) -> float:
        """Human amount of ``raw`` base units."""
        return float(Decimal(raw) / (Decimal(10) ** self.decimals))


def _sorted_pair(token0: Token, token1: Token, base: Token, quote: Token, kind: str) -> None:
    if int(token0.address, 16) >= int(token1.address, 16):
        raise ValueError(f"{kind}: token0 must have the lower address")
    if {base.address, quote.address} != {token0.address, token1.address}:
        raise ValueError(f"{kind}: base and quote must be the pool's two tokens")
    if base.address == quote.address:
        raise ValueError(f"{kind}: base and quote must differ")


@dataclass(frozen=True, slots=True)
class V3Pool:
    """A Uniswap V3 pool. ``fee`` is in hundredths of a basis point (500 = 0.05%)."""

    address: str
    token0: Token
    token1: Token
    fee: int
    tick_spacing: int
    base: Token
    quote: Token

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", checksum(self.address))
        _sorted_pair(self.token0, self.token1, self.base, self.quote, "V3Pool")
        if not 0 < self.fee < 1_000_000:
            raise ValueError(f"V3Pool.fee must be in (0, 1e6), got {self.fee}")
        if self.tick_spacing <= 0:
            raise ValueError(f"V3Pool.tick_spacing must be positive, got {self.tick_spacing}")

    @property
    def base_is_token0(self) -> bool:
        """True when prices are token0 expressed in token1."""
        return self.base.address == self.token0.address

    @property
    def token_pair(self) -> TokenPair:
        """The raw <-> human price conversions of this pool's tokens."""
        return TokenPair.of(
            base_is_token0=self.base_is_token0,
            decimals0=self.token0.decimals,
            decimals1=self.token1.decimals,
        )

    @property
    def name(self) -> str:
        """``BASE/QUOTE 0.05%``."""
        return f"{self.base.symbol}/{self.quote.symbol} {self.fee / 10_000:g}%"


@dataclass(frozen=True, slots=True)
class V2Pair:
    """A Uniswap V2 pair; the fee is always 0.3% (``fee`` = 3000, as in V3 units)."""

    address: str
    token0: Token
    token1: Token
    base: Token
    quote: Token
    fee: int = 3000

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", checksum(self.address))
        _sorted_pair(self.token0, self.token1, self.base, self.quote, "V2Pair")
        if self.fee != 3000:
            raise ValueError("Uniswap V2 pairs always charge 0.3% (fee=3000)")

    @property
    def base_is_token0(self) -> bool:
        """True when prices are token0 expressed in token1."""
        return self.base.address == self.token0.address

    @property
    def token_pair(self) -> TokenPair:
        """The raw <-> human price conversions of this pool's tokens."""
        return TokenPair.of(
            base_is_token0=self.base_is_token0,
            decimals0=self.token0.decimals,
            decimals1=self.token1.decimals,
        )

    @property
    def name(self) -> str:
        """``BASE/QUOTE V2``."""
        return f"{self.base.symbol}/{self.quote.symbol} V2"


#: Either kind of pool the harness drives.
Pool = V3Pool | V2Pair


@dataclass(frozen=True, slots=True)
class V3Position:
    """An NFT liquidity position minted through the NonfungiblePositionManager."""

    token_id: int
    pool: V3Pool
    owner: str
    tick_lower: int
    tick_upper: int
    liquidity: int
    amount0: int
    amount1: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "owner", checksum(self.owner))
        if self.token_id <= 0 or self.liquidity <= 0:
            raise ValueError(f"V3Position needs a token_id and liquidity > 0: {self!r}")
        if not self.tick_lower < self.tick_upper:
            raise ValueError("V3Position.tick_lower must be below tick_upper")
        if self.tick_lower % self.pool.tick_spacing or self.tick_upper % self.pool.tick_spacing:
            raise ValueError("V3Position ticks must be multiples of the pool's tick spacing")
        if self.amount0 < 0 or self.amount1 < 0:
            raise ValueError("V3Position amounts must be >= 0")

    @property
    def full_range(self) -> bool:
        """True for a position spanning every usable tick."""
        return (self.tick_lower, self.tick_upper) == full_range_ticks(self.pool.tick_spacing)


@dataclass(frozen=True, slots=True)
class V3PoolState:
    """``slot0`` and ``liquidity`` of a V3 pool, plus the human price of base in quote."""

    sqrt_price_x96: int
    tick: int
    liquidity: int
    price: float

    def __post_init__(self) -> None:
        if self.sqrt_price_x96 <= 0 or self.liquidity < 0 or not self.price > 0:
            raise ValueError(f"inconsistent V3 pool state: {self!r}")


@dataclass(frozen=True, slots=True)
class V2PairState:
    """Reserves of a V2 pair (raw) and the human price of base in quote."""

    reserve0: int
    reserve1: int
    price: float

    def __post_init__(self) -> None:
        if self.reserve0 <= 0 or self.reserve1 <= 0 or not self.price > 0:
            raise ValueError(f"inconsistent V2 pair state: {self!r}")


@dataclass(frozen=True, slots=True)
class PositionAmounts:
    """What the position manager itself says a position is worth right now.

    ``amount0``/``amount1`` are the raw tokens that burning all the liquidity would
    release; ``fees0``/``fees1`` the raw fees it would collect on top.
    ``base``/``quote`` (and ``base_fees``/``quote_fees``) are the same in human units.
    """

    token_id: int
    amount0: int
    amount1: int
    fees0: int
    fees1: int
    base: float
    quote: float
    base_fees: float
    quote_fees: float

    def __post_init__(self) -> None:
        if min(self.amount0, self.amount1, self.fees0, self.fees1) < 0:
            raise ValueError(f"position amounts must be >= 0: {self!r}")

    def value_in_quote(self, price: float) -> float:
        """Principal plus fees valued at ``price`` (base in quote)."""
        return (self.base + self.base_fees) * price + self.quote + self.quote_fees


@dataclass(frozen=True, slots=True)
class UniswapDeployment:
    """Addresses of the Uniswap contracts deployed on the dev chain."""

    v3_factory: str
    position_manager: str
    swap_router: str
    v2_factory: str
    weth9: str

    def __post_init__(self) -> None:
        for field in ("v3_factory", "position_manager", "swap_router", "v2_factory", "weth9"):
            object.__setattr__(self, field, checksum(getattr(self, field)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping of the addresses."""
        return {
            "v3_factory": self.v3_factory,
            "position_manager": self.position_manager,
            "swap_router": self.swap_router,
            "v2_factory": self.v2_factory,
            "weth9": self.weth9,
        }
