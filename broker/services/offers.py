"""Offer look-up use-cases: the cheapest current offers for a query, with price age, and one offer's
price history (does I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from broker.core.types import Offer
from broker.db.prices import current_offers, price_history
from pricing.core import OfferQuery, cheapest, price_age


@dataclass(frozen=True, slots=True)
class OfferQuote:
    """An offer as shown to a user: the offer, its per-GPU price, and how old the price is."""

    offer: Offer
    price_per_gpu_hour: Decimal
    price_age_seconds: int
    stale: bool


DEFAULT_STALE_AFTER = timedelta(hours=1)


def find_offers(
    session: Session, query: OfferQuery, now: datetime, stale_after: timedelta = DEFAULT_STALE_AFTER
) -> list[OfferQuote]:
    """The cheapest current offers answering ``query``, cheapest per GPU-hour first.

    A price older than ``stale_after`` is marked stale (a failed refresh keeps the last good one)."""
    offers = current_offers(session, accelerator=query.gpu)
    quotes = []
    for o in cheapest(offers, query):
        age = price_age(o.observed_at, now)
        quotes.append(
            OfferQuote(
                offer=o,
                price_per_gpu_hour=o.price_per_gpu_hour,
                price_age_seconds=int(age.total_seconds()),
                stale=age > stale_after,
            )
        )
    return quotes


HISTORY_DEFAULT_SPAN = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One stored price of an offer: when it was observed, per instance- and per GPU-hour."""

    observed_at: datetime
    region: str
    zone: str | None
    price_per_hour: Decimal
    price_per_gpu_hour: Decimal
    currency: str
    source: str
    snapshot_id: int
    availability: str


def offer_history(
    session: Session,
    *,
    cloud: str,
    instance_type: str,
    capacity: str,
    now: datetime,
    region: str | None = None,
    zone: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 1000,
) -> tuple[datetime, datetime, list[HistoryPoint]]:
    """One offer's prices over ``[start, end)`` (default: the last 30 days), oldest first, with the
    window actually used."""
    end = end if end is not None else now
    start = start if start is not None else end - HISTORY_DEFAULT_SPAN
    points = price_history(
        session,
        cloud=cloud.strip().lower(),
        instance_type=instance_type,
        capacity_type=capacity,
        start=start,
        end=end,
        region=region,
        zone=zone,
        limit=limit,
    )
    return (
        start,
        end,
        [
            HistoryPoint(
                observed_at=p.observed_at,
                region=p.region,
                zone=p.zone or None,
                price_per_hour=p.price_per_hour,
                price_per_gpu_hour=p.price_per_hour / p.accelerator_count,
                currency=p.currency,
                source=p.source,
                snapshot_id=p.snapshot_id,
                availability=p.availability,
            )
            for p in points
        ],
    )
