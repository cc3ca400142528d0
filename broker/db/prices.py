"""Price repository: add price snapshots, read current offers and price history (does I/O).

The current price list of a cloud is the snapshot covering it with the newest ``observed_at``
(ties: the later import), so loading an old bundled snapshot after a fresh import never hides
the fresh prices.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, insert, select, tuple_
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from broker.core.types import Availability, CapacityType, Offer
from broker.db.models import OfferPrice, PriceSnapshot, PriceSnapshotCloud


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """A stored price snapshot; ``created`` is False when an identical one was already stored."""

    id: int
    source: str
    source_name: str
    observed_at: datetime
    imported_at: datetime
    offer_count: int
    clouds: tuple[str, ...]
    created: bool


def _record(snapshot: PriceSnapshot, clouds: Iterable[str], created: bool) -> SnapshotRecord:
    return SnapshotRecord(
        id=snapshot.id,
        source=snapshot.source,
        source_name=snapshot.source_name,
        observed_at=snapshot.observed_at,
        imported_at=snapshot.imported_at,
        offer_count=snapshot.offer_count,
        clouds=tuple(sorted(clouds)),
        created=created,
    )


def find_snapshot(session: Session, content_sha256: str) -> SnapshotRecord | None:
    snapshot = session.scalar(select(PriceSnapshot).where(PriceSnapshot.content_sha256 == content_sha256))
    if snapshot is None:
        return None
    clouds = session.scalars(
        select(PriceSnapshotCloud.cloud).where(PriceSnapshotCloud.snapshot_id == snapshot.id)
    )
    return _record(snapshot, clouds, created=False)


def add_snapshot(
    session: Session,
    offers: list[Offer],
    *,
    source: str,
    source_name: str,
    content_sha256: str,
    observed_at: datetime,
    clouds: Iterable[str],
) -> SnapshotRecord:
    """Store ``offers`` as one new snapshot covering ``clouds`` (all or nothing, in the caller's
    transaction). Content already stored is not stored twice: the existing snapshot is returned."""
    existing = find_snapshot(session, content_sha256)
    if existing is not None:
        return existing
    covered = set(clouds)
    stray = {o.cloud for o in offers} - covered
    if stray:
        raise ValueError(f"offers for clouds the snapshot does not cover: {sorted(stray)}")
    snapshot = PriceSnapshot(
        source=source,
        source_name=source_name,
        content_sha256=content_sha256,
        observed_at=observed_at,
        offer_count=len(offers),
    )
    session.add(snapshot)
    session.flush()
    per_cloud = Counter(o.cloud for o in offers)
    session.add_all(
        PriceSnapshotCloud(snapshot_id=snapshot.id, cloud=cloud, offer_count=per_cloud[cloud])
        for cloud in covered
    )
    if offers:
        session.execute(
            insert(OfferPrice),
            [
                {
                    "snapshot_id": snapshot.id,
                    "cloud": o.cloud,
                    "region": o.region,
                    "zone": o.zone or "",
                    "instance_type": o.instance_type,
                    "accelerator": o.accelerator,
                    "accelerator_count": o.accelerator_count,
                    "vcpus": o.vcpus,
                    "memory_gib": o.memory_gib,
                    "capacity_type": o.capacity_type.value,
                    "price_per_hour": o.price_per_hour,
                    "currency": o.currency,
                    "source": o.source,
                    "observed_at": o.observed_at,
                    "availability": o.availability.value,
                }
                for o in offers
            ],
        )
    session.flush()
    session.refresh(snapshot)
    return _record(snapshot, covered, created=True)


def _current_snapshot_per_cloud():
    newest_first = (
        func.row_number()
        .over(
            partition_by=PriceSnapshotCloud.cloud,
            order_by=(PriceSnapshot.observed_at.desc(), PriceSnapshot.id.desc()),
        )
        .label("rank")
    )
    ranked = (
        select(PriceSnapshotCloud.cloud, PriceSnapshotCloud.snapshot_id, newest_first)
        .join(PriceSnapshot, PriceSnapshot.id == PriceSnapshotCloud.snapshot_id)
        .subquery("ranked")
    )
    return select(ranked.c.cloud, ranked.c.snapshot_id).where(ranked.c.rank == 1).subquery("current_snapshot")


def _to_offer(row: Row[Any]) -> Offer:
    return Offer(
        cloud=row.cloud,
        region=row.region,
        zone=row.zone or None,
        instance_type=row.instance_type,
        accelerator=row.accelerator,
        accelerator_count=row.accelerator_count,
        vcpus=row.vcpus,
        memory_gib=row.memory_gib,
        capacity_type=CapacityType(row.capacity_type),
        price_per_hour=row.price_per_hour,
        currency=row.currency,
        source=row.source,
        observed_at=row.observed_at,
        availability=Availability(row.availability),
    )


def current_offers(session: Session, accelerator: str | None = None) -> list[Offer]:
    """Every current offer (optionally of one accelerator), from each cloud's current snapshot."""
    current = _current_snapshot_per_cloud()
    # Plain rows, not ORM objects: building ~1,000 identity-mapped entities doubled the latency.
    query = select(*OfferPrice.__table__.c).join(
        current,
        (OfferPrice.snapshot_id == current.c.snapshot_id) & (OfferPrice.cloud == current.c.cloud),
    )
    if accelerator is not None:
        query = query.where(func.lower(OfferPrice.accelerator) == accelerator.lower())
    return [_to_offer(row) for row in session.execute(query)]


@dataclass(frozen=True, slots=True, order=True)
class CurrentSnapshot:
    """The snapshot that is a cloud's current price list. Its offer rows never change once stored
    (prices are versioned facts), so the pair identifies what ``current_offers`` returns for it;
    the content hash guards against a reused id (a database reset under a long-lived process)."""

    cloud: str
    snapshot_id: int
    content_sha256: str


# Built once: this runs on every cached offer look-up, and building the statement cost more CPU
# than PostgreSQL spends answering it. The same choice as _current_snapshot_per_cloud, with
# DISTINCT ON instead of a window.
_CURRENT_SNAPSHOTS = (
    select(PriceSnapshotCloud.cloud, PriceSnapshotCloud.snapshot_id, PriceSnapshot.content_sha256)
    .join(PriceSnapshot, PriceSnapshot.id == PriceSnapshotCloud.snapshot_id)
    .ext(distinct_on(PriceSnapshotCloud.cloud))
    .order_by(PriceSnapshotCloud.cloud, PriceSnapshot.observed_at.desc(), PriceSnapshot.id.desc())
)


def current_snapshots(session: Session) -> tuple[CurrentSnapshot, ...]:
    """Each cloud's current snapshot, by cloud: one small query, the key of an offer cache."""
    rows = session.execute(_CURRENT_SNAPSHOTS).all()
    return tuple(CurrentSnapshot(cloud, snapshot_id, sha) for cloud, snapshot_id, sha in rows)


def snapshot_offers(
    session: Session, snapshots: Iterable[CurrentSnapshot]
) -> dict[CurrentSnapshot, list[Offer]]:
    """Every offer each of ``snapshots`` stored for its cloud, in one query (index on snapshot, cloud)."""
    wanted = {(s.snapshot_id, s.cloud): s for s in snapshots}
    found: dict[CurrentSnapshot, list[Offer]] = {s: [] for s in wanted.values()}
    if not wanted:
        return found
    query = select(*OfferPrice.__table__.c).where(
        tuple_(OfferPrice.snapshot_id, OfferPrice.cloud).in_(list(wanted))
    )
    for row in session.execute(query):
        found[wanted[(row.snapshot_id, row.cloud)]].append(_to_offer(row))
    return found


def last_observed_at(session: Session, cloud: str) -> datetime | None:
    """When the newest stored prices of ``cloud`` were observed (None: never)."""
    return session.scalar(
        select(func.max(PriceSnapshot.observed_at))
        .join(PriceSnapshotCloud, PriceSnapshotCloud.snapshot_id == PriceSnapshot.id)
        .where(PriceSnapshotCloud.cloud == cloud)
    )


def list_snapshots(session: Session) -> list[SnapshotRecord]:
    """Every stored snapshot, newest import first."""
    snapshots = session.scalars(select(PriceSnapshot).order_by(PriceSnapshot.id.desc())).all()
    clouds: dict[int, list[str]] = {}
    for snapshot_id, cloud in session.execute(
        select(PriceSnapshotCloud.snapshot_id, PriceSnapshotCloud.cloud)
    ):
        clouds.setdefault(snapshot_id, []).append(cloud)
    return [_record(s, clouds.get(s.id, []), created=False) for s in snapshots]


@dataclass(frozen=True, slots=True)
class PricePoint:
    """One offer's price as one snapshot recorded it (``zone`` "" = region-wide)."""

    observed_at: datetime
    region: str
    zone: str
    price_per_hour: Decimal
    accelerator_count: int
    currency: str
    source: str
    snapshot_id: int
    availability: str


def price_history(
    session: Session,
    *,
    cloud: str,
    instance_type: str,
    capacity_type: str,
    start: datetime,
    end: datetime,
    region: str | None = None,
    zone: str | None = None,
    limit: int = 1000,
) -> list[PricePoint]:
    """Every stored price of one offer observed in ``[start, end)``, oldest first (at most ``limit``).

    Snapshots never overwrite each other, so this is each snapshot's row for the offer. Without
    ``region`` (or ``zone``) the points of every region (zone) are interleaved by time."""
    query = (
        select(
            OfferPrice.observed_at,
            OfferPrice.region,
            OfferPrice.zone,
            OfferPrice.price_per_hour,
            OfferPrice.accelerator_count,
            OfferPrice.currency,
            OfferPrice.source,
            OfferPrice.snapshot_id,
            OfferPrice.availability,
        )
        .join(PriceSnapshot, PriceSnapshot.id == OfferPrice.snapshot_id)
        .where(
            OfferPrice.cloud == cloud,
            OfferPrice.instance_type == instance_type,
            OfferPrice.capacity_type == capacity_type,
            OfferPrice.observed_at >= start,
            OfferPrice.observed_at < end,
        )
    )
    if region is not None:
        query = query.where(OfferPrice.region == region)
    if zone is not None:
        query = query.where(OfferPrice.zone == zone)
    query = query.order_by(OfferPrice.observed_at, OfferPrice.snapshot_id, OfferPrice.id).limit(limit)
    return [PricePoint(*row) for row in session.execute(query)]
