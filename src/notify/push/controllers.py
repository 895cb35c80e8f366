"""HTTP routes of Web Push: subscriptions, the VAPID public key, and the service worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, Request, Response, delete, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import ServiceUnavailableException
from litestar.handlers import BaseRouteHandler
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody

from notify.core.auth import Principal
from notify.core.config import Settings
from notify.push.schemas import (
    SubscribeBody,
    SubscriptionList,
    SubscriptionOut,
    UnsubscribeBody,
    VapidPublicKey,
)
from notify.push.service import PushSubscriptionService, check_keys

SW_JS = (Path(__file__).resolve().parent.parent / "static" / "sw.js").read_text()
Service = NamedDependency[PushSubscriptionService]


async def push_enabled(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Without VAPID keys every push endpoint answers 503 (CONTRACT §2). Async, so
    Litestar does not run it in a worker thread."""
    if not connection.app.state.settings.push_enabled:
        raise ServiceUnavailableException(
            detail="Web Push is disabled: VAPID_PUBLIC_KEY and VAPID_PRIVATE_KEY are not set"
        )


class PushController(Controller):
    path = "/api/v1/push"
    tags = ["push"]
    guards = [push_enabled]
    dependencies = {"service": Provide(create_service_provider(PushSubscriptionService))}

    @post(
        "/subscribe",
        summary="Register this browser (same endpoint again: updated, 200)",
        responses={200: ResponseSpec(SubscriptionOut, description="Updated")},
    )
    async def subscribe(
        self,
        request: Request[Principal, str, State],
        data: JSONBody[SubscribeBody],
        service: Service,
    ) -> Response[SubscriptionOut]:
        settings: Settings = request.app.state.settings
        check_keys(data, settings)
        created, out = await service.subscribe(request.user, data, settings.push_max_subscriptions)
        return Response(out, status_code=201 if created else 200)

    @delete("/subscribe", status_code=204, summary="Unregister a browser of the caller")
    async def unsubscribe(
        self,
        request: Request[Principal, str, State],
        data: JSONBody[UnsubscribeBody],
        service: Service,
    ) -> None:
        await service.unsubscribe(request.user, data.endpoint)

    @get("/subscriptions", summary="The caller's active subscriptions")
    async def subscriptions(
        self, request: Request[Principal, str, State], service: Service
    ) -> SubscriptionList:
        return await service.active(request.user)

    @get(
        "/vapid-public-key",
        exclude_from_auth=True,
        summary="applicationServerKey for pushManager.subscribe (base64url, 65-byte point)",
    )
    async def vapid_public_key(self, state: State) -> VapidPublicKey:
        return VapidPublicKey(state.settings.vapid_public_key)


@get("/sw.js", exclude_from_auth=True, include_in_schema=False, media_type="application/javascript")
async def service_worker() -> Response[str]:
    """Served at the root so its scope can be the whole origin."""
    return Response(
        SW_JS,
        media_type="application/javascript",
        headers={"Service-Worker-Allowed": "/", "Cache-Control": "no-cache"},
    )
