"""REST benchmark for notify: create, broadcast, list and unread-count throughput and latency.

Starts a real `notify serve` process (pinned with `taskset` to one core) against a fresh
PostgreSQL database (dropped afterwards) or a temporary SQLite file, drives it over HTTP/1.1
keep-alive from this process (pinned to another core) with C concurrent workers sharing one
`httpx.AsyncClient`, and prints one JSON document followed by one human-readable line.

    .venv/bin/python bench/rest.py [--database postgresql|sqlite] [--creates N] ...
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
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import jwt

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "bench-secret-that-is-long-enough-for-hs256-0123456789abcdef"  # noqa: S105
DEFAULT_PG_DSN = os.environ.get("NOTIFY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
LOCAL_NATS = ("127.0.0.1", 4222)
BROADCASTS = 200

NOTIFICATION_TYPES = (
    "comment",
    "mention",
    "order_shipped",
    "invoice_due",
    "security_alert",
    "system",
)
PRIORITY_WEIGHTS = {"low": 20, "normal": 60, "high": 15, "urgent": 5}
LOREM = (
    "Your order has left our warehouse and is on its way. Track the parcel from the link "
    "below; the carrier usually updates the status within a few hours. If anything looks "
    "wrong, reply to this message and our support team will get back to you quickly. "
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- measurement


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary(latencies: list[float]) -> dict[str, float]:
    values = sorted(latencies)
    return {f"p{p}_ms": round(percentile(values, p) * 1000, 2) for p in (50, 95, 99)}


@dataclass
class Recorder:
    """Times requests of one phase, by label, and counts unexpected answers as errors."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    first_error: str | None = None

    async def call(
        self,
        client: httpx.AsyncClient,
        label: str,
        method: str,
        url: str,
        expect: int,
        **kwargs: Any,
    ) -> httpx.Response | None:
        start = time.perf_counter()
        try:
            response = await client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self._record(label, start, f"{method} {url}: {type(exc).__name__}: {exc}")
            return None
        problem = None
        if response.status_code != expect:
            problem = f"{method} {url} -> {response.status_code}: {response.text[:2000]}"
        self._record(label, start, problem)
        return response if problem is None else None

    def _record(self, label: str, start: float, problem: str | None) -> None:
        self.latencies.setdefault(label, []).append(time.perf_counter() - start)
        if problem is not None:
            self.errors += 1
            if self.first_error is None:
                self.first_error = problem
                log(f"first error: {problem}")


def cpu_seconds(pid: int | None = None) -> float:
    """User+system CPU seconds of a process (this one when pid is None)."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_phase(
    name: str,
    count: int,
    concurrency: int,
    server_pid: int,
    op: Callable[[Recorder, int], Awaitable[None]],
) -> dict[str, Any]:
    """Run `op(recorder, i)` for i in range(count) with `concurrency` workers; summarise."""
    recorder = Recorder()
    counter = itertools.count()

    async def worker() -> None:
        while (i := next(counter)) < count:
            await op(recorder, i)

    log(f"phase {name}: {count} operations, c={concurrency}")
    cpu_client, cpu_server = cpu_seconds(), cpu_seconds(server_pid)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    seconds = time.perf_counter() - start
    return summarise(
        recorder, seconds, cpu_seconds() - cpu_client, cpu_seconds(server_pid) - cpu_server
    )


def summarise(
    rec: Recorder, seconds: float, client_cpu: float, server_cpu: float
) -> dict[str, Any]:
    every = [lat for values in rec.latencies.values() for lat in values]
    result: dict[str, Any] = {
        "requests": len(every),
        "errors": rec.errors,
        "seconds": round(seconds, 3),
        "rps": round(len(every) / seconds, 1) if seconds else 0.0,
        **latency_summary(every),
        "client_cpu": round(client_cpu / seconds, 2) if seconds else 0.0,
        "server_cpu": round(server_cpu / seconds, 2) if seconds else 0.0,
    }
    if len(rec.latencies) > 1:
        result["by_request"] = {
            label: {"requests": len(values), **latency_summary(values)}
            for label, values in rec.latencies.items()
        }
    if rec.first_error:
        result["first_error"] = rec.first_error
    return result


# --------------------------------------------------------------------------- workload


def token(sub: str, tenant: str, roles: list[str], ttl: int = 6 * 3600) -> str:
    claims = {"sub": sub, "tenant_id": tenant, "roles": roles, "exp": int(time.time()) + ttl}
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def auth(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def notification_body(rng: random.Random, i: int, user: str) -> dict[str, Any]:
    kind = rng.choice(NOTIFICATION_TYPES)
    order = rng.randrange(10_000, 99_999)
    start = rng.randrange(0, 40)
    return {
        "title": f"{kind.replace('_', ' ').capitalize()} #{order}",
        "message": (LOREM * 2)[start : start + 200],
        "notification_type": kind,
        "priority": rng.choices(list(PRIORITY_WEIGHTS), list(PRIORITY_WEIGHTS.values()))[0],
        "action_url": f"/orders/{order}",
        "metadata": {
            "source": "bench",
            "order_id": order,
            "actor": user,
            "batch": i // 100,
            "trace_id": uuid.UUID(int=rng.getrandbits(128)).hex,
        },
    }


@dataclass
class Workload:
    client: httpx.AsyncClient
    users: list[str]
    user_tokens: dict[str, str]
    service_token: str
    rng: random.Random

    async def create(self, rec: Recorder, i: int) -> None:
        user = self.users[i % len(self.users)]
        await rec.call(
            self.client,
            "create",
            "POST",
            "/api/v1/notifications",
            201,
            json=notification_body(self.rng, i, user),
            headers=auth(self.user_tokens[user]),
        )

    async def broadcast(self, rec: Recorder, i: int) -> None:
        body = {
            "title": f"Maintenance window {i}",
            "message": LOREM[:180],
            "notification_type": "announcement",
            "priority": "normal",
            "broadcast_to_tenant": True,
            "metadata": {"source": "bench", "n": i},
        }
        await rec.call(
            self.client,
            "broadcast",
            "POST",
            "/internal/broadcast",
            202,
            json=body,
            headers=auth(self.service_token),
        )

    async def list_pages(self, rec: Recorder, _: int) -> None:
        headers = auth(self.user_tokens[self.rng.choice(self.users)])
        first = await rec.call(
            self.client,
            "first_page",
            "GET",
            "/api/v1/notifications",
            200,
            params={"limit": 50},
            headers=headers,
        )
        cursor = first.json().get("next_cursor") if first is not None else None
        if cursor:
            await rec.call(
                self.client,
                "next_page",
                "GET",
                "/api/v1/notifications",
                200,
                params={"limit": 50, "cursor": cursor},
                headers=headers,
            )

    async def unread_count(self, rec: Recorder, _: int) -> None:
        headers = auth(self.user_tokens[self.rng.choice(self.users)])
        await rec.call(
            self.client,
            "unread_count",
            "GET",
            "/api/v1/notifications/unread-count",
            200,
            headers=headers,
        )


async def run_load(
    args: argparse.Namespace, base_url: str, server_pid: int
) -> dict[str, dict[str, Any]]:
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    users = [f"user-{n:04d}" for n in range(args.users)]
    limits = httpx.Limits(
        max_connections=args.concurrency, max_keepalive_connections=args.concurrency
    )
    async with httpx.AsyncClient(
        base_url=base_url, http1=True, http2=False, limits=limits, timeout=60
    ) as client:
        load = Workload(
            client,
            users,
            {u: token(u, tenant, ["user"]) for u in users},
            token("bench-service", tenant, ["service"]),
            random.Random(args.seed),
        )
        warmup = max(args.concurrency * 2, 50)
        await run_phase("warmup", warmup, args.concurrency, server_pid, load.unread_count)
        c, pid = args.concurrency, server_pid
        return {
            "create": await run_phase("create", args.creates, c, pid, load.create),
            "broadcast": await run_phase("broadcast", BROADCASTS, c, pid, load.broadcast),
            "list": await run_phase("list", args.list_requests, c, pid, load.list_pages),
            "unread_count": await run_phase(
                "unread_count", args.list_requests, c, pid, load.unread_count
            ),
        }


# --------------------------------------------------------------------------- environment


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def pg_admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def database(kind: str, pg_dsn: str, tmp: Path) -> Iterator[str]:
    """A fresh database URL; a PostgreSQL database is dropped afterwards, even on error."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}"
        return
    name = f"notify_bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg_admin(pg_dsn, f'CREATE DATABASE "{name}"'))
    log(f"created database {name}")
    try:
        yield pg_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(pg_admin(pg_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        log(f"dropped database {name}")


@contextlib.contextmanager
def nats(tmp: Path) -> Iterator[str]:
    """The machine's NATS on 4222 when it answers, else an embedded nats-server."""
    if port_open(*LOCAL_NATS):
        yield "nats://{}:{}".format(*LOCAL_NATS)
        return
    from notify.core.embedded import EmbeddedNats

    server = EmbeddedNats(tmp / "nats")
    log("no NATS on 127.0.0.1:4222: starting an embedded nats-server")
    try:
        yield server.start()
    finally:
        server.stop()


def notify_binary() -> str:
    candidate = Path(sys.executable).parent / "notify"
    found = str(candidate) if candidate.is_file() else shutil.which("notify")
    if not found:
        raise SystemExit("bench: the `notify` console script was not found")
    return found


def server_env(database_url: str, nats_url: str, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAPID_", "NOTIFY_"))}
    env.update(
        DATABASE_URL=database_url,
        NATS_URL=nats_url,
        JWT_SECRET_KEY=JWT_SECRET,
        JWT_ALGORITHM="HS256",
        NOTIFY_LOG_LEVEL="WARNING",
        NOTIFY_DATA_DIR=str(tmp / "data"),
    )
    return env


def migrate(env: dict[str, str]) -> None:
    done = subprocess.run(
        [notify_binary(), "migrate"], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"notify migrate failed ({done.returncode}):\n{done.stderr}")
    log(done.stdout.strip())


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def api_server(
    env: dict[str, str], port: int, cpu: int | None, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`notify serve` as a child process (pinned to `cpu`); SIGTERM, then kill, at the end."""
    command = [notify_binary(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(proc, f"http://127.0.0.1:{port}", log_path)
        yield proc
    finally:
        stop(proc)
        if proc.returncode not in (0, -signal.SIGTERM):
            log(f"server exited with {proc.returncode}; its output:\n{tail(log_path)}")


def wait_healthy(
    proc: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"notify serve exited ({proc.returncode}):\n{tail(log_path)}")
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"{url}/health", timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text}"
        time.sleep(0.1)
    raise RuntimeError(f"/health not 200 within {timeout}s (last: {last}):\n{tail(log_path)}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def git(*command: str) -> str | None:
    """Output of a git command in the repository, or None when git is unavailable."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        done = subprocess.run(
            ["git", *command], cwd=ROOT, check=True, capture_output=True, text=True
        )
        return done.stdout.strip()
    return None


# --------------------------------------------------------------------------- CLI and output


def resolve_pinning(args: argparse.Namespace) -> None:
    """Server on the first usable core and load generator on the second, unless told."""
    if args.no_pin or not pinning_available():
        args.cpu_server = args.cpu_client = None
    else:
        first, second = sorted(os.sched_getaffinity(0))[:2]
        args.cpu_server = first if args.cpu_server is None else args.cpu_server
        args.cpu_client = second if args.cpu_client is None else args.cpu_client


def pinning_available() -> bool:
    return len(os.sched_getaffinity(0)) >= 2 and shutil.which("taskset") is not None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--creates", type=int, default=5000, help="POSTs in the create phase")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent workers")
    parser.add_argument(
        "--list-requests",
        type=int,
        default=1000,
        help="list operations (first page + next page) and unread-count GETs",
    )
    parser.add_argument("--users", type=int, default=100, help="users of the one tenant")
    parser.add_argument(
        "--cpu-server",
        type=int,
        help="core for `notify serve` (default: the first usable core, e.g. 0)",
    )
    parser.add_argument(
        "--cpu-client",
        type=int,
        help="core for this process (default: the second usable core, e.g. 1)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin either process")
    parser.add_argument(
        "--pg-dsn",
        default=DEFAULT_PG_DSN,
        help="admin DSN used to create/drop the database (NOTIFY_BENCH_PG)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed of the workload")
    parser.add_argument("--json-out", type=Path, help="also write the JSON document here")
    args = parser.parse_args(argv)
    for name in ("creates", "concurrency", "list_requests", "users"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    resolve_pinning(args)
    return args


def config(args: argparse.Namespace, nats_url: str) -> dict[str, Any]:
    return {
        "database": args.database,
        "concurrency": args.concurrency,
        "creates": args.creates,
        "broadcasts": BROADCASTS,
        "list_requests": args.list_requests,
        "users": args.users,
        "cpu_server": args.cpu_server,
        "cpu_client": args.cpu_client,
        "nats_url": nats_url,
        "git_commit": git("rev-parse", "--short", "HEAD") or None,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "src")),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }


def human_line(args: argparse.Namespace, phases: dict[str, dict[str, Any]]) -> str:
    parts = [
        f"{name.replace('_', '-')} {p['rps']:.0f}/s p99 {p['p99_ms']:.1f}ms"
        for name, p in phases.items()
    ]
    errors = sum(p["errors"] for p in phases.values())
    return (
        f"rest bench ({args.database}, c={args.concurrency}): "
        + " | ".join(parts)
        + f" | errors {errors}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with nats(tmp) as nats_url, database(args.database, args.pg_dsn, tmp) as db_url:
            env = server_env(db_url, nats_url, tmp)
            migrate(env)
            port = free_port()
            with api_server(env, port, args.cpu_server, tmp / "server.log") as proc:
                if args.cpu_client is not None:
                    os.sched_setaffinity(0, {args.cpu_client})
                log(
                    f"server pid {proc.pid} on :{port} (cpu {args.cpu_server}), "
                    f"client cpu {args.cpu_client}"
                )
                phases = asyncio.run(run_load(args, f"http://127.0.0.1:{port}", proc.pid))
                if proc.poll() is not None:
                    log(f"server died during the run:\n{tail(tmp / 'server.log')}")
                elif any(p["errors"] for p in phases.values()):
                    log(f"server output (tail):\n{tail(tmp / 'server.log')}")
    document = {"config": config(args, nats_url), "phases": phases}
    text = json.dumps(document, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(human_line(args, phases))
    return 1 if any(p["errors"] for p in phases.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
