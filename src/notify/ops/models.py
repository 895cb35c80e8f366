"""The audit log: who did what to which resource, for compliance."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.types import JsonB
from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from notify.core.models import TimestampedUUID


class AuditEntry(TimestampedUUID):
    """One audited action."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_tenant_created", "tenant_id", "created_at"),)

    tenant_id: Mapped[str] = mapped_column(String(255))
    actor: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
