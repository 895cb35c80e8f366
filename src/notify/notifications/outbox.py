"""The outbox relay: publishes committed notifications to JetStream, so none is ever lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from notify.core.bus import TASKS_SUBJECT, Bus
from notify.core.logs import one_line
from notify.core.models import utcnow
from notify.notifications.models import NotificationDelivery, OutboxMessage

log = logging.getLogger("notify.outbox")


class OutboxRelay:
    """Publishes what this pod commits at once (`send`), and drains the outbox: on a wake,
    and by polling for what a crashed pod or an earlier failure left behind."""

    def __init__(self, engine: AsyncEngine, bus: Bus, batch: int = 500, poll: float = 1.0) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._bus = bus
        self._batch = batch
        self._poll = poll
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._skip_locked = engine.dialect.name == "postgresql"
        self._sending: set[asyncio.Task[None]] = set()
        self._acked: list[tuple[UUID, str]] = []  # sent, still to be deleted from the outbox
        self._acked_wake = asyncio.Event()
        self._settler: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        self._settler = asyncio.create_task(self._settle_sent(), name="outbox-settle")

    async def stop(self) -> None:
        await asyncio.gather(*self._sending, return_exceptions=True)
        for task in (self._task, self._settler):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # What was sent goes from the outbox before the pod does: left there, the next
        # drain would publish it again, maybe after NATS' de-duplication window.
        try:
            async with asyncio.timeout(5):
                while self._acked:
                    await self._settle_acked()
        except Exception as exc:
            log.warning(
                "outbox: %d sent rows left for the relay (%s)", len(self._acked), one_line(exc)
            )

    async def send(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Publish outbox rows just committed by this pod now, without a database round trip
        first; the rows go in batches once acknowledged. On failure the relay's drain takes
        them (a second publish is de-duplicated by the message id)."""
        if not rows:
            return
        rows = tuple(rows)  # the caller's list may grow after this returns
        if not self._bus.connected:
            self.wake()
            return
        task = asyncio.create_task(self._send(rows))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        # Two turns of the loop: the publish is queued, then nats-py's flusher writes it.
        # The message is on its way before the caller builds its answer (0.25 ms sooner
        # at the sockets); the acknowledgement is still awaited in the background.
        for _ in range(2):
            await asyncio.sleep(0)

    async def _send(self, rows: Sequence[Mapping[str, Any]]) -> None:
        sent = await asyncio.gather(
            *(
                self._bus.publish(r["subject"], r["payload"], msg_id=str(r["notification_id"]))
                for r in rows
            ),
            return_exceptions=True,
        )
        acked = [
            (r["notification_id"], r["subject"])
            for r, seq in zip(rows, sent, strict=True)
            if not isinstance(seq, BaseException)
        ]
        if len(acked) < len(rows):
            self.wake()
        if acked:
            self._acked.extend(acked)
            self._acked_wake.set()

    async def _settle_sent(self) -> None:
        """One transaction for all rows acknowledged since the last: under load, many."""
        while True:
            await self._acked_wake.wait()
            self._acked_wake.clear()
            try:
                await self._settle_acked()
            except Exception as exc:
                log.warning("outbox: settling sent rows failed (%s); will retry", one_line(exc))
                await asyncio.sleep(self._poll)
                self._acked_wake.set()

    async def _settle_acked(self) -> None:
        acked = self._acked[: self._batch]
        # Only a notification's own subject makes its websocket delivery sent, not its
        # task message for the workers.
        fanned_out = [n for n, subject in acked if subject != TASKS_SUBJECT]
        async with self._sessions() as session, session.begin():
            pairs = tuple_(OutboxMessage.notification_id, OutboxMessage.subject).in_(acked)
            await self._settle(session, pairs, fanned_out)
        del self._acked[: len(acked)]
        if self._acked:
            self._acked_wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()
            if not self._bus.connected:
                continue
            try:
                while await self.drain_once() == self._batch:
                    pass
            except Exception as exc:
                log.warning("outbox relay: %s; will retry", one_line(exc))
                await asyncio.sleep(self._poll)

    async def drain_once(self) -> int:
        """Publish one batch; rows go only after JetStream acknowledged them."""
        async with self._sessions() as session:
            async with session.begin():
                stmt = select(OutboxMessage).order_by(OutboxMessage.id).limit(self._batch)
                if self._skip_locked:
                    stmt = stmt.with_for_update(skip_locked=True)
                rows = list(await session.scalars(stmt))
                if self._skip_locked and rows:
                    # PostgreSQL: only these rows stay locked (other pods skip them) meanwhile.
                    await self._publish(rows)
                    await self._settle_rows(session, rows)
                    return len(rows)
            if not rows:
                return 0
            # SQLite: a transaction locks the whole database, so publish outside it; a
            # second publish of the same notification is de-duplicated by its message id.
            await self._publish(rows)
            async with session.begin():
                await self._settle_rows(session, rows)
        return len(rows)

    async def _publish(self, rows: list[OutboxMessage]) -> None:
        await asyncio.gather(
            *(self._bus.publish(r.subject, r.payload, msg_id=str(r.notification_id)) for r in rows)
        )

    async def _settle_rows(self, session: AsyncSession, rows: list[OutboxMessage]) -> None:
        ids = OutboxMessage.id.in_([r.id for r in rows])
        await self._settle(session, ids, [r.notification_id for r in rows])

    async def _settle(
        self, session: AsyncSession, rows: ColumnElement[bool], notification_ids: list[UUID]
    ) -> None:
        """Published: the rows go, and their websocket deliveries become sent."""
        sync = {"synchronize_session": False}
        await session.execute(delete(OutboxMessage).where(rows), execution_options=sync)
        await session.execute(
            update(NotificationDelivery)
            .where(
                NotificationDelivery.notification_id.in_(notification_ids),
                NotificationDelivery.channel == "websocket",
                NotificationDelivery.status == "pending",
            )
            .values(status="sent", attempts=NotificationDelivery.attempts + 1, updated_at=utcnow()),
            execution_options=sync,
        )
