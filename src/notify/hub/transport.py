"""uvicorn's WebSocket protocol plus a raw writer: pre-framed bytes straight to the transport."""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

RAW_EXTENSION = "notify.raw"


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


class RawSocket:
    """What the hub writes through: no ASGI message, no per-socket encoding or framing."""

    __slots__ = ("_proto",)

    def __init__(self, proto: NotifyWebSocketProtocol) -> None:
        self._proto = proto

    def write(self, wire: bytes) -> None:
        proto = self._proto
        if not (proto.close_sent or proto.transport.is_closing()):
            proto.transport.write(wire)

    def buffered(self) -> int:
        """Bytes the kernel has not taken yet: how far behind this reader is."""
        return self._proto.transport.get_write_buffer_size()


class NotifyWebSocketProtocol(WebSocketsSansIOProtocol):
    """Adds the raw writer to the ASGI scope's extensions; everything else is uvicorn's."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:  # a rejected handshake has no scope
            scope["extensions"][RAW_EXTENSION] = RawSocket(self)
