"""The immutable input of placement: offers, capacity, contracts, limits and a clock (pure: no I/O).

A :class:`PlacementSnapshot` is built once per scheduling round and then only read. It
builds an index at construction so one decision looks at a handful of offers instead of
the whole catalog: usable offers grouped by (GPU type, GPUs per instance, capacity type) and
sorted by price, each with its spot preemption rate already looked up.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from types import MappingProxyType
from typing import NamedTuple

from broker.core.placement.cost import DEFAULT_SPOT_PREEMPTIONS_PER_HOUR, EgressPricer
from broker.core.types import Availability, CapacityType, Offer
from broker.core.workload import Budget, Commitment, PreemptionRate, Quota
from pricing.core import price_age, ranking_key
from pricing.egress import egress_per_gb

OfferKey = tuple[str, str, str, str, str]
"""``Offer.key``: (cloud, region, zone or "", instance type, capacity type)."""

# Safer capacity first when a commitment needs an instance shape or prices tie.
CAPACITY_RANK: Mapping[CapacityType, int] = MappingProxyType(
    {CapacityType.RESERVED: 0, CapacityType.ON_DEMAND: 1, CapacityType.SPOT: 2}
)

IndexedOffer = tuple[Decimal, OfferKey, Offer, str, str, Decimal | None, bool]
"""(price per hour, key, offer, cloud casefolded, region casefolded, spot rate or None, limited)."""

ShapeKey = tuple[str, int, CapacityType]
"""(accelerator casefolded, GPUs per instance, capacity type)."""


class ShapeGroup(NamedTuple):
    """The usable offers of one shape, cheapest first, whole and split by cloud and by region.

    The splits let a workload with an allow-list walk only the places it allows instead of
    skipping past every other cloud's cheaper offers.
    """

    offers: tuple[IndexedOffer, ...]
    by_cloud: Mapping[str, tuple[IndexedOffer, ...]]
    by_region: Mapping[str, tuple[IndexedOffer, ...]]
    min_rate: Decimal | None  # the smallest spot rate in the group: the search's lower bound


@dataclass(frozen=True, slots=True)
class OfferIndex:
    """What one decision needs, looked up once per snapshot.

    ``usable`` holds, per shape, the offers a workload could launch on by themselves:
    on-demand or spot, price not stale, not marked unavailable, not known to have no capacity
    left; cheapest first (ties by ``pricing.core.ranking_key``, then catalog order).
    ``commitments`` maps an accelerator to its commitments, each with the instance shape per
    GPUs-per-instance (see :meth:`PlacementSnapshot.commitment_shape`).
    """

    usable: Mapping[ShapeKey, ShapeGroup]
    rates: Mapping[tuple[str, str, str], Decimal]
    commitments: Mapping[str, tuple[tuple[Commitment, Mapping[int, Offer]], ...]]
    quotas: Mapping[str, tuple[tuple[int, Quota], ...]]
    budgets: Mapping[str, Budget]


@dataclass(frozen=True, slots=True, eq=False)
class PlacementSnapshot:
    """Everything a placement decision reads, at one instant ``now``.

    ``available`` maps an offer's key to the instances the provider can start now; a key that
    is missing (or maps to None) means unknown, which no filter holds against an offer (a
    catalog price alone says nothing about capacity; the launch will find out).
    ``stale_after``: prices older than this are not trusted (None: any age).
    ``default_preemption_rate`` stands in for spot offers without an observed rate.
    """

    now: datetime
    offers: tuple[Offer, ...] = ()
    available: Mapping[OfferKey, int | None] = field(default_factory=dict)
    commitments: tuple[Commitment, ...] = ()
    quotas: tuple[Quota, ...] = ()
    budgets: tuple[Budget, ...] = ()
    preemption_rates: tuple[PreemptionRate, ...] = ()
    stale_after: timedelta | None = None
    default_preemption_rate: Decimal = DEFAULT_SPOT_PREEMPTIONS_PER_HOUR
    egress: EgressPricer = egress_per_gb
    index: OfferIndex = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        if self.stale_after is not None and self.stale_after <= timedelta(0):
            raise ValueError(f"stale_after must be positive, got {self.stale_after}")
        if not self.default_preemption_rate.is_finite() or self.default_preemption_rate < 0:
            rate = self.default_preemption_rate
            raise ValueError(f"default_preemption_rate must be non-negative, got {rate}")
        for key, count in self.available.items():
            if count is not None and (not isinstance(count, int) or count < 0):
                raise ValueError(f"available instances for {key} must be a non-negative int, got {count!r}")
        ids = [c.commitment_id for c in self.commitments]
        if len(set(ids)) != len(ids):
            raise ValueError("commitment ids must be unique")
        projects = [b.project for b in self.budgets]
        if len(set(projects)) != len(projects):
            raise ValueError("at most one budget per project")
        set_ = object.__setattr__  # frozen: normalise the inputs once, here
        set_(self, "offers", tuple(self.offers))
        set_(self, "available", MappingProxyType(dict(self.available)))
        set_(self, "commitments", tuple(self.commitments))
        set_(self, "quotas", tuple(self.quotas))
        set_(self, "budgets", tuple(self.budgets))
        set_(self, "preemption_rates", tuple(self.preemption_rates))
        set_(self, "index", self._build_index())

    def is_stale(self, offer: Offer) -> bool:
        return self.stale_after is not None and price_age(offer.observed_at, self.now) > self.stale_after

    def spot_rate(self, offer: Offer) -> Decimal:
        """Observed preemptions per instance-hour for the offer's place and type, or the default."""
        key = (offer.cloud.casefold(), offer.region.casefold(), offer.instance_type)
        return self.index.rates.get(key, self.default_preemption_rate)

    def available_instances(self, offer: Offer) -> int | None:
        return self.available.get(offer.key)

    def commitment_shape(self, commitment: Commitment, gpus_per_node: int) -> Offer | None:
        """The instance type a commitment launches for ``gpus_per_node`` GPUs per instance.

        Rule: an offer in the snapshot of the commitment's cloud, region and accelerator (and
        its zone and instance type where the commitment names them) with exactly that many GPUs
        per instance; among several, reserved before on-demand before spot, then the cheapest
        by ``pricing.core.ranking_key``. Any offer counts, stale or not: only its shape is used.
        """
        for c, shapes in self.index.commitments.get(commitment.accelerator.casefold(), ()):
            if c is commitment:
                return shapes.get(gpus_per_node)
        return None

    def _build_index(self) -> OfferIndex:
        rates = {
            (r.cloud.casefold(), r.region.casefold(), r.instance_type): r.per_hour
            for r in self.preemption_rates
        }
        groups: dict[ShapeKey, list[tuple[tuple[object, ...], int, IndexedOffer]]] = {}
        for position, offer in enumerate(self.offers):
            if offer.capacity_type is CapacityType.RESERVED or offer.availability is Availability.UNAVAILABLE:
                continue
            if self.is_stale(offer) or self.available.get(offer.key) == 0:
                continue
            cloud, region = offer.cloud.casefold(), offer.region.casefold()
            rate = None
            if offer.capacity_type is CapacityType.SPOT:
                rate = rates.get((cloud, region, offer.instance_type), self.default_preemption_rate)
            entry: IndexedOffer = (
                offer.price_per_hour,
                offer.key,
                offer,
                cloud,
                region,
                rate,
                offer.availability is Availability.LIMITED,
            )
            group = (offer.accelerator.casefold(), offer.accelerator_count, offer.capacity_type)
            groups.setdefault(group, []).append((ranking_key(offer), position, entry))
        usable = {}
        for key, rows in groups.items():
            rows.sort(key=lambda row: row[:2])  # price order, then catalog order
            usable[key] = _group(tuple(entry for _, _, entry in rows))
        quotas: dict[str, list[tuple[int, Quota]]] = {}
        for i, quota in enumerate(self.quotas):
            quotas.setdefault(quota.cloud.casefold(), []).append((i, quota))
        return OfferIndex(
            usable=MappingProxyType(usable),
            rates=MappingProxyType(rates),
            commitments=MappingProxyType(self._commitment_shapes()),
            quotas=MappingProxyType({k: tuple(v) for k, v in quotas.items()}),
            budgets=MappingProxyType({b.project: b for b in self.budgets}),
        )

    def _commitment_shapes(self) -> dict[str, tuple[tuple[Commitment, Mapping[int, Offer]], ...]]:
        by_place: dict[tuple[str, str, str], list[Offer]] = {}
        for offer in self.offers:
            place = (offer.cloud.casefold(), offer.region.casefold(), offer.accelerator.casefold())
            by_place.setdefault(place, []).append(offer)
        result: dict[str, list[tuple[Commitment, Mapping[int, Offer]]]] = {}
        for commitment in self.commitments:
            place = (
                commitment.cloud.casefold(), commitment.region.casefold(), commitment.accelerator.casefold()
            )
            shapes: dict[int, Offer] = {}
            for offer in sorted(_matching(commitment, by_place.get(place, ())), key=_shape_order):
                shapes.setdefault(offer.accelerator_count, offer)
            result.setdefault(place[2], []).append((commitment, MappingProxyType(shapes)))
        return {k: tuple(v) for k, v in result.items()}


def _group(entries: tuple[IndexedOffer, ...]) -> ShapeGroup:
    by_cloud: dict[str, list[IndexedOffer]] = {}
    by_region: dict[str, list[IndexedOffer]] = {}
    for entry in entries:  # already sorted: each split stays sorted
        by_cloud.setdefault(entry[3], []).append(entry)
        by_region.setdefault(entry[4], []).append(entry)
    rates = [e[5] for e in entries if e[5] is not None]
    return ShapeGroup(
        offers=entries,
        by_cloud=MappingProxyType({k: tuple(v) for k, v in by_cloud.items()}),
        by_region=MappingProxyType({k: tuple(v) for k, v in by_region.items()}),
        min_rate=min(rates) if rates else None,
    )


def _matching(commitment: Commitment, offers: Iterable[Offer]) -> Iterable[Offer]:
    zone = commitment.zone.casefold() if commitment.zone else None
    for offer in offers:
        if zone is not None and (offer.zone or "").casefold() != zone:
            continue
        if commitment.instance_type is not None and offer.instance_type != commitment.instance_type:
            continue
        yield offer


def _shape_order(offer: Offer) -> tuple[object, ...]:
    return (CAPACITY_RANK[offer.capacity_type], ranking_key(offer))


__all__ = [
    "CAPACITY_RANK",
    "IndexedOffer",
    "OfferIndex",
    "OfferKey",
    "PlacementSnapshot",
    "ShapeGroup",
    "ShapeKey",
]
