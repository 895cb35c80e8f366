"""NATS ingest: broadcast bodies published to `notify.ingest`, stored and delivered like REST."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from notify.core.bus import Bus
from notify.core.config import Settings
from notify.notifications.outbox import OutboxRelay


class IngestConsumer:
    """Consumes `notify.ingest` (a work queue shared by all pods); invalid → `notify.dlq`."""

    def __init__(self, settings: Settings, engine: AsyncEngine, bus: Bus, relay: OutboxRelay):
        self._settings = settings
        self._engine = engine
        self._bus = bus
        self._relay = relay

    def start(self) -> None:
        """Begin consuming in the background (waits for the bus to be connected)."""

    async def stop(self) -> None:
        """Stop consuming; a message being handled is finished or left unacked for redelivery."""
