"""The daemon's delivery and lifecycle guarantees against real anvil + mosquitto:
broker outages lose nothing, kill -9 neither loses nor repeats a transition, TLS and
passwords, SIGTERM, SIGHUP reloads."""

from __future__ import annotations

import itertools
import json
import signal
import time
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from daemon.config import parse_config
from tests.alert_schema import alert_errors
from tests.daemon_proc import DaemonProcess
from tests.plugins.broker import AclRule, Broker, BrokerFactory, Message, Subscriber
from tests.plugins.chain import DemoChain
from tests.scenario import (
    FLIP_LAYER,
    alert_payloads,
    alerts,
    config_text,
    drive,
    next_timestamp,
    online,
    random_walk,
    write_config,
    zigzag,
)

pytestmark = pytest.mark.integration


def logged_alerts(log: str) -> list[dict[str, Any]]:
    """The alerts the daemon itself logged (JSON log lines), in production order."""
    out = []
    for line in log.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == "alert":
                out.append(entry)
    return out


def processed(messages: list[Message], block: int, n_pools: int) -> bool:
    """Every pool's retained telemetry has reached ``block``."""
    seen = {
        m.topic
        for m in messages
        if m.topic.startswith("alvh/pools/") and m.json().get("block") == block
    }
    return len(seen) >= n_pools


def by_pool(payloads: list[dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for p in payloads:
        out[p["pool"]].append(p["id"])
    return out


@pytest.mark.slow
def test_broker_outage_loses_nothing_and_keeps_order(
    tmp_path: Path, devchain: DemoChain, broker_factory: BrokerFactory
) -> None:
    broker = broker_factory(persistence=True)
    cfg = write_config(tmp_path, devchain, broker, layers=FLIP_LAYER, all_pools=True)
    pools = devchain.market.pools
    # A persistent session: the broker queues what arrives while this subscriber reconnects.
    sub = Subscriber(
        broker, ["alvh/alerts/#", "alvh/status"], client_id="outage-sub", session_expiry=600
    )
    t = next_timestamp(devchain)
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(online, 30)
        t = drive(devchain, zigzag(devchain.market.eth_price, 4), t, pools=pools)
        sub.wait_for(lambda ms: len(alert_payloads(ms)) >= 6, 30)
        broker.stop()
        outage_started = time.monotonic()
        # Produce at least 500 alert events while the broker is down (3 pools per block).
        blocks = 0
        while len(logged_alerts(daemon.log())) < 512:
            t = drive(devchain, zigzag(devchain.market.eth_price, 10), t, pools=pools)
            blocks += 10
            assert blocks < 2000, "the daemon does not produce alerts"
            time.sleep(0.05)
        time.sleep(max(0.0, 30.0 - (time.monotonic() - outage_started)))
        broker.start()
        produced = logged_alerts(daemon.log())
        wanted = {e["id"] for e in produced}
        # at-least-once: an alert whose PUBACK was lost in the outage comes twice, so
        # wait for every id, not for a count
        got = sub.wait_for(lambda ms: wanted <= {p["id"] for p in alert_payloads(ms)}, 90)
        assert daemon.stop() == 0
    sub.stop()
    payloads = alert_payloads(got)
    for payload in payloads:
        assert alert_errors(payload) == [], payload
    received_ids = [p["id"] for p in payloads]
    produced_ids = [e["id"] for e in produced]
    assert len(produced_ids) >= 500
    missing = [
        (i, e["block"], e["pool"][:8], e["kind"])
        for i, e in enumerate(produced)
        if e["id"] not in set(received_ids)
    ]
    assert not missing, (
        f"{len(missing)} of {len(produced_ids)} produced ids not received: {missing[:10]}"
    )
    # in order per pool: the received sequence per pool is the produced sequence per pool
    produced_by_pool: dict[str, list[str]] = defaultdict(list)
    for e in produced:
        produced_by_pool[e["pool"]].append(e["id"])
    received_by_pool = by_pool(payloads)
    for pool, ids in produced_by_pool.items():
        seen = [i for i in dict.fromkeys(received_by_pool[pool]) if i in set(ids)]
        assert seen == ids, f"order differs for {pool}"


def test_kill_9_loses_nothing_and_fires_nothing_twice(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    cfg = write_config(tmp_path, devchain, broker, layers=FLIP_LAYER, all_pools=True)
    pools = devchain.market.pools
    sub = Subscriber(broker, ["alvh/alerts/#", "alvh/status", "alvh/pools/#"])
    t = next_timestamp(devchain)
    produced: list[dict[str, Any]] = []
    daemon = DaemonProcess(cfg).start()
    try:
        sub.wait_for(online, 30)
        t = drive(devchain, zigzag(devchain.market.eth_price, 30), t, pools=pools)
        time.sleep(1.5)  # some checkpoints happen, some events are in flight
        t = drive(devchain, zigzag(devchain.market.eth_price, 20), t, pools=pools)
        daemon.kill()  # SIGKILL with blocks still to process and alerts maybe unsent
        produced += logged_alerts(daemon.log())
        # the chain moves on while the daemon is dead
        t = drive(devchain, zigzag(devchain.market.eth_price, 20), t, pools=pools)
        daemon = DaemonProcess(cfg).start()
        daemon.wait_log("checkpoint restored")
        t = drive(devchain, zigzag(devchain.market.eth_price, 10), t, pools=pools)
        head = devchain.chain.latest_block().number
        sub.wait_for(lambda ms: processed(ms, head, len(pools)), 60)
        produced_all = produced + logged_alerts(daemon.log())
        unique = {e["id"] for e in produced_all}
        got = sub.wait_for(lambda ms: unique <= {p["id"] for p in alert_payloads(ms)}, 60)
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
        sub.stop()
    payloads = alert_payloads(got)
    for payload in payloads:
        assert alert_errors(payload) == [], payload
    # every block after the first zigzag step flips every pool: one event per pool per block
    keys = [(p["pool"], p["layer"], p["event"], p["block"]) for p in payloads]
    ids = [p["id"] for p in payloads]
    assert len(set(keys)) == len(set(ids)), "the same transition was published under two ids"
    # no transition fired twice: per pool, events alternate firing/resolved over blocks
    per_pool: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in {p["id"]: p for p in payloads}.values():
        per_pool[p["pool"]].append(p)
    for pool, events in per_pool.items():
        events.sort(key=lambda p: p["block"])
        kinds = [e["event"] for e in events]
        assert all(a != b for a, b in itertools.pairwise(kinds)), f"{pool}: {kinds}"
        blocks = [e["block"] for e in events]
        assert blocks == sorted(set(blocks)), f"{pool}: a block produced two events"
    # and the events span both daemon runs without a hole
    assert max(p["block"] for p in payloads) == head


def test_tls_password_acl_and_wrong_password(
    tmp_path: Path, devchain: DemoChain, broker_factory: BrokerFactory
) -> None:
    broker = broker_factory(
        allow_anonymous=False,
        users={"alvh": "s3cret-pw", "ops": "ops-pw"},
        acl=[
            AclRule("alvh/#", "readwrite", user="alvh"),
            AclRule("alvh/#", "read", user="ops"),
        ],
        tls=True,
    )
    assert broker.tls_files is not None
    pw = tmp_path / "mqtt-password"
    pw.write_text("s3cret-pw\n")
    mqtt = (
        f'url = "{broker.url}"\nusername = "alvh"\npassword_file = "{pw}"\n'
        f'ca_file = "{broker.tls_files.ca_cert}"'
    )
    cfg = write_config(tmp_path, devchain, None, mqtt=mqtt)
    sub = Subscriber(broker, ["alvh/status"], username="ops", password="ops-pw")
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(online, 30)
        late = Subscriber(broker, ["alvh/status"], username="ops", password="ops-pw")
        first = late.wait_for(bool, 10)[0]
        assert first.retain
        assert first.json()["state"] == "online"
        late.stop()
        assert daemon.stop() == 0
    sub.stop()
    assert "s3cret-pw" not in daemon.log()

    # wrong password: one clear error line, no password in it, the daemon keeps trying
    pw.write_text("wrong\n")
    with DaemonProcess(cfg) as daemon:
        text = daemon.wait_log("mqtt connection failed")
        line = next(ln for ln in text.splitlines() if "mqtt connection failed" in ln)
        entry = json.loads(line)
        assert entry["error"] in ("not authorised", "bad username or password")
        assert "wrong" not in text
        time.sleep(1.0)
        assert daemon.proc is not None
        assert daemon.proc.poll() is None
        assert daemon.stop() == 0


def test_sigterm_publishes_offline_and_exits_0(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    cfg = write_config(tmp_path, devchain, broker)
    sub = Subscriber(broker, ["alvh/status"])
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(online, 30)
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    msgs = sub.wait_for(lambda ms: ms[-1].json()["state"] == "offline", 10)
    last: Message = msgs[-1]
    payload = last.json()
    assert set(payload) >= {"state", "version", "started_at"}
    sub.stop()
    # retained: a new subscriber sees offline
    late = Subscriber(broker, ["alvh/status"])
    seen = late.wait_for(bool, 10)
    assert seen[0].retain
    assert seen[0].json()["state"] == "offline"
    late.stop()


def test_sighup_with_broken_config_keeps_running(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    cfg = write_config(tmp_path, devchain, broker, layers=FLIP_LAYER)
    good = cfg.read_text()
    sub = Subscriber(broker, ["alvh/alerts/#", "alvh/status", "alvh/layers/#"])
    t = next_timestamp(devchain)
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(online, 30)
        cfg.write_text(good.replace('when = "ret > 0"', 'when = "rett > 0"'))
        daemon.signal(signal.SIGHUP)
        text = daemon.wait_log("config reload refused")
        line = next(ln for ln in text.splitlines() if "config reload refused" in ln)
        assert "rett" in line
        # still running on the old config: alerts keep flowing
        t = drive(devchain, zigzag(devchain.market.eth_price, 12), t)
        sub.wait_for(lambda ms: len(alert_payloads(ms)) >= 2, 30)
        # a valid new config (an extra layer) is taken on SIGHUP
        cfg.write_text(good + '\n[[layers]]\nname = "L9"\nlevel = 9\nwhen = "price > 0"\n')
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("config reloaded")
        t = drive(devchain, zigzag(devchain.market.eth_price, 3), t)
        sub.wait_for(lambda ms: any(p["layer"] == "L9" for p in alert_payloads(ms)), 30)
        assert daemon.stop() == 0


def test_config_helper_is_valid(tmp_path: Path, devchain: DemoChain, broker: Broker) -> None:
    """The generated test config passes the daemon's own validation and says what the
    scenario tests rely on: this broker, this chain, the pool the swaps move, 1m bars and
    the sigma layers (guards the helpers)."""
    cfg = parse_config(tomllib.loads(config_text(tmp_path, devchain, broker)))
    assert (cfg.mqtt.host, cfg.mqtt.port) == (broker.host, broker.port)
    assert cfg.daemon.state_dir == tmp_path / "state"
    (chain,) = cfg.chains
    assert (chain.name, chain.chain_id, chain.rpc) == (
        "devchain",
        devchain.market.chain_id,
        [devchain.anvil.url],
    )
    (pool,) = cfg.pools
    assert (pool.chain, pool.address, pool.kind) == (
        "devchain",
        devchain.market.v3_500.address,
        "uniswap_v3",
    )
    assert cfg.bars.interval == 60
    assert [(x.name, x.level) for x in cfg.layers] == [("L1", 1), ("L2", 2)]


def test_warm_restart_neither_refires_nor_warms_up_again(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    cfg = write_config(tmp_path, devchain, broker)
    sub = Subscriber(broker, ["alvh/#"])
    t = next_timestamp(devchain)
    p0 = devchain.market.eth_price
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(online, 30)
        t = drive(devchain, random_walk(p0, 200, 0.001, seed=4), t)  # 40 bars: MACD is warm
        crash = p0 * 0.85
        t = drive(devchain, [crash], t)
        crash_block = devchain.chain.latest_block().number
        sub.wait_for(
            lambda ms: any(p["block"] == crash_block for p in alerts(ms, "firing", "L2")), 60
        )
        assert daemon.stop() == 0
    fired_before = {p["id"] for p in alert_payloads(sub.messages) if p["event"] == "firing"}
    sub.clear()
    with DaemonProcess(cfg) as daemon:
        daemon.wait_log("checkpoint restored")
        # the crash bar continues: the layer is still firing, nothing fires again
        t = drive(devchain, [crash * 0.999], t)
        head = devchain.chain.latest_block().number
        msgs = sub.wait_for(lambda ms: processed(ms, head, 1), 30)
        telemetry = next(m.json() for m in reversed(msgs) if m.topic.startswith("alvh/pools/"))
        # no new warm-up: sigma, RSI and MACD are known at the first block after restart
        for name in ("move_sigma", "rsi", "macd_hist", "realized_vol"):
            assert telemetry["features"][name] is not None, name
        layer = next(
            m.json() for m in reversed(msgs) if m.topic.endswith("/L1") and "/layers/" in m.topic
        )
        assert layer["state"] == "firing"
        assert daemon.stop() == 0
    sub.stop()
    fired_after = [
        p
        for p in alert_payloads(sub.messages)
        if p["event"] == "firing" and p["block"] >= crash_block
    ]
    assert not fired_after, f"re-fired after restart: {fired_after} (before: {fired_before})"
