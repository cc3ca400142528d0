"""Offer look-up use-case: the cheapest current offers for a query, with price age (does I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


def find_offers(session: Session, query: OfferQuery, now: datetime) -> list[OfferQuote]:
    """The cheapest current offers answering ``query``, cheapest per GPU-hour first."""
    offers = current_offers(session, accelerator=query.gpu)
    return [
        OfferQuote(
            offer=o,
            price_per_gpu_hour=o.price_per_gpu_hour,
            price_age_seconds=int(price_age(o.observed_at, now).total_seconds()),
        )
        for o in cheapest(offers, query)
    ]
