"""The nightly report job: yesterday's cost report for every organization, once, however many
replicas run it (does I/O).

Once per day per organization is kept by two things: a transaction-scoped advisory lock per
(organization, day) while a report is built, and the ``(org_id, day)`` primary key of
``cost_report``, checked under that lock. A replica that finds the lock taken or the report
already stored moves on. The report is committed before it is delivered (mail and webhook calls
never run inside a transaction), and only the replica that built it delivers it: it stores the
report with each channel claimed by itself (``resume.py``), so that if it dies before the outcome is
written, the resume job sends what is still pending once the claim's lease has run out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from broker.db.engine import Database
from broker.db.fleet import Organization
from broker.db.locks import try_xact_lock
from broker.reports.build import ReportOptions, StoredReport, build_and_store, report_exists
from broker.reports.delivery import DeliveryConfig, pending
from broker.reports.model import day_window
from broker.reports.resume import send_claimed
from broker.settings import Settings

_log = logging.getLogger(__name__)

LOCK_PREFIX = "gpubroker:report"


@dataclass
class ReportRun:
    """What one run of the job did."""

    day: date
    built: dict[str, StoredReport] = field(default_factory=dict)  # org id -> the report it stored
    skipped: list[str] = field(default_factory=list)  # already stored, or another replica is on it
    failed: dict[str, str] = field(default_factory=dict)  # org id -> why
    delivery: dict[str, dict[str, Any]] = field(default_factory=dict)  # org id -> per-channel outcome


def report_time(settings: Settings) -> time:
    hour, minute = settings.report_time.split(":")
    return time(int(hour), int(minute))


def latest_due_day(now: datetime, settings: Settings) -> date:
    """The newest day whose report is due at ``now``: yesterday (local) once ``report_time`` has
    passed today, else the day before. A scheduler that starts late catches up with it."""
    local = now.astimezone(ZoneInfo(settings.report_timezone))
    yesterday = local.date() - timedelta(days=1)
    return yesterday if local.time() >= report_time(settings) else yesterday - timedelta(days=1)


def run_nightly_reports(
    database: Database,
    now: datetime,
    settings: Settings,
    *,
    day: date | None = None,
    org_ids: Sequence[str] | None = None,
    force: bool = False,
    send: bool = True,
    sleep: Callable[[float], None] | None = None,
    clock: Callable[[], datetime] | None = None,
) -> ReportRun:
    """Build (and send, when delivery is configured) ``day``'s report for every organization that
    existed by the end of that day, or for ``org_ids``; organizations already reported are skipped
    unless ``force``. One organization's failure is logged and recorded, and the rest go on.

    ``now`` is the reports' time (what they count up to, their generated-at); ``clock`` tells the
    time when each delivery is claimed and sent (default: ``now``). A run works through the
    organizations one by one, so the scheduler passes its clock: a claim stamped with the run's
    start would look stale to the resume job sooner than it is."""
    stamp = clock or (lambda: now)
    day = day or latest_due_day(now, settings)
    options = ReportOptions.from_settings(settings)
    config = DeliveryConfig.from_settings(settings)
    if not send:
        config = DeliveryConfig()
    _start, end = day_window(day, options.timezone)
    run = ReportRun(day)
    with database.sessions.begin() as session:
        query = select(Organization.id).order_by(Organization.id)
        if org_ids is None:
            query = query.where(Organization.created_at < end)  # no report for days before it existed
        else:
            query = query.where(Organization.id.in_(org_ids))
        orgs = list(session.scalars(query))
    for org_id in orgs:
        claims = pending(config, stamp())
        try:
            stored = _build_one(database, org_id, day, options, claims, now, force=force)
        except Exception as exc:  # one organization's bad data must not cost the others their report
            _log.exception("cost report for %s on %s failed", org_id, day)
            run.failed[org_id] = f"{type(exc).__name__}: {exc}"
            continue
        if stored is None:
            run.skipped.append(org_id)
            continue
        run.built[org_id] = stored
        _log.info(
            "cost report for %s on %s stored: %s spent", org_id, day, stored.data["totals"]["spend_usd"]
        )
        if claims:
            run.delivery[org_id] = send_claimed(
                database, org_id, day, stored, config, claims, stamp, sleep=sleep
            )
    return run


def _build_one(
    database: Database,
    org_id: str,
    day: date,
    options: ReportOptions,
    claims: dict[str, Any],
    now: datetime,
    *,
    force: bool,
) -> StoredReport | None:
    with database.sessions.begin() as session:
        if not try_xact_lock(session, f"{LOCK_PREFIX}:{org_id}:{day.isoformat()}"):
            return None  # another replica is building it right now
        if not force and report_exists(session, org_id, day):
            return None
        return build_and_store(session, org_id, day, options, now, delivery=claims)


__all__ = ["LOCK_PREFIX", "ReportRun", "latest_due_day", "report_time", "run_nightly_reports"]
