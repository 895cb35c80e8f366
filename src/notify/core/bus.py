"""The NATS JetStream bus: connection, streams, subject naming, publishing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.errors import BadRequestError

from notify.core.config import Settings

log = logging.getLogger("notify.bus")

STREAM = "NOTIFY"
STREAM_SUBJECTS = ["notify.*.user.*", "notify.*.all", "notify.*.channel.*"]
# Work for the delivery workers (Taskiq messages): a work queue, each message taken once.
TASKS_STREAM = "NOTIFY_TASKS"
TASKS_SUBJECT = "notify.tasks"
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def token(value: str) -> str:
    """Make an id subject-safe; ids outside [A-Za-z0-9_-] are base32-encoded behind '='."""
    if _SAFE_TOKEN.match(value):
        return value
    return "=" + base64.b32encode(value.encode()).decode().rstrip("=").lower()


def untoken(value: str) -> str:
    """The id a subject token stands for (inverse of `token`)."""
    if not value.startswith("="):
        return value
    raw = value[1:].upper()
    return base64.b32decode(raw + "=" * (-len(raw) % 8)).decode()


def parse_subject(subject: str) -> tuple[str, str, str | None]:
    """notify.<tenant>.user.<u> | notify.<tenant>.all | notify.<tenant>.channel.<c> →
    (tenant, kind, name)."""
    parts = subject.split(".")
    tenant = untoken(parts[1])
    if parts[2] == "all":
        return tenant, "tenant", None
    return tenant, parts[2], untoken(parts[3])


def events_subject(tenant_id: str, user_id: str) -> str:
    """Unnumbered per-user events (read receipts): core NATS, outside the stream."""
    return f"notify-events.{token(tenant_id)}.{token(user_id)}"


def user_subject(tenant_id: str, user_id: str) -> str:
    return f"notify.{token(tenant_id)}.user.{token(user_id)}"


def tenant_subject(tenant_id: str) -> str:
    return f"notify.{token(tenant_id)}.all"


def channel_subject(tenant_id: str, channel: str) -> str:
    return f"notify.{token(tenant_id)}.channel.{token(channel)}"


def tasks_stream_config() -> StreamConfig:
    return StreamConfig(
        name=TASKS_STREAM,
        subjects=[TASKS_SUBJECT],
        retention=RetentionPolicy.WORK_QUEUE,
        max_age=7 * 86400,
        duplicate_window=120.0,
    )


class Bus:
    """One NATS connection per process; connects in the background and keeps reconnecting."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    @property
    def js(self) -> JetStreamContext:
        if self._js is None or not self.connected:
            raise ConnectionError("NATS is not connected")
        return self._js

    async def start(self, wait: float = 5.0) -> None:
        """Connect (waiting up to `wait` seconds) and keep trying in the background after."""
        self._task = asyncio.create_task(self._connect_forever(), name="nats-connect")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), wait)
        if not self.ready.is_set():
            log.warning(
                "NATS at %s not reachable yet; retrying in the background", self._settings.nats_url
            )

    async def _connect_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                self.nc = await nats.connect(
                    servers=self._settings.nats_servers,
                    name=f"notify-{self._settings.pod_id}",
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=2,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnect,
                    reconnected_cb=self._on_reconnect,
                )
                self._js = self.nc.jetstream(timeout=5)
                await self.ensure_streams()
                self.ready.set()
                log.info(
                    "connected to NATS at %s",
                    self.nc.connected_url.netloc
                    if self.nc.connected_url
                    else self._settings.nats_url,
                )
                return
            except Exception as exc:  # any failure: log once per attempt, back off, retry
                log.warning("NATS connect failed (%s); retrying in %.1fs", exc or type(exc), delay)
                if self.nc is not None:
                    with contextlib.suppress(Exception):
                        await self.nc.close()
                    self.nc = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def ensure_streams(self) -> None:
        retention = self._settings.stream_retention_days * 86400
        # The de-duplication window may not exceed what the stream keeps.
        config = StreamConfig(
            name=STREAM,
            subjects=STREAM_SUBJECTS,
            max_age=retention,
            duplicate_window=min(120.0, retention),
        )
        js = self._js
        assert js is not None
        for cfg in (config, tasks_stream_config()):
            try:
                await js.add_stream(cfg)
            except BadRequestError:
                await js.update_stream(cfg)

    async def publish(self, subject: str, payload: bytes, msg_id: str) -> int:
        """Publish to JetStream, de-duplicated by msg_id; returns the stream sequence."""
        ack = await self.js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id})
        return int(ack.seq)

    async def check(self) -> str | None:
        """None if NATS answers a round trip now, else why not."""
        if not self.connected or self.nc is None:
            return "not connected"
        try:
            await self.nc.flush(timeout=1)
        except Exception as exc:
            return f"no answer ({type(exc).__name__})"
        return None

    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS error: %s", exc)

    async def _on_disconnect(self) -> None:
        log.warning("NATS disconnected")

    async def _on_reconnect(self) -> None:
        log.info("NATS reconnected")
        try:  # a restarted server may have lost its state: recreate the stream
            await self.ensure_streams()
        except Exception as exc:
            log.warning("NATS reconnected but the stream could not be ensured: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.drain()
