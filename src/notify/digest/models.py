"""Digest preferences (one row per user) and digest runs (one row per user and local day)."""

from __future__ import annotations

import datetime as dt
from uuid import UUID

from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import Boolean, Date, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from notify.core.models import TimestampedUUID


class DigestSubscription(TimestampedUUID):
    """When and what a user's digest contains."""

    __tablename__ = "digest_subscriptions"
    __table_args__ = (
        Index("ux_digest_subscriptions_user", "tenant_id", "user_id", unique=True),
        # The tick walks due rows in (next_delivery_at, id) order, a chunk at a time.
        Index("ix_digest_subscriptions_due", "is_enabled", "next_delivery_at", "id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    is_enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    delivery_time: Mapped[str] = mapped_column(String(5), default="07:00")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    frequency: Mapped[str] = mapped_column(String(16), default="daily")
    weekday: Mapped[int | None] = mapped_column(Integer)
    include_types: Mapped[list[str]] = mapped_column(JsonB, default=list)
    exclude_weekends: Mapped[bool] = mapped_column(Boolean, default=False)
    min_priority: Mapped[str] = mapped_column(String(16), default="low")
    # The first instant the tick must look at this row again (may be past: due now).
    next_delivery_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    last_delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    last_digest_date: Mapped[dt.date | None] = mapped_column(Date)


class DigestRun(TimestampedUUID):
    """One user's digest for one local day: the unique key makes it exactly once."""

    __tablename__ = "digest_runs"
    __table_args__ = (
        Index("ux_digest_runs_period", "tenant_id", "user_id", "period_date", unique=True),
        Index("ix_digest_runs_created", "created_at"),
    )

    tenant_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    period_date: Mapped[dt.date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))  # sent | skipped (empty period)
    notification_id: Mapped[UUID | None] = mapped_column(GUID)
