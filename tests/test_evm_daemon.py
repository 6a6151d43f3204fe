"""The EVM adapter inside the daemon: ``alvh run`` as a subprocess, real anvil chains, a
real mosquitto and an independent MQTT subscriber.

- a reorg that removes the block of a ``firing`` gives a ``retracted`` event naming it;
- one daemon follows two anvil chains with different chain ids; one is stopped and the
  other keeps alerting;
- the first RPC url dead or answering garbage: the daemon alerts through the second one
  and counts the errors per endpoint in ``alvh_rpc_errors``;
- a wrong chain id stops the daemon with exit code 1 and one clear log line;
- bad pools are reported once (log + ``degraded`` on their retained pool topic) while the
  good ones keep alerting;
- the daemon frozen (SIGSTOP) while 100 blocks with swaps are mined: after SIGCONT it
  backfills, and the retained telemetry's 24h volume equals the receipts' total.
"""

from __future__ import annotations

import json
import random
import signal
import urllib.request
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from adapters.evm.rpc import redact_url
from daemon.demo.devchain import Anvil, DevChain, V3Pool, deploy_demo_market
from tests.alert_schema import alert_errors
from tests.daemon_proc import DaemonProcess
from tests.many_pools import swap_volumes
from tests.plugins.broker import Broker, Message, Subscriber
from tests.plugins.chain import GENESIS_TIMESTAMP, DemoChain
from tests.rpc_servers import BadRpcServer, Mode, closed_port

pytestmark = pytest.mark.integration

LAYERS = """
[[layers]]
name = "L1"
level = 1
when = "price < 2900"
clear_when = "price > 2950"
"""


def pool_toml(chain: str, pool: Any, *, kind: str = "uniswap_v3", name: str = "") -> str:
    quote = "token0" if pool.quote == pool.token0 else "token1"
    label = f'name = "{name}"\n' if name else ""
    return (
        f'[[pools]]\nchain = "{chain}"\naddress = "{pool.address}"\nkind = "{kind}"\n'
        f'quote = "{quote}"\n{label}'
    )


def chain_toml(name: str, chain_id: int, rpc: list[str], *, extra: str = "") -> str:
    urls = ", ".join(f'"{u}"' for u in rpc)
    return (
        f'[[chains]]\nname = "{name}"\nchain_id = {chain_id}\nrpc = [{urls}]\n'
        f'poll_interval = "head"\nrequest_timeout = "2s"\n{extra}'
    )


def write_config(tmp_path: Path, broker: Broker, body: str, *, extra: str = "") -> Path:
    cfg = tmp_path / "alvh.toml"
    cfg.write_text(
        f"""
[daemon]
state_dir = "{tmp_path / "state"}"
log_format = "json"
checkpoint_interval = "2s"

[mqtt]
url = "{broker.url}"
topic_prefix = "alvh"
qos = 1
telemetry_interval = "0s"

[bars]
interval = "1m"
{extra}
{body}
{LAYERS}
"""
    )
    return cfg


def alert_payloads(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic.startswith("alvh/alerts/")]


def alerts(messages: list[Message], event: str, **match: Any) -> list[dict[str, Any]]:
    return [
        p
        for p in alert_payloads(messages)
        if p["event"] == event and all(p.get(k) == v for k, v in match.items())
    ]


def has_alert(event: str, **match: Any) -> Callable[[list[Message]], bool]:
    return lambda ms: bool(alerts(ms, event, **match))


def online(ms: list[Message]) -> bool:
    return any(m.topic == "alvh/status" and m.json()["state"] == "online" for m in ms)


def telemetry(ms: list[Message], chain: str, address: str) -> list[dict[str, Any]]:
    topic = f"alvh/pools/{chain}/{address}"
    return [m.json() for m in ms if m.topic == topic]


def sampled(chain: str, address: str, block: int) -> Callable[[list[Message]], bool]:
    def done(ms: list[Message]) -> bool:
        return any(
            p.get("state") == "ok" and p["block"] >= block for p in telemetry(ms, chain, address)
        )

    return done


def log_events(daemon: DaemonProcess) -> list[dict[str, Any]]:
    out = []
    for line in daemon.log().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"event": "<not json>", "line": line})
    return out


def crash_block(chain: DevChain, pool: V3Pool, price: float) -> int:
    with chain.block() as b:
        chain.swap_to_price(pool, price)
    assert b.mined is not None
    return b.mined.number


def test_reorg_of_a_firing_block_sends_retracted(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    market, chain = devchain.market, devchain.chain
    pool = market.v3_500
    body = chain_toml("devchain", market.chain_id, [devchain.anvil.url]) + pool_toml(
        "devchain", pool
    )
    cfg = write_config(tmp_path, broker, body)
    sub = Subscriber(broker, ["alvh/#"])
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(online, 30)
        sub.wait_for(sampled("devchain", pool.address, chain.latest_block().number), 30)
        fired_at = crash_block(chain, pool, 2800.0)
        got = sub.wait_for(has_alert("firing", layer="L1", block=fired_at), 30)
        fired = alerts(got, "firing", layer="L1")[0]
        replaced = chain.reorg(1)  # same number, new hash, the crash swap is gone
        assert replaced[0].number == fired_at
        got = sub.wait_for(has_alert("retracted", layer="L1"), 30)
        # The replacement block is processed: no crash there, no new firing.
        chain.mine()
        sub.wait_for(sampled("devchain", pool.address, fired_at + 1), 30)
        assert daemon.stop() == 0
    sub.stop()
    messages = sub.messages
    retracted = alerts(messages, "retracted", layer="L1")
    assert len(retracted) == 1
    for payload in alert_payloads(messages):
        assert alert_errors(payload) == [], payload
    assert retracted[0]["retracts"] == fired["id"]
    assert retracted[0]["block"] == fired_at
    assert retracted[0]["block_hash"] == fired["block_hash"] != replaced[0].hash
    assert retracted[0]["id"] != fired["id"]
    assert len(alerts(messages, "firing", layer="L1")) == 1
    layer_states = [
        m.json()["state"] for m in messages if m.topic == f"alvh/layers/devchain/{pool.address}/L1"
    ]
    assert layer_states[-1] == "inactive"
    assert any(e.get("event") == "chain reorganisation" for e in log_events(daemon))


def test_one_daemon_two_chains_a_stopped_chain_never_stops_the_other(
    tmp_path: Path, anvil_bin: Path, broker: Broker
) -> None:
    with (
        Anvil(binary=anvil_bin, chain_id=31337, timestamp=GENESIS_TIMESTAMP) as node_a,
        Anvil(binary=anvil_bin, chain_id=4242, timestamp=GENESIS_TIMESTAMP) as node_b,
    ):
        chain_a, chain_b = DevChain(node_a.url), DevChain(node_b.url)
        market_a = deploy_demo_market(chain_a)
        market_b = deploy_demo_market(chain_b)
        pool_a, pool_b = market_a.v3_500, market_b.v3_500
        body = (
            chain_toml("alpha", 31337, [node_a.url])
            + chain_toml("beta", 4242, [node_b.url])
            + pool_toml("alpha", pool_a)
            + pool_toml("beta", pool_b)
        )
        cfg = write_config(tmp_path, broker, body)
        sub = Subscriber(broker, ["alvh/#"])
        with DaemonProcess(cfg) as daemon:
            sub.wait_for(online, 30)
            sub.wait_for(sampled("alpha", pool_a.address, chain_a.latest_block().number), 30)
            sub.wait_for(sampled("beta", pool_b.address, chain_b.latest_block().number), 30)
            crash_block(chain_a, pool_a, 2800.0)
            crash_block(chain_b, pool_b, 2800.0)
            sub.wait_for(has_alert("firing", chain="alpha", chain_id=31337), 30)
            sub.wait_for(has_alert("firing", chain="beta", chain_id=4242), 30)
            chain_a.close()
            node_a.stop()  # alpha's only RPC endpoint is gone
            daemon.wait_log("chain rpc error, retrying", 20)
            crash_block(chain_b, pool_b, 3000.0)
            sub.wait_for(has_alert("resolved", chain="beta"), 30)
            refired = crash_block(chain_b, pool_b, 2700.0)
            sub.wait_for(has_alert("firing", chain="beta", block=refired), 30)
            assert daemon.proc is not None
            assert daemon.proc.poll() is None
            assert daemon.stop() == 0
        sub.stop()
        chain_b.close()
    events = log_events(daemon)
    errors = [e for e in events if e.get("event") == "chain rpc error, retrying"]
    assert errors
    assert {e["chain"] for e in errors} == {"alpha"}
    received = alert_payloads(sub.messages)
    assert {p["chain"] for p in received} == {"alpha", "beta"}
    for payload in received:
        assert alert_errors(payload) == [], payload


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return resp.read().decode()


@pytest.mark.parametrize(
    ("mode", "kind"), [("dead", "connect"), ("http500", "http_500"), ("malformed", "malformed")]
)
def test_first_rpc_url_dead_or_garbage_the_daemon_alerts_through_the_second(
    tmp_path: Path, devchain: DemoChain, broker: Broker, mode: str, kind: str
) -> None:
    market, chain = devchain.market, devchain.chain
    pool = market.v3_500
    server_mode: Mode = "http500" if mode == "dead" else mode  # type: ignore[assignment]
    with BadRpcServer(server_mode, upstream=devchain.anvil.url) as bad:
        first = f"http://127.0.0.1:{closed_port()}" if mode == "dead" else bad.url
        http_port = closed_port()
        body = chain_toml("devchain", market.chain_id, [first, devchain.anvil.url]) + pool_toml(
            "devchain", pool
        )
        cfg = write_config(
            tmp_path,
            broker,
            body,
            extra=f'[http]\nlisten = "127.0.0.1:{http_port}"\ndashboard = false\n',
        )
        sub = Subscriber(broker, ["alvh/#"])
        with DaemonProcess(cfg) as daemon:
            sub.wait_for(online, 30)
            fired_at = crash_block(chain, pool, 2800.0)
            sub.wait_for(has_alert("firing", layer="L1", block=fired_at), 30)
            text = metrics_text(http_port)
            assert daemon.stop() == 0
        sub.stop()
    line = next(
        (
            ln
            for ln in text.splitlines()
            if ln.startswith("alvh_rpc_errors_total{")
            and f'endpoint="{redact_url(first)}"' in ln
            and f'kind="{kind}"' in ln
        ),
        None,
    )
    assert line is not None, text
    assert float(line.rsplit(" ", 1)[1]) >= 1
    assert redact_url(devchain.anvil.url) not in "".join(
        ln for ln in text.splitlines() if ln.startswith("alvh_rpc_errors_total{")
    )


def test_wrong_chain_id_exits_1_with_one_clear_line(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    body = chain_toml("devchain", 1, [devchain.anvil.url]) + pool_toml(
        "devchain", devchain.market.v3_500
    )
    cfg = write_config(tmp_path, broker, body)
    daemon = DaemonProcess(cfg).start()
    assert daemon.proc is not None
    try:
        code = daemon.proc.wait(timeout=30)
    finally:
        daemon.stop()
    assert code == 1
    text = daemon.log()
    assert "Traceback" not in text
    expected = (
        f"chain devchain: {redact_url(devchain.anvil.url)}: serves chain id 31337, "
        "but the config says chain_id = 1"
    )
    errors = [e for e in log_events(daemon) if e.get("level") == "error"]
    assert len(errors) == 1, text
    assert expected in json.dumps(errors[0]), text


def test_bad_pools_are_reported_once_and_the_good_one_keeps_alerting(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    market, chain = devchain.market, devchain.chain
    pool = market.v3_500
    base = chain.deploy_token("NEWB", 18, 10**9)
    quote = chain.deploy_token("NEWQ", 6, 10**9)
    empty = chain.create_v3_pool(base, quote, 3000, 2.0)  # initialised, no liquidity
    eoa = chain.accounts[6]
    body = (
        chain_toml("devchain", market.chain_id, [devchain.anvil.url])
        + pool_toml("devchain", pool)
        + pool_toml("devchain", empty, name="empty pool")
        + f'[[pools]]\nchain = "devchain"\naddress = "{eoa}"\nkind = "uniswap_v3"\nname = "EOA"\n'
    )
    cfg = write_config(tmp_path, broker, body)
    sub = Subscriber(broker, ["alvh/#"])
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(online, 30)
        for _ in range(3):
            chain.mine()
        fired_at = crash_block(chain, pool, 2800.0)
        sub.wait_for(has_alert("firing", layer="L1", block=fired_at), 30)
        chain.mine()
        sub.wait_for(sampled("devchain", pool.address, fired_at + 1), 30)
        assert daemon.stop() == 0
    sub.stop()
    # A new subscriber gets the retained pool topics: the degraded state with its reason.
    late = Subscriber(broker, ["alvh/pools/#"])
    retained = late.wait_for(
        lambda ms: (
            {m.topic for m in ms}
            >= {f"alvh/pools/devchain/{a}" for a in (eoa, empty.address, pool.address)}
        ),
        10,
    )
    late.stop()
    states = {m.topic.rsplit("/", 1)[1]: m.json() for m in retained if m.retain}
    assert states[eoa]["state"] == "degraded"
    assert "not a contract" in states[eoa]["reason"]
    assert states[empty.address] == {
        "state": "degraded",
        "reason": "no active liquidity",
        "pool": empty.address,
        "chain": "devchain",
    }
    assert states[pool.address]["state"] == "ok"
    reports = [e for e in log_events(daemon) if e.get("event") == "pool degraded, skipped"]
    assert sorted(e["pool"] for e in reports) == sorted([eoa, empty.address])  # once each


def test_frozen_daemon_backfills_every_swap_exactly_once(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    market, chain = devchain.market, devchain.chain
    pool = market.v3_500
    body = chain_toml(
        "devchain", market.chain_id, [devchain.anvil.url], extra="backfill_batch = 16\n"
    ) + pool_toml("devchain", pool)
    cfg = write_config(tmp_path, broker, body)
    sub = Subscriber(broker, ["alvh/pools/#"])
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(sampled("devchain", pool.address, chain.latest_block().number), 30)
        daemon.signal(signal.SIGSTOP)
        try:
            rng = random.Random(3)
            hashes = []
            for _ in range(100):
                with chain.block():
                    for _ in range(rng.randint(0, 2)):
                        zero_for_one = rng.random() < 0.5
                        token = pool.token0 if zero_for_one else pool.token1
                        amount = token.to_raw(
                            rng.uniform(0.1, 2.0) * (1 if token == market.weth else 3000)
                        )
                        hashes.append(chain.swap(pool, amount, zero_for_one=zero_for_one))
        finally:
            daemon.signal(signal.SIGCONT)
        head = chain.latest_block().number
        got = sub.wait_for(sampled("devchain", pool.address, head), 60)
        assert daemon.stop() == 0
    sub.stop()
    truth = swap_volumes(chain, [pool], hashes)
    total = sum((t.volume_quote for t in truth.values()), Fraction(0))
    last = [p for p in telemetry(got, "devchain", pool.address) if p["block"] == head][-1]
    assert last["features"]["volume_24h"] == pytest.approx(float(total), rel=1e-9)
    assert len(hashes) == sum(t.swaps for t in truth.values())
    assert len(hashes) > 50
