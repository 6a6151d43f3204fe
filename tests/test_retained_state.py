"""What subscribers find on the retained topics stays true (issue 16): against real anvil,
a real Mosquitto, ``alvh run`` as a process killed and restarted, and real subscribers.

- a pool or a layer removed from the config (SIGHUP): its firing is closed with a
  ``resolved`` alert ("removed from config") and its retained layer, pool and Home
  Assistant topics are cleared;
- after ``kill -9`` and a warm restart the retained layer states are what they were (time,
  since, reason, history), never the epoch; a layer that never changed has ``time`` null;
- a pool added to the config does not make the unchanged pool start cold;
- a firing that fires and resolves inside one catch-up shows on the retained layer topic
  (``last_firing``, ``last_event``);
- the status (``online``, ``offline``, the last will) carries the MQTT 5 content type.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.alert_schema import alert_errors
from tests.daemon_proc import DaemonProcess
from tests.plugins.broker import Broker, Message, Subscriber
from tests.plugins.chain import DemoChain
from tests.scenario import (
    FLIP_LAYER,
    alert_payloads,
    config_text,
    drive,
    next_timestamp,
    online,
    pool_entry,
    random_walk,
    write_config,
    zigzag,
)

pytestmark = pytest.mark.integration

ALWAYS_LAYER = """
[[layers]]
name = "ALWAYS"
level = 2
when = "price > 0"
"""

NEVER_LAYER = """
[[layers]]
name = "NEVER"
level = 2
when = "price < 0"
"""


def retained(broker: Broker, filters: list[str]) -> dict[str, Message]:
    """The retained messages the broker holds now under ``filters``, by topic: a fresh
    subscriber, then a marker published on its own connection (it arrives after them)."""
    marker = f"test/marker/{uuid.uuid4().hex}"
    sub = Subscriber(broker, [*filters, marker])
    try:
        sub.publish(marker, b"x")
        msgs = sub.wait_for(lambda ms: any(m.topic == marker for m in ms), 10)
    finally:
        sub.stop()
    return {m.topic: m for m in msgs if m.retain and m.topic != marker}


def processed(messages: list[Message], block: int, pools: list[str]) -> bool:
    seen = {
        m.topic.rsplit("/", 1)[-1]
        for m in messages
        if m.topic.startswith("alvh/pools/") and m.payload and m.json().get("block") == block
    }
    return set(pools) <= seen


def log_entries(daemon: DaemonProcess, event: str) -> list[dict[str, Any]]:
    out = []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event:
                out.append(entry)
    return out


def test_removed_pools_and_layers_leave_no_ghost_state(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    market = devchain.market
    pools = [market.v3_500, market.v3_3000, market.v2]
    mqtt = f'url = "{broker.url}"\nhomeassistant = true'
    cfg = write_config(
        tmp_path, devchain, broker, layers=FLIP_LAYER + ALWAYS_LAYER, all_pools=True, mqtt=mqtt
    )
    sub = Subscriber(broker, ["alvh/#", "homeassistant/#"])
    t = next_timestamp(devchain)
    kept = market.v3_500.address
    removed_pools = [market.v3_3000.address, market.v2.address]
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(online, 30)
        t = drive(devchain, [market.eth_price * 1.001] * 2, t, pools=pools)

        def always_firing(ms: list[Message]) -> bool:
            fired = {p["pool"] for p in alert_payloads(ms) if p["layer"] == "ALWAYS"}
            return fired == {p.address for p in pools}

        sub.wait_for(always_firing, 30)
        # Home Assistant configs of every pool (published once the chain is connected)
        sub.wait_for(
            lambda ms: (
                {a.lower() for a in removed_pools if any(a.lower() in m.topic for m in ms)}
                == {a.lower() for a in removed_pools}
            ),
            30,
        )
        before = retained(broker, ["alvh/#", "homeassistant/#"])
        ghosts = [
            topic
            for topic in before
            if "/layers/" in topic
            and (topic.endswith("/ALWAYS") or any(a in topic for a in removed_pools))
        ] + [f"alvh/pools/devchain/{a}" for a in removed_pools]
        ha_ghosts = [
            topic
            for topic in before
            if topic.startswith("homeassistant/")
            and (
                topic.endswith("_layer_ALWAYS/config")
                or any(a.lower() in topic for a in removed_pools)
            )
        ]
        assert len(ghosts) == 3 + 2 + 2, sorted(before)
        assert all(g in before for g in ghosts), sorted(before)
        assert ha_ghosts
        firing = {
            topic
            for topic in ghosts
            if "/layers/" in topic and before[topic].json()["state"] == "firing"
        }
        sub.clear()

        # the new config: one pool, the FLIP layer only
        cfg.write_text(config_text(tmp_path, devchain, broker, layers=FLIP_LAYER, mqtt=mqtt))
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("config reloaded")

        def cleared(ms: list[Message]) -> bool:
            empty = {m.topic for m in ms if not m.payload}
            return set(ghosts) | set(ha_ghosts) <= empty

        msgs = sub.wait_for(cleared, 30)
        resolved = [
            p
            for p in alert_payloads([m for m in msgs if m.payload])
            if p["event"] == "resolved" and p["reason"] == "removed from config"
        ]
        assert daemon.stop() == 0
    sub.stop()
    # every layer that was firing there is resolved, once, with a valid alert
    assert {f"alvh/layers/{p['chain']}/{p['pool']}/{p['layer']}" for p in resolved} == firing
    assert len(resolved) == len(firing)
    assert {(p["pool"], p["layer"]) for p in resolved} >= {(a.address, "ALWAYS") for a in pools}
    for p in resolved:
        assert alert_errors(p) == [], p
        assert p["hedge"] is None
    # and the broker holds none of them any more; the kept pool and layer are there
    after = retained(broker, ["alvh/#", "homeassistant/#"])
    assert not set(ghosts) & set(after), sorted(set(ghosts) & set(after))
    assert not set(ha_ghosts) & set(after)
    assert f"alvh/layers/devchain/{kept}/FLIP" in after
    assert f"alvh/pools/devchain/{kept}" in after


def test_kill_9_and_warm_restart_keep_the_retained_layer_state(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    cfg = write_config(tmp_path, devchain, broker, layers=FLIP_LAYER + NEVER_LAYER)
    pool = devchain.market.v3_500.address
    topics = [f"alvh/layers/devchain/{pool}/FLIP", f"alvh/layers/devchain/{pool}/NEVER"]
    sub = Subscriber(broker, ["alvh/#"])
    t = next_timestamp(devchain)
    daemon = DaemonProcess(cfg).start()
    try:
        sub.wait_for(online, 30)
        t = drive(devchain, zigzag(devchain.market.eth_price, 5), t)
        head = devchain.chain.latest_block().number
        msgs = sub.wait_for(lambda ms: processed(ms, head, [pool]), 30)
        fired = [p for p in alert_payloads(msgs) if p["layer"] == "FLIP"]
        assert fired
        time.sleep(2.5)  # checkpoints (every second) cover the head
        before = retained(broker, topics)
        daemon.kill()
        sub.clear()
        daemon = DaemonProcess(cfg).start()
        daemon.wait_log("checkpoint restored")
        # the restarted daemon republishes every layer state
        msgs = sub.wait_for(lambda ms: all(any(m.topic == x for m in ms) for x in topics), 30)
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
        sub.stop()
    republished = {x: next(m for m in msgs if m.topic == x).json() for x in topics}
    flip_before = before[topics[0]].json()
    assert republished[topics[0]] == flip_before
    assert flip_before["time"] == fired[-1]["time"]
    assert flip_before["last_event"]["alert_id"] == fired[-1]["id"]
    firings = [p for p in fired if p["event"] == "firing"]
    assert flip_before["last_firing"]["alert_id"] == firings[-1]["id"]
    # a layer that never changed: no time, no history, never 1970
    never = republished[topics[1]]
    assert (never["state"], never["since"], never["time"]) == ("inactive", None, None)
    assert never["last_event"] is None
    assert never["last_firing"] is None
    assert never == before[topics[1]].json()


def test_a_new_pool_in_the_config_keeps_the_other_pools_warm(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    market = devchain.market
    cfg = write_config(tmp_path, devchain, broker, layers=FLIP_LAYER)
    sub = Subscriber(broker, ["alvh/#"])
    t = next_timestamp(devchain)
    warm, added = market.v3_500.address, market.v3_3000.address
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(online, 30)
        t = drive(devchain, random_walk(market.eth_price, 100, 0.001, seed=7), t)
        head = devchain.chain.latest_block().number
        sub.wait_for(lambda ms: processed(ms, head, [warm]), 60)
        assert daemon.stop() == 0
    # the new pool comes first: the warm one moves to another row of the table
    text = config_text(tmp_path, devchain, broker, layers=FLIP_LAYER)
    entry = pool_entry(market.v3_500, "WETH/USDC 0.05%")
    cfg.write_text(text.replace(entry, pool_entry(market.v3_3000, "WETH/USDC 0.3%") + entry))
    sub.clear()
    with DaemonProcess(cfg) as daemon:
        daemon.wait_log("checkpoint restored")
        (restored,) = log_entries(daemon, "checkpoint restored")
        assert restored["pools_warm"] == 1
        assert restored["pools_cold"] == [f"devchain/{added}"]
        assert restored["layers_cold"] == []
        t = drive(devchain, [market.eth_price], t, pools=[market.v3_500, market.v3_3000])
        head = devchain.chain.latest_block().number
        msgs = sub.wait_for(lambda ms: processed(ms, head, [warm, added]), 30)
        assert daemon.stop() == 0
    sub.stop()

    def features(address: str) -> dict[str, Any]:
        return next(
            m.json()["features"]
            for m in reversed(msgs)
            if m.topic == f"alvh/pools/devchain/{address}" and m.json().get("block") == head
        )

    # no new warm-up for the unchanged pool; the new one starts cold
    for name in ("move_sigma", "rsi", "realized_vol"):
        assert features(warm)[name] is not None, name
    assert features(added)["rsi"] is None


CRASH_LAYER = """
[[layers]]
name = "CRASH"
level = 1
when = "price < {low}"
clear_when = "price > {high}"
"""


def test_a_firing_inside_one_catch_up_shows_on_the_retained_layer_topic(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    p0 = devchain.market.eth_price
    layer = CRASH_LAYER.format(low=p0 * 0.9, high=p0 * 0.95)
    cfg = write_config(tmp_path, devchain, broker, layers=layer)
    pool = devchain.market.v3_500.address
    topic = f"alvh/layers/devchain/{pool}/CRASH"
    sub = Subscriber(broker, ["alvh/#"])
    t = next_timestamp(devchain)
    daemon = DaemonProcess(cfg).start()
    try:
        sub.wait_for(online, 30)
        t = drive(devchain, [p0] * 3, t)
        head = devchain.chain.latest_block().number
        sub.wait_for(lambda ms: processed(ms, head, [pool]), 30)
        time.sleep(2.5)  # a checkpoint (every second) covers the head: the restart catches up
        daemon.kill()
        # 19 blocks while the daemon is down: a crash and the recovery inside them
        t = drive(devchain, [p0] * 5 + [p0 * 0.85] * 3 + [p0] * 11, t)
        head = devchain.chain.latest_block().number
        sub.clear()
        daemon = DaemonProcess(cfg).start()

        def crash_events(ms: list[Message]) -> list[dict[str, Any]]:
            return [p for p in alert_payloads(ms) if p["layer"] == "CRASH"]

        # Alerts (outbox) and retained telemetry go out on separate paths: wait for both.
        msgs = sub.wait_for(
            lambda ms: processed(ms, head, [pool]) and len(crash_events(ms)) >= 2, 60
        )
        events = crash_events(msgs)
        assert [p["event"] for p in events] == ["firing", "resolved"]
        assert daemon.stop() == 0
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.kill()
        sub.stop()
    firing, resolved = events
    state = retained(broker, [topic])[topic].json()
    assert state["state"] == "inactive"
    assert state["time"] == resolved["time"]
    assert state["last_firing"] == {
        "event": "firing",
        "time": firing["time"],
        "since": firing["since"],
        "block": firing["block"],
        "alert_id": firing["id"],
    }
    assert state["last_event"]["event"] == "resolved"
    assert state["last_event"]["alert_id"] == resolved["id"]


def test_status_carries_the_mqtt5_content_type(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    cfg = write_config(tmp_path, devchain, broker)
    sub = Subscriber(broker, ["alvh/status"], protocol=5)

    def states(ms: list[Message]) -> list[str]:
        return [m.json()["state"] for m in ms]

    with DaemonProcess(cfg) as daemon:
        sub.wait_for(online, 30)
        assert daemon.stop() == 0  # the explicit offline
    sub.wait_for(lambda ms: states(ms)[-1:] == ["offline"], 10)
    daemon = DaemonProcess(cfg).start()
    try:
        sub.wait_for(lambda ms: states(ms).count("online") == 2, 30)
        daemon.kill()  # the last will
        msgs = sub.wait_for(lambda ms: states(ms).count("offline") == 2, 30)
    finally:
        daemon.stop()
        sub.stop()
    assert states(msgs) == ["online", "offline", "online", "offline"]
    for m in msgs:
        assert m.content_type == "application/json", (m.json(), m.content_type)
