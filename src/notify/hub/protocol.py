"""The WebSocket protocol (CONTRACT §5): client messages in, server frames out."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

from notify.hub.transport import text_frame
from notify.notifications.schemas import ChannelName

ENCODER = msgspec.json.Encoder()


class Ping(Struct, tag="ping", tag_field="type"):
    timestamp: str | None = None


class MarkRead(Struct, tag="mark_read", tag_field="type"):
    notification_id: str


class SubscribeChannel(Struct, tag="subscribe_channel", tag_field="type"):
    channel: ChannelName


class UnsubscribeChannel(Struct, tag="unsubscribe_channel", tag_field="type"):
    channel: ChannelName


class Resume(Struct, tag="resume", tag_field="type"):
    since: Annotated[int, Meta(ge=0)]


class Refresh(Struct, tag="refresh", tag_field="type"):
    token: Annotated[str, Meta(min_length=1, max_length=8192)]


ClientMessage = Ping | MarkRead | SubscribeChannel | UnsubscribeChannel | Resume | Refresh
DECODER = msgspec.json.Decoder(ClientMessage)
ErrorCode = Literal[
    "invalid_json",
    "invalid_message",
    "unknown_type",
    "forbidden_channel",
    "not_found",
    "rate_limited",
    "replay_unavailable",
    "invalid_token",
    "unavailable",
]


class Frame:
    """One outgoing message, encoded once and shared by every socket it goes to."""

    __slots__ = ("_wire", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._wire: bytes | None = None

    @property
    def wire(self) -> bytes:
        """The WebSocket frame bytes, built on first use and then reused for every socket."""
        if self._wire is None:
            self._wire = text_frame(self.data)
        return self._wire


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def notification_frame(seq: int, payload: bytes, timestamp: str) -> Frame:
    """The notification message, spliced around the stored JSON: no decode, no re-encode."""
    return Frame(
        b'{"type":"notification","seq":%d,"data":%s,"timestamp":"%s"}'
        % (seq, payload, timestamp.encode())
    )


def _frame(message: dict[str, object]) -> Frame:
    return Frame(ENCODER.encode(message))


def welcome(connection_id: str) -> Frame:
    return _frame({"type": "welcome", "connection_id": connection_id, "server_time": now_iso()})


def pong() -> Frame:
    return _frame({"type": "pong", "timestamp": now_iso()})


def channel_ack(kind: Literal["subscribed", "unsubscribed"], channel: str) -> Frame:
    return _frame({"type": kind, "channel": channel})


def refreshed(exp: int) -> Frame:
    return _frame({"type": "refreshed", "exp": exp})


def read_event(notification_id: str, read_at: str) -> Frame:
    return _frame({"type": "read", "notification_id": notification_id, "read_at": read_at})


def error(code: ErrorCode, message: str) -> Frame:
    return _frame({"type": "error", "code": code, "message": message})


def classify(exc: msgspec.DecodeError) -> tuple[ErrorCode, str]:
    """Why a client frame was refused, in the protocol's terms."""
    text = str(exc)
    if not isinstance(exc, msgspec.ValidationError):
        return "invalid_json", text
    if text.startswith("Invalid value") and text.endswith("`$.type`"):
        return "unknown_type", text
    return "invalid_message", text
