"""GET /ws/status: this pod's sockets and message counts (service tokens only)."""

from __future__ import annotations

import msgspec
from litestar import get
from litestar.datastructures import State
from msgspec import Struct

from notify.core.auth import service_only


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
