"""Typed settings, read once from the environment (and from what `notify dev` generated)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

import msgspec

JwtAlgorithm = Literal["HS256", "RS256", "ES256"]
SECRETS_FILE = "secrets.json"


class SettingsError(Exception):
    """An invalid setting; the message is one line naming it."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the service reads from its environment. Field docs name the variable."""

    data_dir: str = ".notify"  # NOTIFY_DATA_DIR
    database_url: str = ""  # DATABASE_URL; default sqlite:///<data_dir>/notify.db
    nats_url: str = "nats://127.0.0.1:4222"  # NATS_URL, comma-separated servers allowed
    jwt_secret_key: str | None = None  # JWT_SECRET_KEY (HS256 secret, or PEM private key to mint)
    jwt_algorithm: JwtAlgorithm = "HS256"  # JWT_ALGORITHM
    jwt_public_key: str | None = None  # JWT_PUBLIC_KEY (PEM, for RS256/ES256)
    vapid_public_key: str | None = None  # VAPID_PUBLIC_KEY
    vapid_private_key: str | None = None  # VAPID_PRIVATE_KEY
    vapid_email: str = "admin@localhost"  # VAPID_EMAIL
    sendgrid_api_key: str | None = None  # SENDGRID_API_KEY
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"  # NOTIFY_LOG_LEVEL
    db_pool_size: int = msgspec.field(default=10)  # NOTIFY_DB_POOL_SIZE
    stream_retention_days: float = 7.0  # NOTIFY_STREAM_RETENTION_DAYS (replay window)
    retention_days: int = 90  # NOTIFY_RETENTION_DAYS (stored notifications)
    pod_id: str = ""  # NOTIFY_POD_ID; default <hostname>-<pid>
    ws_max_per_user: int = 10  # NOTIFY_WS_MAX_SOCKETS_PER_USER (the oldest is closed, 4008)
    ws_send_buffer: int = 1 << 20  # NOTIFY_WS_SEND_BUFFER bytes unsent → closed 1008 (slow)
    ws_max_frame: int = 65536  # NOTIFY_WS_MAX_FRAME bytes from a client → closed 1009
    ws_ping_interval: float = 20.0  # NOTIFY_WS_PING_INTERVAL seconds (dead peers dropped)
    ws_rate: float = 20.0  # NOTIFY_WS_RATE client messages per second (burst twice that)
    ws_replay_limit: int = 10000  # NOTIFY_WS_REPLAY_LIMIT most messages replayed at once
    push_allow_http: bool = False  # NOTIFY_PUSH_ALLOW_HTTP: http endpoints (tests, local peers)
    push_max_subscriptions: int = 20  # NOTIFY_PUSH_MAX_SUBSCRIPTIONS active ones per user
    ws_heartbeat: float = 10.0  # NOTIFY_WS_HEARTBEAT s; silent pods' rows go after 3 beats
    delivery_concurrency: int = 100  # NOTIFY_DELIVERY_CONCURRENCY sends in flight per worker
    delivery_max_attempts: int = 8  # NOTIFY_DELIVERY_MAX_ATTEMPTS, then failed
    delivery_backoff: float = 2.0  # NOTIFY_DELIVERY_BACKOFF s, doubled per attempt, jittered
    delivery_backoff_max: float = 900.0  # NOTIFY_DELIVERY_BACKOFF_MAX s between attempts
    delivery_lease: float = 30.0  # NOTIFY_DELIVERY_LEASE s a dead worker's claim blocks others
    delivery_sweep: float = 1.0  # NOTIFY_DELIVERY_SWEEP s between looks for due retries
    push_ttl: int = 86400  # NOTIFY_PUSH_TTL s a push service keeps an undelivered message
    push_timeout: float = 10.0  # NOTIFY_PUSH_TIMEOUT s per request to a push service
    push_connections_per_host: int = 50  # NOTIFY_PUSH_CONNECTIONS_PER_HOST
    cleanup_at: str = "02:00"  # NOTIFY_CLEANUP_AT: daily retention cleanup, HH:MM UTC

    @property
    def sqlalchemy_url(self) -> str:
        """The URL with the async driver SQLAlchemy needs."""
        return async_database_url(self.database_url)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def nats_servers(self) -> list[str]:
        return [s.strip() for s in self.nats_url.split(",") if s.strip()]

    @property
    def jwt_verify_key(self) -> str:
        """The key tokens are checked with: the secret for HS256, the public PEM otherwise."""
        key = self.jwt_secret_key if self.jwt_algorithm == "HS256" else self.jwt_public_key
        if not key:
            name = "JWT_SECRET_KEY" if self.jwt_algorithm == "HS256" else "JWT_PUBLIC_KEY"
            raise SettingsError(
                f"{name}: not set (required for JWT_ALGORITHM={self.jwt_algorithm})"
            )
        return key

    @property
    def push_enabled(self) -> bool:
        return bool(self.vapid_public_key and self.vapid_private_key)

    @property
    def vapid_sub(self) -> str:
        email = self.vapid_email
        return email if email.startswith(("mailto:", "https:")) else f"mailto:{email}"


# Environment variable → field name. Order matters only for error messages.
ENV_FIELDS: dict[str, str] = {
    "NOTIFY_DATA_DIR": "data_dir",
    "DATABASE_URL": "database_url",
    "NATS_URL": "nats_url",
    "JWT_SECRET_KEY": "jwt_secret_key",
    "JWT_ALGORITHM": "jwt_algorithm",
    "JWT_PUBLIC_KEY": "jwt_public_key",
    "VAPID_PUBLIC_KEY": "vapid_public_key",
    "VAPID_PRIVATE_KEY": "vapid_private_key",
    "VAPID_EMAIL": "vapid_email",
    "SENDGRID_API_KEY": "sendgrid_api_key",
    "NOTIFY_LOG_LEVEL": "log_level",
    "NOTIFY_DB_POOL_SIZE": "db_pool_size",
    "NOTIFY_STREAM_RETENTION_DAYS": "stream_retention_days",
    "NOTIFY_RETENTION_DAYS": "retention_days",
    "NOTIFY_POD_ID": "pod_id",
    "NOTIFY_WS_MAX_SOCKETS_PER_USER": "ws_max_per_user",
    "NOTIFY_WS_SEND_BUFFER": "ws_send_buffer",
    "NOTIFY_WS_MAX_FRAME": "ws_max_frame",
    "NOTIFY_WS_PING_INTERVAL": "ws_ping_interval",
    "NOTIFY_WS_RATE": "ws_rate",
    "NOTIFY_WS_REPLAY_LIMIT": "ws_replay_limit",
    "NOTIFY_WS_HEARTBEAT": "ws_heartbeat",
    "NOTIFY_PUSH_ALLOW_HTTP": "push_allow_http",
    "NOTIFY_PUSH_MAX_SUBSCRIPTIONS": "push_max_subscriptions",
    "NOTIFY_DELIVERY_CONCURRENCY": "delivery_concurrency",
    "NOTIFY_DELIVERY_MAX_ATTEMPTS": "delivery_max_attempts",
    "NOTIFY_DELIVERY_BACKOFF": "delivery_backoff",
    "NOTIFY_DELIVERY_BACKOFF_MAX": "delivery_backoff_max",
    "NOTIFY_DELIVERY_LEASE": "delivery_lease",
    "NOTIFY_DELIVERY_SWEEP": "delivery_sweep",
    "NOTIFY_PUSH_TTL": "push_ttl",
    "NOTIFY_PUSH_TIMEOUT": "push_timeout",
    "NOTIFY_PUSH_CONNECTIONS_PER_HOST": "push_connections_per_host",
    "NOTIFY_CLEANUP_AT": "cleanup_at",
}
FIELD_ENVS = {field: env for env, field in ENV_FIELDS.items()}
# Values `notify dev` generates into <data_dir>/secrets.json; the environment wins over them.
GENERATED = ("jwt_secret_key", "vapid_public_key", "vapid_private_key")
_PATH_RE = re.compile(r"`\$\.(\w+)`")


def async_database_url(url: str) -> str:
    """Map the user-facing URL forms onto SQLAlchemy's async drivers."""
    for prefix, driver in (
        ("postgresql+asyncpg://", "postgresql+asyncpg://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite+aiosqlite://", "sqlite+aiosqlite://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(prefix):
            return driver + url[len(prefix) :]
    raise SettingsError(
        f"DATABASE_URL: unsupported URL {url.split('://')[0]!r}; "
        "use postgresql://…, postgresql+asyncpg://… or sqlite:///path"
    )


def load_settings(
    environ: dict[str, str] | None = None, overrides: dict[str, object] | None = None
) -> Settings:
    """Read settings from the environment; raise SettingsError naming the first bad one."""
    env = dict(os.environ if environ is None else environ)
    raw: dict[str, object] = {
        field: env[name] for name, field in ENV_FIELDS.items() if env.get(name, "") != ""
    }
    raw.update(overrides or {})
    data_dir = Path(str(raw.get("data_dir", ".notify")))
    for field, value in read_generated(data_dir).items():
        raw.setdefault(field, value)
    raw.setdefault("database_url", f"sqlite:///{data_dir / 'notify.db'}")
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        match = _PATH_RE.search(str(exc))
        name = FIELD_ENVS.get(match.group(1), match.group(1)) if match else "settings"
        reason = str(exc).split(" - at ")[0]
        raise SettingsError(f"{name}: {reason}") from None
    _check(settings)
    if not settings.pod_id:
        settings = msgspec.structs.replace(settings, pod_id=f"{os.uname().nodename}-{os.getpid()}")
    return settings


def _check(s: Settings) -> None:
    async_database_url(s.database_url)
    if not s.nats_servers:
        raise SettingsError("NATS_URL: empty")
    for server in s.nats_servers:
        if not re.match(r"^(nats|tls|ws|wss)://[^\s/]+", server):
            raise SettingsError(f"NATS_URL: {server!r} is not a nats:// URL")
    if s.db_pool_size < 1:
        raise SettingsError("NOTIFY_DB_POOL_SIZE: must be at least 1")
    if s.stream_retention_days <= 0:
        raise SettingsError("NOTIFY_STREAM_RETENTION_DAYS: must be positive")
    for name in (
        "ws_max_per_user",
        "ws_send_buffer",
        "ws_max_frame",
        "ws_replay_limit",
        "push_max_subscriptions",
        "delivery_concurrency",
        "delivery_max_attempts",
        "push_connections_per_host",
    ):
        if getattr(s, name) < 1:
            raise SettingsError(f"{FIELD_ENVS[name]}: must be at least 1")
    if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", s.cleanup_at):
        raise SettingsError("NOTIFY_CLEANUP_AT: must be HH:MM (UTC)")
    if s.push_ttl < 0:
        raise SettingsError("NOTIFY_PUSH_TTL: must not be negative")
    for name in (
        "ws_rate",
        "ws_ping_interval",
        "ws_heartbeat",
        "delivery_backoff",
        "delivery_backoff_max",
        "delivery_lease",
        "delivery_sweep",
        "push_timeout",
    ):
        if getattr(s, name) <= 0:
            raise SettingsError(f"{FIELD_ENVS[name]}: must be positive")
    if s.retention_days < 1:
        raise SettingsError("NOTIFY_RETENTION_DAYS: must be at least 1")
    if s.jwt_algorithm != "HS256" and s.jwt_public_key:
        _check_pem(s.jwt_public_key)
    if bool(s.vapid_public_key) != bool(s.vapid_private_key):
        missing = "VAPID_PRIVATE_KEY" if s.vapid_public_key else "VAPID_PUBLIC_KEY"
        raise SettingsError(f"{missing}: must be set together with the other VAPID key")
    if s.vapid_public_key and s.vapid_private_key:
        from notify.core.vapid import VapidKeyError, check_vapid_keys

        try:
            check_vapid_keys(s.vapid_public_key, s.vapid_private_key)
        except VapidKeyError as exc:
            raise SettingsError(str(exc)) from None


def _check_pem(pem: str) -> None:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        load_pem_public_key(pem.encode())
    except ValueError:
        raise SettingsError("JWT_PUBLIC_KEY: not a PEM public key") from None


def read_generated(data_dir: Path) -> dict[str, str]:
    """What `notify dev` generated into the data directory, if anything."""
    path = data_dir / SECRETS_FILE
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {k: str(v) for k, v in data.items() if k in GENERATED and v}


def write_generated(data_dir: Path, values: dict[str, str]) -> None:
    """Keep generated secrets (owner-only) so later runs and commands reuse them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRETS_FILE
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(json.dumps(values, indent=2) + "\n")
