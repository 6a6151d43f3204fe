"""The live dashboard in a real headless Chromium, against the demo stack pieces: anvil
with the demo market, Mosquitto with a WebSockets listener, ``alvh run`` serving the
page. Chromium is driven over the Chrome DevTools Protocol (a websocket, JSON
messages), so no browser automation package is needed.

The page must show the pools with live prices; a silence sent over MQTT appears; a crash
driven with real swaps turns a layer to firing on the page and puts the alert, with its
hedge, in the stream (the silenced layer fires on the page, but sends no alert); a
screenshot is saved to ``test-artifacts/dashboard.png``; payload text cannot inject
markup; the daemon going away shows as offline. The page must log no error.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import REPO_ROOT
from tests.daemon_proc import DaemonProcess
from tests.plugins.broker import BrokerFactory, Client, Subscriber, free_port
from tests.plugins.chain import DemoChain
from tests.scenario import config_text, drive, next_timestamp, online, random_walk

pytestmark = pytest.mark.integration

CHROMIUM_HINT = "install it with: sudo apt-get install -y chromium"
ARTIFACTS = REPO_ROOT / "test-artifacts"
WIDTH, HEIGHT = 1440, 1000


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"chromium is not installed (not on PATH); {CHROMIUM_HINT}", pytrace=False)


class CdpError(RuntimeError):
    pass


class Page:
    """One page target over the DevTools protocol: calls, events, page-side errors."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self.errors: list[str] = []

    def _event(self, message: dict[str, Any]) -> None:
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(
                "exception: "
                + str(details.get("exception", {}).get("description") or details.get("text"))
            )
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(
                "console.error: " + " ".join(str(a.get("value")) for a in params.get("args", []))
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.errors.append("log: " + str(params["entry"].get("text")))

    def call(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer to {method} within {timeout:g}s")
            message = json.loads(self.ws.recv(timeout=left))
            if message.get("id") == ident:
                if "error" in message:
                    raise CdpError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self._event(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise CdpError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        # While the page loads, document.body may not exist yet: that is "not yet".
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        while True:
            value = self.evaluate(guarded)
            if value:
                return value
            if time.monotonic() > deadline:
                text = self.evaluate("document.body.innerText")
                raise AssertionError(
                    f"page: {what} not seen within {timeout:g}s; page text:\n{text}"
                )
            time.sleep(0.2)

    def screenshot(self, path: Path) -> None:
        shot = self.call("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


@contextlib.contextmanager
def chromium() -> Iterator[str]:
    """Headless Chromium with DevTools on a free port; yields the DevTools HTTP base URL."""
    binary = find_chromium()
    profile = Path(tempfile.mkdtemp(prefix="alvh-chromium-"))
    args = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        # keep the browser from calling home: this test talks to 127.0.0.1 only
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-features=Translate,OptimizationHints,MediaRouter",
        "--no-default-browser-check",
        "--no-first-run",
        "--disable-quic",
        "--metrics-recording-only",
        "about:blank",
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    assert proc.stderr is not None
    found: list[str] = []
    lines: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "DevTools listening on " in line and not found:
                found.append(line.split("DevTools listening on ", 1)[1].strip())

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not found and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        if not found:
            raise AssertionError(
                "chromium did not print its DevTools URL; stderr:\n" + "".join(lines[-30:])
            )
        # ws://127.0.0.1:PORT/devtools/browser/<id> -> http://127.0.0.1:PORT
        yield "http://" + found[0].split("://", 1)[1].split("/", 1)[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        proc.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)


@contextlib.contextmanager
def open_page(devtools: str) -> Iterator[Page]:
    """The browser's first page, with its events and errors collected."""
    with urllib.request.urlopen(f"{devtools}/json/list", timeout=10) as response:
        targets = json.loads(response.read())
    target = next(t for t in targets if t.get("type") == "page")
    with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
        page = Page(ws)
        for domain in ("Page", "Runtime", "Log"):
            page.call(f"{domain}.enable")
        page.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )
        yield page


def count(selector: str) -> str:
    return f"document.querySelectorAll({json.dumps(selector)}).length"


def test_dashboard_shows_pools_and_a_crash_fires_a_layer(
    tmp_path: Path, devchain: DemoChain, broker_factory: BrokerFactory
) -> None:
    broker = broker_factory(websockets=True)
    assert broker.ws_url is not None
    http_port = free_port()
    market = devchain.market
    cfg = tmp_path / "alvh.toml"
    cfg.write_text(
        config_text(
            tmp_path,
            devchain,
            broker,
            all_pools=True,
            mqtt=f'url = "{broker.url}"\nhomeassistant = true',
            extra=f'[http]\nlisten = "127.0.0.1:{http_port}"\nbroker_ws_url = "{broker.ws_url}"\n',
        )
    )
    all_pools = [market.v3_500, market.v3_3000, market.v2]
    v3 = market.v3_500.address
    sub = Subscriber(broker, ["alvh/#"])
    ops = Client(broker)
    with DaemonProcess(cfg) as daemon, chromium() as devtools, open_page(devtools) as page:
        sub.wait_for(online, 30)
        page.call("Page.navigate", url=f"http://127.0.0.1:{http_port}/")
        page.wait_for("document.body.dataset.broker === 'connected'", 30, "broker connected")
        page.wait_for(
            "document.getElementById('daemon-status').dataset.state === 'online'",
            20,
            "daemon online",
        )

        # Warm up: a quiet random walk on every pool, one block per 12 s of chain time.
        t = next_timestamp(devchain)
        t = drive(devchain, random_walk(market.eth_price, 90, 0.001, seed=1), t, pools=all_pools)
        page.wait_for(count('.pool[data-state="ok"]') + " === 3", 60, "three pools with telemetry")
        pools = page.evaluate(
            "Array.from(document.querySelectorAll('.pool')).map(c => ({"
            "key: c.dataset.pool, name: c.querySelector('.pool-name').textContent,"
            "price: c.querySelector('.price').textContent,"
            "rsi: c.querySelector('[data-field=rsi]').textContent}))"
        )
        assert {p["name"] for p in pools} == {"WETH/USDC 0.05%", "WETH/USDC 0.3%", "WETH/USDC V2"}
        for p in pools:
            assert p["price"] not in ("", "\u2013"), p
            assert float(p["price"].replace(",", "")) == pytest.approx(market.eth_price, rel=0.05)
        page.wait_for(count(f'[data-layer="devchain/{v3}/L1"][data-state="inactive"]'), 20,
                      "layer L1 inactive")  # fmt: skip

        # Silence L2 everywhere for an hour: it will fire on the page, but send no alert.
        ops.publish(
            "alvh/cmd/silence",
            json.dumps(
                {
                    "matchers": {"layer": "L2"},
                    "duration": "1h",
                    "author": "ops@example",
                    "comment": "hedge already in place",
                    "request_id": "dash-1",
                }
            ),
        )
        page.wait_for(count("#silences .silence") + " === 1", 20, "the silence listed")
        assert "layer=L2" in page.evaluate("document.getElementById('silences').innerText")

        # The crash: -12% in one block on every pool.
        crash = market.eth_price * 0.88
        drive(devchain, [crash], t, pools=all_pools)
        page.wait_for(
            count(f'[data-layer="devchain/{v3}/L1"][data-state="firing"]'), 60, "L1 firing"
        )
        page.wait_for(count('#alerts .alert[data-event="firing"][data-layer="L1"]'), 30,
                      "the L1 alert in the stream")  # fmt: skip
        page.wait_for(
            count(f'[data-layer="devchain/{v3}/L2"][data-state="firing"]'), 30, "L2 firing"
        )
        hedge = page.evaluate(
            "document.querySelector('#alerts .alert[data-layer=\"L1\"] .alert-hedge').textContent"
        )
        assert hedge.startswith("hedge: put ")
        assert "IL now" in hedge
        assert "per 1 quote unit of LP value" in hedge  # the demo pools have no position
        assert page.evaluate(count('#alerts .alert[data-layer="L2"]')) == 0  # silenced
        assert not [m for m in sub.messages if m.topic.startswith("alvh/alerts/") and
                    m.json()["layer"] == "L2"]  # fmt: skip
        # the pool's telemetry and its layer states are separate retained topics
        page.wait_for(
            f"Math.abs(parseFloat(document.querySelector('[data-pool=\"devchain/{v3}\"] .price')"
            f".textContent.replace(/,/g, '')) / {crash} - 1) < 1e-3",
            20,
            "the crash price on the pool card",
        )
        time.sleep(1.0)  # let the canvas and "for Xm" labels settle for the picture
        page.screenshot(ARTIFACTS / "dashboard.png")
        assert page.errors == []

        # Payload text is shown as text, never parsed as markup.
        evil = "0x000000000000000000000000000000000000dEaD"
        ops.publish(
            f"alvh/pools/devchain/{evil}",
            json.dumps(
                {
                    "state": "ok",
                    "chain": "devchain",
                    "pool": evil,
                    "pool_name": '<img src=x onerror="window.pwned=1">',
                    "time": "2023-11-14T22:13:20Z",
                    "block": 1,
                    "features": {"price": "<b>1</b>"},
                }
            ),
        )
        page.wait_for(count(f'[data-pool="devchain/{evil}"]'), 20, "the injected pool card")
        assert page.evaluate(count(f'[data-pool="devchain/{evil}"] img')) == 0
        assert page.evaluate("window.pwned === undefined")
        assert page.evaluate(
            f"document.querySelector('[data-pool=\"devchain/{evil}\"] .pool-name').textContent"
        ).startswith("<img")

        # The daemon stops: its retained status says offline, and so does the page.
        assert daemon.stop() == 0
        page.wait_for(
            "document.getElementById('daemon-status').dataset.state === 'offline'",
            20,
            "daemon offline",
        )
        assert page.errors == []
    ops.stop()
    sub.stop()
