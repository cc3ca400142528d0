"""Price refresh from a live provider: snapshots with availability; failures keep the last good prices."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.core.errors import Transient
from broker.core.types import Availability
from broker.db.engine import Database
from broker.db.prices import current_offers
from broker.jobs.price_refresh import LOCK_NAMESPACE, PriceRefresher
from broker.jobs.scheduler import Scheduler
from broker.services.offers import find_offers
from broker.services.prices import refresh_prices
from broker.settings import Settings
from pricing.core import OfferQuery
from providers.sim import SimFaults, SimulatedCloud

T0 = datetime(2026, 11, 24, 12, tzinfo=UTC)


def test_refresh_stores_offers_with_their_availability(session: Session) -> None:
    cloud = SimulatedCloud(clock=lambda: T0)
    outcome = refresh_prices(session, cloud, T0)
    assert outcome.ok and outcome.offers == 64 and outcome.snapshot_id is not None
    stored = [o for o in current_offers(session, accelerator="H100") if o.cloud == "sim"]
    assert len(stored) == 64
    assert {o.availability for o in stored} <= set(Availability) and Availability.UNKNOWN not in {
        o.availability for o in stored
    }
    assert {o.observed_at for o in stored} == {T0}


def test_a_failed_refresh_keeps_the_last_good_prices_and_they_go_stale(session: Session) -> None:
    cloud = SimulatedCloud(clock=lambda: T0)
    refresh_prices(session, cloud, T0)
    cloud.faults = SimFaults(outage=True)
    later = T0 + timedelta(hours=3)
    outcome = refresh_prices(session, cloud, later)
    assert not outcome.ok and "outage" in (outcome.error or "") and outcome.last_good_at == T0
    quotes = [q for q in find_offers(session, OfferQuery(gpu="H100"), later) if q.offer.cloud == "sim"]
    assert quotes and all(q.stale and q.price_age_seconds == 3 * 3600 for q in quotes)


def test_the_refresher_skips_a_provider_another_process_is_refreshing(database: Database) -> None:
    cloud = SimulatedCloud(clock=lambda: T0)
    refresher = PriceRefresher(database, [cloud], clock=lambda: T0)
    with database.engine.connect() as other:
        held = other.execute(
            select(func.pg_try_advisory_lock(func.hashtext(LOCK_NAMESPACE + "sim")))
        ).scalar()
        assert held
        assert refresher.refresh_all() == []  # skipped: the lock is taken
        other.execute(select(func.pg_advisory_unlock(func.hashtext(LOCK_NAMESPACE + "sim"))))
    outcomes = refresher.refresh_all()
    assert [o.provider for o in outcomes] == ["sim"] and outcomes[0].ok
    assert refresher.last["sim"].offers == 64


def test_the_refresher_survives_provider_errors(database: Database) -> None:
    cloud = SimulatedCloud(clock=lambda: T0)
    cloud.fail_next("list_offers", Transient("boom", code="500"))
    refresher = PriceRefresher(database, [cloud], clock=lambda: T0)
    [outcome] = refresher.refresh_all()
    assert not outcome.ok and outcome.last_good_at is None


def test_the_scheduler_runs_the_first_price_round_at_once(database: Database) -> None:
    cloud = SimulatedCloud(clock=lambda: T0)
    refresher = PriceRefresher(database, [cloud], clock=lambda: T0)
    hour = 3600.0
    settings = Settings(
        price_refresh_seconds=3600,
        place_interval_seconds=hour,
        execute_interval_seconds=hour,
        reconcile_interval_seconds=hour,
        migrate_interval_seconds=hour,
        rollup_interval_seconds=hour,
    )
    scheduler = Scheduler(database, [cloud], settings, clock=lambda: T0, refresher=refresher)
    scheduler.start()
    deadline = time.monotonic() + 10
    while "sim" not in refresher.last and time.monotonic() < deadline:
        time.sleep(0.05)
    scheduler.stop()
    assert refresher.last["sim"].ok and refresher.last["sim"].offers == 64
    assert cloud.calls["list_offers"] == 1  # one round, not waiting an hour for the first
