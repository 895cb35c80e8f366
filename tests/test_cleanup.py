"""`notify cleanup`: what is over age goes (with its reads and deliveries), nothing else."""

from __future__ import annotations

import datetime as dt
from typing import Any
from uuid import UUID

import httpx
from sqlalchemy import func, select, update

from notify.core import db
from notify.core.models import utcnow
from notify.notifications.models import Notification, NotificationDelivery, NotificationRead
from tests.harness import Server
from tests.test_digest import cli


async def _age(server: Server, ids: list[str], days: float) -> None:
    engine = db.create_engine(server.settings)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                update(Notification)
                .where(Notification.id.in_([UUID(i) for i in ids]))
                .values(created_at=utcnow() - dt.timedelta(days=days))
            )
    finally:
        await engine.dispose()


async def _count(server: Server, model: Any, ids: list[str]) -> int:
    engine = db.create_engine(server.settings)
    column = model.id if model is Notification else model.notification_id
    try:
        async with engine.connect() as conn:
            stmt = select(func.count()).where(column.in_([UUID(i) for i in ids]))
            return int((await conn.execute(stmt)).scalar_one())
    finally:
        await engine.dispose()


async def test_cleanup_deletes_exactly_what_is_over_age(
    server: Server, alice: httpx.AsyncClient, service: httpx.AsyncClient
) -> None:
    made = []
    for title in ("old", "older", "young", "almost"):
        r = await alice.post("/api/v1/notifications", json={"title": title, "message": "m"})
        made.append(r.json()["id"])
    r = await service.post(
        "/internal/broadcast",
        json={"title": "old shared", "message": "m", "broadcast_to_tenant": True},
    )
    shared = r.json()["notification_ids"][0]
    assert (await alice.post(f"/api/v1/notifications/{shared}/read")).status_code == 200
    old = [made[0], made[1], shared]
    await _age(server, old, 91)
    await _age(server, [made[3]], 89)
    assert await _count(server, NotificationRead, [shared]) == 1
    assert await _count(server, NotificationDelivery, old) > 0

    assert cli(server, "cleanup") == {"deleted": 3}

    for nid in old:
        assert (await alice.get(f"/api/v1/notifications/{nid}")).status_code == 404
    for nid in (made[2], made[3]):
        assert (await alice.get(f"/api/v1/notifications/{nid}")).status_code == 200
    assert await _count(server, Notification, old) == 0
    assert await _count(server, NotificationRead, [shared]) == 0
    assert await _count(server, NotificationDelivery, old) == 0
    assert await _count(server, NotificationDelivery, [made[2], made[3]]) > 0
    # A shorter horizon on the command line.
    assert cli(server, "cleanup", "--older-than-days", "88") == {"deleted": 1}
    assert (await alice.get(f"/api/v1/notifications/{made[3]}")).status_code == 404
