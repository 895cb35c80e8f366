"""Bus → sockets: one JetStream consumer per pod feeds the hub; each message is framed once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DeliverPolicy

from notify.core import bus as subjects
from notify.core.bus import STREAM, Bus
from notify.hub.hub import Hub
from notify.hub.protocol import Frame, notification_frame

log = logging.getLogger("notify.hub.dispatch")


def iso(ts: dt.datetime | None) -> str:
    ts = ts or dt.datetime.now(dt.UTC)
    return ts.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def frame_of(msg: Msg) -> tuple[int, Frame]:
    meta = msg.metadata
    return meta.sequence.stream, notification_frame(
        meta.sequence.stream, msg.data, iso(meta.timestamp)
    )


class Dispatcher:
    """Ordered consumer on the whole stream (it re-creates itself after NATS restarts,
    continuing from the last sequence it saw) plus the per-user event subscription."""

    def __init__(self, bus: Bus, hub: Hub) -> None:
        self._bus = bus
        self._hub = hub
        self._subs: list[Subscription] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._subscribe(), name="hub-dispatch")

    async def _subscribe(self) -> None:
        """Until it works: a pod whose subscribe failed once must not stay deaf."""
        while True:
            await self._bus.ready.wait()
            try:
                await self._subscribe_once()
                log.info("hub consuming %s", STREAM)
                return
            except Exception as exc:
                log.warning("hub: subscribing to %s failed (%s); retrying", STREAM, exc)
                await asyncio.sleep(1)

    async def _subscribe_once(self) -> None:
        js, nc = self._bus.js, self._bus.nc
        assert nc is not None
        live = await js.subscribe(
            "notify.>",
            stream=STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
            # A lost consumer (NATS restarted) is noticed after two missed heartbeats and
            # re-created from the last sequence seen: 1 s, not the default 5 s.
            idle_heartbeat=1.0,
            cb=self._on_notification,
            pending_msgs_limit=-1,
            pending_bytes_limit=-1,
        )
        self._subs.append(live)
        self._subs.append(await nc.subscribe("notify-events.>", cb=self._on_event))

    async def _on_notification(self, msg: Msg) -> None:
        tenant, kind, name = subjects.parse_subject(msg.subject)
        seq, frame = frame_of(msg)
        self._hub.deliver(tenant, kind, name, seq, frame)

    async def _on_event(self, msg: Msg) -> None:
        _, tenant, user = msg.subject.split(".", 2)
        self._hub.broadcast_user(subjects.untoken(tenant), subjects.untoken(user), Frame(msg.data))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
