"""The worker and scheduler processes: Taskiq on NATS JetStream, their tasks and schedule."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import logging
from collections.abc import AsyncGenerator
from typing import Any
from uuid import UUID

import msgspec
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig
from sqlalchemy.ext.asyncio import async_sessionmaker
from taskiq import AckableMessage, TaskiqScheduler
from taskiq.api import run_receiver_task, run_scheduler_task
from taskiq.schedule_sources import LabelScheduleSource
from taskiq_nats import PullBasedJetStreamBroker

from notify.core import bus, db
from notify.core.config import Settings
from notify.core.models import utcnow
from notify.delivery import tasks
from notify.delivery.channels import Channel, DisabledChannel
from notify.delivery.pipeline import Deliverer

log = logging.getLogger("notify.worker")
DURABLE = "notify-worker"
DIGEST_TICK = "notify.digest_tick"
CLEANUP = "notify.cleanup"


def channels(settings: Settings) -> list[Channel]:
    """Every channel a delivery may name; one without configuration skips, saying why."""
    from notify.push.sender import WebPushChannel

    push: Channel = (
        WebPushChannel(settings)
        if settings.push_enabled
        else DisabledChannel("push", "Web Push is disabled: no VAPID keys on the worker")
    )
    return [push]


class Jobs:
    """The task bodies. Only a worker runs them; the scheduler only names them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = db.create_engine(settings)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.deliverer = Deliverer(settings, self.engine, channels(settings))

    async def deliver(self, notification_id: str) -> int:
        return await self.deliverer.deliver(UUID(notification_id))

    async def digest_tick(self) -> dict[str, int]:
        from notify.digest.tick import tick

        result = await tick(self.sessions, utcnow())
        if result.due:
            log.info("digest tick: %s", result)
        return msgspec.structs.asdict(result)

    async def cleanup(self) -> dict[str, int]:
        from notify.ops.cleanup import cleanup

        deleted = await cleanup(self.sessions, self.settings.retention_days)
        log.info("retention cleanup: %d notifications deleted", deleted)
        return {"deleted": deleted}

    async def close(self) -> None:
        """After `deliverer.close()`, which lets the sends in flight finish first."""
        await self.engine.dispose()


class Broker(PullBasedJetStreamBroker):
    """taskiq-nats's pull broker, surviving the plain TimeoutError nats-py's `fetch` raises
    on an idle queue (upstream catches only nats' own; the receiver would restart)."""

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        while True:
            try:
                batch = await self.consumer.fetch(
                    batch=self.pull_consume_batch, timeout=self.pull_consume_timeout
                )
            except (NatsTimeoutError, TimeoutError):
                continue
            for message in batch:
                yield AckableMessage(data=message.data, ack=message.ack)


def build_broker(settings: Settings, jobs: Jobs | None = None) -> PullBasedJetStreamBroker:
    """The Taskiq broker on the NOTIFY_TASKS work queue, our tasks and their schedule."""
    broker = Broker(
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
        name=f"notify-{settings.pod_id}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
    )
    hour, minute = settings.cleanup_at.split(":")
    broker.register_task(_body(jobs, "deliver"), task_name=tasks.DELIVER)
    broker.register_task(
        _body(jobs, "digest_tick"), task_name=DIGEST_TICK, schedule=[{"cron": "* * * * *"}]
    )
    broker.register_task(
        _body(jobs, "cleanup"),
        task_name=CLEANUP,
        schedule=[{"cron": f"{int(minute)} {int(hour)} * * *"}],
    )
    return broker


def _body(jobs: Jobs | None, name: str) -> Any:
    """A plain function per task (Taskiq renames what it registers; methods cannot be)."""

    async def run(*args: Any) -> Any:
        if jobs is None:
            raise RuntimeError(f"{name} runs in `notify worker`")
        return await getattr(jobs, name)(*args)

    run.__name__ = name
    return run


async def _start(broker: PullBasedJetStreamBroker, settings: Settings) -> None:
    delay = 0.5
    while True:
        try:
            await broker.startup()
            return
        except Exception as exc:  # NATS not there yet: keep trying, as API pods do
            log.warning("NATS at %s: %s; retrying", settings.nats_url, exc or type(exc))
            with contextlib.suppress(Exception):
                await broker.client.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def tune_gc() -> None:
    """A digest tick allocates millions of short-lived objects: collect less often, and
    never walk what start-up left behind (a third faster at 100,000 users)."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then finish the sends in flight and record them."""
    tune_gc()
    jobs = Jobs(settings)
    broker = build_broker(settings, jobs)
    await _start(broker, settings)
    receiver = asyncio.create_task(run_receiver_task(broker, max_async_tasks=50))
    sweeper = asyncio.create_task(jobs.deliverer.sweep_forever())
    log.info("worker %s: delivering (push %s)", settings.pod_id, settings.push_enabled)
    try:
        await stop.wait()
    finally:
        await jobs.deliverer.close()
        for task in (receiver, sweeper):
            task.cancel()
        await asyncio.gather(receiver, sweeper, return_exceptions=True)
        with contextlib.suppress(Exception):
            await broker.shutdown()
        await jobs.close()


async def run_scheduler(settings: Settings, stop: asyncio.Event) -> None:
    """Kick the digest tick every minute and the cleanup daily; workers run them. Several
    schedulers may run: the database makes each digest and each deletion happen once."""
    broker = build_broker(settings)
    await _start(broker, settings)
    scheduler = TaskiqScheduler(broker, sources=[LabelScheduleSource(broker)])
    loop = asyncio.create_task(run_scheduler_task(scheduler, interval=dt.timedelta(minutes=1)))
    log.info(
        "scheduler %s: digest tick every minute, cleanup at %s UTC",
        settings.pod_id,
        settings.cleanup_at,
    )
    try:
        await stop.wait()
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        with contextlib.suppress(Exception):
            await broker.shutdown()
