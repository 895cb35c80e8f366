"""Fixtures: one real server per database backend, over a real nats-server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Server, backends, nats_server, new_tenant, serving


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nats_server(tmp_path_factory.mktemp("nats")) as url:
        yield url


@pytest.fixture(scope="session", params=backends())
def server(
    request: pytest.FixtureRequest, nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp: Path = tmp_path_factory.mktemp(f"server-{request.param}")
    with serving(request.param, nats_url, tmp) as srv:
        yield srv


@pytest.fixture
def tenant() -> str:
    return new_tenant()


@pytest.fixture
async def alice(server: Server, tenant: str) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client("alice", tenant) as c:
        yield c


@pytest.fixture
async def bob(server: Server, tenant: str) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client("bob", tenant) as c:
        yield c


@pytest.fixture
async def admin(server: Server, tenant: str) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client("root", tenant, ["user", "admin"]) as c:
        yield c


@pytest.fixture
async def service(server: Server, tenant: str) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client("svc", tenant, ["service"]) as c:
        yield c
