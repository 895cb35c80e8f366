"""One client's conversation with the hub, whatever carries the socket (direct or ASGI)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from uuid import UUID

import msgspec
from litestar.datastructures import State
from sqlalchemy.ext.asyncio import async_sessionmaker

from notify.core.auth import TokenError, decode_token
from notify.core.bus import Bus, channel_subject, tenant_subject, user_subject
from notify.core.config import Settings
from notify.core.errors import NotFound
from notify.hub import protocol as proto
from notify.hub.events import publish_read
from notify.hub.hub import Connection, Hub
from notify.hub.presence import Presence
from notify.hub.replay import ReplayUnavailable, missed
from notify.notifications.service import NotificationService

log = logging.getLogger("notify.hub.session")


class RateLimit:
    """Token bucket: `rate` messages a second, bursts of twice that; abuse closes the socket."""

    __slots__ = ("capacity", "rate", "stamp", "strikes", "tokens")

    def __init__(self, rate: float) -> None:
        self.rate, self.capacity = rate, rate * 2
        self.tokens, self.stamp, self.strikes = self.capacity, time.monotonic(), 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.strikes = 0
            return True
        self.strikes += 1
        return False

    @property
    def abusive(self) -> bool:
        return self.strikes > self.capacity


class Session:
    """One client's conversation with the hub."""

    __slots__ = (
        "bus",
        "conn",
        "expiry",
        "hub",
        "inbox",
        "presence",
        "rate",
        "sessions",
        "settings",
        "worker",
    )

    def __init__(self, state: State, conn: Connection) -> None:
        self.conn = conn
        self.settings: Settings = state.settings
        self.hub: Hub = state.hub
        self.bus: Bus = state.bus
        self.presence: Presence = state.presence
        self.sessions: async_sessionmaker[Any] = state.sessions
        self.rate = RateLimit(self.settings.ws_rate)
        self.expiry: asyncio.TimerHandle | None = None
        # Client messages wait here; a task runs only while there are some (idle: no task).
        self.inbox: list[str | bytes | int | None] | None = None
        self.worker: asyncio.Task[None] | None = None

    def open(self, since: str | None, channels: str | None = None) -> None:
        """Register (the transport has sent `welcome` with the handshake): from here on live
        frames reach the socket. `channels` (comma-separated) are joined before the replay,
        so `since` covers them."""
        conn = self.conn
        replay = since is not None and since.isdigit()
        if replay:
            conn.held = []  # live frames wait from the moment we register until replay is done
        self.hub.add(conn)
        for channel in filter(None, (channels or "").split(",")):
            self.subscribe(channel)
        self.presence.connected(conn)
        self.arm_expiry(conn.principal.exp)
        if since is None:
            return
        if replay:
            self.feed(int(since))
        else:
            conn.push(proto.error("invalid_message", "since must be a non-negative integer"))

    def subscribe(self, channel: str) -> None:
        conn = self.conn
        if channel not in conn.principal.channels:
            message = f"channel {channel!r} is not in this token's channels"
            conn.push(proto.error("forbidden_channel", message))
            return
        self.hub.join(conn, channel)
        conn.push(proto.channel_ack("subscribed", channel))

    def feed(self, item: str | bytes | int | None) -> None:
        """A client message (or an initial `since`), handled in arrival order. The rate limit
        applies on arrival, so a flood never queues more than one burst."""
        if not isinstance(item, int) and not self.rate.allow():
            if self.rate.abusive:
                self.conn.drop(1008, "message rate limit exceeded")
                return
            item = None  # refused, but answered in order
        if self.inbox is None:
            self.inbox = []
        self.inbox.append(item)
        if self.worker is None:
            self.worker = asyncio.get_running_loop().create_task(self._work())

    async def _work(self) -> None:
        try:
            while self.inbox and not self.conn.closing:
                item = self.inbox.pop(0)
                if item is None:
                    self.conn.push(proto.error("rate_limited", "too many messages; slow down"))
                elif isinstance(item, int):
                    await self.replay(item)
                else:
                    await self.handle(item)
        finally:
            self.worker = None
            self.inbox = None

    def finish(self) -> None:
        """The socket is gone: unregister everywhere."""
        self.hub.remove(self.conn)
        self.presence.disconnected(self.conn)
        self.conn.closing = True
        self.inbox = None
        if self.expiry is not None:
            self.expiry.cancel()
        if self.worker is not None:
            self.worker.cancel()

    def arm_expiry(self, exp: int) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        delay = max(0.0, exp - time.time())
        self.expiry = asyncio.get_running_loop().call_later(
            delay, self.conn.drop, 4401, "token expired"
        )

    async def replay(self, since: int) -> None:
        """Hold live frames, send what was missed, then the held ones: no gap, no repeat."""
        p, conn = self.conn.principal, self.conn
        subjects = [user_subject(p.tenant_id, p.sub), tenant_subject(p.tenant_id)]
        subjects += [channel_subject(p.tenant_id, c) for c in sorted(conn.channels)]
        if conn.held is None:
            conn.held = []
        try:
            for seq, frame in await missed(
                self.bus.js, subjects, since, self.settings.ws_replay_limit
            ):
                if seq > conn.last_seq:
                    conn.last_seq = seq
                    conn.push(frame)
        except ReplayUnavailable as exc:
            conn.push(proto.error("replay_unavailable", str(exc)))
        except Exception as exc:  # NATS down, stream lost, …: say so, keep the socket
            log.warning("replay failed: %s", exc)
            conn.push(proto.error("unavailable", "replay failed; reload the inbox"))
        finally:
            held, conn.held = conn.held or [], None
            for seq, frame in held:
                conn.push_seq(seq, frame)

    async def handle(self, raw: str | bytes) -> None:
        try:
            msg = proto.DECODER.decode(raw)
        except msgspec.DecodeError as exc:
            self.conn.push(proto.error(*proto.classify(exc)))
            return
        await self.dispatch(msg)

    async def dispatch(self, msg: proto.ClientMessage) -> None:
        conn, hub = self.conn, self.hub
        match msg:
            case proto.Ping():
                conn.push(proto.pong())
            case proto.MarkRead(notification_id=nid):
                await self.mark_read(nid)
            case proto.SubscribeChannel(channel=channel):
                self.subscribe(channel)
                self.presence.channels_changed(conn)
            case proto.UnsubscribeChannel(channel=channel):
                hub.leave(conn, channel)
                self.presence.channels_changed(conn)
                conn.push(proto.channel_ack("unsubscribed", channel))
            case proto.Resume(since=since):
                await self.replay(since)
            case proto.Refresh(token=token):
                self.refresh(token)

    def refresh(self, token: str) -> None:
        conn = self.conn
        try:
            fresh = decode_token(token, self.settings)
        except TokenError as exc:
            conn.push(proto.error("invalid_token", str(exc)))
            return
        old = conn.principal
        if (fresh.sub, fresh.tenant_id) != (old.sub, old.tenant_id):
            conn.push(proto.error("invalid_token", "refresh token is for another user"))
            return
        conn.principal = fresh
        for channel in conn.channels - fresh.channels:  # no longer allowed by the new token
            self.hub.leave(conn, channel)
            conn.push(proto.channel_ack("unsubscribed", channel))
            self.presence.channels_changed(conn)
        self.arm_expiry(fresh.exp)
        conn.push(proto.refreshed(fresh.exp))

    async def mark_read(self, nid: str) -> None:
        try:
            notification_id = UUID(nid)
            async with self.sessions() as session:
                out = await NotificationService(session=session).mark_read(
                    self.conn.principal, notification_id
                )
        except (ValueError, NotFound):
            self.conn.push(proto.error("not_found", f"notification {nid} not found"))
            return
        except Exception as exc:
            log.warning("mark_read failed: %s", exc)
            self.conn.push(proto.error("unavailable", "could not store the read state"))
            return
        await publish_read(self.bus, self.conn.principal, out)
