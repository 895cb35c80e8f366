"""Bad input (CONTRACT §4): 400/413/422 with a body naming the field, never a 500."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

INBOX = "/api/v1/notifications"
BROADCAST = "/internal/broadcast"
BODY = {"title": "hello", "message": "world"}
METADATA_MAX = 16 * 1024
BAD_INPUT = {400, 422}


def names(body: dict[str, Any], field: str) -> bool:
    """Whether the error body names `field`: as an `extra` key, or in a message or the detail."""
    texts = [body.get("detail", "")]
    extra = body.get("extra")
    if isinstance(extra, list):
        for item in extra:
            if str(item.get("key", "")).split("[")[0] == field:
                return True
            texts.append(str(item.get("message", "")))
    return any(field in text for text in texts)


def assert_bad(r: httpx.Response, field: str | None, statuses: set[int] = BAD_INPUT) -> None:
    """A 4xx in the error shape; when `field` is given, the body names it."""
    assert r.status_code in statuses, r.text
    body = r.json()
    assert body["status_code"] == r.status_code
    assert isinstance(body["detail"], str) and body["detail"]
    if field is not None:
        assert names(body, field), (field, body)


def metadata_of_size(size: int) -> dict[str, str]:
    """A metadata object whose compact JSON encoding is exactly `size` bytes."""
    overhead = len(json.dumps({"k": ""}, separators=(",", ":")))
    return {"k": "x" * (size - overhead)}


# --- POST /api/v1/notifications: the body --------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{bad", b'{"title": "t",', b"not json", b""],
    ids=["bad-key", "truncated", "not-json", "empty"],
)
async def test_malformed_json(alice: httpx.AsyncClient, raw: bytes) -> None:
    r = await alice.post(INBOX, content=raw, headers={"content-type": "application/json"})
    assert_bad(r, None, {400})


async def test_array_instead_of_object(alice: httpx.AsyncClient) -> None:
    r = await alice.post(INBOX, json=[BODY])
    assert_bad(r, None)
    assert "object" in r.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", 5),
        ("message", ["m"]),
        ("metadata", "x"),
        ("channels", "push"),
        ("priority", "critical"),
        ("channels", ["pigeon"]),
        ("channels", []),
        ("notification_type", "has spaces"),
        ("foo", 1),
    ],
    ids=[
        "title-int",
        "message-list",
        "metadata-str",
        "channels-str",
        "priority-unknown",
        "channel-unknown",
        "channels-empty",
        "type-pattern",
        "unknown-field",
    ],
)
async def test_bad_field(alice: httpx.AsyncClient, field: str, value: Any) -> None:
    assert_bad(await alice.post(INBOX, json={**BODY, field: value}), field)


@pytest.mark.parametrize("field", ["title", "message"])
async def test_missing_required_field(alice: httpx.AsyncClient, field: str) -> None:
    body = {k: v for k, v in BODY.items() if k != field}
    assert_bad(await alice.post(INBOX, json=body), field)


@pytest.mark.parametrize(("field", "limit"), [("title", 200), ("message", 4000)])
async def test_text_length_limits(alice: httpx.AsyncClient, field: str, limit: int) -> None:
    ok = await alice.post(INBOX, json={**BODY, field: "x" * limit})
    assert ok.status_code == 201, ok.text
    assert len(ok.json()[field]) == limit
    assert_bad(await alice.post(INBOX, json={**BODY, field: "x" * (limit + 1)}), field)


async def test_action_url_length(alice: httpx.AsyncClient) -> None:
    ok = await alice.post(INBOX, json={**BODY, "action_url": "/" + "x" * 2047})
    assert ok.status_code == 201, ok.text
    too_long = await alice.post(INBOX, json={**BODY, "action_url": "/" + "x" * 2048})
    assert_bad(too_long, "action_url")


@pytest.mark.parametrize("url", ["javascript:alert(1)", "data:text/html,hi", "ftp://x/y"])
async def test_action_url_scheme(alice: httpx.AsyncClient, url: str) -> None:
    assert_bad(await alice.post(INBOX, json={**BODY, "action_url": url}), "action_url")


@pytest.mark.parametrize("url", ["/inbox/1", "https://example.com/a?b=c"])
async def test_action_url_accepted(alice: httpx.AsyncClient, url: str) -> None:
    r = await alice.post(INBOX, json={**BODY, "action_url": url})
    assert r.status_code == 201, r.text
    assert r.json()["action_url"] == url


async def test_metadata_size_limit(alice: httpx.AsyncClient) -> None:
    at_limit = metadata_of_size(METADATA_MAX)
    ok = await alice.post(INBOX, json={**BODY, "metadata": at_limit})
    assert ok.status_code == 201, ok.text
    assert ok.json()["metadata"] == at_limit
    over = await alice.post(INBOX, json={**BODY, "metadata": metadata_of_size(METADATA_MAX + 1)})
    assert_bad(over, "metadata")


async def test_body_over_64_kib(alice: httpx.AsyncClient) -> None:
    r = await alice.post(INBOX, json={**BODY, "metadata": {"k": "x" * (64 * 1024)}})
    assert_bad(r, None, {413})


async def test_idempotency_key_too_long(alice: httpx.AsyncClient) -> None:
    ok = await alice.post(INBOX, json=BODY, headers={"Idempotency-Key": "k" * 255})
    assert ok.status_code == 201, ok.text
    r = await alice.post(INBOX, json=BODY, headers={"Idempotency-Key": "k" * 256})
    assert_bad(r, None, {400})
    assert "idempotency" in r.text.lower()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("title", "a\x00b"),
        ("message", "a\x00b"),
        ("metadata", {"k": "a\x00b"}),
        ("metadata", {"a\x00": 1}),
    ],
    ids=["title", "message", "metadata-value", "metadata-key"],
)
async def test_nul_character(alice: httpx.AsyncClient, field: str, value: Any) -> None:
    """U+0000 is valid JSON: either stored as sent or refused naming the field, never a 500."""
    r = await alice.post(INBOX, json={**BODY, field: value})
    if r.status_code == 201:
        assert r.json()[field] == value
    else:
        assert_bad(r, field)


async def test_rejected_bodies_store_nothing(alice: httpx.AsyncClient) -> None:
    await alice.post(INBOX, json={**BODY, "priority": "critical"})
    await alice.post(INBOX, json={**BODY, "metadata": metadata_of_size(METADATA_MAX + 1)})
    r = await alice.get(INBOX)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []


# --- GET /api/v1/notifications: the query --------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("limit", "0"),
        ("limit", "201"),
        ("limit", "ten"),
        ("status", "bogus"),
        ("priority", "bogus"),
        ("cursor", "garbage"),
        ("cursor", "eyJub3QiOiAiYSBjdXJzb3IifQ"),
        ("cursor", "x" * 600),
    ],
    ids=[
        "limit-0",
        "limit-201",
        "limit-text",
        "status",
        "priority",
        "cursor-garbage",
        "cursor-json-object",
        "cursor-too-long",
    ],
)
async def test_bad_list_query(alice: httpx.AsyncClient, param: str, value: str) -> None:
    assert_bad(await alice.get(INBOX, params={param: value}), param)


@pytest.mark.parametrize("limit", ["1", "200"])
async def test_list_limit_bounds_accepted(alice: httpx.AsyncClient, limit: str) -> None:
    r = await alice.get(INBOX, params={"limit": limit})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["/not-a-uuid", "/not-a-uuid/read", "/not-a-uuid/deliveries"])
async def test_not_a_uuid_id(alice: httpx.AsyncClient, path: str) -> None:
    method = "POST" if path.endswith("/read") else "GET"
    r = await alice.request(method, INBOX + path)
    assert r.status_code in {400, 404, 405, 422}, r.text


# --- POST /internal/broadcast: exactly one target ------------------------------------------


async def test_broadcast_without_target(service: httpx.AsyncClient) -> None:
    assert_bad(await service.post(BROADCAST, json=BODY), "target")


async def test_broadcast_with_two_targets(service: httpx.AsyncClient) -> None:
    r = await service.post(
        BROADCAST, json={**BODY, "user_id": "alice", "broadcast_to_tenant": True}
    )
    assert_bad(r, "target")
    assert "user_id" in r.json()["detail"] and "broadcast_to_tenant" in r.json()["detail"]


async def test_broadcast_with_empty_user_ids(service: httpx.AsyncClient) -> None:
    assert_bad(await service.post(BROADCAST, json={**BODY, "user_ids": []}), "user_ids")


async def test_broadcast_nul_in_user_id(service: httpx.AsyncClient) -> None:
    r = await service.post(BROADCAST, json={**BODY, "user_id": "a\x00"})
    if r.status_code != 202:
        assert_bad(r, "user_id")


async def test_broadcast_bad_channel_name(service: httpx.AsyncClient) -> None:
    assert_bad(await service.post(BROADCAST, json={**BODY, "channel": "no spaces"}), "channel")


async def test_cursor_with_a_time_but_no_zone_is_refused(alice) -> None:
    import base64
    import uuid

    raw = f'["2024-01-01T00:00:00","{uuid.uuid4()}"]'.encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    r = await alice.get("/api/v1/notifications", params={"cursor": cursor})
    assert r.status_code == 422, r.text
    assert "cursor" in r.text
