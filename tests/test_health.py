"""GET /health checks its dependencies for real and names the failing one."""

from __future__ import annotations

import httpx
import msgspec

from tests.harness import Server


async def test_database_down_is_503_and_writes_are_503(server) -> None:
    broken = msgspec.structs.replace(
        server.settings, database_url="postgresql://postgres@127.0.0.1:1/nothing"
    )
    pod = Server(broken).start(migrate=False)
    try:
        async with httpx.AsyncClient(base_url=pod.url) as c:
            r = await c.get("/health")
            assert r.status_code == 503
            assert r.json()["checks"] == {"database": "unavailable", "nats": "ok"}
        async with pod.client("alice", "t") as c:
            r = await c.post("/api/v1/notifications", json={"title": "x", "message": "m"})
            assert r.status_code == 503 and r.json()["detail"].startswith("database")
            assert (await c.get("/api/v1/notifications")).status_code == 503
    finally:
        pod.stop()


async def test_openapi_documents_the_api(server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as c:
        spec = (await c.get("/schema/openapi.json")).json()
        docs = await c.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    paths = spec["paths"]
    for path in (
        "/api/v1/notifications",
        "/api/v1/notifications/{notification_id}",
        "/api/v1/notifications/{notification_id}/read",
        "/api/v1/notifications/read-all",
        "/api/v1/notifications/unread-count",
        "/api/v1/notifications/{notification_id}/deliveries",
        "/internal/broadcast",
        "/health",
    ):
        assert path in paths, path
    created = paths["/api/v1/notifications"]["post"]["responses"]["201"]
    assert "NotificationOut" in str(created)
