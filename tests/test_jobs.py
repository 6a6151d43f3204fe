"""Every APScheduler job of the daemon runs on the event loop (never in a thread pool,
where it would race with the pipeline, the SQLite connection and asyncio events)."""

from __future__ import annotations

import asyncio
import inspect
import threading
import tomllib
from pathlib import Path

from daemon.config import parse_config
from daemon.service.daemon import Daemon
from daemon.service.jobs import on_loop
from tests.conftest import REPO_ROOT


async def test_on_loop_runs_plain_functions_on_the_loop_thread() -> None:
    seen: list[int] = []
    job = on_loop(lambda: seen.append(threading.get_ident()))
    assert inspect.iscoroutinefunction(job)
    await job()
    assert seen == [threading.get_ident()]

    async def already() -> None:
        seen.append(0)

    assert on_loop(already) is already  # a coroutine function is not wrapped again


async def test_every_daemon_job_is_a_coroutine(tmp_path: Path) -> None:
    data = tomllib.loads((REPO_ROOT / "examples" / "alvh.toml").read_text())
    data["daemon"]["state_dir"] = str(tmp_path)
    data["mqtt"] = {"url": "mqtt://127.0.0.1:1", "homeassistant": True}  # nothing listens
    data["chains"][0]["rpc"] = ["http://127.0.0.1:1"]
    daemon = Daemon(parse_config(data))
    run = daemon.new_run()  # built whole: the scheduler and every plugin's jobs exist now
    serving = asyncio.create_task(run.serve(first=True, reload=daemon.reload))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if run.scheduler.running:
            break
    jobs = run.scheduler.get_jobs()
    daemon.stop.set()
    await asyncio.wait_for(serving, 10)
    assert {j.id for j in jobs} >= {
        "checkpoint",
        "housekeeping",
        "calendar-plan",
        "poll-ethereum",
        "silences-expiry",
        "homeassistant",
    }
    for job in jobs:
        assert inspect.iscoroutinefunction(job.func), job.id
