"""Push subscriptions: validated keys, upsert by endpoint, a cap per user, owner-only access."""

from __future__ import annotations

import binascii
import hashlib
from typing import Any
from urllib.parse import urlsplit

import msgspec
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from notify.core.auth import Principal
from notify.core.config import Settings
from notify.core.errors import Invalid, NotFound
from notify.core.models import utcnow
from notify.core.service import Service
from notify.core.vapid import b64url_decode
from notify.notifications.models import NotificationDelivery
from notify.notifications.schemas import NotificationBody
from notify.notifications.service import NotificationService
from notify.notifications.targets import Target
from notify.push.models import PushSubscription
from notify.push.schemas import SubscribeBody, SubscriptionList, SubscriptionOut


def endpoint_hash(endpoint: str) -> str:
    """Endpoints are long URLs: the unique index is on their digest."""
    return hashlib.sha256(endpoint.encode()).hexdigest()


def check_keys(body: SubscribeBody, settings: Settings) -> None:
    """RFC 8291 needs a P-256 point (65 bytes, uncompressed, on the curve) and a 16-byte
    auth secret; browsers send both base64 (btoa) or base64url, padded or not."""
    url = urlsplit(body.endpoint)
    schemes = ("https", "http") if settings.push_allow_http else ("https",)
    if url.scheme not in schemes or not url.netloc:
        raise Invalid(
            "endpoint",
            "must be an https URL" if not settings.push_allow_http else "must be an http(s) URL",
        )
    try:
        point = b64url_decode(body.p256dh_key)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        if len(point) != 65:
            raise ValueError("compressed point")
    except (ValueError, binascii.Error):
        raise Invalid(
            "p256dh_key", "must be base64 of a 65-byte uncompressed P-256 point on the curve"
        ) from None
    try:
        auth = b64url_decode(body.auth_key)
    except (ValueError, binascii.Error):
        auth = b""
    if len(auth) != 16:
        raise Invalid("auth_key", "must be base64 of 16 bytes")


class PushSubscriptionRepository(SQLAlchemyAsyncRepository[PushSubscription]):
    model_type = PushSubscription


class PushSubscriptionService(Service[PushSubscription, PushSubscriptionRepository]):
    """Thin service over the repository; domain logic only."""

    repository_type = PushSubscriptionRepository

    async def subscribe(
        self, p: Principal, body: SubscribeBody, limit: int
    ) -> tuple[bool, SubscriptionOut]:
        """(created, subscription). The same browser again updates its row; a browser that
        changed hands moves to the caller (it pushes to whoever subscribed it last)."""
        key = endpoint_hash(body.endpoint)
        row = await self.db.scalar(
            select(PushSubscription).where(PushSubscription.endpoint_hash == key).with_for_update()
        )
        mine = row is not None and (row.tenant_id, row.user_id) == (p.tenant_id, p.sub)
        if not mine and await self._active_count(p) >= limit:
            raise Invalid(
                "endpoint",
                f"at most {limit} active push subscriptions per user; "
                "unsubscribe an old browser first",
            )
        values: dict[str, Any] = {
            "tenant_id": p.tenant_id,
            "user_id": p.sub,
            "endpoint": body.endpoint,
            "endpoint_hash": key,
            "p256dh_key": body.p256dh_key,
            "auth_key": body.auth_key,
            "user_agent": body.user_agent,
            "device_info": body.device_info or {},
            "is_active": True,
            "updated_at": utcnow(),
        }
        if row is None:
            row = PushSubscription(**values, created_at=values["updated_at"])
            self.db.add(row)
        else:
            for name, value in values.items():
                setattr(row, name, value)
        await self.db.commit()
        return not mine, _out(row)

    async def _active_count(self, p: Principal) -> int:
        return int(
            await self.db.scalar(
                select(func.count())
                .select_from(PushSubscription)
                .where(
                    PushSubscription.tenant_id == p.tenant_id,
                    PushSubscription.user_id == p.sub,
                    PushSubscription.is_active.is_(True),
                )
            )
            or 0
        )

    async def unsubscribe(self, p: Principal, endpoint: str) -> None:
        gone = await self.db.execute(
            delete(PushSubscription).where(
                PushSubscription.endpoint_hash == endpoint_hash(endpoint),
                PushSubscription.tenant_id == p.tenant_id,
                PushSubscription.user_id == p.sub,
            )
        )
        await self.db.commit()
        if not gone.rowcount:  # type: ignore[attr-defined]
            raise NotFound("push subscription not found")

    async def active(self, p: Principal) -> SubscriptionList:
        rows = await self.db.scalars(
            select(PushSubscription)
            .where(
                PushSubscription.tenant_id == p.tenant_id,
                PushSubscription.user_id == p.sub,
                PushSubscription.is_active.is_(True),
            )
            .order_by(PushSubscription.created_at, PushSubscription.id)
        )
        return SubscriptionList([_out(r) for r in rows])


def _out(row: PushSubscription) -> SubscriptionOut:
    return msgspec.convert(row, SubscriptionOut, from_attributes=True)


class PushNotificationService:
    """The description's Python API: `send_to_user(user_id, data, db)` pushes `data` to every
    active subscription of the user, through the delivery pipeline (stored, retried, and
    visible at /deliveries), never from the caller's request."""

    def __init__(self, tenant_id: str, sender: str = "push-service") -> None:
        self._tenant = tenant_id
        self._sender = sender

    async def send_to_user(
        self, user_id: str, data: dict[str, Any], db: AsyncSession
    ) -> dict[str, Any]:
        """Commits on `db`; returns the notification id and how many subscriptions it goes to."""
        body = NotificationBody(
            title=data["title"],
            message=str(data.get("message") or data.get("body") or ""),
            notification_type=str(data.get("notification_type") or "push"),
            priority=data.get("priority") or "normal",
            channels=["push"],
            action_url=data.get("action_url"),
            metadata=dict(data.get("metadata") or {}),
        )
        actor = Principal(self._sender, self._tenant, frozenset({"service"}), frozenset(), 0)
        service = NotificationService(session=db)
        out = service.add(actor, body, Target(self._tenant, user_id))
        await service.flush()
        await db.commit()
        targets = await db.scalar(
            select(func.count())
            .select_from(NotificationDelivery)
            .where(
                NotificationDelivery.notification_id == out.id,
                NotificationDelivery.status == "pending",
            )
        )
        return {"notification_id": str(out.id), "subscriptions": int(targets or 0)}
