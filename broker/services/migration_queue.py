"""The migrate job's queue: preemptions and losses recorded in bulk, and undecided preemption
notices, decided outside the transaction that recorded them (does I/O).

The queue is the rows themselves: a RUNNING workload whose serving instance ended (``record_losses``,
called by the reconciler) or has a preemption notice not yet decided (``notices.record_notice``,
called by the API). ``handle_losses`` claims such workloads ``FOR UPDATE SKIP LOCKED`` and asks the
migration engine (through :mod:`broker.services.migrations`), so a crash between recording and
deciding loses nothing and several schedulers share the work.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, not_, or_, select, update
from sqlalchemy.orm import Session

from broker.core.lifecycle import WorkloadState
from broker.db.engine import Database
from broker.db.fleet import InstanceRow, WorkloadEvent, WorkloadRow
from broker.services.lifecycle import Topic, wake
from broker.services.migrations import InstanceEvent, MigrationContext, decide_event, mark_in_history
from broker.services.notices import NOTICE_EVENT, NOTICEABLE_STATES

_ENDED_BY_PROVIDER = ("preempted", "lost")
_LIVE_INSTANCE_STATES = ("requested", "pending", "running", "terminating")


def record_losses(session: Session, losses: Mapping[str, str], at: datetime, now: datetime) -> int:
    """Record many preemptions and losses (instance id → "preempted" | "lost") in a few statements,
    and queue the engine's decisions for the migrate job (``handle_losses``); returns how many
    workloads now wait for one.

    What ``handle_instance_event`` records for one instance, in bulk: the instance ends, its
    workload gets an event and, when the instance was serving, ``lost_at``. The decision itself
    (replacement offers, the engine, a launch plan: ~25 ms a workload) runs in the migrate job,
    outside the caller's transaction: a reconcile of 10,000 instances with 100 preempted would
    otherwise hold its lock for seconds. The queue is the rows themselves (a RUNNING workload with
    a serving instance that ended), so a crash between the two loses nothing; the NOTIFY wakes the
    migrate job on every scheduler at commit."""
    ended: list[Any] = []
    for kind in _ENDED_BY_PROVIDER:
        ids = [instance_id for instance_id, k in losses.items() if k == kind]
        if not ids:
            continue
        ended += session.execute(
            update(InstanceRow)
            .where(InstanceRow.id.in_(ids), InstanceRow.state.in_(_LIVE_INSTANCE_STATES))
            .values(state=kind, ended_at=at, state_reason=kind, updated_at=now)
            .returning(
                InstanceRow.id,
                InstanceRow.workload_id,
                InstanceRow.org_id,
                InstanceRow.provider,
                InstanceRow.zone,
                InstanceRow.region,
                InstanceRow.serving,
                InstanceRow.state,
            )
            .execution_options(synchronize_session=False)
        ).all()
    if not ended:
        return 0
    session.execute(
        insert(WorkloadEvent),
        [
            {
                "workload_id": r.workload_id,
                "org_id": r.org_id,
                "at": now,
                "kind": "preempted",
                "message": f"{r.id} on {r.provider}/{r.zone or r.region}: {r.state}",
                "data": {"instance_id": r.id},
            }
            for r in ended
        ],
    )
    serving = sorted({r.workload_id for r in ended if r.serving})
    if not serving:
        return 0
    session.execute(
        update(WorkloadRow)
        .where(WorkloadRow.id.in_(serving))
        .values(history=WorkloadRow.history.op("||")(func.jsonb_build_object("lost_at", at.isoformat())))
        .execution_options(synchronize_session=False)
    )
    wake(session, Topic.MIGRATE)
    return len(serving)


LOSS_BATCH = 10
_MAX_LOSS_ROUNDS = 1000  # a bound, should a workload ever stay RUNNING after its decision


def handle_all_losses(database: Database, ctx: MigrationContext, batch: int = LOSS_BATCH) -> int:
    """Work the queue ``record_losses`` and ``notices.record_notice`` left (see ``handle_losses``),
    ``batch`` workloads per transaction, until it is empty;
    returns how many were handled. Small batches commit the first plans (and wake the executor)
    after a fraction of a second instead of after the whole queue, and keep each transaction's
    identity map small (every transition's UPDATE is checked against it)."""
    handled = 0
    for _ in range(_MAX_LOSS_ROUNDS):
        with database.sessions.begin() as session:
            done = handle_losses(session, ctx, limit=batch)
        handled += done
        if done < batch:  # each handled workload leaves RUNNING or gets reclaim_at: the queue shrinks
            break
    return handled


def handle_losses(session: Session, ctx: MigrationContext, limit: int = LOSS_BATCH) -> int:
    """The migrate job's queue: for each RUNNING workload whose serving instance ended
    (``record_losses``) or has a preemption notice not yet decided (``notices.record_notice``: the
    node agent's, posted to the API), ask the engine (as ``handle_instance_event`` would have) and
    commit its plan; returns how many were handled. Rows another scheduler holds are skipped (it is
    handling them).

    A notice is decided once: deciding writes ``reclaim_at`` into the workload's history, which
    takes it out of this queue whether the engine moved it (MIGRATING) or kept it where it is (no
    better place: it waits for the preemption, which comes back through ``record_losses``)."""
    ended = select(InstanceRow.workload_id).where(
        InstanceRow.serving.is_(True), InstanceRow.state.in_(_ENDED_BY_PROVIDER)
    )
    noticed = select(InstanceRow.workload_id).where(
        InstanceRow.serving.is_(True),
        InstanceRow.notice_at.is_not(None),
        InstanceRow.state.in_(NOTICEABLE_STATES),
    )
    undecided = and_(WorkloadRow.id.in_(noticed), not_(WorkloadRow.history.has_key("reclaim_at")))
    rows = session.scalars(
        select(WorkloadRow)
        .where(WorkloadRow.state == WorkloadState.RUNNING.value, or_(WorkloadRow.id.in_(ended), undecided))
        .order_by(WorkloadRow.updated_at, WorkloadRow.id)
        .with_for_update(skip_locked=True)
        .limit(limit)
    ).all()
    for row in rows:
        serving = select(InstanceRow).where(InstanceRow.workload_id == row.id, InstanceRow.serving.is_(True))
        instance = session.scalars(
            serving.where(InstanceRow.state.in_(_ENDED_BY_PROVIDER)).order_by(InstanceRow.node_index).limit(1)
        ).first()
        if instance is not None:  # gone already: a notice it may also have had is moot
            event = InstanceEvent(instance.id, instance.state, instance.ended_at or ctx.now)
        else:
            instance = session.scalars(
                serving.where(InstanceRow.notice_at.is_not(None), InstanceRow.state.in_(NOTICEABLE_STATES))
                .order_by(InstanceRow.notice_at, InstanceRow.node_index)
                .limit(1)
            ).one()
            notice_at = instance.notice_at or ctx.now
            event = InstanceEvent(
                instance.id, "preemption-notice", notice_at, _noticed_reclaim_at(session, row.id, instance.id)
            )
            mark_in_history(row, event)
        decide_event(session, row, instance.id, event, ctx)
    return len(rows)


def _noticed_reclaim_at(session: Session, workload_id: str, instance_id: str) -> datetime | None:
    """The reclaim time the latest notice for ``instance_id`` carried (its workload event's data)."""
    data = session.scalar(
        select(WorkloadEvent.data)
        .where(
            WorkloadEvent.workload_id == workload_id,
            WorkloadEvent.kind == NOTICE_EVENT,
            WorkloadEvent.data["instance_id"].astext == instance_id,
        )
        .order_by(WorkloadEvent.id.desc())
        .limit(1)
    )
    value = (data or {}).get("reclaim_at")
    return datetime.fromisoformat(value) if value else None


__all__ = ["LOSS_BATCH", "handle_all_losses", "handle_losses", "record_losses"]
