"""The base of every domain service: advanced-alchemy's repository service, async."""

from __future__ import annotations

from typing import Any, TypeVar

from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy.ext.asyncio import AsyncSession

M = TypeVar("M", bound=Any)
R = TypeVar("R", bound=SQLAlchemyAsyncRepository[Any])


class Service(SQLAlchemyAsyncRepositoryService[M, R]):
    """Domain services add logic only; `db` is the request's session."""

    @property
    def db(self) -> AsyncSession:
        session = self.repository.session
        assert isinstance(session, AsyncSession)
        return session
