"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

import notify.core.tables  # noqa: F401  (every model on the metadata)
from notify.core import db
from tests.harness import backends, database, make_settings


@pytest.mark.parametrize("backend", backends())
def test_migrations_match_the_models(backend: str, tmp_path: Path, nats_url: str) -> None:
    with database(backend, tmp_path) as url:
        settings = make_settings(url, nats_url, tmp_path)
        db.upgrade(settings)
        engine = db.create_engine(settings)

        def diff(conn: Connection) -> list[object]:
            context = MigrationContext.configure(conn, opts={"compare_type": False})
            return list(compare_metadata(context, db.metadata))

        async def compare() -> list[object]:
            try:
                async with engine.connect() as conn:
                    return await conn.run_sync(diff)
            finally:
                await engine.dispose()

        assert asyncio.run(compare()) == []
