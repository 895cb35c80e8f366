"""Whom a notification is for (user, tenant or channel), its subject, and first delivery states."""

from __future__ import annotations

from dataclasses import dataclass

from notify.core import bus
from notify.core.errors import Invalid
from notify.notifications.schemas import BroadcastCreate

# Channels with no sender yet: recorded as skipped, never left pending.
UNCONFIGURED_CHANNELS = ("email", "sms")
# One delivery per push subscription of the recipients, found when the rows are written.
FAN_OUT = "fan-out"


@dataclass(frozen=True, slots=True)
class Target:
    """Whom one notification is for."""

    tenant_id: str
    user_id: str | None = None
    channel: str | None = None

    @property
    def audience(self) -> str:
        return "user" if self.user_id else "channel" if self.channel else "tenant"

    @property
    def subject(self) -> str:
        if self.user_id:
            return bus.user_subject(self.tenant_id, self.user_id)
        if self.channel:
            return bus.channel_subject(self.tenant_id, self.channel)
        return bus.tenant_subject(self.tenant_id)


def broadcast_targets(data: BroadcastCreate, tenant: str) -> list[Target]:
    chosen = [
        name
        for name, on in (
            ("user_id", data.user_id is not None),
            ("user_ids", data.user_ids is not None),
            ("broadcast_to_tenant", data.broadcast_to_tenant),
            ("channel", data.channel is not None),
        )
        if on
    ]
    if len(chosen) != 1:
        raise Invalid(
            "target",
            "give exactly one of user_id, user_ids, broadcast_to_tenant, "
            f"channel (got {', '.join(chosen) or 'none'})",
        )
    if data.user_id is not None:
        return [Target(tenant, user_id=data.user_id)]
    if data.user_ids is not None:
        return [Target(tenant, user_id=u) for u in dict.fromkeys(data.user_ids)]
    if data.channel is not None:
        return [Target(tenant, channel=data.channel)]
    return [Target(tenant)]


def initial_delivery(channel: str, target: Target) -> tuple[str, str | None]:
    """A delivery's first state: in-app is delivered by being stored; websocket waits for
    the bus; push fans out to subscriptions; channels without a sender are skipped."""
    if channel == "in_app":
        if target.audience == "channel":
            return "skipped", "channel notifications are not in inboxes"
        return "sent", None
    if channel == "push":
        if target.audience == "channel":
            return "skipped", "channel notifications are delivered over websocket only"
        return FAN_OUT, None
    if channel in UNCONFIGURED_CHANNELS:
        return "skipped", f"{channel} delivery is not configured on this server"
    return "pending", None
