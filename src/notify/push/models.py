"""Browser push subscriptions (Web Push endpoints and their keys)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import Boolean, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from notify.core.models import TimestampedUUID


class PushSubscription(TimestampedUUID):
    """One browser's push endpoint for one user; upserted by endpoint."""

    __tablename__ = "push_subscriptions"
    __table_args__ = (
        Index("idx_push_subscriptions_active", "is_active", "user_id"),
        Index("ix_push_subscriptions_owner", "tenant_id", "user_id", "is_active"),
        Index("ux_push_subscriptions_endpoint", "endpoint_hash", unique=True),
    )

    tenant_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    endpoint: Mapped[str] = mapped_column(Text)
    endpoint_hash: Mapped[str] = mapped_column(String(64))
    p256dh_key: Mapped[str] = mapped_column(String(255))
    auth_key: Mapped[str] = mapped_column(String(255))
    user_agent: Mapped[str | None] = mapped_column(String(1024))
    device_info: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
