"""The WebSocket hub over real sockets (CONTRACT §5), one pod: the `server` fixture, plus
dedicated pods where a test needs its own limits or its own nats-server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import nats
import pytest
from sqlalchemy import text
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from notify.core import db
from notify.core.bus import STREAM
from notify.core.embedded import EmbeddedNats
from tests.harness import JWT_SECRET, Server, new_tenant, serving

API = "/api/v1/notifications"
BROADCAST = "/internal/broadcast"
WAIT = 10.0  # the longest any single frame or state change may take
T = TypeVar("T")


# --------------------------------------------------------------------------- helpers


def ws_url(port: int, token: str | None, since: int | None = None) -> str:
    url = f"ws://127.0.0.1:{port}/ws/notify"
    if token is not None:
        url += f"?token={token}"
    if since is not None:
        url += f"{'&' if token is not None else '?'}since={since}"
    return url


@contextlib.asynccontextmanager
async def ws_open(
    port: int, token: str, since: int | None = None, **kwargs: Any
) -> AsyncIterator[ClientConnection]:
    """A socket whose first frame was `welcome` (so it is registered with the hub)."""
    async with connect(ws_url(port, token, since), open_timeout=WAIT, **kwargs) as ws:
        welcome = await recv_json(ws)
        assert welcome["type"] == "welcome", welcome
        yield ws


async def recv_json(ws: ClientConnection, within: float = WAIT) -> dict[str, Any]:
    try:
        raw = await asyncio.wait_for(ws.recv(), max(within, 0.01))
    except TimeoutError:
        pytest.fail(f"no frame within {within:.1f}s")
    return json.loads(raw)


async def recv_type(ws: ClientConnection, type_: str, within: float = WAIT) -> dict[str, Any]:
    """The next frame of `type_`, skipping frames of other types (pongs, read events...)."""
    deadline = time.monotonic() + within
    while True:
        frame = await recv_json(ws, deadline - time.monotonic())
        if frame["type"] == type_:
            return frame


async def recv_notifications(
    ws: ClientConnection, count: int, within: float = WAIT
) -> list[dict[str, Any]]:
    """The next `count` notification frames (exactly these: nothing else is skipped)."""
    frames = [await recv_json(ws, within) for _ in range(count)]
    assert [f["type"] for f in frames] == ["notification"] * count, frames
    return frames


async def assert_next_is(ws: ClientConnection, notification_id: str) -> dict[str, Any]:
    """The next notification is `notification_id`: nothing addressed elsewhere came first.

    Used with a sentinel sent after the message a socket must not get: the pod dispatches
    the stream in order, so a wrongly delivered message would arrive before the sentinel."""
    frame = await recv_type(ws, "notification")
    assert frame["data"]["id"] == notification_id, frame["data"]
    return frame


async def read_until_closed(
    ws: ClientConnection, within: float = WAIT
) -> tuple[list[dict[str, Any]], int | None]:
    """Every frame until the server closes the socket, and its close code (None: no frame)."""
    frames: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(within):
            while True:
                frames.append(json.loads(await ws.recv()))
    except ConnectionClosed as exc:
        return frames, exc.rcvd.code if exc.rcvd is not None else None
    except TimeoutError:
        pytest.fail(f"socket still open after {within:.1f}s ({len(frames)} frames)")


async def close_code(ws: ClientConnection, within: float = WAIT) -> int | None:
    return (await read_until_closed(ws, within))[1]


async def ping(ws: ClientConnection) -> None:
    """The socket is open and answering."""
    await ws.send(json.dumps({"type": "ping"}))
    assert (await recv_type(ws, "pong"))["timestamp"]


async def send(ws: ClientConnection, type_: str, **fields: Any) -> None:
    await ws.send(json.dumps({"type": type_, **fields}))


async def post_for(client: httpx.AsyncClient, title: str = "hi", **body: Any) -> dict[str, Any]:
    r = await client.post(API, json={"title": title, "message": "m", **body})
    assert r.status_code == 201, r.text
    return r.json()


async def broadcast(client: httpx.AsyncClient, title: str = "b", **target: Any) -> str:
    r = await client.post(BROADCAST, json={"title": title, "message": "m", **target})
    assert r.status_code == 202, r.text
    [nid] = r.json()["notification_ids"]
    return nid


async def poll(
    fetch: Callable[[], Awaitable[T]], ok: Callable[[T], bool], within: float = WAIT
) -> T:
    """Fetch until `ok` holds or time runs out; the last value (assert `ok` on it)."""
    deadline = time.monotonic() + within
    while True:
        value = await fetch()
        if ok(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.1)


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def stream_state(nats_url: str) -> Any:
    nc = await nats.connect(nats_url)
    try:
        return (await nc.jetstream().stream_info(STREAM)).state
    finally:
        await nc.close()


@contextlib.contextmanager
def pod(backend: str, nats_url: str, tmp: Path, **env: str) -> Iterator[Server]:
    """A dedicated API pod (own database) for tests that need their own settings."""
    with serving(backend, nats_url, tmp, **env) as srv:
        yield srv


def tcp_send_buffer_max() -> int:
    """How much the kernel may buffer on the pod's side of one loopback TCP connection."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 * 1024 * 1024


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def limits_server(
    server: Server, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """A pod with small WebSocket limits, on the same backend as `server`."""
    tmp = tmp_path_factory.mktemp("limits")
    env = {
        "NOTIFY_WS_MAX_SOCKETS_PER_USER": "2",
        "NOTIFY_WS_SEND_BUFFER": "65536",
        "NOTIFY_WS_MAX_FRAME": "1024",
        "NOTIFY_WS_RATE": "5",
    }
    with pod(server.backend, nats_url, tmp, **env) as srv:
        yield srv


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server of this test alone: its stream can be expired or purged freely."""
    nats_server = EmbeddedNats(tmp_path / "nats")
    nats_server.start()
    try:
        yield nats_server
    finally:
        nats_server.stop()


@pytest.fixture
def own_pod(server: Server, own_nats: EmbeddedNats, tmp_path: Path) -> Iterator[Server]:
    with pod(server.backend, own_nats.url, tmp_path) as srv:
        yield srv


@pytest.fixture
def short_retention_pod(server: Server, own_nats: EmbeddedNats, tmp_path: Path) -> Iterator[Server]:
    """NOTIFY_STREAM_RETENTION_DAYS is the replay window: 0.00003 days is about 2.6 s."""
    with pod(server.backend, own_nats.url, tmp_path, NOTIFY_STREAM_RETENTION_DAYS="0.00003") as srv:
        yield srv


# --------------------------------------------------------------------------- handshake


async def test_welcome_first_then_ping_pong(server: Server, tenant: str) -> None:
    async with connect(ws_url(server.port, server.token("alice", tenant))) as ws:
        welcome = await recv_json(ws)
        assert welcome["type"] == "welcome"
        assert welcome["connection_id"]
        server_time = parse_time(welcome["server_time"])
        assert abs((server_time - dt.datetime.now(dt.UTC)).total_seconds()) < 60
        await send(ws, "ping")
        pong = await recv_json(ws)
        assert pong["type"] == "pong" and parse_time(pong["timestamp"])


@pytest.mark.parametrize("kind", ["missing", "garbage", "expired", "wrong-secret"])
async def test_bad_token_closes_4401(server: Server, tenant: str, kind: str) -> None:
    claims = {"sub": "alice", "tenant_id": tenant, "exp": int(time.time()) + 600}
    token = {
        "missing": None,
        "garbage": "not.a.jwt",
        "expired": server.token("alice", tenant, ttl=-30),
        "wrong-secret": jwt.encode(claims, "another-secret-that-is-long-enough-0123456789"),
    }[kind]
    async with connect(ws_url(server.port, token)) as ws:
        assert await close_code(ws) == 4401


# --------------------------------------------------------------------------- fan-out


async def test_user_notification_reaches_all_sockets_of_that_user_only(
    server: Server, tenant: str, alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    other = new_tenant()
    port = server.port
    async with (
        ws_open(port, server.token("alice", tenant)) as a1,
        ws_open(port, server.token("alice", tenant)) as a2,
        ws_open(port, server.token("bob", tenant)) as b,
        ws_open(port, server.token("alice", other)) as elsewhere,
        server.client("alice", other) as alice_elsewhere,
    ):
        first = await post_for(alice, "first")
        second = await post_for(alice, "second")
        for ws in (a1, a2):
            f1, f2 = await recv_notifications(ws, 2)
            assert f1["data"] == first and f2["data"] == second
            assert f2["seq"] > f1["seq"] > 0
            assert parse_time(f1["timestamp"])
        # bob and alice-of-another-tenant get their own next message, nothing before it
        await assert_next_is(b, (await post_for(bob, "bob's"))["id"])
        await assert_next_is(elsewhere, (await post_for(alice_elsewhere, "other tenant"))["id"])


async def test_tenant_broadcast_reaches_every_socket_of_the_tenant_only(
    server: Server, tenant: str, service: httpx.AsyncClient
) -> None:
    other = new_tenant()
    port = server.port
    async with (
        ws_open(port, server.token("alice", tenant)) as a,
        ws_open(port, server.token("bob", tenant)) as b,
        ws_open(port, server.token("root", tenant, ["user", "admin"])) as r,
        ws_open(port, server.token("alice", other)) as elsewhere,
        server.client("svc", other, ["service"]) as other_service,
    ):
        nid = await broadcast(service, broadcast_to_tenant=True)
        frames = [(await recv_notifications(ws, 1))[0] for ws in (a, b, r)]
        assert {f["data"]["id"] for f in frames} == {nid}
        assert frames[0]["data"]["user_id"] is None
        assert frames[0]["data"]["tenant_id"] == tenant
        sentinel = await broadcast(other_service, broadcast_to_tenant=True)
        await assert_next_is(elsewhere, sentinel)


async def test_channel_broadcast_reaches_subscribed_sockets_only(
    server: Server, tenant: str, service: httpx.AsyncClient, bob: httpx.AsyncClient
) -> None:
    channel = "ops.alerts"
    other = new_tenant()
    port = server.port
    async with (
        ws_open(port, server.token("alice", tenant, channels=[channel])) as member,
        ws_open(port, server.token("bob", tenant, channels=[channel])) as idle,
        ws_open(port, server.token("carol", other, channels=[channel])) as elsewhere,
        server.client("svc", other, ["service"]) as other_service,
    ):
        for ws in (member, elsewhere):
            await send(ws, "subscribe_channel", channel=channel)
            assert await recv_json(ws) == {"type": "subscribed", "channel": channel}

        nid = await broadcast(service, channel=channel)
        frame = await assert_next_is(member, nid)
        assert frame["data"]["user_id"] is None
        # not subscribed (though allowed), and the same channel name in another tenant
        await assert_next_is(idle, (await post_for(bob, "bob's"))["id"])
        await assert_next_is(elsewhere, await broadcast(other_service, channel=channel))


async def test_forbidden_channel_is_an_error_and_the_socket_stays_open(
    server: Server, tenant: str
) -> None:
    async with ws_open(server.port, server.token("alice", tenant, channels=["ops"])) as ws:
        await send(ws, "subscribe_channel", channel="finance")
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "forbidden_channel", error
        assert error["message"]
        await ping(ws)


async def test_unsubscribe_stops_channel_messages(
    server: Server, tenant: str, service: httpx.AsyncClient
) -> None:
    port = server.port
    async with (
        ws_open(port, server.token("alice", tenant, channels=["ops"])) as ws,
        ws_open(port, server.token("bob", tenant, channels=["ops"])) as witness,
    ):
        for member in (ws, witness):
            await send(member, "subscribe_channel", channel="ops")
            assert await recv_json(member) == {"type": "subscribed", "channel": "ops"}
        await assert_next_is(ws, await broadcast(service, channel="ops"))
        await send(ws, "unsubscribe_channel", channel="ops")
        assert await recv_json(ws) == {"type": "unsubscribed", "channel": "ops"}
        await recv_notifications(witness, 1)
        await assert_next_is(witness, await broadcast(service, channel="ops"))  # published
        await assert_next_is(ws, await broadcast(service, user_id="alice"))


# --------------------------------------------------------------------------- client frames


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", "invalid_json"),
        ('{"type": "nope"}', "unknown_type"),
        ('{"type": "mark_read"}', "invalid_message"),
        ('{"type": "subscribe_channel", "channel": "bad channel!"}', "invalid_message"),
        ('{"type": "resume", "since": -1}', "invalid_message"),
        ('{"type": "mark_read", "notification_id": "not-a-uuid"}', "not_found"),
    ],
)
async def test_bad_client_frames_get_an_error_and_the_socket_stays_open(
    server: Server, tenant: str, frame: str, code: str
) -> None:
    async with ws_open(server.port, server.token("alice", tenant)) as ws:
        await ws.send(frame)
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == code, error
        assert isinstance(error["message"], str)
        await ping(ws)


async def test_mark_read_over_the_socket_is_stored_and_sent_to_all_user_sockets(
    server: Server, tenant: str, alice: httpx.AsyncClient
) -> None:
    port = server.port
    async with (
        ws_open(port, server.token("alice", tenant)) as a1,
        ws_open(port, server.token("alice", tenant)) as a2,
    ):
        nid = (await post_for(alice))["id"]
        for ws in (a1, a2):
            await assert_next_is(ws, nid)
        await send(a1, "mark_read", notification_id=nid)
        events = [await recv_type(ws, "read") for ws in (a1, a2)]
        assert events[0] == events[1]
        assert set(events[0]) == {"type", "notification_id", "read_at"}
        assert events[0]["notification_id"] == nid
        stored = (await alice.get(f"{API}/{nid}")).json()
        assert stored["status"] == "read"
        assert parse_time(stored["read_at"]) == parse_time(events[0]["read_at"])


async def test_mark_read_of_another_users_notification_is_not_found(
    server: Server, tenant: str, bob: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    nid = (await post_for(bob))["id"]
    async with ws_open(server.port, server.token("alice", tenant)) as ws:
        await send(ws, "mark_read", notification_id=nid)
        error = await recv_type(ws, "error")
        assert error["code"] == "not_found"
    assert (await bob.get(f"{API}/{nid}")).json()["status"] == "unread"


# --------------------------------------------------------------------------- replay


async def test_reconnect_with_since_gets_exactly_the_missed_then_live(
    server: Server, tenant: str, alice: httpx.AsyncClient, service: httpx.AsyncClient
) -> None:
    token = server.token("alice", tenant)
    async with ws_open(server.port, token) as observer:  # sees everything, live
        async with ws_open(server.port, token) as ws:
            first = await post_for(alice, "seen")
            seen = await assert_next_is(ws, first["id"])
        await assert_next_is(observer, first["id"])

        missed_ids = [(await post_for(alice, f"missed {i}"))["id"] for i in range(3)]
        missed_ids.append(await broadcast(service, broadcast_to_tenant=True))
        missed = await recv_notifications(observer, 4)
        assert [f["data"]["id"] for f in missed] == missed_ids

        async with ws_open(server.port, token, since=seen["seq"]) as again:
            replayed = await recv_notifications(again, 4)
            assert [(f["seq"], f["data"]) for f in replayed] == [
                (f["seq"], f["data"]) for f in missed
            ]
            live = await post_for(alice, "live")
            frame = await recv_json(again)  # the very next frame: no repeat, no gap
            assert frame["type"] == "notification" and frame["data"] == live
            assert frame["seq"] > replayed[-1]["seq"]


async def test_resume_on_an_open_socket_sends_the_missed(
    server: Server, tenant: str, alice: httpx.AsyncClient
) -> None:
    token = server.token("alice", tenant)
    async with ws_open(server.port, token) as observer:
        async with ws_open(server.port, token) as ws:
            seen = await assert_next_is(ws, (await post_for(alice, "seen"))["id"])
        ids = [(await post_for(alice, f"missed {i}"))["id"] for i in range(2)]
        await recv_notifications(observer, 3)  # published: the stream holds them

        async with ws_open(server.port, token) as ws:
            await send(ws, "resume", since=seen["seq"])
            replayed = await recv_notifications(ws, 2)
            assert [f["data"]["id"] for f in replayed] == ids
            assert seen["seq"] < replayed[0]["seq"] < replayed[1]["seq"]
            live = (await post_for(alice, "live"))["id"]
            frame = await recv_json(ws)
            assert frame["type"] == "notification" and frame["data"]["id"] == live


async def test_since_at_the_newest_seq_replays_nothing(
    server: Server, tenant: str, alice: httpx.AsyncClient
) -> None:
    token = server.token("alice", tenant)
    async with ws_open(server.port, token) as ws:
        seen = await assert_next_is(ws, (await post_for(alice))["id"])
    async with ws_open(server.port, token, since=seen["seq"]) as ws:
        live = (await post_for(alice, "live"))["id"]
        frame = await recv_json(ws)
        assert frame["type"] == "notification" and frame["data"]["id"] == live


async def expect_replay_unavailable(srv: Server, tenant: str, since: int) -> None:
    """`since` is gone from the stream: an error, and the socket still works live."""
    token = srv.token("alice", tenant)
    async with ws_open(srv.port, token, since=since) as ws, srv.client("alice", tenant) as alice:
        error = await recv_json(ws)
        assert error["type"] == "error" and error["code"] == "replay_unavailable", error
        await ping(ws)
        live = (await post_for(alice, "live"))["id"]
        await assert_next_is(ws, live)


async def test_since_older_than_the_retention_is_replay_unavailable(
    short_retention_pod: Server, own_nats: EmbeddedNats
) -> None:
    srv, tenant = short_retention_pod, new_tenant()
    async with srv.client() as anon:
        health = (await anon.get("/health")).json()
    assert health["checks"]["nats"] == "ok", health
    async with (
        ws_open(srv.port, srv.token("alice", tenant)) as ws,
        srv.client("alice", tenant) as alice,
    ):
        first = await assert_next_is(ws, (await post_for(alice, "old"))["id"])
        await assert_next_is(ws, (await post_for(alice, "expires too"))["id"])
    state = await poll(lambda: stream_state(own_nats.url), lambda s: s.first_seq > first["seq"] + 1)
    assert state.first_seq > first["seq"] + 1, f"messages did not expire: {state}"
    await expect_replay_unavailable(srv, tenant, first["seq"])


async def test_since_before_purged_messages_is_replay_unavailable(
    own_pod: Server, own_nats: EmbeddedNats
) -> None:
    srv, tenant = own_pod, new_tenant()
    async with (
        ws_open(srv.port, srv.token("alice", tenant)) as ws,
        srv.client("alice", tenant) as alice,
    ):
        first = await assert_next_is(ws, (await post_for(alice, "old"))["id"])
        await assert_next_is(ws, (await post_for(alice, "purged"))["id"])
    nc = await nats.connect(own_nats.url)
    try:
        await nc.jetstream().purge_stream(STREAM)  # the stream lets them go, all at once
    finally:
        await nc.close()
    await expect_replay_unavailable(srv, tenant, first["seq"])


# --------------------------------------------------------------------------- limits


async def test_a_third_socket_replaces_the_oldest_with_4008(
    limits_server: Server, tenant: str
) -> None:
    srv, token = limits_server, limits_server.token("alice", tenant)
    async with (
        ws_open(srv.port, token) as oldest,
        ws_open(srv.port, token) as second,
        ws_open(srv.port, token) as third,
        srv.client("alice", tenant) as alice,
    ):
        assert await close_code(oldest) == 4008
        nid = (await post_for(alice))["id"]
        for ws in (second, third):
            await assert_next_is(ws, nid)
            await ping(ws)


async def test_a_frame_over_the_limit_closes_1009(limits_server: Server, tenant: str) -> None:
    async with ws_open(limits_server.port, limits_server.token("alice", tenant)) as ws:
        await ws.send(json.dumps({"type": "ping", "timestamp": "x" * 2000}))
        assert await close_code(ws) == 1009


async def test_a_frame_under_the_limit_is_fine(limits_server: Server, tenant: str) -> None:
    async with ws_open(limits_server.port, limits_server.token("alice", tenant)) as ws:
        await ws.send(json.dumps({"type": "ping", "timestamp": "x" * 900}))
        assert (await recv_json(ws))["type"] == "pong"


async def test_flooding_is_rate_limited_then_closed_1008(
    limits_server: Server, tenant: str
) -> None:
    async with ws_open(limits_server.port, limits_server.token("alice", tenant)) as ws:
        # NOTIFY_WS_RATE=5: a burst of 10 is answered, then messages are refused
        for _ in range(20):
            await send(ws, "ping")
        frames = [await recv_json(ws) for _ in range(20)]  # one answer each, in any order
        pongs = [f for f in frames if f["type"] == "pong"]
        refused = [f for f in frames if f["type"] == "error"]
        assert len(pongs) >= 10 and refused and len(pongs) + len(refused) == 20, frames
        assert {f["code"] for f in refused} == {"rate_limited"}
        with contextlib.suppress(ConnectionClosed):
            for _ in range(30):  # keeps going: abuse
                await send(ws, "ping")
        assert await close_code(ws) == 1008


async def test_a_slow_consumer_is_closed_1008_and_others_get_everything(
    limits_server: Server, tenant: str
) -> None:
    """The slow client never reads: its TCP window and the kernel's send buffer fill, then
    the pod's unsent bytes pass NOTIFY_WS_SEND_BUFFER (64 KiB) and the pod drops it."""
    srv, token = limits_server, limits_server.token("alice", tenant)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    raw.setblocking(False)
    await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", srv.port))
    pad = {"pad": "p" * 15000}  # ~20 KB frames
    count = tcp_send_buffer_max() // 20_000 + 60  # more than the kernel and limit can hold
    async with (
        connect(ws_url(srv.port, token), sock=raw, max_queue=1, ping_interval=None) as slow,
        ws_open(srv.port, token) as fast,
        srv.client("alice", tenant) as alice,
    ):
        reader = asyncio.create_task(recv_notifications(fast, count))
        ids = [
            (await post_for(alice, f"n{i}", message="m" * 4000, metadata=pad))["id"]
            for i in range(count)
        ]
        got = [f["data"]["id"] for f in await reader]
        assert got == ids, "the fast socket of the same user must get every message"

        slow_frames, code = await read_until_closed(slow)
        assert code == 1008
        assert slow_frames[0]["type"] == "welcome"
        assert 1 < len(slow_frames) < count + 1, "the slow socket was closed before the end"


# --------------------------------------------------------------------------- token expiry


async def test_an_expired_token_closes_the_socket_4401(server: Server, tenant: str) -> None:
    started = time.monotonic()
    async with ws_open(server.port, server.token("alice", tenant, ttl=2)) as ws:
        await ping(ws)
        assert await close_code(ws, within=6) == 4401
    assert 0.5 < time.monotonic() - started < 6


async def test_refresh_keeps_the_socket_past_the_old_expiry(server: Server, tenant: str) -> None:
    async with ws_open(server.port, server.token("alice", tenant, ttl=2)) as ws:
        fresh = server.token("alice", tenant, ttl=600)
        await send(ws, "refresh", token=fresh)
        refreshed = await recv_json(ws)
        exp = jwt.decode(fresh, JWT_SECRET, algorithms=["HS256"])["exp"]
        assert refreshed == {"type": "refreshed", "exp": exp}
        await asyncio.sleep(3.5)
        await ping(ws)


async def test_refresh_with_another_users_token_is_refused(server: Server, tenant: str) -> None:
    async with ws_open(server.port, server.token("alice", tenant, ttl=3)) as ws:
        for token in (server.token("bob", tenant), server.token("alice", new_tenant()), "junk"):
            await send(ws, "refresh", token=token)
            error = await recv_json(ws)
            assert error["type"] == "error" and error["code"] == "invalid_token", error
        await ping(ws)
        assert await close_code(ws, within=6) == 4401  # the old expiry still holds


# --------------------------------------------------------------------------- status


async def ws_status(client: httpx.AsyncClient) -> dict[str, int]:
    r = await client.get("/ws/status")
    assert r.status_code == 200, r.text
    return r.json()


async def test_ws_status_counts_this_pods_sockets(
    server: Server, tenant: str, service: httpx.AsyncClient, alice: httpx.AsyncClient
) -> None:
    keys = ("connections", "users", "tenants", "channel_subscriptions")
    base = {k: v for k, v in (await ws_status(service)).items() if k in keys}
    port = server.port
    async with (
        ws_open(port, server.token("alice", tenant, channels=["ops"])) as a1,
        ws_open(port, server.token("alice", tenant)) as a2,
        ws_open(port, server.token("bob", tenant)),
        ws_open(port, server.token("bob", new_tenant())),
    ):
        await send(a1, "subscribe_channel", channel="ops")
        await recv_type(a1, "subscribed")
        now = await ws_status(service)
        assert {k: now[k] - base[k] for k in keys} == {
            "connections": 4,
            "users": 3,
            "tenants": 2,
            "channel_subscriptions": 1,
        }
        before = await ws_status(service)
        nid = (await post_for(alice))["id"]
        for ws in (a1, a2):
            await assert_next_is(ws, nid)
        after = await ws_status(service)
        assert after["messages_in"] >= before["messages_in"] + 1
        assert after["messages_out"] >= before["messages_out"] + 2
    final = await poll(
        lambda: ws_status(service), lambda s: s["connections"] == base["connections"]
    )
    assert {k: final[k] for k in keys} == base


async def test_ws_status_is_for_service_tokens_only(server: Server, alice, admin) -> None:
    async with server.client() as anon:
        assert (await anon.get("/ws/status")).status_code == 401
    for client in (alice, admin):
        assert (await client.get("/ws/status")).status_code == 403


async def test_connections_table_has_a_row_per_open_socket(server: Server, tenant: str) -> None:
    engine = db.create_engine(server.settings)

    async def rows() -> list[tuple[str, Any]]:
        async with engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT user_id, pod_id FROM websocket_connections"
                    " WHERE tenant_id = :t ORDER BY user_id"
                ),
                {"t": tenant},
            )
            return [tuple(r) for r in result]

    try:
        port = server.port
        async with (
            ws_open(port, server.token("alice", tenant)),
            ws_open(port, server.token("alice", tenant)),
            ws_open(port, server.token("bob", tenant)),
        ):
            found = await poll(rows, lambda r: len(r) == 3)
            assert [user for user, _ in found] == ["alice", "alice", "bob"]
            assert {pod_id for _, pod_id in found} == {server.settings.pod_id}
        assert await poll(rows, lambda r: not r) == []
    finally:
        await engine.dispose()


async def test_channels_at_connect_are_covered_by_since(server: Server, tenant: str) -> None:
    """`?channels=` joins before the replay, so a reconnect also gets the channel's gap."""
    token = server.token("carol", tenant, channels=["ops"])
    async with server.client("svc", tenant, ["service"]) as svc:
        async with ws_open(server.port, token) as ws:
            await send(ws, "subscribe_channel", channel="ops")
            assert (await recv_json(ws))["type"] == "subscribed"
            first = await broadcast(svc, "before", channel="ops")
            [seen] = await recv_notifications(ws, 1)
            assert seen["data"]["id"] == first
        missed = [await broadcast(svc, f"gap{i}", channel="ops") for i in range(2)]
        missed.append(await broadcast(svc, "tenant-wide", broadcast_to_tenant=True))
        url = ws_url(server.port, token, since=seen["seq"]) + "&channels=ops,secret"
        async with connect(url, open_timeout=WAIT) as ws:
            types = [(await recv_json(ws))["type"] for _ in range(3)]
            assert types == ["welcome", "subscribed", "error"], types
            replayed = await recv_notifications(ws, 3)
            assert [f["data"]["id"] for f in replayed] == missed
            seqs = [f["seq"] for f in replayed]
            assert seqs == sorted(seqs) and seqs[0] > seen["seq"]
            live = await broadcast(svc, "live", channel="ops")
            await assert_next_is(ws, live)


@pytest.fixture(scope="module")
def fast_heartbeat_pod(
    server: Server, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with pod(
        server.backend, nats_url, tmp_path_factory.mktemp("beat"), NOTIFY_WS_HEARTBEAT="0.3"
    ) as srv:
        yield srv


async def test_connection_rows_survive_other_pods_cleanup_and_dead_pods_go(
    fast_heartbeat_pod: Server, tenant: str
) -> None:
    """A pod whose rows were removed (it looked dead during a database outage) writes them
    again; rows of a pod that stopped refreshing are removed by the live one."""
    srv = fast_heartbeat_pod
    engine = db.create_engine(srv.settings)

    async def pods() -> list[str]:
        async with engine.connect() as conn:
            result = await conn.execute(
                text("SELECT pod_id FROM websocket_connections WHERE tenant_id = :t"),
                {"t": tenant},
            )
            return sorted(r[0] for r in result)

    try:
        async with ws_open(srv.port, srv.token("alice", tenant)):
            assert await poll(pods, lambda p: p == [srv.settings.pod_id])
            async with engine.begin() as conn:
                await conn.execute(text("DELETE FROM websocket_connections"))
                await conn.execute(
                    text(
                        "INSERT INTO websocket_connections (id, tenant_id, user_id, pod_id,"
                        " channels, last_seen_at, created_at, updated_at) VALUES (:id, :t,"
                        " 'ghost', 'dead-pod', '[]', :old, :old, :old)"
                    ),
                    {
                        "id": uuid.uuid4().hex if srv.backend == "sqlite" else uuid.uuid4(),
                        "t": tenant,
                        "old": dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
                    },
                )
            assert await poll(pods, lambda p: p == [srv.settings.pod_id])
    finally:
        await engine.dispose()


async def test_a_fragmented_client_message_is_read_whole(server: Server, tenant: str) -> None:
    async with ws_open(server.port, server.token("frag", tenant)) as ws:
        await ws.send(iter(['{"type": ', '"pi', 'ng"}']))  # three frames, one message
        assert (await recv_type(ws, "pong"))["timestamp"]


@pytest.mark.parametrize(
    "headers",
    [
        b"Sec-WebSocket-Version: 13\r\n",  # no key
        b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n",  # not 16 bytes
    ],
)
async def test_a_bad_upgrade_is_a_400(server: Server, tenant: str, headers: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    token = server.token("bad", tenant)
    writer.write(
        f"GET /ws/notify?token={token} HTTP/1.1\r\nHost: x\r\n".encode()
        + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        + headers
        + b"\r\n"
    )
    status = await asyncio.wait_for(reader.readline(), WAIT)
    writer.close()
    assert status.startswith(b"HTTP/1.1 400"), status
