"""rules.features.mev: constructed sandwiches and reverted moves, and the real Swap logs
of 2024-01-05."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

import pytest

from rules.features.mev import (
    MevParams,
    classify_swaps,
    find_reverted_moves,
    find_sandwiches,
    mev_flags,
)
from rules.types import PoolId, SwapRecord

POOL = PoolId("ethereum", "0x88e6A0c2dDD26FEEb64F039a2c41296FcB3f5640")
OTHER = PoolId("ethereum", "0x11b815efB8f581194ae79006d24E0d814B7697F6")
BOT = "0x00000000000000000000000000000000000000b0"
USER = "0x00000000000000000000000000000000000000a1"
USER2 = "0x00000000000000000000000000000000000000a2"


def _swap(
    block: int,
    tx: int,
    actor: str,
    direction: int,
    base: float,
    price: float,
    *,
    pool: PoolId = POOL,
    log: int | None = None,
) -> SwapRecord:
    """A swap of ``base`` units of the base token (token1 here), quote = token0."""
    base_raw = int(base * 1e18)
    quote_raw = int(base * price * 1e6)
    # direction +1 buys base: the pool receives quote (amount0 > 0) and pays base out.
    amount0, amount1 = (quote_raw, -base_raw) if direction > 0 else (-quote_raw, base_raw)
    return SwapRecord(
        pool=pool,
        block=block,
        tx_index=tx,
        log_index=tx * 10 if log is None else log,
        tx_hash=f"0x{block:032x}{tx:032x}",
        sender=actor,
        recipient=actor,
        amount0=amount0,
        amount1=amount1,
        direction=direction,
        volume_quote=abs(amount0) / 1e6,
        price_after=price,
    )


P0 = 2000.0


def _up(bps: float) -> float:
    return P0 * math.exp(bps / 1e4)


# Each case: name, swaps, expected mev flags. Prices move by a few bps only, below the
# reverted-move threshold, unless the case is about reverted moves.
CASES: list[tuple[str, list[SwapRecord], list[bool]]] = [
    (
        "classic sandwich",
        [
            _swap(9, 1, USER2, 1, 0.1, P0),
            _swap(10, 0, BOT, 1, 10.0, _up(3)),
            _swap(10, 1, USER, 1, 5.0, _up(4)),
            _swap(10, 2, BOT, -1, 10.0, _up(2)),
        ],
        [False, True, True, True],
    ),
    (
        "two victims, back-run keeps a small profit in base",
        [
            _swap(10, 0, BOT, -1, 10.0, _up(-3)),
            _swap(10, 1, USER, -1, 5.0, _up(-4)),
            _swap(10, 2, USER2, -1, 2.0, _up(-5)),
            _swap(10, 3, BOT, 1, 10.3, _up(-2)),
        ],
        [True, True, True, True],
    ),
    (
        "back-run does not unwind the front-run",
        [
            _swap(10, 0, BOT, 1, 10.0, _up(3)),
            _swap(10, 1, USER, 1, 5.0, _up(4)),
            _swap(10, 2, BOT, -1, 5.0, _up(3)),
        ],
        [False, False, False],
    ),
    (
        "front and back in one transaction",
        [
            _swap(10, 0, BOT, 1, 10.0, _up(3), log=1),
            _swap(10, 0, USER, 1, 5.0, _up(4), log=2),
            _swap(10, 0, BOT, -1, 10.0, _up(2), log=3),
        ],
        [False, False, False],
    ),
    (
        "victim in the other direction",
        [
            _swap(10, 0, BOT, 1, 10.0, _up(3)),
            _swap(10, 1, USER, -1, 5.0, _up(2)),
            _swap(10, 2, BOT, -1, 10.0, _up(1)),
        ],
        [False, False, False],
    ),
    (
        "no victim in between",
        [_swap(10, 0, BOT, 1, 10.0, _up(3)), _swap(10, 1, BOT, -1, 10.0, _up(1))],
        [False, False],
    ),
    (
        "legs in two blocks",
        [
            _swap(10, 5, BOT, 1, 10.0, _up(3)),
            _swap(10, 6, USER, 1, 5.0, _up(4)),
            _swap(11, 0, BOT, -1, 10.0, _up(2)),
        ],
        [False, False, False],
    ),
    (
        "legs in two pools",
        [
            _swap(10, 0, BOT, 1, 10.0, _up(3)),
            _swap(10, 1, USER, 1, 5.0, _up(4)),
            _swap(10, 2, BOT, -1, 10.0, _up(2), pool=OTHER),
        ],
        [False, False, False],
    ),
    (
        "input order does not matter",
        [
            _swap(10, 2, BOT, -1, 10.0, _up(2)),
            _swap(10, 0, BOT, 1, 10.0, _up(3)),
            _swap(10, 1, USER, 1, 5.0, _up(4)),
        ],
        [True, True, True],
    ),
    (
        "big move reverted by an arbitrage in the same block",
        [
            _swap(9, 0, USER2, 1, 0.1, P0),
            _swap(10, 0, USER, 1, 500.0, _up(40)),
            _swap(10, 1, BOT, -1, 480.0, _up(5)),
            _swap(10, 2, USER2, 1, 0.1, _up(6)),
        ],
        [False, True, True, False],
    ),
    (
        "big move that stays",
        [
            _swap(9, 0, USER2, 1, 0.1, P0),
            _swap(10, 0, USER, 1, 500.0, _up(40)),
            _swap(10, 1, BOT, -1, 100.0, _up(30)),
        ],
        [False, False, False],
    ),
    (
        "reverted too little to count",
        [
            _swap(9, 0, USER2, 1, 0.1, P0),
            _swap(10, 0, USER, 1, 5.0, _up(8)),
            _swap(10, 1, BOT, -1, 5.0, _up(0)),
        ],
        [False, False, False],
    ),
    (
        "first swap of a pool has no price before it",
        [_swap(10, 0, USER, 1, 500.0, _up(40)), _swap(10, 1, BOT, -1, 480.0, P0)],
        [False, False],
    ),
]


@pytest.mark.parametrize(("name", "swaps", "expected"), CASES, ids=[c[0] for c in CASES])
def test_constructed_patterns(name: str, swaps: list[SwapRecord], expected: list[bool]) -> None:
    assert mev_flags(swaps) == expected
    counts = classify_swaps(swaps)
    assert sum(c[0] for c in counts.values()) == len(swaps)
    assert sum(c[1] for c in counts.values()) == sum(expected)


def test_sandwich_record_names_its_legs() -> None:
    swaps = CASES[1][1]
    (sandwich,) = find_sandwiches(swaps)
    assert sandwich.actor == BOT
    assert sandwich.front == (0, 0)
    assert sandwich.victims == ((1, 10), (2, 20))
    assert sandwich.back == (3, 30)
    (move,) = find_reverted_moves(CASES[9][1])
    assert move.swaps == ((0, 0), (1, 10))
    assert move.excursion == pytest.approx(0.004)


def test_tolerances_are_parameters() -> None:
    loose = MevParams(unwind_tolerance=0.6)
    assert mev_flags(CASES[2][1], loose) == [True, True, True]
    assert mev_flags(CASES[11][1], MevParams(min_move=0.0005, revert_fraction=0.1)) == [
        False,
        True,
        True,
    ]
    with pytest.raises(ValueError, match="revert_fraction"):
        MevParams(revert_fraction=1.0)
    with pytest.raises(ValueError, match="min_move"):
        MevParams(min_move=-1.0)


# --------------------------------------------------------------------------- real logs


def _real_swaps(shared_data: Path) -> list[SwapRecord]:
    """Swap logs of USDC/WETH 0.05% on 2024-01-05 (token0 USDC, token1 WETH = base)."""
    folder = shared_data / "uniswap_v3_pool_events_2024-01-05"
    path = folder / "ethereum-0x88e6a0c2ddd26feeb64f039a2c41296fcb3f5640-2024-01-05.pool.tick.csv"
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["tx_type"] != "SWAP":
                continue
            amount0, amount1 = int(row["amount0"]), int(row["amount1"])
            sqrt_price = int(row["sqrtPriceX96"]) / 2**96
            out.append(
                SwapRecord(
                    pool=POOL,
                    block=int(row["block_number"]),
                    tx_index=int(row["tx_index"]),
                    log_index=int(row["log_index"]),
                    tx_hash=row["transaction_hash"],
                    sender=row["sender"],
                    recipient=row["receipt"],
                    amount0=amount0,
                    amount1=amount1,
                    direction=1 if amount0 > 0 else -1,
                    volume_quote=abs(amount0) / 1e6,
                    price_after=1e12 / sqrt_price**2,  # ETH in USDC
                )
            )
    return out


@pytest.mark.shared_data
def test_real_logs_known_sandwiches_are_found(shared_data: Path) -> None:
    swaps = _real_swaps(shared_data)
    assert len(swaps) == 6046
    sandwiches = find_sandwiches(swaps)
    by_actor = Counter(s.actor[:10] for s in sandwiches)
    # Picked by reading the logs: bots trading the pool directly (sender == recipient)
    # and one that goes through the SwapRouter (sender 0xe592...) with its own recipient.
    assert by_actor == {"0x6b75d8af": 9, "0x05656db1": 3, "0x1aecea38": 2}
    found = {(s.block, s.actor[:10]) for s in sandwiches}
    assert (18942301, "0x6b75d8af") in found  # front 403.84 WETH, back 404.16 WETH
    assert (18938153, "0x05656db1") in found  # front and back exactly 310.64 WETH
    assert (18938875, "0x1aecea38") in found  # routed through 0xe592427a (SwapRouter)
    for s in sandwiches:
        assert s.front[0] < s.back[0]
        assert all(s.front[0] < v[0] < s.back[0] for v in s.victims)
    # A block where the Universal Router is recipient of both legs but amounts differ
    # (3.5 vs 0.35 WETH: unrelated users) is not a sandwich.
    assert not any(s.block == 18939899 for s in sandwiches)


@pytest.mark.shared_data
def test_real_logs_mev_score_is_a_plausible_fraction(shared_data: Path) -> None:
    swaps = _real_swaps(shared_data)
    ((pool, (total, mev)),) = classify_swaps(swaps).items()
    assert pool == POOL
    assert total == 6046
    share = mev / total
    assert 0.005 < share < 0.05  # a busy blue-chip pool: about 1% of swaps (73 of 6046)
    flags = mev_flags(swaps)
    sandwich_swaps = sum(len(s.victims) + 2 for s in find_sandwiches(swaps))
    # 13 sandwiches with one victim, and block 18942403 with two.
    assert sandwich_swaps == 13 * 3 + 4
    assert [s.block for s in find_sandwiches(swaps) if len(s.victims) == 2] == [18942403]
    moves = find_reverted_moves(swaps)
    assert len(moves) >= 15
    assert all(m.excursion >= MevParams().min_move for m in moves)
    assert sum(flags) == mev
    assert mev >= sandwich_swaps
