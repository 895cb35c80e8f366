"""Notification domain logic: create (rows, deliveries, outbox in one transaction), inbox, reads."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, cast
from uuid import UUID

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import Table, delete, literal, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from uuid_utils.compat import uuid7

from notify.core import bulk, bus
from notify.core.auth import Principal
from notify.core.db import metadata
from notify.core.errors import Conflict, NotFound
from notify.core.models import utcnow
from notify.core.service import Service
from notify.delivery import tasks
from notify.notifications import queries
from notify.notifications.models import (
    IdempotencyKey,
    Notification,
    NotificationDelivery,
    NotificationRead,
    OutboxMessage,
)
from notify.notifications.schemas import (
    BroadcastResult,
    DeliveryList,
    DeliveryOut,
    NotificationBody,
    NotificationOut,
    NotificationPage,
)
from notify.notifications.targets import FAN_OUT, Target, initial_delivery
from notify.ops.models import AuditEntry
from notify.push.models import PushSubscription

ENCODER = msgspec.json.Encoder()
OUTBOX = cast(Table, OutboxMessage.__table__)


class NotificationRepository(SQLAlchemyAsyncRepository[Notification]):
    model_type = Notification


class NotificationService(Service[Notification, NotificationRepository]):
    """Thin service over the repository; domain logic only."""

    repository_type = NotificationRepository

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._staged: dict[Table, list[dict[str, Any]]] = {}
        self._fan_out: list[tuple[UUID, Target]] = []
        # Outbox rows this service committed: the caller hands them to `OutboxRelay.send`.
        self.committed: list[dict[str, Any]] = []

    # -- creating ---------------------------------------------------------------------------
    def add(
        self,
        actor: Principal,
        body: NotificationBody,
        target: Target,
        *,
        id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> NotificationOut:
        """Stage a notification, its deliveries and its outbox row; `idempotent` or `flush`
        writes them. `metadata` replaces the body's (for internal ones over the API's limit)."""
        now = utcnow()
        out = NotificationOut(
            id=id or uuid7(),
            tenant_id=target.tenant_id,
            user_id=target.user_id,
            title=body.title,
            message=body.message,
            notification_type=body.notification_type,
            priority=body.priority,
            channels=list(body.channels),
            action_url=body.action_url,
            metadata=body.metadata if metadata is None else metadata,
            status="unread",
            read_at=None,
            created_at=now,
        )
        self._stage(
            Notification,
            {
                "id": out.id,
                "tenant_id": out.tenant_id,
                "user_id": out.user_id,
                "audience": target.audience,
                "channel": target.channel,
                "title": out.title,
                "message": out.message,
                "notification_type": out.notification_type,
                "priority": out.priority,
                "channels": out.channels,
                "action_url": out.action_url,
                "metadata": out.metadata,
                "status": "unread",
                "created_by": actor.sub,
                "created_at": now,
                "updated_at": now,
            },
        )
        for channel in out.channels:
            status, error = initial_delivery(channel, target)
            if status == FAN_OUT:
                self._fan_out.append((out.id, target))
                continue
            self._stage_delivery(out.id, target.tenant_id, out.user_id, channel, status, error)
        self._stage(
            OutboxMessage,
            {
                "notification_id": out.id,
                "subject": target.subject,
                "payload": ENCODER.encode(out),
                "created_at": now,
            },
        )
        return out

    def audit(
        self, actor: Principal, tenant_id: str, action: str, resource_id: str | None, **details: Any
    ) -> None:
        now = utcnow()
        self._stage(
            AuditEntry,
            {
                "id": uuid7(),
                "tenant_id": tenant_id,
                "actor": actor.sub,
                "action": action,
                "resource_type": "notification",
                "resource_id": resource_id,
                "details": details,
                "created_at": now,
                "updated_at": now,
            },
        )

    def stage_broadcast(
        self, actor: Principal, body: NotificationBody, targets: list[Target], **audit: Any
    ) -> bytes:
        """Stage one notification per target, audited once; the 202 answer's body."""
        ids = [self.add(actor, body, t).id for t in targets]
        first = targets[0]
        self.audit(
            actor,
            first.tenant_id,
            "notification.broadcast",
            str(ids[0]) if len(ids) == 1 else None,
            audience=first.audience,
            count=len(ids),
            **audit,
        )
        return ENCODER.encode(BroadcastResult(ids))

    def _stage(self, model: Any, row: dict[str, Any]) -> None:
        self._staged.setdefault(model.__table__, []).append(row)

    def _stage_delivery(
        self,
        notification_id: UUID,
        tenant_id: str,
        user_id: str | None,
        channel: str,
        status: str,
        error: str | None = None,
        subscription_id: UUID | None = None,
    ) -> None:
        now = utcnow()
        self._stage(
            NotificationDelivery,
            {
                "id": uuid7(),
                "notification_id": notification_id,
                "tenant_id": tenant_id,
                "user_id": user_id,
                "channel": channel,
                "target": str(subscription_id) if subscription_id else None,
                "subscription_id": subscription_id,
                "status": status,
                "last_error": error,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            },
        )

    async def _stage_push(self) -> None:
        """One push delivery per active subscription of the recipients (one query for all
        staged notifications), and one task message per notification for the workers."""
        fan_out, self._fan_out = self._fan_out, []
        if not fan_out:
            return
        tenants = {t.tenant_id for _, t in fan_out}
        users = {t.user_id for _, t in fan_out if t.user_id}
        whole = {t.tenant_id for _, t in fan_out if t.audience == "tenant"}
        subs = (
            await self.db.execute(
                select(PushSubscription.id, PushSubscription.tenant_id, PushSubscription.user_id)
                .where(PushSubscription.is_active.is_(True))
                .where(PushSubscription.tenant_id.in_(tenants))
                .where(
                    or_(PushSubscription.user_id.in_(users), PushSubscription.tenant_id.in_(whole))
                )
                .order_by(PushSubscription.created_at)
            )
        ).all()
        for notification_id, target in fan_out:
            mine = [
                s
                for s in subs
                if s.tenant_id == target.tenant_id and target.user_id in (None, s.user_id)
            ]
            for sub in mine:
                self._stage_delivery(
                    notification_id, sub.tenant_id, sub.user_id, "push", "pending", None, sub.id
                )
            if not mine:
                self._stage_delivery(
                    notification_id,
                    target.tenant_id,
                    target.user_id,
                    "push",
                    "skipped",
                    "no active push subscription",
                )
                continue
            self._stage(
                OutboxMessage,
                {
                    "notification_id": notification_id,
                    "subject": bus.TASKS_SUBJECT,
                    "payload": tasks.deliver_message(notification_id),
                    "created_at": utcnow(),
                },
            )

    async def flush(self) -> None:
        """Write what was staged, in the caller's transaction."""
        await self._write_staged()

    async def _write_staged(self, *, alone: bool = False) -> list[dict[str, Any]]:
        """Write what was staged, parents first, without the ORM's unit of work (it costs
        more); returns the outbox rows written."""
        await self._stage_push()
        staged, self._staged = self._staged, {}
        await bulk.insert_all(
            self.db, [(t, r) for t in metadata.sorted_tables if (r := staged.get(t))], alone=alone
        )
        return staged.get(OUTBOX, [])

    async def _commit_staged(self) -> None:
        outbox = await self._write_staged(alone=True)
        await self.db.commit()
        self.committed.extend(outbox)

    async def idempotent(
        self,
        actor: Principal,
        key: str | None,
        request: bytes,
        produce: Callable[[], tuple[int, bytes]],
    ) -> tuple[int, bytes]:
        """Stage with `produce`, write and commit once per key; a repeat replays the answer."""
        if key is None:
            answer = produce()
            await self._commit_staged()
            return answer
        digest = hashlib.sha256(request).hexdigest()
        scope = (actor.tenant_id, actor.sub, key)
        if (stored := await self.db.get(IdempotencyKey, scope)) is not None:
            try:
                return _replay(stored, digest)
            finally:
                await self.db.rollback()
        status, body = produce()
        self._stage(
            IdempotencyKey,
            {
                "tenant_id": actor.tenant_id,
                "principal": actor.sub,
                "key": key,
                "request_hash": digest,
                "status_code": status,
                "body": body,
                "created_at": utcnow(),
            },
        )
        try:
            await self._commit_staged()
        except IntegrityError:
            # A concurrent request with the same key committed first: answer as it did.
            await self.db.rollback()
            stored = await self.db.get(IdempotencyKey, scope)
            if stored is None:
                raise
            return _replay(stored, digest)
        return status, body

    # -- reading ----------------------------------------------------------------------------
    async def page(
        self, p: Principal, f: queries.InboxFilter, limit: int, cursor: str | None
    ) -> NotificationPage:
        after = queries.decode_cursor(cursor) if cursor else None
        rows = (await self.db.execute(*queries.inbox_page(p, f, after, limit + 1))).all()
        items = [queries.to_out(r) for r in rows[:limit]]
        more = len(rows) > limit
        next_cursor = queries.encode_cursor(items[-1].created_at, items[-1].id) if more else None
        return NotificationPage(items=items, next_cursor=next_cursor)

    async def _visible(self, p: Principal, notification_id: UUID) -> Any:
        row = (await self.db.execute(*queries.visible_item(p, notification_id))).first()
        if row is None or row._mapping["my_deleted_at"] is not None:
            raise NotFound("notification not found")
        return row

    async def get_visible(self, p: Principal, notification_id: UUID) -> NotificationOut:
        return queries.to_out(await self._visible(p, notification_id))

    async def unread_count(self, p: Principal) -> int:
        return int((await self.db.execute(*queries.unread_count(p))).scalar_one())

    async def deliveries(self, p: Principal, notification_id: UUID) -> DeliveryList:
        await self._visible(p, notification_id)
        rows = await self.db.scalars(
            select(NotificationDelivery)
            .where(NotificationDelivery.notification_id == notification_id)
            .order_by(NotificationDelivery.created_at, NotificationDelivery.id)
        )
        return DeliveryList(
            items=[msgspec.convert(d, DeliveryOut, from_attributes=True) for d in rows]
        )

    # -- changing read state ----------------------------------------------------------------
    async def mark_read(self, p: Principal, notification_id: UUID) -> NotificationOut:
        row = await self._visible(p, notification_id)
        now = utcnow()
        if row._mapping["audience"] == "user":
            await self.db.execute(
                update(Notification)
                .where(Notification.id == notification_id, Notification.status == "unread")
                .values(status="read", read_at=now, updated_at=now)
            )
        else:
            await self.db.execute(
                self._set_state(
                    p,
                    select(Notification.id).where(Notification.id == notification_id),
                    "read_at",
                    now,
                )
            )
        await self.db.commit()
        return await self.get_visible(p, notification_id)

    async def read_all(self, p: Principal) -> int:
        now = utcnow()
        own = await self.db.execute(
            update(Notification)
            .where(
                Notification.tenant_id == p.tenant_id,
                Notification.user_id == p.sub,
                Notification.status == "unread",
            )
            .values(status="read", read_at=now, updated_at=now)
        )
        unread_shared = (
            select(Notification.id)
            .outerjoin(
                NotificationRead,
                (NotificationRead.notification_id == Notification.id)
                & (NotificationRead.user_id == p.sub),
            )
            .where(
                Notification.tenant_id == p.tenant_id,
                Notification.audience == "tenant",
                NotificationRead.read_at.is_(None),
                NotificationRead.deleted_at.is_(None),
            )
        )
        shared = await self.db.execute(self._set_state(p, unread_shared, "read_at", now))
        await self.db.commit()
        return int(own.rowcount or 0) + int(shared.rowcount or 0)  # type: ignore[attr-defined]

    def _set_state(self, p: Principal, ids: Any, column: str, now: Any) -> Any:
        """Upsert the caller's read/deleted state for the shared notifications `ids` selects."""
        dialect = postgresql if self.db.bind.dialect.name == "postgresql" else sqlite
        rows = select(ids.subquery().c.id, literal(p.sub), literal(p.tenant_id), literal(now))
        stmt = dialect.insert(NotificationRead).from_select(
            ["notification_id", "user_id", "tenant_id", column], rows.where(true())
        )
        return stmt.on_conflict_do_update(
            index_elements=["notification_id", "user_id"],
            set_={column: stmt.excluded[column]},
            where=getattr(NotificationRead, column).is_(None),
        )

    async def remove(self, p: Principal, notification_id: UUID) -> None:
        """Delete one's own notification; a shared one is removed from the caller's inbox."""
        row = await self._visible(p, notification_id)
        m = row._mapping
        if m["audience"] == "user":
            await self.db.execute(delete(Notification).where(Notification.id == notification_id))
        else:
            await self.db.execute(
                self._set_state(
                    p,
                    select(Notification.id).where(Notification.id == notification_id),
                    "deleted_at",
                    utcnow(),
                )
            )
        self.audit(
            p, m["tenant_id"], "notification.delete", str(notification_id), audience=m["audience"]
        )
        await self.db.commit()


def _replay(stored: IdempotencyKey, digest: str) -> tuple[int, bytes]:
    if stored.request_hash != digest:
        raise Conflict(
            "Idempotency-Key was already used with a different request body",
            extra={"key": "Idempotency-Key"},
        )
    return stored.status_code, stored.body


__all__ = ["NotificationService", "Target"]
