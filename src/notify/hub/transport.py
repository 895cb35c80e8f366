"""Serving `/ws/notify` straight from uvicorn's HTTP protocol: the upgrade is parsed once, no
ASGI task runs per socket, and pre-framed bytes go straight to the transport (the hot path)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import random
import struct
from typing import Any, ClassVar
from urllib.parse import parse_qs

from litestar.datastructures import State
from uuid_utils import uuid7
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, SERVER, Protocol
from websockets.utils import accept_key as websockets_accept_key

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


def accept_key(key: bytes | None) -> bytes | None:
    """Sec-WebSocket-Accept for a valid Sec-WebSocket-Key (16 bytes, base64), else None."""
    try:
        if key is None or len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return websockets_accept_key(key.decode()).encode()


class HubHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol; an upgrade to `/ws/notify` (when bound to an app's state by
    `bind_http`) becomes a hub socket here, every other request goes on as usual."""

    hub: ClassVar[State | None] = None

    def _get_upgrade(self) -> bytes | None:
        # uvicorn's version splits and strips every token of every header; this is the
        # same answer for one pass over the names.
        connection = upgrade = None
        for name, value in self.headers:
            if name == b"connection":
                connection = value
            elif name == b"upgrade":
                upgrade = value
        if connection is None or b"upgrade" not in connection.lower():
            return None
        return upgrade.lower() if upgrade is not None else None

    def handle_websocket_upgrade(self) -> None:
        path, _, query = self.url.partition(b"?")
        if self.hub is None or path != HUB_PATH.encode():
            super().handle_websocket_upgrade()
            return
        headers = dict(self.headers)
        accept = None
        if self.scope["method"] == "GET" and headers.get(b"sec-websocket-version") == b"13":
            accept = accept_key(headers.get(b"sec-websocket-key"))
        if accept is None:
            self.send_400_response(
                "WebSocket upgrade needs GET, Sec-WebSocket-Version: 13 and a Sec-WebSocket-Key"
            )
            return
        self.connections.discard(self)
        socket = HubSocket(self.hub, self.config, self.server_state, self.transport)
        self.transport.set_protocol(socket)
        socket.open(accept, parse_qs(query.decode("latin-1")))


class HubSocket(asyncio.Protocol):
    """One client's socket: frames in go to its hub session; the hub writes frames out."""

    def __init__(
        self, state: State, config: Config, server_state: ServerState, transport: Any
    ) -> None:
        self.state = state
        self.transport: asyncio.Transport = transport
        self.loop = asyncio.get_running_loop()
        self.connections = server_state.connections
        self.conn = Protocol(SERVER, state=OPEN, max_size=config.ws_max_size)
        self.ping_interval = config.ws_ping_interval
        self.ping_timeout = config.ws_ping_timeout
        self.session: Any = None  # notify.hub.session.Session once authenticated
        self.close_sent = False
        self.fragments: list[bytes] | None = None
        self.ping_payload: bytes | None = None
        self.timer: asyncio.TimerHandle | None = None  # next ping, pong deadline or close
        # uvicorn calls shutdown() on everything in this set when it stops.
        self.connections.add(self)  # type: ignore[arg-type]

    def open(self, accept: bytes, query: dict[str, list[str]]) -> None:
        # Imported here: the hub's modules import text_frame from this one.
        from notify.hub import protocol as proto
        from notify.hub.hub import Connection
        from notify.hub.session import Session

        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self._schedule_ping()
        try:
            principal = decode_token((query.get("token") or [""])[0], self.state.settings)
        except TokenError as exc:
            self.transport.write(response)
            self.close_socket(4401, str(exc)[:120])
            return
        conn = Connection(
            str(uuid7()),
            principal,
            self.transport,
            self.close_socket,
            self.state.settings.ws_send_buffer,
        )
        self.session = Session(self.state, conn)
        # One write for the handshake and the welcome: a loopback write is a syscall that
        # also runs the receiver's side, a visible cost when thousands connect at once.
        self.transport.write(response + proto.welcome(conn.id).wire)
        since, channels = query.get("since"), query.get("channels")
        self.session.open(since[0] if since else None, channels[0] if channels else None)

    # -- frames from the client -----------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        for frame in self.conn.events_received():
            assert isinstance(frame, Frame)
            self._frame(frame)
        if self.conn.parser_exc is not None:
            # Too big (1009), not UTF-8, bad framing: websockets queued the right close.
            self._flush()
            self.close_sent = True
            self.transport.close()
            return
        self._flush()  # pongs to pings, the echo of a close

    def _frame(self, frame: Frame) -> None:
        op = frame.opcode
        if op is Opcode.TEXT or op is Opcode.BINARY:
            if frame.fin:
                self._feed(frame.data)
            else:
                self.fragments = [bytes(frame.data)]
        elif op is Opcode.CONT and self.fragments is not None:
            self.fragments.append(bytes(frame.data))
            if frame.fin:
                data, self.fragments = b"".join(self.fragments), None
                self._feed(data)
        elif op is Opcode.PONG:
            if self.ping_payload is not None and frame.data == self.ping_payload:
                self.ping_payload = None
                self._schedule_ping()
        elif op is Opcode.CLOSE:
            if not self.close_sent:  # the peer closes: websockets queued the echo
                self._flush()
            self.transport.close()

    def _feed(self, data: bytes | bytearray | memoryview) -> None:
        if self.session is not None and not self.close_sent:
            self.session.feed(bytes(data))

    def _flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.transport.write(b"".join(out))

    # -- closing ----------------------------------------------------------------------------
    def close_socket(self, code: int, reason: str) -> None:
        """Start the closing handshake; the transport goes when the peer answers or in 10 s."""
        if self.session is not None:
            self.session.conn.closing = True  # nothing may follow the close frame
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.send_close(code, reason)
        self._flush()
        self.close_sent = True
        self._set_timer(CLOSE_TIMEOUT, self.transport.close)

    def shutdown(self) -> None:
        """uvicorn is stopping (SIGTERM): clients resume on another pod."""
        self.close_socket(1001, "server going away")

    def connection_lost(self, exc: Exception | None) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.finish()
        self._set_timer(None, None)
        self.connections.discard(self)

    # -- keepalive: a peer that does not answer a ping in time is dropped --------------------
    def _set_timer(self, delay: float | None, callback: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None if delay is None else self.loop.call_later(delay, callback)

    def _schedule_ping(self) -> None:
        if self.ping_interval and not self.close_sent:
            self._set_timer(self.ping_interval, self._ping)

    def _ping(self) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        self.ping_payload = struct.pack("!I", random.getrandbits(32))
        self.conn.send_ping(self.ping_payload)
        self._flush()
        self._set_timer(self.ping_timeout or self.ping_interval, self._no_pong)

    def _no_pong(self) -> None:
        self.timer = None
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.fail(1011, "keepalive ping timeout")
        self._flush()
        self.close_sent = True
        self.transport.close()


def bind_http(state: State) -> type[HubHttpProtocol]:
    """An HTTP protocol class that serves the hub of this app (one per server)."""
    return type("BoundHubHttpProtocol", (HubHttpProtocol,), {"hub": state})
