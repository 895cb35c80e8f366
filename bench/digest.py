"""Digest benchmark for notify: one tick that builds and records every due digest.

Creates a fresh PostgreSQL database (dropped afterwards, also on error or Ctrl-C), migrates
it, seeds U digest subscriptions spread over time zones so that everyone is due at the
bench's `now`, and M notifications for them, all with SQL; then runs
`notify.digest.tick.tick` once in this process and measures its wall time, the CPU of this
process and of its database backend, the time spent in SQL round trips and the peak RSS.
It then checks exactly-once: a second tick at the same `now` sends nothing, and so does a
tick after the subscriptions are re-armed (only the `digest_runs` claims stop that one).
Prints one JSON document, then one line of text.

    .venv/bin/python bench/digest.py [--users U] [--notifications M] ...
    .venv/bin/python bench/digest.py --sweep 10000,50000,100000   # one process per size
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.rest import (
    DEFAULT_PG_DSN,
    LOREM,
    NOTIFICATION_TYPES,
    cpu_seconds,
    database,
    git,
    log,
)

TARGET_SECONDS = 60.0
ZONES = (
    "UTC",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Europe/London",
    "Europe/Berlin",
    "Africa/Nairobi",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Asia/Tokyo",
    "Australia/Sydney",
    "Pacific/Auckland",
)
MB = 1024 * 1024


# --------------------------------------------------------------------------- schedule


@dataclass(frozen=True, slots=True)
class Slot:
    """One (zone, delivery time) whose delivery today is `instant`, at most `spread` min ago."""

    zone: str
    delivery_time: str
    instant: dt.datetime


def due_slots(now: dt.datetime, spread: int) -> list[Slot]:
    """Every zone and 1..spread minutes before `now`, kept when the tick would judge it due
    today (a wall time before local midnight belongs to yesterday and is left out)."""
    from notify.digest.schedule import Schedule, delivery_instant, due_day, local_date

    slots = []
    for zone in ZONES:
        for minutes in range(1, spread + 1):
            wall = (now - dt.timedelta(minutes=minutes)).astimezone(ZoneInfo(zone))
            schedule = Schedule.parse(f"{wall:%H:%M}", zone)
            day = due_day(schedule, now)
            if day is None or day != local_date(schedule, now):
                continue
            instant = delivery_instant(schedule, day)
            if instant <= now:
                slots.append(Slot(zone, f"{wall:%H:%M}", instant))
    if not slots:
        raise SystemExit("bench: no (zone, delivery time) is due at --now; widen --spread")
    return slots


# --------------------------------------------------------------------------- seeding

# User g of U is in tenant g·T/U (blocks); its slot is g·7919 mod (number of slots).
SUBSCRIPTIONS_SQL = """
INSERT INTO digest_subscriptions (
    id, tenant_id, user_id, is_enabled, delivery_time, timezone, frequency, weekday,
    include_types, exclude_weekends, min_priority, next_delivery_at, last_delivered_at,
    last_digest_date, created_at, updated_at)
SELECT gen_random_uuid(), 'tenant-' || lpad((g * $2 / $1)::text, 3, '0'),
    'user-' || lpad(g::text, 7, '0'), true,
    ($4::text[])[s], ($5::text[])[s], 'daily', NULL, '[]'::jsonb, false, 'low',
    ($6::timestamptz[])[s], NULL, NULL, $7::timestamptz - interval '30 days',
    $7::timestamptz - interval '30 days'
FROM (SELECT g, 1 + (g::bigint * 7919) % $3 AS s FROM generate_series(0, $1 - 1) AS g) AS x
"""

# Notification i is user i mod U's; h1..h3 are deterministic "random" numbers per row.
NOTIFICATIONS_SQL = """
INSERT INTO notifications (
    id, tenant_id, user_id, audience, channel, title, message, notification_type, priority,
    channels, action_url, metadata, status, read_at, created_by, created_at, updated_at)
SELECT gen_random_uuid(), 'tenant-' || lpad((u * $2 / $1)::text, 3, '0'),
    'user-' || lpad(u::text, 7, '0'), 'user', NULL,
    initcap(replace(kind, '_', ' ')) || ' #' || ord, substr($5, 1 + (h2 % 40)::int, 200),
    kind,
    CASE WHEN h2 % 100 < 20 THEN 'low' WHEN h2 % 100 < 80 THEN 'normal'
         WHEN h2 % 100 < 95 THEN 'high' ELSE 'urgent' END,
    '["websocket", "in_app"]'::jsonb, '/orders/' || ord, '{}'::jsonb,
    CASE WHEN h3 % 10 < 6 THEN 'unread' ELSE 'read' END,
    CASE WHEN h3 % 10 < 6 THEN NULL ELSE ts + interval '5 minutes' END,
    'bench', ts, ts
FROM (
    SELECT u, ord, h2, h3, ($4::text[])[1 + (h1 % cardinality($4::text[]))::int] AS kind,
        $6::timestamptz - interval '1 second' - (h3 % 82800) * interval '1 second' AS ts
    FROM (
        SELECT i % $1 AS u, 10000 + (i::bigint * 7) % 89999 AS ord,
            hashint8(i) + 2147483648 AS h1, hashint8(-i - 1) + 2147483648 AS h2,
            hashint8(i + 4611686018427387904) + 2147483648 AS h3
        FROM generate_series(0, $3 - 1) AS i
    ) AS r
) AS x
"""

TENANT_WIDE_SQL = """
INSERT INTO notifications (
    id, tenant_id, user_id, audience, channel, title, message, notification_type, priority,
    channels, action_url, metadata, status, read_at, created_by, created_at, updated_at)
SELECT gen_random_uuid(), 'tenant-' || lpad((j % $1)::text, 3, '0'), NULL, 'tenant', NULL,
    'Maintenance window ' || j, substr($3, 1, 180), 'announcement', 'normal',
    '["websocket", "in_app"]'::jsonb, NULL, '{}'::jsonb, 'unread', NULL, 'bench', ts, ts
FROM (SELECT j, $4::timestamptz - interval '1 second'
        - ((j::bigint * 7919) % 82800) * interval '1 second' AS ts
      FROM generate_series(0, $2 - 1) AS j) AS x
"""

# A fifth of the users read the tenant-wide rows, one in a hundred removed them.
READS_SQL = """
INSERT INTO notification_reads (notification_id, user_id, tenant_id, read_at, deleted_at)
SELECT n.id, s.user_id, s.tenant_id, n.created_at + interval '1 minute',
    CASE WHEN right(s.user_id, 2) = '05' THEN n.created_at + interval '2 minutes' END
FROM notifications AS n JOIN digest_subscriptions AS s ON s.tenant_id = n.tenant_id
WHERE n.audience = 'tenant' AND right(s.user_id, 1) IN ('0', '5')
"""

PUSH_SQL = """
INSERT INTO push_subscriptions (
    id, tenant_id, user_id, endpoint, endpoint_hash, p256dh_key, auth_key, user_agent,
    device_info, is_active, last_used_at, created_at, updated_at)
SELECT id, tenant_id, user_id, 'https://push.example/' || id,
    encode(sha256(id::text::bytea), 'hex'), 'p256dh', 'auth', 'bench', '{}'::jsonb, true,
    NULL, $1::timestamptz, $1::timestamptz
FROM (SELECT gen_random_uuid() AS id, tenant_id, user_id FROM digest_subscriptions
      WHERE (hashtext(user_id)::bigint + 2147483648) % 1000 < $2) AS x
"""


async def seed(dsn: str, args: argparse.Namespace, now: dt.datetime) -> dict[str, Any]:
    """Every row with INSERT … SELECT; the notifications' secondary indexes are dropped for
    the load and rebuilt from their own definitions, then VACUUM ANALYZE and CHECKPOINT."""
    slots = due_slots(now, args.spread)
    steps: dict[str, float] = {}
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SET maintenance_work_mem = '512MB'")

        async def step(name: str, sql: str, *params: Any) -> None:
            start = time.perf_counter()
            await conn.execute(sql, *params)
            steps[name] = round(time.perf_counter() - start, 2)
            log(f"seed {name}: {steps[name]:.1f}s")

        start = time.perf_counter()
        await step(
            "digest_subscriptions",
            SUBSCRIPTIONS_SQL,
            args.users,
            args.tenants,
            len(slots),
            [s.delivery_time for s in slots],
            [s.zone for s in slots],
            [s.instant for s in slots],
            now,
        )
        indexes = await conn.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'notifications' "
            "AND indexname NOT LIKE 'pk_%'"
        )
        for index in indexes:
            await conn.execute(f'DROP INDEX "{index["indexname"]}"')
        await step(
            "notifications",
            NOTIFICATIONS_SQL,
            args.users,
            args.tenants,
            args.notifications,
            list(NOTIFICATION_TYPES),
            LOREM * 2,
            now,
        )
        await step("tenant_wide", TENANT_WIDE_SQL, args.tenants, args.tenant_wide, LOREM, now)
        await step("indexes", ";\n".join(i["indexdef"] for i in indexes))
        await step("notification_reads", READS_SQL)
        if args.push_share > 0:
            await step("push_subscriptions", PUSH_SQL, now, round(args.push_share * 1000))
        await step("vacuum_analyze", "VACUUM ANALYZE")
        await step("checkpoint", "CHECKPOINT")
        seconds = time.perf_counter() - start
        rows = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
            for table in (
                "digest_subscriptions",
                "notifications",
                "notification_reads",
                "push_subscriptions",
            )
        }
        # What a re-armed tick restores (see verify).
        await conn.execute(
            "CREATE TABLE bench_armed AS SELECT id, next_delivery_at FROM digest_subscriptions"
        )
    finally:
        await conn.close()
    return {"seconds": round(seconds, 2), "steps": steps, "rows": rows, "slots": len(slots)}


# --------------------------------------------------------------------------- measurement


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """Peak current RSS of this process while running, sampled every 10 ms by a thread."""

    def __init__(self) -> None:
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_rss, daemon=True)

    def _sample_rss(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_bytes())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


_SQL_HEAD = re.compile(r"\s*(SELECT|INSERT INTO|UPDATE|DELETE FROM)\s", re.IGNORECASE)
_SQL_FROM = re.compile(r"\bFROM\s+(\w+)", re.IGNORECASE)
_SQL_TABLE = re.compile(r"\s*(?:INSERT INTO|UPDATE|DELETE FROM)\s+(\w+)", re.IGNORECASE)


def sql_kind(statement: str) -> str:
    """`select notifications (own)`, `insert outbox`, …: what a round trip was for."""
    head = _SQL_HEAD.match(statement)
    if head is None:
        return statement.split(None, 1)[0].lower() if statement.strip() else "?"
    verb = head[1].split()[0].lower()
    found = (_SQL_FROM if verb == "select" else _SQL_TABLE).search(statement)
    kind = f"{verb} {found[1] if found else '?'}"
    if kind == "select notifications":
        kind += " (own)" if "notifications.user_id) IN" in statement else " (tenant-wide)"
    return kind


class SqlTimer:
    """Round trips and their time (as the client saw it), by kind, through engine events."""

    def __init__(self) -> None:
        self.by_kind: dict[str, list[float]] = {}
        self.enabled = False

    def install(self, sync_engine: Any) -> None:
        from sqlalchemy import event

        @event.listens_for(sync_engine, "before_cursor_execute")
        def _before(conn: Any, _c: Any, _s: str, _p: Any, _x: Any, _m: bool) -> None:
            conn.info.setdefault("bench_t0", []).append(time.perf_counter())

        @event.listens_for(sync_engine, "after_cursor_execute")
        def _after(conn: Any, _c: Any, statement: str, _p: Any, _x: Any, _m: bool) -> None:
            took = time.perf_counter() - conn.info["bench_t0"].pop()
            if self.enabled:
                entry = self.by_kind.setdefault(sql_kind(statement), [0, 0.0])
                entry[0] += 1
                entry[1] += took

    def take(self) -> dict[str, Any]:
        by_kind, self.by_kind = self.by_kind, {}
        ordered = sorted(by_kind.items(), key=lambda kv: -kv[1][1])
        return {
            "round_trips": sum(int(n) for n, _ in by_kind.values()),
            "seconds": round(sum(s for _, s in by_kind.values()), 2),
            "by_kind": {k: {"n": int(n), "seconds": round(s, 2)} for k, (n, s) in ordered},
        }


async def backend_cpu(conn: asyncpg.Connection, datname: str) -> dict[int, float]:
    """CPU seconds of every client backend of the bench database but this connection."""
    pids = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'",
        datname,
    )
    out = {}
    for row in pids:
        with contextlib.suppress(OSError):
            out[row["pid"]] = cpu_seconds(row["pid"])
    return out


@contextlib.contextmanager
def py_spy(path: Path | None, rate: int) -> Iterator[None]:
    """`py-spy record` attached to this process (idle samples included) while inside."""
    if path is None:
        yield
        return
    binary = Path(sys.executable).parent / "py-spy"
    command = [
        str(binary if binary.is_file() else "py-spy"),
        *("record", "--pid", str(os.getpid()), "--rate", str(rate), "--idle"),
        *("--format", "raw", "--output", str(path)),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attach before the measured work starts
    if proc.poll() is not None:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"py-spy exited at once ({proc.returncode}): {err.strip()}")
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Where a sample's stack says the time went: the innermost frame that matches any of these
# (checked in this order) names the bucket. Cyclic-GC pauses have no frame of their own: they
# land on whatever Python code allocated. SQLAlchemy's sync code runs in greenlets, whose
# stacks start at `Session.execute` (the tick's frames above it are not in those samples).
PROFILE_BUCKETS = (
    ("waiting for PostgreSQL (event loop idle)", ("select (selectors.py",)),
    ("JSON encoding of JSONB params (core.db._json_dumps)", ("_json_dumps (",)),
    ("digest content (content.py: preview, as_json, text)", ("notify/digest/content.py",)),
    ("NotificationService.add (NotificationOut, outbox payload)", ("add (notify/notif",)),
    ("NotificationService._stage_push (fan-out matching)", ("_stage_push (",)),
    ("schedule maths (schedule.py)", ("notify/digest/schedule.py",)),
    ("load_items + _item (tick.py)", ("load_items (notify/digest", "_item (notify/digest")),
    ("asyncpg (Python side)", ("asyncpg/",)),
    ("asyncpg protocol via asyncio (Cython: row decoding)", ("_read_ready__data_received",)),
    ("SQLAlchemy (compile, params, results)", ("sqlalchemy/",)),
    ("tick._serve: any() over served rows per due row", ("_serve.<locals>.<genexpr> (",)),
    ("tick.py other own code (_serve, _record, to_builtins)", ("notify/digest/tick.py",)),
)


def summarise_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Buckets (above), inclusive shares by function and self shares by line, in % of the
    main thread's samples (idle ones included), from py-spy's raw collapsed stacks."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit() or "_sample_rss" in stack or "py_spy (" in stack:
            continue  # the RSS sampler thread; the wait for py-spy to attach
        count = int(count_text)
        frames = stack.split(";")
        total += count
        for name in {re.sub(r":\d+\)$", ")", f) for f in frames}:
            inclusive[name] += count
        own[frames[-1]] += count
        label = "other"
        for frame in reversed(frames):
            hit = next((b for b, keys in PROFILE_BUCKETS if any(k in frame for k in keys)), None)
            if hit is not None:
                label = hit
                break
        buckets[label] += count

    def pct(counter: Counter[str], n: int) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in counter.most_common(n)} if total else {}

    return {
        "samples": total,
        "buckets_pct": pct(buckets, len(buckets)),
        "inclusive_pct": pct(inclusive, top),
        "self_pct": pct(own, top),
    }


async def tick_once(
    sessions: Any, sql: SqlTimer, admin: asyncpg.Connection, datname: str, now: dt.datetime
) -> dict[str, Any]:
    from notify.digest.tick import tick
    from notify.worker import tune_gc

    tune_gc()  # as `notify worker` and `notify digest tick` do at start
    cpu_db = await backend_cpu(admin, datname)
    wal = await admin.fetchval("SELECT pg_current_wal_lsn()")
    cpu_py = time.process_time()
    sql.enabled = True
    start = time.perf_counter()
    result = await tick(sessions, now)
    seconds = time.perf_counter() - start
    sql.enabled = False
    cpu_after = await backend_cpu(admin, datname)
    db_cpu = sum(cpu_after[p] - cpu_db.get(p, 0.0) for p in cpu_after)
    wal_bytes = await admin.fetchval("SELECT pg_current_wal_lsn() - $1::pg_lsn", wal)
    return {
        "seconds": round(seconds, 2),
        "due": result.due,
        "sent": result.sent,
        "skipped": result.skipped,
        "digests_per_s": round(result.due / seconds, 1) if seconds and result.due else 0.0,
        "python_cpu_s": round(time.process_time() - cpu_py, 2),
        "db_backend_cpu_s": round(db_cpu, 2),
        "wal_mb": round(float(wal_bytes) / MB, 1),
        "sql": sql.take(),
    }


async def written(admin: asyncpg.Connection) -> dict[str, Any]:
    row = await admin.fetchrow(
        """
        SELECT
          (SELECT count(*) FROM digest_runs) AS digest_runs,
          (SELECT count(*) FROM digest_runs WHERE status = 'sent') AS runs_sent,
          (SELECT count(*) FROM digest_runs WHERE status = 'skipped') AS runs_skipped,
          (SELECT count(*) FROM notifications WHERE notification_type = 'digest')
            AS digest_notifications,
          (SELECT count(*) FROM notification_deliveries) AS deliveries,
          (SELECT count(*) FROM outbox) AS outbox,
          (SELECT count(*) FROM (SELECT 1 FROM notifications WHERE notification_type = 'digest'
             GROUP BY tenant_id, user_id HAVING count(*) > 1) AS d) AS users_with_two,
          (SELECT count(*) FROM digest_subscriptions WHERE last_digest_date IS NULL)
            AS subscriptions_not_served,
          (SELECT avg(octet_length(metadata::text))::int FROM notifications
             WHERE notification_type = 'digest') AS metadata_bytes_avg,
          (SELECT avg(octet_length(payload))::int FROM outbox) AS outbox_payload_bytes_avg
        """
    )
    return dict(row)


async def run(args: argparse.Namespace, db_url: str, settings: Any) -> dict[str, Any]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import async_sessionmaker

    from notify.core.db import create_engine

    now = args.now
    seeded = await seed(db_url, args, now)
    log(f"seeded in {seeded['seconds']:.1f}s: {seeded['rows']}")
    datname = db_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(db_url)
    engine = create_engine(settings)
    sql = SqlTimer()
    sql.install(engine.sync_engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with sessions() as db:  # open the pooled connection the tick will reuse
            await db.execute(text("SELECT 1"))
        rss_before, maxrss_before = rss_bytes(), maxrss_bytes()
        if args.tracemalloc:
            import tracemalloc

            tracemalloc.start()
        log(f"tick at {now.isoformat()} over {args.users} users…")
        with RssSampler() as rss, py_spy(args.profile, args.profile_rate):
            first = await tick_once(sessions, sql, admin, datname, now)
        first["rss_before_mb"] = round(rss_before / MB, 1)
        first["rss_peak_mb"] = round(rss.peak / MB, 1)
        first["rss_growth_mb"] = round((rss.peak - rss_before) / MB, 1)
        first["ru_maxrss_mb"] = round(maxrss_bytes() / MB, 1)
        first["ru_maxrss_growth_mb"] = round((maxrss_bytes() - maxrss_before) / MB, 1)
        if args.tracemalloc:
            first["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / MB, 1)
            tracemalloc.stop()
        log(f"tick: {first['seconds']:.1f}s, sent {first['sent']}, skipped {first['skipped']}")
        rows = await written(admin)
        log("second tick at the same now…")
        second = await tick_once(sessions, sql, admin, datname, now)
        rearmed = None
        if not args.no_rearm:
            # As if the subscriptions' updates had been lost: only the claims stop a resend.
            await admin.execute(
                "UPDATE digest_subscriptions AS s SET next_delivery_at = a.next_delivery_at, "
                "last_delivered_at = NULL, last_digest_date = NULL "
                "FROM bench_armed AS a WHERE a.id = s.id"
            )
            log("re-armed tick at the same now…")
            rearmed = await tick_once(sessions, sql, admin, datname, now)
        after = await written(admin)
    finally:
        await engine.dispose()
        await admin.close()
    checks = {
        "first_tick_served_everyone": first["due"] == args.users
        and rows["digest_runs"] == args.users,
        "second_tick_sent_0": second["sent"] == 0 and second["due"] == 0,
        "rearmed_tick_sent_0": rearmed is None or (rearmed["sent"] == 0 and rearmed["due"] == 0),
        "one_digest_per_user": after["users_with_two"] == 0
        and after["digest_notifications"] == first["sent"],
        "rows_unchanged_by_later_ticks": all(
            after[k] == rows[k] for k in ("digest_runs", "digest_notifications", "outbox")
        ),
    }
    result: dict[str, Any] = {
        "seed": seeded,
        "tick": first,
        "written": rows,
        "verify": {
            "second_tick": second,
            "rearmed_tick": rearmed,
            "checks": checks,
            "exactly_once": all(checks.values()),
        },
        "target": {"seconds": TARGET_SECONDS, "met": first["seconds"] < TARGET_SECONDS},
    }
    if args.profile:
        result["profile"] = {"path": str(args.profile), **summarise_profile(args.profile)}
    return result


# --------------------------------------------------------------------------- CLI and output


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--users", type=int, default=100_000, help="digest subscriptions")
    parser.add_argument(
        "--notifications",
        type=int,
        help="user notifications over the last 23 h (default: 10 per user)",
    )
    parser.add_argument("--tenants", type=int, default=100, help="tenants the users spread over")
    parser.add_argument(
        "--tenant-wide", type=int, default=300, help="tenant-wide notifications (all tenants)"
    )
    parser.add_argument(
        "--push-share",
        type=float,
        default=0.0,
        help="share of users with one active push subscription (0-1)",
    )
    parser.add_argument(
        "--spread", type=int, default=30, help="deliveries fall 1..N minutes before now"
    )
    parser.add_argument(
        "--now",
        type=dt.datetime.fromisoformat,
        help="the tick's instant, ISO 8601 (default: the current minute)",
    )
    parser.add_argument("--no-rearm", action="store_true", help="skip the re-armed tick")
    parser.add_argument(
        "--tracemalloc", action="store_true", help="also trace Python allocations (slower)"
    )
    parser.add_argument(
        "--profile", type=Path, help="py-spy the first tick into this raw (collapsed) file"
    )
    parser.add_argument("--profile-rate", type=int, default=100, help="py-spy samples/s")
    parser.add_argument(
        "--sweep",
        help="comma-separated user counts, one child process each (10 notifications/user "
        "unless --notifications-per-user)",
    )
    parser.add_argument("--notifications-per-user", type=int, default=10)
    parser.add_argument(
        "--pg-dsn",
        default=DEFAULT_PG_DSN,
        help="admin DSN used to create/drop the database (NOTIFY_BENCH_PG)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON document here")
    args = parser.parse_args(argv)
    if args.users < 1 or args.tenants < 1 or args.tenants > 1000:
        parser.error("--users must be >= 1 and --tenants 1..1000")
    if args.notifications is None:
        args.notifications = args.users * args.notifications_per_user
    if not 0 <= args.push_share <= 1:
        parser.error("--push-share must be within 0..1")
    now = args.now or dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    args.now = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    return args


def config(args: argparse.Namespace) -> dict[str, Any]:
    from notify.digest.tick import CHUNK

    return {
        "database": "postgresql",
        "users": args.users,
        "notifications": args.notifications,
        "tenants": args.tenants,
        "tenant_wide": args.tenant_wide,
        "push_share": args.push_share,
        "zones": list(ZONES),
        "spread_minutes": args.spread,
        "now": args.now.isoformat(),
        "chunk": CHUNK,
        "git_commit": git("rev-parse", "--short", "HEAD") or None,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "src")),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def human_line(doc: dict[str, Any]) -> str:
    c, t, v = doc["config"], doc["tick"], doc["verify"]
    rearmed = v["rearmed_tick"]
    return (
        f"digest bench (postgresql, {c['users']} users, {c['notifications']} notifications): "
        f"seed {doc['seed']['seconds']:.1f}s | tick {t['seconds']:.1f}s "
        f"({t['digests_per_s']:.0f} digests/s, sent {t['sent']}, skipped {t['skipped']}; "
        f"python cpu {t['python_cpu_s']:.1f}s, db cpu {t['db_backend_cpu_s']:.1f}s, "
        f"sql {t['sql']['seconds']:.1f}s) | peak RSS {t['rss_peak_mb']:.0f} MB "
        f"(+{t['rss_growth_mb']:.0f}) | second tick sent {v['second_tick']['sent']}"
        + (f", re-armed tick sent {rearmed['sent']}" if rearmed else "")
        + f" | exactly once: {'yes' if v['exactly_once'] else 'NO'}"
        + f" | <{TARGET_SECONDS:.0f}s: {'yes' if doc['target']['met'] else 'no'}"
    )


def emit(doc: dict[str, Any], json_out: Path | None, lines: list[str]) -> None:
    text = json.dumps(doc, indent=2, default=str)
    print(text)
    if json_out:
        json_out.write_text(text + "\n")
    for line in lines:
        print(line)


def single(args: argparse.Namespace) -> int:
    from notify.core.config import load_settings
    from notify.core.db import upgrade

    with (
        tempfile.TemporaryDirectory(prefix="notify-digest-") as tmp,
        database("postgresql", args.pg_dsn, Path(tmp)) as db_url,
    ):
        settings = load_settings(
            {"DATABASE_URL": db_url, "JWT_SECRET_KEY": "x" * 40, "NOTIFY_DATA_DIR": tmp}
        )
        start = time.perf_counter()
        upgrade(settings)
        log(f"migrated in {time.perf_counter() - start:.1f}s")
        result = asyncio.run(run(args, db_url, settings))
    doc = {"config": config(args), **result}
    emit(doc, args.json_out, [human_line(doc)])
    return 0 if doc["verify"]["exactly_once"] else 1


def sweep(args: argparse.Namespace) -> int:
    """Each size in its own process (clean peak RSS); one JSON with every run."""
    sizes = [int(s) for s in args.sweep.split(",") if s.strip()]
    docs = []
    with tempfile.TemporaryDirectory(prefix="notify-digest-sweep-") as tmp:
        for users in sizes:
            out = Path(tmp) / f"{users}.json"
            command = [sys.executable, __file__, "--users", str(users), "--json-out", str(out)]
            command += ["--now", args.now.isoformat(), "--pg-dsn", args.pg_dsn]
            command += ["--notifications", str(users * args.notifications_per_user)]
            for name in ("tenants", "tenant_wide", "push_share", "spread"):
                command += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            command += ["--no-rearm"] * args.no_rearm + ["--tracemalloc"] * args.tracemalloc
            log(f"sweep: {users} users")
            child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
            try:
                child.wait()
            except KeyboardInterrupt:
                child.wait(timeout=120)  # it got the SIGINT too: let it drop its database
                raise
            if child.returncode not in (0, 1) or not out.exists():
                raise SystemExit(f"bench: the {users}-user run failed ({child.returncode})")
            docs.append(json.loads(out.read_text()))
    doc = {
        "runs": docs,
        "memory": {
            str(d["config"]["users"]): {
                "rss_peak_mb": d["tick"]["rss_peak_mb"],
                "rss_growth_mb": d["tick"]["rss_growth_mb"],
            }
            for d in docs
        },
    }
    emit(doc, args.json_out, [human_line(d) for d in docs])
    return 0 if all(d["verify"]["exactly_once"] for d in docs) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    return sweep(args) if args.sweep else single(args)


if __name__ == "__main__":
    sys.exit(main())
