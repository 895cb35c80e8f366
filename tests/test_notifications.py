"""The notifications REST API end to end: create, inbox, read state, delete, isolation."""

from __future__ import annotations

import asyncio
import uuid

import httpx

API = "/api/v1/notifications"


async def create(client: httpx.AsyncClient, **body: object) -> dict:
    payload = {"title": "Hello", "message": "World", **body}
    r = await client.post(API, json=payload)
    assert r.status_code == 201, r.text
    return r.json()


async def test_create_returns_the_notification_with_defaults(alice, tenant) -> None:
    n = await create(
        alice, notification_type="iep_update", action_url="/iep/1", metadata={"iep_id": "1"}
    )
    assert uuid.UUID(n["id"])
    assert n["tenant_id"] == tenant and n["user_id"] == "alice"
    assert n["priority"] == "normal" and n["channels"] == ["websocket", "in_app"]
    assert n["status"] == "unread" and n["read_at"] is None
    assert n["metadata"] == {"iep_id": "1"} and n["action_url"] == "/iep/1"
    assert n["created_at"].endswith("Z")


async def test_get_read_delete_lifecycle(alice) -> None:
    n = await create(alice, priority="urgent")
    assert (await alice.get(f"{API}/{n['id']}")).json() == n
    assert (await alice.get(f"{API}/unread-count")).json() == {"unread_count": 1}

    read = await alice.post(f"{API}/{n['id']}/read")
    assert read.status_code == 200
    assert read.json()["status"] == "read" and read.json()["read_at"].endswith("Z")
    again = await alice.post(f"{API}/{n['id']}/read")
    assert again.json()["read_at"] == read.json()["read_at"], "first read time is kept"
    assert (await alice.get(f"{API}/unread-count")).json() == {"unread_count": 0}

    assert (await alice.delete(f"{API}/{n['id']}")).status_code == 204
    assert (await alice.get(f"{API}/{n['id']}")).status_code == 404
    assert (await alice.get(API)).json()["items"] == []
    assert (await alice.delete(f"{API}/{n['id']}")).status_code == 404


async def test_read_all_counts_and_clears(alice) -> None:
    for _ in range(3):
        await create(alice)
    assert (await alice.post(f"{API}/read-all")).json() == {"updated": 3}
    assert (await alice.post(f"{API}/read-all")).json() == {"updated": 0}
    assert (await alice.get(f"{API}/unread-count")).json() == {"unread_count": 0}


async def test_filters(alice) -> None:
    a = await create(alice, notification_type="a", priority="high")
    b = await create(alice, notification_type="b", priority="low")
    await alice.post(f"{API}/{b['id']}/read")

    async def ids(**params: object) -> list[str]:
        r = await alice.get(API, params=params)
        assert r.status_code == 200, r.text
        return [n["id"] for n in r.json()["items"]]

    assert await ids() == [b["id"], a["id"]]
    assert await ids(status="unread") == [a["id"]]
    assert await ids(status="read") == [b["id"]]
    assert await ids(notification_type="b") == [b["id"]]
    assert await ids(priority="high") == [a["id"]]
    assert await ids(priority="urgent") == []


async def test_users_never_see_each_other(alice, bob) -> None:
    n = await create(alice)
    for call in (
        bob.get(f"{API}/{n['id']}"),
        bob.post(f"{API}/{n['id']}/read"),
        bob.delete(f"{API}/{n['id']}"),
        bob.get(f"{API}/{n['id']}/deliveries"),
    ):
        r = await call
        assert r.status_code == 404, r.text
    assert (await bob.get(API)).json()["items"] == []
    assert (await bob.get(f"{API}/unread-count")).json() == {"unread_count": 0}
    assert (await alice.get(f"{API}/{n['id']}")).json()["status"] == "unread"


async def test_tenants_never_see_each_other(server, alice) -> None:
    n = await create(alice)
    async with server.client("alice", "other-tenant-" + uuid.uuid4().hex[:6]) as twin:
        assert (await twin.get(f"{API}/{n['id']}")).status_code == 404
        assert (await twin.post(f"{API}/{n['id']}/read")).status_code == 404
        assert (await twin.get(API)).json()["items"] == []
    async with server.client("root", "another-" + uuid.uuid4().hex[:6], ["admin"]) as admin:
        assert (await admin.get(f"{API}/{n['id']}")).status_code == 404


async def test_admin_acts_for_users_of_its_tenant(admin, alice, tenant) -> None:
    r = await admin.post(API, json={"title": "For Alice", "message": "m", "user_id": "alice"})
    assert r.status_code == 201, r.text
    n = r.json()
    assert n["user_id"] == "alice"
    assert (await alice.get(API)).json()["items"][0]["id"] == n["id"]
    assert (await admin.get(f"{API}/{n['id']}")).status_code == 200
    assert (await admin.post(f"{API}/{n['id']}/read")).json()["status"] == "read"
    assert (await alice.get(f"{API}/{n['id']}")).json()["status"] == "read"
    other = await admin.post(
        API, json={"title": "x", "message": "m", "user_id": "alice", "tenant_id": "someone-else"}
    )
    assert other.status_code == 403


async def test_user_cannot_target_another_user(alice, bob) -> None:
    r = await alice.post(API, json={"title": "x", "message": "m", "user_id": "bob"})
    assert r.status_code == 403
    assert (await bob.get(API)).json()["items"] == []


async def test_any_tenant_service_token_names_the_tenant(server, tenant, alice) -> None:
    async with server.client("svc", "*", ["service"]) as svc:
        missing = await svc.post(API, json={"title": "x", "message": "m", "user_id": "alice"})
        assert missing.status_code == 422 and "tenant_id" in missing.text
        r = await svc.post(
            API, json={"title": "x", "message": "m", "user_id": "alice", "tenant_id": tenant}
        )
        assert r.status_code == 201, r.text
    assert [n["id"] for n in (await alice.get(API)).json()["items"]] == [r.json()["id"]]


async def test_deliveries_list_one_row_per_channel(alice) -> None:
    n = await create(alice, channels=["websocket", "in_app", "email"])
    r = await alice.get(f"{API}/{n['id']}/deliveries")
    assert r.status_code == 200
    by_channel = {d["channel"]: d for d in r.json()["items"]}
    assert set(by_channel) == {"websocket", "in_app", "email"}
    assert by_channel["in_app"]["status"] == "sent"
    assert by_channel["email"]["status"] == "skipped" and by_channel["email"]["last_error"]
    for d in by_channel.values():
        assert set(d) == {"channel", "status", "attempts", "last_error", "target", "updated_at"}


async def test_websocket_delivery_is_sent_once_published(alice) -> None:
    n = await create(alice, channels=["websocket"])
    for _ in range(100):
        items = (await alice.get(f"{API}/{n['id']}/deliveries")).json()["items"]
        if items[0]["status"] == "sent":
            break
        await asyncio.sleep(0.05)
    assert items[0]["status"] == "sent" and items[0]["attempts"] == 1


# -- pagination -------------------------------------------------------------------------------
async def test_pagination_walks_every_row_once(alice) -> None:
    created = [(await create(alice, title=f"n{i}"))["id"] for i in range(7)]
    seen, cursor = [], None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await alice.get(API, params=params)).json()
        seen += [n["id"] for n in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == created[::-1]


async def test_pagination_under_concurrent_inserts(alice) -> None:
    """Rows arriving between pages are newer than the cursor: no skip, no repeat."""
    before = [(await create(alice, title=f"old{i}"))["id"] for i in range(10)]
    seen, cursor = [], None
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page_req = alice.get(API, params=params)
        inserts = [create(alice, title="new") for _ in range(3)]
        page, *_ = await asyncio.gather(page_req, *inserts)
        seen += [n["id"] for n in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "no row repeats"
    assert [i for i in seen if i in before] == before[::-1], "every old row, in order"


# -- idempotency ------------------------------------------------------------------------------
async def test_idempotency_key_replays_and_conflicts(alice) -> None:
    body = {"title": "Once", "message": "only once"}
    headers = {"Idempotency-Key": "k-" + uuid.uuid4().hex}
    first = await alice.post(API, json=body, headers=headers)
    second = await alice.post(API, json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.content == second.content
    other = await alice.post(API, json={**body, "title": "Twice?"}, headers=headers)
    assert other.status_code == 409 and "Idempotency-Key" in other.text
    assert len((await alice.get(API)).json()["items"]) == 1


async def test_idempotency_key_under_concurrency(alice) -> None:
    headers = {"Idempotency-Key": "race-" + uuid.uuid4().hex}
    body = {"title": "Race", "message": "m"}
    answers = await asyncio.gather(*(alice.post(API, json=body, headers=headers) for _ in range(8)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["id"] for a in answers}) == 1
    assert len((await alice.get(API)).json()["items"]) == 1


async def test_idempotency_keys_are_per_caller(alice, bob) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    a = await alice.post(API, json={"title": "a", "message": "m"}, headers=headers)
    b = await bob.post(API, json={"title": "a", "message": "m"}, headers=headers)
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"] and b.json()["user_id"] == "bob"
