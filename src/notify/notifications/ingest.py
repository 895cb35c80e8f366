"""NATS ingest: broadcast bodies published to `notify.ingest`, stored and delivered like REST.

`notify.ingest` is a JetStream work queue with one durable pull consumer shared by every
pod, so each message is handled once. A valid message is committed as POST /internal/broadcast
commits it, its `Nats-Msg-Id` being the Idempotency-Key (the stream's duplicate window drops
quick retries, the idempotency table later ones). One that can never be stored goes with its
reason to `notify.dlq` (kept in NOTIFY_DLQ) and is acked; one that fails for a passing reason
(database down) is nak'ed with a back-off, so it is redelivered, never lost.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence
from typing import Literal

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import BadRequestError
from sqlalchemy.exc import DataError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from notify.core.auth import ANY_TENANT, Principal
from notify.core.bus import Bus
from notify.core.config import Settings
from notify.core.errors import Conflict, Invalid
from notify.core.logs import one_line
from notify.core.models import utcnow
from notify.notifications.outbox import OutboxRelay
from notify.notifications.schemas import BroadcastCreate, BroadcastResult
from notify.notifications.service import ENCODER, NotificationService
from notify.notifications.targets import broadcast_targets

log = logging.getLogger("notify.ingest")

SUBJECT = "notify.ingest"
DLQ_SUBJECT = "notify.dlq"
STREAM = "NOTIFY_INGEST"
DLQ_STREAM = "NOTIFY_DLQ"
DURABLE = "notify-ingest"
ACTOR = "nats-ingest"  # the `sub` of ingest's synthetic service principal (audit, created_by)
MSG_ID = "Nats-Msg-Id"
BATCH = 64
FETCH_TIMEOUT = 1.0
ACK_WAIT = 60.0
# With the back-off below (1, 2, 4, … 30 s) this rides out a ~45-minute database outage;
# after that the message is parked in the DLQ (with its body) rather than stranded.
MAX_DELIVER = 100
MAX_BACKOFF = 30.0
DEDUPE_WINDOW = 120.0
DLQ_MAX_AGE = 14 * 86400.0
KEY_MAX = 255  # the Idempotency-Key column's width

STREAMS = (
    StreamConfig(
        name=STREAM,
        subjects=[SUBJECT],
        retention=RetentionPolicy.WORK_QUEUE,
        duplicate_window=DEDUPE_WINDOW,
    ),
    StreamConfig(
        name=DLQ_STREAM, subjects=[DLQ_SUBJECT], max_age=DLQ_MAX_AGE, duplicate_window=DEDUPE_WINDOW
    ),
)
CONSUMER = ConsumerConfig(
    durable_name=DURABLE,
    ack_policy=AckPolicy.EXPLICIT,
    ack_wait=ACK_WAIT,
    max_deliver=MAX_DELIVER,
)
_decoder = msgspec.json.Decoder(BroadcastCreate)


class Rejected(Exception):
    """A message that can never be stored, whatever the retries: the DLQ gets the reason."""


class DeadLetter(msgspec.Struct, kw_only=True):
    """What `notify.dlq` carries: why, and the original message to inspect or republish."""

    reason: str
    subject: str
    msg_id: str | None
    data: str
    data_encoding: Literal["text", "base64"]
    received_at: dt.datetime


class IngestConsumer:
    """Consumes `notify.ingest` (a work queue shared by all pods); invalid → `notify.dlq`."""

    def __init__(self, settings: Settings, engine: AsyncEngine, bus: Bus, relay: OutboxRelay):
        self._settings = settings
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._bus = bus
        self._relay = relay
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin consuming in the background (waits for the bus to be connected)."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="nats-ingest")

    async def stop(self) -> None:
        """Stop consuming; a message being handled is finished or left unacked for redelivery."""
        self._stopping.set()
        if self._task is not None:
            # Let the current fetch expire and its batch finish (cancelled after a grace):
            # a cancelled pull request would leave messages parked until ack_wait ran out.
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, FETCH_TIMEOUT + 4)
            self._task = None

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run(self) -> None:
        """Subscribe once the bus is up; whenever the subscription breaks, set it up again."""
        delay = 0.5
        while not self._stopping.is_set():
            if not self._bus.connected:  # the bus logs its own disconnects and reconnects
                await self._pause(0.5)
                continue
            try:
                sub = await self._subscribe(self._bus.js)
            except Exception as exc:
                log.warning(
                    "ingest: cannot subscribe (%s); retrying in %.0fs", one_line(exc), delay
                )
                await self._pause(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            delay = 0.5
            try:
                await self._consume(sub)
            except Exception as exc:
                if self._bus.connected:  # a disconnect needs no line of its own
                    log.warning("ingest: consumer interrupted (%s); resubscribing", one_line(exc))
                await self._pause(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        """Create or update both streams and the shared durable consumer (idempotent)."""
        for config in STREAMS:
            try:
                await js.add_stream(config)
            except BadRequestError:  # it exists (maybe from an older release): update it
                await js.update_stream(config)
        await js.add_consumer(STREAM, CONSUMER)
        return await js.pull_subscribe_bind(durable=DURABLE, stream=STREAM)

    async def _consume(self, sub: JetStreamContext.PullSubscription) -> None:
        # Errors other than idle timeouts end this subscription and `_run` sets it up again:
        # that is how a consumer lost with the server's state (503 no responders) comes back.
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(BATCH, timeout=FETCH_TIMEOUT)
            except TimeoutError:  # idle (nats' timeout errors subclass it)
                continue
            await self.handle(msgs)

    async def handle(self, msgs: Sequence[Msg]) -> None:
        """Handle a fetched batch in order; on a passing failure hand the rest back at once."""
        started = asyncio.get_running_loop().time()
        for i, msg in enumerate(msgs):
            if self._stopping.is_set():
                for rest in msgs[i:]:  # another pod takes them now, not after ack_wait
                    await rest.nak()
                return
            if asyncio.get_running_loop().time() - started > ACK_WAIT / 2:
                await msg.in_progress()  # a slow batch: keep JetStream from redelivering
            try:
                await self._handle_one(msg)
            except Exception as exc:
                await self._postpone(msgs[i:], exc)
                return

    async def _handle_one(self, msg: Msg) -> None:
        msg_id = _msg_id(msg)
        try:
            await self.store(msg.data, msg_id)
        except Rejected as exc:
            await self._dead_letter(msg, msg_id, str(exc))
        await msg.ack()

    async def _postpone(self, msgs: Sequence[Msg], exc: Exception) -> None:
        """Nak with a back-off (one log line per batch); park a message out of deliveries."""
        log.warning(
            "ingest: handling failed (%s); %d message(s) left for redelivery",
            one_line(exc),
            len(msgs),
        )
        for msg in msgs:
            delivered = msg.metadata.num_delivered
            if delivered < MAX_DELIVER:
                await msg.nak(delay=min(2.0 ** (delivered - 1), MAX_BACKOFF))
                continue
            reason = f"not stored after {delivered} deliveries: {one_line(exc)}"
            with contextlib.suppress(Exception):  # still in the stream if this fails too
                await self._dead_letter(msg, _msg_id(msg), reason)
                await msg.ack()

    async def store(self, data: bytes, msg_id: str | None) -> BroadcastResult:
        """Validate and commit one message as POST /internal/broadcast would; `Rejected` if
        it never can be. Other exceptions (database down) are passing: retry later."""
        body = _decode(data)
        if msg_id is not None and len(msg_id) > KEY_MAX:
            raise Rejected(f"{MSG_ID}: at most {KEY_MAX} characters")
        tenant = body.tenant_id
        if tenant is None or tenant == ANY_TENANT:
            raise Rejected("tenant_id: required, and must name one tenant (not '*')")
        try:
            targets = broadcast_targets(body, tenant)
        except Invalid as exc:
            raise Rejected(exc.detail) from None
        actor = Principal(ACTOR, tenant, frozenset({"service"}), frozenset(), 0)
        request = SUBJECT.encode() + ENCODER.encode(body)
        async with self._sessions() as session:
            service = NotificationService(session=session)

            def produce() -> tuple[int, bytes]:
                return 202, service.stage_broadcast(actor, body, targets, source=SUBJECT)

            try:
                _, answer = await service.idempotent(actor, msg_id, request, produce)
                await self._relay.send(service.committed)
            except Conflict:
                raise Rejected(
                    f"conflict: {MSG_ID} {msg_id!r} was already used with a different body"
                ) from None
            except DataError:
                raise Rejected("a value is not acceptable to the database") from None
        return msgspec.json.decode(answer, type=BroadcastResult)

    async def _dead_letter(self, msg: Msg, msg_id: str | None, reason: str) -> None:
        """Publish through JetStream so the entry is stored (NOTIFY_DLQ) before the ack."""
        encoding: Literal["text", "base64"] = "text"
        try:
            data = msg.data.decode()
        except UnicodeDecodeError:
            data, encoding = base64.b64encode(msg.data).decode(), "base64"
        entry = DeadLetter(
            reason=reason,
            subject=msg.subject,
            msg_id=msg_id,
            data=data,
            data_encoding=encoding,
            received_at=utcnow(),
        )
        # The same id also de-duplicates the DLQ: a redelivered reject is one entry.
        headers = {MSG_ID: msg_id} if msg_id else None
        await self._bus.js.publish(DLQ_SUBJECT, ENCODER.encode(entry), headers=headers)
        log.info("ingest: message %s rejected: %s", msg_id or "(no id)", reason)


def _decode(data: bytes) -> BroadcastCreate:
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise Rejected(f"invalid: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Rejected(f"invalid JSON: {exc}") from None


def _msg_id(msg: Msg) -> str | None:
    return (msg.headers or {}).get(MSG_ID) or None  # nats-server ignores an empty one too
