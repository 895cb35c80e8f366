"""create_app(settings) -> Litestar: wires settings, database, bus, auth and the domains."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.middleware.base import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from sqlalchemy.ext.asyncio import async_sessionmaker

import notify
from notify.core import db, logs
from notify.core.auth import JWTMiddleware
from notify.core.bus import Bus
from notify.core.config import Settings, load_settings
from notify.core.errors import exception_handlers
from notify.digest.controllers import DigestController
from notify.hub.dispatch import Dispatcher
from notify.hub.hub import Hub
from notify.hub.presence import Presence
from notify.hub.status import ws_status
from notify.notifications.controllers import BroadcastController, NotificationController
from notify.notifications.ingest import IngestConsumer
from notify.notifications.outbox import OutboxRelay
from notify.ops.docs import docs
from notify.ops.health import health
from notify.push.controllers import PushController, service_worker

MAX_BODY_BYTES = 64 * 1024
PUBLIC_PATHS = [
    "^/health$",
    "^/schema",
    "^/docs",
    "^/sw.js$",
    "^/api/v1/push/vapid-public-key$",
    "^/ws/notify",
]


# Runs beside the API until the event is set (`notify dev` runs the worker this way).
Background = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def create_app(settings: Settings | None = None, background: Sequence[Background] = ()) -> Litestar:
    settings = settings or load_settings()
    logs.configure(settings)
    engine = db.create_engine(settings)
    bus = Bus(settings)
    relay = OutboxRelay(engine, bus)
    ingest = IngestConsumer(settings, engine, bus, relay)
    hub = Hub(settings.ws_max_per_user)
    dispatcher = Dispatcher(bus, hub)
    presence = Presence(engine, settings.pod_id, hub, settings.ws_heartbeat)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await bus.start()
        relay.start()
        relay.wake()  # publish whatever an earlier run left in the outbox
        ingest.start()
        dispatcher.start()
        presence.start()
        # What start-up made lives as long as the process: no full collection walks it
        # again (with 1,000 sockets one took 75 ms, every socket's frame waiting on it).
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        extra = [asyncio.create_task(run(stop)) for run in background]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*extra, return_exceptions=True)
            hub.close_all(1001, "server going away")
            await presence.stop()
            await dispatcher.stop()
            await ingest.stop()
            await relay.stop()
            await bus.close()
            await engine.dispose()

    return Litestar(
        route_handlers=[
            NotificationController,
            BroadcastController,
            PushController,
            DigestController,
            service_worker,
            health,
            docs,
            ws_status,
        ],
        state=State(
            {
                "settings": settings,
                "engine": engine,
                "bus": bus,
                "outbox": relay,
                "hub": hub,
                "presence": presence,
                "sessions": async_sessionmaker(engine, expire_on_commit=False),
            }
        ),
        plugins=[SQLAlchemyPlugin(config=db.sqlalchemy_config(engine))],
        middleware=[DefineMiddleware(JWTMiddleware, exclude=PUBLIC_PATHS)],
        exception_handlers=exception_handlers,
        lifespan=[lifespan],
        request_max_body_size=MAX_BODY_BYTES,
        cors_config=CORSConfig(
            allow_origins=["*"], allow_headers=["Authorization", "Content-Type", "Idempotency-Key"]
        ),
        openapi_config=OpenAPIConfig(
            title="notify",
            version=notify.__version__,
            path="/schema",
            render_plugins=[ScalarRenderPlugin(path="/")],
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
                }
            ),
            security=[{"BearerToken": []}],
        ),
    )
