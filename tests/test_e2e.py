"""End to end: anvil + real Uniswap V3 + mosquitto + ``alvh run`` as a subprocess.

A crash of many sigma is driven with real swaps; an independent MQTT subscriber must
receive a ``firing`` event that validates against DESIGN.md's schema, with a complete
hedge whose numbers this test recomputes on its own; a subscriber arriving after the
crash must get the retained layer states (firing); a recovery must give ``resolved``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.alert_schema import alert_errors
from tests.daemon_proc import DaemonProcess
from tests.plugins.broker import Broker, Message, Subscriber
from tests.plugins.chain import DemoChain
from tests.scenario import alerts, drive, next_timestamp, random_walk, write_config

pytestmark = pytest.mark.integration


def ncdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def bs(kind: str, s: float, k: float, t: float, v: float) -> float:
    d1 = (math.log(s / k) + 0.5 * v * v * t) / (v * math.sqrt(t))
    d2 = d1 - v * math.sqrt(t)
    if kind == "call":
        return s * ncdf(d1) - k * ncdf(d2)
    return k * ncdf(-d2) - s * ncdf(-d1)


def iso(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _firing_topics(messages: list[Message]) -> set[str]:
    """Layer topics whose latest message says ``firing``."""
    latest = {m.topic: m for m in messages if m.topic.startswith("alvh/layers/")}
    return {t for t, m in latest.items() if m.payload and m.json()["state"] == "firing"}


def test_crash_fires_and_recovery_resolves(
    tmp_path: Path, devchain: DemoChain, broker: Broker
) -> None:
    cfg = write_config(tmp_path, devchain, broker)
    t = next_timestamp(devchain)
    sub = Subscriber(broker, ["alvh/#"])
    with DaemonProcess(cfg) as daemon:
        sub.wait_for(
            lambda ms: any(m.topic == "alvh/status" and m.json()["state"] == "online" for m in ms),
            30,
        )
        p0 = devchain.market.eth_price
        warm = random_walk(p0, 90, 0.001, seed=1)  # 18 bars of 1m at 12s blocks
        t = drive(devchain, warm, t)
        crash = warm[-1] * 0.90
        t = drive(devchain, [crash], t)
        got = sub.wait_for(
            lambda ms: bool(alerts(ms, "firing", "L1")) and bool(alerts(ms, "firing", "L2")), 60
        )
        # The layer states are retained: a subscriber that arrives after the crash gets
        # them from the broker at once, flagged retained, saying firing.
        pool = devchain.market.v3_500.address
        layer_topics = {f"alvh/layers/devchain/{pool}/{name}" for name in ("L1", "L2")}
        sub.wait_for(lambda ms: layer_topics <= _firing_topics(ms), 30)  # the daemon sent them
        late = Subscriber(broker, sorted(layer_topics))
        try:
            retained = late.wait_for(lambda ms: layer_topics <= {m.topic for m in ms}, 10)
        finally:
            late.stop()
        for topic in sorted(layer_topics):
            first = next(m for m in retained if m.topic == topic)
            assert first.retain, f"{topic} was not delivered as a retained message"
            assert first.json()["state"] == "firing", (topic, first.json())
        # recovery: a quiet path for two bars; the next bar's move is small, both clear
        t = drive(devchain, random_walk(crash, 15, 0.0005, seed=2), t)
        got = sub.wait_for(
            lambda ms: bool(alerts(ms, "resolved", "L1")) and bool(alerts(ms, "resolved", "L2")), 60
        )
        status = sub.wait_for_topic("alvh/status").json()
        assert status["state"] == "online"
        assert daemon.stop() == 0
    sub.wait_for(
        lambda ms: ms[-1].topic == "alvh/status" and ms[-1].json()["state"] == "offline", 10
    )
    sub.stop()

    # Every alert the subscriber got validates, not only those looked at below.
    received = [m.json() for m in got if m.topic.startswith("alvh/alerts/")]
    assert len(received) >= 4
    for payload in received:
        assert alert_errors(payload) == [], payload
    fired = alerts(got, "firing", "L1")[0]
    assert alert_errors(fired) == []
    assert fired["pool"] == devchain.market.v3_500.address
    assert fired["chain_id"] == devchain.market.chain_id
    values = fired["values"]
    assert isinstance(values, dict)
    assert values["move_sigma"] is not None
    assert values["move_sigma"] <= -3
    assert abs(values["price"] / crash - 1) < 1e-6
    assert str(fired["reason"]).startswith("abs(move_sigma)=")
    resolved = alerts(got, "resolved", "L1")[0]
    assert alert_errors(resolved) == []
    assert resolved["since"] == fired["since"]
    assert resolved["id"] != fired["id"]

    # The L2 collar, recomputed independently from the payload's own inputs.
    l2 = alerts(got, "firing", "L2")[0]
    assert alert_errors(l2) == []
    hedge = l2["hedge"]
    assert isinstance(hedge, dict)
    v2 = l2["values"]
    assert isinstance(v2, dict)
    price = float(v2["price"])
    vols = [x for x in (v2["realized_vol"], v2["iv"]) if isinstance(x, float) and x > 0]
    vol = max(vols) if vols else 0.8
    assert hedge["volatility"] == pytest.approx(vol, rel=1e-9)
    years = (iso(str(hedge["expiry"])) - iso(str(l2["time"]))) / (365 * 86400)
    assert years == pytest.approx(14 / 365, rel=1e-9)
    k_put = price * math.exp(-2.0 * vol * math.sqrt(years))
    k_call = price * math.exp(1.0 * vol * math.sqrt(years))
    assert hedge["strike"] == pytest.approx(k_put, rel=1e-9)
    assert hedge["call_strike"] == pytest.approx(k_call, rel=1e-9)
    # no position configured: a full-range position worth 1 quote unit entered now,
    # whose base exposure (delta) is half its value in base units
    assert hedge["position"] == "notional-1-quote"
    notional = 0.5 * (0.5 / price)
    assert hedge["notional"] == pytest.approx(notional, rel=1e-9)
    premium = notional * (
        bs("put", price, k_put, years, vol) - bs("call", price, k_call, years, vol)
    )
    assert hedge["premium_estimate"] == pytest.approx(premium, rel=1e-6, abs=1e-12)
    assert hedge["il_now"] == pytest.approx(0.0, abs=1e-12)
    r = k_put / price
    assert hedge["il_at_strike"] == pytest.approx(2 * math.sqrt(r) / (1 + r) - 1, rel=1e-9)
