"""Keeps `websocket_connections` true: batched writes, a heartbeat, and dead pods' rows removed."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from typing import Any, cast
from uuid import UUID

import msgspec
from sqlalchemy import Table, delete, insert, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from notify.core.logs import one_line
from notify.core.models import utcnow
from notify.hub.hub import Connection, Hub
from notify.hub.models import WebSocketConnection

log = logging.getLogger("notify.hub.presence")
T = cast(Table, WebSocketConnection.__table__)
_JSON = msgspec.json.Encoder()
COALESCE = 0.05
_PG_INSERT = text(
    "INSERT INTO websocket_connections"
    " (id, tenant_id, user_id, pod_id, channels, last_seen_at, created_at, updated_at)"
    " SELECT i, t, u, p, c::jsonb, s, s, s FROM unnest("
    "CAST(:ids AS uuid[]), CAST(:tenants AS text[]), CAST(:users AS text[]),"
    " CAST(:pods AS text[]), CAST(:channels AS text[]), CAST(:seen AS timestamptz[])"
    ") AS r(i, t, u, p, c, s)"
)


class Presence:
    """Connects and disconnects are written in batches, off the socket's path."""

    def __init__(self, engine: AsyncEngine, pod_id: str, hub: Hub, heartbeat: float = 10.0) -> None:
        self._engine = engine
        self._hub = hub
        self._pod = pod_id
        self._heartbeat = heartbeat
        self._added: dict[UUID, dict[str, Any]] = {}
        self._removed: set[UUID] = set()
        self._changed: dict[UUID, list[str]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def connected(self, conn: Connection) -> None:
        self._added[UUID(conn.id)] = self._row(conn)
        self._wake.set()

    def _row(self, conn: Connection) -> dict[str, Any]:
        now, p = utcnow(), conn.principal
        return {
            "id": UUID(conn.id),
            "tenant_id": p.tenant_id,
            "user_id": p.sub,
            "pod_id": self._pod,
            "channels": sorted(conn.channels),
            "last_seen_at": now,
            "created_at": now,
            "updated_at": now,
        }

    def channels_changed(self, conn: Connection) -> None:
        key = UUID(conn.id)
        if key in self._added:
            self._added[key]["channels"] = sorted(conn.channels)
        else:
            self._changed[key] = sorted(conn.channels)
        self._wake.set()

    def disconnected(self, conn: Connection) -> None:
        key = UUID(conn.id)
        self._changed.pop(key, None)
        if self._added.pop(key, None) is None:  # never written: nothing to delete
            self._removed.add(key)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hub-presence")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.5)
            await asyncio.sleep(COALESCE)  # a connect storm: one write per batch, not per few
            self._wake.clear()
            try:
                await self.flush()
                if loop.time() >= next_beat:
                    await self._beat()
                    next_beat = loop.time() + self._heartbeat
            except Exception as exc:  # the database may be down: keep the batch, retry
                log.warning("presence: %s", one_line(exc))
                await asyncio.sleep(1)

    async def flush(self) -> None:
        added, removed, changed = self._added, self._removed, self._changed
        if not (added or removed or changed):
            return
        self._added, self._removed, self._changed = {}, set(), {}
        try:
            async with self._engine.begin() as conn:
                if added:
                    await self._insert(conn, list(added.values()))
                if removed:
                    await conn.execute(delete(T).where(T.c.id.in_(removed)))
                for key, channels in changed.items():
                    await conn.execute(update(T).where(T.c.id == key).values(channels=channels))
        except Exception:
            self._added = added | self._added
            self._removed |= removed
            self._changed = changed | self._changed
            raise

    async def _insert(self, conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
        """PostgreSQL: one statement with a column of arrays, several times cheaper than
        executemany when thousands of sockets connect at once."""
        if conn.dialect.name != "postgresql":
            await conn.execute(insert(T), rows)
            return
        await conn.execute(
            _PG_INSERT,
            {
                "ids": [r["id"] for r in rows],
                "tenants": [r["tenant_id"] for r in rows],
                "users": [r["user_id"] for r in rows],
                "pods": [r["pod_id"] for r in rows],
                "channels": [_JSON.encode(r["channels"]).decode() for r in rows],
                "seen": [r["last_seen_at"] for r in rows],
            },
        )

    async def _beat(self) -> None:
        """Refresh our rows; remove rows of pods that stopped refreshing (crashed). If ours
        were removed while we could not reach the database, write them again."""
        now = utcnow()
        stale = now - dt.timedelta(seconds=self._heartbeat * 3)
        live = [c for c in self._hub.connections.values() if UUID(c.id) not in self._added]
        async with self._engine.begin() as conn:
            seen = await conn.execute(
                update(T).where(T.c.pod_id == self._pod).values(last_seen_at=now)
            )
            if live and seen.rowcount < len(live):
                log.warning("presence: our rows were gone; writing %d again", len(live))
                await conn.execute(delete(T).where(T.c.pod_id == self._pod))
                await self._insert(conn, [self._row(c) for c in live])
            gone = await conn.execute(
                delete(T).where(T.c.pod_id != self._pod, T.c.last_seen_at < stale)
            )
        if gone.rowcount:
            log.info("presence: removed %d sockets of pods that stopped", gone.rowcount)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            async with self._engine.begin() as conn:
                await conn.execute(delete(T).where(T.c.pod_id == self._pod))
