"""The price-refresh job: store fresh offers from each live provider (does I/O).

Several gpubroker processes may run it; a transaction-scoped advisory lock per provider makes
sure only one refreshes a provider at a time (the others skip that round). A failed fetch keeps
the last good prices (see ``broker.services.prices``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from broker.clock import Clock, utc_now
from broker.core.ports import Provider
from broker.db.engine import Database
from broker.db.locks import try_xact_lock
from broker.services.prices import RefreshOutcome, refresh_prices

_log = logging.getLogger(__name__)
LOCK_NAMESPACE = "gpubroker:price-refresh:"


class PriceRefresher:
    """Refreshes every provider's prices now (:meth:`refresh_all`); the scheduler runs it on a timer."""

    def __init__(self, database: Database, providers: Sequence[Provider], clock: Clock = utc_now) -> None:
        self.database = database
        self.providers = list(providers)
        self.clock = clock
        self.last: dict[str, RefreshOutcome] = {}

    def refresh_all(self) -> list[RefreshOutcome]:
        outcomes = []
        for provider in self.providers:
            with self.database.sessions.begin() as session:
                if not try_xact_lock(session, LOCK_NAMESPACE + provider.name):
                    _log.info("price refresh of %s skipped: another process holds it", provider.name)
                    continue
                outcome = refresh_prices(session, provider, self.clock())
            self.last[provider.name] = outcome
            outcomes.append(outcome)
        return outcomes
