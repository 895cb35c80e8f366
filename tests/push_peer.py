"""A local Web Push service (RFC 8030/8291/8292) that verifies, decrypts and records pushes."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

URGENCIES = {"very-low", "low", "normal", "high"}
TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
MAX_VAPID_LIFETIME = 24 * 60 * 60  # RFC 8292 §2: exp at most 24 hours ahead
REQUIRED: jwt.types.Options = {"require": ["exp", "aud", "sub"]}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class Answer:
    """A scripted reply: its status, extra headers (e.g. Retry-After) and a delay in seconds."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Request:
    """One request: lower-cased header names, decrypted JSON payload; status 499 if the
    sender hung up before the (delayed) answer."""

    endpoint: str
    status: int
    headers: dict[str, str]
    payload: dict[str, Any] | None
    received: float
    body_size: int


@dataclass(frozen=True)
class Subscriber:
    """A browser's push subscription (RFC 8291 §2); p256dh and auth are base64url, unpadded."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    p256dh: str
    auth: str

    def subscribe_body(self) -> dict[str, str]:
        return {"endpoint": self.endpoint, "p256dh_key": self.p256dh, "auth_key": self.auth}


class Rejected(Exception):
    """A failed check: args are (status, reason)."""


class PushPeer:
    """A push service on 127.0.0.1 in its own thread and loop; public methods are thread-safe."""

    def __init__(self, vapid_public_key: str, default_delay: float = 0.0) -> None:
        self.vapid_public_key = vapid_public_key
        point = base64.urlsafe_b64decode(vapid_public_key + "=" * (-len(vapid_public_key) % 4))
        self._vapid_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        self._lock = threading.Lock()
        self._default_delay = default_delay
        self._subscribers: dict[str, Subscriber] = {}
        self._scripts: dict[str, deque[Answer]] = {}
        self._max_body: dict[str, int] = {}
        self._requests: list[Request] = []
        self._errors: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.origin = ""

    def start(self) -> PushPeer:
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="push-peer", daemon=True)
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=10)
        self.origin = f"http://127.0.0.1:{port}"
        return self

    async def _serve(self) -> int:
        app = web.Application()
        app.router.add_route("*", "/push/{token}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        return int(self._runner.addresses[0][1])

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()  # waits up to 1 s for requests in progress
        left = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = self._runner = None

    def __enter__(self) -> PushPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def default_delay(self) -> float:
        with self._lock:
            return self._default_delay

    @default_delay.setter
    def default_delay(self, seconds: float) -> None:
        with self._lock:
            self._default_delay = seconds

    def new_subscriber(self) -> Subscriber:
        key, auth = ec.generate_private_key(ec.SECP256R1()), secrets.token_bytes(16)
        point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        endpoint = f"{self.origin}/push/{secrets.token_urlsafe(16)}"
        sub = Subscriber(endpoint, key, auth, b64url(point), b64url(auth))
        with self._lock:
            self._subscribers[sub.endpoint] = sub
        return sub

    def script(self, endpoint: str, responses: list[Answer]) -> None:
        """Queue answers for the endpoint's next valid requests; then 201 again."""
        with self._lock:
            self._scripts.setdefault(endpoint, deque()).extend(responses)

    def max_body(self, endpoint: str, n: int) -> None:
        """Answer 413 when the endpoint's encrypted body is longer than n bytes."""
        with self._lock:
            self._max_body[endpoint] = n

    @property
    def errors(self) -> list[str]:
        with self._lock:
            return list(self._errors)

    def requests(self, endpoint: str) -> list[Request]:
        with self._lock:
            return [r for r in self._requests if r.endpoint == endpoint]

    def delivered(self, endpoint: str) -> list[dict[str, Any]]:
        return [
            r.payload for r in self.requests(endpoint) if r.status == 201 and r.payload is not None
        ]

    def delivered_count(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(r.endpoint for r in self._requests if r.status == 201))

    def _check(self, predicate: Callable[[PushPeer], bool], deadline: float) -> bool:
        if predicate(self):
            return True
        if time.monotonic() < deadline:
            return False
        with self._lock:
            seen = [(r.endpoint.rsplit("/", 1)[-1][:8], r.status) for r in self._requests]
            summary = f"requests (token, status): {seen}; errors: {self._errors}"
        raise AssertionError(f"push peer: condition not met in time; {summary}")

    def wait_until(self, predicate: Callable[[PushPeer], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._check(predicate, deadline):
            time.sleep(0.02)

    async def wait_until_async(
        self,
        predicate: Callable[[PushPeer], bool],
        timeout: float = 20.0,  # noqa: ASYNC109 (mirrors wait_until)
    ) -> None:
        deadline = time.monotonic() + timeout
        while not self._check(predicate, deadline):  # noqa: ASYNC110 (any predicate)
            await asyncio.sleep(0.02)

    async def _handle(self, request: web.Request) -> web.Response:
        received = time.time()
        endpoint = f"{self.origin}/push/{request.match_info['token']}"
        headers = {k.lower(): v for k, v in request.headers.items()}
        body = await request.read()
        with self._lock:
            sub = self._subscribers.get(endpoint)
        payload: dict[str, Any] | None = None
        answer = Answer(201)
        try:
            if request.method != "POST":
                raise Rejected(405, f"method {request.method}, expected POST")
            if sub is None:
                answer = Answer(404)
            else:
                self._verify(headers)
                payload = self._decrypt(sub, body)
                with self._lock:
                    limit = self._max_body.get(endpoint)
                    queue = self._scripts.get(endpoint)
                    if limit is not None and len(body) > limit:
                        answer = Answer(413)
                    elif queue:
                        answer = queue.popleft()
                    delay = self._default_delay + answer.delay
                if delay > 0:
                    await asyncio.sleep(delay)
                if request.transport is None or request.transport.is_closing():
                    answer = Answer(499)  # the sender gave up before the answer
        except Rejected as exc:
            answer = Answer(exc.args[0])
            with self._lock:
                self._errors.append(f"{request.method} {endpoint}: {exc.args[0]} {exc.args[1]}")
        reply = dict(answer.headers)
        with self._lock:
            if answer.status == 201:
                reply.setdefault("Location", f"{self.origin}/msg/{len(self._requests) + 1}")
            self._requests.append(
                Request(endpoint, answer.status, headers, payload, received, len(body))
            )
        return web.Response(status=answer.status, headers=reply)

    def _verify(self, headers: dict[str, str]) -> None:
        # Only RFC 8292 "vapid t=<jwt>, k=<key>". pywebpush's default (py_vapid.Vapid = Vapid02)
        # sends this form; the legacy draft form ("WebPush <jwt>" + "Crypto-Key: p256ecdsa=")
        # is only sent when given a Vapid01 instance, and is rejected here on purpose.
        authorization = headers.get("authorization", "")
        scheme, _, rest = authorization.partition(" ")
        if scheme.lower() == "webpush":
            raise Rejected(401, "legacy 'WebPush <jwt>' Authorization; RFC 8292 'vapid' expected")
        if scheme.lower() != "vapid":
            raise Rejected(401, f"Authorization {authorization[:40]!r}: 'vapid t=, k=' expected")
        params = {k: v for k, _, v in (p.strip().partition("=") for p in rest.split(","))}
        if not params.get("t") or not params.get("k"):
            raise Rejected(401, f"Authorization lacks t= or k=: {authorization[:60]!r}")
        if params["k"] != self.vapid_public_key:
            raise Rejected(403, f"k={params['k'][:16]}... is not the configured VAPID key")
        try:
            key, aud = self._vapid_key, self.origin
            claims = jwt.decode(params["t"], key, ["ES256"], options=REQUIRED, audience=aud)
        except jwt.InvalidTokenError as exc:
            raise Rejected(401, f"VAPID JWT: {type(exc).__name__}: {exc}") from None
        if claims["exp"] > time.time() + MAX_VAPID_LIFETIME:
            raise Rejected(401, f"VAPID exp {claims['exp']} is more than 24 h ahead")
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            raise Rejected(401, f"VAPID sub {claims['sub']!r}: mailto: or https: expected")
        ttl = headers.get("ttl")
        if ttl is None or not re.fullmatch(r"[0-9]+", ttl):
            raise Rejected(400, f"TTL must be a non-negative integer, got {ttl!r}")
        if headers.get("content-encoding") != "aes128gcm":
            raise Rejected(400, f"Content-Encoding {headers.get('content-encoding')!r}")
        if "urgency" in headers and headers["urgency"] not in URGENCIES:
            raise Rejected(400, f"Urgency {headers['urgency']!r}")
        if "topic" in headers and not TOPIC.fullmatch(headers["topic"]):
            raise Rejected(400, f"Topic {headers['topic']!r}: 1-32 base64url characters")

    def _decrypt(self, sub: Subscriber, body: bytes) -> dict[str, Any]:
        # RFC 8291 §4: the keyid is the sender's 65-byte point and the message is one record
        if len(body) < 86 or body[20] != 65:
            raise Rejected(400, f"aes128gcm header: {len(body)} bytes, idlen {body[20:21]!r}")
        if struct.unpack("!L", body[16:20])[0] < len(body) - 86:
            raise Rejected(400, "push message spans more than one record")
        try:
            plain = http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth_secret, version="aes128gcm"
            )
            payload = json.loads(plain)
        except (http_ece.ECEException, ValueError) as exc:
            raise Rejected(400, f"body does not decrypt to JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise Rejected(400, f"payload is not a JSON object: {payload!r}")
        return payload
