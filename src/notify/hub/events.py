"""Unnumbered per-user events (read receipts), sent to that user's sockets on every pod."""

from __future__ import annotations

import contextlib

from notify.core.auth import Principal
from notify.core.bus import Bus, events_subject
from notify.hub import protocol as proto
from notify.notifications.schemas import NotificationOut


async def publish_read(bus: Bus, reader: Principal, read: NotificationOut) -> None:
    """To the owner's sockets (the reader's, for a shared notification). Best effort over
    core NATS: a lost receipt only delays a badge; the inbox is the truth."""
    if bus.nc is None or read.read_at is None:
        return
    at = read.read_at.isoformat().replace("+00:00", "Z")
    frame = proto.read_event(str(read.id), at)
    subject = events_subject(read.tenant_id, read.user_id or reader.sub)
    with contextlib.suppress(Exception):
        await bus.nc.publish(subject, frame.data)
