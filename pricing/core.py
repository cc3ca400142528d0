"""Pure cost math over offers: filter, rank by $ per GPU-hour, price age (no I/O).

Filters are small named functions so a caller can say *why* an offer was left out (the
placement engine builds on the same habit: filter, then score, keep the reasons).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from broker.core.types import CapacityType, Offer

# Ties on price go to the capacity that is least likely to be taken away.
_CAPACITY_RANK = {CapacityType.RESERVED: 0, CapacityType.ON_DEMAND: 1, CapacityType.SPOT: 2}


@dataclass(frozen=True, slots=True)
class OfferQuery:
    """What a user asks for when looking for GPUs. ``None`` means "any"."""

    gpu: str | None = None
    count: int | None = None
    clouds: frozenset[str] | None = None
    region: str | None = None
    capacity: CapacityType | None = None
    max_price_per_gpu_hour: Decimal | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.count is not None and self.count <= 0:
            raise ValueError(f"count must be a positive number of GPUs, got {self.count}")
        if self.limit is not None and self.limit <= 0:
            raise ValueError(f"limit must be positive, got {self.limit}")
        if self.max_price_per_gpu_hour is not None and (
            not self.max_price_per_gpu_hour.is_finite() or self.max_price_per_gpu_hour < 0
        ):
            raise ValueError(f"max price must be a non-negative amount, got {self.max_price_per_gpu_hour}")


OfferFilter = Callable[[Offer, OfferQuery], str | None]
"""A filter returns None when the offer passes, else the reason it is out."""


def filter_gpu(offer: Offer, query: OfferQuery) -> str | None:
    if query.gpu is None or offer.accelerator.casefold() == query.gpu.casefold():
        return None
    return f"accelerator {offer.accelerator} is not {query.gpu}"


def filter_count(offer: Offer, query: OfferQuery) -> str | None:
    if query.count is None or offer.accelerator_count == query.count:
        return None
    return f"{offer.accelerator_count} GPUs per instance, not {query.count}"


def filter_cloud(offer: Offer, query: OfferQuery) -> str | None:
    if query.clouds is None or offer.cloud.casefold() in {c.casefold() for c in query.clouds}:
        return None
    return f"cloud {offer.cloud} not among {', '.join(sorted(query.clouds))}"


def filter_region(offer: Offer, query: OfferQuery) -> str | None:
    if query.region is None or offer.region.casefold() == query.region.casefold():
        return None
    return f"region {offer.region} is not {query.region}"


def filter_capacity(offer: Offer, query: OfferQuery) -> str | None:
    if query.capacity is None or offer.capacity_type is query.capacity:
        return None
    return f"capacity {offer.capacity_type.value} is not {query.capacity.value}"


def filter_max_price(offer: Offer, query: OfferQuery) -> str | None:
    if query.max_price_per_gpu_hour is None or offer.price_per_gpu_hour <= query.max_price_per_gpu_hour:
        return None
    return f"${offer.price_per_gpu_hour:.4f}/GPU-h is above the ${query.max_price_per_gpu_hour}/GPU-h limit"


OFFER_FILTERS: tuple[OfferFilter, ...] = (
    filter_gpu,
    filter_count,
    filter_cloud,
    filter_region,
    filter_capacity,
    filter_max_price,
)


def rejection(offer: Offer, query: OfferQuery) -> str | None:
    """The first reason ``offer`` does not answer ``query``, or None when it does."""
    for check in OFFER_FILTERS:
        reason = check(offer, query)
        if reason is not None:
            return reason
    return None


def ranking_key(offer: Offer) -> tuple[object, ...]:
    """Cheapest GPU-hour first; then the cheaper instance, safer capacity, and a total, stable order."""
    return (
        offer.price_per_gpu_hour,
        offer.price_per_hour,
        _CAPACITY_RANK[offer.capacity_type],
        offer.cloud,
        offer.region,
        offer.zone or "",
        offer.instance_type,
        offer.accelerator,
        offer.accelerator_count,
        offer.source,
        offer.observed_at,
    )


def cheapest(offers: Iterable[Offer], query: OfferQuery) -> list[Offer]:
    """The offers that answer ``query``, cheapest per GPU-hour first, at most ``query.limit``."""
    matching = sorted((o for o in offers if rejection(o, query) is None), key=ranking_key)
    return matching if query.limit is None else matching[: query.limit]


def ranked(offers: Iterable[Offer]) -> tuple[Offer, ...]:
    """``offers`` in ``cheapest``'s order, sorted once to answer many queries with ``cheapest_ranked``."""
    return tuple(sorted(offers, key=ranking_key))


def cheapest_ranked(offers: Sequence[Offer], query: OfferQuery) -> list[Offer]:
    """``cheapest(offers, query)`` for offers already in ranking order (``ranked``), without sorting.

    Filtering a stably sorted list keeps its order, so this walks it and stops at ``query.limit``,
    or at the first offer dearer per GPU-hour than the price limit (every later one is dearer)."""
    limit = query.limit
    cap = query.max_price_per_gpu_hour
    found: list[Offer] = []
    for offer in offers:
        if limit is not None and len(found) >= limit:
            break
        if cap is not None and offer.price_per_gpu_hour > cap:
            break
        if rejection(offer, query) is None:
            found.append(offer)
    return found


def price_age(observed_at: datetime, now: datetime) -> timedelta:
    """How old a price is at ``now`` (never negative: a clock skew is not a future price)."""
    return max(now - observed_at, timedelta(0))


def format_age(age: timedelta) -> str:
    """A short human age: ``45s``, ``12m``, ``5h``, ``3d``."""
    seconds = int(age.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
