"""digest runs (exactly once per user and local day), tick index

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import advanced_alchemy.types
import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = advanced_alchemy.types.datetime.DateTimeUTC(timezone=True)


def upgrade() -> None:
    op.create_table(
        "digest_runs",
        sa.Column("id", advanced_alchemy.types.guid.GUID(length=16), nullable=False),
        sa.Column("tenant_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("period_date", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("notification_id", advanced_alchemy.types.guid.GUID(length=16), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digest_runs")),
    )
    with op.batch_alter_table("digest_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ux_digest_runs_period", ["tenant_id", "user_id", "period_date"], unique=True
        )
        batch_op.create_index("ix_digest_runs_created", ["created_at"], unique=False)
    with op.batch_alter_table("digest_subscriptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_digest_date", sa.Date(), nullable=True))
        batch_op.drop_index("ix_digest_subscriptions_due")
        batch_op.create_index(
            "ix_digest_subscriptions_due", ["is_enabled", "next_delivery_at", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("digest_subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_digest_subscriptions_due")
        batch_op.create_index(
            "ix_digest_subscriptions_due", ["is_enabled", "next_delivery_at"], unique=False
        )
        batch_op.drop_column("last_digest_date")
    op.drop_table("digest_runs")
