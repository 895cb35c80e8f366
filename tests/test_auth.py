"""Identity (CONTRACT §3): bearer JWTs, the reasons a token is refused, algorithms, roles.

Every refusal is a 401 whose `detail` says why; everything goes through real HTTP.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.harness import JWT_SECRET, Server, database, make_settings

INBOX = "/api/v1/notifications"
BROADCAST = "/internal/broadcast"
BODY = {"title": "hello", "message": "world"}


# --- helpers -------------------------------------------------------------------------------


def claims(tenant: str, **overrides: Any) -> dict[str, Any]:
    """A valid claim set; `overrides` replace claims, and a value of None removes one."""
    base: dict[str, Any] = {
        "sub": "alice",
        "tenant_id": tenant,
        "roles": ["user"],
        "exp": int(time.time()) + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWT built by hand: no key gives an unsigned token (empty signature, trailing dot)."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{b64url(signature)}"


async def call(
    url: str,
    token: str | None = None,
    *,
    authorization: str | None = None,
    method: str = "GET",
    path: str = INBOX,
    **kw: Any,
) -> httpx.Response:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if authorization is not None:
        headers["Authorization"] = authorization
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        return await c.request(method, path, headers=headers, **kw)


def assert_401(r: httpx.Response, *reasons: str) -> None:
    """401 with the JSON error shape, and a detail that mentions one of `reasons`."""
    assert r.status_code == 401, r.text
    body = r.json()
    assert body["status_code"] == 401
    detail = body["detail"].lower()
    assert any(reason.lower() in detail for reason in reasons), (reasons, detail)


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@contextlib.contextmanager
def asymmetric_server(
    tmp_path_factory: pytest.TempPathFactory,
    nats_url: str,
    alg: str,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"server-{alg.lower()}")
    with database("sqlite", tmp) as db_url:
        srv = Server(
            make_settings(
                db_url,
                nats_url,
                tmp,
                JWT_ALGORITHM=alg,
                JWT_PUBLIC_KEY=public_pem(key),
                JWT_SECRET_KEY=private_pem(key),
            )
        )
        srv.start()
        try:
            yield srv
        finally:
            srv.stop()


@pytest.fixture(scope="module")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="module")
def rs256_server(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, rsa_private: rsa.RSAPrivateKey
) -> Iterator[Server]:
    with asymmetric_server(tmp_path_factory, nats_url, "RS256", rsa_private) as srv:
        yield srv


@pytest.fixture(scope="module")
def ec_private() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def es256_server(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, ec_private: ec.EllipticCurvePrivateKey
) -> Iterator[Server]:
    with asymmetric_server(tmp_path_factory, nats_url, "ES256", ec_private) as srv:
        yield srv


# --- the header ----------------------------------------------------------------------------


async def test_no_authorization_header(server: Server) -> None:
    assert_401(await call(server.url), "missing")


async def test_non_bearer_scheme(server: Server, tenant: str) -> None:
    token = server.token("alice", tenant)
    assert_401(await call(server.url, authorization=f"Basic {token}"), "bearer")


async def test_malformed_token(server: Server) -> None:
    assert_401(await call(server.url, "not-a.jwt"), "malformed")


# --- the token -----------------------------------------------------------------------------


async def test_valid_token_is_accepted(server: Server, tenant: str) -> None:
    r = await call(server.url, server.token("alice", tenant))
    assert r.status_code == 200, r.text


async def test_expired_token(server: Server, tenant: str) -> None:
    assert_401(await call(server.url, server.token("alice", tenant, ttl=-60)), "expired")


async def test_wrong_secret(server: Server, tenant: str) -> None:
    token = jwt.encode(
        claims(tenant), "another-secret-that-is-also-long-enough-0123456789", algorithm="HS256"
    )
    assert_401(await call(server.url, token), "signature")


async def test_unsigned_alg_none_token(server: Server, tenant: str) -> None:
    token = hand_made({"alg": "none", "typ": "JWT"}, claims(tenant), key=None)
    assert token.endswith(".")
    assert_401(await call(server.url, token), "alg none", "unsigned")


async def test_other_hmac_algorithm(server: Server, tenant: str) -> None:
    token = jwt.encode(claims(tenant), JWT_SECRET, algorithm="HS512")
    assert_401(await call(server.url, token), "algorithm")


async def test_rs256_token_against_hs256_server(server: Server, tenant: str) -> None:
    token = jwt.encode(claims(tenant), private_pem(rsa_key()), algorithm="RS256")
    assert_401(await call(server.url, token), "algorithm")


@pytest.mark.parametrize("claim", ["sub", "tenant_id", "exp"])
async def test_missing_required_claim(server: Server, tenant: str, claim: str) -> None:
    token = jwt.encode(claims(tenant, **{claim: None}), JWT_SECRET, algorithm="HS256")
    assert_401(await call(server.url, token), claim)


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("sub", 12345),
        ("sub", ""),
        ("tenant_id", 7),
        ("tenant_id", "  "),
        ("exp", "tomorrow"),
        ("roles", [1]),
        ("channels", "news"),
    ],
    ids=[
        "sub-int",
        "sub-empty",
        "tenant-int",
        "tenant-blank",
        "exp-str",
        "roles-int",
        "channels-str",
    ],
)
async def test_bad_claim_value(server: Server, tenant: str, claim: str, value: Any) -> None:
    token = jwt.encode(claims(tenant, **{claim: value}), JWT_SECRET, algorithm="HS256")
    assert_401(await call(server.url, token), claim)


async def test_any_tenant_only_for_service_tokens(server: Server) -> None:
    token = server.token("alice", "*", ["user", "admin"])
    assert_401(await call(server.url, token), "tenant_id")


# --- asymmetric algorithms -----------------------------------------------------------------


async def test_rs256_server_accepts_matching_key(
    rs256_server: Server, rsa_private: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(claims("t-rs256"), private_pem(rsa_private), algorithm="RS256")
    r = await call(rs256_server.url, token)
    assert r.status_code == 200, r.text
    assert r.json()["items"] == []


async def test_rs256_server_rejects_other_rsa_key(rs256_server: Server) -> None:
    token = jwt.encode(claims("t-rs256"), private_pem(rsa_key()), algorithm="RS256")
    assert_401(await call(rs256_server.url, token), "signature")


async def test_rs256_server_rejects_algorithm_confusion(
    rs256_server: Server, rsa_private: rsa.RSAPrivateKey
) -> None:
    """HS256 signed with the public PEM as the HMAC secret (pyjwt refuses to build it)."""
    token = hand_made(
        {"alg": "HS256", "typ": "JWT"}, claims("t-rs256"), key=public_pem(rsa_private).encode()
    )
    assert_401(await call(rs256_server.url, token), "algorithm")


async def test_es256_server_accepts_es256_token(
    es256_server: Server, ec_private: ec.EllipticCurvePrivateKey
) -> None:
    token = jwt.encode(claims("t-es256"), private_pem(ec_private), algorithm="ES256")
    r = await call(es256_server.url, token)
    assert r.status_code == 200, r.text


async def test_es256_server_rejects_other_ec_key(es256_server: Server) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(claims("t-es256"), private_pem(other), algorithm="ES256")
    assert_401(await call(es256_server.url, token), "signature")


# --- roles ---------------------------------------------------------------------------------


async def test_plain_user_cannot_broadcast(alice: httpx.AsyncClient) -> None:
    r = await alice.post(BROADCAST, json={**BODY, "broadcast_to_tenant": True})
    assert r.status_code == 403, r.text
    assert "role" in r.json()["detail"]


@pytest.mark.parametrize("roles", [["user", "admin"], ["service"]], ids=["admin", "service"])
async def test_admin_and_service_may_broadcast(
    server: Server, tenant: str, roles: list[str]
) -> None:
    async with server.client("boss", tenant, roles) as client:
        r = await client.post(BROADCAST, json={**BODY, "user_id": "alice"})
    assert r.status_code == 202, r.text
    assert len(r.json()["notification_ids"]) == 1


# --- public paths --------------------------------------------------------------------------


async def test_health_is_public(server: Server) -> None:
    r = await call(server.url, path="/health")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"


async def test_openapi_is_public(server: Server) -> None:
    r = await call(server.url, path="/schema/openapi.json")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    assert INBOX in doc["paths"] or f"{INBOX}/" in doc["paths"]


async def test_docs_is_public(server: Server) -> None:
    r = await call(server.url, path="/docs")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert "<html" in r.text.lower()
