"""Request and response shapes of the digest API, and the digest's own structure."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from msgspec import Meta, Struct, field

from notify.notifications.schemas import PRIORITIES, TypeName

FREQUENCIES = ("daily", "weekly")


class DigestSettingsBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """PUT /api/v1/digest/subscription: the description's body (weekly adds `weekday`).
    Times and enums are checked by the schedule, so a bad one is a 422 naming the field."""

    is_enabled: bool = True
    delivery_time: str = "07:00"
    timezone: str = "UTC"
    frequency: str = "daily"
    weekday: int | None = None
    include_types: Annotated[list[TypeName], Meta(max_length=100)] = field(default_factory=list)
    exclude_weekends: bool = False
    min_priority: str = "low"


class DigestSettings(Struct, kw_only=True):
    """A user's digest settings and when the next digest comes."""

    is_enabled: bool
    delivery_time: str
    timezone: str
    frequency: str
    weekday: int | None
    include_types: list[str]
    exclude_weekends: bool
    min_priority: str
    next_delivery_at: dt.datetime | None
    last_delivered_at: dt.datetime | None = None


class Upcoming(Struct):
    deliveries: list[dt.datetime]


class Summary(Struct):
    total_notifications: int
    unread_notifications: int
    priority_breakdown: dict[str, int]


class TypeGroup(Struct):
    count: int
    notifications: list[dict[str, Any]]


class DigestContent(Struct):
    """The description's digest structure (metadata.digest of a `digest` notification)."""

    date: dt.date
    summary: Summary
    notifications_by_type: dict[str, TypeGroup]
    top_notifications: list[dict[str, Any]]
    period_start: dt.datetime
    period_end: dt.datetime


__all__ = [
    "FREQUENCIES",
    "PRIORITIES",
    "DigestContent",
    "DigestSettings",
    "DigestSettingsBody",
    "Summary",
    "TypeGroup",
    "Upcoming",
]
