"""The scheduler: APScheduler jobs that place, execute, reconcile, migrate, account, refresh
prices, and build and deliver the nightly cost reports (does I/O).

The scheduler only triggers; all state lives in PostgreSQL, and every job is safe to run on
several replicas at once (``SKIP LOCKED`` claims or an advisory lock). Jobs run on a timer and are
also woken at once:

* by ``NOTIFY gpubroker_wake`` (sent in the transaction that created the work: a workload
  submitted, a plan written, a preemption notice posted through the API on any replica, the
  preemptions and losses a reconcile marked, which the migrate job decides after it commits);
* by the simulated cloud's event stream (a preemption notice or a preemption in the sim), which
  is handed straight to the workload-migration service, so a notice reaches the migration engine
  in well under a second instead of waiting for the next reconcile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from broker.clock import Clock, utc_now
from broker.core.ports import Provider
from broker.db.engine import Database
from broker.db.locks import try_xact_lock
from broker.jobs.price_refresh import PriceRefresher
from broker.reports.delivery import DeliveryConfig
from broker.reports.job import ReportRun, report_time, run_nightly_reports
from broker.reports.resume import RESUME_INTERVAL, ResumeRun, resume_deliveries
from broker.services.accounting import rollup
from broker.services.executor import Executor
from broker.services.lifecycle import WAKE_CHANNEL, Topic
from broker.services.migration_queue import handle_all_losses
from broker.services.migrations import (
    InstanceEvent,
    MigrationContext,
    handle_instance_event,
    rebalance,
)
from broker.services.placement import place_pending
from broker.services.reconciler import ReconcileReport, reconcile_provider
from broker.settings import Settings

_log = logging.getLogger(__name__)

LOCK_REBALANCE = "gpubroker:rebalance"
LOCK_ROLLUP = "gpubroker:rollup"


@dataclass
class JobStats:
    """How often each job ran and what it last did (for /metrics and the CLI)."""

    runs: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)


class Scheduler:
    """The jobs, callable one at a time (``run_*``: tests and benchmarks) or on timers (``start``)."""

    def __init__(
        self,
        database: Database,
        providers: Sequence[Provider],
        settings: Settings,
        *,
        clock: Clock = utc_now,
        refresher: PriceRefresher | None = None,
    ) -> None:
        self.database = database
        self.providers = {p.name: p for p in providers}
        self.settings = settings
        self.clock = clock
        self.refresher = refresher
        self.stale_after = timedelta(seconds=settings.price_stale_after_seconds)
        self.executor = Executor(
            database,
            self.providers,
            clock=clock,
            launch_rate_per_second=settings.launch_rate_per_second,
            launch_burst=settings.launch_burst,
            lease=timedelta(seconds=settings.command_lease_seconds),
        )
        self.stats = JobStats()
        self._scheduler: BackgroundScheduler | None = None
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._woken: set[str] = set()  # jobs woken since they last started (see _guarded)

    # --- the jobs -------------------------------------------------------------------------------
    def run_place(self) -> Any:
        with self.database.sessions.begin() as session:
            return place_pending(session, list(self.providers), self.clock(), stale_after=self.stale_after)

    def run_execute(self) -> int:
        total = 0
        while not self._stop.is_set():
            claimed = self.executor.run_once()
            total += claimed
            if claimed == 0:
                break
        return total

    def run_reconcile(self) -> list[ReconcileReport]:
        reports = []
        for provider in self.providers.values():
            reports.append(reconcile_provider(self.database, provider, self.clock, list(self.providers)))
        return reports

    def run_losses(self) -> int:
        """Decide for the workloads whose instances the reconciler found preempted or lost (queued)."""
        ctx = MigrationContext(list(self.providers), self.clock(), stale_after=self.stale_after)
        handled = handle_all_losses(self.database, ctx)
        if handled:
            self.wake(Topic.EXECUTE)
        return handled

    def run_rebalance(self) -> int:
        self.run_losses()  # the migrate job's first duty; the reconciler wakes it with a NOTIFY
        with self.database.sessions.begin() as session:
            if not try_xact_lock(session, LOCK_REBALANCE):
                return 0
            ctx = MigrationContext(list(self.providers), self.clock(), stale_after=self.stale_after)
            return rebalance(session, ctx)

    def run_rollup(self) -> int:
        with self.database.sessions.begin() as session:
            if not try_xact_lock(session, LOCK_ROLLUP):
                return 0
            return rollup(session, self.clock())

    def run_prices(self) -> Any:
        if self.refresher is None:
            return []
        outcomes = self.refresher.refresh_all()
        for outcome in outcomes:
            if outcome.ok:
                _log.info("prices from %s: %d offers", outcome.provider, outcome.offers)
        return outcomes

    def run_reports(self) -> ReportRun:
        """Yesterday's cost report for every organization not yet reported (docs/reports.md)."""
        return run_nightly_reports(self.database, self.clock(), self.settings, clock=self.clock)

    def run_report_deliveries(self) -> ResumeRun:
        """Send the report deliveries a dead replica left pending (``broker/reports/resume.py``)."""
        return resume_deliveries(self.database, DeliveryConfig.from_settings(self.settings), self.clock)

    def on_instance_event(self, event: InstanceEvent) -> None:
        """A provider told us about one of our instances: hand it to the migration service now."""
        with self.database.sessions.begin() as session:
            ctx = MigrationContext(list(self.providers), self.clock(), stale_after=self.stale_after)
            handle_instance_event(session, event, ctx)
        self.wake(Topic.EXECUTE)

    # --- timers and wake-ups -------------------------------------------------------------------
    def _guarded(self, name: str, job: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            # APScheduler drops a wake-up that lands while the job runs (one instance at a time),
            # so ``wake`` also leaves a mark, and the job runs once more if one came in meanwhile.
            self._woken.discard(name)
            while True:
                try:
                    self.stats.last[name] = job()
                    self.stats.runs[name] = self.stats.runs.get(name, 0) + 1
                except Exception:  # a job must outlive one bad round (a database blip, say)
                    self.stats.errors[name] = self.stats.errors.get(name, 0) + 1
                    _log.exception("scheduler job %s failed", name)
                if name not in self._woken or self._stop.is_set():
                    return
                self._woken.discard(name)

        return run

    def start(self) -> None:
        settings = self.settings
        scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True, "max_instances": 1})
        jobs: list[tuple[str, Callable[[], Any], float]] = [
            (Topic.PLACE, self.run_place, settings.place_interval_seconds),
            (Topic.EXECUTE, self.run_execute, settings.execute_interval_seconds),
            ("reconcile", self.run_reconcile, settings.reconcile_interval_seconds),
            (Topic.MIGRATE, self.run_rebalance, settings.migrate_interval_seconds),
            ("rollup", self.run_rollup, settings.rollup_interval_seconds),
            # Report deliveries whose sender died; a claim's lease, not this interval, sets the pace.
            ("report-delivery", self.run_report_deliveries, RESUME_INTERVAL.total_seconds()),
        ]
        if self.refresher is not None:
            jobs.append(("prices", self.run_prices, float(settings.price_refresh_seconds)))
        for name, job, seconds in jobs:
            scheduler.add_job(
                self._guarded(name, job), "interval", seconds=seconds, id=name, next_run_time=utc_now()
            )
        # Nightly cost reports at report_time in report_timezone, and once at start to catch up on a
        # day missed while no scheduler ran (organizations already reported are skipped).
        at = report_time(settings)
        scheduler.add_job(
            self._guarded("reports", self.run_reports),
            CronTrigger(hour=at.hour, minute=at.minute, timezone=settings.report_timezone),
            id="reports",
            next_run_time=utc_now(),
        )
        scheduler.start()
        self._scheduler = scheduler
        self._listener = threading.Thread(target=self._listen, name="scheduler-listen", daemon=True)
        self._listener.start()
        for provider in self.providers.values():
            self._subscribe(provider)

    def wake(self, topic: str) -> None:
        """Run ``topic``'s job now (a no-op when the timers are not running)."""
        scheduler = self._scheduler
        if scheduler is None:
            return
        job = scheduler.get_job(topic)
        if job is not None:
            self._woken.add(topic)
            job.modify(next_run_time=utc_now())

    def _subscribe(self, provider: Provider) -> None:
        inner = getattr(provider, "inner", provider)
        subscribe = getattr(inner, "subscribe", None)
        if subscribe is None:
            return

        def deliver(event: Any) -> None:
            kind = event.kind
            if kind not in ("preemption-notice", "preempted"):
                return
            reclaim = None
            if kind == "preemption-notice":
                seconds = provider.capabilities.interruption_notice_seconds or 0
                reclaim = event.at + timedelta(seconds=seconds)
            try:
                self.on_instance_event(InstanceEvent(event.instance.instance_id, kind, self.clock(), reclaim))
            except Exception:
                _log.exception("handling %s of %s failed", kind, event.instance.instance_id)

        self._unsubscribe.append(subscribe(deliver))
        start_ticker = getattr(inner, "start_ticker", None)
        if start_ticker is not None:
            start_ticker()
            stop_ticker = inner.stop_ticker
            self._unsubscribe.append(stop_ticker)

    def _listen(self) -> None:
        """LISTEN for wake-ups on the database; reconnect after a failure."""
        url = self.database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {WAKE_CHANNEL}")
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=1.0):
                            self.wake(notice.payload)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                _log.warning("scheduler LISTEN connection lost (%s); reconnecting", exc)
                self._stop.wait(2.0)

    def stop(self) -> None:
        self._stop.set()
        for unsubscribe in self._unsubscribe:
            try:
                unsubscribe()
            except Exception:
                _log.exception("unsubscribing from a provider failed")
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self._listener is not None:
            self._listener.join(timeout=5)


__all__ = ["JobStats", "Scheduler"]
