"""Price catalog: versioned price snapshots, the clouds each covers, and offer prices.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "price_snapshot",
        sa.Column("id", sa.BigInteger(), primary_key=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_name", sa.Text(), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("offer_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_price_snapshot"),
        sa.UniqueConstraint("content_sha256", name="uq_price_snapshot_content_sha256"),
    )
    op.create_table(
        "price_snapshot_cloud",
        sa.Column("snapshot_id", sa.BigInteger(), nullable=False),
        sa.Column("cloud", sa.Text(), nullable=False),
        sa.Column("offer_count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["price_snapshot.id"],
            ondelete="CASCADE",
            name="fk_price_snapshot_cloud_snapshot_id_price_snapshot",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "cloud", name="pk_price_snapshot_cloud"),
    )
    op.create_table(
        "offer_price",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("snapshot_id", sa.BigInteger(), nullable=False),
        sa.Column("cloud", sa.Text(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("zone", sa.Text(), nullable=False),
        sa.Column("instance_type", sa.Text(), nullable=False),
        sa.Column("accelerator", sa.Text(), nullable=False),
        sa.Column("accelerator_count", sa.Integer(), nullable=False),
        sa.Column("vcpus", sa.Numeric(), nullable=True),
        sa.Column("memory_gib", sa.Numeric(), nullable=True),
        sa.Column("capacity_type", sa.Text(), nullable=False),
        sa.Column("price_per_hour", sa.Numeric(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_offer_price"),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["price_snapshot.id"],
            ondelete="CASCADE",
            name="fk_offer_price_snapshot_id_price_snapshot",
        ),
        sa.CheckConstraint("price_per_hour >= 0", name="ck_offer_price_price_non_negative"),
        sa.CheckConstraint("accelerator_count > 0", name="ck_offer_price_accelerator_count_positive"),
        sa.CheckConstraint(
            "capacity_type IN ('on-demand', 'spot', 'reserved')", name="ck_offer_price_capacity_type_known"
        ),
    )
    op.create_index("ix_offer_price_snapshot_cloud", "offer_price", ["snapshot_id", "cloud"])
    op.create_index(
        "ix_offer_price_history",
        "offer_price",
        ["cloud", "region", "zone", "instance_type", "capacity_type", "observed_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_offer_price_history", table_name="offer_price")
    op.drop_index("ix_offer_price_snapshot_cloud", table_name="offer_price")
    op.drop_table("offer_price")
    op.drop_table("price_snapshot_cloud")
    op.drop_table("price_snapshot")
