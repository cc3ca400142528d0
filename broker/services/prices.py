"""Price refresh from live providers: store a snapshot per fetch, keep the last good one on failure (I/O).

A failed fetch stores nothing, so the provider's previous snapshot stays current and its prices
keep aging: the outcome says the prices are stale and how old they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from broker.core.errors import ProviderError
from broker.core.ports import Provider
from broker.db.prices import add_snapshot, last_observed_at

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RefreshOutcome:
    """What one refresh did. On failure ``error`` is set and ``last_good_at`` says how old prices are."""

    provider: str
    offers: int
    snapshot_id: int | None
    error: str | None
    last_good_at: datetime | None

    @property
    def ok(self) -> bool:
        return self.error is None


def refresh_prices(session: Session, provider: Provider, now: datetime) -> RefreshOutcome:
    """Fetch the provider's offers and store them as a new snapshot covering that provider."""
    try:
        offers = provider.list_offers()
    except ProviderError as exc:
        last_good = last_observed_at(session, provider.name)
        _log.warning("price refresh of %s failed, keeping prices from %s: %s", provider.name, last_good, exc)
        return RefreshOutcome(provider.name, 0, None, str(exc), last_good)
    digest = hashlib.sha256(
        json.dumps(
            [
                provider.name,
                now.isoformat(),
                [(o.key, str(o.price_per_hour), o.availability.value) for o in offers],
            ]
        ).encode()
    ).hexdigest()
    record = add_snapshot(
        session,
        offers,
        source=f"provider:{provider.name}",
        source_name=f"{provider.name} API",
        content_sha256=digest,
        observed_at=now,
        clouds={provider.name} | {o.cloud for o in offers},
    )
    return RefreshOutcome(provider.name, len(offers), record.id, None, now)
