"""Accepted means committed, then published: the outbox reaches JetStream, de-duplicated."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import msgspec
import nats
import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import create_async_engine

from notify.core import bulk, bus, db
from notify.core.bus import Bus
from notify.core.config import Settings
from notify.core.models import utcnow
from notify.notifications.models import Notification, NotificationDelivery, OutboxMessage
from notify.notifications.outbox import OutboxRelay
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


@pytest.mark.parametrize("users", [3, 60])
async def test_a_list_broadcast_is_stored_and_published_whole(
    server, nats_url, service, tenant, users
) -> None:
    """On PostgreSQL 3 users are one statement (about 100 values), 60 are past its size
    (about 2,000): one INSERT per table."""
    names = [f"user{i}" for i in range(users)]
    r = await service.post(
        "/internal/broadcast", json={"title": "t", "message": "m", "user_ids": names}
    )
    assert r.status_code == 202, r.text
    ids = r.json()["notification_ids"]
    msgs = await fetch_subject(nats_url, f"notify.{bus.token(tenant)}.user.*", users)
    assert sorted(m.headers["Nats-Msg-Id"] for m in msgs) == sorted(ids)
    assert {msgspec.json.decode(m.data)["user_id"] for m in msgs} == set(names)
    async with server.client(names[-1], tenant) as last:
        [n] = (await last.get(API)).json()["items"]
    assert n["id"] in ids and n["title"] == "t"
    engine = db.create_engine(server.settings)
    try:
        for _ in range(100):  # the pod that committed deletes what JetStream acknowledged
            async with engine.connect() as conn:
                left = await conn.scalar(
                    select(func.count()).where(OutboxMessage.notification_id.in_(ids))
                )
            if not left:
                break
            await asyncio.sleep(0.05)
        assert left == 0
    finally:
        await engine.dispose()


def test_one_statement_only_where_it_is_safe() -> None:
    notification = {"id": 1, "title": "t"}
    assert bulk.one_statement([(Notification.__table__, [notification])]) is None, "one table"
    outbox = {"notification_id": 1, "subject": "s", "payload": b"", "created_at": None}
    shape = bulk.one_statement(
        [(Notification.__table__, [notification]), (OutboxMessage.__table__, [outbox])]
    )
    assert shape is None, "notification columns with defaults computed in Python are missing"
    full = {c.name: None for c in Notification.__table__.columns if c.name != "sa_orm_sentinel"}
    shape = bulk.one_statement(
        [(Notification.__table__, [full]), (OutboxMessage.__table__, [outbox])]
    )
    assert shape is not None, "the outbox id comes from its sequence, in the statement"
    assert (
        bulk.one_statement(
            [
                (Notification.__table__, [full, {**full, "extra": 1}]),
                (OutboxMessage.__table__, [outbox]),
            ]
        )
        is None
    ), "rows of one table with different columns"


class FlakyBus:
    """Fails the first publish of each payload holding b'fail', then publishes it."""

    connected = True

    def __init__(self) -> None:
        self.failed: set[str] = set()
        self.published: list[str] = []

    async def publish(self, subject: str, payload: bytes, msg_id: str) -> int:
        if b"fail" in payload and msg_id not in self.failed:
            self.failed.add(msg_id)
            raise ConnectionError("connection lost")
        self.published.append(msg_id)
        return len(self.published)


def outbox_row(payload: bytes, subject: str = "notify.t.all", nid: uuid.UUID | None = None) -> dict:
    return {
        "notification_id": nid or uuid.uuid4(),
        "subject": subject,
        "payload": payload,
        "created_at": utcnow(),
    }


@contextlib.asynccontextmanager
async def relay_on_sqlite(tmp_path, bus: FlakyBus):
    """A relay over a fresh SQLite database whose poll is an hour: only `send` and a wake
    publish anything, and only the settle task deletes what `send` published."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'o.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(db.metadata.create_all)
    relay = OutboxRelay(engine, bus, poll=3600)  # type: ignore[arg-type]
    relay.start()
    try:
        yield engine, relay
    finally:
        await relay.stop()
        await engine.dispose()


async def eventually(check, tries: int = 200):
    for _ in range(tries):
        if value := await check():
            return value
        await asyncio.sleep(0.02)
    return await check()


async def test_what_send_published_is_deleted_and_marks_only_its_own_delivery(tmp_path) -> None:
    """Acknowledged rows go without any drain; a notification's websocket delivery becomes
    sent with its own subject's row, not with its task message for the workers."""
    nid, now = uuid.uuid4(), utcnow()
    notification = {c.name: None for c in Notification.__table__.columns}
    notification.update(
        id=nid,
        tenant_id="t",
        audience="tenant",
        title="t",
        message="m",
        notification_type="info",
        priority="normal",
        channels=["websocket"],
        metadata={},
        status="unread",
        created_by="svc",
        created_at=now,
        updated_at=now,
    )
    delivery = {
        "id": uuid.uuid4(),
        "notification_id": nid,
        "tenant_id": "t",
        "channel": "websocket",
        "status": "pending",
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
    task = outbox_row(b"task", bus.TASKS_SUBJECT, nid)
    own = outbox_row(b"own", "notify.t.all", nid)
    flaky = FlakyBus()
    async with relay_on_sqlite(tmp_path, flaky) as (engine, relay):
        async with engine.begin() as conn:
            await conn.execute(insert(Notification.__table__), [notification])
            await conn.execute(insert(NotificationDelivery.__table__), [delivery])
            await conn.execute(insert(OutboxMessage.__table__), [task, own])

        async def state() -> tuple[list[bytes], str | None]:
            async with engine.connect() as conn:
                left = list(await conn.scalars(select(OutboxMessage.payload)))
                status = await conn.scalar(select(NotificationDelivery.status))
            return left, status

        await relay.send([task])
        assert await eventually(lambda: _settled(state, [b"own"])) == ([b"own"], "pending")
        await relay.send([own])
        assert await eventually(lambda: _settled(state, [])) == ([], "sent")
    assert flaky.published == [str(nid), str(nid)]


async def _settled(state, left: list[bytes]):
    now = await state()
    return now if now[0] == left else None


async def test_a_failed_immediate_publish_is_left_to_the_relay(tmp_path) -> None:
    """What failed stays in the outbox and wakes the relay, which publishes it (the poll
    is an hour here: only the wake can do it)."""
    rows = [outbox_row(b"ok"), outbox_row(b"fail")]
    ok, failing = (str(r["notification_id"]) for r in rows)
    flaky = FlakyBus()
    async with relay_on_sqlite(tmp_path, flaky) as (engine, relay):
        async with engine.begin() as conn:
            await conn.execute(insert(OutboxMessage.__table__), rows)

        async def empty() -> bool:
            async with engine.connect() as conn:
                return not list(await conn.scalars(select(OutboxMessage.payload)))

        await relay.send(rows)
        assert await eventually(empty)
    assert flaky.failed == {failing}
    # The relay may publish `ok` again before its deletion lands: NATS drops that copy.
    assert set(flaky.published) == {ok, failing}
