"""Web Push subscriptions over HTTP: validation, upsert, cap, isolation, VAPID key, sw.js."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notify.core.vapid import generate_vapid_keys
from tests.harness import Server, new_tenant, serving

SUBSCRIBE = "/api/v1/push/subscribe"
PUBLIC, PRIVATE = generate_vapid_keys()


def browser_keys(url_safe: bool = False, padded: bool = True) -> tuple[str, str]:
    """A real subscriber key pair and auth secret, encoded the way browsers' btoa does."""
    point = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    )
    auth = uuid.uuid4().bytes
    encode = base64.urlsafe_b64encode if url_safe else base64.b64encode
    p256dh, secret = encode(point).decode(), encode(auth).decode()
    return (p256dh, secret) if padded else (p256dh.rstrip("="), secret.rstrip("="))


def body(endpoint: str | None = None, **over: object) -> dict[str, object]:
    p256dh, auth = browser_keys()
    return {
        "endpoint": endpoint or f"https://push.example.com/{uuid.uuid4()}",
        "p256dh_key": p256dh,
        "auth_key": auth,
        "user_agent": "Firefox",
        "device_info": {"platform": "web"},
        **over,
    }


@pytest.fixture(scope="module")
def push_server(
    server: Server, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    env = {
        "VAPID_PUBLIC_KEY": PUBLIC,
        "VAPID_PRIVATE_KEY": PRIVATE,
        "NOTIFY_PUSH_MAX_SUBSCRIPTIONS": "3",
    }
    with serving(server.backend, nats_url, tmp_path_factory.mktemp("push"), **env) as srv:
        yield srv


@pytest.fixture
async def ana(push_server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with push_server.client("ana", new_tenant()) as c:
        yield c


async def test_subscribe_then_same_endpoint_again_is_an_update(ana) -> None:
    first = await ana.post(SUBSCRIBE, json=body(endpoint="https://push.example.com/a"))
    assert first.status_code == 201, first.text
    sub = first.json()
    assert set(sub) == {"id", "endpoint", "is_active", "user_agent", "device_info", "created_at"}
    assert sub["is_active"] is True and sub["device_info"] == {"platform": "web"}
    again = await ana.post(
        SUBSCRIBE, json=body(endpoint="https://push.example.com/a", user_agent="Firefox 140")
    )
    assert again.status_code == 200
    assert again.json()["id"] == sub["id"] and again.json()["user_agent"] == "Firefox 140"
    listed = (await ana.get("/api/v1/push/subscriptions")).json()["items"]
    assert [s["id"] for s in listed] == [sub["id"]]


@pytest.mark.parametrize(("url_safe", "padded"), [(False, True), (True, False), (True, True)])
async def test_keys_in_every_base64_form(ana, url_safe: bool, padded: bool) -> None:
    p256dh, auth = browser_keys(url_safe, padded)
    r = await ana.post(SUBSCRIBE, json=body(p256dh_key=p256dh, auth_key=auth))
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("endpoint", "http://push.example.com/x"),
        ("endpoint", "not a url"),
        ("p256dh_key", base64.b64encode(b"\x04" + b"\x01" * 64).decode()),  # not on the curve
        ("p256dh_key", base64.b64encode(b"\x04" * 33).decode()),  # wrong length
        ("p256dh_key", "%%%"),
        ("auth_key", base64.b64encode(b"x" * 15).decode()),
    ],
)
async def test_invalid_subscriptions_are_422_naming_the_field(ana, field: str, value: str) -> None:
    r = await ana.post(SUBSCRIBE, json=body(**{field: value}))
    assert r.status_code == 422, r.text
    assert r.json()["extra"][0]["key"] == field


async def test_the_cap_per_user(ana) -> None:
    for _ in range(3):
        assert (await ana.post(SUBSCRIBE, json=body())).status_code == 201
    over = await ana.post(SUBSCRIBE, json=body())
    assert over.status_code == 422 and "at most 3" in over.text
    existing = (await ana.get("/api/v1/push/subscriptions")).json()["items"][0]
    again = await ana.post(SUBSCRIBE, json=body(endpoint=existing["endpoint"]))
    assert again.status_code == 200, "updating one you have is not a new one"


async def test_unsubscribe_and_isolation(push_server: Server, ana) -> None:
    endpoint = f"https://push.example.com/{uuid.uuid4()}"
    assert (await ana.post(SUBSCRIBE, json=body(endpoint=endpoint))).status_code == 201
    async with push_server.client("ana", new_tenant()) as twin:  # same user id, other tenant
        assert (await twin.get("/api/v1/push/subscriptions")).json()["items"] == []
        gone = await twin.request("DELETE", SUBSCRIBE, json={"endpoint": endpoint})
        assert gone.status_code == 404
    assert len((await ana.get("/api/v1/push/subscriptions")).json()["items"]) == 1
    assert (await ana.request("DELETE", SUBSCRIBE, json={"endpoint": endpoint})).status_code == 204
    assert (await ana.get("/api/v1/push/subscriptions")).json()["items"] == []
    assert (await ana.request("DELETE", SUBSCRIBE, json={"endpoint": endpoint})).status_code == 404


async def test_a_browser_that_changes_hands_moves_to_the_new_user(push_server: Server, ana) -> None:
    endpoint = f"https://push.example.com/{uuid.uuid4()}"
    await ana.post(SUBSCRIBE, json=body(endpoint=endpoint))
    async with push_server.client("ben", new_tenant()) as ben:
        r = await ben.post(SUBSCRIBE, json=body(endpoint=endpoint))
        assert r.status_code == 201
        assert [
            s["endpoint"] for s in (await ben.get("/api/v1/push/subscriptions")).json()["items"]
        ] == [endpoint]
    assert (await ana.get("/api/v1/push/subscriptions")).json()["items"] == []


async def test_vapid_public_key_is_public(push_server: Server) -> None:
    async with httpx.AsyncClient(base_url=push_server.url) as anon:
        r = await anon.get("/api/v1/push/vapid-public-key")
    assert r.status_code == 200 and r.json() == {"public_key": PUBLIC}
    raw = base64.urlsafe_b64decode(PUBLIC + "=" * (-len(PUBLIC) % 4))
    assert len(raw) == 65 and raw[0] == 4


async def test_without_vapid_keys_push_endpoints_are_503(server: Server, alice) -> None:
    async with httpx.AsyncClient(base_url=server.url) as anon:
        assert (await anon.get("/api/v1/push/vapid-public-key")).status_code == 503
    for r in (
        await alice.post(SUBSCRIBE, json=body()),
        await alice.get("/api/v1/push/subscriptions"),
    ):
        assert r.status_code == 503 and "VAPID" in r.json()["detail"]


async def test_the_service_worker_is_served_at_the_root(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as anon:
        r = await anon.get("/sw.js")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/javascript")
    assert r.headers["service-worker-allowed"] == "/"
    assert 'addEventListener("push"' in r.text and "showNotification" in r.text
    assert "notificationclick" in r.text and "action_url" in r.text
