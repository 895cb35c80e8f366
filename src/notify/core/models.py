"""Shared model pieces: the declarative bases every domain's tables derive from."""

from __future__ import annotations

import datetime as dt

from advanced_alchemy.base import BigIntBase, DefaultBase, UUIDv7Base
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy.orm import Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def parse_instant(value: str) -> dt.datetime:
    """ISO 8601 (`Z` allowed); without an offset it is read as UTC, as every time here is.
    Raises ValueError."""
    when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


class TimestampedUUID(UUIDv7Base):
    """UUIDv7 primary key (time-ordered) plus created_at/updated_at set by us, in UTC."""

    __abstract__ = True
    created_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTimeUTC(timezone=True), default=utcnow, onupdate=utcnow
    )


__all__ = ["BigIntBase", "DefaultBase", "TimestampedUUID", "parse_instant", "utcnow"]
