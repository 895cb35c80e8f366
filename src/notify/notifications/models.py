"""Tables of the notifications domain: notifications, per-user read state, deliveries, outbox."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from notify.core.models import BigIntBase, DefaultBase, TimestampedUUID, utcnow


class Notification(TimestampedUUID):
    """One stored notification. `audience` says who it is for: a user, a tenant, a channel."""

    __tablename__ = "notifications"
    __table_args__ = (
        # The inbox: one user's rows, newest first (keyset pagination on created_at, id).
        Index("ix_notifications_inbox", "tenant_id", "user_id", "created_at", "id"),
        # Tenant-wide rows, unioned into every inbox of the tenant.
        Index(
            "ix_notifications_tenant_wide",
            "tenant_id",
            "created_at",
            "id",
            postgresql_where=text("audience = 'tenant'"),
            sqlite_where=text("audience = 'tenant'"),
        ),
        Index("ix_notifications_unread", "tenant_id", "user_id", "status"),
        Index("idx_notifications_user_status", "user_id", "status"),
        Index("idx_notifications_tenant_type", "tenant_id", "notification_type"),
        Index("idx_notifications_created_at", "created_at"),
    )

    tenant_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255))
    audience: Mapped[str] = mapped_column(String(16), default="user")
    channel: Mapped[str | None] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    notification_type: Mapped[str] = mapped_column(String(100))
    priority: Mapped[str] = mapped_column(String(16), default="normal")
    channels: Mapped[list[str]] = mapped_column(JsonB)
    action_url: Mapped[str | None] = mapped_column(String(2048))
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JsonB, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="unread")
    read_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(255))


class NotificationRead(DefaultBase):
    """One user's state of a tenant-wide notification: read, or removed from their inbox."""

    __tablename__ = "notification_reads"
    __table_args__ = (Index("ix_notification_reads_user", "tenant_id", "user_id"),)

    notification_id: Mapped[UUID] = mapped_column(
        GUID, ForeignKey("notifications.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(255))
    read_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class NotificationDelivery(TimestampedUUID):
    """One delivery of a notification over one channel to one target."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        Index("ix_deliveries_notification", "notification_id"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    notification_id: Mapped[UUID] = mapped_column(
        GUID, ForeignKey("notifications.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str | None] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(16))
    target: Mapped[str | None] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    # A worker owns a pending delivery it claimed until then; after, another may take it over.
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    subscription_id: Mapped[UUID | None] = mapped_column(GUID)


class OutboxMessage(BigIntBase):
    """What the fanout must publish, written in the transaction that accepted the notification."""

    __tablename__ = "outbox"
    # The pod that committed deletes its rows by (notification id, subject) once published.
    __table_args__ = (Index("ix_outbox_notification", "notification_id"),)

    notification_id: Mapped[UUID] = mapped_column(GUID)
    subject: Mapped[str] = mapped_column(String(512))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


class IdempotencyKey(DefaultBase):
    """The stored answer to a request made with an Idempotency-Key, per caller."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_created", "created_at"),)

    tenant_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    principal: Mapped[str] = mapped_column(String(255), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


__all__ = [
    "IdempotencyKey",
    "Notification",
    "NotificationDelivery",
    "NotificationRead",
    "OutboxMessage",
]
