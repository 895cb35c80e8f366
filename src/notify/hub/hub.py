"""The hub: owns this pod's sockets and indexes them by user, tenant and channel."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from notify.core.auth import Principal
from notify.hub.protocol import Frame

log = logging.getLogger("notify.hub")

Close = Callable[[int, str], None]
UserKey = tuple[str, str]
ChannelKey = tuple[str, str]


@dataclass(eq=False, slots=True)
class Connection:
    """One socket: frames are written straight to its transport. A reader more than
    `buffer_limit` bytes behind is a slow consumer, closed with 1008; it never slows
    anyone else."""

    id: str
    principal: Principal
    transport: asyncio.WriteTransport
    close: Close
    buffer_limit: int
    channels: frozenset[str] = frozenset()  # replaced, not mutated: idle sockets share one
    last_seq: int = 0
    # While replaying, live frames wait here so replay and live join without a gap.
    held: list[tuple[int, Frame]] | None = None
    closing: bool = False

    @property
    def user_key(self) -> UserKey:
        return (self.principal.tenant_id, self.principal.sub)

    def push(self, frame: Frame) -> None:
        if self.closing:
            return
        t = self.transport
        if t.get_write_buffer_size() > self.buffer_limit:
            self.drop(1008, "slow consumer")
        elif not t.is_closing():
            t.write(frame.wire)

    def push_seq(self, seq: int, frame: Frame) -> None:
        """A numbered notification: held during replay, and never sent twice or out of order."""
        if self.held is not None:
            self.held.append((seq, frame))
        elif seq > self.last_seq:
            self.last_seq = seq
            self.push(frame)

    def drop(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.close(code, reason)


class Hub:
    """user → sockets, tenant → sockets, (tenant, channel) → sockets, for this pod only."""

    def __init__(self, max_per_user: int) -> None:
        self.max_per_user = max_per_user
        self.connections: dict[str, Connection] = {}
        self.by_user: dict[UserKey, dict[str, Connection]] = {}
        self.by_tenant: dict[str, set[Connection]] = {}
        self.by_channel: dict[ChannelKey, set[Connection]] = {}
        self.messages_in = 0
        self.messages_out = 0

    def add(self, conn: Connection) -> None:
        """Register; beyond the per-user limit the user's oldest socket is replaced (4008)."""
        self.connections[conn.id] = conn
        sockets = self.by_user.setdefault(conn.user_key, {})
        sockets[conn.id] = conn  # dicts keep insertion order: the first is the oldest
        while len(sockets) > self.max_per_user:
            oldest = next(iter(sockets.values()))
            self.remove(oldest)
            oldest.drop(4008, "replaced: too many sockets for this user")
        self.by_tenant.setdefault(conn.principal.tenant_id, set()).add(conn)

    def remove(self, conn: Connection) -> None:
        if self.connections.pop(conn.id, None) is None:
            return
        tenant = conn.principal.tenant_id
        _discard(self.by_user, conn.user_key, conn)
        _discard(self.by_tenant, tenant, conn)
        for channel in conn.channels:
            _discard(self.by_channel, (tenant, channel), conn)

    def join(self, conn: Connection, channel: str) -> None:
        conn.channels = conn.channels | {channel}
        self.by_channel.setdefault((conn.principal.tenant_id, channel), set()).add(conn)

    def leave(self, conn: Connection, channel: str) -> None:
        conn.channels = conn.channels - {channel}
        _discard(self.by_channel, (conn.principal.tenant_id, channel), conn)

    def targets(self, tenant: str, kind: str, name: str | None) -> list[Connection]:
        if kind == "user" and name is not None:
            return list(self.by_user.get((tenant, name), {}).values())
        if kind == "channel" and name is not None:
            return list(self.by_channel.get((tenant, name), ()))
        return list(self.by_tenant.get(tenant, ()))

    def deliver(self, tenant: str, kind: str, name: str | None, seq: int, frame: Frame) -> int:
        """Queue one pre-encoded notification on every addressed socket of this pod."""
        self.messages_in += 1
        targets = self.targets(tenant, kind, name)
        wire = frame.wire
        # The hot loop (py-spy: per-socket calls were most of a fanout); `push_seq` inlined.
        for conn in targets:
            if conn.held is not None:
                conn.held.append((seq, frame))
                continue
            if seq <= conn.last_seq or conn.closing:
                continue
            conn.last_seq = seq
            t = conn.transport
            if t.get_write_buffer_size() > conn.buffer_limit:
                conn.drop(1008, "slow consumer")
            elif not t.is_closing():
                t.write(wire)
        self.messages_out += len(targets)
        return len(targets)

    def broadcast_user(self, tenant: str, user: str, frame: Frame) -> None:
        """An unnumbered event (a read receipt) to all of one user's sockets."""
        for conn in self.targets(tenant, "user", user):
            conn.push(frame)

    def stats(self) -> dict[str, int]:
        return {
            "connections": len(self.connections),
            "users": len(self.by_user),
            "tenants": len(self.by_tenant),
            "channel_subscriptions": sum(len(s) for s in self.by_channel.values()),
            "messages_in": self.messages_in,
            "messages_out": self.messages_out,
        }

    def close_all(self, code: int, reason: str) -> None:
        """Close every socket (on shutdown: 1001, so clients resume on another pod)."""
        for conn in list(self.connections.values()):
            self.remove(conn)
            conn.drop(code, reason)


def _discard(index: dict, key: object, conn: Connection) -> None:  # type: ignore[type-arg]
    members = index.get(key)
    if members is None:
        return
    if isinstance(members, dict):
        members.pop(conn.id, None)
    else:
        members.discard(conn)
    if not members:
        del index[key]
