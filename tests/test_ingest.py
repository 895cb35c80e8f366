"""NATS ingest: `notify.ingest` messages are stored like a REST broadcast; bad ones hit the DLQ."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import msgspec
import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from notify.core import bus, db
from notify.core.bus import Bus
from notify.core.embedded import EmbeddedNats
from notify.notifications import ingest
from notify.notifications.ingest import IngestConsumer, Rejected
from notify.notifications.outbox import OutboxRelay
from tests.harness import Server, backends, serving
from tests.test_outbox import fetch_subject

API = "/api/v1/notifications"
BODY = {"title": "Build finished", "message": "all green", "notification_type": "ci"}


def encode(**fields: Any) -> bytes:
    return msgspec.json.encode({**BODY, **fields})


async def until(check: Callable[[], Any], wait: float = 10, what: str = "condition") -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = time.monotonic() + wait
    while True:
        if result := await check():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def inbox(client) -> list[dict]:
    r = await client.get(API)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def inbox_of(client, count: int) -> list[dict]:
    """The inbox once it holds `count` notifications (ingest is asynchronous)."""

    async def check() -> list[dict] | None:
        items = await inbox(client)
        assert len(items) <= count, items
        return items if len(items) == count else None

    return await until(check, what=f"{count} notification(s) in the inbox")


async def handled(js: JetStreamContext, *acks: Any) -> None:
    """The published messages were handled and acked: a work queue then deletes them. (Not
    the consumer's global counters: a message another run left unacked would skew them.)"""

    async def check() -> bool:
        for ack in acks:
            with contextlib.suppress(NotFoundError):
                await js.get_msg(ingest.STREAM, ack.seq)
                return False
        return True

    await until(check, what="the ingest consumer to handle the messages")


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private nats-server for this module. The session's may be the machine's, shared
    with other test runs and benchmarks whose servers (running this very consumer) would
    take messages off the one durable work queue into their own databases."""
    private = EmbeddedNats(tmp_path_factory.mktemp("ingest-nats"))
    try:
        yield private.start()
    finally:
        private.stop()


@pytest.fixture(scope="module", params=backends())
def server(
    request: pytest.FixtureRequest, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """conftest's `server`, on the private nats-server (one backend at a time, like it)."""
    tmp = tmp_path_factory.mktemp(f"ingest-server-{request.param}")
    with serving(request.param, nats_url, tmp) as srv:
        yield srv


@pytest.fixture
async def nc(server: Server, nats_url: str) -> AsyncIterator[nats.NATS]:
    conn = await nats.connect(nats_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def js(nc: nats.NATS) -> JetStreamContext:
    """JetStream, once the server's ingest consumer (streams included) exists."""
    js = nc.jetstream()

    async def ready() -> bool:
        with contextlib.suppress(NotFoundError):
            return bool(await js.consumer_info(ingest.STREAM, ingest.DURABLE))
        return False

    await until(ready, what="the ingest consumer")
    return js


@pytest.fixture
async def dlq(js: JetStreamContext) -> Callable[..., Any]:
    """Reads the DLQ entries written after this point, by msg id."""
    start = (await js.stream_info(ingest.DLQ_STREAM)).state.last_seq + 1

    async def entries(*msg_ids: str, wait: float = 10) -> dict[str, dict]:
        sub = await js.pull_subscribe(
            ingest.DLQ_SUBJECT,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=start,
                filter_subject=ingest.DLQ_SUBJECT,
            ),
        )
        found: dict[str, dict] = {}
        deadline = time.monotonic() + wait
        try:
            while not set(msg_ids) <= found.keys() and time.monotonic() < deadline:
                with contextlib.suppress(nats.errors.TimeoutError):
                    for msg in await sub.fetch(100, timeout=1):
                        entry = msgspec.json.decode(msg.data)
                        if entry["msg_id"] in msg_ids:
                            assert entry["msg_id"] not in found, "one DLQ entry per message"
                            assert msg.headers[ingest.MSG_ID] == entry["msg_id"]
                            found[entry["msg_id"]] = entry
        finally:
            await sub.unsubscribe()
        assert set(msg_ids) <= found.keys(), f"no DLQ entry for {set(msg_ids) - found.keys()}"
        return found

    return entries


@pytest.fixture
async def local(server: Server) -> AsyncIterator[IngestConsumer]:
    """A second ingest on the server's database, not subscribed: to call `store` directly."""
    engine = db.create_engine(server.settings)
    b = Bus(server.settings)
    yield IngestConsumer(server.settings, engine, b, OutboxRelay(engine, b))
    await engine.dispose()


def msg_id() -> str:
    return f"test-{uuid.uuid4().hex}"


async def test_tenant_broadcast_reaches_inboxes_and_the_fanout(
    nc, js, nats_url, alice, bob, tenant
) -> None:
    # A plain core-NATS publish (no id, no ack) lands in the stream as well.
    await nc.publish(ingest.SUBJECT, encode(tenant_id=tenant, broadcast_to_tenant=True))
    [for_alice] = await inbox_of(alice, 1)
    [for_bob] = await inbox_of(bob, 1)
    assert for_alice == for_bob
    assert for_alice["user_id"] is None and for_alice["tenant_id"] == tenant
    assert for_alice["title"] == BODY["title"] and for_alice["notification_type"] == "ci"
    [published] = await fetch_subject(nats_url, bus.tenant_subject(tenant), 1)
    assert published.headers["Nats-Msg-Id"] == for_alice["id"]
    assert msgspec.json.decode(published.data)["title"] == BODY["title"]


async def test_user_ids_make_one_notification_per_user(js, alice, bob, tenant) -> None:
    ack = await js.publish(
        ingest.SUBJECT,
        encode(tenant_id=tenant, user_ids=["alice", "bob", "alice"], priority="high"),
        headers={"Nats-Msg-Id": msg_id()},
    )
    assert ack.stream == ingest.STREAM
    [a] = await inbox_of(alice, 1)
    [b] = await inbox_of(bob, 1)
    assert (a["user_id"], b["user_id"]) == ("alice", "bob") and a["id"] != b["id"]
    assert a["priority"] == b["priority"] == "high"


async def test_a_quick_retry_is_dropped_by_the_stream(nc, js, alice, bob, tenant) -> None:
    body, key = encode(tenant_id=tenant, user_id="alice"), msg_id()
    first = await js.publish(ingest.SUBJECT, body, headers={"Nats-Msg-Id": key})
    again = await js.publish(ingest.SUBJECT, body, headers={"Nats-Msg-Id": key})
    assert not first.duplicate and again.duplicate
    await nc.publish(ingest.SUBJECT, body, headers={"Nats-Msg-Id": key})  # core NATS too
    # Published after the retries, so handled after them had they been kept.
    sentinel = await js.publish(ingest.SUBJECT, encode(tenant_id=tenant, user_id="bob"))
    await handled(js, first, sentinel)
    await inbox_of(bob, 1)
    assert len(await inbox(alice)) == 1


async def test_a_late_retry_is_a_noop_in_the_database(js, local, alice, tenant) -> None:
    """After the stream's duplicate window the Nats-Msg-Id still dedupes (Idempotency-Key):
    `local` stores first, as a delivery of which the stream no longer remembers the id."""
    body, key = encode(tenant_id=tenant, user_id="alice"), msg_id()
    stored = await local.store(body, key)
    [n] = await inbox_of(alice, 1)
    assert [str(i) for i in stored.notification_ids] == [n["id"]]
    retry = await js.publish(ingest.SUBJECT, body, headers={"Nats-Msg-Id": key})
    assert not retry.duplicate  # the stream never saw this id: the database must dedupe
    await handled(js, retry)
    assert [x["id"] for x in await inbox(alice)] == [n["id"]]
    assert await local.store(body, key) == stored  # and again: the same answer, nothing new


async def test_same_id_with_another_body_is_a_conflict(js, dlq, local, alice, tenant) -> None:
    key = msg_id()
    await local.store(encode(tenant_id=tenant, user_id="alice"), key)
    other = encode(tenant_id=tenant, user_id="alice", title="Something else")
    with pytest.raises(Rejected, match="conflict"):
        await local.store(other, key)
    ack = await js.publish(ingest.SUBJECT, other, headers={"Nats-Msg-Id": key})
    entry = (await dlq(key))[key]
    assert "conflict" in entry["reason"] and key in entry["reason"]
    assert msgspec.json.decode(entry["data"])["title"] == "Something else"
    await handled(js, ack)
    assert [n["title"] for n in await inbox(alice)] == [BODY["title"]]


async def test_invalid_messages_go_to_the_dlq_with_their_reason(js, dlq, alice, tenant) -> None:
    cases = {
        "json": (b'{"title": "x", ', "invalid JSON"),
        "priority": (encode(tenant_id=tenant, user_id="alice", priority="whenever"), "priority"),
        "no-tenant": (encode(user_id="alice"), "tenant_id"),
        "any-tenant": (encode(tenant_id="*", user_id="alice"), "tenant_id"),
        "two-targets": (
            encode(tenant_id=tenant, user_id="alice", broadcast_to_tenant=True),
            "user_id, broadcast_to_tenant",
        ),
        "unknown-field": (encode(tenant_id=tenant, user_id="alice", colour="red"), "colour"),
        "binary": (b"\xff\xfe\x00", "invalid JSON"),
    }
    keys = {name: msg_id() for name in cases}
    started = time.time()
    acks = [
        await js.publish(ingest.SUBJECT, data, headers={"Nats-Msg-Id": keys[name]})
        for name, (data, _) in cases.items()
    ]
    entries = await dlq(*keys.values())
    for name, (data, reason) in cases.items():
        entry = entries[keys[name]]
        assert reason in entry["reason"], (name, entry["reason"])
        assert entry["subject"] == ingest.SUBJECT
        text = entry["data_encoding"] == "text"
        raw = entry["data"].encode() if text else base64.b64decode(entry["data"])
        assert raw == data, name
        assert entry["received_at"].endswith("Z")
        assert dt.datetime.fromisoformat(entry["received_at"]).timestamp() > started - 1
    assert entries[keys["binary"]]["data_encoding"] == "base64"
    await handled(js, *acks)  # acked, not looping
    assert await inbox(alice) == []


class FakeMsg:
    """A JetStream message as the consumer sees it, recording what was done with it."""

    subject = ingest.SUBJECT

    def __init__(self, data: bytes, key: str | None = None, delivered: int = 1) -> None:
        self.data = data
        self.headers = {"Nats-Msg-Id": key} if key else None
        self.metadata = SimpleNamespace(num_delivered=delivered)
        self.done: list[tuple[str, float | None]] = []

    async def ack(self) -> None:
        self.done.append(("ack", None))

    async def nak(self, delay: float | None = None) -> None:
        self.done.append(("nak", delay))

    async def in_progress(self) -> None:
        self.done.append(("wip", None))


async def test_database_down_leaves_messages_for_redelivery(
    server, nats_url, js, dlq, tenant, caplog
) -> None:
    broken = msgspec.structs.replace(
        server.settings, database_url="postgresql://postgres@127.0.0.1:1/nothing"
    )
    engine = db.create_engine(broken)
    b = Bus(broken)
    await b.start()
    consumer = IngestConsumer(broken, engine, b, OutboxRelay(engine, b))
    valid = encode(tenant_id=tenant, user_id="alice")
    first, second = FakeMsg(valid, msg_id()), FakeMsg(valid, msg_id(), delivered=4)
    worn_out = FakeMsg(valid, msg_id(), delivered=ingest.MAX_DELIVER)
    invalid = FakeMsg(encode(user_id="alice"), msg_id())
    caplog.set_level(logging.WARNING, logger="notify.ingest")
    try:
        await consumer.handle([first, second])
        await consumer.handle([invalid])  # rejected without the database: DLQ even now
        await consumer.handle([worn_out])  # JetStream would not redeliver it: parked in DLQ
    finally:
        await b.close()
        await engine.dispose()
    assert first.done == [("nak", 1.0)] and second.done == [("nak", 8.0)]
    lines = [r for r in caplog.records if "left for redelivery" in r.getMessage()]
    assert len(lines) == 2, "one line per batch, not per message"
    assert invalid.done == [("ack", None)] and worn_out.done == [("ack", None)]
    entries = await dlq(invalid.headers["Nats-Msg-Id"], worn_out.headers["Nats-Msg-Id"])
    assert "tenant_id" in entries[invalid.headers["Nats-Msg-Id"]]["reason"]
    worn = entries[worn_out.headers["Nats-Msg-Id"]]
    assert worn["reason"].startswith(f"not stored after {ingest.MAX_DELIVER} deliveries")
    assert msgspec.json.decode(worn["data"]) == msgspec.json.decode(valid)


async def test_consumer_survives_a_nats_restart_and_stops_cleanly(
    server, alice, tenant, tmp_path, caplog
) -> None:
    """A pod on its own nats-server (sharing the test server's database) across a restart."""
    server_nats = EmbeddedNats(tmp_path / "nats")
    settings = msgspec.structs.replace(server.settings, nats_url=server_nats.start())
    engine = db.create_engine(settings)
    b = Bus(settings)
    consumer = IngestConsumer(settings, engine, b, OutboxRelay(engine, b))
    caplog.set_level(logging.INFO, logger="notify")

    async def publish(title: str) -> None:
        async def attempt() -> bool:
            with contextlib.suppress(Exception):
                js = b.js  # the pod's own connection: it reconnects by itself
                data = encode(tenant_id=tenant, user_id="alice", title=title)
                return bool(await js.publish(ingest.SUBJECT, data, timeout=1))
            return False

        await until(attempt, what="a publish to the restarted nats-server")

    try:
        await b.start()
        consumer.start()
        await publish("before")
        await inbox_of(alice, 1)
        await asyncio.to_thread(server_nats.stop)
        await asyncio.sleep(1.5)  # the consumer's fetches fail meanwhile
        await asyncio.to_thread(server_nats.start)
        await publish("after")
        assert [n["title"] for n in await inbox_of(alice, 2)] == ["after", "before"]
        t0 = time.monotonic()
        await consumer.stop()
        assert time.monotonic() - t0 < ingest.FETCH_TIMEOUT + 2
    finally:
        await consumer.stop()
        await b.close()
        await engine.dispose()
        await asyncio.to_thread(server_nats.stop)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


async def test_a_lost_stream_and_consumer_are_recreated(js, alice, tenant) -> None:
    """As after a nats-server lost its state: the consumer sets everything up again."""
    await js.delete_stream(ingest.STREAM)

    async def publish() -> bool:
        with contextlib.suppress(nats.js.errors.NoStreamResponseError):
            data = encode(tenant_id=tenant, user_id="alice")
            return bool(await js.publish(ingest.SUBJECT, data, timeout=1))
        return False

    await until(publish, what="the ingest stream to be recreated")
    await inbox_of(alice, 1)
