"""The service answers over real HTTP on every backend."""

import httpx


async def test_health_ok(server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as c:
        r = await c.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "checks": {"database": "ok", "nats": "ok"}}


async def test_create_and_list(alice) -> None:
    r = await alice.post("/api/v1/notifications", json={"title": "t", "message": "m"})
    assert r.status_code == 201, r.text
    r2 = await alice.get("/api/v1/notifications")
    assert [n["id"] for n in r2.json()["items"]] == [r.json()["id"]]
