"""Two `notify serve` processes over one database and one NATS: sockets on either pod get
what is addressed to them, whatever pod accepted it; seq, replay and read receipts cross
pods; a NATS restart loses nothing; SIGTERM sends clients elsewhere with 1001.

Every process started here runs in its own session and is killed in a `finally`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from notify.core.embedded import EmbeddedNats, free_port
from tests.harness import JWT_SECRET, backends, child_env, database, new_tenant
from tests.test_ws import (
    assert_next_is,
    broadcast,
    close_code,
    poll,
    post_for,
    recv_json,
    recv_notifications,
    recv_type,
    send,
    stream_state,
    ws_open,
)

NOTIFY = [sys.executable, "-m", "notify.cli"]
BACKEND = backends()[0]  # PostgreSQL when there is one: what several pods really share
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def pod_env(database_url: str, nats_url: str, data_dir: Path) -> dict[str, str]:
    return child_env(database_url, nats_url, data_dir)


class Pod:
    """One `notify serve` on a free port; its output goes to a log file."""

    def __init__(self, name: str, env: dict[str, str], tmp: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log = tmp / f"pod-{name}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*NOTIFY, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                cwd=tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return f"--- pod {self.name}:\n" + "\n".join(self.log.read_text().splitlines()[-40:])

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"pod {self.name} exited ({self.proc.returncode})\n{self.output()}")
            try:
                r = httpx.get(f"{self.url}/health", timeout=2)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        pytest.fail(f"pod {self.name} not healthy (last: {last})\n{self.output()}")

    def wait_exit(self) -> int:
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pod {self.name} still running after {STOP_TIMEOUT}s\n{self.output()}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def two_pods(database_url: str, nats_url: str, tmp: Path) -> Iterator[tuple[Pod, Pod]]:
    env = pod_env(database_url, nats_url, tmp)
    a, b = Pod("a", env, tmp), Pod("b", env, tmp)
    try:
        a.wait_healthy()
        b.wait_healthy()
        yield a, b
    finally:
        a.kill()
        b.kill()


def token(sub: str, tenant: str, roles: list[str] | None = None, **claims: Any) -> str:
    payload = {
        "sub": sub,
        "tenant_id": tenant,
        "roles": roles or ["user"],
        "exp": int(time.time()) + 600,
        **claims,
    }
    return jwt.encode(payload, JWT_SECRET, algorithm="HS256")


def client(pod: Pod, sub: str, tenant: str, roles: list[str] | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token(sub, tenant, roles)}"}
    return httpx.AsyncClient(base_url=pod.url, headers=headers, timeout=30)


# --------------------------------------------------------------------------- fixtures


@contextlib.contextmanager
def migrated_database(tmp: Path) -> Iterator[str]:
    """A fresh database, migrated by `notify migrate`."""
    with database(BACKEND, tmp) as url:
        migrated = subprocess.run(
            [*NOTIFY, "migrate"],
            env=pod_env(url, "nats://127.0.0.1:4222", tmp),
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert migrated.returncode == 0, migrated.stderr
        yield url


@pytest.fixture(scope="module")
def pods_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with migrated_database(tmp_path_factory.mktemp(f"pods-{BACKEND}")) as url:
        yield url


@pytest.fixture(scope="module")
def pods(
    pods_database: str, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Pod, Pod]]:
    with two_pods(pods_database, nats_url, tmp_path_factory.mktemp("pods")) as both:
        yield both


@pytest.fixture
def own_pods(pods_database: str, nats_url: str, tmp_path: Path) -> Iterator[tuple[Pod, Pod]]:
    """Two pods of this test alone (it stops one)."""
    with two_pods(pods_database, nats_url, tmp_path) as both:
        yield both


@pytest.fixture
def restartable_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A nats-server on a fixed port and store, so it can be stopped and started again."""
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pods_on_own_nats(restartable_nats: EmbeddedNats, tmp_path: Path) -> Iterator[tuple[Pod, Pod]]:
    """Their own database too: other pods' outbox relays publish to the shared NATS."""
    with (
        migrated_database(tmp_path) as url,
        two_pods(url, restartable_nats.url, tmp_path) as both,
    ):
        yield both


# --------------------------------------------------------------------------- tests


async def test_a_notification_posted_to_one_pod_reaches_sockets_on_both(
    pods: tuple[Pod, Pod],
) -> None:
    a, b = pods
    tenant = new_tenant()
    async with (
        ws_open(a.port, token("alice", tenant)) as on_a,
        ws_open(b.port, token("alice", tenant)) as on_b,
        ws_open(b.port, token("bob", tenant)) as bob_on_b,
        client(a, "alice", tenant) as alice,
        client(b, "bob", tenant) as bob,
    ):
        created = await post_for(alice)
        [fa] = await recv_notifications(on_a, 1)
        [fb] = await recv_notifications(on_b, 1)
        assert fa["data"] == created and fb["data"] == created
        assert fa["seq"] == fb["seq"], "seq is the stream's, the same on every pod"
        await assert_next_is(bob_on_b, (await post_for(bob, "bob's"))["id"])


async def test_broadcasts_reach_exactly_the_right_sockets_on_both_pods(
    pods: tuple[Pod, Pod],
) -> None:
    a, b = pods
    tenant, other = new_tenant(), new_tenant()
    ops = {"channels": ["ops"]}
    async with (
        ws_open(a.port, token("alice", tenant, **ops)) as alice,
        ws_open(b.port, token("bob", tenant, **ops)) as bob,
        ws_open(b.port, token("carol", tenant, **ops)) as carol,  # allowed, not subscribed
        ws_open(a.port, token("dave", other, **ops)) as dave,
        ws_open(b.port, token("erin", other, **ops)) as erin,
        client(a, "svc", tenant, ["service"]) as service,
        client(b, "svc", other, ["service"]) as other_service,
    ):
        for ws in (alice, bob, dave, erin):
            await send(ws, "subscribe_channel", channel="ops")
            assert await recv_json(ws) == {"type": "subscribed", "channel": "ops"}

        everyone = await broadcast(service, broadcast_to_tenant=True)
        for ws in (alice, bob, carol):
            await assert_next_is(ws, everyone)
        on_ops = await broadcast(service, channel="ops")
        for ws in (alice, bob):
            await assert_next_is(ws, on_ops)
        # sentinels: what carol, dave and erin get next is their own, nothing before it
        await assert_next_is(carol, await broadcast(service, user_id="carol"))
        sentinel = await broadcast(other_service, broadcast_to_tenant=True)
        for ws in (dave, erin):
            await assert_next_is(ws, sentinel)


async def test_mark_read_on_one_pod_is_sent_to_the_users_socket_on_the_other(
    pods: tuple[Pod, Pod],
) -> None:
    a, b = pods
    tenant = new_tenant()
    async with (
        ws_open(a.port, token("alice", tenant)) as on_a,
        ws_open(b.port, token("alice", tenant)) as on_b,
        client(a, "alice", tenant) as alice,
    ):
        nid = (await post_for(alice))["id"]
        for ws in (on_a, on_b):
            await assert_next_is(ws, nid)
        await send(on_a, "mark_read", notification_id=nid)
        read = await recv_type(on_b, "read")
        assert read["notification_id"] == nid and read["read_at"]
        assert await recv_type(on_a, "read") == read
        assert (await alice.get(f"/api/v1/notifications/{nid}")).json()["status"] == "read"


async def test_replay_after_reconnecting_to_the_other_pod(pods: tuple[Pod, Pod]) -> None:
    a, b = pods
    tenant = new_tenant()
    alice_token = token("alice", tenant)
    async with (
        ws_open(b.port, alice_token) as observer,
        client(a, "alice", tenant) as alice,
        client(a, "svc", tenant, ["service"]) as service,
    ):
        async with ws_open(a.port, alice_token) as ws:
            seen = await assert_next_is(ws, (await post_for(alice, "seen"))["id"])
        await assert_next_is(observer, seen["data"]["id"])
        ids = [(await post_for(alice, f"missed {i}"))["id"] for i in range(2)]
        ids.append(await broadcast(service, broadcast_to_tenant=True))
        missed = await recv_notifications(observer, 3)
        assert [f["data"]["id"] for f in missed] == ids

        async with ws_open(b.port, alice_token, since=seen["seq"]) as again:
            replayed = await recv_notifications(again, 3)
            assert [(f["seq"], f["data"]) for f in replayed] == [
                (f["seq"], f["data"]) for f in missed
            ]
            live = (await post_for(alice, "live"))["id"]
            frame = await recv_json(again)
            assert frame["type"] == "notification" and frame["data"]["id"] == live


async def test_a_nats_restart_loses_nothing_and_repeats_nothing(
    pods_on_own_nats: tuple[Pod, Pod], restartable_nats: EmbeddedNats
) -> None:
    a, b = pods_on_own_nats
    tenant = new_tenant()
    async with (
        ws_open(a.port, token("alice", tenant)) as on_a,
        ws_open(b.port, token("alice", tenant)) as on_b,
        client(a, "alice", tenant) as alice,
    ):
        before = (await post_for(alice, "before"))["id"]
        for ws in (on_a, on_b):
            await assert_next_is(ws, before)

        last_seq = (await stream_state(restartable_nats.url)).last_seq
        await asyncio.to_thread(restartable_nats.stop)
        during = await post_for(alice, "while NATS was down")  # 201: committed, in the outbox
        await asyncio.to_thread(restartable_nats.start)
        restarted = time.monotonic()

        state = await poll(
            lambda: stream_state(restartable_nats.url), lambda s: s.last_seq > last_seq, 15
        )
        assert state.last_seq == last_seq + 1, f"the outbox did not publish it once: {state}"
        for ws in (on_a, on_b):
            frame = await recv_type(ws, "notification", within=restarted + 15 - time.monotonic())
            assert frame["data"] == during
        after = (await post_for(alice, "after"))["id"]
        for ws in (on_a, on_b):
            await assert_next_is(ws, after)  # and not `during` a second time


async def test_sigterm_closes_sockets_1001_and_clients_resume_on_the_other_pod(
    own_pods: tuple[Pod, Pod],
) -> None:
    a, b = own_pods
    tenant = new_tenant()
    alice_token = token("alice", tenant)
    async with client(a, "alice", tenant) as alice:
        async with ws_open(b.port, alice_token) as on_b:
            seen = await assert_next_is(on_b, (await post_for(alice, "seen"))["id"])
            b.proc.send_signal(signal.SIGTERM)
            assert await close_code(on_b) == 1001
        assert b.wait_exit() in (0, -signal.SIGTERM), b.output()

        missed = (await post_for(alice, "missed"))["id"]
        async with ws_open(a.port, alice_token, since=seen["seq"]) as on_a:
            await assert_next_is(on_a, missed)
            live = (await post_for(alice, "live"))["id"]
            frame = await recv_json(on_a)
            assert frame["type"] == "notification" and frame["data"]["id"] == live
