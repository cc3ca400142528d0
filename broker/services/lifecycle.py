"""Workload state changes as compare-and-set plus an event row, and scheduler wake-ups (does I/O).

Every transition goes through :func:`transition`: ``UPDATE workload SET state = :to WHERE id = :id
AND state = :from``. When another replica changed the row first, nothing is updated and the caller
learns it lost the race (False) instead of overwriting a newer state. The event row is written in
the same transaction, so the audit trail and the state never disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, text, update
from sqlalchemy.orm import Session

from broker.core.lifecycle import WorkloadState, check_transition
from broker.db.fleet import WorkloadEvent, WorkloadRow

WAKE_CHANNEL = "gpubroker_wake"
# Built once: wake() runs on every submission, and building the expression cost more than sending it.
_NOTIFY = text("SELECT pg_notify(:channel, :topic)")


class Topic:
    """What a wake-up is about: the scheduler runs the matching job at once."""

    PLACE = "place"
    EXECUTE = "execute"
    MIGRATE = "migrate"


def wake(session: Session, topic: str) -> None:
    """Tell every scheduler listening on this database to run ``topic``'s job now.

    ``pg_notify`` is transactional: the notice goes out when (and only if) the caller commits.
    """
    session.execute(_NOTIFY, {"channel": WAKE_CHANNEL, "topic": topic})


def record_event(
    session: Session,
    workload_id: str,
    org_id: str,
    at: datetime,
    kind: str,
    message: str = "",
    *,
    from_state: WorkloadState | None = None,
    to_state: WorkloadState | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    session.execute(
        insert(WorkloadEvent).values(
            workload_id=workload_id,
            org_id=org_id,
            at=at,
            kind=kind,
            from_state=from_state.value if from_state else None,
            to_state=to_state.value if to_state else None,
            message=message,
            data=data or {},
        )
    )


def transition(
    session: Session,
    workload: WorkloadRow | tuple[str, str],
    current: WorkloadState,
    target: WorkloadState,
    now: datetime,
    message: str = "",
    *,
    data: dict[str, Any] | None = None,
    **changes: Any,
) -> bool:
    """Move a workload from ``current`` to ``target`` if it is still ``current``; write the event.

    ``workload`` is the row or ``(workload_id, org_id)``. ``changes`` are other columns to set in
    the same UPDATE. Raises :class:`IllegalTransition` for a pair the table does not allow;
    returns False when the stored state was no longer ``current`` (someone else moved it).
    """
    check_transition(current, target)
    workload_id, org_id = (workload.id, workload.org_id) if isinstance(workload, WorkloadRow) else workload
    result = session.execute(
        update(WorkloadRow)
        .where(WorkloadRow.id == workload_id, WorkloadRow.state == current.value)
        .values(state=target.value, state_changed_at=now, updated_at=now, **changes)
        .returning(WorkloadRow.id)
    ).first()
    if result is None:
        return False
    record_event(
        session,
        workload_id,
        org_id,
        now,
        "transition",
        message,
        from_state=current,
        to_state=target,
        data=data,
    )
    if isinstance(workload, WorkloadRow):
        workload.state = target.value
    return True


__all__ = ["WAKE_CHANNEL", "Topic", "record_event", "transition", "wake"]
