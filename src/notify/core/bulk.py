"""Writing staged rows: per table, or on PostgreSQL all tables in one statement."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Sequence, Table, TextClause, bindparam, insert, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

Staged = list[tuple[Table, list[dict[str, Any]]]]
Shape = tuple[tuple[Table, tuple[str, ...], int], ...]

# Beyond this many values a statement's text and its preparation cost more than round trips.
MAX_VALUES = 1000
_quote = postgresql.dialect().identifier_preparer  # type: ignore[no-untyped-call]


async def insert_all(session: AsyncSession, staged: Staged, *, alone: bool = False) -> None:
    """Insert `staged` (parents first). On PostgreSQL a small write is one statement of
    data-modifying WITH parts: one round trip where a create took one per table (four).
    `alone`: the caller commits right after and nothing else, so when the session holds
    no transaction and no pending ORM changes the statement may commit by itself."""
    shape = one_statement(staged) if session.get_bind().dialect.name == "postgresql" else None
    if shape is None:
        for table, rows in staged:
            await session.execute(insert(table), rows)
        return
    values = {
        f"w{i}_{j}_{column}": value
        for i, (_, rows) in enumerate(staged)
        for j, row in enumerate(rows)
        for column, value in row.items()
    }
    if not alone or session.in_transaction() or session.new or session.dirty or session.deleted:
        await session.execute(_statement(shape), values)
        return
    # Nothing before it or after it: the statement is atomic alone, and runs without the
    # BEGIN and COMMIT round trips (the caller's commit then has nothing to send).
    connection = await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    await connection.execute(_statement(shape), values)


def one_statement(staged: Staged) -> Shape | None:
    """The shape of the one statement for `staged`, or None where per table is better."""
    if len(staged) < 2:
        return None
    shape, total = [], 0
    for table, rows in staged:
        columns = rows[0].keys()
        if any(row.keys() != columns for row in rows) or not _complete(table, columns):
            return None
        total += len(rows) * len(columns)
        shape.append((table, tuple(columns), len(rows)))
    return tuple(shape) if total <= MAX_VALUES else None


def _complete(table: Table, columns: Any) -> bool:
    """No column left out relies on a default computed in Python (text() would skip it)."""
    return all(
        c.name in columns or c.default is None or c.default.is_sequence or c.default.is_sentinel
        for c in table.columns
    )


@functools.lru_cache(maxsize=256)
def _statement(shape: Shape) -> TextClause:
    """Cached per shape: SQLAlchemy compiles no data-modifying CTE from its cache, text()
    it does, and asyncpg then reuses its prepared statement."""
    parts, binds = [], []
    for i, (table, columns, count) in enumerate(shape):
        sequences = [
            (c.name, c.default)
            for c in table.columns
            if c.name not in columns and isinstance(c.default, Sequence)
        ]
        names = [_quote.quote(name) for name, _ in sequences] + [_quote.quote(c) for c in columns]
        nextvals = [f"nextval('{_quote.format_sequence(seq)}')" for _, seq in sequences]
        rows = []
        for j in range(count):
            rows.append("(" + ", ".join([*nextvals, *(f":w{i}_{j}_{c}" for c in columns)]) + ")")
            binds += [bindparam(f"w{i}_{j}_{c}", type_=table.c[c].type) for c in columns]
        # Only identifiers from the metadata and bind names: no value is ever spliced in.
        parts.append(
            f"w{i} AS (INSERT INTO {_quote.format_table(table)} ({', '.join(names)}) "  # noqa: S608
            f"VALUES {', '.join(rows)})"
        )
    return text(f"WITH {', '.join(parts)} SELECT 1").bindparams(*binds)
