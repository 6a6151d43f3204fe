"""``rules.hedge.lp`` against the Uniswap V3 contracts themselves, on anvil.

For each market case (both token orders, decimals 18/6, 6/18 and 8/18, prices
above and below 1, three fee tiers) one walk is made on the module's dev chain:
positions are minted (full range, concentrated around the price, entirely above
and entirely below it, and three minted with exact desired amounts), then real
swaps move the pool to a list of stops: inside ranges, outside them, exactly on
range edges (reached from either side) and back to the entry ``sqrtPriceX96``.
At each stop the NonfungiblePositionManager is asked what each position holds
(``positions(tokenId)`` and a static ``decreaseLiquidity`` + ``collect``).

The tests then check, from the recorded walk:
(a) the raw amounts the pool would release equal ``rules.hedge.lp.amounts_for_liquidity``
    bit for bit (also the mint amounts with ``round_up`` and the minted liquidity
    with ``liquidity_for_amounts``, and one real burn);
(b) the human-unit ``Position`` built from the same range and entry value agrees
    with the contract within a tolerance derived from the integer rounding;
(c) ``Position.impermanent_loss`` agrees with the IL recomputed from the
    contract's amounts against the entry amounts held.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import pytest

from daemon.demo.devchain import DevChain, PositionAmounts, Token, V3Pool, V3Position
from daemon.demo.devchain.artifacts import Abi, load_artifact
from daemon.demo.devchain.chain import GAS_V3_SWAP, MAX_EXACT_INPUT, NO_DEADLINE
from rules.hedge.lp import Position
from rules.uniswap import (
    TokenPair,
    amounts_for_liquidity,
    liquidity_for_amounts,
    sqrt_ratio_at_tick,
    tick_at_sqrt_ratio,
)
from tests.plugins.chain import DemoChain

pytestmark = pytest.mark.integration


def _npm_abi() -> Abi:
    """The position manager's ABI, read on first use (load_artifact caches it): only
    running these tests needs the npm packages, not collecting them."""
    return load_artifact("NonfungiblePositionManager").abi


#: Whole-token supply of each token a case deploys: far beyond what a walk moves.
SUPPLY = 10**12
#: Attempts at deploying a quote token that sorts on the wanted side of the base
#: (each attempt is a fair coin on a fresh address; 32 misses is ~2e-10).
ORDER_ATTEMPTS = 32
#: float64 error of the human-unit formulas, relative to the larger term they
#: subtract (L / sqrt p for base, L sqrt p for quote; the subtraction cancels, so
#: the error is relative to that term, not to the result): the price and bounds
#: are correctly rounded, then a sqrt, a division, a subtraction and a product
#: each add at most one rounding of 2**-53. 16 roundings leave a wide margin
#: over those ~6.
FLOAT_REL = 16 * 2.0**-53


# -- the cases --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """A V3 market to walk: which tokens, their order, fee tier, start price."""

    id: str
    fee: int
    price: float
    #: Position size in quote units.
    value: float
    #: "demo": the demo WETH/USDC 0.05% pool; "demo-inverted": USDC priced in WETH
    #: on the demo tokens; "new": two freshly deployed tokens in the given order.
    tokens: Literal["demo", "demo-inverted", "new"]
    base_decimals: int = 18
    quote_decimals: int = 6
    base_is_token0: bool = True


CASES = (
    Case("demo-WETH/USDC-0.05%", 500, 3000.0, 1_000_000.0, "demo"),
    Case("USDC/WETH-1%", 10000, 1 / 3000, 300.0, "demo-inverted", 6, 18),
    Case("18/6-base0-0.3%", 3000, 3000.0, 1_000_000.0, "new", 18, 6, True),
    Case("18/6-base1-0.3%", 3000, 3000.0, 1_000_000.0, "new", 18, 6, False),
    Case("8/18-base0-0.05%", 500, 60_000.0, 2_000_000.0, "new", 8, 18, True),
    Case("8/18-base1-1%", 10000, 60_000.0, 2_000_000.0, "new", 8, 18, False),
)

#: Human ranges, as multiples of the entry price, of the positions minted by value
#: (None: full range). "above" is entered below its range (all base), "below"
#: above it (all quote).
RANGES: dict[str, tuple[float, float] | None] = {
    "full": None,
    "concentrated": (0.9, 1.12),
    "above": (1.15, 1.4),
    "below": (0.6, 0.8),
}


@dataclass(frozen=True, slots=True)
class StopPlan:
    """Where to move the pool: a human price (multiple of entry) or a range edge."""

    label: str
    multiple: float | None = None
    #: (position label, "lower" | "upper") in human terms.
    edge: tuple[str, Literal["lower", "upper"]] | None = None
    #: A tick strictly inside the concentrated range, not a range edge.
    inner_tick: bool = False
    entry: bool = False


#: The walk, in order, so every range edge is reached from both sides.
PLAN = (
    StopPlan("inside concentrated", multiple=1.04),
    StopPlan("concentrated upper edge, from below", edge=("concentrated", "upper")),
    StopPlan("inside above-range", multiple=1.25),
    StopPlan("concentrated upper edge, from above", edge=("concentrated", "upper")),
    StopPlan("tick inside concentrated", inner_tick=True),
    StopPlan("concentrated lower edge, from above", edge=("concentrated", "lower")),
    StopPlan("inside below-range", multiple=0.7),
    StopPlan("concentrated lower edge, from below", edge=("concentrated", "lower")),
    StopPlan("below everything", multiple=0.45),
    StopPlan("below-range lower edge, from below", edge=("below", "lower")),
    StopPlan("above everything", multiple=1.7),
    StopPlan("above-range upper edge, from above", edge=("above", "upper")),
    StopPlan("above-range lower edge, from above", edge=("above", "lower")),
    StopPlan("back at entry", entry=True),
)


# -- the recorded walk ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tracked:
    """A minted position with what the NPM said right after the mint."""

    label: str
    position: V3Position
    entry: PositionAmounts
    #: Desired (amount0, amount1) of a mint made with exact amounts, else None.
    desired: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Stop:
    """The pool after one swap of the walk."""

    label: str
    target_sqrt_price_x96: int
    #: The human price asked for (price stops), else None.
    price: float | None
    #: The tick whose sqrt ratio was the target (edge and tick stops), else None.
    tick: int | None
    #: Whether that tick is a position's edge (initialized in the pool).
    edge: bool
    sqrt_price_x96: int
    pool_tick: int
    #: True when the swap lowered the pool's raw price (token0 sold).
    moved_down: bool


@dataclass(frozen=True, slots=True)
class Observation:
    """One position at one stop, as the position manager reports it."""

    stop: Stop
    tracked: Tracked
    npm_liquidity: int
    npm_ticks: tuple[int, int]
    amounts: PositionAmounts


@dataclass(frozen=True, slots=True)
class RealBurn:
    """A sent ``decreaseLiquidity`` of a whole position (DecreaseLiquidity event)."""

    tracked: Tracked
    static: PositionAmounts
    sqrt_price_x96: int
    liquidity: int
    amount0: int
    amount1: int


@dataclass(frozen=True, slots=True)
class Walk:
    case: Case
    pool: V3Pool
    pair: TokenPair
    entry_sqrt_price_x96: int
    tracked: tuple[Tracked, ...]
    stops: tuple[Stop, ...]
    observations: tuple[Observation, ...]
    real_burn: RealBurn


def _hex_bytes(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))


def _event(chain: DevChain, tx_hash: str, name: str) -> dict[str, Any]:
    npm = chain.uniswap.position_manager
    topic = _npm_abi().event_topic(name)
    for log in chain.receipt(tx_hash)["logs"]:
        topics = [_hex_bytes(t) for t in log["topics"]]
        if log["address"].lower() == npm.lower() and topics[0] == topic:
            return _npm_abi().decode_event(name, topics, _hex_bytes(log["data"]))
    raise AssertionError(f"no {name} event in {tx_hash}")


def _deploy_ordered(chain: DevChain, case: Case) -> tuple[Token, Token]:
    """A new base and quote token, base sorting first iff ``case.base_is_token0``."""
    base = chain.deploy_token("BASE", case.base_decimals, SUPPLY)
    for _ in range(ORDER_ATTEMPTS):
        quote = chain.deploy_token("QUOTE", case.quote_decimals, SUPPLY)
        if (int(base.address, 16) < int(quote.address, 16)) == case.base_is_token0:
            return base, quote
    raise AssertionError(f"{case.id}: no quote token sorted on the wanted side")


def _pool_for(devchain: DemoChain, case: Case) -> V3Pool:
    chain, market = devchain.chain, devchain.market
    if case.tokens == "demo":
        return market.v3_500
    if case.tokens == "demo-inverted":
        return chain.create_v3_pool(market.usdc, market.weth, case.fee, case.price)
    base, quote = _deploy_ordered(chain, case)
    pool = chain.create_v3_pool(base, quote, case.fee, case.price)
    assert pool.base_is_token0 == case.base_is_token0
    return pool


def _positions_reading(chain: DevChain, token_id: int) -> tuple[int, tuple[int, int]]:
    npm = chain.uniswap.position_manager
    info = _npm_abi().decode_result(
        "positions", chain.call(npm, _npm_abi().encode_call("positions", token_id))
    )
    return int(info[7]), (int(info[5]), int(info[6]))


def _mint_exact(
    chain: DevChain, pool: V3Pool, ticks: tuple[int, int], desired: tuple[int, int]
) -> V3Position:
    """NPM ``mint`` with exactly these desired amounts (approvals already made)."""
    params = (
        pool.token0.address,
        pool.token1.address,
        pool.fee,
        ticks[0],
        ticks[1],
        desired[0],
        desired[1],
        0,
        0,
        chain.deployer,
        NO_DEADLINE,
    )
    with chain.block():
        tx_hash = chain.send(
            chain.uniswap.position_manager, _npm_abi().encode_call("mint", params), what="NPM mint"
        )
    minted = _event(chain, tx_hash, "IncreaseLiquidity")
    return V3Position(
        token_id=int(minted["tokenId"]),
        pool=pool,
        owner=chain.deployer,
        tick_lower=ticks[0],
        tick_upper=ticks[1],
        liquidity=int(minted["liquidity"]),
        amount0=int(minted["amount0"]),
        amount1=int(minted["amount1"]),
    )


def _swap_to_sqrt_price(chain: DevChain, pool: V3Pool, target: int) -> None:
    """One real swap that leaves the pool exactly at ``target`` (its price limit)."""
    current = chain.pool_state(pool).sqrt_price_x96
    if target == current:
        return
    with chain.block():
        request = chain.swap_request(
            pool, MAX_EXACT_INPUT, zero_for_one=target < current, sqrt_price_limit_x96=target
        )
        chain.send(
            request["to"], _hex_bytes(request["data"]), what="swap to a tick", gas=GAS_V3_SWAP
        )


def _edge_tick(position: V3Position, side: Literal["lower", "upper"], pair: TokenPair) -> int:
    # With the quote as token0 the human price is the inverse of the pool's, so
    # the human lower edge is the pool's upper tick.
    if (side == "lower") != pair.quote_is_token0:
        return position.tick_lower
    return position.tick_upper


def _walk(devchain: DemoChain, case: Case) -> Walk:
    chain = devchain.chain
    pool = _pool_for(devchain, case)
    pair = TokenPair(pool.token0.decimals, pool.token1.decimals, not pool.base_is_token0)
    entry_sqrt = chain.pool_state(pool).sqrt_price_x96
    p0 = pair.price_from_sqrt_price_x96(entry_sqrt)

    minted: list[tuple[str, V3Position, tuple[int, int] | None]] = []
    for label, bounds in RANGES.items():
        if bounds is None:
            position = chain.add_liquidity_v3(pool, value=case.value)
        else:
            low, high = bounds
            position = chain.add_liquidity_v3(
                pool, value=case.value, price_lower=p0 * low, price_upper=high * p0
            )
        minted.append((label, position, None))
    # Exact-amount mints: straddling the price (the NPM takes the smaller of the
    # two liquidities), entirely above and entirely below it in raw ticks.
    spacing = pool.tick_spacing
    t0 = (tick_at_sqrt_ratio(entry_sqrt) // spacing) * spacing
    desired = (
        7 * 10**pool.token0.decimals + 123_457,
        5 * 10**pool.token1.decimals + 98_765,
    )
    for label, ticks in (
        ("exact straddling", (t0 - 7 * spacing, t0 + 5 * spacing)),
        ("exact raw-above", (t0 + 2 * spacing, t0 + 9 * spacing)),
        ("exact raw-below", (t0 - 11 * spacing, t0 - 2 * spacing)),
    ):
        minted.append((label, _mint_exact(chain, pool, ticks, desired), desired))
    assert chain.pool_state(pool).sqrt_price_x96 == entry_sqrt  # mints do not move it
    tracked = tuple(
        Tracked(label, position, chain.position_amounts(position), want)
        for label, position, want in minted
    )
    by_label = {t.label: t.position for t in tracked}

    stops: list[Stop] = []
    observations: list[Observation] = []
    for plan in PLAN:
        before = chain.pool_state(pool).sqrt_price_x96
        price: float | None = None
        tick: int | None = None
        if plan.multiple is not None:
            price = p0 * plan.multiple
            target = pair.sqrt_price_x96(price)
            chain.swap_to_price(pool, price)
        else:
            if plan.edge is not None:
                label, side = plan.edge
                tick = _edge_tick(by_label[label], side, pair)
            elif plan.inner_tick:
                conc = by_label["concentrated"]
                tick = conc.tick_lower + spacing
                assert tick < conc.tick_upper
            else:
                assert plan.entry
            target = entry_sqrt if tick is None else sqrt_ratio_at_tick(tick)
            _swap_to_sqrt_price(chain, pool, target)
        state = chain.pool_state(pool)
        stop = Stop(
            plan.label,
            target,
            price,
            tick,
            plan.edge is not None,
            state.sqrt_price_x96,
            state.tick,
            moved_down=state.sqrt_price_x96 < before,
        )
        stops.append(stop)
        for item in tracked:
            liquidity, ticks = _positions_reading(chain, item.position.token_id)
            amounts = chain.position_amounts(item.position)
            observations.append(Observation(stop, item, liquidity, ticks, amounts))

    # One real burn, to show the static reading is what a sent transaction gets.
    conc_tracked = next(t for t in tracked if t.label == "concentrated")
    conc = conc_tracked.position
    static = chain.position_amounts(conc)
    decrease = _npm_abi().encode_call(
        "decreaseLiquidity", (conc.token_id, conc.liquidity, 0, 0, NO_DEADLINE)
    )
    sqrt_at_burn = chain.pool_state(pool).sqrt_price_x96
    with chain.block():
        tx_hash = chain.send(chain.uniswap.position_manager, decrease, what="NPM decrease")
    burned = _event(chain, tx_hash, "DecreaseLiquidity")
    real_burn = RealBurn(
        conc_tracked,
        static,
        sqrt_at_burn,
        int(burned["liquidity"]),
        int(burned["amount0"]),
        int(burned["amount1"]),
    )
    return Walk(case, pool, pair, entry_sqrt, tracked, tuple(stops), tuple(observations), real_burn)


@pytest.fixture(scope="module", params=CASES, ids=[c.id for c in CASES])
def walk(request: pytest.FixtureRequest, devchain_module: DemoChain) -> Iterator[Walk]:
    """The recorded walk of one case; the chain is reverted after it."""
    chain = devchain_module.chain
    snapshot = chain.snapshot()
    try:
        yield _walk(devchain_module, request.param)
    finally:
        chain.revert(snapshot)


# -- helpers for the comparisons --------------------------------------------------


def _sqrt_bounds(position: V3Position) -> tuple[int, int]:
    return sqrt_ratio_at_tick(position.tick_lower), sqrt_ratio_at_tick(position.tick_upper)


def _units(walk: Walk) -> tuple[float, float]:
    """One raw unit of base and of quote, in human units."""
    return 10.0**-walk.pool.base.decimals, 10.0**-walk.pool.quote.decimals


def _human(walk: Walk, amount0: int, amount1: int) -> tuple[float, float]:
    return walk.pair.amounts_to_human(amount0, amount1)


@dataclass(frozen=True, slots=True)
class Model:
    """The human-unit ``Position`` for a contract position, with its error budget.

    The entry value is measured from what the position releases right after the
    mint, which the pool rounds down (below one raw unit of each token), so
    value_e = L v(p0) - eps with 0 <= eps < (base unit p0 + quote unit), and the
    model's L = value_e / v(p0) = L (1 - eps / value_e): ``rounding_rel``. On top
    of that v(p0) is evaluated in float64 with a cancelling subtraction (for a
    narrow range 1/sqrt(pa) - 1/sqrt(pb) is much smaller than 1/sqrt(pa)), so its
    error is FLOAT_REL relative to the larger terms, not to v(p0): ``float_rel``.
    """

    position: Position
    rounding_rel: float
    float_rel: float

    @property
    def l_rel(self) -> float:
        """Bound on |L_model / L_contract - 1|."""
        return self.rounding_rel + self.float_rel


def _model(walk: Walk, tracked: Tracked, *, v2: bool = False) -> Model:
    """``Position`` from the contract position's range and its entry value."""
    p0 = walk.pair.price_from_sqrt_price_x96(walk.entry_sqrt_price_x96)
    base_e, quote_e = _human(walk, tracked.entry.amount0, tracked.entry.amount1)
    value_e = base_e * p0 + quote_e
    if v2:
        position = Position.full_range(value_e, p0)
    else:
        lower, upper = walk.pair.range_from_ticks(
            tracked.position.tick_lower, tracked.position.tick_upper
        )
        position = Position(lower, upper, value_e, p0)
    base_unit, quote_unit = _units(walk)
    base_scale, quote_scale = _scales(position, p0)
    return Model(
        position,
        rounding_rel=(base_unit * p0 + quote_unit) / value_e,
        float_rel=FLOAT_REL * (base_scale * p0 + quote_scale) / value_e,
    )


def _scales(model: Position, price: float) -> tuple[float, float]:
    """The larger terms of the whitepaper formulas (L / s, L s) at clamped sqrt price s."""
    s = min(max(math.sqrt(price), model.sqrt_lower), model.sqrt_upper)
    return model.liquidity / s, model.liquidity * s


def _truncation(walk: Walk, tracked: Tracked, model: Position) -> tuple[float, float]:
    """Base and quote a V2 formula counts beyond the pool's usable ticks (full range)."""
    lower, upper = walk.pair.range_from_ticks(
        tracked.position.tick_lower, tracked.position.tick_upper
    )
    return model.liquidity / math.sqrt(upper), model.liquidity * math.sqrt(lower)


# -- the walk itself is what it claims to be ---------------------------------------


def test_walk_reaches_every_stop_exactly(walk: Walk) -> None:
    """Each swap leaves the pool on its target, consistent with ``TokenPair``."""
    assert len(walk.stops) == len(PLAN)
    for stop in walk.stops:
        assert stop.sqrt_price_x96 == stop.target_sqrt_price_x96, stop.label
        if stop.price is not None:
            # The harness and TokenPair agree on the floor sqrt price and the tick.
            assert stop.pool_tick == walk.pair.tick(stop.price), stop.label
            back = walk.pair.price_from_sqrt_price_x96(stop.sqrt_price_x96)
            assert back == pytest.approx(stop.price, rel=1e-14), stop.label
        elif stop.edge:
            assert stop.tick is not None
            # Landing on an initialized tick from above crosses it: the pool's tick
            # is then one below (slot0 says "tick - 1" at the tick's sqrt price).
            assert stop.pool_tick == stop.tick - (1 if stop.moved_down else 0), stop.label
        elif stop.tick is not None:
            # An uninitialized tick is not crossed: the pool just stops on it.
            assert stop.pool_tick == stop.tick, stop.label
    # Edges reached from both raw directions (the two orientations swap them).
    edge_moves = {(s.tick, s.moved_down) for s in walk.stops if s.tick is not None}
    conc = next(t.position for t in walk.tracked if t.label == "concentrated")
    for tick in (conc.tick_lower, conc.tick_upper):
        assert {(tick, True), (tick, False)} <= edge_moves


def test_positions_reading_is_the_minted_position(walk: Walk) -> None:
    for obs in walk.observations:
        position = obs.tracked.position
        assert obs.npm_liquidity == position.liquidity
        assert obs.npm_ticks == (position.tick_lower, position.tick_upper)


# -- (a) raw amounts, bit for bit --------------------------------------------------


def test_mint_amounts_are_the_rounded_up_integer_amounts(walk: Walk) -> None:
    for tracked in walk.tracked:
        position = tracked.position
        expected = amounts_for_liquidity(
            position.liquidity, walk.entry_sqrt_price_x96, *_sqrt_bounds(position), round_up=True
        )
        assert (position.amount0, position.amount1) == expected, tracked.label


def test_minted_liquidity_is_liquidity_for_amounts(walk: Walk) -> None:
    exact = [t for t in walk.tracked if t.desired is not None]
    assert len(exact) == 3
    for tracked in exact:
        assert tracked.desired is not None
        expected = liquidity_for_amounts(
            walk.entry_sqrt_price_x96, *_sqrt_bounds(tracked.position), *tracked.desired
        )
        assert tracked.position.liquidity == expected, tracked.label
        assert tracked.position.amount0 <= tracked.desired[0]
        assert tracked.position.amount1 <= tracked.desired[1]


def test_burn_amounts_equal_amounts_for_liquidity(walk: Walk) -> None:
    """(a): the static ``decreaseLiquidity`` amounts (principal, no fees), exactly."""
    rounding_matters = False
    for obs in walk.observations:
        bounds = _sqrt_bounds(obs.tracked.position)
        down = amounts_for_liquidity(obs.npm_liquidity, obs.stop.sqrt_price_x96, *bounds)
        assert (obs.amounts.amount0, obs.amounts.amount1) == down, (
            obs.stop.label,
            obs.tracked.label,
        )
        up = amounts_for_liquidity(
            obs.npm_liquidity, obs.stop.sqrt_price_x96, *bounds, round_up=True
        )
        rounding_matters |= up != down
    # The check tells the rounding directions apart, and the fees the walk's swaps
    # paid were really excluded (they are the collect-minus-decrease part).
    assert rounding_matters
    assert any(o.amounts.fees0 > 0 for o in walk.observations)
    assert any(o.amounts.fees1 > 0 for o in walk.observations)


def test_real_burn_releases_what_the_static_reading_said(walk: Walk) -> None:
    burn = walk.real_burn
    position = burn.tracked.position
    assert burn.liquidity == position.liquidity
    expected = amounts_for_liquidity(
        position.liquidity, burn.sqrt_price_x96, *_sqrt_bounds(position)
    )
    assert (burn.amount0, burn.amount1) == expected
    assert (burn.static.amount0, burn.static.amount1) == expected
    assert burn.amount0 > 0
    assert burn.amount1 > 0


def test_back_at_entry_releases_the_entry_amounts(walk: Walk) -> None:
    final = [o for o in walk.observations if o.stop.label == "back at entry"]
    assert len(final) == len(walk.tracked)
    for obs in final:
        assert obs.stop.sqrt_price_x96 == walk.entry_sqrt_price_x96
        assert (obs.amounts.amount0, obs.amounts.amount1) == (
            obs.tracked.entry.amount0,
            obs.tracked.entry.amount1,
        ), obs.tracked.label


# -- (b) the human-unit model ------------------------------------------------------


def test_model_liquidity_and_entry_amounts_match_the_mint(walk: Walk) -> None:
    base_unit, quote_unit = _units(walk)
    for tracked in walk.tracked:
        model = _model(walk, tracked)
        position, raw = model.position, tracked.position.liquidity
        # L_model = L (1 - eps/value_e) with eps >= 0, up to float error: within
        # l_rel of the contract's L, and above it by float error at most.
        liquidity_raw = position.liquidity_raw(walk.pair)
        assert abs(liquidity_raw - raw) <= raw * model.l_rel + 1, tracked.label
        assert liquidity_raw <= raw * (1 + model.float_rel) + 1, tracked.label
        base_c, quote_c = _human(walk, tracked.entry.amount0, tracked.entry.amount1)
        base_m, quote_m = position.entry_amounts
        base_scale, quote_scale = _scales(position, position.entry_price)
        base_tol = base_unit + model.l_rel * base_c + FLOAT_REL * base_scale
        quote_tol = quote_unit + model.l_rel * quote_c + FLOAT_REL * quote_scale
        assert abs(base_m - base_c) <= base_tol, tracked.label
        assert abs(quote_m - quote_c) <= quote_tol, tracked.label


def _check_model_amounts(walk: Walk, *, v2: bool) -> int:
    """Compare model and contract amounts and value at every stop; returns the count."""
    base_unit, quote_unit = _units(walk)
    checked = 0
    for obs in walk.observations:
        if v2 and not obs.tracked.position.full_range:
            continue
        model = _model(walk, obs.tracked, v2=v2)
        position = model.position
        extra_base, extra_quote = _truncation(walk, obs.tracked, position) if v2 else (0.0, 0.0)
        price = walk.pair.price_from_sqrt_price_x96(obs.stop.sqrt_price_x96)
        base_c, quote_c = _human(walk, obs.amounts.amount0, obs.amounts.amount1)
        base_m, quote_m = position.amounts(price)
        base_scale, quote_scale = _scales(position, price)
        where = (obs.stop.label, obs.tracked.label)
        # Contract: floor(L f) (test (a)), below the exact L f by < 1 raw unit.
        # Model: L (1 +- l_rel) f in float64. So |model - contract| is below one
        # raw unit + l_rel of the amount + the float error of the formula.
        base_tol = base_unit + model.l_rel * base_c + FLOAT_REL * base_scale + extra_base
        quote_tol = quote_unit + model.l_rel * quote_c + FLOAT_REL * quote_scale + extra_quote
        assert abs(base_m - base_c) <= base_tol, where
        assert abs(quote_m - quote_c) <= quote_tol, where
        value_c = base_c * price + quote_c
        value_tol = base_tol * price + quote_tol
        assert abs(position.value_at(price) - value_c) <= value_tol, where
        if obs.tracked.desired is None:
            # The positions minted by value (1e6-2e6 quote) are compared to better
            # than a part per billion: the budget is dominated by one raw unit of
            # an 8-decimal base worth 6e-4 quote, 3e-10 of the value.
            assert value_tol <= 1e-9 * value_c, where
        # Out of the range the contract holds exactly one token; so does the model.
        if not v2 and base_c == 0:
            assert base_m == 0.0, where
        if not v2 and quote_c == 0:
            assert quote_m == 0.0, where
        checked += 1
    return checked


def test_model_amounts_and_value_match_the_contract(walk: Walk) -> None:
    """(b): ``Position`` with the contract's exact range, at every stop."""
    assert _check_model_amounts(walk, v2=False) == len(walk.observations)


def test_full_range_positions_match_the_v2_formula(walk: Walk) -> None:
    """(b): a full-range V3 position is the constant-product ``Position.full_range``."""
    assert _check_model_amounts(walk, v2=True) == len(walk.stops)


# -- (c) impermanent loss ----------------------------------------------------------


def test_impermanent_loss_matches_the_contract(walk: Walk) -> None:
    """(c): IL from the contract's amounts now vs its entry amounts held."""
    base_unit, quote_unit = _units(walk)
    deepest = 0.0
    for obs in walk.observations:
        position = _model(walk, obs.tracked).position
        price = walk.pair.price_from_sqrt_price_x96(obs.stop.sqrt_price_x96)
        base_c, quote_c = _human(walk, obs.amounts.amount0, obs.amounts.amount1)
        base_e, quote_e = _human(walk, obs.tracked.entry.amount0, obs.tracked.entry.amount1)
        hold_c = base_e * price + quote_e
        value_c = base_c * price + quote_c
        il_c = float(Fraction(value_c) / Fraction(hold_c) - 1)
        il_m = position.impermanent_loss(price)
        # L cancels in value / hold, so the model's L error does not enter. The
        # contract's value and hold each sit below the exact ones by less than one
        # raw unit of each token (u), and value <= hold, so the contract's ratio is
        # within 2 u / hold of the exact one. The model adds the float error of its
        # amounts now and at entry, relative to the larger terms of each.
        unit = base_unit * price + quote_unit
        base_scale, quote_scale = _scales(position, price)
        base_scale_e, quote_scale_e = _scales(position, position.entry_price)
        float_err = (
            FLOAT_REL
            * (base_scale * price + quote_scale + base_scale_e * price + quote_scale_e)
            / hold_c
        )
        where = (obs.stop.label, obs.tracked.label)
        assert abs(il_m - il_c) <= 2 * unit / hold_c + float_err, where
        assert il_m <= 0.0, where
        assert il_c <= 2 * unit / hold_c, where
        deepest = min(deepest, il_c)
    assert deepest < -0.01  # the walk made real losses, not only rounding noise
