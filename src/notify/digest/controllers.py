"""HTTP routes of the digest: settings, upcoming deliveries, preview."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, Request, get, put
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import FromQuery, JSONBody, QueryParameter

from notify.core.auth import Principal
from notify.core.errors import Invalid
from notify.core.models import parse_instant, utcnow
from notify.digest.schemas import DigestContent, DigestSettings, DigestSettingsBody, Upcoming
from notify.digest.service import DigestService

Service = NamedDependency[DigestService]


def _instant(value: str | None) -> dt.datetime:
    if value is None:
        return utcnow()
    try:
        return parse_instant(value)
    except ValueError:
        raise Invalid("after", "must be an ISO 8601 date-time") from None


class DigestController(Controller):
    path = "/api/v1/digest"
    tags = ["digest"]
    dependencies = {"service": Provide(create_service_provider(DigestService))}

    @get("/subscription", summary="The caller's digest settings and next delivery")
    async def get_settings(
        self, request: Request[Principal, str, State], service: Service
    ) -> DigestSettings:
        return await service.settings(request.user)

    @put("/subscription", summary="Set the caller's digest settings")
    async def put_settings(
        self,
        request: Request[Principal, str, State],
        data: JSONBody[DigestSettingsBody],
        service: Service,
    ) -> DigestSettings:
        return await service.put(request.user, data)

    @get("/upcoming", summary="The next delivery instants (UTC) by the caller's settings")
    async def upcoming(
        self,
        request: Request[Principal, str, State],
        service: Service,
        after: FromQuery[str | None] = None,
        count: Annotated[int, QueryParameter(ge=1, le=30)] = 5,
    ) -> Upcoming:
        return Upcoming(await service.upcoming(request.user, _instant(after), count))

    @get("/preview", summary="The digest the caller would get now")
    async def preview(
        self, request: Request[Principal, str, State], service: Service
    ) -> DigestContent:
        return await service.preview(request.user)
