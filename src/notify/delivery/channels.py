"""What a delivery channel is: one small interface, so e-mail or SMS is one module each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncSession

# release: not tried (the worker is stopping); the claim goes back untouched.
Verdict = Literal["sent", "retry", "failed", "gone", "skipped", "release"]


@dataclass(slots=True)
class Job:
    """One claimed delivery and what a channel needs to send it."""

    delivery_id: UUID
    notification: dict[str, Any]
    channel: str
    attempts: int
    subscription_id: UUID | None
    target: Any = None  # what the channel's `prepare` loaded (a push subscription, …)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one send went. `gone`: the target no longer exists (deactivate it, never retry)."""

    verdict: Verdict
    error: str | None = None
    retry_after: float | None = None  # seconds the far end asked us to wait
    meta: dict[str, Any] = field(default_factory=dict)


class Channel(Protocol):
    """A way out of the process. `prepare` loads every job's target in one query."""

    name: str

    async def prepare(self, db: AsyncSession, jobs: list[Job]) -> None: ...

    async def send(self, job: Job) -> Outcome: ...

    async def gone(self, db: AsyncSession, jobs: list[Job]) -> None:
        """The far end says these targets no longer exist."""

    async def close(self) -> None: ...


class DisabledChannel:
    """A channel this worker cannot send on: its deliveries are skipped with the reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self._reason = reason

    async def prepare(self, db: AsyncSession, jobs: list[Job]) -> None:
        return None

    async def send(self, job: Job) -> Outcome:
        return Outcome("skipped", self._reason)

    async def gone(self, db: AsyncSession, jobs: list[Job]) -> None:
        return None

    async def close(self) -> None:
        return None
