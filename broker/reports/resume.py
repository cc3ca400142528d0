"""Crash-safe report delivery: claims with a lease on each channel of ``cost_report.delivery``, and
the resumption of deliveries a dead replica left pending (does I/O).

A channel's record while someone sends it is ``{"status": "pending", "claimed_at": ..., "round": n}``.
The replica that builds a report stores it claimed (round 1) in the transaction that stores the
report. A claim older than :data:`LEASE` means its sender died (the lease is far longer than the
longest retry sequence :func:`~broker.reports.delivery.deliver` can take), and
:func:`resume_deliveries` claims the channel again: it locks the row ``FOR UPDATE SKIP LOCKED``
only to stamp a new claim (round n + 1) and commits, sends outside any transaction, then records
the outcome with a compare-and-set: only over the very claim it made. So several replicas may run
it at once and each stuck channel is sent by one of them; a channel already ``sent`` or ``failed``
is never touched. A channel whose :data:`MAX_ROUNDS` senders all died, a channel no longer
configured, and a stored report that cannot be read end as ``failed``, with an error logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, cast, func, or_, select
from sqlalchemy.orm import Session

from broker.db.engine import Database
from broker.db.fleet import CostReport
from broker.reports.build import StoredReport
from broker.reports.delivery import CHANNELS, DeliveryConfig, claim, deliver
from broker.reports.export import from_json

_log = logging.getLogger(__name__)

LEASE = timedelta(minutes=15)  # > 3 x DeliveryConfig().longest_round() (4.5 min for both channels)
MAX_ROUNDS = 3  # the builder's round and two resumptions
RESUME_INTERVAL = timedelta(minutes=5)  # how often the scheduler looks for stuck deliveries
RESUME_BATCH = 50  # reports one run resumes at most; the next run takes the rest


@dataclass
class ResumeRun:
    """What one :func:`resume_deliveries` run did."""

    sent: dict[tuple[str, date], dict[str, Any]] = field(default_factory=dict)  # (org, day) -> outcomes
    gave_up: list[tuple[str, date, str]] = field(default_factory=list)  # (org, day, channel)


@dataclass(frozen=True, slots=True)
class _Claimed:
    org_id: str
    day: date
    stored: StoredReport | None  # None: nothing to send (every stale channel was given up)
    claims: dict[str, dict[str, Any]]  # channel -> the claim record this run stamped


def send_claimed(
    database: Database,
    org_id: str,
    day: date,
    stored: StoredReport,
    config: DeliveryConfig,
    claims: dict[str, dict[str, Any]],
    clock: Callable[[], datetime],
    *,
    sleep: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Send ``stored`` on each channel in ``claims`` (this sender's claims, already committed), one
    channel at a time, and record each outcome as soon as it is known, so a crash after the
    webhook and before the mail does not post the webhook again. No transaction is open while a
    channel sends. Returns the outcomes as recorded (with their ``round``)."""
    outcomes: dict[str, Any] = {}
    for channel, mine in claims.items():
        outcome = deliver(stored, config.only(channel), clock(), sleep=sleep)[channel]
        outcomes[channel] = {**outcome, "round": mine["round"]}
        record_outcome(database, org_id, day, channel, mine, outcomes[channel])
    return outcomes


def record_outcome(
    database: Database,
    org_id: str,
    day: date,
    channel: str,
    mine: dict[str, Any],
    outcome: dict[str, Any],
) -> bool:
    """Write ``outcome`` over ``channel``'s record if that still is the claim ``mine`` (compare and
    set under a row lock); False when it is not (another sender claimed it after the lease ran
    out, or the report was rebuilt), and the record is left as it is."""
    with database.sessions.begin() as session:
        row = session.scalars(
            select(CostReport).where(CostReport.org_id == org_id, CostReport.day == day).with_for_update()
        ).first()
        if row is None or row.delivery.get(channel) != mine:
            _log.warning(
                "cost report %s delivery for %s on %s: the claim of round %s was taken over; "
                "its outcome (%s) is not recorded",
                channel,
                org_id,
                day,
                mine.get("round"),
                outcome.get("status"),
            )
            return False
        row.delivery = {**row.delivery, channel: outcome}
    return True


def resume_deliveries(
    database: Database,
    config: DeliveryConfig,
    clock: Callable[[], datetime],
    *,
    lease: timedelta = LEASE,
    max_rounds: int = MAX_ROUNDS,
    limit: int = RESUME_BATCH,
    sleep: Callable[[float], None] | None = None,
) -> ResumeRun:
    """Send the channels whose claim is older than ``lease`` (their sender died), oldest report
    first, at most ``limit`` reports. Never raises for one report's trouble: it is logged and
    recorded as ``failed``. Cheap when nothing is stuck: one query on ``cost_report``."""
    run = ResumeRun()
    for _ in range(limit):
        claimed = _claim_next(database, config, clock(), lease, max_rounds, run)
        if claimed is None:
            break
        if claimed.stored is None or not claimed.claims:
            continue
        _log.info(
            "resuming cost report delivery for %s on %s: %s",
            claimed.org_id,
            claimed.day,
            ", ".join(f"{c} (round {m['round']})" for c, m in claimed.claims.items()),
        )
        run.sent[(claimed.org_id, claimed.day)] = send_claimed(
            database,
            claimed.org_id,
            claimed.day,
            claimed.stored,
            config,
            claimed.claims,
            clock,
            sleep=sleep,
        )
    return run


def _stale(now: datetime, lease: timedelta) -> Any:
    """SQL: some channel is pending under a claim older than ``lease`` (a record from before claims
    were stamped counts as claimed when the report was generated)."""
    cutoff = now - lease
    conditions = []
    for channel in CHANNELS:
        record = CostReport.delivery[channel]
        claimed_at = cast(record["claimed_at"].astext, DateTime(timezone=True))
        conditions.append(
            (record["status"].astext == "pending")
            & (func.coalesce(claimed_at, CostReport.generated_at) < cutoff)
        )
    return or_(*conditions)


def _claim_next(
    database: Database,
    config: DeliveryConfig,
    now: datetime,
    lease: timedelta,
    max_rounds: int,
    run: ResumeRun,
) -> _Claimed | None:
    """Claim the stale channels of the oldest report with any (rows another replica is claiming
    are skipped) and commit; None when there is none."""
    with database.sessions.begin() as session:
        row = session.scalars(
            select(CostReport)
            .where(_stale(now, lease))
            .order_by(CostReport.day, CostReport.org_id)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if row is None:
            return None
        return _claim_row(session, row, config, now, lease, max_rounds, run)


def _claim_row(
    session: Session,
    row: CostReport,
    config: DeliveryConfig,
    now: datetime,
    lease: timedelta,
    max_rounds: int,
    run: ResumeRun,
) -> _Claimed:
    delivery = dict(row.delivery)
    stale = {
        channel: record
        for channel, record in delivery.items()
        if channel in CHANNELS
        and record.get("status") == "pending"
        and _claimed_at(record, row.generated_at) < now - lease
    }
    stored: StoredReport | None = None
    unreadable: str | None = None
    try:
        stored = StoredReport(from_json(row.data), row.data, row.html, row.csv, row.generated_at)
    except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
        unreadable = f"the stored report cannot be read ({type(exc).__name__}: {exc})"[:300]
    claims: dict[str, dict[str, Any]] = {}
    for channel, record in stale.items():
        rounds = int(record.get("round", 1))
        error = None
        if rounds >= max_rounds:
            error = f"no outcome after {rounds} delivery round(s): each sender stopped before it finished"
        elif channel not in config.channels():
            error = f"{channel} delivery is no longer configured"
        elif unreadable is not None:
            error = unreadable
        if error is not None:
            _log.error("cost report %s delivery for %s on %s failed: %s", channel, row.org_id, row.day, error)
            delivery[channel] = {"status": "failed", "round": rounds, "error": error, "at": now.isoformat()}
            run.gave_up.append((row.org_id, row.day, channel))
            continue
        claims[channel] = claim(now, rounds + 1)
        delivery[channel] = claims[channel]
    row.delivery = delivery
    session.flush()
    return _Claimed(row.org_id, row.day, stored if claims else None, claims)


def _claimed_at(record: dict[str, Any], generated_at: datetime) -> datetime:
    at = record.get("claimed_at")
    return datetime.fromisoformat(at) if isinstance(at, str) else generated_at


__all__ = [
    "LEASE",
    "MAX_ROUNDS",
    "RESUME_BATCH",
    "RESUME_INTERVAL",
    "ResumeRun",
    "record_outcome",
    "resume_deliveries",
    "send_claimed",
]
