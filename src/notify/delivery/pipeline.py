"""Claims due deliveries, sends them through their channel concurrently, records every result."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections import defaultdict
from typing import Any, cast
from uuid import UUID

from sqlalchemy import ColumnElement, Table, bindparam, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from notify.core.config import Settings
from notify.core.logs import one_line
from notify.core.models import utcnow
from notify.delivery.channels import Channel, Job, Outcome
from notify.notifications.models import Notification, NotificationDelivery

log = logging.getLogger("notify.delivery")
D = NotificationDelivery
CHUNK = 200
# Columns a channel may read from the notification it sends.
_NOTIFICATION_COLUMNS = (
    Notification.id,
    Notification.tenant_id,
    Notification.user_id,
    Notification.title,
    Notification.message,
    Notification.notification_type,
    Notification.priority,
    Notification.action_url,
    Notification.meta,
    Notification.created_at,
)


def backoff(settings: Settings, attempts: int) -> float:
    """Exponential, capped, with jitter (half to all of it) so retries do not arrive in herds."""
    delay = min(settings.delivery_backoff_max, settings.delivery_backoff * 2 ** (attempts - 1))
    return float(delay * random.uniform(0.5, 1.0))


class Deliverer:
    """Sends pending deliveries. Many workers may run: a claim is a row lease, so each
    delivery has one sender at a time, and a dead worker's claims lapse after the lease."""

    def __init__(self, settings: Settings, engine: AsyncEngine, channels: list[Channel]) -> None:
        self._settings = settings
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._channels = {c.name: c for c in channels}
        self._slots = asyncio.Semaphore(settings.delivery_concurrency)
        self._skip_locked = engine.dialect.name == "postgresql"
        self._closing = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def deliver(self, notification_id: UUID) -> int:
        """Send what is due for one notification; the body of the `deliver` task."""
        return await self._drain(D.notification_id == notification_id)

    async def sweep(self) -> int:
        """Send whatever is due: retries whose time came, and claims of dead workers."""
        return await self._drain(true())

    async def sweep_forever(self) -> None:
        while not self._closing:
            try:
                await self.sweep()
            except Exception as exc:  # the database may be away; try again next round
                log.warning("delivery sweep failed: %s", one_line(exc))
            await asyncio.sleep(self._settings.delivery_sweep)

    async def close(self, grace: float = 10.0) -> None:
        """Take nothing new; let sends in flight finish and be recorded (up to `grace` s)."""
        self._closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        for channel in self._channels.values():
            await channel.close()

    async def _drain(self, where: ColumnElement[bool]) -> int:
        total = 0
        while not self._closing:
            self._busy += 1
            self._idle.clear()
            try:
                jobs = await self._claim(where)
                if jobs:
                    await self._run(jobs)
            finally:
                self._busy -= 1
                if not self._busy:
                    self._idle.set()
            total += len(jobs)
            if len(jobs) < CHUNK:
                break
        return total

    async def _claim(self, where: ColumnElement[bool]) -> list[Job]:
        now = utcnow()
        due = (
            select(D.id)
            .where(
                where,
                D.status == "pending",
                D.channel.in_(self._channels),
                or_(D.next_attempt_at.is_(None), D.next_attempt_at <= now),
                or_(D.locked_until.is_(None), D.locked_until < now),
            )
            .order_by(D.created_at)
            .limit(CHUNK)
        )
        if self._skip_locked:
            due = due.with_for_update(skip_locked=True)
        lease = now + dt.timedelta(seconds=self._settings.delivery_lease)
        claim = (
            update(D)
            .where(D.id.in_(due.scalar_subquery()))
            .values(attempts=D.attempts + 1, locked_until=lease, updated_at=now)
            .returning(D.id, D.notification_id, D.channel, D.attempts, D.subscription_id)
            .execution_options(synchronize_session=False)
        )
        async with self._sessions() as db, db.begin():
            rows = (await db.execute(claim)).all()
            if not rows:
                return []
            notes = await db.execute(
                select(*_NOTIFICATION_COLUMNS).where(
                    Notification.id.in_({r.notification_id for r in rows})
                )
            )
            content = {n.id: _content(n) for n in notes}
            # No content: the notification was deleted meanwhile (recorded as skipped).
            jobs = [
                Job(
                    r.id,
                    content.get(r.notification_id, {}),
                    r.channel,
                    r.attempts,
                    r.subscription_id,
                )
                for r in rows
            ]
            by_channel: dict[str, list[Job]] = defaultdict(list)
            for job in jobs:
                by_channel[job.channel].append(job)
            for name, group in by_channel.items():
                await self._channels[name].prepare(db, [j for j in group if j.notification])
        return jobs

    async def _run(self, jobs: list[Job]) -> None:
        """Send all, record as results arrive (so a killed worker re-sends as little as
        possible), and keep the lease on what is still in flight."""
        pending = {job.delivery_id for job in jobs}
        results: asyncio.Queue[tuple[Job, Outcome]] = asyncio.Queue()

        async def one(job: Job) -> None:
            async with self._slots:
                if not job.notification:
                    outcome = Outcome("skipped", "the notification was deleted")
                elif self._closing:
                    outcome = Outcome("release")
                else:
                    outcome = await self._send(job)
            await results.put((job, outcome))

        senders = [asyncio.create_task(one(job)) for job in jobs]
        renewer = asyncio.create_task(self._renew(pending))
        try:
            while pending:
                batch = [await results.get()]
                while not results.empty():
                    batch.append(results.get_nowait())
                await self._record(batch)
                pending.difference_update(job.delivery_id for job, _ in batch)
        finally:
            renewer.cancel()
            for task in senders:
                task.cancel()

    async def _send(self, job: Job) -> Outcome:
        try:
            return await self._channels[job.channel].send(job)
        except Exception as exc:  # a bug or an unexpected library error: retry, and say so
            log.exception("delivery %s via %s raised", job.delivery_id, job.channel)
            return Outcome("retry", f"{type(exc).__name__}: {exc}")

    async def _renew(self, pending: set[UUID]) -> None:
        lease = self._settings.delivery_lease
        while True:
            await asyncio.sleep(lease / 3)
            with contextlib.suppress(Exception):
                async with self._sessions() as db, db.begin():
                    await db.execute(
                        update(D)
                        .where(D.id.in_(list(pending)))
                        .values(locked_until=utcnow() + dt.timedelta(seconds=lease))
                        .execution_options(synchronize_session=False)
                    )

    async def _record(self, batch: list[tuple[Job, Outcome]]) -> None:
        now = utcnow()
        rows = [self._row(job, outcome, now) for job, outcome in batch]
        # Core, one executemany: the ORM's bulk form wants primary keys by attribute name.
        table = cast(Table, D.__table__)
        stmt = (
            update(table)
            .where(table.c.id == bindparam("b_id"))
            .values(
                status=bindparam("b_status"),
                attempts=bindparam("b_attempts"),
                last_error=bindparam("b_error"),
                next_attempt_at=bindparam("b_next"),
                locked_until=None,
                updated_at=now,
            )
        )
        gone: dict[str, list[Job]] = defaultdict(list)
        for job, outcome in batch:
            if outcome.verdict == "gone":
                gone[job.channel].append(job)
        async with self._sessions() as db, db.begin():
            await db.execute(stmt, rows)
            for name, jobs in gone.items():
                await self._channels[name].gone(db, jobs)

    def _row(self, job: Job, outcome: Outcome, now: dt.datetime) -> dict[str, Any]:
        status: str = outcome.verdict
        error, attempts, retry_at = outcome.error, job.attempts, None
        if status == "gone":
            status = "failed"
        elif status == "release":  # not tried: give the claim back untouched
            status, attempts = "pending", job.attempts - 1
        elif status == "retry":
            if attempts >= self._settings.delivery_max_attempts:
                status, error = "failed", f"gave up after {attempts} attempts: {error}"
            else:
                wait = outcome.retry_after
                if wait is None:
                    wait = backoff(self._settings, attempts)
                wait = min(wait, self._settings.delivery_backoff_max)
                status, retry_at = "pending", now + dt.timedelta(seconds=wait)
        return {
            "b_id": job.delivery_id,
            "b_status": status,
            "b_attempts": attempts,
            "b_error": error,
            "b_next": retry_at,
        }


def _content(row: Any) -> dict[str, Any]:
    content = dict(row._mapping)
    content["metadata"] = content.pop("meta") or {}
    return content


__all__ = ["Deliverer", "backoff"]
