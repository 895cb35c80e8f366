"""Accepted means committed, then published: the outbox reaches JetStream, de-duplicated."""

from __future__ import annotations

import asyncio
import contextlib

import msgspec
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from notify.core import bus
from notify.core.bus import Bus
from notify.core.config import Settings
from tests.harness import Server

API = "/api/v1/notifications"


async def fetch_subject(nats_url: str, subject: str, count: int, wait: float = 10) -> list:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            subject, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, filter_subject=subject)
        )
        msgs: list = []
        deadline = asyncio.get_running_loop().time() + wait
        while len(msgs) < count and asyncio.get_running_loop().time() < deadline:
            try:
                msgs += await sub.fetch(count - len(msgs), timeout=1)
            except nats.errors.TimeoutError:
                continue
        with contextlib.suppress(nats.errors.TimeoutError):  # nothing more than expected
            msgs += await sub.fetch(1, timeout=0.5)
        return msgs
    finally:
        await nc.close()


async def test_user_notification_is_published_to_the_user_subject(
    server, nats_url, alice, tenant
) -> None:
    r = await alice.post(API, json={"title": "Fanout", "message": "m"})
    n = r.json()
    [msg] = await fetch_subject(nats_url, bus.user_subject(tenant, "alice"), 1)
    assert msg.headers["Nats-Msg-Id"] == n["id"]
    assert msgspec.json.decode(msg.data) == n


async def test_broadcasts_go_to_tenant_and_channel_subjects(
    server, nats_url, service, tenant
) -> None:
    body = {"title": "t", "message": "m"}
    r = await service.post("/internal/broadcast", json={**body, "broadcast_to_tenant": True})
    [tenant_msg] = await fetch_subject(nats_url, bus.tenant_subject(tenant), 1)
    assert tenant_msg.headers["Nats-Msg-Id"] == r.json()["notification_ids"][0]
    r = await service.post("/internal/broadcast", json={**body, "channel": "ops.alerts"})
    [channel_msg] = await fetch_subject(nats_url, bus.channel_subject(tenant, "ops.alerts"), 1)
    assert msgspec.json.decode(channel_msg.data)["id"] == r.json()["notification_ids"][0]


async def test_subject_tokens_are_safe_and_distinct() -> None:
    assert bus.token("tenant_1-A") == "tenant_1-A"
    odd = [bus.token(v) for v in ("a.b", "a*b", "a>b", "a b", "=x", "ünï")]
    assert all("." not in t and "*" not in t and ">" not in t and " " not in t for t in odd)
    assert len(set(odd)) == len(odd)


async def test_relay_survives_nats_outage_and_dedupes(server, nats_url, tenant) -> None:
    """Rows written while NATS is away are published later; a re-publish is a no-op."""
    settings: Settings = server.settings
    offline = msgspec.structs.replace(settings, nats_url="nats://127.0.0.1:1")
    # A pod with NATS unreachable still accepts and stores: the row waits in the outbox.
    pod = Server(offline).start(migrate=False)
    try:
        async with pod.client("alice", tenant) as c:
            r = await c.post(API, json={"title": "while NATS was away", "message": "m"})
            assert r.status_code == 201
            health = await c.get("/health")
            assert health.status_code == 503 and health.json()["checks"]["nats"] == "unavailable"
            assert health.json()["checks"]["database"] == "ok"
    finally:
        pod.stop()
    subject = bus.user_subject(tenant, "alice")
    # The healthy pod's relay (polling) publishes it.
    [msg] = await fetch_subject(nats_url, subject, 1, wait=15)
    assert msg.headers["Nats-Msg-Id"] == r.json()["id"]
    # The same message id again (a relay crashed after publishing) is de-duplicated.
    b = Bus(settings)
    await b.start()
    try:
        await b.publish(subject, msg.data, msg_id=r.json()["id"])
    finally:
        await b.close()
    assert len(await fetch_subject(nats_url, subject, 2, wait=2)) == 1
