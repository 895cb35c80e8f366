"""WebSocket fanout benchmark for notify: connect, idle memory, fanout throughput, latency.

Starts a real `notify serve` process (pinned with `taskset` to one core) against a fresh
PostgreSQL database (dropped afterwards) or a temporary SQLite file, and from this process
(pinned to another core) opens N WebSockets over U users of one tenant with a minimal
asyncio client (raw frames, no per-message JSON decoding), then:

1. `connect`: N sockets with bounded concurrency; total time and per-socket latency
   (TCP connect → `welcome` frame).
2. `idle_rss`: RSS of the server's process tree before and after connecting → bytes per
   idle socket.
3. `fanout`: M tenant broadcasts, then K per-user notifications, all through
   `POST /internal/broadcast` as fast as a few HTTP senders go; deliveries/s over first
   send → last receive, lost and duplicated deliveries, publish→receive latency.
4. `latency`: tenant broadcasts paced to about R deliveries/s for a few seconds;
   publish→receive p50/p95/p99.

Prints one JSON document, then one line of text.

    .venv/bin/python bench/fanout.py [--sockets N] [--users U] [--broadcasts M] ...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import resource
import socket
import struct
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.rest import (
    DEFAULT_PG_DSN,
    LOCAL_NATS,
    LOREM,
    api_server,
    auth,
    cpu_seconds,
    database,
    free_port,
    git,
    log,
    migrate,
    percentile,
    port_open,
    resolve_pinning,
    server_env,
    tail,
    token,
)

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
    uvloop = None  # type: ignore[assignment]

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not name it
RECV_BYTES = 256 * 1024
CMSG_BYTES = socket.CMSG_SPACE(16)  # one struct timespec
NOTIFICATION_PREFIX = b'{"type":"notification","seq":'
SEQ_AT = len(NOTIFICATION_PREFIX)
DATA_ID = b'"data":{"id":"'
ID_LEN = 36
WELCOME_PREFIX = b'{"type":"welcome"'
STAMP = re.compile(rb'"t":(\d+)')
MAX_SOCKETS_PER_USER = 10  # the server's default NOTIFY_WS_MAX_SOCKETS_PER_USER
MESSAGE = LOREM[:180]

TARGETS = {
    "broadcast_deliveries_per_s": 100_000,  # at 10,000 sockets
    "latency_p99_ms": 15.0,  # at 1,000 sockets under 20,000 deliveries/s
    "rss_per_idle_socket_bytes": 8 * 1024,
    "connect_seconds": 3.0,  # 10,000 sockets
}


# --------------------------------------------------------------------------- the client


class Collector:
    """What all sockets received: counters shared by the hot path, read by the phases."""

    __slots__ = (
        "close_codes",
        "disorder",
        "dups",
        "first_error",
        "index",
        "last_recv_ns",
        "other",
        "read_samples",
        "sample_slots",
        "samples",
        "unique",
    )

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}  # notification id → small int (slot in counts)
        self.unique = 0  # (socket, notification) pairs seen at least once
        self.dups = 0  # further copies of a pair already seen
        self.disorder = 0  # notification frames whose seq did not increase
        self.last_recv_ns = 0  # time_ns of the last chunk holding a notification
        self.samples: list[int] = []  # publish→kernel receive, ns (sampled sockets)
        self.read_samples: list[int] = []  # publish→read by this process, ns (same sockets)
        self.sample_slots: list[int] = []  # the notification of each sample
        self.other: Counter[str] = Counter()  # frames other than welcome/notification
        self.close_codes: Counter[int] = Counter()  # close frames (or 1006) from the server
        self.first_error: str | None = None

    def error(self, problem: str) -> None:
        if self.first_error is None:
            self.first_error = problem
            log(f"socket error: {problem}")


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client→server control frame (≤ 125 bytes payload), masked as RFC 6455 requires."""
    mask = os.urandom(4)
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
    return bytes((0x80 | opcode, 0x80 | n)) + mask + body


class WsClient(asyncio.Protocol):
    """One WebSocket: HTTP Upgrade, then server frames parsed incrementally.

    Notification frames are not JSON-decoded: the server splices them as
    `{"type":"notification","seq":N,"data":{"id":"<uuid>",...` so `seq` and the id are read
    at fixed places, and the bench's send stamp `"t":<ns>` only on sampled sockets."""

    __slots__ = (
        "accept",
        "arrived",
        "close_code",
        "closed",
        "col",
        "counts",
        "fragments",
        "last_seq",
        "raw",
        "ready",
        "request",
        "rest",
        "sampled",
        "transport",
        "upgraded",
        "user",
    )

    def __init__(
        self,
        col: Collector,
        user: str,
        path: str,
        host: str,
        sampled: bool,
        ready: asyncio.Future[None],
    ) -> None:
        key = base64.b64encode(os.urandom(16))
        self.accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())  # noqa: S324
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.col, self.user, self.sampled = col, user, sampled
        self.ready = ready
        self.transport: asyncio.Transport | None = None
        self.rest = b""
        self.upgraded = False
        self.closed = False
        self.close_code: int | None = None
        self.counts = bytearray()  # per notification slot: copies received (saturates)
        self.last_seq = 0
        self.fragments: list[bytes] | None = None
        self.raw: socket.socket | None = None  # sampled, after `welcome`: read by `readable`
        self.arrived = 0  # the kernel's receive time of the chunk being parsed (raw only)

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.stop_raw()
        if self.close_code is None and self.upgraded:
            self.close_code = 1006
            self.col.close_codes[1006] += 1
        if not self.ready.done():
            reason = f"closed before welcome (code {self.close_code}, {exc or 'eof'})"
            self.ready.set_exception(ConnectionError(reason))

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            self.frames(data)
        else:
            self.handshake(data)

    # -- protocol

    def handshake(self, data: bytes) -> None:
        self.rest += data
        end = self.rest.find(b"\r\n\r\n")
        if end < 0:
            if len(self.rest) > 65536:
                self.fail("handshake: response head too long")
            return
        head, after = self.rest[:end], self.rest[end + 4 :]
        self.rest = b""
        status = head.split(b"\r\n", 1)[0]
        if not status.startswith(b"HTTP/1.1 101"):
            self.fail(f"handshake: {status.decode(errors='replace')} {after[:300]!r}")
            return
        if b"sec-websocket-accept: " + self.accept.lower() not in head.lower():
            self.fail("handshake: wrong Sec-WebSocket-Accept")
            return
        self.upgraded = True
        if after:
            self.frames(after)

    def frames(self, data: bytes) -> None:
        buf = self.rest + data if self.rest else data
        n, pos, now = len(buf), 0, time.time_ns()
        got = False
        while n - pos >= 2:
            b1 = buf[pos + 1]
            size = b1 & 0x7F
            if size < 126:
                start = pos + 2
            elif size == 126:
                if n - pos < 4:
                    break
                size, start = (buf[pos + 2] << 8) | buf[pos + 3], pos + 4
            else:
                if n - pos < 10:
                    break
                size, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            end = start + size
            if end > n:
                break
            if b1 & 0x80:
                self.fail("protocol: the server sent a masked frame")
                return
            b0 = buf[pos]
            if b0 == 0x81 and buf.startswith(NOTIFICATION_PREFIX, start):
                self.notification(buf, start, end, now)
                got = True
            else:
                got = self.other(b0, buf[start:end], now) or got
            pos = end
        self.rest = buf[pos:] if pos < n else b""
        if got:
            self.col.last_recv_ns = now

    def notification(self, buf: bytes, start: int, end: int, now: int) -> None:
        """The hot path: one notification frame, found between start and end of buf."""
        col = self.col
        comma = buf.find(b",", start + SEQ_AT, end)
        seq = int(buf[start + SEQ_AT : comma])
        if buf.startswith(DATA_ID, comma + 1):
            at = comma + 1 + len(DATA_ID)
        else:  # not the expected layout: search for it
            at = buf.find(DATA_ID, comma, end) + len(DATA_ID)
        nid = buf[at : at + ID_LEN]
        slot = col.index.get(nid)
        if slot is None:
            slot = col.index[nid] = len(col.index)
        counts = self.counts
        if slot >= len(counts):
            counts.extend(bytes(slot - len(counts) + 256))
        seen = counts[slot]
        if seen:
            col.dups += 1
            if seen < 255:
                counts[slot] = seen + 1
        else:
            col.unique += 1
            counts[slot] = 1
        if seq <= self.last_seq:
            col.disorder += 1
        self.last_seq = seq
        if self.sampled:
            stamp = STAMP.search(buf, at + ID_LEN, end)
            if stamp is not None:
                sent = int(stamp.group(1))
                col.samples.append((self.arrived or now) - sent)
                col.read_samples.append(now - sent)
                col.sample_slots.append(slot)

    def other(self, b0: int, payload: bytes, now: int) -> bool:
        """Control frames, fragments and the rare text frames; True for a notification."""
        opcode, fin = b0 & 0x0F, b0 & 0x80
        if opcode == 0x9:
            self.write(masked_frame(0xA, payload))
        elif opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if self.close_code is None:
                self.close_code = code
                self.col.close_codes[code] += 1
                self.write(masked_frame(0x8, payload[:2]))
            if self.transport is not None:
                self.transport.close()
        elif opcode in (0x1, 0x2) and not fin:
            self.fragments = [payload]
        elif opcode == 0x0 and self.fragments is not None:
            self.fragments.append(payload)
            if fin:
                whole, self.fragments = b"".join(self.fragments), None
                return self.text(whole, now)
        elif opcode == 0x1:
            return self.text(payload, now)
        return False

    def text(self, payload: bytes, now: int) -> bool:
        if payload.startswith(NOTIFICATION_PREFIX):
            self.notification(payload, 0, len(payload), now)
            return True
        if payload.startswith(WELCOME_PREFIX):
            if not self.ready.done():
                self.ready.set_result(None)
                if self.sampled:
                    self.read_raw()
            return False
        try:
            kind = str(json.loads(payload).get("type"))
        except (ValueError, AttributeError):
            kind = "invalid"
        self.col.other[kind] += 1
        if kind == "error":
            self.col.error(f"error frame: {payload[:300].decode(errors='replace')}")
        return False

    # -- reading with the kernel's receive time (sampled sockets)

    def read_raw(self) -> None:
        """Read this socket from now on with recvmsg and SO_TIMESTAMPNS: each chunk comes
        with the time the kernel received it, so latency is not the time this one process
        takes to get round to a socket among N (a real client reads only its own).

        The transport stops reading; a duplicate of its descriptor is watched instead (the
        loop refuses a reader on a descriptor a transport owns); writes stay the transport's."""
        assert self.transport is not None
        own = self.transport.get_extra_info("socket")
        self.transport.pause_reading()
        self.raw = socket.socket(fileno=os.dup(own.fileno()))
        self.raw.setblocking(False)
        self.raw.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        asyncio.get_running_loop().add_reader(self.raw.fileno(), self.readable)

    def readable(self) -> None:
        assert self.raw is not None
        try:
            data, ancillary, _, _ = self.raw.recvmsg(RECV_BYTES, CMSG_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # EOF or an error: the transport sees it and reports connection_lost
            self.stop_raw()
            if self.transport is not None:
                self.transport.resume_reading()
            return
        for level, kind, blob in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack_from("qq", blob)
                self.arrived = seconds * 1_000_000_000 + nanoseconds
        self.data_received(data)
        self.arrived = 0

    def stop_raw(self) -> None:
        if self.raw is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.raw.fileno())
            self.raw.close()
            self.raw = None

    def write(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def fail(self, problem: str) -> None:
        self.stop_raw()
        self.col.error(problem)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(problem))
        if self.transport is not None:
            self.transport.abort()

    def close(self, code: int = 1000) -> None:
        if self.close_code is None:
            self.close_code = code
            self.write(masked_frame(0x8, code.to_bytes(2, "big")))

    @property
    def open(self) -> bool:
        return self.upgraded and not self.closed and self.close_code is None


# --------------------------------------------------------------------------- measurement


def proc_tree(root: int) -> list[int]:
    """root and all its descendants (by ppid in /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (smaps_rollup, else VmRSS); 0 when it is gone."""
    for name, key in (("smaps_rollup", "Rss:"), ("status", "VmRSS:")):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    return 0


def tree_rss(root: int) -> int:
    return sum(rss_bytes(pid) for pid in proc_tree(root))


def tree_cpu(root: int) -> float:
    total = 0.0
    for pid in proc_tree(root):
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def core_times() -> dict[str, tuple[int, int]]:
    """Per core: (busy, total) jiffies from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *rest = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(v) for v in rest[:8]]
            out[name[3:]] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


def all_cpu() -> dict[int, tuple[str, float]]:
    """Every process: (name, user+system CPU seconds)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                head, rest = (entry / "stat").read_text().rsplit(")", 1)
                fields = rest.split()
                name = head.split("(", 1)[1]
                out[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def open_files_limit(pid: int) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                return int(line.split()[3])
    return None


def busy_since(start: dict[str, tuple[int, int]]) -> dict[str, float]:
    """Each core's busy share since `start` (a `core_times()` reading)."""
    return {
        core: round((b - start[core][0]) / max(t - start[core][1], 1), 2)
        for core, (b, t) in core_times().items()
        if core in start
    }


def others_since(
    start: dict[int, tuple[str, float]], mine: set[int], wall: float, top: int = 5
) -> dict[str, float]:
    """CPU per wall second since `start` (an `all_cpu()` reading) of the busiest other
    processes, summed by name."""
    others: dict[str, float] = {}
    for pid, (name, cpu) in all_cpu().items():
        if pid in start and pid not in mine:
            others[name] = others.get(name, 0.0) + cpu - start[pid][1]
    busiest = sorted(others.items(), key=lambda item: -item[1])[:top]
    return {name: round(cpu / wall, 2) for name, cpu in busiest if cpu >= 0.01 * wall}


class CpuMeter:
    """CPU used per wall second, between creation and `read()`, by this process, the
    server tree, NATS (when ours), each core, and the busiest other processes by name
    (PostgreSQL, an external nats-server, anything else running on the machine)."""

    def __init__(self, server_pid: int, nats_pid: int | None) -> None:
        self.server_pid, self.nats_pid = server_pid, nats_pid
        self.wall = time.perf_counter()
        self.client = time.process_time()
        self.server = tree_cpu(server_pid)
        self.nats = tree_cpu(nats_pid) if nats_pid else 0.0
        self.cores = core_times()
        self.procs = all_cpu()

    def read(self) -> dict[str, Any]:
        wall = max(time.perf_counter() - self.wall, 1e-9)
        busy = busy_since(self.cores)
        out: dict[str, Any] = {
            "measured_seconds": round(wall, 3),
            "client_cpu": round((time.process_time() - self.client) / wall, 2),
            "server_cpu": round((tree_cpu(self.server_pid) - self.server) / wall, 2),
        }
        if self.nats_pid:
            out["nats_cpu"] = round((tree_cpu(self.nats_pid) - self.nats) / wall, 2)
        out["cores_busy"] = busy
        out["machine_cpu"] = round(sum(busy.values()), 2)
        out["other_cpu"] = others_since(
            self.procs, {os.getpid(), *proc_tree(self.server_pid)}, wall
        )
        return out


def latency_ms(samples_ns: list[int]) -> dict[str, Any]:
    values = sorted(v / 1e6 for v in samples_ns)
    out: dict[str, Any] = {"samples": len(values)}
    for p in (50, 95, 99):
        out[f"p{p}_ms"] = round(percentile(values, p), 2)
    out["max_ms"] = round(values[-1], 2) if values else 0.0
    return out


def spread(slots: list[int], samples_ns: list[int]) -> dict[str, float]:
    """Per notification, its first and last sampled socket: medians over notifications.
    The first is the pipeline (HTTP, database, NATS); last minus first is the fanout."""
    by: dict[int, list[int]] = {}
    for slot, ns in zip(slots, samples_ns, strict=True):
        by.setdefault(slot, []).append(ns)
    firsts = sorted(min(v) / 1e6 for v in by.values())
    lasts = sorted(max(v) / 1e6 for v in by.values())
    spans = sorted((max(v) - min(v)) / 1e6 for v in by.values())
    return {
        "first_socket_p50_ms": round(percentile(firsts, 50), 2),
        "last_socket_p50_ms": round(percentile(lasts, 50), 2),
        "first_to_last_p50_ms": round(percentile(spans, 50), 2),
    }


def seconds_summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {f"p{p}_ms": round(percentile(ordered, p) * 1000, 2) for p in (50, 95, 99)}


# --------------------------------------------------------------------------- publishing


@dataclass(slots=True)
class Sent:
    nid: bytes
    user: str | None  # None: tenant-wide


class HttpConnection:
    """One keep-alive HTTP/1.1 connection, written and read by hand: the publish stamp is
    taken a few microseconds before the request's bytes leave, not an HTTP client's
    request-building (about 0.5-1 ms with httpx) earlier."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        self.writer.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
        answer = await self.reader.readuntil(b"\r\n\r\n")
        status = int(answer[9:12])
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", answer)
        if length is None:
            raise ConnectionError(f"no Content-Length in the answer: {answer[:300]!r}")
        return status, await self.reader.readexactly(int(length.group(1)))

    def close(self) -> None:
        self.writer.close()


class Publisher:
    """POST /internal/broadcast with the send stamp in metadata over a pool of keep-alive
    connections; keeps ids and errors."""

    def __init__(self, port: int, service_token: str) -> None:
        self.port = port
        self.head = (
            f"POST /internal/broadcast HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {service_token}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.idle: list[HttpConnection] = []
        self.posted = 0
        self.errors = 0
        self.first_error: str | None = None
        self.latencies: list[float] = []

    async def post(self, i: int, user: str | None) -> Sent | None:
        target: dict[str, Any] = {"user_id": user} if user else {"broadcast_to_tenant": True}
        conn = self.idle.pop() if self.idle else None
        self.posted += 1
        try:
            if conn is None:
                conn = HttpConnection(*await asyncio.open_connection("127.0.0.1", self.port))
            stamp = time.time_ns()
            body = {
                "title": f"Fanout {i}",
                "message": MESSAGE,
                "notification_type": "announcement",
                "metadata": {"t": stamp},
                **target,
            }
            status, answer = await conn.post(
                self.head, json.dumps(body, separators=(",", ":")).encode()
            )
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            if conn is not None:
                conn.close()
            self.problem(f"POST /internal/broadcast: {type(exc).__name__}: {exc}")
            return None
        self.latencies.append((time.time_ns() - stamp) / 1e9)
        self.idle.append(conn)
        if status != 202:
            self.problem(f"POST /internal/broadcast -> {status}: {answer.decode(errors='replace')}")
            return None
        return Sent(json.loads(answer)["notification_ids"][0].encode(), user)

    def problem(self, text: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = text[:1000]
            log(f"first publish error: {text}")

    def close(self) -> None:
        for conn in self.idle:
            conn.close()


# --------------------------------------------------------------------------- the run


@dataclass
class Run:
    args: argparse.Namespace
    port: int
    server_pid: int
    nats_pid: int | None
    col: Collector
    users: list[str]
    conns: list[WsClient]
    pub: Publisher
    client: httpx.AsyncClient  # the rare requests: /ws/status
    headers: dict[str, str]

    def meter(self) -> CpuMeter:
        return CpuMeter(self.server_pid, self.nats_pid)

    # -- connect

    async def connect(self, tenant: str) -> dict[str, Any]:
        args, loop = self.args, asyncio.get_running_loop()
        tokens = {u: token(u, tenant, ["user"]) for u in self.users}
        stride = max(1, args.sockets // args.latency_sockets)
        gate = asyncio.Semaphore(args.connect_concurrency)
        latencies: list[float] = []
        failures: Counter[str] = Counter()
        host = f"127.0.0.1:{self.port}"

        async def one(i: int) -> WsClient | None:
            user = self.users[i % len(self.users)]
            ready: asyncio.Future[None] = loop.create_future()
            proto = WsClient(
                self.col, user, f"/ws/notify?token={tokens[user]}", host, i % stride == 0, ready
            )
            async with gate:
                start = time.perf_counter()
                try:
                    async with asyncio.timeout(args.connect_timeout):
                        await loop.create_connection(lambda: proto, "127.0.0.1", self.port)
                        await ready
                except (OSError, TimeoutError) as exc:
                    failures[type(exc).__name__] += 1
                    self.col.error(f"connect #{i}: {type(exc).__name__}: {exc}")
                    if proto.transport is not None:
                        proto.transport.abort()
                    return None
                latencies.append(time.perf_counter() - start)
                return proto

        log(f"connecting {args.sockets} sockets ({args.connect_concurrency} in flight)")
        meter = self.meter()
        start = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(args.sockets)))
        seconds = time.perf_counter() - start
        cpu = meter.read()
        self.conns = [c for c in results if c is not None]
        status = await self.wait_status(len(self.conns))
        log(f"connected {len(self.conns)}/{args.sockets} in {seconds:.2f}s")
        return {
            "sockets": args.sockets,
            "connected": len(self.conns),
            "failed": dict(failures),
            "seconds": round(seconds, 3),
            "per_second": round(len(self.conns) / seconds, 1) if seconds else 0.0,
            **seconds_summary(latencies),
            "server_connections": status.get("connections"),
            **cpu,
        }

    async def ws_status(self) -> dict[str, Any]:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            response = await self.client.get("/ws/status", headers=self.headers)
            if response.status_code == 200:
                return dict(response.json())
        return {}

    async def wait_status(self, connections: int, within: float = 10.0) -> dict[str, Any]:
        """Until the server's hub counts `connections` sockets (or `within` seconds)."""
        deadline = time.monotonic() + within
        status = await self.ws_status()
        while status.get("connections") != connections and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            status = await self.ws_status()
        return status

    # -- idle memory

    def rss(self) -> dict[str, int]:
        out = {"server_tree": tree_rss(self.server_pid)}
        if self.nats_pid:
            out["nats"] = tree_rss(self.nats_pid)
        return out

    # -- fanout

    def alive(self) -> list[WsClient]:
        return [c for c in self.conns if c.open]

    async def publish(self, plan: list[str | None], senders: int) -> list[Sent]:
        """Send plan[i] (None = tenant-wide, else a user) with `senders` workers, in order."""
        sent: list[Sent | None] = [None] * len(plan)
        cursor = iter(range(len(plan)))

        async def worker() -> None:
            for i in cursor:
                sent[i] = await self.pub.post(i, plan[i])

        await asyncio.gather(*(worker() for _ in range(min(senders, len(plan)))))
        return [s for s in sent if s is not None]

    async def paced(self, count: int, interval: float) -> list[Sent]:
        """`count` tenant broadcasts, one every `interval` seconds (open loop)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for i in range(count):
            delay = start + i * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self.pub.post(i, None)))
        return [s for s in await asyncio.gather(*tasks) if s is not None]

    async def drain(self, target: int, idle: float) -> bool:
        """Wait until `target` unique deliveries were seen in all, or none for `idle` s."""
        col, last, last_change, next_log = self.col, -1, time.monotonic(), time.monotonic() + 5
        while col.unique < target:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            if col.unique != last:
                last, last_change = col.unique, now
            elif now - last_change > idle:
                log(f"no delivery for {idle:.0f}s: {target - col.unique} missing")
                return False
            if now > next_log:
                log(f"  … {col.unique}/{target}")
                next_log = now + 5
        return True

    async def phase(
        self, name: str, send: Callable[[], Any], expected_of: Callable[[list[Sent]], int]
    ) -> dict[str, Any]:
        col, targets = self.col, self.alive()
        errors_before, posts_before = self.pub.errors, len(self.pub.latencies)
        unique_before, dups_before = col.unique, col.dups
        col.samples, col.read_samples, col.sample_slots = [], [], []
        meter = self.meter()
        first_send = time.time_ns()
        sent: list[Sent] = await send()
        last_send = time.time_ns()
        expected = expected_of(sent)
        complete = await self.drain(unique_before + expected, self.args.drain_timeout)
        cpu = meter.read()
        samples = col.samples
        tally = self.tally(sent, targets)
        window = max(col.last_recv_ns - first_send, 1) / 1e9
        publish_s = (last_send - first_send) / 1e9
        log(
            f"{name}: {tally['unique']}/{expected} deliveries in {window:.2f}s "
            f"({tally['unique'] / window:.0f}/s), lost {tally['lost']}, dup {tally['duplicates']}"
        )
        return {
            "notifications": len(sent),
            "publish_errors": self.pub.errors - errors_before,
            "publish_seconds": round(publish_s, 3),
            "publish_per_s": round(len(sent) / publish_s, 1) if publish_s else 0.0,
            "post_latency": seconds_summary(self.pub.latencies[posts_before:]),
            "sockets": len(targets),
            "expected": expected,
            **tally,
            "complete": complete,
            "window_seconds": round(window, 3),
            "deliveries_per_s": round(tally["unique"] / window, 1),
            "latency": latency_ms(samples),
            "read_latency": latency_ms(col.read_samples),
            "per_notification": spread(col.sample_slots, samples),
            "all_seen_unique": col.unique - unique_before,
            "all_seen_duplicates": col.dups - dups_before,
            **cpu,
        }

    def tally(self, sent: list[Sent], targets: list[WsClient]) -> dict[str, int]:
        """Exact per-(socket, notification) accounting of one phase's notifications."""
        slots = [(self.col.index.get(s.nid), s.user) for s in sent]
        expected = unique = received = unexpected = 0
        for conn in targets:
            counts, size, user = conn.counts, len(conn.counts), conn.user
            for slot, target in slots:
                seen = counts[slot] if slot is not None and slot < size else 0
                if target is None or target == user:
                    expected += 1
                    unique += seen > 0
                    received += seen
                else:
                    unexpected += seen
        return {
            "unique": unique,
            "received": received,
            "lost": expected - unique,
            "duplicates": received - unique,
            "unexpected": unexpected,
        }

    async def fanout(self) -> dict[str, Any]:
        args = self.args
        n_alive = len(self.alive())
        log(f"fanout: {args.broadcasts} tenant broadcasts to {n_alive} sockets")
        broadcast = await self.phase(
            "broadcast",
            lambda: self.publish([None] * args.broadcasts, args.senders),
            lambda sent: len(sent) * n_alive,
        )
        per_user = Counter(c.user for c in self.alive())
        plan: list[str | None] = [
            self.users[k % len(self.users)] for k in range(args.user_messages)
        ]
        log(f"fanout: {args.user_messages} per-user notifications")
        user = await self.phase(
            "user",
            lambda: self.publish(plan, args.senders),
            lambda sent: sum(per_user[s.user] for s in sent if s.user),
        )
        return {"broadcast": broadcast, "user": user}

    async def latency(self) -> dict[str, Any]:
        args, n_alive = self.args, len(self.alive())
        per_second = args.rate / max(n_alive, 1)
        count = max(1, round(per_second * args.latency_seconds))
        log(
            f"latency: {count} tenant broadcasts at {per_second:.1f}/s "
            f"(~{args.rate} deliveries/s to {n_alive} sockets)"
        )
        result = await self.phase(
            "latency",
            lambda: self.paced(count, 1 / per_second),
            lambda sent: len(sent) * n_alive,
        )
        return {"target_deliveries_per_s": args.rate, "broadcasts_per_s": per_second, **result}

    async def close_all(self) -> None:
        for conn in self.conns:
            conn.close()
        for _ in range(100):  # up to 5 s for the server's close answers
            if all(c.closed for c in self.conns):
                break
            await asyncio.sleep(0.05)
        for conn in self.conns:
            if not conn.closed and conn.transport is not None:
                conn.transport.abort()


async def open_socket(col: Collector, user: str, tok: str, port: int) -> WsClient:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    proto = WsClient(col, user, f"/ws/notify?token={tok}", f"127.0.0.1:{port}", False, ready)
    await loop.create_connection(lambda: proto, "127.0.0.1", port)
    await asyncio.wait_for(ready, 10)
    return proto


async def warm_up(run: Run, tenant: str) -> None:
    """Unmeasured: a broadcast through outbox and bus, and a few sockets opened and closed,
    so the baseline RSS already holds what the first use of each path allocates."""
    sent = await run.pub.post(-1, None)
    if sent is None:
        raise RuntimeError(f"warm-up broadcast failed: {run.pub.first_error}")
    col = Collector()
    tok = token("warmup", tenant, ["user"])
    for _ in range(3):
        proto = await open_socket(col, "warmup", tok, run.port)
        proto.close()
    await run.wait_status(0)
    await asyncio.sleep(1)


async def measure(
    args: argparse.Namespace, port: int, server_pid: int, nats_pid: int | None
) -> dict[str, Any]:
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    service_token = token("bench-service", tenant, ["service"])
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        run = Run(
            args,
            port,
            server_pid,
            nats_pid,
            Collector(),
            [f"u{n}" for n in range(args.users)],
            [],
            Publisher(port, service_token),
            client,
            auth(service_token),
        )
        try:
            await warm_up(run, tenant)
            before = run.rss()
            connect = await run.connect(tenant)
            await asyncio.sleep(args.settle)  # presence writes and the like finish first
            after = run.rss()
            connected = max(len(run.conns), 1)
            idle: dict[str, Any] = {
                "before_bytes": before,
                "after_bytes": after,
                "sockets": len(run.conns),
                "bytes_per_socket": round(
                    (after["server_tree"] - before["server_tree"]) / connected
                ),
                "server_tree_pids": proc_tree(server_pid),
            }
            if nats_pid:
                idle["nats_bytes_per_socket"] = round((after["nats"] - before["nats"]) / connected)
            log(f"idle RSS: {idle['bytes_per_socket'] / 1024:.1f} KiB per socket (server tree)")
            fanout = await run.fanout()
            latency = await run.latency()
            idle["after_run_bytes"] = run.rss()
            status = await run.ws_status()
            still_open = sum(c.open for c in run.conns)
        finally:
            await run.close_all()
            run.pub.close()
    col = run.col
    return {
        "connect": connect,
        "idle_rss": idle,
        "fanout": fanout,
        "latency": latency,
        "sockets_end": {
            "open": still_open,
            "close_codes": {str(k): v for k, v in col.close_codes.items()},
            "other_frames": dict(col.other),
            "seq_not_increasing": col.disorder,
            "first_error": col.first_error,
            "publish_errors": run.pub.errors,
            "first_publish_error": run.pub.first_error,
            "publish_latency": seconds_summary(run.pub.latencies),
            "server_ws_status": status,
        },
    }


# --------------------------------------------------------------------------- environment


def raise_fd_limit(need: int) -> int:
    """Soft RLIMIT_NOFILE up to the hard limit; the server inherits it from this process."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < top:
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
    if top < need:
        raise SystemExit(
            f"bench: {need} file descriptors needed but the hard limit (ulimit -Hn) is {top}"
        )
    return top


@contextlib.contextmanager
def nats(tmp: Path, cpu: int | None, which: str) -> Iterator[tuple[str, int | None]]:
    """(url, pid): an embedded nats-server on the server's core (the issue's "server tree
    (API + its NATS) on one core"), or with `--nats local` the machine's NATS on 4222
    (pid None: not ours, not pinned)."""
    if which == "local":
        if not port_open(*LOCAL_NATS):
            raise SystemExit("--nats local: nothing answers on 127.0.0.1:4222")
        yield "nats://{}:{}".format(*LOCAL_NATS), None
        return
    from notify.core.embedded import EmbeddedNats

    server = EmbeddedNats(tmp / "nats")
    log(f"starting an embedded nats-server (cpu {cpu})")
    mine = os.sched_getaffinity(0)
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})  # the child inherits the affinity
        try:
            url = server.start()
        finally:
            os.sched_setaffinity(0, mine)
        assert server.proc is not None
        yield url, server.proc.pid
    finally:
        server.stop()


def server_problems(log_path: Path) -> dict[str, Any]:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    lines = text.splitlines()
    errors = sum("ERROR" in line or "Traceback" in line for line in lines)
    out: dict[str, Any] = {"log_lines": len(lines), "error_lines": errors}
    if errors:
        out["tail"] = tail(log_path, 30)
    return out


# --------------------------------------------------------------------------- CLI and output


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--sockets", type=int, default=1000, help="WebSockets to open (N)")
    add("--users", type=int, help="users of the one tenant (default N/2)")
    add("--broadcasts", type=int, default=200, help="tenant broadcasts in the fanout phase (M)")
    add("--user-messages", type=int, default=200, help="per-user notifications (K)")
    add("--rate", type=int, default=20_000, help="deliveries/s of the paced latency phase")
    add("--latency-seconds", type=float, default=5.0, help="length of the latency phase")
    add("--latency-sockets", type=int, default=100, help="sockets that record latency")
    add("--senders", type=int, default=4, help="concurrent HTTP senders in the fanout phase")
    add("--connect-concurrency", type=int, default=500, help="connects in flight")
    add("--connect-timeout", type=float, default=30.0, help="seconds per connect")
    add("--drain-timeout", type=float, default=30.0, help="give up after so long w/o progress")
    add("--settle", type=float, default=2.0, help="idle seconds before the RSS reading")
    add("--database", choices=["postgresql", "sqlite"], default="postgresql")
    add(
        "--nats",
        choices=["embedded", "local"],
        default="embedded",
        help="an embedded nats-server on the server's core, or the machine's on 4222",
    )
    add("--pg-dsn", default=DEFAULT_PG_DSN, help="admin DSN to create/drop the database")
    add("--cpu-server", type=int, help="core of `notify serve` (default: first usable)")
    add("--cpu-client", type=int, help="core of this process (default: second usable)")
    add("--no-pin", action="store_true", help="do not pin either process")
    add("--json-out", type=Path, help="also write the JSON document here")
    args = parser.parse_args(argv)
    if args.users is None:
        args.users = max(1, args.sockets // 2)
    for name in ("sockets", "users", "senders", "connect_concurrency", "latency_sockets"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.rate < 1 or args.latency_seconds <= 0:
        parser.error("--rate and --latency-seconds must be positive")
    if -(-args.sockets // args.users) > MAX_SOCKETS_PER_USER:
        parser.error(
            f"more than {MAX_SOCKETS_PER_USER} sockets per user: the server would replace "
            "the oldest (4008); raise --users"
        )
    resolve_pinning(args)
    return args


def config(args: argparse.Namespace, nats_url: str, nats_pid: int | None) -> dict[str, Any]:
    return {
        "sockets": args.sockets,
        "users": args.users,
        "broadcasts": args.broadcasts,
        "user_messages": args.user_messages,
        "rate": args.rate,
        "latency_seconds": args.latency_seconds,
        "senders": args.senders,
        "connect_concurrency": args.connect_concurrency,
        "database": args.database,
        "cpu_server": args.cpu_server,
        "cpu_client": args.cpu_client,
        "nats_url": nats_url,
        "nats": (
            f"embedded nats-server (pid {nats_pid}, child of the bench, pinned to the server "
            "core, not in the server tree)"
            if nats_pid
            else "external nats-server on 127.0.0.1:4222: a separate process, not pinned, "
            "not in the server tree, not measured"
        ),
        "client_loop": "uvloop" if uvloop is not None else "asyncio",
        "git_commit": git("rev-parse", "--short", "HEAD") or None,
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", "src")),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def targets(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    rate = result["fanout"]["broadcast"]["deliveries_per_s"]
    p99 = result["latency"]["latency"]["p99_ms"]
    rss = result["idle_rss"]["bytes_per_socket"]
    connect = result["connect"]
    limit = TARGETS
    return {
        "broadcast_deliveries_per_s": {
            "target": f">= {limit['broadcast_deliveries_per_s']} at 10000 sockets",
            "value": rate,
            "pass": rate >= limit["broadcast_deliveries_per_s"],
            "comparable": args.sockets >= 10_000,
        },
        "latency_p99_ms": {
            "target": f"< {limit['latency_p99_ms']} at 1000 sockets under 20000 deliveries/s",
            "value": p99,
            "pass": 0 < p99 < limit["latency_p99_ms"],
            "comparable": args.sockets == 1000 and args.rate == 20_000,
        },
        "rss_per_idle_socket_bytes": {
            "target": f"<= {limit['rss_per_idle_socket_bytes']}",
            "value": rss,
            "pass": rss <= limit["rss_per_idle_socket_bytes"],
            "comparable": True,
        },
        "connect_seconds": {
            "target": f"< {limit['connect_seconds']} for 10000 sockets",
            "value": connect["seconds"],
            "pass": connect["connected"] == connect["sockets"]
            and connect["seconds"] < limit["connect_seconds"],
            "comparable": args.sockets == 10_000,
        },
    }


def human_line(args: argparse.Namespace, doc: dict[str, Any]) -> str:
    fan, lat, read = doc["fanout"], doc["latency"]["latency"], doc["latency"]["read_latency"]
    spans = doc["latency"]["per_notification"]
    lost = sum(fan[p]["lost"] for p in ("broadcast", "user")) + doc["latency"]["lost"]
    dup = sum(fan[p]["duplicates"] for p in ("broadcast", "user")) + doc["latency"]["duplicates"]
    return (
        f"fanout ({args.sockets} sockets): {fan['broadcast']['deliveries_per_s']:.0f} "
        f"deliveries/s, p50/p95/p99 {lat['p50_ms']}/{lat['p95_ms']}/{lat['p99_ms']} ms "
        f"(read here {read['p50_ms']}/{read['p95_ms']}/{read['p99_ms']}; first/last socket "
        f"{spans['first_socket_p50_ms']}/{spans['last_socket_p50_ms']}) "
        f"at {doc['latency']['deliveries_per_s']:.0f}/s, lost {lost}, dup {dup}, "
        f"connect {doc['connect']['seconds']:.2f} s, "
        f"{doc['idle_rss']['bytes_per_socket'] / 1024:.1f} KiB/idle socket"
    )


def run_async(coro: Any) -> Any:
    if uvloop is not None:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    fd_limit = raise_fd_limit(args.sockets + 256)
    with tempfile.TemporaryDirectory(prefix="notify-fanout-") as tmp_name:
        tmp = Path(tmp_name)
        log_path = tmp / "server.log"
        with (
            nats(tmp, args.cpu_server, args.nats) as (nats_url, nats_pid),
            database(args.database, args.pg_dsn, tmp) as db_url,
        ):
            env = server_env(db_url, nats_url, tmp)
            migrate(env)
            port = free_port()
            with api_server(env, port, args.cpu_server, log_path) as proc:
                if args.cpu_client is not None:
                    os.sched_setaffinity(0, {args.cpu_client})
                log(
                    f"server pid {proc.pid} on :{port} (cpu {args.cpu_server}, "
                    f"nofile {open_files_limit(proc.pid)}), client cpu {args.cpu_client}"
                )
                try:
                    result = run_async(measure(args, port, proc.pid, nats_pid))
                finally:
                    if proc.poll() is not None:
                        log(f"server died during the run:\n{tail(log_path)}")
                problems = server_problems(log_path)
                if problems["error_lines"]:
                    log(f"server output (tail):\n{problems['tail']}")
    document = {
        "config": {**config(args, nats_url, nats_pid), "fd_limit": fd_limit},
        **result,
        "server_log": problems,
    }
    document["targets"] = targets(args, document)
    text = json.dumps(document, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(human_line(args, document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
