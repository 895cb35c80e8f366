"""Two `notify scheduler`s and two `notify worker`s: each due user gets one digest."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.harness import Server
from tests.test_digest import SUB, digests
from tests.test_push_delivery import Worker


class Scheduler(Worker):
    command = "scheduler"
    ready = "scheduler"


@pytest.fixture
def crew(server: Server, tmp_path: Path) -> Iterator[list[Worker]]:
    procs: list[Worker] = []
    try:
        for i in range(2):
            procs.append(Scheduler(server, tmp_path, f"s{i}"))
            procs.append(Worker(server, tmp_path, f"w{i}"))
        yield procs
    finally:
        for p in procs:
            p.stop(signal.SIGTERM)


def zone_after_midnight() -> tuple[str, str]:
    """A zone whose clock reads at least 00:05 now, and its time two minutes ago."""
    for name in ("UTC", "Asia/Tokyo", "America/New_York"):
        local = dt.datetime.now(ZoneInfo(name))
        if local.hour or local.minute >= 5:
            return name, (local - dt.timedelta(minutes=2)).strftime("%H:%M")
    raise AssertionError("unreachable")


async def test_two_schedulers_and_two_workers_send_each_digest_once(
    server: Server, crew: list[Worker], alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    zone, time_ = zone_after_midnight()
    for client in (alice, bob):
        body = {"title": "t", "message": "m", "notification_type": "comment"}
        assert (await client.post("/api/v1/notifications", json=body)).status_code == 201
        r = await client.put(SUB, json={"delivery_time": time_, "timezone": zone})
        assert r.status_code == 200, r.text
    try:
        deadline = time.monotonic() + 90  # the next whole minute, and the tick's run
        while not (await digests(alice) and await digests(bob)):
            if time.monotonic() > deadline:
                logs = "\n".join(p.output()[-2000:] for p in crew)
                pytest.fail(f"no digest within 90 s\n{logs}")
            await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # the other scheduler's tick of the same minute, if any
        assert len(await digests(alice)) == 1
        assert len(await digests(bob)) == 1
    finally:
        for client in (alice, bob):
            await client.put(SUB, json={"is_enabled": False})
