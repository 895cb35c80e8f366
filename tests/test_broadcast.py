"""POST /internal/broadcast: users, a whole tenant with per-user read state, channels."""

from __future__ import annotations

import uuid

API = "/api/v1/notifications"
BROADCAST = "/internal/broadcast"
BODY = {
    "title": "Assessment Complete",
    "message": "Ready for review",
    "notification_type": "assessment_complete",
}


async def broadcast(client, **target: object) -> list[str]:
    r = await client.post(BROADCAST, json={**BODY, **target})
    assert r.status_code == 202, r.text
    return r.json()["notification_ids"]


async def inbox(client, **params: object) -> list[dict]:
    r = await client.get(API, params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_to_one_user_and_to_a_list(service, alice, bob) -> None:
    [one] = await broadcast(service, user_id="alice")
    assert [n["id"] for n in await inbox(alice)] == [one]
    ids = await broadcast(service, user_ids=["alice", "bob", "alice"])
    assert len(ids) == 2, "duplicates in user_ids are one notification"
    [for_bob] = await inbox(bob)
    assert for_bob["user_id"] == "bob" and for_bob["id"] in ids
    assert {n["id"] for n in await inbox(alice)} == {one, *(set(ids) - {for_bob["id"]})}


async def test_tenant_wide_has_per_user_read_state(service, alice, bob) -> None:
    [nid] = await broadcast(service, broadcast_to_tenant=True)
    for client in (alice, bob):
        [n] = await inbox(client)
        assert n["id"] == nid and n["user_id"] is None and n["status"] == "unread"
        assert (await client.get(f"{API}/unread-count")).json() == {"unread_count": 1}

    r = await alice.post(f"{API}/{nid}/read")
    assert r.status_code == 200 and r.json()["status"] == "read"
    assert (await alice.get(f"{API}/unread-count")).json() == {"unread_count": 0}
    assert (await bob.get(f"{API}/unread-count")).json() == {"unread_count": 1}
    assert [n["status"] for n in await inbox(bob)] == ["unread"]
    assert [n["id"] for n in await inbox(alice, status="read")] == [nid]
    assert [n["id"] for n in await inbox(bob, status="unread")] == [nid]


async def test_read_all_includes_tenant_wide(service, alice, bob) -> None:
    await broadcast(service, broadcast_to_tenant=True)
    await broadcast(service, broadcast_to_tenant=True)
    await broadcast(service, user_id="alice")
    assert (await alice.post(f"{API}/read-all")).json() == {"updated": 3}
    assert (await alice.get(f"{API}/unread-count")).json() == {"unread_count": 0}
    assert (await bob.get(f"{API}/unread-count")).json() == {"unread_count": 2}
    assert {n["status"] for n in await inbox(alice)} == {"read"}


async def test_deleting_tenant_wide_removes_it_for_that_user_only(service, alice, bob) -> None:
    [nid] = await broadcast(service, broadcast_to_tenant=True)
    assert (await alice.delete(f"{API}/{nid}")).status_code == 204
    assert await inbox(alice) == []
    assert (await alice.get(f"{API}/{nid}")).status_code == 404
    assert (await alice.get(f"{API}/unread-count")).json() == {"unread_count": 0}
    assert [n["id"] for n in await inbox(bob)] == [nid]


async def test_tenant_wide_stays_in_its_tenant(server, service) -> None:
    [nid] = await broadcast(service, broadcast_to_tenant=True)
    async with server.client("alice", "elsewhere-" + uuid.uuid4().hex[:6]) as outsider:
        assert await inbox(outsider) == []
        assert (await outsider.get(f"{API}/{nid}")).status_code == 404


async def test_channel_notifications_are_not_in_inboxes(server, service, tenant, alice) -> None:
    [nid] = await broadcast(service, channel="iep_updates")
    assert await inbox(alice) == []
    assert (await alice.get(f"{API}/{nid}")).status_code == 404
    async with server.client("carol", tenant, channels=["iep_updates"]) as member:
        assert (await member.get(f"{API}/{nid}")).status_code == 200
    assert (await service.get(f"{API}/{nid}/deliveries")).status_code == 200


async def test_admin_may_broadcast_in_its_tenant_only(admin, alice) -> None:
    [nid] = await broadcast(admin, user_id="alice")
    assert [n["id"] for n in await inbox(alice)] == [nid]
    r = await admin.post(BROADCAST, json={**BODY, "user_id": "alice", "tenant_id": "other"})
    assert r.status_code == 403


async def test_any_tenant_service_must_name_the_tenant(server, tenant, alice) -> None:
    async with server.client("svc", "*", ["service"]) as svc:
        r = await svc.post(BROADCAST, json={**BODY, "broadcast_to_tenant": True})
        assert r.status_code == 422 and "tenant_id" in r.text
        r = await svc.post(
            BROADCAST, json={**BODY, "broadcast_to_tenant": True, "tenant_id": tenant}
        )
        assert r.status_code == 202
    assert len(await inbox(alice)) == 1


async def test_broadcast_is_idempotent(service, bob) -> None:
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    body = {**BODY, "user_ids": ["bob", "dave"]}
    a = await service.post(BROADCAST, json=body, headers=headers)
    b = await service.post(BROADCAST, json=body, headers=headers)
    assert a.status_code == b.status_code == 202 and a.json() == b.json()
    assert len(await inbox(bob)) == 1
