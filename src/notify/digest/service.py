"""Digest settings (validated by the schedule), upcoming deliveries and the preview."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from sqlalchemy import select

from notify.core.auth import Principal
from notify.core.errors import Invalid
from notify.core.models import utcnow
from notify.core.service import Service
from notify.digest import content as digest
from notify.digest.models import DigestSubscription
from notify.digest.schedule import Schedule, ScheduleError, local_date, next_delivery, upcoming
from notify.digest.schemas import (
    FREQUENCIES,
    PRIORITIES,
    DigestContent,
    DigestSettings,
    DigestSettingsBody,
)
from notify.digest.tick import first_window, load_items, look_again_at, schedule_of

DEFAULTS = DigestSettingsBody(is_enabled=False)


def parse(body: DigestSettingsBody) -> Schedule:
    """The body's schedule; a bad field is a 422 naming it."""
    if body.frequency not in FREQUENCIES:
        raise Invalid("frequency", f"must be one of {', '.join(FREQUENCIES)}")
    if body.min_priority not in PRIORITIES:
        raise Invalid("min_priority", f"must be one of {', '.join(PRIORITIES)}")
    try:
        return Schedule.parse(
            body.delivery_time, body.timezone, body.frequency, body.weekday, body.exclude_weekends
        )
    except ScheduleError as exc:
        raise Invalid(exc.field, exc.message) from None


class DigestRepository(SQLAlchemyAsyncRepository[DigestSubscription]):
    model_type = DigestSubscription


class DigestService(Service[DigestSubscription, DigestRepository]):
    """Thin service over the repository; domain logic only."""

    repository_type = DigestRepository

    async def _row(self, p: Principal, lock: bool = False) -> DigestSubscription | None:
        stmt = select(DigestSubscription).where(
            DigestSubscription.tenant_id == p.tenant_id, DigestSubscription.user_id == p.sub
        )
        row: DigestSubscription | None = await self.db.scalar(
            stmt.with_for_update() if lock else stmt
        )
        return row

    async def settings(self, p: Principal) -> DigestSettings:
        return _out(await self._row(p))

    async def put(self, p: Principal, body: DigestSettingsBody) -> DigestSettings:
        schedule = parse(body)
        row = await self._row(p, lock=True)
        now = utcnow()
        values: dict[str, Any] = msgspec.structs.asdict(body)
        values.update(include_types=list(dict.fromkeys(body.include_types)), updated_at=now)
        if row is None:
            row = DigestSubscription(tenant_id=p.tenant_id, user_id=p.sub, created_at=now, **values)
            self.db.add(row)
        else:
            for name, value in values.items():
                setattr(row, name, value)
        row.next_delivery_at = look_again_at(schedule, now, row.last_digest_date)
        await self.db.commit()
        return _out(row)

    async def upcoming(self, p: Principal, after: dt.datetime, count: int) -> list[dt.datetime]:
        row = await self._row(p)
        if row is None or not row.is_enabled:
            return []
        return upcoming(schedule_of(row), after, count)

    async def preview(self, p: Principal) -> DigestContent:
        """The digest the caller would get now, from the same code the tick runs."""
        row = await self._row(p)
        settings = _body(row)
        schedule = parse(settings)
        now = utcnow()
        since = (row.last_delivered_at if row else None) or now - first_window(schedule)
        f = digest.Filters(since, now, frozenset(settings.include_types), settings.min_priority)
        items = await load_items(self.db, [(p.tenant_id, p.sub)], since)
        return digest.preview(local_date(schedule, now), items.get((p.tenant_id, p.sub), []), f)


def _body(row: DigestSubscription | None) -> DigestSettingsBody:
    if row is None:
        return DEFAULTS
    return msgspec.convert(row, DigestSettingsBody, from_attributes=True)


def _out(row: DigestSubscription | None) -> DigestSettings:
    b = _body(row)
    return DigestSettings(
        **msgspec.structs.asdict(b),
        next_delivery_at=next_delivery(parse(b), utcnow()) if b.is_enabled else None,
        last_delivered_at=row.last_delivered_at if row else None,
    )
