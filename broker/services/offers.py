"""Offer look-up use-cases: the cheapest current offers for a query, with price age, and one offer's
price history (does I/O)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from broker.core.types import Offer
from broker.db.prices import (
    CurrentSnapshot,
    current_offers,
    current_snapshots,
    price_history,
    snapshot_offers,
)
from pricing.core import OfferQuery, cheapest, cheapest_ranked, price_age, ranked


@dataclass(frozen=True, slots=True)
class OfferQuote:
    """An offer as shown to a user: the offer, its per-GPU price, and how old the price is."""

    offer: Offer
    price_per_gpu_hour: Decimal
    price_age_seconds: int
    stale: bool


DEFAULT_STALE_AFTER = timedelta(hours=1)


class CurrentOfferCache:
    """One process's decoded current offers, per cloud snapshot, and per accelerator in ranking order.

    Every look-up first asks, in the caller's transaction, which snapshot is current for each cloud
    (one small query), and answers from offers decoded for exactly those snapshots: a new snapshot
    is seen by the next look-up on every replica, with no invalidation message to lose. Only the
    clouds whose snapshot changed are read and decoded again (a price refresh of one provider costs
    its own rows, not the whole catalog). Offer rows of a snapshot never change once stored, and
    price age and staleness are computed per request, so nothing cached goes stale. Thread-safe:
    the API answers from a thread pool; a miss decodes once while the other threads wait."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: tuple[CurrentSnapshot, ...] = ()
        self._by_cloud: dict[str, tuple[CurrentSnapshot, tuple[Offer, ...]]] = {}
        self._accelerators: frozenset[str] = frozenset()
        # Keyed by lower-cased accelerator (None: every offer); only accelerators that exist are
        # kept, so arbitrary ?gpu= values cannot grow it.
        self._ranked: dict[str | None, tuple[Offer, ...]] = {}

    def ranked_offers(self, session: Session, accelerator: str | None) -> tuple[Offer, ...]:
        """The current offers (of ``accelerator``, case-insensitive, or all), in ``cheapest``'s order."""
        snapshots = current_snapshots(session)
        wanted = accelerator.lower() if accelerator is not None else None
        with self._lock:
            if snapshots != self._snapshots:
                self._load(session, snapshots)
            if wanted is not None and wanted not in self._accelerators:
                return ()
            found = self._ranked.get(wanted)
            if found is None:
                found = ranked(
                    o
                    for _, offers in self._by_cloud.values()
                    for o in offers
                    if wanted is None or o.accelerator.lower() == wanted
                )
                self._ranked[wanted] = found
            return found

    def _load(self, session: Session, snapshots: tuple[CurrentSnapshot, ...]) -> None:
        """Make ``snapshots`` the cached ones, reading only the clouds whose snapshot changed."""
        kept = {
            s.cloud: self._by_cloud[s.cloud]
            for s in snapshots
            if s.cloud in self._by_cloud and self._by_cloud[s.cloud][0] == s
        }
        fresh = snapshot_offers(session, (s for s in snapshots if s.cloud not in kept))
        by_cloud = {**kept, **{s.cloud: (s, tuple(offers)) for s, offers in fresh.items()}}
        self._by_cloud = by_cloud
        self._snapshots = snapshots
        self._accelerators = frozenset(
            o.accelerator.lower() for _, offers in by_cloud.values() for o in offers
        )
        self._ranked = {}


def find_offers(
    session: Session,
    query: OfferQuery,
    now: datetime,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    cache: CurrentOfferCache | None = None,
) -> list[OfferQuote]:
    """The cheapest current offers answering ``query``, cheapest per GPU-hour first.

    A price older than ``stale_after`` is marked stale (a failed refresh keeps the last good one).
    With a ``cache`` (a long-lived process: the API) the decoded, ranked offers are reused while no
    cloud's current snapshot changes; without one (the CLI, once) only the query's rows are read."""
    if cache is None:
        chosen = cheapest(current_offers(session, accelerator=query.gpu), query)
    else:
        chosen = cheapest_ranked(cache.ranked_offers(session, query.gpu), query)
    quotes = []
    for o in chosen:
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
