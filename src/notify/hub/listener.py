"""The WebSocket route `/ws/notify` and `/ws/status`: one task per socket reads the client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast
from uuid import UUID

import msgspec
from litestar import WebSocket, get, websocket
from litestar.datastructures import State
from litestar.exceptions import WebSocketDisconnect
from msgspec import Struct
from sqlalchemy.ext.asyncio import async_sessionmaker
from uuid_utils.compat import uuid7

from notify.core.auth import TokenError, decode_token, service_only
from notify.core.bus import Bus, channel_subject, tenant_subject, user_subject
from notify.core.config import Settings
from notify.core.errors import NotFound
from notify.hub import protocol as proto
from notify.hub.events import publish_read
from notify.hub.hub import Connection, Hub
from notify.hub.presence import Presence
from notify.hub.replay import ReplayUnavailable, missed
from notify.hub.transport import RAW_EXTENSION, RawSocket
from notify.notifications.service import NotificationService

log = logging.getLogger("notify.hub.listener")


class WsStatus(Struct):
    connections: int
    users: int
    tenants: int
    channel_subscriptions: int
    messages_in: int
    messages_out: int


@get("/ws/status", guards=[service_only], tags=["websocket"], summary="This pod's sockets")
async def ws_status(state: State) -> WsStatus:
    return msgspec.convert(state.hub.stats(), WsStatus)


class RateLimit:
    """Token bucket: `rate` messages a second, bursts of twice that; abuse closes the socket."""

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

    def __init__(self, socket: WebSocket[Any, Any, Any], conn: Connection) -> None:
        state = socket.app.state
        self.socket, self.conn = socket, conn
        self.settings: Settings = state.settings
        self.hub: Hub = state.hub
        self.bus: Bus = state.bus
        self.presence: Presence = state.presence
        self.sessions: async_sessionmaker[Any] = state.sessions
        self.rate = RateLimit(self.settings.ws_rate)
        self.expiry: asyncio.TimerHandle | None = None

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
        except (ConnectionError, TimeoutError, OSError) as exc:
            conn.push(proto.error("unavailable", f"replay failed: {exc}; reload the inbox"))
        finally:
            held, conn.held = conn.held or [], None
            for seq, frame in held:
                conn.push_seq(seq, frame)

    async def handle(self, raw: str | bytes) -> None:
        if not self.rate.allow():
            if self.rate.abusive:
                self.conn.drop(1008, "message rate limit exceeded")
            else:
                self.conn.push(proto.error("rate_limited", "too many messages; slow down"))
            return
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
                if channel not in conn.principal.channels:
                    conn.push(
                        proto.error(
                            "forbidden_channel",
                            f"channel {channel!r} is not in this token's channels",
                        )
                    )
                    return
                hub.join(conn, channel)
                self.presence.channels_changed(conn)
                conn.push(proto.channel_ack("subscribed", channel))
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


@websocket("/ws/notify", tags=["websocket"])
async def notify_socket(socket: WebSocket[Any, Any, State]) -> None:
    """CONTRACT §5. The token and `since` come in the query string."""
    await socket.accept()
    state = socket.app.state
    try:
        principal = decode_token(socket.query_params.get("token") or "", state.settings)
    except TokenError as exc:
        await socket.close(4401, str(exc)[:120])
        return
    since = socket.query_params.get("since")

    async def send(text: str) -> None:
        await socket.send_data(text, mode="text")

    async def close(code: int, reason: str) -> None:
        await socket.close(code, reason)

    extensions = socket.scope.get("extensions") or {}
    raw = cast(RawSocket | None, extensions.get(RAW_EXTENSION))
    conn = Connection(
        str(uuid7()), principal, close, state.settings.ws_send_buffer, raw=raw, send=send
    )
    session = Session(socket, conn)
    conn.push(proto.welcome(conn.id))
    state.hub.add(conn)
    state.presence.connected(conn)
    writer = asyncio.create_task(conn.writer()) if raw is None else None
    session.arm_expiry(principal.exp)
    try:
        if since is not None:
            if since.isdigit():
                await session.replay(int(since))
            else:
                conn.push(proto.error("invalid_message", "since must be a non-negative integer"))
        while not conn.closing:
            event = await socket.receive()
            if event["type"] == "websocket.disconnect":
                break
            data = cast(str | bytes, event.get("text") or event.get("bytes") or b"")
            await session.handle(data)
    except WebSocketDisconnect:
        pass
    finally:
        state.hub.remove(conn)
        state.presence.disconnected(conn)
        if session.expiry is not None:
            session.expiry.cancel()
        conn.closing = True
        if writer is not None:
            if conn.ready is not None:
                conn.ready.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 1)
