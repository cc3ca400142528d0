"""Offer availability: the provider's capacity signal stored with each price.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "offer_price",
        sa.Column("availability", sa.Text(), nullable=False, server_default="unknown"),
    )
    op.create_check_constraint(
        "ck_offer_price_availability_known",
        "offer_price",
        "availability IN ('available', 'limited', 'unavailable', 'unknown')",
    )


def downgrade() -> None:
    op.drop_constraint("ck_offer_price_availability_known", "offer_price", type_="check")
    op.drop_column("offer_price", "availability")
