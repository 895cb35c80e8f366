"""Web Push benchmark for notify: pushes/s of one `notify worker` against a local push service.

Starts the API (`notify serve`) and ONE delivery worker (`python -m notify.cli worker`) as
separate processes, against a fresh PostgreSQL database (dropped afterwards) or a temporary
SQLite file, with a new VAPID key pair. The push service is the tests' peer
(`tests/push_peer.py`), run in this process: it verifies the VAPID JWT and decrypts every
push (aes128gcm), so its CPU is spent here. The worker is pinned to one core, this process
(peer included) and the API to the other.

N real P-256 subscriptions are made over U users through `POST /api/v1/push/subscribe`; one
push notification per user warms up (unmeasured), then two phases each send N pushes:

1. `per_user`: one push notification per user (`POST /api/v1/notifications`, U requests);
2. `broadcast`: one tenant-wide push broadcast (`POST /internal/broadcast`, service token).

A phase is timed from its first POST to the last push the peer received (pushes/s), and to
the moment every delivery row is `sent` (polled in the database); per-push latency is the
peer's receive time minus the POST time of that push's notification.

Prints one JSON document, then one line of text.

    .venv/bin/python bench/push.py [--subscriptions N] [--users U] [--database ...] ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.push_peer import PushPeer, Request

from bench.fanout import all_cpu, busy_since, core_times, others_since
from bench.rest import (
    DEFAULT_PG_DSN,
    LOREM,
    api_server,
    auth,
    cpu_seconds,
    database,
    free_port,
    git,
    log,
    migrate,
    nats,
    percentile,
    pinning_available,
    server_env,
    stop,
    tail,
    token,
)
from notify.core.vapid import generate_vapid_keys

TARGET_PUSHES_PER_S = 500
TARGET_SUBSCRIPTIONS = 1000
SUBSCRIBE_CONCURRENCY = 16
POLL = 0.02  # seconds between looks at the peer's log and at the delivery rows
PHASES = ("per_user", "broadcast")


# --------------------------------------------------------------------------- the peer


class BenchPeer(PushPeer):
    """The tests' push service, plus cheap incremental reads of its request log: the bench
    polls it every 20 ms from the thread the peer shares a core (and the GIL) with."""

    def mark(self) -> int:
        with self._lock:
            return len(self._requests)

    def since(self, start: int) -> list[Request]:
        with self._lock:
            return self._requests[start:]

    def delivered_at_least(self, start: int, n: int) -> Callable[[PushPeer], bool]:
        """A `wait_until` predicate: n pushes answered 201 since log position `start`."""
        seen, count = start, 0

        def predicate(_: PushPeer) -> bool:
            nonlocal seen, count
            new = self.since(seen)
            seen += len(new)
            count += sum(1 for r in new if r.status == 201)
            return count >= n

        return predicate


# --------------------------------------------------------------------------- database


class DeliveryRows:
    """Push delivery rows of given notifications by status, read straight from the database."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.sqlite = database_url.startswith("sqlite")
        self._pg: asyncpg.Connection | None = None
        self._lite: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self.sqlite:
            self._lite = sqlite3.connect(self.url.removeprefix("sqlite:///"), timeout=5)
        else:
            self._pg = await asyncpg.connect(self.url)

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()
        if self._lite is not None:
            self._lite.close()

    async def statuses(self, ids: list[str]) -> dict[str, int]:
        if self._pg is not None:
            rows = await self._pg.fetch(
                "SELECT status, count(*) FROM notification_deliveries"
                " WHERE channel = 'push' AND notification_id = ANY($1::uuid[])"
                " GROUP BY status",
                ids,
            )
            return {r[0]: int(r[1]) for r in rows}
        assert self._lite is not None
        marks = ",".join("?" * len(ids))
        cursor = self._lite.execute(
            "SELECT status, count(*) FROM notification_deliveries"  # noqa: S608 (only '?'s)
            f" WHERE channel = 'push' AND notification_id IN ({marks}) GROUP BY status",
            [uuid.UUID(i).bytes for i in ids],
        )
        return {status: int(count) for status, count in cursor.fetchall()}

    async def settled(
        self, ids: list[str], expected: int, patience: float
    ) -> tuple[float | None, dict[str, int]]:
        """(time.time() when all `expected` rows left `pending`, or None; last counts)."""
        deadline = time.monotonic() + patience
        while True:
            counts = await self.statuses(ids)
            if sum(counts.values()) >= expected and not counts.get("pending"):
                return time.time(), counts
            if time.monotonic() > deadline:
                return None, counts
            await asyncio.sleep(POLL)


# --------------------------------------------------------------------------- measurement


class CpuMeter:
    """CPU seconds per wall second of this process (the peer), the worker, the API, each core,
    and the busiest other processes by name (PostgreSQL backends, nats-server, …)."""

    def __init__(self, worker_pid: int, server_pid: int) -> None:
        self.pids = {"worker": worker_pid, "api": server_pid}
        self.wall = time.perf_counter()
        self.bench = time.process_time()
        self.start = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.cores = core_times()
        self.procs = all_cpu()

    def read(self) -> dict[str, Any]:
        wall = max(time.perf_counter() - self.wall, 1e-9)
        busy = busy_since(self.cores)
        out: dict[str, Any] = {
            "bench_cpu": round((time.process_time() - self.bench) / wall, 2),
            **{
                f"{name}_cpu": round((cpu_seconds(pid) - self.start[name]) / wall, 2)
                for name, pid in self.pids.items()
            },
            "cores_busy": busy,
        }
        out["other_cpu"] = others_since(self.procs, {os.getpid(), *self.pids.values()}, wall, 4)
        return out


@dataclass
class Run:
    """One measured phase: what was sent, what the peer got, what the rows say."""

    phase: str
    notifications: int
    expected: int
    first_post: float
    post_seconds: list[float]
    delivered: int = 0  # distinct subscriptions that got their push (201)
    duplicates: int = 0
    other_status: Counter[int] = field(default_factory=Counter)
    unexpected: int = 0
    first_received: float | None = None
    last_received: float | None = None
    rows_settled: float | None = None
    rows: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    cpu: dict[str, Any] = field(default_factory=dict)

    @property
    def window(self) -> float | None:
        return None if self.last_received is None else self.last_received - self.first_post

    @property
    def complete(self) -> bool:
        return self.delivered == self.expected and self.rows.get("sent") == self.expected


@dataclass
class Bench:
    args: argparse.Namespace
    client: httpx.AsyncClient
    peer: BenchPeer
    rows: DeliveryRows
    worker_pid: int
    server_pid: int
    users: list[str]
    tokens: dict[str, str]
    service_token: str
    owner: dict[str, str] = field(default_factory=dict)  # endpoint → user

    async def subscribe(self) -> dict[str, Any]:
        """N subscriptions, subscription i for user i mod U, each a new P-256 key pair."""
        n = self.args.subscriptions
        counter = itertools.count()

        async def one() -> None:
            while (i := next(counter)) < n:
                user = self.users[i % len(self.users)]
                sub = self.peer.new_subscriber()
                r = await self.client.post(
                    "/api/v1/push/subscribe",
                    json=sub.subscribe_body(),
                    headers=auth(self.tokens[user]),
                )
                if r.status_code != 201:
                    raise RuntimeError(f"subscribe -> {r.status_code}: {r.text[:500]}")
                self.owner[sub.endpoint] = user

        log(f"subscribing {n} endpoints over {len(self.users)} users")
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(min(SUBSCRIBE_CONCURRENCY, n))))
        seconds = time.perf_counter() - start
        return {"subscriptions": n, "seconds": round(seconds, 2), "per_s": round(n / seconds)}

    def body(self, title: str, i: int) -> dict[str, Any]:
        return {
            "title": title,
            "message": LOREM[:200],
            "notification_type": "bench_push",
            "priority": "normal",
            "channels": ["push"],
            "action_url": f"/bench/{i}",
            "metadata": {"source": "bench", "n": i},
        }

    async def post(
        self, path: str, body: dict[str, Any], tok: str, expect: int
    ) -> tuple[list[str], float, float]:
        """(notification ids, time.time() just before the POST, round trip in s)."""
        sent, start = time.time(), time.perf_counter()
        r = await self.client.post(path, json=body, headers=auth(tok))
        took = time.perf_counter() - start
        if r.status_code != expect:
            raise RuntimeError(f"POST {path} -> {r.status_code}: {r.text[:500]}")
        data = r.json()
        return data.get("notification_ids") or [data["id"]], sent, took

    async def post_per_user(self, i: int) -> tuple[list[str], dict[str, float], list[float]]:
        """One push notification per user, all at once."""
        results = await asyncio.gather(
            *(
                self.post(
                    "/api/v1/notifications",
                    self.body(f"Bench push {i} for {user}", i),
                    self.tokens[user],
                    201,
                )
                for user in self.users
            )
        )
        ids = [nid for got, _, _ in results for nid in got]
        sent = {user: at for user, (_, at, _) in zip(self.users, results, strict=True)}
        return ids, sent, [took for _, _, took in results]

    async def post_broadcast(self, i: int) -> tuple[list[str], dict[str, float], list[float]]:
        """One tenant-wide push broadcast (service token)."""
        body = {**self.body(f"Bench broadcast {i}", i), "broadcast_to_tenant": True}
        ids, at, took = await self.post("/internal/broadcast", body, self.service_token, 202)
        return ids, dict.fromkeys(self.users, at), [took]

    async def measure(
        self,
        phase: str,
        post: Callable[[int], Awaitable[tuple[list[str], dict[str, float], list[float]]]],
        i: int,
    ) -> Run:
        n, timeout = self.args.subscriptions, self.args.timeout
        mark = self.peer.mark()
        meter = CpuMeter(self.worker_pid, self.server_pid)
        ids, sent, post_seconds = await post(i)
        run = Run(phase, len(ids), n, min(sent.values()), post_seconds)
        rows = asyncio.create_task(self.rows.settled(ids, n, timeout))
        with contextlib.suppress(AssertionError):  # not all in time: counted as missing
            await self.peer.wait_until_async(self.peer.delivered_at_least(mark, n), timeout)
        run.rows_settled, run.rows = await rows
        run.cpu = meter.read()
        got: Counter[str] = Counter()
        for r in self.peer.since(mark):
            user = self.owner.get(r.endpoint)
            if user is None:
                run.unexpected += 1
            elif r.status != 201:
                run.other_status[r.status] += 1
            else:
                got[r.endpoint] += 1
                run.latencies.append(r.received - sent[user])
                if run.first_received is None or r.received < run.first_received:
                    run.first_received = r.received
                if run.last_received is None or r.received > run.last_received:
                    run.last_received = r.received
        run.delivered = len(got)
        run.duplicates = sum(got.values()) - len(got)
        return run

    async def warm_up(self) -> dict[str, Any]:
        """One push notification per user, unmeasured: opens the worker's connections to
        the peer and the database, signs the VAPID header, fills statement caches."""
        log("warm-up: one push notification per user")
        run = await self.measure("warmup", self.post_per_user, 0)
        if not run.complete:
            raise RuntimeError(
                f"warm-up incomplete: {run.delivered}/{run.expected} pushes, rows {run.rows}"
            )
        return {"pushes": run.delivered, "seconds": round(run.window or 0.0, 2)}


def summarise(runs: list[Run]) -> dict[str, Any]:
    """One phase over its rounds: totals, pushes/s over the summed windows, pooled latency."""
    expected = sum(r.expected for r in runs)
    delivered = sum(r.delivered for r in runs)
    windows = [r.window for r in runs if r.window is not None]
    firsts = sorted(r.first_received - r.first_post for r in runs if r.first_received)
    sending = [
        r.last_received - r.first_received
        for r in runs
        if r.first_received is not None and r.last_received is not None
    ]
    settle = [r.rows_settled - r.first_post for r in runs if r.rows_settled is not None]
    latencies = sorted(lat for r in runs for lat in r.latencies)
    posts = sorted(p for r in runs for p in r.post_seconds)
    rows: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    for r in runs:
        rows.update(r.rows)
        statuses.update(r.other_status)
    window = sum(windows)
    out: dict[str, Any] = {
        "rounds": len(runs),
        "notifications": sum(r.notifications for r in runs),
        "expected": expected,
        "delivered": delivered,
        "duplicates": sum(r.duplicates for r in runs),
        "non_201": {str(k): v for k, v in sorted(statuses.items())},
        "unexpected": sum(r.unexpected for r in runs),
        "complete": all(r.complete for r in runs),
        "seconds": round(window, 3),
        "pushes_per_s": round(delivered / window, 1) if window else 0.0,
        "first_push_ms": round(percentile(firsts, 50) * 1000, 1),
        "sending_seconds": round(sum(sending), 3),
        "sending_pushes_per_s": round(delivered / sum(sending), 1) if sum(sending) else 0.0,
        "rows": dict(sorted(rows.items())),
        "rows_settled_seconds": round(sum(settle), 3) if len(settle) == len(runs) else None,
        "rows_per_s": (
            round(expected / sum(settle), 1) if settle and len(settle) == len(runs) else None
        ),
        "latency": {
            **{f"p{p}_ms": round(percentile(latencies, p) * 1000, 1) for p in (50, 95, 99)},
            "max_ms": round(latencies[-1] * 1000, 1) if latencies else 0.0,
        },
        "post_ms": {f"p{p}": round(percentile(posts, p) * 1000, 1) for p in (50, 99)},
    }
    if len(runs) > 1:
        out["runs_pushes_per_s"] = [
            round(r.delivered / r.window, 1) if r.window else 0.0 for r in runs
        ]
    cpu = [r.cpu for r in runs]
    keys = [k for k in cpu[0] if k.endswith("_cpu") and isinstance(cpu[0][k], float)]
    out["cpu"] = {k: round(sum(c[k] for c in cpu) / len(cpu), 2) for k in keys}
    out["cpu"]["cores_busy"] = cpu[-1]["cores_busy"]
    out["cpu"]["other_cpu"] = cpu[-1]["other_cpu"]
    return out


async def run_bench(
    args: argparse.Namespace,
    base_url: str,
    database_url: str,
    peer: BenchPeer,
    worker: subprocess.Popen[bytes],
    server_pid: int,
) -> dict[str, Any]:
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    users = [f"user-{n:04d}" for n in range(args.users)]
    rows = DeliveryRows(database_url)
    await rows.open()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    try:
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
            bench = Bench(
                args,
                client,
                peer,
                rows,
                worker.pid,
                server_pid,
                users,
                {u: token(u, tenant, ["user"]) for u in users},
                token("bench-service", tenant, ["service"]),
            )
            result: dict[str, Any] = {"subscribe": await bench.subscribe()}
            result["warmup"] = await bench.warm_up()
            runs: dict[str, list[Run]] = {name: [] for name in PHASES}
            with profiling(args.profile, worker.pid):
                for i in range(1, args.rounds + 1):
                    for name, post in (
                        ("per_user", bench.post_per_user),
                        ("broadcast", bench.post_broadcast),
                    ):
                        log(f"phase {name} (round {i}/{args.rounds}): {args.subscriptions} pushes")
                        run = await bench.measure(name, post, i)
                        runs[name].append(run)
                        log(
                            f"  {run.delivered}/{run.expected} pushes in {run.window or 0:.2f} s,"
                            f" rows {run.rows}"
                        )
                        busy = sum(run.cpu["other_cpu"].values())
                        if busy > 0.2:
                            log(f"  other processes used {busy:.2f} cores: {run.cpu['other_cpu']}")
                        if worker.poll() is not None:
                            raise RuntimeError(f"the worker exited ({worker.returncode})")
            result["phases"] = {name: summarise(r) for name, r in runs.items()}
            return result
    finally:
        await rows.close()


# --------------------------------------------------------------------------- profiling


@contextlib.contextmanager
def profiling(directory: Path | None, worker_pid: int) -> Iterator[None]:
    """py-spy on the worker (flame graph + collapsed stacks) and on this process (the peer)
    while the measured phases run; the samplers are not pinned (they float over both cores)."""
    if directory is None:
        yield
        return
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.is_file():
        raise SystemExit("bench: --profile needs py-spy (.venv/bin/pip install py-spy)")
    directory.mkdir(parents=True, exist_ok=True)
    cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0) | all_cores()))
    jobs = [
        (worker_pid, "worker.svg", ["--format", "flamegraph"]),
        (worker_pid, "worker.txt", ["--format", "raw", "--idle"]),
        (os.getpid(), "bench.txt", ["--format", "raw", "--idle"]),
    ]
    procs = [
        subprocess.Popen(
            [
                *("taskset", "-c", cores, str(spy), "record", "--pid", str(pid)),
                *("--rate", "200", "--nonblocking", "--output", str(directory / name), *extra),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, name, extra in jobs
    ]
    time.sleep(1.0)  # py-spy attaches
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stop(proc)
        log(f"profiles in {directory}: {', '.join(name for _, name, _ in jobs)}")


def all_cores() -> set[int]:
    """Every online core (the pinned bench's own affinity names only one)."""
    return set(range(os.cpu_count() or 1))


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def worker_process(
    env: dict[str, str], cpu: int | None, log_path: Path, timeout: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m notify.cli worker` (pinned to `cpu`), ready once it logs "delivering";
    SIGTERM (it finishes the sends in flight), then kill, at the end."""
    command = [sys.executable, "-m", "notify.cli", "worker"]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while "delivering" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(f"notify worker exited ({proc.returncode}):\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"notify worker not ready in {timeout} s:\n{tail(log_path)}")
            time.sleep(0.05)
        yield proc
    finally:
        stop(proc)
        if proc.returncode not in (0, -signal.SIGTERM):
            log(f"worker exited with {proc.returncode}; its output:\n{tail(log_path)}")


@contextlib.contextmanager
def keep_logs(tmp: Path, directory: Path | None) -> Iterator[None]:
    """Copy the API's and the worker's output to `directory` at the end, also on error."""
    try:
        yield
    finally:
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for name in ("server.log", "worker.log"):
                if (tmp / name).exists():
                    shutil.copy(tmp / name, directory / name)


def thread_cpus(pid: int) -> dict[str, str]:
    """Allowed cores of each thread of a process, by thread name."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            for line in (task / "status").read_text().splitlines():
                if line.startswith("Cpus_allowed_list:"):
                    out[f"{name}/{task.name}"] = line.split(":", 1)[1].strip()
    return out


# --------------------------------------------------------------------------- CLI and output


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--subscriptions", type=int, default=1000, help="push subscriptions (N)")
    parser.add_argument("--users", type=int, default=10, help="users they are spread over")
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=100,
        help="the worker's NOTIFY_DELIVERY_CONCURRENCY (sends in flight)",
    )
    parser.add_argument(
        "--connections-per-host",
        type=int,
        default=50,
        help="the worker's NOTIFY_PUSH_CONNECTIONS_PER_HOST (the peer is one host)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="times each phase is measured")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds a phase may take before it is cut"
    )
    parser.add_argument("--cpu-worker", type=int, help="core of the worker (default: first)")
    parser.add_argument(
        "--cpu-client", type=int, help="core of this process and the peer (default: second)"
    )
    parser.add_argument("--cpu-server", type=int, help="core of the API (default: --cpu-client)")
    parser.add_argument("--no-pin", action="store_true", help="pin no process")
    parser.add_argument(
        "--pg-dsn",
        default=DEFAULT_PG_DSN,
        help="admin DSN used to create/drop the database (NOTIFY_BENCH_PG)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy the worker and this process during the measured phases into DIR",
    )
    parser.add_argument("--logs", type=Path, metavar="DIR", help="keep the API/worker logs in DIR")
    parser.add_argument("--json-out", type=Path, help="also write the JSON document here")
    args = parser.parse_args(argv)
    for name in ("subscriptions", "users", "concurrency", "connections_per_host", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.users > args.subscriptions:
        parser.error("--users must not exceed --subscriptions")
    if args.no_pin or not pinning_available():
        args.cpu_worker = args.cpu_client = args.cpu_server = None
    else:
        first, second = sorted(os.sched_getaffinity(0))[:2]
        args.cpu_worker = first if args.cpu_worker is None else args.cpu_worker
        args.cpu_client = second if args.cpu_client is None else args.cpu_client
        args.cpu_server = args.cpu_client if args.cpu_server is None else args.cpu_server
    return args


def environments(
    args: argparse.Namespace, base: dict[str, str], public: str, private: str
) -> tuple[dict[str, str], dict[str, str]]:
    """(API env, worker env): the REST bench's, plus VAPID and the push settings."""
    push = {
        **base,
        "VAPID_PUBLIC_KEY": public,
        "VAPID_PRIVATE_KEY": private,
        "VAPID_EMAIL": "bench@example.com",
        "NOTIFY_PUSH_ALLOW_HTTP": "1",
        "NOTIFY_PUSH_MAX_SUBSCRIPTIONS": str(max(20, math.ceil(args.subscriptions / args.users))),
    }
    worker = {
        **push,
        "NOTIFY_LOG_LEVEL": "INFO",  # it says "delivering" when ready
        "PYTHONUNBUFFERED": "1",
        "NOTIFY_DELIVERY_CONCURRENCY": str(args.concurrency),
        "NOTIFY_PUSH_CONNECTIONS_PER_HOST": str(args.connections_per_host),
    }
    return push, worker


def config(
    args: argparse.Namespace, nats_url: str, worker_pid: int, server_pid: int
) -> dict[str, Any]:
    return {
        "database": args.database,
        "subscriptions": args.subscriptions,
        "users": args.users,
        "per_user": math.ceil(args.subscriptions / args.users),
        "concurrency": args.concurrency,
        "connections_per_host": args.connections_per_host,
        "rounds": args.rounds,
        "cpu_worker": args.cpu_worker,
        "cpu_server": args.cpu_server,
        "cpu_client": args.cpu_client,
        "pinning": (
            "not pinned"
            if args.cpu_worker is None
            else f"worker on core {args.cpu_worker}; this process (load generator and push "
            f"peer: VAPID check + decryption of every push) on core {args.cpu_client}; API on "
            f"core {args.cpu_server}; PostgreSQL and NATS not pinned"
        ),
        "threads": {"bench": thread_cpus(os.getpid()), "worker": thread_cpus(worker_pid)},
        "server_pid": server_pid,
        "nats_url": nats_url,
        "git_commit": git("rev-parse", "--short", "HEAD") or None,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "src")),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def targets(args: argparse.Namespace, phases: dict[str, dict[str, Any]]) -> dict[str, Any]:
    value = phases["per_user"]["pushes_per_s"]
    return {
        f">= {TARGET_PUSHES_PER_S} pushes/s at {TARGET_SUBSCRIPTIONS} subscriptions": {
            "value": value,
            "broadcast_value": phases["broadcast"]["pushes_per_s"],
            "pass": value >= TARGET_PUSHES_PER_S,
            "comparable": args.subscriptions == TARGET_SUBSCRIPTIONS,
        }
    }


def human_line(args: argparse.Namespace, result: dict[str, Any]) -> str:
    parts = []
    for name, p in result["phases"].items():
        lat = p["latency"]
        settled = p["rows_settled_seconds"]
        parts.append(
            f"{name.replace('_', '-')} {p['pushes_per_s']:.0f} pushes/s"
            f" p50/p99 {lat['p50_ms']:.0f}/{lat['p99_ms']:.0f} ms"
            f" ({p['delivered']}/{p['expected']}, rows sent "
            + (f"{settled:.2f} s)" if settled is not None else "NOT settled)")
        )
    pin = "worker pinned alone" if args.cpu_worker is not None else "not pinned"
    return (
        f"push bench ({args.database}, {args.subscriptions} subs/{args.users} users, "
        f"c={args.concurrency}, {pin}): "
        + " | ".join(parts)
        + f" | peer errors {len(result['peer_errors'])}"
    )


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the `finally`s: processes stopped, database dropped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    public, private = generate_vapid_keys()
    with (
        tempfile.TemporaryDirectory(prefix="notify-bench-push-") as tmp_name,
        keep_logs(Path(tmp_name), args.logs),
    ):
        tmp = Path(tmp_name)
        with nats(tmp) as nats_url, database(args.database, args.pg_dsn, tmp) as db_url:
            api_env, worker_env = environments(
                args, server_env(db_url, nats_url, tmp), public, private
            )
            migrate(api_env)
            port = free_port()
            with (
                api_server(api_env, port, args.cpu_server, tmp / "server.log") as server,
                worker_process(worker_env, args.cpu_worker, tmp / "worker.log") as worker,
            ):
                # Before the peer's thread starts: threads inherit the creator's affinity.
                if args.cpu_client is not None:
                    os.sched_setaffinity(0, {args.cpu_client})
                with BenchPeer(vapid_public_key=public) as peer:
                    log(
                        f"api pid {server.pid} on :{port} (cpu {args.cpu_server}), worker pid"
                        f" {worker.pid} (cpu {args.cpu_worker}), bench+peer pid {os.getpid()}"
                        f" (cpu {args.cpu_client}), peer at {peer.origin}"
                    )
                    result = {"config": config(args, nats_url, worker.pid, server.pid)}
                    result.update(
                        asyncio.run(
                            run_bench(
                                args, f"http://127.0.0.1:{port}", db_url, peer, worker, server.pid
                            )
                        )
                    )
                    result["peer_errors"] = peer.errors
                worker_log = (tmp / "worker.log").read_text(errors="replace").splitlines()
                problems = [line for line in worker_log if " ERROR " in line or "WARNING" in line]
                result["worker_log"] = {"lines": len(worker_log), "problems": problems[:10]}
    result["targets"] = targets(args, result["phases"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(human_line(args, result))
    ok = not result["peer_errors"] and all(p["complete"] for p in result["phases"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
