"""Live WebSocket connections, one row per socket, so any pod can see who is connected."""

from __future__ import annotations

import datetime as dt

from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from notify.core.models import TimestampedUUID, utcnow


class WebSocketConnection(TimestampedUUID):
    """A socket held by a pod; removed on disconnect, or by other pods when its pod dies."""

    __tablename__ = "websocket_connections"
    __table_args__ = (
        Index("ix_websocket_connections_pod", "pod_id", "last_seen_at"),
        Index("ix_websocket_connections_user", "tenant_id", "user_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(255))
    pod_id: Mapped[str] = mapped_column(String(255))
    channels: Mapped[list[str]] = mapped_column(JsonB, default=list)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
