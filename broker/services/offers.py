"""Offer look-up use-case: the cheapest current offers for a query, with price age (does I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from broker.core.types import Offer
from broker.db.prices import current_offers
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
