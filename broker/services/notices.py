"""Spot preemption notices relayed by the node agent from inside a VM: checked, recorded on the
instance and its workload, and queued for the migrate job with a NOTIFY (does I/O).

Recording is all the request does: ``instance.notice_at`` and a ``preemption-notice`` workload
event (whose data carries ``reclaim_at``), in the caller's transaction, plus ``NOTIFY`` so every
scheduler's migrate job runs as soon as it commits. The engine's decision (replacement offers, a
launch plan: tens of milliseconds a workload) runs in that job (``migration_queue.handle_losses``), not
in the request; the queue is the rows themselves, so a crash between the two loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.db.fleet import InstanceRow
from broker.services.instances import InstanceNotFound
from broker.services.lifecycle import Topic, record_event, wake

NOTICE_EVENT = "preemption-notice"
MAX_AHEAD = timedelta(minutes=5)  # the agent's clock may run a little ahead of ours
MAX_AGE = timedelta(hours=1)  # an older notice is history: the reconciler has seen the instance go
MAX_WARNING = timedelta(hours=1)  # clouds give 30 s (GCP, Azure) to 2 min (AWS); an hour is not a notice
# States in which a notice still matters: the instance exists (or is about to) and has not ended.
NOTICEABLE_STATES = ("requested", "pending", "running")


class InvalidNotice(ValueError):
    """A notice whose times make no sense against the server's clock; ``field`` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class NoticeOutcome:
    """What became of a notice: ``recorded`` is False for a repeat or an instance already gone."""

    instance_id: str
    workload_id: str
    recorded: bool
    detail: str
    notice_at: datetime | None
    reclaim_at: datetime | None


def check_notice_times(at: datetime, reclaim_at: datetime | None, now: datetime) -> None:
    """Raise :class:`InvalidNotice` unless ``at`` is near ``now`` and ``reclaim_at`` near ``at``."""
    if at > now + MAX_AHEAD:
        raise InvalidNotice("at", f"is more than {_minutes(MAX_AHEAD)} ahead of the server's clock")
    if at < now - MAX_AGE:
        raise InvalidNotice("at", f"is more than {_minutes(MAX_AGE)} old")
    if reclaim_at is None:
        return
    # A reclaim time a little before ``at`` is allowed: the agent may have read the notice late.
    if reclaim_at < at - MAX_AHEAD:
        raise InvalidNotice("reclaim_at", f"is more than {_minutes(MAX_AHEAD)} before at")
    if reclaim_at > at + MAX_WARNING:
        raise InvalidNotice("reclaim_at", f"is more than {_minutes(MAX_WARNING)} after at")


def record_notice(
    session: Session,
    org_id: str,
    instance_id: str,
    at: datetime,
    reclaim_at: datetime | None,
    source: str,
    now: datetime,
) -> NoticeOutcome:
    """Record that the cloud will reclaim ``instance_id`` (``reclaim_at``; None: any moment) and wake
    the migrate job. Idempotent: a second notice for the instance changes nothing.

    Raises :class:`InstanceNotFound` for an instance that is not ``org_id``'s (or does not exist) and
    :class:`InvalidNotice` for times out of bounds."""
    check_notice_times(at, reclaim_at, now)
    instance = session.scalars(
        select(InstanceRow)
        .where(InstanceRow.id == instance_id, InstanceRow.org_id == org_id)
        .with_for_update()
    ).one_or_none()
    if instance is None:
        raise InstanceNotFound(instance_id)
    if instance.notice_at is not None:
        seen = instance.notice_at.isoformat()
        return NoticeOutcome(
            instance.id,
            instance.workload_id,
            False,
            f"already recorded: a preemption notice for {instance.id} was seen at {seen}",
            instance.notice_at,
            None,
        )
    if instance.state not in NOTICEABLE_STATES:
        return NoticeOutcome(
            instance.id,
            instance.workload_id,
            False,
            f"{instance.id} is already {instance.state}: nothing left to move off it",
            None,
            None,
        )
    instance.notice_at = at
    instance.state_reason = f"preemption notice ({source})"
    instance.updated_at = now
    record_event(
        session,
        instance.workload_id,
        org_id,
        now,
        NOTICE_EVENT,
        f"{instance.id} on {instance.provider}/{instance.zone or instance.region}: preemption notice "
        f"from the {source} metadata service"
        + (f", reclaim at {reclaim_at.isoformat()}" if reclaim_at else ""),
        data={
            "instance_id": instance.id,
            "source": source,
            "at": at.isoformat(),
            "reclaim_at": reclaim_at.isoformat() if reclaim_at else None,
        },
    )
    if instance.serving:
        # The migrate job picks the workload up (migration_queue.handle_losses); NOTIFY goes at commit.
        wake(session, Topic.MIGRATE)
    return NoticeOutcome(
        instance.id,
        instance.workload_id,
        True,
        "recorded: the migration engine decides at once"
        if instance.serving
        else "recorded: the instance is not serving its workload, so nothing moves",
        at,
        reclaim_at,
    )


def _minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes} minutes" if minutes < 60 else f"{minutes // 60} hour{'s' if minutes >= 120 else ''}"


__all__ = [
    "MAX_AGE",
    "MAX_AHEAD",
    "MAX_WARNING",
    "NOTICEABLE_STATES",
    "NOTICE_EVENT",
    "InvalidNotice",
    "NoticeOutcome",
    "check_notice_times",
    "record_notice",
]
