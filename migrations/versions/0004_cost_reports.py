"""Cost accounting detail and nightly cost reports: cost records learn the GPU type, the instance
type and the on-demand counterfactual; ``cost_report`` stores each org's report per day.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("cost_record", sa.Column("accelerator", sa.Text(), nullable=True))
    op.add_column("cost_record", sa.Column("instance_type", sa.Text(), nullable=True))
    # What the same GPU-hours would have cost on demand; NULL where no on-demand price is known.
    op.add_column("cost_record", sa.Column("ondemand_usd", sa.Numeric(), nullable=True))
    op.create_table(
        "cost_report",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("csv", sa.Text(), nullable=False),
        sa.Column(
            "delivery",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organization.id"],
            name=op.f("fk_cost_report_org_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "day", name=op.f("pk_cost_report")),
    )


def downgrade() -> None:
    op.drop_table("cost_report")
    op.drop_column("cost_record", "ondemand_usd")
    op.drop_column("cost_record", "instance_type")
    op.drop_column("cost_record", "accelerator")
