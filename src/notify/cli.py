"""The `notify` command: dev, serve, worker, scheduler, migrate, token, vapid, digest, cleanup."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import os
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import msgspec
from sqlalchemy.ext.asyncio import async_sessionmaker

from notify.core import logs
from notify.core.config import Settings, SettingsError, load_settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, object] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return load_settings(overrides=overrides)


def _serve(settings: Settings, host: str, port: int, *, with_workers: bool = False) -> None:
    from notify.app import Background, create_app
    from notify.server import build_server

    background: list[Background] = []
    if with_workers:
        from notify.worker import run_scheduler, run_worker

        background += [
            functools.partial(run_worker, settings),
            functools.partial(run_scheduler, settings),
        ]
    build_server(create_app(settings, background), settings, host, port).run()


def _until_signal(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `run(stop)`; SIGINT/SIGTERM set `stop` so it can finish what is in flight."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run(stop)

    asyncio.run(main())


def _migrated(settings: Settings, command: str) -> bool:
    from notify.core import db

    problem = db.check_migrated(settings)
    if problem:
        print(f"notify {command}: {problem}", file=sys.stderr)
    return problem is None


def cmd_worker(args: argparse.Namespace) -> int:
    from notify.worker import run_worker

    settings = _settings(args)
    if not _migrated(settings, "worker"):
        return 1
    _warn_push(settings)
    logs.configure(settings)
    _until_signal(functools.partial(run_worker, settings))
    return 0


def cmd_scheduler(args: argparse.Namespace) -> int:
    from notify.worker import run_scheduler

    settings = _settings(args)
    if not _migrated(settings, "scheduler"):
        return 1
    logs.configure(settings)
    _until_signal(functools.partial(run_scheduler, settings))
    return 0


def _at(value: str) -> dt.datetime:
    from notify.core.models import parse_instant

    try:
        return parse_instant(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date-time: {value!r}") from None


def cmd_digest_tick(args: argparse.Namespace) -> int:
    from notify.core import db
    from notify.core.models import utcnow
    from notify.digest.tick import tick
    from notify.worker import tune_gc

    settings = _settings(args)
    if not _migrated(settings, "digest tick"):
        return 1
    tune_gc()

    async def run() -> dict[str, int]:
        engine = db.create_engine(settings)
        try:
            sessions = async_sessionmaker(engine, expire_on_commit=False)
            result = await tick(sessions, args.at or utcnow(), every_row=args.at is not None)
            return msgspec.structs.asdict(result)
        finally:
            await engine.dispose()

    print(json.dumps(asyncio.run(run())))
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    from notify.core import db
    from notify.ops.cleanup import cleanup

    settings = _settings(args)
    if not _migrated(settings, "cleanup"):
        return 1
    days = settings.retention_days if args.older_than_days is None else args.older_than_days

    async def run() -> int:
        engine = db.create_engine(settings)
        try:
            return await cleanup(async_sessionmaker(engine, expire_on_commit=False), days)
        finally:
            await engine.dispose()

    print(json.dumps({"deleted": asyncio.run(run())}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    settings.jwt_verify_key  # noqa: B018  (fails early, naming the setting)
    if not _migrated(settings, "serve"):
        return 1
    _warn_push(settings)
    _serve(settings, args.host, args.port)
    return 0


def _warn_push(settings: Settings) -> None:
    if not settings.push_enabled:
        print(
            "warning: VAPID_PUBLIC_KEY/VAPID_PRIVATE_KEY not set: Web Push is disabled",
            file=sys.stderr,
        )


def cmd_migrate(args: argparse.Namespace) -> int:
    from notify.core import db

    settings = _settings(args)
    db.upgrade(settings)
    print(f"database at revision {db.head_revision(settings)}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from notify.core.auth import mint_token

    settings = _settings(args)
    print(
        mint_token(settings, args.sub, args.tenant, args.role or ["user"], args.channel, args.ttl)
    )
    return 0


def cmd_vapid(args: argparse.Namespace) -> int:
    from notify.core.vapid import generate_vapid_keys

    public, private = generate_vapid_keys()
    print(f"VAPID_PUBLIC_KEY={public}\nVAPID_PRIVATE_KEY={private}")
    return 0


def _exit_on_sigterm() -> None:
    """uvicorn re-raises SIGTERM after its graceful shutdown; make that unwind our `finally`."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def cmd_dev(args: argparse.Namespace) -> int:
    from notify.core import db
    from notify.core.auth import mint_token
    from notify.core.config import read_generated, write_generated
    from notify.core.embedded import EmbeddedNats
    from notify.core.vapid import generate_vapid_keys

    data_dir = Path(args.data_dir or os.environ.get("NOTIFY_DATA_DIR") or ".notify").resolve()
    generated = read_generated(data_dir)
    if "jwt_secret_key" not in generated:
        generated["jwt_secret_key"] = secrets.token_urlsafe(48)
    if "vapid_private_key" not in generated:
        generated["vapid_public_key"], generated["vapid_private_key"] = generate_vapid_keys()
    write_generated(data_dir, generated)
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{data_dir / 'notify.db'}")
    _exit_on_sigterm()
    nats = None
    if not os.environ.get("NATS_URL"):
        nats = EmbeddedNats(data_dir / "nats")
        os.environ["NATS_URL"] = nats.start()
    try:
        settings = load_settings(overrides={"data_dir": str(data_dir)})
        db.upgrade(settings)
        token = mint_token(settings, "dev-user", "dev", ["user", "admin"], ttl=30 * 86400)
        base = f"http://{args.host}:{args.port}"
        print(
            f"notify dev: {base}\n  docs:      {base}/docs\n  nats:      {settings.nats_url}"
            f"\n  data:      {data_dir}\n  dev token: {token}",
            flush=True,
        )
        _serve(settings, args.host, args.port, with_workers=True)
    finally:
        if nats is not None:
            nats.stop()
    return 0


def _days(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        days = -1
    if days < 0:
        raise argparse.ArgumentTypeError(f"not a number of days >= 0: {value!r}")
    return days


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notify", description=__doc__)
    parser.add_argument("--data-dir", help="where `notify dev` keeps its state (NOTIFY_DATA_DIR)")
    # --data-dir is accepted after the subcommand too.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", dest="data_dir", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)

    dev = sub.add_parser("dev", parents=[common], help="embedded default: SQLite + nats-server")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8003)
    dev.set_defaults(func=cmd_dev)

    serve = sub.add_parser("serve", parents=[common], help="API pod on DATABASE_URL, NATS_URL")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8003)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", parents=[common], help="delivery worker (Taskiq on NATS)")
    worker.set_defaults(func=cmd_worker)

    scheduler = sub.add_parser("scheduler", parents=[common], help="digest ticks and cleanup")
    scheduler.set_defaults(func=cmd_scheduler)

    digest = sub.add_parser("digest", help="the daily digest")
    digest_sub = digest.add_subparsers(dest="digest_command", required=True)
    tick = digest_sub.add_parser("tick", parents=[common], help="run one digest tick now")
    tick.add_argument("--at", type=_at, help="as if the clock read this ISO 8601 instant")
    tick.set_defaults(func=cmd_digest_tick)

    clean = sub.add_parser("cleanup", parents=[common], help="run retention cleanup once")
    clean.add_argument("--older-than-days", type=_days, help="default NOTIFY_RETENTION_DAYS (90)")
    clean.set_defaults(func=cmd_cleanup)

    migrate = sub.add_parser("migrate", parents=[common], help="apply migrations")
    migrate.set_defaults(func=cmd_migrate)

    tok = sub.add_parser("token", parents=[common], help="print a JWT signed with the key")
    tok.add_argument("--sub", required=True)
    tok.add_argument("--tenant", required=True)
    tok.add_argument("--role", action="append", choices=["user", "admin", "service"])
    tok.add_argument("--channel", action="append")
    tok.add_argument("--ttl", type=int, default=3600)
    tok.set_defaults(func=cmd_token)

    vapid = sub.add_parser("vapid", help="VAPID keys for Web Push")
    vapid_sub = vapid.add_subparsers(dest="vapid_command", required=True)
    generate = vapid_sub.add_parser("generate", help="print a new key pair as env lines")
    generate.set_defaults(func=cmd_vapid)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SettingsError as exc:
        print(f"notify: invalid setting: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
