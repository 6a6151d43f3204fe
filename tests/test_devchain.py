"""Tests of the dev chain harness (daemon.demo.devchain).

The pure parts (bytecode patching, handles) run without a node (the Uniswap arithmetic
the harness uses is tested in ``tests/test_uniswap.py``);
everything else runs against a real anvil with the real compiled contracts and is
marked ``integration``. Chain tests share one deployed demo market per module and
revert to a snapshot after each test (the ``devchain`` fixture).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest

from daemon.demo.devchain import (
    ANVIL_ENV,
    MULTICALL3_ADDRESS,
    Anvil,
    AnvilNotFoundError,
    AnvilStartError,
    ArtifactError,
    DevChain,
    RpcError,
    Token,
    TxFailedError,
    V2Pair,
    V3Pool,
    find_anvil,
    patch_decimals,
)
from daemon.demo.devchain.artifacts import (
    find_decimals_push,
    load_artifact,
    multicall3_runtime,
)
from rules.uniswap import v2_amount_out
from tests.plugins.chain import BLOCK_INTERVAL, GENESIS_TIMESTAMP, DemoChain

REPO_ROOT = Path(__file__).resolve().parent.parent
OZ_ERC20 = REPO_ROOT / (
    "node_modules/@openzeppelin/contracts/build/contracts/ERC20PresetFixedSupply.json"
)
integration = pytest.mark.integration


def _process_gone(pid: int) -> bool:
    """True once ``pid`` no longer exists or is a zombie awaiting its (foreign) parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _process_gone(pid):
            return True
        time.sleep(0.05)
    return _process_gone(pid)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# --- artifacts -------------------------------------------------------------------


# Tests that read node_modules are integration tests: the npm set-up brings the
# artifacts, and `-m "not integration"` runs with nothing but Python.


def _oz_runtime() -> bytes:
    return bytes.fromhex(json.loads(OZ_ERC20.read_text())["deployedBytecode"][2:])


@integration
@pytest.mark.parametrize("decimals", [0, 6, 8, 255])
def test_patch_decimals_changes_exactly_one_byte(decimals: int) -> None:
    runtime = _oz_runtime()
    site = find_decimals_push(runtime)
    assert runtime[site : site + 2] == bytes([0x60, 0x12])  # PUSH1 18
    patched = patch_decimals(runtime, decimals)
    diff = [i for i, (a, b) in enumerate(zip(runtime, patched, strict=True)) if a != b]
    assert diff == ([site + 1] if decimals != 18 else [])
    assert patched[site + 1] == decimals


def test_patch_decimals_refuses_code_without_a_decimals_entry() -> None:
    with pytest.raises(ArtifactError, match="dispatcher entry"):
        patch_decimals(bytes.fromhex("6080604052600080fd"), 6)


@integration
def test_patch_decimals_refuses_a_decimals_beyond_uint8() -> None:
    with pytest.raises(ValueError, match="uint8"):
        patch_decimals(_oz_runtime(), 256)


def test_multicall3_runtime_is_read_from_the_package() -> None:
    code = multicall3_runtime()
    assert code.startswith(bytes.fromhex("6080604052"))
    assert bytes.fromhex("82ad56cb") in code  # aggregate3((address,bool,bytes)[])


@integration
def test_every_artifact_loads() -> None:
    for name in ("UniswapV3Factory", "NonfungiblePositionManager", "SwapRouter", "UniswapV2Pair"):
        assert load_artifact(name).bytecode


def test_an_unknown_artifact_is_refused() -> None:
    with pytest.raises(ArtifactError, match="unknown artifact"):
        load_artifact("Nope")


# --- handles ---------------------------------------------------------------------

A = Token("0x1000000000000000000000000000000000000001", "AAA", 18)
B = Token("0x2000000000000000000000000000000000000002", "BBB", 6)
C = Token("0x3000000000000000000000000000000000000003", "CCC", 8)


@pytest.mark.parametrize(
    ("amount", "decimals", "raw", "human"),
    [
        (1, 18, 10**18, 1.0),
        (0.1, 6, 100_000, 0.1),
        (1.5, 0, 2, 2.0),  # rounded to the nearest unit
        (Decimal("2.000001"), 6, 2_000_001, 2.000001),
        (3000.123456789, 6, 3_000_123_457, 3000.123457),
    ],
)
def test_token_raw_amounts(amount: float | Decimal, decimals: int, raw: int, human: float) -> None:
    token = Token(A.address, "T", decimals)
    assert token.to_raw(amount) == raw
    assert token.to_human(raw) == human


def test_handles_validate_themselves() -> None:
    with pytest.raises(ValueError, match="lower address"):
        V3Pool(A.address, B, A, 500, 10, A, B)
    with pytest.raises(ValueError, match="two tokens"):
        V3Pool(A.address, A, B, 500, 10, C, B)
    with pytest.raises(ValueError, match=r"0\.3%"):
        V2Pair(A.address, A, B, A, B, fee=500)
    with pytest.raises(ValueError, match="not an address"):
        Token("0x12", "X", 18)
    pool = V3Pool(A.address.lower(), A, B, 500, 10, B, A)
    assert pool.address == A.address  # checksummed
    assert not pool.base_is_token0
    assert pool.name == "BBB/AAA 0.05%"


# --- the anvil process -------------------------------------------------------------


def test_find_anvil_names_the_install_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(ANVIL_ENV, str(tmp_path / "missing-anvil"))
    with pytest.raises(AnvilNotFoundError, match="npm ci"):
        find_anvil()
    not_executable = tmp_path / "anvil"
    not_executable.write_text("#!/bin/sh\n")
    monkeypatch.setenv(ANVIL_ENV, str(not_executable))
    with pytest.raises(AnvilNotFoundError, match="not executable"):
        find_anvil()


@integration
def test_anvil_starts_and_stops_without_leaving_a_process(anvil_bin: Path) -> None:
    node = Anvil(binary=anvil_bin, chain_id=4242, timestamp=GENESIS_TIMESTAMP)
    with node:
        pid = node.pid
        assert pid is not None
        assert node.running
        chain = DevChain(node.url)
        assert chain.chain_id == 4242
        assert chain.latest_block().timestamp == GENESIS_TIMESTAMP
        assert int(chain.rpc("eth_blockNumber"), 16) == 0
        url = node.url
    assert not node.running
    assert _process_gone(pid)  # reaped by stop(): no zombie either
    node.stop()  # idempotent
    with pytest.raises(RpcError):
        DevChain(url)


@integration
def test_anvil_does_not_mine_on_its_own(anvil: Anvil) -> None:
    chain = DevChain(anvil.url)
    chain.send(chain.accounts[1], b"", what="plain transfer")
    assert chain.latest_block().number == 0
    block = chain.mine()
    assert block.number == 1
    assert len(chain.rpc("eth_getBlockByNumber", "0x1", False)["transactions"]) == 1


@integration
def test_anvil_is_stopped_at_interpreter_exit(anvil_bin: Path) -> None:
    # Started from a worker thread, so no parent-death signal is set: only the
    # atexit hook can stop it when the interpreter exits.
    script = textwrap.dedent(
        f"""
        import threading
        from daemon.demo.devchain import Anvil
        nodes = []
        worker = threading.Thread(
            target=lambda: nodes.append(Anvil(binary={str(anvil_bin)!r}).start())
        )
        worker.start()
        worker.join()
        print(nodes[0].pid, flush=True)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    pid = int(done.stdout.split()[0])
    assert _wait_gone(pid)


@integration
def test_anvil_dies_with_a_killed_parent(anvil_bin: Path) -> None:
    script = textwrap.dedent(
        f"""
        import time
        from daemon.demo.devchain import Anvil
        node = Anvil(binary={str(anvil_bin)!r}).start()
        print(node.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)  # no atexit, no cleanup: only PR_SET_PDEATHSIG is left
    parent.wait()
    parent.stdout.close()
    if not _wait_gone(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"anvil {pid} outlived its killed parent")


@integration
@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("#!/bin/sh\necho boom\nexit 3\n", "exited with code 3"),
        ("#!/bin/sh\nexec sleep 30\n", "did not print"),
    ],
)
def test_anvil_start_failures_are_explained(tmp_path: Path, script: str, message: str) -> None:
    fake = tmp_path / "anvil"
    fake.write_text(script)
    fake.chmod(0o755)
    node = Anvil(binary=fake, startup_timeout=1.0)
    with pytest.raises(AnvilStartError, match=message):
        node.start()
    assert node.pid is not None
    assert _process_gone(node.pid)
    assert not node.running


# --- tokens and pools on the demo market ----------------------------------------------


@integration
@pytest.mark.parametrize("decimals", [0, 6, 8, 18])
def test_tokens_have_the_chosen_decimals_and_supply(anvil: Anvil, decimals: int) -> None:
    chain = DevChain(anvil.url)
    token = chain.deploy_token("TKN", decimals, 1_000_000)
    erc20 = load_artifact("ERC20PresetFixedSupply").abi
    (onchain_decimals,) = erc20.decode_result(
        "decimals", chain.call(token.address, erc20.encode_call("decimals"))
    )
    (supply,) = erc20.decode_result(
        "totalSupply", chain.call(token.address, erc20.encode_call("totalSupply"))
    )
    assert onchain_decimals == decimals
    assert supply == 1_000_000 * 10**decimals
    assert chain.balance_of(token, chain.deployer) == supply


@integration
def test_demo_pools_start_at_the_chosen_price(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    for pool in (market.v3_500, market.v3_3000):
        state = chain.pool_state(pool)
        assert _rel(state.price, market.eth_price) < 1e-12
        # initialize() sets slot0.tick = getTickAtSqrtRatio(sqrtPriceX96): exactly ours.
        assert state.tick == pool.token_pair.tick(market.eth_price)
    assert _rel(chain.pair_state(market.v2).price, market.eth_price) < 1e-12
    assert market.weth.decimals == 18
    assert market.usdc.decimals == 6
    assert market.v3_500.tick_spacing == 10
    assert market.v3_3000.tick_spacing == 60


@integration
def test_inverted_pool_prices_its_base_in_the_quote(devchain: DemoChain) -> None:
    # Same tokens, price USDC in WETH: base and token order flip, the convention holds.
    chain, market = devchain.chain, devchain.market
    pool = chain.create_v3_pool(market.usdc, market.weth, 10000, 1 / 2500)
    assert pool.base == market.usdc
    assert pool.base_is_token0 != market.v3_500.base_is_token0
    assert _rel(chain.price(pool), 1 / 2500) < 1e-12
    chain.add_liquidity_v3(pool, value=100.0)  # 100 WETH worth
    for target in (1 / 2000, 1 / 3000):
        chain.swap_to_price(pool, target)
        assert _rel(chain.price(pool), target) < 1e-9


@integration
def test_full_range_and_concentrated_liquidity_are_minted(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    full, concentrated = market.positions[0], market.positions[1]
    assert full.full_range
    assert not concentrated.full_range
    assert full.pool == concentrated.pool == market.v3_500
    pair = market.v3_500.token_pair
    low, high = sorted(pair.tick(market.eth_price * p) for p in (0.9, 1.1))
    assert concentrated.tick_lower <= low
    assert concentrated.tick_upper >= high
    # Both positions are in range, so the pool's active liquidity is their sum.
    assert chain.pool_state(market.v3_500).liquidity == full.liquidity + concentrated.liquidity
    for position, value in ((full, 20_000_000.0), (concentrated, 10_000_000.0)):
        amounts = chain.position_amounts(position)
        assert _rel(amounts.value_in_quote(market.eth_price), value) < 1e-6
        assert amounts.fees0 == amounts.fees1 == 0


@integration
def test_position_amounts_follow_the_price_and_collect_fees(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    concentrated = market.positions[1]
    chain.swap_to_price(market.v3_500, market.eth_price * 1.2)  # above the ±10% range
    above = chain.position_amounts(concentrated)
    assert above.base == 0.0  # all sold for quote on the way up
    assert above.quote > 0
    assert above.quote_fees > 0  # buying base on the way up paid its fee in quote
    assert above.base_fees == 0
    chain.swap_to_price(market.v3_500, market.eth_price * 0.8)  # below the range
    below = chain.position_amounts(concentrated)
    assert below.quote == 0.0
    assert below.base > 0
    assert below.base_fees > 0  # selling base on the way down paid its fee in base
    assert below.quote_fees == above.quote_fees


# --- price driver ------------------------------------------------------------------


@integration
@pytest.mark.parametrize("pool_name", ["v3_500", "v3_3000", "v2"])
@pytest.mark.parametrize("move", [0.5, 0.97, 1.0003, 1.8])
def test_swap_to_price_reaches_the_target(devchain: DemoChain, pool_name: str, move: float) -> None:
    chain, market = devchain.chain, devchain.market
    pool = getattr(market, pool_name)
    target = market.eth_price * move
    head = chain.latest_block().number
    tx_hash = chain.swap_to_price(pool, target)
    assert tx_hash is not None
    assert chain.latest_block().number == head + 1  # one swap, one block
    assert _rel(chain.price(pool), target) < 1e-9
    if isinstance(pool, V3Pool):
        state = chain.pool_state(pool)
        assert state.sqrt_price_x96 == pool.token_pair.sqrt_price_x96(target)
        # The swap stops inside a tick range, where slot0.tick is getTickAtSqrtRatio.
        assert state.tick == pool.token_pair.tick(target)


@integration
def test_swap_to_the_current_price_sends_nothing(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    head = chain.latest_block()
    assert chain.swap_to_price(market.v3_500, market.eth_price) is None
    assert chain.latest_block() == head


@integration
def test_swap_moves_exact_amounts(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    pair = market.v2
    reserves = chain.pair_state(pair)
    zero_for_one = pair.token0 == market.weth  # sell one WETH
    one_weth = market.weth.to_raw(1)
    usdc_before = chain.balance_of(market.usdc, chain.deployer)
    chain.swap(pair, one_weth, zero_for_one=zero_for_one)
    reserve_in, reserve_out = (
        (reserves.reserve0, reserves.reserve1)
        if zero_for_one
        else (reserves.reserve1, reserves.reserve0)
    )
    received = chain.balance_of(market.usdc, chain.deployer) - usdc_before
    assert received == v2_amount_out(one_weth, reserve_in, reserve_out)


@integration
def test_a_failing_swap_reports_the_revert(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    broke = chain.accounts[5]  # holds no tokens
    with pytest.raises(TxFailedError, match="swap on WETH/USDC"):
        chain.swap(market.v3_500, market.weth.to_raw(1), zero_for_one=True, sender=broke)


# --- blocks, time, snapshots, reorgs -----------------------------------------------------


@integration
def test_mined_timestamps_are_the_requested_ones(devchain: DemoChain) -> None:
    chain = devchain.chain
    start = chain.latest_block()
    block = chain.mine(timestamp=start.timestamp + 1000)
    assert block.timestamp == start.timestamp + 1000
    assert block.number == start.number + 1
    block = chain.mine()  # the interval takes over
    assert block.timestamp == start.timestamp + 1000 + BLOCK_INTERVAL
    block = chain.mine(timestamp=start.timestamp + 5000, blocks=3)
    assert block.number == start.number + 5
    assert block.timestamp == start.timestamp + 5000 + 2 * BLOCK_INTERVAL
    assert chain.get_block(start.number + 3).timestamp == start.timestamp + 5000
    chain.set_block_timestamp_interval(1)
    assert chain.mine().timestamp == block.timestamp + 1
    with pytest.raises(RpcError, match="lower than previous"):
        chain.mine(timestamp=start.timestamp)


@integration
def test_a_sandwich_goes_into_one_block_in_order(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    pool = market.v3_500
    attacker, victim = chain.accounts[1], chain.accounts[2]
    for account in (attacker, victim):
        chain.transfer(market.weth, account, market.weth.to_raw(100))
        chain.transfer(market.usdc, account, market.usdc.to_raw(1_000_000))
    usdc_is_token0 = pool.token0 == market.usdc  # paying USDC for WETH pushes the price up
    usdc_in = market.usdc.to_raw(200_000)
    timestamp = chain.latest_block().timestamp + 7
    with chain.block(timestamp=timestamp) as block:
        front = chain.swap(pool, usdc_in, zero_for_one=usdc_is_token0, sender=attacker)
        middle = chain.swap(pool, usdc_in, zero_for_one=usdc_is_token0, sender=victim)
        assert chain.price(pool) > market.eth_price  # reads see the queued swaps
        back = chain.swap_to_price(pool, market.eth_price, sender=attacker)
    assert block.mined is not None
    assert block.mined.timestamp == timestamp
    mined = chain.rpc("eth_getBlockByNumber", hex(block.mined.number), False)["transactions"]
    assert [h for h in mined if h in (front, middle, back)] == [front, middle, back]
    assert len(block.tx_hashes) >= 3
    assert _rel(chain.price(pool), market.eth_price) < 1e-12


@integration
def test_a_raising_block_mines_nothing(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    head = chain.latest_block()

    def abandoned_block() -> None:
        with chain.block():
            chain.swap_to_price(market.v3_500, market.eth_price * 1.5)
            raise RuntimeError("abandon")

    with pytest.raises(RuntimeError, match="abandon"):
        abandoned_block()
    assert chain.latest_block() == head
    assert chain.rpc("txpool_status") == {"pending": "0x0", "queued": "0x0"}
    chain.mine()
    assert _rel(chain.price(market.v3_500), market.eth_price) < 1e-12


@integration
def test_a_block_at_a_past_timestamp_is_refused_and_dropped(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    head = chain.latest_block()
    with pytest.raises(RpcError, match="lower than previous"), chain.block(timestamp=1):
        chain.swap_to_price(market.v3_500, market.eth_price * 1.5)
    assert chain.latest_block() == head
    assert chain.rpc("txpool_status") == {"pending": "0x0", "queued": "0x0"}
    with chain.block() as block:  # the chain is usable again
        chain.swap_to_price(market.v3_500, market.eth_price * 1.5)
    assert block.mined is not None
    assert block.mined.number == head.number + 1


@integration
def test_snapshot_and_revert_restore_state_and_clock(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    head = chain.latest_block()
    snapshot = chain.snapshot()
    chain.swap_to_price(market.v3_500, market.eth_price * 2)
    first = chain.mine()
    chain.revert(snapshot)
    assert chain.latest_block() == head
    assert _rel(chain.price(market.v3_500), market.eth_price) < 1e-12
    chain.swap_to_price(market.v3_500, market.eth_price * 2)  # approvals still work
    again = chain.mine()
    assert (again.number, again.timestamp) == (first.number, first.timestamp)


@integration
def test_reorg_replaces_blocks(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    pool = market.v3_500
    chain.swap_to_price(pool, market.eth_price * 0.5)  # the "crash"
    chain.mine()
    old = [chain.get_block(chain.latest_block().number - i) for i in (1, 0)]
    new = chain.reorg(2)
    assert [b.number for b in new] == [b.number for b in old]
    assert [b.timestamp for b in new] == [b.timestamp for b in old]
    assert all(n.hash != o.hash for n, o in zip(new, old, strict=True))
    assert chain.latest_block() == new[-1]
    assert _rel(chain.price(pool), market.eth_price) < 1e-12  # the crash is gone
    assert chain.rpc("txpool_status") == {"pending": "0x0", "queued": "0x0"}  # not re-queued


@integration
def test_reorg_can_put_other_transactions_in_the_new_blocks(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    pool = market.v3_500
    weth_is_token0 = pool.token0 == market.weth  # selling WETH pushes the price down
    # Built (and its router approval mined) before the blocks the reorg replaces.
    request = chain.swap_request(pool, market.weth.to_raw(50), zero_for_one=weth_is_token0)
    chain.mine()
    chain.mine()
    new = chain.reorg(2, [(request, 1)])
    txs = [chain.rpc("eth_getBlockByNumber", hex(b.number), False)["transactions"] for b in new]
    assert [len(t) for t in txs] == [0, 1]
    assert chain.receipt(txs[1][0])["status"] == "0x1"
    assert chain.price(pool) < market.eth_price


@integration
def test_multicall3_answers(devchain: DemoChain) -> None:
    chain, market = devchain.chain, devchain.market
    erc20 = load_artifact("ERC20PresetFixedSupply").abi
    results = chain.multicall(
        [
            (market.weth.address, erc20.encode_call("decimals")),
            (market.usdc.address, erc20.encode_call("decimals")),
            (market.usdc.address, erc20.encode_call("balanceOf", chain.deployer)),
        ]
    )
    assert [ok for ok, _ in results] == [True, True, True]
    assert [erc20.decode_result("decimals", out)[0] for _, out in results[:2]] == [18, 6]
    (balance,) = erc20.decode_result("balanceOf", results[2][1])
    assert balance == chain.balance_of(market.usdc, chain.deployer)
    assert market.multicall3 == MULTICALL3_ADDRESS


@integration
def test_demo_market_description_is_json_ready(devchain: DemoChain) -> None:
    market = devchain.market
    description = json.loads(json.dumps(market.to_dict()))
    assert description["chain_id"] == devchain.chain.chain_id
    assert [p["kind"] for p in description["pools"]] == ["uniswap_v3", "uniswap_v3", "uniswap_v2"]
    assert [p["fee"] for p in description["pools"]] == [500, 3000, 3000]
    quote_index = 0 if market.usdc == market.v3_500.token0 else 1
    assert {p["quote"] for p in description["pools"]} == {f"token{quote_index}"}
    assert description["tokens"]["USDC"]["decimals"] == 6


@integration
def test_the_deployment_is_deterministic(anvil: Anvil, devchain: DemoChain) -> None:
    from daemon.demo.devchain import deploy_demo_market

    again = deploy_demo_market(DevChain(anvil.url), block_interval=BLOCK_INTERVAL)
    shared = devchain.market
    assert again.to_dict() | {"rpc_url": None} == shared.to_dict() | {"rpc_url": None}
    assert math.isclose(again.eth_price, shared.eth_price)
