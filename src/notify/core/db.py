"""Database engine, session config and migrations (Alembic), for PostgreSQL and SQLite alike."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
from advanced_alchemy.base import orm_registry
from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    SQLAlchemyAsyncConfig,
)
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from notify.core.config import Settings

metadata = orm_registry.metadata


def migrations_dir() -> Path:
    """`migrations/` of a source checkout, or the copy packaged into the wheel."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[3] / "migrations", here.parents[1] / "_migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError("migrations directory not found")


def _ensure_sqlite_dir(settings: Settings) -> None:
    db_path = settings.sqlalchemy_url.split(":///", 1)[-1]
    if settings.is_sqlite and db_path and db_path != ":memory:":
        Path(db_path).parent.mkdir(parents=True, exist_ok=True)


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.sqlalchemy_url
    kwargs: dict[str, Any] = {}
    _ensure_sqlite_dir(settings)
    if not settings.is_sqlite:
        kwargs.update(pool_size=settings.db_pool_size, max_overflow=settings.db_pool_size)
    engine = create_async_engine(
        url, json_serializer=_json_dumps, json_deserializer=msgspec.json.decode, **kwargs
    )
    if settings.is_sqlite:
        _configure_sqlite(engine)
    return engine


def _json_dumps(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL, foreign keys, and BEGIN IMMEDIATE so concurrent writers wait instead of failing."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlalchemy_config(engine: AsyncEngine) -> SQLAlchemyAsyncConfig:
    """The advanced-alchemy plugin config; services commit explicitly (201 after commit)."""
    return SQLAlchemyAsyncConfig(
        engine_instance=engine,
        session_config=AsyncSessionConfig(expire_on_commit=False),
        session_dependency_key="db_session",
        create_all=False,
    )


def _alembic_config(settings: Settings) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["sqlalchemy_url"] = settings.sqlalchemy_url
    return cfg


def upgrade(settings: Settings) -> None:
    """Apply every migration (idempotent). Runs its own event loop: call from sync code."""
    _ensure_sqlite_dir(settings)
    command.upgrade(_alembic_config(settings), "head")


def head_revision(settings: Settings) -> str | None:
    return ScriptDirectory.from_config(_alembic_config(settings)).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


def check_migrated(settings: Settings) -> str | None:
    """None when the database is at head; otherwise a one-line reason."""

    async def _check() -> str | None:
        engine = create_engine(settings)
        try:
            current = await current_revision(engine)
        finally:
            await engine.dispose()
        head = head_revision(settings)
        if current == head:
            return None
        return (
            f"database is not migrated (at {current or 'nothing'}, head is {head}); "
            "run `notify migrate`"
        )

    return asyncio.run(_check())
