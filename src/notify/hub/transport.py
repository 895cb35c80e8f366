"""Serving `/ws/notify` inside uvicorn's WebSocket protocol: no ASGI task per socket, and
pre-framed bytes written straight to the transport (the hub's hot path)."""

from __future__ import annotations

from asyncio import BaseTransport, Transport
from typing import Any, ClassVar, cast
from urllib.parse import parse_qs, urlsplit

from litestar.datastructures import State
from uuid_utils import uuid7
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame as WsFrame
from websockets.protocol import Protocol

from notify.core.auth import TokenError, decode_token

HUB_PATH = "/ws/notify"
CLOSE_TIMEOUT = 10.0


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented server→client text frame (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x81, n))
    elif n < 65536:
        header = b"\x81\x7e" + n.to_bytes(2, "big")
    else:
        header = b"\x81\x7f" + n.to_bytes(8, "big")
    return header + payload


class NotifyWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol. For `/ws/notify` (when bound to an app's
    state by `notify.server`) it completes the handshake itself and hands frames to a hub
    session; every other path goes to the ASGI app as usual."""

    state: ClassVar[State | None] = None
    direct = False  # this socket is served here, not by the ASGI app
    session: Any = None  # notify.hub.session.Session once authenticated

    def connection_made(self, transport: BaseTransport) -> None:
        # uvicorn reads both socket addresses here; only an ASGI scope needs them, and
        # getsockname per socket is a visible cost when thousands connect at once.
        self.connections.add(self)
        self.transport = cast(Transport, transport)
        self.scheme = "wss" if is_ssl(self.transport) else "ws"
        self.server = self.client = None

    def handle_connect(self, event: Any) -> None:
        target = urlsplit(event.path)
        if self.state is None or target.path != HUB_PATH:
            self.server = get_local_addr(self.transport)
            self.client = get_remote_addr(self.transport)
            super().handle_connect(event)
            return
        self.direct = True
        response = self.conn.accept(event)
        self.conn.send_response(response)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.handshake_initiated = self.handshake_complete = True
        if response.status_code != 101:
            self.close_sent = True
            self.transport.close()
            return
        self.start_keepalive()
        del self.queue, self.writable, self.frames  # the ASGI side of the protocol stays unused
        # The server parser's generator frame keeps the handshake request (headers and all)
        # alive for the socket's life; the base frame parser is the same minus that.
        self.conn.parser = Protocol.parse(self.conn)
        next(self.conn.parser)
        self._open(parse_qs(target.query))

    def _open(self, query: dict[str, list[str]]) -> None:
        # Imported here: the hub's modules import text_frame from this one.
        from notify.hub.hub import Connection
        from notify.hub.session import Session

        state = self.state
        assert state is not None
        try:
            principal = decode_token((query.get("token") or [""])[0], state.settings)
        except TokenError as exc:
            self.close_socket(4401, str(exc)[:120])
            return
        conn = Connection(
            str(uuid7()),
            principal,
            self.transport,
            self.close_socket,
            state.settings.ws_send_buffer,
        )
        self.session = Session(state, conn)
        since, channels = query.get("since"), query.get("channels")
        self.session.open(since[0] if since else None, channels[0] if channels else None)

    def close_socket(self, code: int, reason: str) -> None:
        """Start the closing handshake; the transport goes when the peer answers or in 10 s."""
        if self.session is not None:
            self.session.conn.closing = True  # nothing may follow the close frame
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT, self.transport.close)

    # -- frames from the client: to the session when the socket is ours --------------------
    def handle_text(self, event: WsFrame) -> None:
        if not self.direct:
            super().handle_text(event)
        elif self.session is not None and not self.close_sent:
            self.session.feed(bytes(event.data))

    def handle_bytes(self, event: WsFrame) -> None:
        if not self.direct:
            super().handle_bytes(event)
        elif self.session is not None and not self.close_sent:
            self.session.feed(bytes(event.data))

    def handle_close(self, event: WsFrame) -> None:
        if not self.direct:
            super().handle_close(event)
            return
        if self.close_sent:  # the peer answered our close
            if self.close_timer is not None:
                self.close_timer.cancel()
                self.close_timer = None
        else:  # the peer closes: websockets queued the echo
            self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()

    def handle_parser_exception(self) -> None:
        if not self.direct:
            super().handle_parser_exception()
            return
        # Too big (1009), not UTF-8, bad framing: websockets queued the right close frame.
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.direct:
            super().connection_lost(exc)
            return
        session, self.session = self.session, None
        if session is not None:
            session.finish()
        self.stop_keepalive()
        self.connections.discard(self)
        self.disconnected = True
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None

    def pause_writing(self) -> None:
        if not self.direct:  # direct sockets: the hub's byte limit is the back-pressure
            super().pause_writing()

    def resume_writing(self) -> None:
        if not self.direct:
            super().resume_writing()

    def shutdown(self) -> None:
        if not self.direct:
            super().shutdown()
            return
        self.stop_keepalive()
        self.close_socket(1001, "server going away")


def bind_protocol(state: State) -> type[NotifyWebSocketProtocol]:
    """A protocol class that serves the hub of this app (one per server)."""
    return type("BoundNotifyWebSocketProtocol", (NotifyWebSocketProtocol,), {"state": state})
