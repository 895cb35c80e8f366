"""GET /health: checks the database and NATS for real; 503 names the failing one."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from litestar import Response, get
from litestar.datastructures import State
from litestar.openapi import ResponseSpec
from msgspec import Struct
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from notify.core.logs import one_line

log = logging.getLogger("notify.health")

Check = Literal["ok", "unavailable"]


class HealthChecks(Struct):
    database: Check
    nats: Check


class Health(Struct):
    status: Literal["ok", "unavailable"]
    checks: HealthChecks


async def _database(engine: AsyncEngine) -> str | None:
    try:
        async with asyncio.timeout(2), engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return one_line(exc)
    return None


@get(
    "/health",
    exclude_from_auth=True,
    tags=["ops"],
    summary="Liveness of the API and its dependencies",
    responses={503: ResponseSpec(Health, description="A dependency is down")},
)
async def health(state: State) -> Response[Health]:
    db_error, nats_error = await asyncio.gather(_database(state.engine), state.bus.check())
    for name, error in (("database", db_error), ("nats", nats_error)):
        if error:
            log.error("health: %s unavailable: %s", name, error)
    body = Health(
        status="ok" if not (db_error or nats_error) else "unavailable",
        checks=HealthChecks(
            database="unavailable" if db_error else "ok", nats="unavailable" if nats_error else "ok"
        ),
    )
    return Response(body, status_code=200 if body.status == "ok" else 503)
