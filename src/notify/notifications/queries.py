"""The inbox queries: a user's own rows unioned with the tenant's, with per-user read state."""

from __future__ import annotations

import base64
import datetime as dt
import functools
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import (
    Integer,
    Select,
    and_,
    bindparam,
    cast,
    func,
    literal,
    null,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from notify.core.auth import Principal
from notify.notifications.models import Notification, NotificationRead
from notify.notifications.schemas import NotificationOut, Status

N = Notification.__table__
R = NotificationRead.__table__


class InboxFilter(msgspec.Struct, kw_only=True):
    status: str | None = None
    notification_type: str | None = None
    priority: str | None = None


class CursorError(ValueError):
    """The cursor is not one this API issued."""


def encode_cursor(created_at: dt.datetime, id_: UUID) -> str:
    raw = msgspec.json.encode([created_at.isoformat(), str(id_)])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, id_ = msgspec.json.decode(raw, type=tuple[str, str])
        at = dt.datetime.fromisoformat(created)
        if at.tzinfo is None:
            raise ValueError("naive datetime")
        return at.astimezone(dt.UTC), UUID(id_)
    except (ValueError, OverflowError, msgspec.DecodeError, TypeError):
        raise CursorError("cursor is not valid; pass next_cursor from the previous page") from None


# Statements are built once per shape, with bind parameters: building SQLAlchemy constructs
# per request cost a third of a list request's CPU (py-spy).
TENANT = bindparam("tenant_id", type_=N.c.tenant_id.type)
USER = bindparam("user_id", type_=N.c.user_id.type)
READS = N.outerjoin(R, and_(R.c.notification_id == N.c.id, R.c.user_id == USER))
Query = tuple[Any, dict[str, Any]]


def _own(status: str | None) -> Select[Any]:
    stmt = select(*N.c, cast(null(), R.c.read_at.type).label("my_read_at")).where(
        N.c.tenant_id == TENANT, N.c.user_id == USER
    )
    return stmt.where(N.c.status == status) if status else stmt


def _shared(status: str | None) -> Select[Any]:
    stmt = (
        select(*N.c, R.c.read_at.label("my_read_at"))
        .select_from(READS)
        .where(N.c.tenant_id == TENANT, N.c.audience == "tenant", R.c.deleted_at.is_(None))
    )
    if status == "unread":
        stmt = stmt.where(R.c.read_at.is_(None))
    elif status == "read":
        stmt = stmt.where(R.c.read_at.is_not(None))
    return stmt


def _filtered(stmt: Select[Any], by_type: bool, by_priority: bool, paged: bool) -> Any:
    if by_type:
        stmt = stmt.where(N.c.notification_type == bindparam("notification_type"))
    if by_priority:
        stmt = stmt.where(N.c.priority == bindparam("priority"))
    if paged:
        after = tuple_(
            bindparam("after_created", type_=N.c.created_at.type),
            bindparam("after_id", type_=N.c.id.type),
        )
        stmt = stmt.where(tuple_(N.c.created_at, N.c.id) < after)
    # Each half walks its own index in order and stops at `limit`; the union merges them.
    ordered = stmt.order_by(N.c.created_at.desc(), N.c.id.desc())
    return select(ordered.limit(bindparam("limit", type_=Integer)).subquery())


@functools.cache
def _inbox(status: str | None, by_type: bool, by_priority: bool, paged: bool) -> Any:
    both = union_all(
        _filtered(_own(status), by_type, by_priority, paged),
        _filtered(_shared(status), by_type, by_priority, paged),
    ).subquery()
    newest_first = (both.c.created_at.desc(), both.c.id.desc())
    return select(both).order_by(*newest_first).limit(bindparam("limit", type_=Integer))


def inbox_page(
    p: Principal, f: InboxFilter, after: tuple[dt.datetime, UUID] | None, limit: int
) -> Query:
    params: dict[str, Any] = {
        "tenant_id": p.tenant_id,
        "user_id": p.sub,
        "limit": limit,
        "notification_type": f.notification_type,
        "priority": f.priority,
    }
    if after is not None:
        params["after_created"], params["after_id"] = after
    stmt = _inbox(f.status, bool(f.notification_type), bool(f.priority), after is not None)
    return stmt, params


def _count_unread() -> Any:
    own = (
        select(func.count())
        .select_from(N)
        .where(N.c.tenant_id == TENANT, N.c.user_id == USER, N.c.status == "unread")
    )
    shared = (
        select(func.count())
        .select_from(READS)
        .where(
            N.c.tenant_id == TENANT,
            N.c.audience == "tenant",
            R.c.read_at.is_(None),
            R.c.deleted_at.is_(None),
        )
    )
    return select(own.scalar_subquery() + shared.scalar_subquery())


COUNT_UNREAD = _count_unread()


def unread_count(p: Principal) -> Query:
    return COUNT_UNREAD, {"tenant_id": p.tenant_id, "user_id": p.sub}


@functools.cache
def _visible(privileged: bool, member: bool, any_tenant: bool) -> Any:
    access: list[ColumnElement[bool]] = [N.c.user_id == USER, N.c.audience == "tenant"]
    if privileged:
        access.append(literal(True))
    elif member:
        access.append(
            and_(N.c.audience == "channel", N.c.channel.in_(bindparam("channels", expanding=True)))
        )
    stmt = (
        select(*N.c, R.c.read_at.label("my_read_at"), R.c.deleted_at.label("my_deleted_at"))
        .select_from(READS)
        .where(N.c.id == bindparam("id", type_=N.c.id.type), or_(*access))
    )
    return stmt if any_tenant else stmt.where(N.c.tenant_id == TENANT)


def visible_item(p: Principal, notification_id: UUID) -> Query:
    """One notification the caller may see, with the caller's read state; else no row."""
    stmt = _visible(p.is_privileged, bool(p.channels), p.any_tenant)
    return stmt, {
        "id": notification_id,
        "tenant_id": p.tenant_id,
        "user_id": p.sub,
        "channels": sorted(p.channels),
    }


def to_out(row: Any) -> NotificationOut:
    """A row of the queries above as the caller sees it."""
    m = row._mapping
    shared = m["audience"] != "user"
    read_at = m["my_read_at"] if shared else m["read_at"]
    status: Status = ("read" if read_at is not None else "unread") if shared else m["status"]
    return NotificationOut(
        id=m["id"],
        tenant_id=m["tenant_id"],
        user_id=m["user_id"],
        title=m["title"],
        message=m["message"],
        notification_type=m["notification_type"],
        priority=m["priority"],
        channels=m["channels"],
        action_url=m["action_url"],
        metadata=m["metadata"],
        status=status,
        read_at=read_at,
        created_at=m["created_at"],
    )
