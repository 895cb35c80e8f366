"""The inbox queries: a user's own rows unioned with the tenant's, with per-user read state."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import Select, and_, cast, func, literal, null, or_, select, tuple_, union_all
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
        return dt.datetime.fromisoformat(created), UUID(id_)
    except (ValueError, msgspec.DecodeError, TypeError):
        raise CursorError("cursor is not valid; pass next_cursor from the previous page") from None


def _reads_join(user_id: str) -> Any:
    return N.outerjoin(R, and_(R.c.notification_id == N.c.id, R.c.user_id == user_id))


def _own(p: Principal, f: InboxFilter) -> Select[Any]:
    stmt = select(*N.c, cast(null(), R.c.read_at.type).label("my_read_at")).where(
        N.c.tenant_id == p.tenant_id, N.c.user_id == p.sub
    )
    if f.status:
        stmt = stmt.where(N.c.status == f.status)
    return stmt


def _shared(p: Principal, f: InboxFilter) -> Select[Any]:
    stmt = (
        select(*N.c, R.c.read_at.label("my_read_at"))
        .select_from(_reads_join(p.sub))
        .where(N.c.tenant_id == p.tenant_id, N.c.audience == "tenant", R.c.deleted_at.is_(None))
    )
    if f.status == "unread":
        stmt = stmt.where(R.c.read_at.is_(None))
    elif f.status == "read":
        stmt = stmt.where(R.c.read_at.is_not(None))
    return stmt


def _common(
    stmt: Select[Any], f: InboxFilter, after: tuple[dt.datetime, UUID] | None, limit: int
) -> Any:
    if f.notification_type:
        stmt = stmt.where(N.c.notification_type == f.notification_type)
    if f.priority:
        stmt = stmt.where(N.c.priority == f.priority)
    if after is not None:
        created, id_ = after
        stmt = stmt.where(
            tuple_(N.c.created_at, N.c.id)
            < tuple_(literal(created, N.c.created_at.type), literal(id_, N.c.id.type))
        )
    # Each half walks its own index in order and stops at `limit`; the union merges them.
    return select(stmt.order_by(N.c.created_at.desc(), N.c.id.desc()).limit(limit).subquery())


def inbox_page(
    p: Principal, f: InboxFilter, after: tuple[dt.datetime, UUID] | None, limit: int
) -> Any:
    both = union_all(
        _common(_own(p, f), f, after, limit), _common(_shared(p, f), f, after, limit)
    ).subquery()
    return select(both).order_by(both.c.created_at.desc(), both.c.id.desc()).limit(limit)


def unread_count(p: Principal) -> Any:
    own = (
        select(func.count())
        .select_from(N)
        .where(N.c.tenant_id == p.tenant_id, N.c.user_id == p.sub, N.c.status == "unread")
    )
    shared = (
        select(func.count())
        .select_from(_reads_join(p.sub))
        .where(
            N.c.tenant_id == p.tenant_id,
            N.c.audience == "tenant",
            R.c.read_at.is_(None),
            R.c.deleted_at.is_(None),
        )
    )
    return select(own.scalar_subquery() + shared.scalar_subquery())


def visible_item(p: Principal, notification_id: UUID) -> Any:
    """One notification the caller may see, with the caller's read state; else no row."""
    access: list[ColumnElement[bool]] = [N.c.user_id == p.sub, N.c.audience == "tenant"]
    if p.is_privileged:
        access.append(literal(True))
    elif p.channels:
        access.append(and_(N.c.audience == "channel", N.c.channel.in_(sorted(p.channels))))
    stmt = (
        select(*N.c, R.c.read_at.label("my_read_at"), R.c.deleted_at.label("my_deleted_at"))
        .select_from(_reads_join(p.sub))
        .where(N.c.id == notification_id, or_(*access))
    )
    if not p.any_tenant:
        stmt = stmt.where(N.c.tenant_id == p.tenant_id)
    return stmt


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
