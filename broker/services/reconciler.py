"""The reconciler: compares each provider's inventory of our instances with the database and acts
on the difference (does I/O).

The diff itself is pure (``broker.core.reconcile``); this module loads our rows for one provider
in one query, applies the steps in bulk, hands notices to the workload-migration service, marks
preemptions and losses in bulk and queues their migration decisions for the migrate job (outside
this transaction), and terminates orphans — instances the provider has, tagged as ours, that
nobody wants. One reconciler per provider at a time (a transaction-scoped advisory lock).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from broker.core.errors import ProviderError
from broker.core.lifecycle import TERMINAL
from broker.core.ports import Instance, InstanceState, Provider
from broker.core.reconcile import LIVE_ROW_STATES, Action, Known, Step, diff
from broker.db.engine import Database
from broker.db.fleet import CommandRow, InstanceRow, WorkloadRow
from broker.db.locks import try_xact_lock
from broker.services.migration_queue import record_losses
from broker.services.migrations import (
    InstanceEvent,
    MigrationContext,
    handle_instance_event,
)
from broker.services.workloads import enqueue_terminate

_log = logging.getLogger(__name__)

LOCK_NAMESPACE = "gpubroker:reconcile:"
DEFAULT_GRACE = timedelta(minutes=2)
_FINAL_WORKLOAD_STATES = tuple(s.value for s in TERMINAL)


@dataclass
class ReconcileReport:
    provider: str
    listed: int = 0
    known: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    orphans_terminated: list[str] = field(default_factory=list)
    skipped: str | None = None  # why nothing was done (lock held, provider error)
    seconds_in_database: float = 0.0


def load_known(session: Session, provider: str) -> dict[str, Known]:
    """Our live rows on ``provider``, with whether their launch is in flight and their workload final."""
    in_flight = (
        select(CommandRow.id)
        .where(
            CommandRow.idempotency_key == InstanceRow.id,
            CommandRow.kind == "launch",
            CommandRow.state.in_(("pending", "running")),
        )
        .exists()
    )
    rows = session.execute(
        select(
            InstanceRow.id,
            InstanceRow.state,
            InstanceRow.updated_at,
            InstanceRow.notice_at,
            in_flight.label("in_flight"),
            WorkloadRow.state.in_(_FINAL_WORKLOAD_STATES).label("final"),
        )
        .join(WorkloadRow, WorkloadRow.id == InstanceRow.workload_id)
        .where(InstanceRow.provider == provider, InstanceRow.state.in_(tuple(LIVE_ROW_STATES)))
    )
    return {
        r.id: Known(r.id, r.state, r.updated_at, r.notice_at, bool(r.in_flight), bool(r.final)) for r in rows
    }


def _observed_values(observed: Instance, now: datetime) -> dict[str, object]:
    return {
        "state": "running" if observed.state is InstanceState.RUNNING else "pending",
        "provider_instance_id": observed.provider_instance_id,
        "launched_at": observed.launched_at or now,
        "updated_at": now,
    }


def apply_steps(
    session: Session,
    provider: str,
    steps: list[Step],
    now: datetime,
    ctx: MigrationContext,
    notice_seconds: int = 30,
) -> list[str]:
    """Apply ``steps`` in the caller's transaction; returns rowless orphans to terminate at the provider."""
    refresh = [
        {"id": s.instance_id, **_observed_values(s.observed, now)}
        for s in steps
        if s.action in (Action.ADOPT, Action.REFRESH) and s.observed is not None
    ]
    if refresh:
        session.execute(update(InstanceRow), refresh)
    for action, state in ((Action.TERMINATED, "terminated"), (Action.FAILED, "failed")):
        ids = [s.instance_id for s in steps if s.action is action]
        if ids:
            session.execute(
                update(InstanceRow)
                .where(InstanceRow.id.in_(ids), InstanceRow.state.in_(tuple(LIVE_ROW_STATES)))
                .values(state=state, serving=False, ended_at=now, updated_at=now, state_reason="reconciled")
                .execution_options(synchronize_session=False)
            )
    # Preemptions and losses: marked in bulk here, decided by the migrate job after this commits.
    losses = {
        s.instance_id: "preempted" if s.action is Action.PREEMPTED else "lost"
        for s in steps
        if s.action in (Action.PREEMPTED, Action.LOST)
    }
    if losses:
        record_losses(session, losses, now, now)
    rowless: list[str] = []
    for step in steps:
        if step.action is Action.TERMINATE_ORPHAN:
            row = session.get(InstanceRow, step.instance_id)
            workload = session.get(WorkloadRow, row.workload_id) if row is not None else None
            if row is not None and workload is not None and row.state in LIVE_ROW_STATES:
                enqueue_terminate(session, workload, row, f"orphan-{row.id}", 0, now)
            else:
                rowless.append(step.instance_id)
        elif step.action is Action.NOTICE:
            # A notice is decided at once: the instance still runs, and the engine has
            # ``notice_seconds`` to move the workload off it. Notices are rare here (the provider's
            # event stream delivers them first, see broker.jobs.scheduler).
            reclaim = now + timedelta(seconds=notice_seconds)
            event = InstanceEvent(step.instance_id, "preemption-notice", now, reclaim)
            handle_instance_event(session, event, ctx)
    return rowless


def reconcile_provider(
    database: Database,
    provider: Provider,
    clock: Callable[[], datetime],
    providers: list[str],
    *,
    grace: timedelta = DEFAULT_GRACE,
    inventory: list[Instance] | None = None,
) -> ReconcileReport:
    """One reconciliation of ``provider``: list (unless ``inventory`` is given), diff, apply, terminate."""
    report = ReconcileReport(provider.name)
    if inventory is None:
        try:
            inventory = provider.list_instances()
        except ProviderError as exc:
            report.skipped = f"listing failed: {exc}"
            _log.warning("reconcile %s: %s", provider.name, report.skipped)
            return report
    report.listed = len(inventory)
    started = time.perf_counter()
    with database.sessions.begin() as session:
        if not try_xact_lock(session, LOCK_NAMESPACE + provider.name):
            report.skipped = "another scheduler is reconciling this provider"
            return report
        now = clock()
        known = load_known(session, provider.name)
        report.known = len(known)
        steps = diff(known, inventory, now, grace)
        for step in steps:
            report.actions[step.action.value] = report.actions.get(step.action.value, 0) + 1
        ctx = MigrationContext(providers=providers, now=now)
        notice = provider.capabilities.interruption_notice_seconds or 0
        rowless = apply_steps(session, provider.name, steps, now, ctx, notice)
    report.seconds_in_database = time.perf_counter() - started
    regions = {i.instance_id: i.region for i in inventory}
    for instance_id in rowless:
        try:
            provider.terminate(instance_id, region=regions[instance_id])
            report.orphans_terminated.append(instance_id)
            _log.warning(
                "reconcile %s: terminated orphan %s (ours, unknown to the database)",
                provider.name,
                instance_id,
            )
        except ProviderError as exc:
            _log.warning("reconcile %s: could not terminate orphan %s: %s", provider.name, instance_id, exc)
    return report


__all__ = ["DEFAULT_GRACE", "ReconcileReport", "apply_steps", "load_known", "reconcile_provider"]
