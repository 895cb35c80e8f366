"""Web Push end to end: REST → outbox → NATS → `notify worker` → a local push service peer."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from notify.core.vapid import generate_vapid_keys
from tests.harness import Server, child_env, new_tenant, serving
from tests.push_peer import Answer, PushPeer, Subscriber

PUBLIC, PRIVATE = generate_vapid_keys()
PUSH_ENV = {
    "VAPID_PUBLIC_KEY": PUBLIC,
    "VAPID_PRIVATE_KEY": PRIVATE,
    "VAPID_EMAIL": "ops@example.com",
    "NOTIFY_PUSH_ALLOW_HTTP": "1",
    "NOTIFY_PUSH_MAX_SUBSCRIPTIONS": "1000",  # one user stands for many browsers here
}
# Fast retries so every branch finishes within a test's patience.
WORKER_ENV = {
    **PUSH_ENV,
    "NOTIFY_DELIVERY_BACKOFF": "0.2",
    "NOTIFY_DELIVERY_MAX_ATTEMPTS": "3",
    "NOTIFY_DELIVERY_LEASE": "3",
    "NOTIFY_DELIVERY_SWEEP": "0.1",
}


class Worker:
    """One `notify worker` process on the server's database and NATS."""

    command = "worker"
    ready = "delivering"

    def __init__(self, srv: Server, tmp: Path, name: str = "w", **env: str) -> None:
        self.log = tmp / f"{self.command}-{name}-{time.monotonic_ns()}.log"
        environ = child_env(
            srv.settings.database_url,
            srv.settings.nats_url,
            tmp,
            **{**WORKER_ENV, "NOTIFY_LOG_LEVEL": "INFO", **env},
        )
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "notify.cli", self.command],
                env=environ,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while self.ready not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{self.command} did not start\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        return self.log.read_text()

    def send(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGKILL) -> int:
        self.send(sig)
        try:
            return self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.send(signal.SIGKILL)
            return self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def push_server(
    server: Server, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with serving(server.backend, nats_url, tmp_path_factory.mktemp("pushd"), **PUSH_ENV) as srv:
        yield srv


@pytest.fixture(scope="module")
def peer() -> Iterator[PushPeer]:
    with PushPeer(vapid_public_key=PUBLIC) as p:
        yield p


@pytest.fixture(scope="module")
def worker(push_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    w = Worker(push_server, tmp_path_factory.mktemp("worker"))
    yield w
    w.stop(signal.SIGTERM)


@pytest.fixture
def tenant_id() -> str:
    return new_tenant()


@pytest.fixture
async def ana(push_server: Server, tenant_id: str) -> AsyncIterator[httpx.AsyncClient]:
    async with push_server.client("ana", tenant_id) as c:
        yield c


@pytest.fixture
async def ben(push_server: Server, tenant_id: str) -> AsyncIterator[httpx.AsyncClient]:
    async with push_server.client("ben", tenant_id) as c:
        yield c


async def subscribe(client: httpx.AsyncClient, peer: PushPeer, n: int = 1) -> list[Subscriber]:
    subs = [peer.new_subscriber() for _ in range(n)]
    for s in subs:
        r = await client.post("/api/v1/push/subscribe", json=s.subscribe_body())
        assert r.status_code == 201, r.text
    return subs


async def notify(client: httpx.AsyncClient, **over: Any) -> dict[str, Any]:
    body = {
        "title": "Build finished",
        "message": "main is green",
        "notification_type": "build",
        "channels": ["push"],
        "action_url": "/builds/42",
        **over,
    }
    r = await client.post("/api/v1/notifications", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def deliveries(client: httpx.AsyncClient, nid: str) -> list[dict[str, Any]]:
    r = await client.get(f"/api/v1/notifications/{nid}/deliveries")
    assert r.status_code == 200, r.text
    return [d for d in r.json()["items"] if d["channel"] == "push"]


async def settled(
    client: httpx.AsyncClient, nid: str, patience: float = 20
) -> list[dict[str, Any]]:
    """The push deliveries once none is pending any more."""
    deadline = time.monotonic() + patience
    while True:
        rows = await deliveries(client, nid)
        if rows and all(d["status"] != "pending" for d in rows):
            return rows
        if time.monotonic() > deadline:
            pytest.fail(f"deliveries still pending: {rows}")
        await _sleep()


async def _sleep() -> None:
    import asyncio

    await asyncio.sleep(0.05)


def got(peer: PushPeer, subs: list[Subscriber], n: int = 1) -> Any:
    return lambda p: all(len(p.delivered(s.endpoint)) >= n for s in subs)


async def test_a_push_notification_reaches_every_subscription_encrypted(
    worker: Worker, peer: PushPeer, ana: httpx.AsyncClient
) -> None:
    subs = await subscribe(ana, peer, 2)
    n = await notify(ana, priority="urgent", metadata={"icon": "/i.png"})
    await peer.wait_until_async(got(peer, subs))
    for s in subs:
        (payload,) = peer.delivered(s.endpoint)
        assert payload["title"] == "Build finished"
        assert payload["body"] == "main is green"
        assert payload["icon"] == "/i.png"
        assert payload["tag"] == n["id"]
        assert payload["priority"] == "urgent"
        assert payload["data"]["action_url"] == "/builds/42"
        assert payload["data"]["notification_id"] == n["id"]
        (req,) = peer.requests(s.endpoint)
        assert req.headers["urgency"] == "high"
        assert req.headers["topic"] == "build"
        assert int(req.headers["ttl"]) > 0
    rows = await settled(ana, n["id"])
    assert sorted(d["status"] for d in rows) == ["sent", "sent"]
    assert all(d["attempts"] == 1 and d["last_error"] is None for d in rows)
    assert peer.errors == []


async def test_each_priority_maps_to_its_urgency(
    worker: Worker, peer: PushPeer, ana: httpx.AsyncClient
) -> None:
    (s,) = await subscribe(ana, peer)
    for priority in ("low", "normal", "high"):
        await notify(ana, priority=priority, notification_type="a.b:c")
    await peer.wait_until_async(lambda p: len(p.delivered(s.endpoint)) == 3)
    reqs = sorted(
        peer.requests(s.endpoint), key=lambda r: r.payload["priority"] if r.payload else ""
    )
    assert [r.headers["urgency"] for r in reqs] == ["high", "low", "normal"]
    assert {r.headers["topic"] for r in reqs} == {"a_b_c"}


async def test_a_tenant_wide_push_reaches_every_subscription_of_the_tenant_only(
    worker: Worker,
    push_server: Server,
    peer: PushPeer,
    ana: httpx.AsyncClient,
    ben: httpx.AsyncClient,
    tenant_id: str,
) -> None:
    mine = await subscribe(ana, peer) + await subscribe(ben, peer, 2)
    async with push_server.client("eve", new_tenant()) as eve:
        theirs = await subscribe(eve, peer)
    async with push_server.client("svc", tenant_id, ["service"]) as svc:
        r = await svc.post(
            "/internal/broadcast",
            json={
                "title": "Maintenance",
                "message": "at 22:00",
                "notification_type": "ops",
                "channels": ["push", "in_app"],
                "broadcast_to_tenant": True,
            },
        )
    assert r.status_code == 202, r.text
    (nid,) = r.json()["notification_ids"]
    await peer.wait_until_async(got(peer, mine))
    rows = await settled(ana, nid)
    assert len(rows) == 3 and {d["status"] for d in rows} == {"sent"}
    assert peer.requests(theirs[0].endpoint) == []


async def test_no_subscription_is_recorded_as_skipped(
    worker: Worker, ana: httpx.AsyncClient
) -> None:
    n = await notify(ana)
    (row,) = await deliveries(ana, n["id"])
    assert row["status"] == "skipped"
    assert "subscription" in row["last_error"]


async def test_410_deactivates_the_subscription_and_is_not_retried(
    worker: Worker, peer: PushPeer, ana: httpx.AsyncClient
) -> None:
    gone, ok = await subscribe(ana, peer, 2)
    peer.script(gone.endpoint, [Answer(410)])
    n = await notify(ana)
    rows = await settled(ana, n["id"])
    by_status = sorted((d["status"], d["attempts"]) for d in rows)
    assert by_status == [("failed", 1), ("sent", 1)]
    failed = next(d for d in rows if d["status"] == "failed")
    assert "410" in failed["last_error"]
    assert len(peer.requests(gone.endpoint)) == 1
    listed = (await ana.get("/api/v1/push/subscriptions")).json()["items"]
    assert [s["endpoint"] for s in listed] == [ok.endpoint]
    # Later notifications no longer go to it.
    await notify(ana)
    await peer.wait_until_async(lambda p: len(p.delivered(ok.endpoint)) == 2)
    assert len(peer.requests(gone.endpoint)) == 1


async def test_429_is_retried_after_its_retry_after(
    worker: Worker, peer: PushPeer, ana: httpx.AsyncClient
) -> None:
    (s,) = await subscribe(ana, peer)
    peer.script(s.endpoint, [Answer(429, {"Retry-After": "1"})])
    n = await notify(ana)
    (row,) = await settled(ana, n["id"])
    assert (row["status"], row["attempts"]) == ("sent", 2)
    first, second = peer.requests(s.endpoint)
    assert (first.status, second.status) == (429, 201)
    assert second.received - first.received >= 0.9


async def test_500_then_201_is_sent_on_the_second_attempt(
    worker: Worker, peer: PushPeer, ana: httpx.AsyncClient
) -> None:
    (s,) = await subscribe(ana, peer)
    peer.script(s.endpoint, [Answer(500)])
    n = await notify(ana)
    (row,) = await settled(ana, n["id"])
    assert (row["status"], row["attempts"]) == ("sent", 2)
    assert [r.status for r in peer.requests(s.endpoint)] == [500, 201]


async def test_a_push_service_that_keeps_failing_ends_failed_after_the_maximum(
    worker: Worker, peer: PushPeer, ana: httpx.AsyncClient
) -> None:
    (s,) = await subscribe(ana, peer)
    peer.script(s.endpoint, [Answer(503)] * 5)
    n = await notify(ana)
    (row,) = await settled(ana, n["id"])
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert "503" in row["last_error"]
    assert len(peer.requests(s.endpoint)) == 3


async def test_an_unreachable_push_service_is_retried_then_failed(
    worker: Worker, ana: httpx.AsyncClient, peer: PushPeer
) -> None:
    s = peer.new_subscriber()
    dead = s.subscribe_body() | {"endpoint": "http://127.0.0.1:9/push/nobody"}
    assert (await ana.post("/api/v1/push/subscribe", json=dead)).status_code == 201
    n = await notify(ana)
    (row,) = await settled(ana, n["id"])
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert "network error" in row["last_error"]


async def test_long_bodies_are_trimmed_under_4096_bytes_never_failed(
    worker: Worker, peer: PushPeer, ana: httpx.AsyncClient
) -> None:
    (s,) = await subscribe(ana, peer)
    n = await notify(ana, message="é" * 3999)
    await peer.wait_until_async(got(peer, [s]))
    (req,) = peer.requests(s.endpoint)
    assert req.body_size <= 4096
    assert req.payload is not None
    assert req.payload["body"].endswith("…") and req.payload["body"].startswith("éé")
    (row,) = await settled(ana, n["id"])
    assert row["status"] == "sent"


async def test_413_is_trimmed_harder_and_retried_once(
    worker: Worker, peer: PushPeer, ana: httpx.AsyncClient
) -> None:
    small, tiny = await subscribe(ana, peer, 2)
    peer.max_body(small.endpoint, 2500)
    peer.max_body(tiny.endpoint, 200)
    n = await notify(ana, message="x" * 3000)
    rows = {d["target"]: d for d in await settled(ana, n["id"])}
    assert [r.status for r in peer.requests(small.endpoint)] == [413, 201]
    assert len(peer.delivered(small.endpoint)[0]["body"]) < 2500
    assert [r.status for r in peer.requests(tiny.endpoint)] == [413, 413]
    assert sorted((d["status"], d["attempts"]) for d in rows.values()) == [
        ("failed", 1),
        ("sent", 1),
    ]


async def test_send_to_user_the_descriptions_python_api(
    worker: Worker, push_server: Server, peer: PushPeer, ana: httpx.AsyncClient, tenant_id: str
) -> None:
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from notify.core import db
    from notify.push.service import PushNotificationService

    subs = await subscribe(ana, peer, 2)
    engine = db.create_engine(push_server.settings)
    try:
        async with async_sessionmaker(engine)() as session:
            result = await PushNotificationService(tenant_id).send_to_user(
                "ana",
                {"title": "New IEP Update", "message": "Needs you", "action_url": "/iep/12345"},
                session,
            )
    finally:
        await engine.dispose()
    assert result["subscriptions"] == 2
    await peer.wait_until_async(got(peer, subs))
    payload = peer.delivered(subs[0].endpoint)[0]
    assert (payload["title"], payload["body"]) == ("New IEP Update", "Needs you")
    assert payload["data"]["action_url"] == "/iep/12345"
    rows = await settled(ana, result["notification_id"])
    assert [d["status"] for d in rows] == ["sent", "sent"]


async def test_a_worker_killed_mid_batch_is_replaced_and_every_subscription_gets_its_push(
    push_server: Server,
    peer: PushPeer,
    ana: httpx.AsyncClient,
    tmp_path: Path,
    worker: Worker,
) -> None:
    """SIGKILL: what was in flight is sent again (the browser collapses it by tag); nothing
    is lost. SIGTERM: the worker finishes what it started, so nothing is sent twice."""
    worker.stop(signal.SIGTERM)
    subs = await subscribe(ana, peer, 150)
    peer.default_delay = 0.05
    try:
        first = Worker(push_server, tmp_path, "first", NOTIFY_DELIVERY_CONCURRENCY="10")
        n = await notify(ana)
        await peer.wait_until_async(lambda p: sum(len(p.delivered(s.endpoint)) for s in subs) >= 20)
        first.stop(signal.SIGTERM)
        after_term = {s.endpoint: len(peer.delivered(s.endpoint)) for s in subs}
        assert max(after_term.values()) == 1
        assert 20 <= sum(after_term.values()) < 150
        second = Worker(push_server, tmp_path, "second", NOTIFY_DELIVERY_CONCURRENCY="10")
        await peer.wait_until_async(lambda p: sum(len(p.delivered(s.endpoint)) for s in subs) >= 60)
        second.stop(signal.SIGKILL)
        third = Worker(push_server, tmp_path, "third")
        await peer.wait_until_async(got(peer, subs), timeout=30)
        rows = await settled(ana, n["id"], patience=30)
        third.stop(signal.SIGTERM)
    finally:
        peer.default_delay = 0.0
    assert len(rows) == 150 and {d["status"] for d in rows} == {"sent"}
    counts = [len(peer.delivered(s.endpoint)) for s in subs]
    assert min(counts) == 1
    # Only what was in flight at the SIGKILL (at most the 10 concurrent sends) may repeat.
    assert sum(counts) - 150 <= 10
    assert peer.errors == []
