"""Request and response shapes of the Web Push subscription API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from uuid import UUID

import msgspec
from msgspec import Meta, Struct

DEVICE_INFO_MAX_BYTES = 4096
Key = Annotated[str, Meta(min_length=1, max_length=255)]


class SubscribeBody(Struct, kw_only=True, forbid_unknown_fields=True):
    """What the browser's PushSubscription gives (keys base64 or base64url)."""

    endpoint: Annotated[str, Meta(min_length=1, max_length=2048)]
    p256dh_key: Key
    auth_key: Key
    user_agent: Annotated[str, Meta(max_length=1024)] | None = None
    device_info: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if len(msgspec.json.encode(self.device_info)) > DEVICE_INFO_MAX_BYTES:
            raise ValueError(f"device_info must encode to at most {DEVICE_INFO_MAX_BYTES} bytes")


class UnsubscribeBody(Struct, forbid_unknown_fields=True):
    endpoint: Annotated[str, Meta(min_length=1, max_length=2048)]


class SubscriptionOut(Struct, kw_only=True):
    id: UUID
    endpoint: str
    is_active: bool
    user_agent: str | None
    device_info: dict[str, Any]
    created_at: dt.datetime


class SubscriptionList(Struct):
    items: list[SubscriptionOut]


class VapidPublicKey(Struct):
    public_key: str
