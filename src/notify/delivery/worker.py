"""`notify worker`: Taskiq on NATS JetStream runs the delivery tasks; a sweeper runs retries."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from uuid import UUID

from nats.js.api import AckPolicy, ConsumerConfig
from taskiq.api import run_receiver_task
from taskiq_nats import PullBasedJetStreamBroker

from notify.core import bus, db
from notify.core.config import Settings
from notify.delivery import tasks
from notify.delivery.channels import Channel, DisabledChannel
from notify.delivery.pipeline import Deliverer

log = logging.getLogger("notify.worker")
DURABLE = "notify-worker"


def channels(settings: Settings) -> list[Channel]:
    """Every channel a delivery may name; one without configuration skips, saying why."""
    from notify.push.sender import WebPushChannel

    push: Channel = (
        WebPushChannel(settings)
        if settings.push_enabled
        else DisabledChannel("push", "Web Push is disabled: no VAPID keys on the worker")
    )
    return [push]


def build_broker(settings: Settings, deliverer: Deliverer) -> PullBasedJetStreamBroker:
    """The Taskiq broker on the NOTIFY_TASKS work queue, with our tasks registered."""
    broker = PullBasedJetStreamBroker(
        servers=settings.nats_servers,
        subject=bus.TASKS_SUBJECT,
        stream_name=bus.TASKS_STREAM,
        durable=DURABLE,
        stream_config=bus.tasks_stream_config(),
        consumer_config=ConsumerConfig(
            durable_name=DURABLE,
            ack_policy=AckPolicy.EXPLICIT,
            # A killed worker's task comes back after this; its claimed rows lapse alike.
            ack_wait=settings.delivery_lease,
        ),
        pull_consume_batch=20,
        pull_consume_timeout=1.0,
        name=f"notify-worker-{settings.pod_id}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
    )

    async def deliver(notification_id: str) -> int:
        return await deliverer.deliver(UUID(notification_id))

    broker.register_task(deliver, task_name=tasks.DELIVER)
    return broker


async def _start(broker: PullBasedJetStreamBroker, settings: Settings) -> None:
    delay = 0.5
    while True:
        try:
            await broker.startup()
            return
        except Exception as exc:  # NATS not there yet: keep trying, as API pods do
            log.warning("worker: NATS at %s: %s; retrying", settings.nats_url, exc or type(exc))
            with contextlib.suppress(Exception):
                await broker.client.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then finish the sends in flight and record them."""
    engine = db.create_engine(settings)
    deliverer = Deliverer(settings, engine, channels(settings))
    broker = build_broker(settings, deliverer)
    await _start(broker, settings)
    receiver = asyncio.create_task(run_receiver_task(broker, max_async_tasks=50))
    sweeper = asyncio.create_task(deliverer.sweep_forever())
    log.info("worker %s: delivering (push %s)", settings.pod_id, settings.push_enabled)
    try:
        await stop.wait()
    finally:
        await deliverer.close()
        for task in (receiver, sweeper):
            task.cancel()
        await asyncio.gather(receiver, sweeper, return_exceptions=True)
        with contextlib.suppress(Exception):
            await broker.shutdown()
        await engine.dispose()
