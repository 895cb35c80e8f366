"""The digest over HTTP and `notify digest tick --at`: settings, upcoming, preview, ticks."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.harness import Server, child_env

SUB = "/api/v1/digest/subscription"
UTC = dt.UTC


def cli(server: Server, *args: str) -> dict[str, Any]:
    """Run a `notify` command on the server's database; its one JSON line."""
    env = child_env(
        server.settings.database_url, server.settings.nats_url, server.settings.data_dir
    )
    out = subprocess.run(
        [sys.executable, "-m", "notify.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def tick(server: Server, at: dt.datetime) -> dict[str, Any]:
    return cli(server, "digest", "tick", "--at", at.isoformat())


def iso(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def put(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.put(SUB, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def post(client: httpx.AsyncClient, title: str, **over: Any) -> dict[str, Any]:
    body = {"title": title, "message": f"{title} body", "notification_type": "comment", **over}
    r = await client.post("/api/v1/notifications", json=body)
    assert r.status_code == 201, r.text
    return dict(r.json())


async def digests(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/notifications", params={"notification_type": "digest"})
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


@pytest.fixture(autouse=True)
async def switched_off_afterwards(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient
) -> AsyncIterator[None]:
    """`tick --at` judges every subscription: leave none enabled for the next test."""
    yield
    for client in (alice, bob):
        await client.put(SUB, json={"is_enabled": False})


# -- settings ---------------------------------------------------------------------------


async def test_settings_default_to_disabled_with_no_next_delivery(alice: httpx.AsyncClient) -> None:
    r = await alice.get(SUB)
    assert r.status_code == 200
    assert r.json()["is_enabled"] is False
    assert r.json()["next_delivery_at"] is None


async def test_put_stores_the_settings_and_answers_the_next_delivery(
    alice: httpx.AsyncClient,
) -> None:
    body = {
        "is_enabled": True,
        "delivery_time": "07:00",
        "timezone": "America/New_York",
        "frequency": "daily",
        "include_types": ["iep_update", "signature_request"],
        "exclude_weekends": False,
        "min_priority": "normal",
    }
    out = await put(alice, **body)
    assert {k: out[k] for k in body} == body
    nxt = iso(out["next_delivery_at"])
    assert nxt > dt.datetime.now(UTC)
    local = nxt.astimezone(
        dt.timezone(dt.timedelta(hours=-5 if nxt.month in (1, 2, 11, 12) else -4))
    )
    assert (local.hour, local.minute) == (7, 0)
    assert (await alice.get(SUB)).json() == out
    up = (await alice.get("/api/v1/digest/upcoming", params={"count": 1})).json()
    assert [iso(d) for d in up["deliveries"]] == [nxt]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timezone", "Mars/Olympus"),
        ("timezone", "localtime"),
        ("delivery_time", "7:00"),
        ("delivery_time", "24:00"),
        ("delivery_time", "07:60"),
        ("frequency", "hourly"),
        ("min_priority", "extreme"),
        ("weekday", 7),
    ],
)
async def test_bad_settings_are_422_naming_the_field(
    alice: httpx.AsyncClient, field: str, value: Any
) -> None:
    body = {"frequency": "weekly", "weekday": 0} if field == "weekday" else {}
    r = await alice.put(SUB, json={**body, field: value})
    assert r.status_code == 422, r.text
    assert r.json()["extra"][0]["key"] == field


async def test_weekly_needs_a_weekday(alice: httpx.AsyncClient) -> None:
    r = await alice.put(SUB, json={"frequency": "weekly"})
    assert r.status_code == 422
    assert r.json()["extra"][0]["key"] == "weekday"


# -- upcoming ---------------------------------------------------------------------------


async def test_upcoming_follows_the_zone_across_the_spring_gap(alice: httpx.AsyncClient) -> None:
    await put(alice, delivery_time="02:30", timezone="America/New_York")
    r = await alice.get(
        "/api/v1/digest/upcoming", params={"after": "2027-03-13T00:00:00Z", "count": 3}
    )
    assert r.status_code == 200, r.text
    assert [iso(d) for d in r.json()["deliveries"]] == [
        dt.datetime(2027, 3, 13, 7, 30, tzinfo=UTC),  # EST
        dt.datetime(2027, 3, 14, 7, 0, tzinfo=UTC),  # 02:30 does not exist: 03:00 EDT
        dt.datetime(2027, 3, 15, 6, 30, tzinfo=UTC),  # EDT
    ]


async def test_upcoming_weekly_and_weekends_by_local_date(alice: httpx.AsyncClient) -> None:
    await put(alice, delivery_time="09:00", timezone="Asia/Kathmandu", exclude_weekends=True)
    r = await alice.get(
        "/api/v1/digest/upcoming", params={"after": "2026-11-27T00:00:00Z", "count": 2}
    )
    # Fri 27th 09:00 +05:45 = 03:15Z; then Monday 30th (Sat and Sun skipped).
    assert [iso(d) for d in r.json()["deliveries"]] == [
        dt.datetime(2026, 11, 27, 3, 15, tzinfo=UTC),
        dt.datetime(2026, 11, 30, 3, 15, tzinfo=UTC),
    ]
    await put(alice, delivery_time="07:00", timezone="Asia/Kolkata", frequency="weekly", weekday=2)
    r = await alice.get(
        "/api/v1/digest/upcoming", params={"after": "2026-11-25T02:00:00Z", "count": 2}
    )
    assert [iso(d) for d in r.json()["deliveries"]] == [
        dt.datetime(2026, 12, 2, 1, 30, tzinfo=UTC),
        dt.datetime(2026, 12, 9, 1, 30, tzinfo=UTC),
    ]


@pytest.mark.parametrize("params", [{"count": 0}, {"count": 31}, {"after": "yesterday"}])
async def test_upcoming_rejects_bad_queries(alice: httpx.AsyncClient, params: Any) -> None:
    await put(alice)
    r = await alice.get("/api/v1/digest/upcoming", params=params)
    assert r.status_code in (400, 422), r.text


# -- preview ----------------------------------------------------------------------------


async def test_preview_summarises_filters_and_ranks(
    alice: httpx.AsyncClient, bob: httpx.AsyncClient, service: httpx.AsyncClient, tenant: str
) -> None:
    await put(alice, include_types=["comment", "ops"], min_priority="normal")
    await post(alice, "low one", priority="low")
    a = await post(alice, "normal one", priority="normal")
    await post(alice, "urgent one", priority="urgent")
    await post(alice, "high other type", priority="high", notification_type="billing")
    await post(bob, "not mine", priority="urgent")
    for i in range(5):
        await post(alice, f"high {i}", priority="high")
    r = await service.post(
        "/internal/broadcast",
        json={
            "title": "everyone",
            "message": "m",
            "notification_type": "ops",
            "broadcast_to_tenant": True,
        },
    )
    assert r.status_code == 202
    assert (await alice.post(f"/api/v1/notifications/{a['id']}/read")).status_code == 200
    d = (await alice.get("/api/v1/digest/preview")).json()
    s = d["summary"]
    assert s["total_notifications"] == 8  # normal, urgent, 5 high, the broadcast
    assert s["unread_notifications"] == 7
    assert s["priority_breakdown"] == {"urgent": 1, "high": 5, "normal": 2, "low": 0}
    assert {t: g["count"] for t, g in d["notifications_by_type"].items()} == {
        "comment": 7,
        "ops": 1,
    }
    top = d["top_notifications"]
    assert [t["title"] for t in top] == ["urgent one", "high 4", "high 3", "high 2", "high 1"]
    assert d["date"] == dt.datetime.now(UTC).date().isoformat()


# -- ticks ------------------------------------------------------------------------------


async def test_a_tick_sends_once_when_due_and_never_early(
    server: Server, alice: httpx.AsyncClient
) -> None:
    out = await put(alice, delivery_time="07:00", timezone="Asia/Kolkata")
    await post(alice, "first", priority="urgent")
    await post(alice, "second")
    due_at = iso(out["next_delivery_at"])
    assert tick(server, due_at - dt.timedelta(minutes=1)) == {"due": 0, "sent": 0, "skipped": 0}
    assert tick(server, due_at) == {"due": 1, "sent": 1, "skipped": 0}
    assert tick(server, due_at + dt.timedelta(minutes=5)) == {"due": 0, "sent": 0, "skipped": 0}
    (note,) = await digests(alice)
    assert note["priority"] == "normal" and note["user_id"] == "alice"
    content = note["metadata"]["digest"]
    assert (
        content["date"]
        == due_at.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))).date().isoformat()
    )
    assert content["summary"]["total_notifications"] == 2
    assert content["top_notifications"][0]["title"] == "first"
    assert "2 notifications" in note["message"] and "first" in note["message"]


async def test_an_empty_period_sends_nothing(server: Server, alice: httpx.AsyncClient) -> None:
    out = await put(alice, delivery_time="07:00", timezone="Australia/Sydney")
    due_at = iso(out["next_delivery_at"])
    assert tick(server, due_at + dt.timedelta(hours=1)) == {"due": 1, "sent": 0, "skipped": 1}
    assert await digests(alice) == []


async def test_a_disabled_or_filtered_out_user_gets_nothing(
    server: Server, alice: httpx.AsyncClient
) -> None:
    out = await put(alice, delivery_time="07:00", timezone="UTC", include_types=["billing"])
    await post(alice, "a comment")
    due_at = iso(out["next_delivery_at"])
    assert tick(server, due_at)["sent"] == 0
    await put(alice, is_enabled=False)
    await post(alice, "billing", notification_type="billing")
    assert tick(server, due_at + dt.timedelta(days=1))["due"] == 0
    assert await digests(alice) == []


async def test_two_ticks_at_once_send_one_digest(server: Server, alice: httpx.AsyncClient) -> None:
    out = await put(alice, delivery_time="07:00", timezone="America/New_York")
    await post(alice, "only")
    due_at = iso(out["next_delivery_at"]) + dt.timedelta(minutes=2)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: tick(server, due_at), range(3)))
    assert sum(r["sent"] for r in results) == 1, (results, due_at, out)
    assert len(await digests(alice)) == 1


@pytest.mark.parametrize(
    ("zone", "time", "first_due"),
    [
        # Spring gap: 02:30 does not exist; delivered at 03:00 EDT.
        ("America/New_York", "02:30", dt.datetime(2027, 3, 14, 7, 0, tzinfo=UTC)),
        # Fall back: 01:30 happens twice; the first (EDT) counts, the second sends nothing.
        ("America/New_York", "01:30", dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC)),
        ("Europe/London", "01:30", dt.datetime(2027, 3, 28, 1, 0, tzinfo=UTC)),
        ("Europe/London", "01:30", dt.datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        ("Australia/Sydney", "02:30", dt.datetime(2026, 10, 3, 16, 0, tzinfo=UTC)),
        ("Australia/Sydney", "02:30", dt.datetime(2027, 4, 3, 15, 30, tzinfo=UTC)),
        ("Asia/Kolkata", "07:00", dt.datetime(2026, 11, 26, 1, 30, tzinfo=UTC)),
        ("Asia/Kathmandu", "00:10", dt.datetime(2026, 11, 26, 18, 25, tzinfo=UTC)),
    ],
)
async def test_ticks_across_zones_and_dst_deliver_once_at_the_first_valid_minute(
    server: Server, alice: httpx.AsyncClient, zone: str, time: str, first_due: dt.datetime
) -> None:
    await put(alice, delivery_time=time, timezone=zone)
    minute = dt.timedelta(minutes=1)
    assert tick(server, first_due - minute)["due"] == 0
    assert tick(server, first_due)["due"] == 1
    # Later the same local day (the repeated hour included): nothing more.
    assert tick(server, first_due + dt.timedelta(hours=1))["due"] == 0
    assert tick(server, first_due + dt.timedelta(hours=1, minutes=30))["due"] == 0


async def test_a_scheduler_that_was_down_catches_up_the_same_day_only(
    server: Server, alice: httpx.AsyncClient
) -> None:
    await put(alice, delivery_time="07:00", timezone="Europe/London")
    # Down from before 07:00 until 15:00: today's digest goes at once.
    assert tick(server, dt.datetime(2027, 1, 12, 15, 0, tzinfo=UTC))["due"] == 1
    # Down all of the 13th: it is not sent on the 14th before 07:00…
    assert tick(server, dt.datetime(2027, 1, 14, 6, 59, tzinfo=UTC))["due"] == 0
    # …and the 14th's comes at its time.
    assert tick(server, dt.datetime(2027, 1, 14, 7, 0, tzinfo=UTC))["due"] == 1


async def test_weekends_are_skipped_by_local_date(server: Server, alice: httpx.AsyncClient) -> None:
    await put(alice, delivery_time="06:00", timezone="Pacific/Auckland", exclude_weekends=True)
    # Friday 2026-11-27 17:00Z is Saturday 06:00 in Auckland (+13): no digest.
    assert tick(server, dt.datetime(2026, 11, 27, 17, 0, tzinfo=UTC))["due"] == 0
    # Sunday 17:00Z is Monday 06:00 there.
    assert tick(server, dt.datetime(2026, 11, 29, 17, 0, tzinfo=UTC))["due"] == 1


async def test_weekly_goes_on_its_weekday_only(server: Server, alice: httpx.AsyncClient) -> None:
    await put(alice, delivery_time="08:00", timezone="UTC", frequency="weekly", weekday=3)
    assert tick(server, dt.datetime(2026, 12, 2, 9, 0, tzinfo=UTC))["due"] == 0  # Wednesday
    assert tick(server, dt.datetime(2026, 12, 3, 9, 0, tzinfo=UTC))["due"] == 1  # Thursday
