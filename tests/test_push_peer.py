"""The local Web Push peer itself, driven by pywebpush: verification, decryption, scripting."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import aiohttp
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid01, Vapid02
from pywebpush import WebPusher, WebPushException, webpush, webpush_async

from tests.push_peer import Answer, PushPeer, Subscriber, b64url

SUB = "mailto:ops@example.com"


def new_vapid() -> Vapid02:
    vapid = Vapid02()
    vapid.generate_keys()
    return vapid


def public_key(vapid: Vapid01) -> str:
    return b64url(vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))


VAPID = new_vapid()


@pytest.fixture
def peer() -> Iterator[PushPeer]:
    with PushPeer(vapid_public_key=public_key(VAPID)) as p:
        yield p


def info(sub: Subscriber, auth: str | None = None) -> dict[str, Any]:
    return {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": auth or sub.auth}}


async def push(
    sub: Subscriber, data: object, vapid: Vapid01 = VAPID, **claims: Any
) -> aiohttp.ClientResponse:
    """pywebpush's one-call API, as the notify service uses it; the push service's response."""
    try:
        resp = await webpush_async(
            info(sub), json.dumps(data), vapid, {"sub": SUB, **claims}, ttl=60
        )
    except WebPushException as exc:
        return cast(aiohttp.ClientResponse, exc.response)
    assert isinstance(resp, aiohttp.ClientResponse)
    return resp


async def push_with(
    sub: Subscriber, headers: dict[str, str], encoding: str = "aes128gcm"
) -> aiohttp.ClientResponse:
    """A push with hand-made headers (Authorization included; TTL 0 unless given)."""
    resp = await WebPusher(info(sub)).send_async(
        b'{"x": 1}', headers, ttl=0, content_encoding=encoding
    )
    assert isinstance(resp, aiohttp.ClientResponse)
    return resp


def signed(vapid: Vapid01, peer: PushPeer) -> dict[str, str]:
    headers: dict[str, str] = vapid.sign({"sub": SUB, "aud": peer.origin})
    return headers


async def test_a_valid_push_is_verified_decrypted_and_recorded(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    data = {"title": "Déjà vu ✓", "body": "x" * 500, "n": 1}
    resp = await push(sub, data)
    assert resp.status == 201
    assert resp.headers["Location"].startswith(f"{peer.origin}/msg/")
    assert (await push(sub, {})).status == 201
    assert peer.delivered(sub.endpoint) == [data, {}]
    assert peer.delivered_count() == {sub.endpoint: 2}
    req = peer.requests(sub.endpoint)[0]
    # pywebpush's default is the RFC 8292 form, not the legacy "WebPush <jwt>" + Crypto-Key
    assert req.headers["authorization"].startswith("vapid t=")
    assert "crypto-key" not in req.headers
    assert (req.headers["ttl"], req.headers["content-encoding"]) == ("60", "aes128gcm")
    assert req.received <= time.time()
    assert peer.errors == []


def test_subscriber_body_matches_the_subscribe_api(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    assert sub.subscribe_body() == {
        "endpoint": sub.endpoint,
        "p256dh_key": sub.p256dh,
        "auth_key": sub.auth,
    }
    assert sub.endpoint.startswith(f"{peer.origin}/push/")
    assert len(sub.p256dh) == 87 and "=" not in sub.p256dh  # 65 bytes, unpadded
    assert len(sub.auth) == 22 and "=" not in sub.auth  # 16 bytes, unpadded


async def test_a_push_signed_with_another_vapid_key_is_rejected(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    assert (await push(sub, {"a": 1}, vapid=new_vapid())).status == 403
    assert peer.delivered(sub.endpoint) == []
    [error] = peer.errors
    assert "not the configured VAPID key" in error


async def test_a_token_not_signed_by_the_announced_key_is_rejected(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    forged = signed(new_vapid(), peer)["Authorization"].split(",k=")[0]
    resp = await push_with(sub, {"Authorization": f"{forged},k={public_key(VAPID)}"})
    assert resp.status == 401
    [error] = peer.errors
    assert "InvalidSignatureError" in error


async def test_a_wrong_audience_is_rejected(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    assert (await push(sub, {"a": 1}, aud="http://127.0.0.1:1")).status == 401
    [error] = peer.errors
    assert "InvalidAudienceError" in error


async def test_an_expiry_beyond_24_hours_is_rejected(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    assert (await push(sub, {"a": 1}, exp=int(time.time()) + 25 * 3600)).status == 401
    [error] = peer.errors
    assert "24 h" in error


async def test_a_space_after_the_comma_is_accepted(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    auth = signed(VAPID, peer)["Authorization"].replace(",k=", ", k=")
    assert (await push_with(sub, {"Authorization": auth})).status == 201
    assert peer.delivered(sub.endpoint) == [{"x": 1}]
    assert peer.errors == []


async def test_the_legacy_webpush_scheme_is_rejected(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    legacy = Vapid01(private_key=VAPID.private_key)
    assert (await push(sub, {"a": 1}, vapid=legacy)).status == 401
    [error] = peer.errors
    assert "legacy" in error


@pytest.mark.parametrize(
    ("extra", "encoding", "complaint"),
    [
        ({"Urgency": "asap"}, "aes128gcm", "Urgency"),
        ({"Topic": "t" * 33}, "aes128gcm", "Topic"),
        ({"Topic": "not base64!"}, "aes128gcm", "Topic"),
        ({"TTL": "-1"}, "aes128gcm", "TTL"),
        ({}, "aesgcm", "Content-Encoding"),
    ],
)
async def test_invalid_push_headers_are_rejected(
    peer: PushPeer, extra: dict[str, str], encoding: str, complaint: str
) -> None:
    sub = peer.new_subscriber()
    resp = await push_with(sub, signed(VAPID, peer) | extra, encoding)
    assert resp.status == 400
    [error] = peer.errors
    assert complaint in error


async def test_valid_optional_headers_are_accepted(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    extra = {"Urgency": "very-low", "Topic": "digest_2024-01"}
    assert (await push_with(sub, signed(VAPID, peer) | extra)).status == 201
    assert peer.requests(sub.endpoint)[0].headers["topic"] == "digest_2024-01"
    assert peer.errors == []


async def test_a_body_that_does_not_decrypt_is_rejected(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    wrong_auth = b64url(b"0123456789abcdef")
    resp = await WebPusher(info(sub, auth=wrong_auth)).send_async(b"{}", signed(VAPID, peer), ttl=0)
    assert isinstance(resp, aiohttp.ClientResponse)
    assert resp.status == 400
    [error] = peer.errors
    assert "does not decrypt" in error


async def test_scripted_429_with_retry_after_then_the_default(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    peer.script(sub.endpoint, [Answer(429, {"Retry-After": "1"})])
    first = await push(sub, {"try": 1})
    assert (first.status, first.headers["Retry-After"]) == (429, "1")
    second = await push(sub, {"try": 2})
    assert second.status == 201
    assert [r.status for r in peer.requests(sub.endpoint)] == [429, 201]
    assert peer.delivered(sub.endpoint) == [{"try": 2}]
    assert peer.errors == []


async def test_scripted_410_gone(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    peer.script(sub.endpoint, [Answer(410)])
    assert (await push(sub, {"a": 1})).status == 410
    assert peer.delivered(sub.endpoint) == []
    assert peer.requests(sub.endpoint)[0].payload == {"a": 1}  # decrypted all the same
    assert peer.errors == []


async def test_max_body_answers_413(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    peer.max_body(sub.endpoint, 200)
    assert (await push(sub, {"a": 1})).status == 201
    assert (await push(sub, {"a": "x" * 200})).status == 413
    assert [r.status for r in peer.requests(sub.endpoint)] == [201, 413]
    assert peer.requests(sub.endpoint)[1].body_size > 200
    assert peer.errors == []


async def test_an_unknown_endpoint_is_404(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    ghost = Subscriber(f"{peer.origin}/push/unknown", sub.private_key, b"", sub.p256dh, sub.auth)
    assert (await push(ghost, {"a": 1})).status == 404
    assert peer.delivered_count() == {}
    assert peer.errors == []


async def test_only_post_is_allowed(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    async with aiohttp.ClientSession() as session, session.get(sub.endpoint) as resp:
        assert resp.status == 405
    [error] = peer.errors
    assert "expected POST" in error


async def test_default_delay_and_wait_until_async(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    peer.default_delay = 0.3
    started = time.monotonic()
    assert (await push(sub, {"slow": True})).status == 201
    assert time.monotonic() - started >= 0.3
    await peer.wait_until_async(lambda p: p.delivered_count().get(sub.endpoint) == 1)
    with pytest.raises(AssertionError, match="condition not met"):
        await peer.wait_until_async(lambda p: False, timeout=0.1)


def test_concurrent_pushes_from_other_threads(peer: PushPeer) -> None:
    subs = [peer.new_subscriber() for _ in range(4)]

    def send(i: int) -> None:
        sub = subs[i % len(subs)]
        webpush(info(sub), json.dumps({"i": i}), VAPID, {"sub": SUB}, ttl=30)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(send, range(40)))
    peer.wait_until(lambda p: sum(p.delivered_count().values()) == 40, timeout=10)
    assert sorted(m["i"] for s in subs for m in peer.delivered(s.endpoint)) == list(range(40))
    with pytest.raises(AssertionError, match="condition not met"):
        peer.wait_until(lambda p: False, timeout=0.1)
    assert peer.errors == []


async def test_a_sender_that_gives_up_is_recorded_as_499(peer: PushPeer) -> None:
    sub = peer.new_subscriber()
    peer.script(sub.endpoint, [Answer(201, delay=0.5)])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(push(sub, {"a": 1}), 0.1)
    await peer.wait_until_async(lambda p: len(p.requests(sub.endpoint)) == 1, timeout=5)
    assert peer.requests(sub.endpoint)[0].status == 499
    assert peer.delivered(sub.endpoint) == []
    assert (await push(sub, {"a": 2})).status == 201
    assert peer.errors == []
