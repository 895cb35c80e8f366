"""The `notify` command, run as a real subprocess: dev, serve, migrate, token, vapid, settings.

Every process started here runs in its own session and is killed (with its whole process
group) in a `finally`, so a failing test never leaves a notify or nats-server behind.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from notify.core.config import (
    ENV_FIELDS,
    SECRETS_FILE,
    SettingsError,
    load_settings,
    write_generated,
)
from notify.core.embedded import free_port
from notify.core.vapid import generate_vapid_keys
from tests.harness import backends, database

NOTIFY = [sys.executable, "-m", "notify.cli"]
SECRET = "cli-test-secret-that-is-long-enough-for-hs256-0123456789"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0


# --------------------------------------------------------------------------- helpers


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without any notify setting, plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ENV_FIELDS and not k.startswith(("JWT_", "VAPID_", "NOTIFY_"))
    }
    env.pop("PYTHONSTARTUP", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run a short notify command to completion."""
    return subprocess.run(
        [*NOTIFY, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def children(pid: int) -> list[int]:
    """Direct children of every thread of `pid` (Linux /proc)."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += children(child)
    return out


def comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (a zombie has exited already)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = re.search(r"^State:\s*(\S)", status, re.M)
    return not (state and state.group(1) in ("Z", "X"))


class Proc:
    """A long-running notify command whose stdout and stderr are collected by threads."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [*NOTIFY, *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(s, buf), daemon=True)
            for s, buf in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: object, buf: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            buf.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return "--- stdout:\n" + "\n".join(self.out) + "\n--- stderr:\n" + "\n".join(self.err[-60:])

    def wait_for_line(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.out):
                if m := regex.search(line):
                    return m
            if self.proc.poll() is not None:
                time.sleep(0.2)  # let the pumps drain
                for line in list(self.out):
                    if m := regex.search(line):
                        return m
                pytest.fail(
                    f"notify {self.args[0]} exited ({self.proc.returncode}) before "
                    f"printing {pattern!r}\n{self.output()}"
                )
            time.sleep(0.05)
        pytest.fail(f"no line matching {pattern!r} within {timeout}s\n{self.output()}")

    def wait_healthy(self, base: str, timeout: float = START_TIMEOUT) -> httpx.Response:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                time.sleep(0.2)
                pytest.fail(
                    f"notify {self.args[0]} exited ({self.proc.returncode}) before "
                    f"/health answered\n{self.output()}"
                )
            try:
                r = httpx.get(f"{base}/health", timeout=2)
                if r.status_code == 200:
                    return r
                last = f"{r.status_code} {r.text}"
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        pytest.fail(f"/health not 200 within {timeout}s (last: {last})\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the notify process only (not its group) and wait for it to exit."""
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"notify {self.args[0]} did not exit within {timeout}s of "
                f"{signal.Signals(sig).name}\n{self.output()}"
            )

    def kill(self) -> None:
        """Last-resort cleanup: the whole process group, then reap."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        for t in self._threads:
            t.join(timeout=2)


@contextlib.contextmanager
def started(args: list[str], env: dict[str, str], cwd: Path) -> Iterator[Proc]:
    proc = Proc(args, env, cwd)
    try:
        yield proc
    finally:
        proc.kill()


def assert_all_gone(pids: list[int], timeout: float = 5.0) -> None:
    """Every pid has exited (gone from /proc, or a zombie); a short grace for the kernel."""
    deadline = time.monotonic() + timeout
    alive = [p for p in pids if is_running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if is_running(p)]
    assert not alive, f"left running after notify stopped: {[(p, comm(p)) for p in alive]}"


# --------------------------------------------------------------------------- 1. notify dev


def test_dev_end_to_end_and_reuses_secrets(tmp_path: Path) -> None:
    data_dir = tmp_path / "state"
    env = clean_env()  # no NATS_URL: dev starts its own nats-server
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    dev_args = ["dev", "--port", str(port), "--data-dir", str(data_dir)]

    # ---- first run
    with started(dev_args, env, tmp_path) as dev:
        dev.wait_healthy(base)
        token = dev.wait_for_line(r"dev token:\s*(\S+)").group(1)
        assert dev.wait_for_line(rf"https?://127\.0\.0\.1:{port}\b")
        nats_line = dev.wait_for_line(r"nats:\s*(nats://\S+)").group(1)
        assert nats_line != "nats://127.0.0.1:4222", "dev must start its own nats-server"

        health = httpx.get(f"{base}/health", timeout=5).json()
        assert health == {"status": "ok", "checks": {"database": "ok", "nats": "ok"}}

        # the dev token: dev-user of tenant dev, user + admin
        secrets = json.loads((data_dir / SECRETS_FILE).read_text())
        claims = jwt.decode(token, secrets["jwt_secret_key"], algorithms=["HS256"])
        assert claims["sub"] == "dev-user"
        assert claims["tenant_id"] == "dev"
        assert sorted(claims["roles"]) == ["admin", "user"]
        assert claims["exp"] > time.time() + 3600

        auth = {"Authorization": f"Bearer {token}"}
        r = httpx.post(
            f"{base}/api/v1/notifications",
            headers=auth,
            timeout=10,
            json={"title": "hello from dev", "message": "it works"},
        )
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["user_id"] == "dev-user" and created["tenant_id"] == "dev"
        r = httpx.get(f"{base}/api/v1/notifications/{created['id']}", headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["title"] == "hello from dev"
        r = httpx.get(f"{base}/api/v1/notifications", headers=auth, timeout=10)
        assert r.status_code == 200
        assert [n["id"] for n in r.json()["items"]] == [created["id"]]

        # what dev keeps in its data dir
        assert (data_dir / "notify.db").is_file()
        assert (data_dir / SECRETS_FILE).is_file()
        assert (data_dir / "nats").is_dir()
        mode = stat.S_IMODE((data_dir / SECRETS_FILE).stat().st_mode)
        assert mode & 0o077 == 0, f"secrets.json must be owner-only, is {oct(mode)}"
        assert set(secrets) >= {"jwt_secret_key", "vapid_public_key", "vapid_private_key"}
        raw = b64url_decode(secrets["vapid_public_key"])
        assert len(raw) == 65 and raw[0] == 0x04

        # another command finds the generated secret through --data-dir; the server accepts it
        tok = run(
            ["--data-dir", str(data_dir), "token", "--sub", "other", "--tenant", "dev"],
            env,
            tmp_path,
        )
        assert tok.returncode == 0, tok.stderr
        other = tok.stdout.strip()
        assert jwt.decode(other, secrets["jwt_secret_key"], algorithms=["HS256"])["sub"] == "other"
        r = httpx.get(
            f"{base}/api/v1/notifications", headers={"Authorization": f"Bearer {other}"}, timeout=10
        )
        assert r.status_code == 200 and r.json()["items"] == []

        # stop: every child (the nats-server) goes with it
        kids = descendants(dev.pid)
        assert "nats-server" in [comm(k) for k in kids], (
            f"no nats-server child: {[(k, comm(k)) for k in kids]}"
        )
        dev.stop(signal.SIGTERM)
        assert_all_gone(kids)

    # ---- second run on the same data dir: same secrets, first token still valid
    port2 = free_port()
    base2 = f"http://127.0.0.1:{port2}"
    with started(["dev", "--port", str(port2), "--data-dir", str(data_dir)], env, tmp_path) as dev2:
        dev2.wait_healthy(base2)
        dev2.wait_for_line(r"dev token:\s*(\S+)")
        assert json.loads((data_dir / SECRETS_FILE).read_text()) == secrets
        r = httpx.get(f"{base2}/api/v1/notifications", headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        assert [n["id"] for n in r.json()["items"]] == [created["id"]]

        kids = descendants(dev2.pid)
        assert "nats-server" in [comm(k) for k in kids]
        dev2.stop(signal.SIGINT)  # Ctrl-C
        assert_all_gone(kids)


# --------------------------------------------------------------------------- 2. serve / migrate


@pytest.mark.parametrize("backend", backends())
def test_serve_refuses_unmigrated_then_migrate_and_serve(
    backend: str, tmp_path: Path, nats_url: str
) -> None:
    with database(backend, tmp_path) as url:
        env = clean_env(DATABASE_URL=url, NATS_URL=nats_url, JWT_SECRET_KEY=SECRET)
        port = free_port()

        t0 = time.monotonic()
        refused = run(
            ["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path, timeout=15
        )
        assert refused.returncode != 0
        assert time.monotonic() - t0 < 10
        lines = stderr_lines(refused.stderr)
        assert len(lines) == 1, refused.stderr
        assert "migrat" in lines[0].lower()

        for _ in range(2):  # idempotent
            migrated = run(["migrate"], env, tmp_path)
            assert migrated.returncode == 0, migrated.stderr
            assert "revision" in migrated.stdout

        with started(["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path) as serve:
            r = serve.wait_healthy(f"http://127.0.0.1:{port}")
            assert r.json() == {"status": "ok", "checks": {"database": "ok", "nats": "ok"}}
            # no VAPID keys: Web Push disabled, said in one warning line
            vapid = [line for line in serve.err if "vapid" in line.lower()]
            assert len(vapid) == 1, serve.output()
            serve.stop(signal.SIGTERM)


def test_serve_without_jwt_secret_refuses_with_one_line(tmp_path: Path) -> None:
    env = clean_env(DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", NATS_URL="nats://127.0.0.1:1")
    res = run(["serve", "--port", str(free_port())], env, tmp_path, timeout=15)
    assert res.returncode != 0
    lines = stderr_lines(res.stderr)
    assert len(lines) == 1 and "JWT_SECRET_KEY" in lines[0], res.stderr


# --------------------------------------------------------------------------- 3. token


def test_token_with_env_secret(tmp_path: Path) -> None:
    env = clean_env(JWT_SECRET_KEY=SECRET)
    res = run(
        [
            "token",
            "--sub",
            "U",
            "--tenant",
            "T",
            "--role",
            "admin",
            "--channel",
            "c1",
            "--ttl",
            "60",
        ],
        env,
        tmp_path,
    )
    now = time.time()
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip()
    assert len(res.stdout.strip().splitlines()) == 1
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "U"
    assert claims["tenant_id"] == "T"
    assert claims["roles"] == ["admin"]
    assert claims["channels"] == ["c1"]
    assert abs(claims["exp"] - (now + 60)) <= 5


def test_token_defaults_and_repeated_options(tmp_path: Path) -> None:
    env = clean_env(JWT_SECRET_KEY=SECRET)
    res = run(["token", "--sub", "U", "--tenant", "T"], env, tmp_path)
    now = time.time()
    assert res.returncode == 0, res.stderr
    claims = jwt.decode(res.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["roles"] == ["user"]
    assert not claims.get("channels")
    assert abs(claims["exp"] - (now + 3600)) <= 5

    res = run(
        [
            "token",
            "--sub",
            "U",
            "--tenant",
            "T",
            "--role",
            "user",
            "--role",
            "service",
            "--channel",
            "a",
            "--channel",
            "b",
        ],
        env,
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    claims = jwt.decode(res.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["roles"] == ["user", "service"]
    assert claims["channels"] == ["a", "b"]


def test_token_signs_with_generated_secret_of_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "dev-state"
    generated = "generated-secret-of-notify-dev-0123456789abcdef0123456789"
    write_generated(data_dir, {"jwt_secret_key": generated})

    # --data-dir (global option) and NOTIFY_DATA_DIR both find it
    for args, env in (
        (["--data-dir", str(data_dir), "token", "--sub", "U", "--tenant", "T"], clean_env()),
        (["token", "--sub", "U", "--tenant", "T"], clean_env(NOTIFY_DATA_DIR=str(data_dir))),
    ):
        res = run(args, env, tmp_path)
        assert res.returncode == 0, res.stderr
        claims = jwt.decode(res.stdout.strip(), generated, algorithms=["HS256"])
        assert claims["sub"] == "U" and claims["tenant_id"] == "T"

    # a value in the environment wins over the generated one
    res = run(
        ["--data-dir", str(data_dir), "token", "--sub", "U", "--tenant", "T"],
        clean_env(JWT_SECRET_KEY=SECRET),
        tmp_path,
    )
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip()
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] == "U"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, generated, algorithms=["HS256"])


def test_token_without_any_secret_fails_with_one_line(tmp_path: Path) -> None:
    """No JWT_SECRET_KEY and nothing generated: one line naming the setting, no traceback."""
    res = run(
        ["--data-dir", str(tmp_path / "empty"), "token", "--sub", "U", "--tenant", "T"],
        clean_env(),
        tmp_path,
    )
    assert res.returncode != 0
    assert res.stdout.strip() == ""
    lines = stderr_lines(res.stderr)
    assert len(lines) == 1, res.stderr
    assert "JWT_SECRET_KEY" in lines[0]


# --------------------------------------------------------------------------- 4. vapid


def test_vapid_generate_prints_a_valid_p256_pair(tmp_path: Path) -> None:
    res = run(["vapid", "generate"], clean_env(), tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 2, res.stdout
    assert lines[0].startswith("VAPID_PUBLIC_KEY=")
    assert lines[1].startswith("VAPID_PRIVATE_KEY=")
    public = lines[0].split("=", 1)[1]
    private = lines[1].split("=", 1)[1]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", public) and re.fullmatch(r"[A-Za-z0-9_-]+", private)

    raw = b64url_decode(public)
    assert len(raw) == 65 and raw[0] == 0x04
    point = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)

    scalar = b64url_decode(private)
    assert len(scalar) == 32
    derived = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1()).public_key()
    uncompressed = (serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert derived.public_bytes(*uncompressed) == raw == point.public_bytes(*uncompressed)

    # the printed lines are usable as settings as they are
    settings = load_settings(
        {"VAPID_PUBLIC_KEY": public, "VAPID_PRIVATE_KEY": private, "NOTIFY_DATA_DIR": str(tmp_path)}
    )
    assert settings.push_enabled

    again = run(["vapid", "generate"], clean_env(), tmp_path)
    assert again.returncode == 0 and again.stdout != res.stdout


# --------------------------------------------------------------------------- 5. settings

BAD_SETTINGS = [
    ("NOTIFY_DB_POOL_SIZE", "abc"),
    ("NATS_URL", "http://x"),
    ("DATABASE_URL", "mysql://x"),
    ("JWT_ALGORITHM", "HS999"),
]


@pytest.mark.parametrize(
    "command", [["migrate"], ["token", "--sub", "U", "--tenant", "T"]], ids=["migrate", "token"]
)
@pytest.mark.parametrize(("name", "value"), BAD_SETTINGS, ids=[n for n, _ in BAD_SETTINGS])
def test_invalid_setting_stops_the_command_with_one_line(
    command: list[str], name: str, value: str, tmp_path: Path
) -> None:
    env = clean_env(
        JWT_SECRET_KEY=SECRET,
        DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
        NATS_URL="nats://127.0.0.1:4222",
    )
    env[name] = value
    res = run(command, env, tmp_path)
    assert res.returncode != 0
    assert res.stdout.strip() == ""
    lines = stderr_lines(res.stderr)
    assert len(lines) == 1, res.stderr
    assert name in lines[0]
    assert not (tmp_path / "x.db").exists(), "nothing may be done with an invalid setting"


def _processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line mentions `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            if text in cmdline and is_running(int(entry.name)):
                found.append(int(entry.name))
    return found


def test_dev_with_invalid_setting_stops_with_one_line_and_no_nats_left(tmp_path: Path) -> None:
    data_dir = tmp_path / "bad-dev"
    env = clean_env(NOTIFY_DB_POOL_SIZE="abc")  # no NATS_URL: dev starts nats-server first
    with started(
        ["dev", "--port", str(free_port()), "--data-dir", str(data_dir)], env, tmp_path
    ) as dev:
        try:
            rc = dev.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"notify dev kept running with an invalid setting\n{dev.output()}")
        for t in dev._threads:
            t.join(timeout=5)
        assert rc != 0
        lines = stderr_lines("\n".join(dev.err))
        assert len(lines) == 1, dev.output()
        assert "NOTIFY_DB_POOL_SIZE" in lines[0]
        deadline = time.monotonic() + 5
        while _processes_mentioning(str(data_dir / "nats")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _processes_mentioning(str(data_dir / "nats")) == []


def _valid_vapid() -> tuple[str, str]:
    return generate_vapid_keys()


def _env(tmp: Path, **values: str) -> dict[str, str]:
    return {"NOTIFY_DATA_DIR": str(tmp), **values}


UNIT_BAD = [
    *BAD_SETTINGS,
    ("NOTIFY_DB_POOL_SIZE", "0"),
    ("NATS_URL", "nats://a:4222,http://b:4222"),
    ("NOTIFY_STREAM_RETENTION_DAYS", "0"),
    ("NOTIFY_RETENTION_DAYS", "0"),
    ("NOTIFY_RETENTION_DAYS", "ninety"),
    ("NOTIFY_LOG_LEVEL", "LOUD"),
]


@pytest.mark.parametrize(("name", "value"), UNIT_BAD, ids=[f"{n}={v}" for n, v in UNIT_BAD])
def test_load_settings_rejects_invalid_value_naming_it(
    name: str, value: str, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(_env(tmp_path, **{name: value}))
    message = str(info.value)
    assert message.startswith(name), message
    assert "\n" not in message


def test_load_settings_rejects_bad_jwt_public_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(_env(tmp_path, JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY="not a pem"))
    assert str(info.value).startswith("JWT_PUBLIC_KEY")


def test_load_settings_requires_both_vapid_keys(tmp_path: Path) -> None:
    public, private = _valid_vapid()
    with pytest.raises(SettingsError) as info:
        load_settings(_env(tmp_path, VAPID_PUBLIC_KEY=public))
    assert str(info.value).startswith("VAPID_PRIVATE_KEY")
    with pytest.raises(SettingsError) as info:
        load_settings(_env(tmp_path, VAPID_PRIVATE_KEY=private))
    assert str(info.value).startswith("VAPID_PUBLIC_KEY")


@pytest.mark.parametrize("which", ["VAPID_PUBLIC_KEY", "VAPID_PRIVATE_KEY"])
def test_load_settings_rejects_malformed_vapid_key(which: str, tmp_path: Path) -> None:
    """A VAPID key that is not a P-256 key in the documented form is an invalid value."""
    public, private = _valid_vapid()
    values = {"VAPID_PUBLIC_KEY": public, "VAPID_PRIVATE_KEY": private, which: "not-a-key"}
    with pytest.raises(SettingsError) as info:
        load_settings(_env(tmp_path, **values))
    assert str(info.value).startswith(which), str(info.value)


def test_load_settings_happy_path(tmp_path: Path) -> None:
    s = load_settings(
        _env(
            tmp_path,
            DATABASE_URL="postgresql://u:p@db.example:5432/notify",
            NATS_URL="nats://a:4222, nats://b:4222 ,tls://c:4443",
            JWT_SECRET_KEY=SECRET,
            VAPID_EMAIL="ops@example.com",
            NOTIFY_DB_POOL_SIZE="5",
            NOTIFY_LOG_LEVEL="WARNING",
        )
    )
    assert s.sqlalchemy_url == "postgresql+asyncpg://u:p@db.example:5432/notify"
    assert not s.is_sqlite
    assert s.nats_servers == ["nats://a:4222", "nats://b:4222", "tls://c:4443"]
    assert s.vapid_sub == "mailto:ops@example.com"
    assert s.db_pool_size == 5
    assert s.log_level == "WARNING"
    assert s.jwt_algorithm == "HS256"
    assert s.jwt_verify_key == SECRET
    assert not s.push_enabled
    assert s.pod_id


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://h/db", "postgresql+asyncpg://h/db"),
        ("postgres://h/db", "postgresql+asyncpg://h/db"),
        ("postgresql+asyncpg://h/db", "postgresql+asyncpg://h/db"),
        ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
    ],
)
def test_load_settings_database_url_forms(url: str, expected: str, tmp_path: Path) -> None:
    assert load_settings(_env(tmp_path, DATABASE_URL=url)).sqlalchemy_url == expected


def test_load_settings_defaults_to_sqlite_in_data_dir(tmp_path: Path) -> None:
    s = load_settings(_env(tmp_path))
    assert s.is_sqlite
    assert s.database_url == f"sqlite:///{tmp_path / 'notify.db'}"
    assert s.nats_servers == ["nats://127.0.0.1:4222"]


@pytest.mark.parametrize(
    ("email", "sub"),
    [
        ("ops@example.com", "mailto:ops@example.com"),
        ("mailto:ops@example.com", "mailto:ops@example.com"),
        ("https://example.com/contact", "https://example.com/contact"),
    ],
)
def test_vapid_sub_claim(email: str, sub: str, tmp_path: Path) -> None:
    assert load_settings(_env(tmp_path, VAPID_EMAIL=email)).vapid_sub == sub


def test_environment_wins_over_generated(tmp_path: Path) -> None:
    public, private = _valid_vapid()
    write_generated(
        tmp_path,
        {
            "jwt_secret_key": "generated-secret",
            "vapid_public_key": public,
            "vapid_private_key": private,
        },
    )
    s = load_settings(_env(tmp_path))
    assert s.jwt_secret_key == "generated-secret"
    assert (s.vapid_public_key, s.vapid_private_key) == (public, private)
    assert s.push_enabled

    public2, private2 = _valid_vapid()
    s = load_settings(
        _env(tmp_path, JWT_SECRET_KEY=SECRET, VAPID_PUBLIC_KEY=public2, VAPID_PRIVATE_KEY=private2)
    )
    assert s.jwt_secret_key == SECRET
    assert (s.vapid_public_key, s.vapid_private_key) == (public2, private2)


def test_migrate_on_a_fresh_machine_creates_the_default_data_dir(tmp_path: Path) -> None:
    """No DATABASE_URL, no .notify/ yet: the default SQLite file and its folder appear."""
    first = run(["migrate"], clean_env(), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / ".notify" / "notify.db").is_file()
    again = run(["migrate"], clean_env(), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
