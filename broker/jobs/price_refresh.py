"""The price-refresh job: every interval, store fresh offers from each live provider (does I/O).

Several gpubroker processes may run it; a transaction-scoped advisory lock per provider makes
sure only one refreshes a provider at a time (the others skip that round). A failed fetch keeps
the last good prices (see ``broker.services.prices``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from sqlalchemy import func, select

from broker.clock import Clock, utc_now
from broker.core.ports import Provider
from broker.db.engine import Database
from broker.services.prices import RefreshOutcome, refresh_prices

_log = logging.getLogger(__name__)
LOCK_NAMESPACE = "gpubroker:price-refresh:"


class PriceRefresher:
    """Refreshes prices now (:meth:`refresh_all`), or on a thread (:meth:`start`) at once and then
    every ``interval`` seconds."""

    def __init__(
        self, database: Database, providers: Sequence[Provider], interval: float, clock: Clock = utc_now
    ) -> None:
        self.database = database
        self.providers = list(providers)
        self.interval = interval
        self.clock = clock
        self.last: dict[str, RefreshOutcome] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh_all(self) -> list[RefreshOutcome]:
        outcomes = []
        for provider in self.providers:
            with self.database.sessions.begin() as session:
                locked = session.scalar(
                    select(func.pg_try_advisory_xact_lock(func.hashtext(LOCK_NAMESPACE + provider.name)))
                )
                if not locked:
                    _log.info("price refresh of %s skipped: another process holds it", provider.name)
                    continue
                outcome = refresh_prices(session, provider, self.clock())
            self.last[provider.name] = outcome
            outcomes.append(outcome)
        return outcomes

    def _run(self) -> None:
        # The first round runs at once, off the start-up path: stored prices serve meanwhile, and a
        # slow or failing provider API cannot hold the server back from answering.
        while True:
            try:
                for outcome in self.refresh_all():
                    if outcome.ok:
                        _log.info("prices from %s: %d offers", outcome.provider, outcome.offers)
            except Exception:  # a job must outlive one bad round (a database blip, say)
                _log.exception("price refresh round failed")
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="price-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
