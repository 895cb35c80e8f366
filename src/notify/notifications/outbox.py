"""The outbox relay: publishes committed notifications to JetStream, so none is ever lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from notify.core.bus import Bus
from notify.core.models import utcnow
from notify.notifications.models import NotificationDelivery, OutboxMessage

log = logging.getLogger("notify.outbox")


class OutboxRelay:
    """Drains the outbox: woken after each commit, and polling as a fallback (other pods)."""

    def __init__(self, engine: AsyncEngine, bus: Bus, batch: int = 500, poll: float = 1.0) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._bus = bus
        self._batch = batch
        self._poll = poll
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._skip_locked = engine.dialect.name == "postgresql"

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

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
                log.warning("outbox relay: %s; will retry", str(exc).splitlines()[0] or exc)
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
                    await self._settle(session, rows)
                    return len(rows)
            if not rows:
                return 0
            # SQLite: a transaction locks the whole database, so publish outside it; a
            # second publish of the same notification is de-duplicated by its message id.
            await self._publish(rows)
            async with session.begin():
                await self._settle(session, rows)
        return len(rows)

    async def _publish(self, rows: list[OutboxMessage]) -> None:
        await asyncio.gather(
            *(self._bus.publish(r.subject, r.payload, msg_id=str(r.notification_id)) for r in rows)
        )

    async def _settle(self, session: AsyncSession, rows: list[OutboxMessage]) -> None:
        """Published: the rows go, and their websocket deliveries become sent."""
        sync = {"synchronize_session": False}
        await session.execute(
            delete(OutboxMessage).where(OutboxMessage.id.in_([r.id for r in rows])),
            execution_options=sync,
        )
        await session.execute(
            update(NotificationDelivery)
            .where(
                NotificationDelivery.notification_id.in_([r.notification_id for r in rows]),
                NotificationDelivery.channel == "websocket",
                NotificationDelivery.status == "pending",
            )
            .values(status="sent", attempts=NotificationDelivery.attempts + 1, updated_at=utcnow()),
            execution_options=sync,
        )
