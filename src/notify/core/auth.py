"""JWT identity: decode and check tokens (pyjwt), the auth middleware, role guards, minting."""

from __future__ import annotations

import functools
import time
from typing import Any

import jwt
import msgspec
from jwt.algorithms import get_default_algorithms
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from notify.core.config import Settings, SettingsError

ROLES: frozenset[str] = frozenset({"user", "admin", "service"})
ANY_TENANT = "*"
REQUIRED_CLAIMS = ("sub", "tenant_id", "exp")


class Principal(msgspec.Struct, frozen=True):
    """Who is calling: from a verified token."""

    sub: str
    tenant_id: str
    roles: frozenset[str]
    channels: frozenset[str]
    exp: int

    @property
    def is_privileged(self) -> bool:
        """Admins and services act on any user of their tenant."""
        return bool(self.roles & {"admin", "service"})

    @property
    def any_tenant(self) -> bool:
        return "service" in self.roles and self.tenant_id == ANY_TENANT


class TokenError(Exception):
    """A rejected token; the message says why (it becomes the 401's detail)."""


def _memoized_keys() -> jwt.PyJWT:
    """pyjwt re-checks and re-parses the key for every token (for HMAC it even tries two DER
    parsers): a sixth of a WebSocket connect (py-spy). Key preparation is pure, so it is
    done once per key; verification itself stays pyjwt's."""
    instance = jwt.PyJWT()
    algorithms = get_default_algorithms()
    for name in ("HS256", "RS256", "ES256"):
        alg = algorithms[name]
        alg.prepare_key = functools.lru_cache(maxsize=8)(alg.prepare_key)  # type: ignore[method-assign]
        instance._jws.unregister_algorithm(name)
        instance._jws.register_algorithm(name, alg)
    return instance


_JWT = _memoized_keys()


def decode_token(token: str, settings: Settings) -> Principal:
    """Verify signature, algorithm and claims; raise TokenError naming the problem."""
    try:
        claims: dict[str, Any] = _JWT.decode(
            token,
            settings.jwt_verify_key,
            algorithms=[settings.jwt_algorithm],
            options={"require": list(REQUIRED_CLAIMS), "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token expired") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token is missing the {exc.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise TokenError("bad token signature") from None
    except jwt.InvalidAlgorithmError:
        raise TokenError(_algorithm_problem(token, settings)) from None
    except jwt.DecodeError as exc:  # unreadable, or a claim of the wrong type (pyjwt says which)
        raise TokenError(f"malformed token: {exc}") from None
    except (jwt.InvalidKeyError, ValueError):
        raise TokenError("bad token signature") from None
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from None
    return _principal(claims)


def _algorithm_problem(token: str, settings: Settings) -> str:
    alg = str(jwt.get_unverified_header(token).get("alg") or "")
    if alg.lower() in ("", "none"):
        return "unsigned token (alg none) is not accepted"
    return f"token algorithm {alg} is not allowed; expected {settings.jwt_algorithm}"


def _principal(claims: dict[str, Any]) -> Principal:
    sub, tenant = claims.get("sub"), claims.get("tenant_id")
    for name, value in (("sub", sub), ("tenant_id", tenant)):
        if not isinstance(value, str) or not value.strip():
            raise TokenError(f"token claim {name!r} must be a non-empty string")
    roles = claims.get("roles", ["user"])
    if isinstance(roles, str):
        roles = [roles]
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise TokenError("token claim 'roles' must be a list of strings")
    channels = claims.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise TokenError("token claim 'channels' must be a list of strings")
    known = frozenset(roles) & ROLES or frozenset({"user"})
    if tenant == ANY_TENANT and "service" not in known:
        raise TokenError("tenant_id '*' is only valid on service tokens")
    return Principal(str(sub), str(tenant), known, frozenset(channels), int(claims["exp"]))


def mint_token(
    settings: Settings,
    sub: str,
    tenant_id: str,
    roles: list[str] | None = None,
    channels: list[str] | None = None,
    ttl: int = 3600,
) -> str:
    """A token signed with the configured key (JWT_SECRET_KEY: a secret, or a PEM private key)."""
    if not settings.jwt_secret_key:
        raise SettingsError("JWT_SECRET_KEY: not set, so tokens cannot be signed")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "tenant_id": tenant_id,
        "roles": roles or ["user"],
        "iat": now,
        "exp": now + ttl,
    }
    if channels:
        claims["channels"] = channels
    return jwt.encode(claims, settings.jwt_secret_key, algorithm=settings.jwt_algorithm)


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("authorization")
    if not header:
        raise NotAuthorizedException(detail="missing bearer token (Authorization: Bearer …)")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException(detail="Authorization header must be 'Bearer <token>'")
    return token.strip()


class JWTMiddleware(AbstractAuthenticationMiddleware):
    """Authenticates REST requests; WebSocket routes read `?token=` themselves."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        token = bearer_token(connection)
        settings: Settings = connection.app.state.settings
        try:
            principal = decode_token(token, settings)
        except TokenError as exc:
            raise NotAuthorizedException(detail=str(exc)) from None
        return AuthenticationResult(user=principal, auth=token)


def _require(roles: set[str], what: str) -> Any:
    # async: Litestar runs a sync guard in a worker thread, a hop on every request.
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal: Principal = connection.user
        if not principal.roles & roles:
            raise PermissionDeniedException(
                detail=f"{what} requires one of the roles: " + ", ".join(sorted(roles))
            )

    return guard


service_or_admin = _require({"service", "admin"}, "this endpoint")
service_only = _require({"service"}, "this endpoint")
