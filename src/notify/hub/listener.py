"""The ASGI WebSocket route `/ws/notify` (portable fallback) and `/ws/status`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import msgspec
from litestar import WebSocket, get, websocket
from litestar.datastructures import State
from litestar.exceptions import WebSocketDisconnect
from msgspec import Struct
from uuid_utils.compat import uuid7

from notify.core.auth import TokenError, decode_token, service_only
from notify.hub.hub import Connection
from notify.hub.session import Session

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


@websocket("/ws/notify", tags=["websocket"])
async def notify_socket(socket: WebSocket[Any, Any, State]) -> None:
    """CONTRACT §5 over ASGI, for servers other than ours (notify's own uvicorn protocol
    serves this path directly, without a task per socket: see notify.hub.transport)."""
    await socket.accept()
    state = socket.app.state
    try:
        principal = decode_token(socket.query_params.get("token") or "", state.settings)
    except TokenError as exc:
        await socket.close(4401, str(exc)[:120])
        return

    async def send(text: str) -> None:
        await socket.send_data(text, mode="text")

    async def close(code: int, reason: str) -> None:
        await socket.close(code, reason)

    conn = Connection(str(uuid7()), principal, close, state.settings.ws_send_buffer, send=send)
    session = Session(state, conn)
    writer = asyncio.create_task(conn.writer())
    session.open(socket.query_params.get("since"))
    try:
        while not conn.closing:
            event = await socket.receive()
            if event["type"] == "websocket.disconnect":
                break
            session.feed(cast(str | bytes, event.get("text") or event.get("bytes") or b""))
    except WebSocketDisconnect:
        pass
    finally:
        session.finish()
        if conn.ready is not None:
            conn.ready.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer, 1)
