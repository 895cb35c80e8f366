"""Imports every domain's models so the metadata (and Alembic) sees all tables."""

from notify.digest.models import DigestRun, DigestSubscription
from notify.hub.models import WebSocketConnection
from notify.notifications.models import (
    IdempotencyKey,
    Notification,
    NotificationDelivery,
    NotificationRead,
    OutboxMessage,
)
from notify.ops.models import AuditEntry
from notify.push.models import PushSubscription

__all__ = [
    "AuditEntry",
    "DigestRun",
    "DigestSubscription",
    "IdempotencyKey",
    "Notification",
    "NotificationDelivery",
    "NotificationRead",
    "OutboxMessage",
    "PushSubscription",
    "WebSocketConnection",
]
