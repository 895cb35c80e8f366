"""Retention: old notifications with their read state and deliveries, in short batches."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notify.core.models import utcnow
from notify.digest.models import DigestRun
from notify.notifications.models import (
    IdempotencyKey,
    Notification,
    NotificationDelivery,
    NotificationRead,
    OutboxMessage,
)

BATCH = 2000


async def cleanup(sessions: async_sessionmaker[AsyncSession], older_than_days: float) -> int:
    """Delete what is older than the cutoff; returns how many notifications went. Each
    batch is its own short transaction, so no lock is held for long."""
    cutoff = utcnow() - dt.timedelta(days=older_than_days)
    deleted = 0
    while True:
        async with sessions() as db, db.begin():
            ids = list(
                await db.scalars(
                    select(Notification.id).where(Notification.created_at < cutoff).limit(BATCH)
                )
            )
            if not ids:
                break
            # Children first: SQLite does not cascade unless foreign keys are switched on.
            for child in (NotificationDelivery, NotificationRead, OutboxMessage):
                await _delete(db, child, child.notification_id.in_(ids))
            await _delete(db, Notification, Notification.id.in_(ids))
            deleted += len(ids)
    for model in (IdempotencyKey, DigestRun):
        while await _delete_batch(sessions, model, model.created_at < cutoff):
            pass
    return deleted


async def _delete(db: AsyncSession, model: Any, where: Any) -> int:
    result = await db.execute(
        delete(model).where(where).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def _delete_batch(sessions: async_sessionmaker[AsyncSession], model: Any, where: Any) -> int:
    """One batch of rows matching `where`, by primary key (portable LIMIT for DELETE)."""
    keys = model.__table__.primary_key.columns
    async with sessions() as db, db.begin():
        rows = (await db.execute(select(*keys).where(where).limit(BATCH))).all()
        if not rows:
            return 0
        if len(keys) == 1:
            (key,) = keys
            return await _delete(db, model, key.in_([r[0] for r in rows]))
        return await _delete(db, model, tuple_(*keys).in_([tuple(r) for r in rows]))
