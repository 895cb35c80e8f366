"""Request and response shapes of the notifications API (msgspec, so OpenAPI is exact)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta, Struct, field

Priority = Literal["low", "normal", "high", "urgent"]
Channel = Literal["websocket", "push", "email", "sms", "in_app"]
Status = Literal["unread", "read"]
DeliveryStatus = Literal["pending", "sent", "failed", "skipped"]

PRIORITIES: tuple[str, ...] = ("low", "normal", "high", "urgent")
DEFAULT_CHANNELS: tuple[Channel, ...] = ("websocket", "in_app")
METADATA_MAX_BYTES = 16 * 1024

# PostgreSQL text cannot hold NUL; reject it up front instead of failing in the database.
NO_NUL = r"^[^\x00]*$"
Id = Annotated[
    str, Meta(min_length=1, max_length=255, pattern=r"^[^\s\x00][^\x00]*$", description="opaque id")
]
ChannelName = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:@-]+$",
        description="a tenant channel name",
    ),
]
Title = Annotated[str, Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Message = Annotated[str, Meta(max_length=4000, pattern=NO_NUL)]
TypeName = Annotated[str, Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
ActionUrl = Annotated[
    str, Meta(max_length=2048, pattern=NO_NUL, description="a path (/…) or an http(s) URL")
]
Channels = Annotated[list[Channel], Meta(min_length=1, max_length=5)]


class NotificationBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """What every creation carries: the description's notification body."""

    title: Title
    message: Message
    notification_type: TypeName = "system"
    priority: Priority = "normal"
    channels: Channels = field(default_factory=lambda: list(DEFAULT_CHANNELS))
    action_url: ActionUrl | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.channels = list(dict.fromkeys(self.channels))
        if self.action_url is not None and not self.action_url.startswith(
            ("/", "https://", "http://")
        ):
            raise ValueError("action_url must be a path starting with / or an http(s) URL")
        encoded = msgspec.json.encode(self.metadata)
        if len(encoded) > METADATA_MAX_BYTES:
            raise ValueError(f"metadata must encode to at most {METADATA_MAX_BYTES} bytes")
        if b"\\u0000" in encoded:
            raise ValueError("metadata must not contain NUL (\\u0000) characters")


class NotificationCreate(NotificationBody, kw_only=True, forbid_unknown_fields=True):
    """POST /api/v1/notifications: for the caller, or (admin/service) another user."""

    user_id: Id | None = None
    tenant_id: Id | None = None


class BroadcastCreate(NotificationBody, kw_only=True, forbid_unknown_fields=True):
    """POST /internal/broadcast: exactly one of user_id, user_ids, broadcast_to_tenant, channel."""

    tenant_id: Id | None = None
    user_id: Id | None = None
    user_ids: Annotated[list[Id], Meta(min_length=1, max_length=1000)] | None = None
    broadcast_to_tenant: bool = False
    channel: ChannelName | None = None


class NotificationOut(Struct, kw_only=True):
    """A notification as its reader sees it (status and read_at are the reader's own)."""

    id: UUID
    tenant_id: str
    user_id: str | None
    title: str
    message: str
    notification_type: str
    priority: Priority
    channels: list[Channel]
    action_url: str | None
    metadata: dict[str, Any]
    status: Status
    read_at: dt.datetime | None
    created_at: dt.datetime


class NotificationPage(Struct, kw_only=True):
    items: list[NotificationOut]
    next_cursor: str | None


class ReadAllResult(Struct):
    updated: int


class UnreadCount(Struct):
    unread_count: int


class DeliveryOut(Struct, kw_only=True):
    channel: Channel
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    target: str | None
    updated_at: dt.datetime


class DeliveryList(Struct):
    items: list[DeliveryOut]


class BroadcastResult(Struct):
    notification_ids: list[UUID]
