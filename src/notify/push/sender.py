"""The Web Push channel: the sw.js payload, VAPID (RFC 8292), aes128gcm (RFC 8291), answers."""

from __future__ import annotations

import email.utils
import hashlib
import re
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from pywebpush import WebPusher
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from notify.core.config import Settings
from notify.core.models import utcnow
from notify.core.vapid import load_vapid
from notify.delivery.channels import Job, Outcome
from notify.push.models import PushSubscription

# An aes128gcm body carries 86 bytes of header, a 16-byte tag and a 1-byte delimiter; push
# services take at most 4,096 bytes, so the JSON gets the rest (minus one, to stay under).
MAX_PAYLOAD = 4096 - 86 - 17 - 1
URGENCY = {"low": "low", "normal": "normal", "high": "high", "urgent": "high"}
_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_ENCODE = msgspec.json.Encoder()
_VAPID_LIFETIME = 12 * 3600


def topic(notification_type: str) -> str:
    """RFC 8030 Topic: at most 32 base64url characters; same type → same topic (collapses)."""
    safe = _TOPIC_UNSAFE.sub("_", notification_type)
    if len(safe) <= 32:
        return safe
    return safe[:23] + "_" + hashlib.sha256(notification_type.encode()).hexdigest()[:8]


def _cut(text: str, over: int) -> str:
    """`text` shortened by at least `over` bytes of UTF-8, ending with an ellipsis."""
    raw = text.encode()
    keep = max(0, len(raw) - over - len("…".encode()))
    return raw[:keep].decode(errors="ignore") + "…" if keep < len(raw) else text


def payload(n: dict[str, Any], limit: int = MAX_PAYLOAD) -> bytes:
    """What sw.js reads, under `limit` bytes: the body is trimmed first, then extras dropped."""
    meta = n["metadata"]
    actions = meta.get("actions")
    if not isinstance(actions, list):
        actions = [{"action": "view", "title": "View"}] if n["action_url"] else []
    data: dict[str, Any] = {
        "title": n["title"],
        "body": n["message"],
        "icon": meta.get("icon") if isinstance(meta.get("icon"), str) else None,
        "badge": meta.get("badge") if isinstance(meta.get("badge"), str) else None,
        "tag": str(n["id"]),  # a re-sent push replaces the shown one instead of doubling it
        "data": {
            "action_url": n["action_url"],
            "notification_id": str(n["id"]),
            "notification_type": n["notification_type"],
        },
        "actions": actions,
        "priority": n["priority"],
        "timestamp": int(n["created_at"].timestamp() * 1000),
    }
    body = _ENCODE.encode(data)
    for shrink in ("body", "actions", "icon", "badge", "title", "action_url"):
        over = len(body) - limit
        if over <= 0:
            break
        if shrink in ("body", "title"):
            data[shrink] = _cut(data[shrink], over)
        elif shrink == "action_url":
            data["data"]["action_url"] = None
        else:
            data[shrink] = [] if shrink == "actions" else None
        body = _ENCODE.encode(data)
    return body


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds or as an HTTP date (RFC 9110)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - utcnow()).total_seconds())


class WebPushChannel:
    """Sends to browsers' push services; a bounded number of connections per host."""

    name = "push"

    def __init__(self, settings: Settings) -> None:
        assert settings.vapid_private_key
        self._settings = settings
        self._vapid = load_vapid(settings.vapid_private_key)
        self._signed: dict[str, tuple[float, dict[str, str]]] = {}
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            connector = aiohttp.TCPConnector(
                limit=self._settings.delivery_concurrency,
                limit_per_host=self._settings.push_connections_per_host,
            )
            self._http = aiohttp.ClientSession(connector=connector)
        return self._http

    def _authorization(self, endpoint: str) -> dict[str, str]:
        """VAPID headers per push service origin, signed once and reused for hours."""
        url = urlsplit(endpoint)
        aud = f"{url.scheme}://{url.netloc}"
        now = time.time()
        cached = self._signed.get(aud)
        if cached is None or cached[0] - now < 3600:
            exp = int(now) + _VAPID_LIFETIME
            claims = {"aud": aud, "exp": exp, "sub": self._settings.vapid_sub}
            cached = (exp, dict(self._vapid.sign(claims)))
            self._signed[aud] = cached
        return cached[1]

    async def prepare(self, db: AsyncSession, jobs: list[Job]) -> None:
        ids = {j.subscription_id for j in jobs if j.subscription_id}
        rows = await db.scalars(select(PushSubscription).where(PushSubscription.id.in_(ids)))
        subs = {s.id: s for s in rows if s.is_active}
        for job in jobs:
            job.target = subs.get(job.subscription_id) if job.subscription_id else None

    async def send(self, job: Job) -> Outcome:
        sub: PushSubscription | None = job.target
        if sub is None:
            return Outcome("skipped", "push subscription no longer active")
        n = job.notification
        limit = MAX_PAYLOAD
        for _ in range(2):  # 413: once more, trimmed harder
            status, text, wait = await self._post(sub, n, limit)
            if status != 413:
                break
            limit //= 2
        if status in (200, 201, 202):
            return Outcome("sent")
        error = f"push service answered {status}" + (f": {text[:200]}" if text else "")
        if status in (404, 410):
            return Outcome("gone", error + " (subscription deactivated)")
        if status == 429 or status >= 500 or status == 0:
            return Outcome("retry", error if status else text, wait)
        return Outcome("failed", error)

    async def _post(
        self, sub: PushSubscription, n: dict[str, Any], limit: int
    ) -> tuple[int, str, float | None]:
        """(status, body text, Retry-After seconds); status 0 is a network error."""
        info = {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh_key, "auth": sub.auth_key}}
        headers = {
            **self._authorization(sub.endpoint),
            "Urgency": URGENCY.get(n["priority"], "normal"),
            "Topic": topic(n["notification_type"]),
        }
        pusher = WebPusher(_urlsafe(info), aiohttp_session=self._session())
        try:
            resp = await pusher.send_async(
                payload(n, limit),
                headers,
                ttl=self._settings.push_ttl,
                timeout=aiohttp.ClientTimeout(total=self._settings.push_timeout),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return 0, f"network error: {type(exc).__name__}: {exc}".rstrip(": "), None
        assert isinstance(resp, aiohttp.ClientResponse)
        wait = retry_after(resp.headers.get("Retry-After"))
        return resp.status, (await resp.text()).strip(), wait

    async def gone(self, db: AsyncSession, jobs: list[Job]) -> None:
        await db.execute(
            update(PushSubscription)
            .where(PushSubscription.id.in_({j.subscription_id for j in jobs}))
            .values(is_active=False, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


def _urlsafe(info: dict[str, Any]) -> dict[str, Any]:
    """pywebpush decodes keys as base64url; browsers may have sent standard base64."""
    keys = {k: v.replace("+", "-").replace("/", "_").rstrip("=") for k, v in info["keys"].items()}
    return {**info, "keys": keys}
