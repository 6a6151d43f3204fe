"""A stalled node is visible: ``alvh run`` as a subprocess on a real anvil (mining a block
every second) that is then paused with SIGSTOP, a real mosquitto, and real HTTP.

While the node answers and its head moves, ``/healthz`` is 200 ``"status": "ok"`` and the
``alvh_last_poll_timestamp_seconds`` / ``alvh_last_head_timestamp_seconds`` gauges follow
the wall clock; once no new head has been seen for the chain's ``stale_after`` it is 503
``"status": "degraded"`` naming the chain, and it recovers when heads move again.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.demo.devchain import Anvil
from tests.daemon_proc import DaemonProcess
from tests.plugins.broker import Broker
from tests.plugins.chain import GENESIS_TIMESTAMP
from tests.rpc_servers import closed_port

pytestmark = pytest.mark.integration

#: Anvil's first dev account: not a pool (the pool is reported degraded and skipped), so the
#: daemon follows the chain's heads without a deployed market.
NOT_A_POOL = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def gauge(port: int, name: str, chain: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(rf'^{name}{{chain="{chain}"}} (\S+)$', text, re.MULTILINE)
    assert match is not None, f"{name} not in /metrics"
    return float(match.group(1))


def wait_health(
    port: int, ok: Callable[[int, dict[str, Any]], bool], timeout: float = 30.0
) -> tuple[int, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    last: tuple[int, dict[str, Any]] | None = None
    while time.monotonic() < deadline:
        try:
            last = healthz(port)
        except OSError:  # not listening yet
            last = None
        if last is not None and ok(*last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"/healthz never matched; last answer: {last}")


def test_a_paused_node_makes_healthz_degraded_until_heads_move_again(
    tmp_path: Path, anvil_bin: Path, broker: Broker
) -> None:
    http_port = closed_port()
    with Anvil(binary=anvil_bin, block_time=1, timestamp=GENESIS_TIMESTAMP) as node:
        cfg = tmp_path / "alvh.toml"
        cfg.write_text(
            f"""
[daemon]
state_dir = "{tmp_path / "state"}"

[mqtt]
url = "{broker.url}"

[[chains]]
name = "devchain"
chain_id = {node.chain_id}
rpc = ["{node.url}"]
poll_interval = "head"
request_timeout = "1s"
stale_after = "4s"

[[pools]]
chain = "devchain"
address = "{NOT_A_POOL}"

[bars]
interval = "1m"

[[layers]]
name = "L1"
level = 1
when = "price < 1"

[http]
listen = "127.0.0.1:{http_port}"
dashboard = false
"""
        )
        with DaemonProcess(cfg) as daemon:
            # Alive: the head moves every second.
            _, body = wait_health(
                http_port, lambda code, b: code == 200 and b["chains"]["devchain"]["head"] >= 2
            )
            assert body["status"] == "ok"
            assert body["problems"] == []
            assert body["chains"]["devchain"]["stale"] is False
            assert body["chains"]["devchain"]["last_new_head"] is not None
            now = time.time()
            for name in ("alvh_last_poll_timestamp_seconds", "alvh_last_head_timestamp_seconds"):
                assert now - 10 < gauge(http_port, name, "devchain") <= now

            assert node.pid is not None
            os.kill(node.pid, signal.SIGSTOP)
            try:
                code, body = wait_health(http_port, lambda code, _: code != 200)
                paused_at = time.time()
                last_head = gauge(http_port, "alvh_last_head_timestamp_seconds", "devchain")
                last_poll = gauge(http_port, "alvh_last_poll_timestamp_seconds", "devchain")
            finally:
                os.kill(node.pid, signal.SIGCONT)
            assert code == 503
            assert body["status"] == "degraded"
            (problem,) = body["problems"]
            assert problem.startswith("chain devchain: no new head for ")
            assert problem.endswith(" (stale_after 4s)")
            assert body["chains"]["devchain"]["stale"] is True
            # The gauges show the silence: the last new head is at least stale_after old.
            assert paused_at - last_head >= 4
            assert last_poll <= paused_at

            # Heads move again: healthy again.
            _, body = wait_health(http_port, lambda code, _: code == 200)
            assert body["status"] == "ok"
            assert body["problems"] == []
            assert gauge(http_port, "alvh_last_head_timestamp_seconds", "devchain") > last_head
            assert daemon.stop() == 0
    assert "pool degraded, skipped" in daemon.log()
