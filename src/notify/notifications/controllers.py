"""HTTP routes of the notifications API and the internal broadcast endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated
from uuid import UUID

from advanced_alchemy.extensions.litestar.providers import create_service_provider
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import PermissionDeniedException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from notify.core.auth import ANY_TENANT, Principal, service_or_admin
from notify.core.errors import Invalid
from notify.hub.events import publish_read
from notify.notifications.queries import CursorError, InboxFilter
from notify.notifications.schemas import (
    BroadcastCreate,
    BroadcastResult,
    DeliveryList,
    NotificationBody,
    NotificationCreate,
    NotificationOut,
    NotificationPage,
    Priority,
    ReadAllResult,
    Status,
    TypeName,
    UnreadCount,
)
from notify.notifications.service import ENCODER, NotificationService
from notify.notifications.targets import Target, broadcast_targets

IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        max_length=255,
        description="Repeat a request safely: same key and body, same answer.",
    ),
]
Service = NamedDependency[NotificationService]
provide_service = create_service_provider(NotificationService)


def resolve_tenant(p: Principal, requested: str | None) -> str:
    """The tenant a creation targets: the token's, or any for a `*` service token."""
    if p.any_tenant:
        if not requested or requested == ANY_TENANT:
            raise Invalid(
                "tenant_id",
                "required with a service token for any tenant ('*'), and must name one tenant",
            )
        return requested
    if requested and requested != p.tenant_id:
        raise PermissionDeniedException(detail="tenant_id must be the token's tenant")
    return p.tenant_id


async def _accept(
    request: Request[Principal, str, State],
    service: NotificationService,
    idempotency_key: str | None,
    data: NotificationBody,
    produce: Callable[[], tuple[int, bytes]],
) -> Response[bytes]:
    """Commit what `produce` staged (once per Idempotency-Key), then publish it at once."""
    request_id = request.url.path.encode() + ENCODER.encode(data)
    status, body = await service.idempotent(request.user, idempotency_key, request_id, produce)
    await request.app.state.outbox.send(service.committed)
    return Response(content=body, status_code=status, media_type="application/json")


class NotificationController(Controller):
    path = "/api/v1/notifications"
    tags = ["notifications"]
    dependencies = {"service": Provide(provide_service)}

    @post(
        "/",
        status_code=201,
        summary="Create a notification",
        responses={201: ResponseSpec(NotificationOut, description="Created")},
    )
    async def create(
        self,
        request: Request[Principal, str, State],
        data: JSONBody[NotificationCreate],
        service: Service,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        p = request.user
        tenant = resolve_tenant(p, data.tenant_id)
        user = data.user_id or p.sub
        if user != p.sub and not p.is_privileged:
            raise PermissionDeniedException(
                detail="only admin or service tokens may set user_id to another user"
            )
        if user == p.sub and p.any_tenant and not data.user_id:
            raise Invalid("user_id", "required with a service token for any tenant ('*')")

        def produce() -> tuple[int, bytes]:
            out = service.add(p, data, Target(tenant, user_id=user))
            if user != p.sub:
                service.audit(p, tenant, "notification.create", str(out.id), user_id=user)
            return 201, ENCODER.encode(out)

        return await _accept(request, service, idempotency_key, data, produce)

    @get("/", summary="List the caller's inbox, newest first")
    async def list_inbox(
        self,
        request: Request[Principal, str, State],
        service: Service,
        status: FromQuery[Status | None] = None,
        notification_type: FromQuery[TypeName | None] = None,
        priority: FromQuery[Priority | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=512)] = None,
    ) -> NotificationPage:
        f = InboxFilter(status=status, notification_type=notification_type, priority=priority)
        try:
            return await service.page(request.user, f, limit, cursor)
        except CursorError as exc:
            raise Invalid("cursor", str(exc)) from None

    @get("/unread-count", summary="How many unread notifications the caller has")
    async def unread_count(
        self, request: Request[Principal, str, State], service: Service
    ) -> UnreadCount:
        return UnreadCount(await service.unread_count(request.user))

    @post("/read-all", status_code=200, summary="Mark every notification of the caller read")
    async def read_all(
        self, request: Request[Principal, str, State], service: Service
    ) -> ReadAllResult:
        return ReadAllResult(await service.read_all(request.user))

    @get("/{notification_id:uuid}", summary="One notification")
    async def get_one(
        self,
        request: Request[Principal, str, State],
        service: Service,
        notification_id: FromPath[UUID],
    ) -> NotificationOut:
        return await service.get_visible(request.user, notification_id)

    @post("/{notification_id:uuid}/read", status_code=200, summary="Mark one notification read")
    async def mark_read(
        self,
        request: Request[Principal, str, State],
        service: Service,
        notification_id: FromPath[UUID],
    ) -> NotificationOut:
        out = await service.mark_read(request.user, notification_id)
        await publish_read(request.app.state.bus, request.user, out)
        return out

    @delete("/{notification_id:uuid}", status_code=204, summary="Delete (or dismiss) one")
    async def remove(
        self,
        request: Request[Principal, str, State],
        service: Service,
        notification_id: FromPath[UUID],
    ) -> None:
        await service.remove(request.user, notification_id)

    @get("/{notification_id:uuid}/deliveries", summary="Delivery state per channel and target")
    async def deliveries(
        self,
        request: Request[Principal, str, State],
        service: Service,
        notification_id: FromPath[UUID],
    ) -> DeliveryList:
        return await service.deliveries(request.user, notification_id)


class BroadcastController(Controller):
    path = "/internal"
    tags = ["internal"]
    guards = [service_or_admin]
    dependencies = {"service": Provide(provide_service)}

    @post(
        "/broadcast",
        status_code=202,
        summary="Fan a notification out to users, a tenant or a channel",
        responses={202: ResponseSpec(BroadcastResult, description="Accepted")},
    )
    async def broadcast(
        self,
        request: Request[Principal, str, State],
        data: JSONBody[BroadcastCreate],
        service: Service,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[bytes]:
        p = request.user
        targets = broadcast_targets(data, resolve_tenant(p, data.tenant_id))

        def produce() -> tuple[int, bytes]:
            return 202, service.stage_broadcast(p, data, targets)

        return await _accept(request, service, idempotency_key, data, produce)
