"""The optional HTTP endpoint (``[http]``): Prometheus ``/metrics``, ``/healthz``, and the
live dashboard (static files under ``daemon/service/web``) with its broker settings in
``/config.json``. It sees the daemon only through the run's
:class:`~daemon.service.runtime.Runtime`.

Guarantees: bound to the configured address only (loopback by default); read-only;
nothing secret is served (the dashboard gets the broker's WebSocket URL and topic
prefix, never credentials).
"""

from __future__ import annotations

import json
from importlib import resources

from aiohttp import web

from daemon.config import HttpConfig
from daemon.service.runtime import Runtime

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


async def start_http(cfg: HttpConfig, runtime: Runtime) -> tuple[web.AppRunner, int]:
    """Serve ``cfg`` for this run; returns the runner (``cleanup()`` it) and the bound port."""
    app = web.Application()

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(
            body=runtime.metrics.render(), content_type="text/plain", charset="utf-8"
        )

    async def healthz(_: web.Request) -> web.Response:
        health = runtime.health()
        # 503 while degraded (a stale chain), so a plain HTTP check sees it too.
        status = 503 if health.get("status") == "degraded" else 200
        body = json.dumps(health).encode()
        return web.Response(body=body, status=status, content_type="application/json")

    async def dashboard_config(_: web.Request) -> web.Response:
        mqtt = runtime.mqtt
        ws = cfg.broker_ws_url or f"ws://{mqtt.host}:9001"
        body = {"broker_ws_url": ws, "topic_prefix": mqtt.topic_prefix}
        return web.Response(body=json.dumps(body).encode(), content_type="application/json")

    async def static(request: web.Request) -> web.Response:
        name = request.match_info.get("name") or "index.html"
        if "/" in name or name.startswith("."):
            raise web.HTTPNotFound()
        try:
            data = resources.files("daemon.service").joinpath("web", name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise web.HTTPNotFound() from None
        suffix = name[name.rfind(".") :] if "." in name else ""
        return web.Response(
            body=data,
            headers={"Content-Type": _CONTENT_TYPES.get(suffix, "application/octet-stream")},
        )

    if cfg.metrics:
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    if cfg.dashboard:
        app.router.add_get("/config.json", dashboard_config)
        app.router.add_get("/", static)
        app.router.add_get("/{name}", static)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, _, port = cfg.listen.rpartition(":")
    site = web.TCPSite(runner, host.strip("[]"), int(port))
    await site.start()
    bound = int(port)
    for address in runner.addresses:  # the real port when 0 was asked
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return runner, bound
