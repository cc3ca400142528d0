"""SQLAlchemy 2 ORM models: the tables gpubroker keeps in PostgreSQL (declarations only, no I/O).

Prices are versioned facts: an import adds a ``price_snapshot`` and its ``offer_price`` rows and
never overwrites an older one. The current price of a cloud's offers is the newest snapshot that
covers that cloud (``price_snapshot_cloud``), so a fresh AWS import replaces AWS prices without
touching GCP's, and an offer missing from the fresh import is no longer current.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so Alembic autogenerate and hand-written schema migrations agree.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

CAPACITY_TYPES = ("on-demand", "spot", "reserved")
AVAILABILITIES = ("available", "limited", "unavailable", "unknown")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PriceSnapshot(Base):
    """One import of prices: where they came from, when they were observed and imported."""

    __tablename__ = "price_snapshot"
    __table_args__ = (UniqueConstraint("content_sha256", name="uq_price_snapshot_content_sha256"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    source_name: Mapped[str] = mapped_column(Text)
    content_sha256: Mapped[str] = mapped_column(String(64))
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    offer_count: Mapped[int] = mapped_column(Integer)


class PriceSnapshotCloud(Base):
    """Which clouds a snapshot covers: it is the current price list for each of them until a newer one."""

    __tablename__ = "price_snapshot_cloud"

    snapshot_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("price_snapshot.id", ondelete="CASCADE"), primary_key=True
    )
    cloud: Mapped[str] = mapped_column(Text, primary_key=True)
    offer_count: Mapped[int] = mapped_column(Integer)


class OfferPrice(Base):
    """One offer's price in one snapshot. Money is NUMERIC: exact, never float."""

    __tablename__ = "offer_price"
    __table_args__ = (
        CheckConstraint("price_per_hour >= 0", name="price_non_negative"),
        CheckConstraint("accelerator_count > 0", name="accelerator_count_positive"),
        CheckConstraint(f"capacity_type IN {CAPACITY_TYPES!r}", name="capacity_type_known"),
        CheckConstraint(f"availability IN {AVAILABILITIES!r}", name="availability_known"),
        Index("ix_offer_price_snapshot_cloud", "snapshot_id", "cloud"),
        Index(
            "ix_offer_price_history",
            "cloud",
            "region",
            "zone",
            "instance_type",
            "capacity_type",
            "observed_at",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    snapshot_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("price_snapshot.id", ondelete="CASCADE"))
    cloud: Mapped[str] = mapped_column(Text)
    region: Mapped[str] = mapped_column(Text)
    zone: Mapped[str] = mapped_column(Text, default="")  # "" = the offer is region-wide
    instance_type: Mapped[str] = mapped_column(Text)
    accelerator: Mapped[str] = mapped_column(Text)
    accelerator_count: Mapped[int] = mapped_column(Integer)
    vcpus: Mapped[Decimal | None] = mapped_column(Numeric)
    memory_gib: Mapped[Decimal | None] = mapped_column(Numeric)
    capacity_type: Mapped[str] = mapped_column(Text)
    price_per_hour: Mapped[Decimal] = mapped_column(Numeric)
    currency: Mapped[str] = mapped_column(String(3))
    source: Mapped[str] = mapped_column(Text)
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    availability: Mapped[str] = mapped_column(Text, server_default="unknown")
