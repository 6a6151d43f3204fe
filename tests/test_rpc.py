"""RpcPool against a real anvil and real misbehaving HTTP servers (no mocked transport).

Failover: a dead first URL (closed port) and a first URL answering garbage (malformed
JSON, HTTP 500 / 429, short batches, non-JSON-RPC bodies, rate-limit error objects, no
answer at all) leave the pool working through the next URL; every failure is counted per
endpoint and kind through ``on_error``; only TransientError / FatalError ever leave the
pool; a wrong chain id is a FatalError naming the endpoint.
"""

from __future__ import annotations

import pytest

from adapters.errors import FatalError, TransientError
from adapters.evm.rpc import ErrorHook, RpcCallError, RpcPool, redact_url
from daemon.demo.devchain import Anvil
from tests.rpc_servers import BadRpcServer, Mode, closed_port

pytestmark = pytest.mark.integration

CHAIN_ID = 31337


def recorder() -> tuple[list[tuple[str, str]], ErrorHook]:
    seen: list[tuple[str, str]] = []

    def hook(endpoint: str, kind: str) -> None:
        seen.append((endpoint, kind))

    return seen, hook


def fast_pool(
    urls: list[str],
    *,
    on_error: ErrorHook | None = None,
    timeout: float = 2.0,
    retry_primary_after: float = 60.0,
) -> RpcPool:
    """A pool with test-sized backoff (two rounds, tens of milliseconds)."""
    return RpcPool(
        urls,
        name="dev",
        on_error=on_error,
        timeout=timeout,
        retry_primary_after=retry_primary_after,
        backoff_base=0.01,
        backoff_max=0.05,
        max_rounds=2,
    )


async def test_batch_results_in_order_and_call_errors_stay_per_call(anvil: Anvil) -> None:
    pool = fast_pool([anvil.url])
    try:
        results = await pool.batch(
            [
                ("eth_chainId", []),
                ("eth_no_such_method", []),
                ("eth_blockNumber", []),
            ]
        )
        assert results[0] == hex(CHAIN_ID)
        assert isinstance(results[1], RpcCallError)
        assert results[1].code != 0
        assert int(results[2], 16) >= 0
        assert pool.requests == 1
        with pytest.raises(TransientError, match="eth_no_such_method"):
            await pool.request("eth_no_such_method", [])
        assert pool.requests == 2
        assert await pool.batch([]) == []
        assert pool.requests == 2
    finally:
        await pool.close()


async def test_dead_first_url_fails_over_to_the_second(anvil: Anvil) -> None:
    dead = f"http://127.0.0.1:{closed_port()}"
    seen, hook = recorder()
    pool = fast_pool([dead, anvil.url], on_error=hook)
    try:
        await pool.check_chain_id(CHAIN_ID)
        assert pool.current_label == redact_url(anvil.url)
        for _ in range(3):
            assert int(await pool.request("eth_blockNumber", []), 16) >= 0
        assert seen == [(redact_url(dead), "connect")]
        assert pool.errors[(redact_url(dead), "connect")] == 1
    finally:
        await pool.close()


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("malformed", "malformed"),
        ("http500", "http_500"),
        ("http429", "http_429"),
        ("short_batch", "malformed"),
        ("not_jsonrpc", "malformed"),
        ("rate_limited", "rate_limited"),
    ],
)
async def test_garbage_first_url_fails_over(anvil: Anvil, mode: Mode, kind: str) -> None:
    seen, hook = recorder()
    with BadRpcServer(mode, upstream=anvil.url) as bad:
        # Long enough that the pool does not go back to the bad primary within the test.
        pool = fast_pool([bad.url, anvil.url], on_error=hook, retry_primary_after=60)
        try:
            one = await pool.request("eth_chainId", [])
            many = await pool.batch([("eth_chainId", []), ("eth_blockNumber", [])])
            assert one == hex(CHAIN_ID)
            assert many[0] == hex(CHAIN_ID)
            assert bad.requests == 1  # tried once, then the pool stays on the good one
            assert seen == [(redact_url(bad.url), kind)]
            assert pool.requests == 3
        finally:
            await pool.close()


async def test_primary_is_retried_after_the_quiet_period(anvil: Anvil) -> None:
    seen, hook = recorder()
    with BadRpcServer("http500", upstream=anvil.url) as bad:
        pool = fast_pool([bad.url, anvil.url], on_error=hook, retry_primary_after=0)
        try:
            await pool.request("eth_blockNumber", [])
            await pool.request("eth_blockNumber", [])
            assert bad.requests == 2  # back to the primary each time: it is still broken
            bad.mode = "forward"
            await pool.request("eth_blockNumber", [])
            assert bad.requests == 3
            assert pool.current_label == redact_url(bad.url)
            assert [k for _, k in seen] == ["http_500", "http_500"]
        finally:
            await pool.close()


async def test_a_hanging_endpoint_times_out_and_fails_over(anvil: Anvil) -> None:
    seen, hook = recorder()
    with BadRpcServer("hang") as bad:
        pool = fast_pool([bad.url, anvil.url], on_error=hook, timeout=0.3)
        try:
            assert await pool.request("eth_chainId", []) == hex(CHAIN_ID)
            assert seen == [(redact_url(bad.url), "timeout")]
        finally:
            await pool.close()


@pytest.mark.parametrize("mode", ["malformed", "http500", "http429", "hang", "not_jsonrpc"])
async def test_when_every_endpoint_fails_only_transient_error_leaves(mode: Mode) -> None:
    seen, hook = recorder()
    dead = f"http://127.0.0.1:{closed_port()}"
    with BadRpcServer(mode) as bad:
        pool = fast_pool([bad.url, dead], on_error=hook, timeout=0.3)
        try:
            with pytest.raises(TransientError, match=r"all 2 RPC endpoint\(s\) failed 2 time"):
                await pool.batch([("eth_blockNumber", []), ("eth_chainId", [])])
            assert len(seen) == 4  # two rounds over two endpoints
            assert pool.requests == 4
            with pytest.raises(TransientError, match="no RPC endpoint answered eth_chainId"):
                await pool.check_chain_id(CHAIN_ID)
        finally:
            await pool.close()


async def test_wrong_chain_id_is_fatal_and_names_the_endpoint(anvil: Anvil) -> None:
    with BadRpcServer("chain_id", upstream=anvil.url, fake_chain_id=5) as bad:
        pool = fast_pool([anvil.url, bad.url])
        try:
            with pytest.raises(FatalError) as info:
                await pool.check_chain_id(CHAIN_ID)
            message = str(info.value)
            assert redact_url(bad.url) in message
            assert "serves chain id 5, but the config says chain_id = 31337" in message
        finally:
            await pool.close()


async def test_an_endpoint_down_at_start_is_checked_before_its_first_use(anvil: Anvil) -> None:
    with BadRpcServer("http500", upstream=anvil.url, fake_chain_id=5) as bad:
        pool = fast_pool([bad.url, anvil.url], retry_primary_after=0)
        try:
            await pool.check_chain_id(CHAIN_ID)  # the primary is down: checked later
            assert pool.current_label == redact_url(anvil.url)
            bad.mode = "chain_id"  # it comes back, serving another chain
            with pytest.raises(FatalError, match="serves chain id 5"):
                await pool.request("eth_blockNumber", [])
        finally:
            await pool.close()


async def test_ws_urls_are_kept_apart_and_a_ws_only_pool_is_a_clear_fatal_error(
    anvil: Anvil,
) -> None:
    ws = f"ws://127.0.0.1:{anvil.port}"
    pool = fast_pool([ws, anvil.url])
    try:
        assert pool.urls == [anvil.url]
        assert pool.ws_urls == [ws]
        assert await pool.request("eth_chainId", []) == hex(CHAIN_ID)
    finally:
        await pool.close()
    only_ws = fast_pool([ws])
    with pytest.raises(FatalError, match="at least one http"):
        await only_ws.check_chain_id(CHAIN_ID)
    with pytest.raises(FatalError, match="only ws:// endpoints"):
        await only_ws.request("eth_chainId", [])


async def test_requests_counter_matches_what_the_server_received(anvil: Anvil) -> None:
    with BadRpcServer("forward", upstream=anvil.url) as proxy:
        pool = fast_pool([proxy.url])
        try:
            await pool.check_chain_id(CHAIN_ID)
            await pool.batch([("eth_blockNumber", [])] * 50)
            await pool.request("eth_chainId", [])
            assert pool.requests == proxy.requests == 3
        finally:
            await pool.close()


@pytest.mark.parametrize(
    ("url", "label"),
    [
        ("https://eth-mainnet.g.alchemy.com/v2/SECRETKEY", "https://eth-mainnet.g.alchemy.com"),
        ("https://user:pass@rpc.example:8545/path?key=1", "https://rpc.example:8545"),
        ("wss://mainnet.infura.io/ws/v3/KEY", "wss://mainnet.infura.io"),
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
    ],
)
def test_redact_url_keeps_scheme_and_host_only(url: str, label: str) -> None:
    assert redact_url(url) == label
