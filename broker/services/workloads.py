"""Workload use-cases: submit, read, list, cancel, finish, checkpoint, events (does I/O).

A submitted workload is stored with its request (``spec``) as JSON, state PENDING, and an event;
the scheduler is woken in the same transaction. The spec converts to the core's ``Workload``
(which validates it) with :func:`to_core`; :func:`spec_from_json` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from broker.core.lifecycle import CANCELLABLE, FINISHABLE, WorkloadState
from broker.core.workload import CapacityPreference, GangScope, Workload
from broker.db.fleet import CommandRow, InstanceRow, Project, WorkloadEvent, WorkloadRow
from broker.services.budgets import check_admission
from broker.services.lifecycle import Topic, record_event, transition, wake
from broker.services.paging import InvalidCursor, Page, after_cursor, page_of
from broker.services.tenancy import find_project, new_id
from pricing.normalize import canonical_accelerator

LIVE_INSTANCE_STATES = ("requested", "pending", "running", "terminating")


class WorkloadError(Exception):
    """A workload request that cannot be carried out; ``kind`` is the API's problem type."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What to run: a container (image + command) or just capacity the user brings a stack to."""

    kind: str = "capacity"  # "capacity" | "container"
    image: str | None = None
    command: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """A provisioning request as the API accepted it (already bounds-checked at the edge)."""

    gpu_types: tuple[str, ...]
    gpus_per_node: int
    nodes: int = 1
    name: str | None = None
    project: str = "default"
    gang: GangScope = GangScope.NONE
    capacity: CapacityPreference = CapacityPreference.AUTO
    max_price_per_gpu_hour: Decimal | None = None
    deadline: datetime | None = None
    expected_hours: Decimal = Decimal(1)
    checkpoint_gb: Decimal = Decimal(0)
    restart_overhead_hours: Decimal = Decimal(0)
    checkpoint_interval_hours: Decimal | None = None
    interruptible: bool = True
    allowed_clouds: tuple[str, ...] = ()
    denied_clouds: tuple[str, ...] = ()
    allowed_regions: tuple[str, ...] = ()
    denied_regions: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    run: RunSpec = field(default_factory=RunSpec)

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    def worst_case_usd(self) -> Decimal | None:
        """The most the run may cost at the user's price cap (None without a cap)."""
        if self.max_price_per_gpu_hour is None:
            return None
        return self.max_price_per_gpu_hour * self.total_gpus * self.expected_hours


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def spec_to_json(spec: WorkloadSpec) -> dict[str, Any]:
    return {
        "gpu_types": list(spec.gpu_types),
        "gpus_per_node": spec.gpus_per_node,
        "nodes": spec.nodes,
        "name": spec.name,
        "project": spec.project,
        "gang": spec.gang.value,
        "capacity": spec.capacity.value,
        "max_price_per_gpu_hour": _dec(spec.max_price_per_gpu_hour),
        "deadline": spec.deadline.isoformat() if spec.deadline else None,
        "expected_hours": str(spec.expected_hours),
        "checkpoint_gb": str(spec.checkpoint_gb),
        "restart_overhead_hours": str(spec.restart_overhead_hours),
        "checkpoint_interval_hours": _dec(spec.checkpoint_interval_hours),
        "interruptible": spec.interruptible,
        "allowed_clouds": list(spec.allowed_clouds),
        "denied_clouds": list(spec.denied_clouds),
        "allowed_regions": list(spec.allowed_regions),
        "denied_regions": list(spec.denied_regions),
        "labels": dict(spec.labels),
        "run": {
            "kind": spec.run.kind,
            "image": spec.run.image,
            "command": list(spec.run.command),
            "env": dict(spec.run.env),
        },
    }


def spec_from_json(data: Mapping[str, Any]) -> WorkloadSpec:
    def dec(name: str) -> Decimal | None:
        value = data.get(name)
        return None if value is None else Decimal(value)

    run = data.get("run") or {}
    return WorkloadSpec(
        gpu_types=tuple(data["gpu_types"]),
        gpus_per_node=int(data["gpus_per_node"]),
        nodes=int(data.get("nodes", 1)),
        name=data.get("name"),
        project=data.get("project", "default"),
        gang=GangScope(data.get("gang", "none")),
        capacity=CapacityPreference(data.get("capacity", "auto")),
        max_price_per_gpu_hour=dec("max_price_per_gpu_hour"),
        deadline=datetime.fromisoformat(data["deadline"]) if data.get("deadline") else None,
        expected_hours=dec("expected_hours") or Decimal(1),
        checkpoint_gb=dec("checkpoint_gb") or Decimal(0),
        restart_overhead_hours=dec("restart_overhead_hours") or Decimal(0),
        checkpoint_interval_hours=dec("checkpoint_interval_hours"),
        interruptible=bool(data.get("interruptible", True)),
        allowed_clouds=tuple(data.get("allowed_clouds", ())),
        denied_clouds=tuple(data.get("denied_clouds", ())),
        allowed_regions=tuple(data.get("allowed_regions", ())),
        denied_regions=tuple(data.get("denied_regions", ())),
        labels=dict(data.get("labels", {})),
        run=RunSpec(
            kind=run.get("kind", "capacity"),
            image=run.get("image"),
            command=tuple(run.get("command", ())),
            env=dict(run.get("env", {})),
        ),
    )


def to_core(workload_id: str, project_id: str, spec: WorkloadSpec) -> Workload:
    """The core's view of a request (raises ValueError when the combination is invalid)."""
    return Workload(
        workload_id=workload_id,
        gpu_types=tuple(canonical_accelerator(g) for g in spec.gpu_types),
        gpus_per_node=spec.gpus_per_node,
        expected_hours=spec.expected_hours,
        nodes=spec.nodes,
        gang=spec.gang,
        capacity=spec.capacity,
        max_price_per_gpu_hour=spec.max_price_per_gpu_hour,
        deadline=spec.deadline,
        checkpoint_gb=spec.checkpoint_gb,
        restart_overhead_hours=spec.restart_overhead_hours,
        checkpoint_interval_hours=spec.checkpoint_interval_hours,
        interruptible=spec.interruptible,
        allowed_clouds=frozenset(c.lower() for c in spec.allowed_clouds),
        denied_clouds=frozenset(c.lower() for c in spec.denied_clouds),
        allowed_regions=frozenset(spec.allowed_regions),
        denied_regions=frozenset(spec.denied_regions),
        project=project_id,
    )


def row_to_core(row: WorkloadRow) -> Workload:
    return to_core(row.id, row.project_id, spec_from_json(row.spec))


def submit(session: Session, org_id: str, spec: WorkloadSpec, now: datetime) -> WorkloadRow:
    """Store a new PENDING workload after checking it and its project's limits."""
    project = find_project(session, org_id, spec.project)
    if project is None:
        raise WorkloadError(404, "not-found", f"no project {spec.project!r}")
    if spec.deadline is not None and spec.deadline <= now:
        raise WorkloadError(422, "validation-error", "deadline: must be in the future")
    workload_id = new_id("wl")
    try:
        to_core(workload_id, project.id, spec)
    except ValueError as exc:
        raise WorkloadError(422, "validation-error", str(exc)) from None
    check_admission(session, project, spec.total_gpus, spec.worst_case_usd(), now)
    row = WorkloadRow(
        id=workload_id,
        org_id=org_id,
        project_id=project.id,
        name=spec.name,
        state=WorkloadState.PENDING.value,
        spec=spec_to_json(spec),
        gpus_per_node=spec.gpus_per_node,
        nodes=spec.nodes,
        labels=dict(spec.labels),
        generation=0,
        attempts=0,
        history={},
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
        state_changed_at=now,
    )
    session.add(row)
    session.flush()
    record_event(
        session, workload_id, org_id, now, "submitted", "workload submitted", to_state=WorkloadState.PENDING
    )
    wake(session, Topic.PLACE)
    return row


def get(session: Session, org_id: str, workload_id: str) -> WorkloadRow | None:
    """A workload of ``org_id`` (another organization's is the same as none)."""
    row = session.get(WorkloadRow, workload_id)
    return row if row is not None and row.org_id == org_id else None


def project_names(session: Session, project_ids: Sequence[str]) -> dict[str, str]:
    if not project_ids:
        return {}
    rows = session.execute(select(Project.id, Project.name).where(Project.id.in_(set(project_ids))))
    return {r.id: r.name for r in rows}


def list_workloads(
    session: Session,
    org_id: str,
    *,
    states: Sequence[str] = (),
    project_id: str | None = None,
    label: tuple[str, str] | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> Page[WorkloadRow]:
    """Newest first, ``limit`` per page; ``next_cursor`` continues after the last item."""
    query = select(WorkloadRow).where(WorkloadRow.org_id == org_id)
    if states:
        query = query.where(WorkloadRow.state.in_(states))
    if project_id is not None:
        query = query.where(WorkloadRow.project_id == project_id)
    if label is not None:
        query = query.where(WorkloadRow.labels.contains({label[0]: label[1]}))
    try:
        after = after_cursor(WorkloadRow.created_at, WorkloadRow.id, cursor)
    except InvalidCursor as exc:
        raise WorkloadError(422, "validation-error", f"cursor: {exc}") from None
    if after is not None:
        query = query.where(after)
    rows = session.scalars(
        query.order_by(WorkloadRow.created_at.desc(), WorkloadRow.id.desc()).limit(limit + 1)
    )
    items, next_cursor = page_of(rows.all(), limit, lambda r: (r.created_at, r.id))
    return Page(items, next_cursor)


def live_instances(session: Session, workload_id: str) -> list[InstanceRow]:
    return list(
        session.scalars(
            select(InstanceRow)
            .where(InstanceRow.workload_id == workload_id, InstanceRow.state.in_(LIVE_INSTANCE_STATES))
            .order_by(InstanceRow.generation, InstanceRow.node_index)
        )
    )


def _locked(session: Session, org_id: str, workload_id: str) -> WorkloadRow:
    """The workload of ``org_id``, its row locked for this transaction (404 when there is none)."""
    row = get(session, org_id, workload_id)
    if row is None:
        raise WorkloadError(404, "not-found", f"no workload {workload_id!r}")
    session.refresh(row, with_for_update=True)
    return row


def cancel(session: Session, org_id: str, workload_id: str, now: datetime, reason: str = "") -> WorkloadRow:
    """Cancel a workload: CANCELLED, pending commands dropped, every live instance terminated."""
    row = _locked(session, org_id, workload_id)
    current = WorkloadState(row.state)
    if current not in CANCELLABLE:
        raise WorkloadError(409, "invalid-state", f"the workload is already {current}")
    message = f"cancelled: {reason}" if reason else "cancelled by the user"
    transition(session, row, current, WorkloadState.CANCELLED, now, message)
    stop_everything(session, row, now, "workload cancelled")
    return row


def stop_everything(session: Session, row: WorkloadRow, now: datetime, why: str) -> int:
    """Drop the workload's pending commands and plan a terminate for each live instance.

    Returns how many terminates were queued. A launch already in flight finishes; the instance it
    makes is then live and unwanted, and the reconciler terminates it (it belongs to a final
    workload).
    """
    session.execute(
        update(CommandRow)
        .where(CommandRow.workload_id == row.id, CommandRow.state == "pending")
        .values(state="cancelled", updated_at=now, last_error=why)
    )
    queued = 0
    plan_id = f"stop-{row.id}-{int(now.timestamp() * 1000)}"
    for instance in live_instances(session, row.id):
        queued += enqueue_terminate(session, row, instance, plan_id, queued, now)
    if queued:
        wake(session, Topic.EXECUTE)
    return queued


def enqueue_terminate(
    session: Session, row: WorkloadRow, instance: InstanceRow, plan_id: str, seq: int, now: datetime
) -> int:
    """Queue a terminate of ``instance`` (once: the key is the instance's) and mark it terminating."""
    inserted = session.execute(
        pg_insert(CommandRow)
        .values(
            idempotency_key=f"terminate-{instance.id}",
            plan_id=plan_id,
            seq=0,
            org_id=row.org_id,
            workload_id=row.id,
            kind="terminate",
            provider=instance.provider,
            payload={"instance_id": instance.id, "region": instance.region},
            state="pending",
            attempts=0,
            not_before=now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing()
        .returning(CommandRow.id)
    ).first()
    if instance.state in ("pending", "running", "requested"):
        instance.state = "terminating"
        instance.updated_at = now
        instance.serving = False
    return 1 if inserted is not None else 0


def finish(
    session: Session, org_id: str, workload_id: str, outcome: WorkloadState, message: str, now: datetime
) -> WorkloadRow:
    """The workload's own report that it is done (SUCCEEDED) or gave up (FAILED): release its capacity."""
    row = _locked(session, org_id, workload_id)
    current = WorkloadState(row.state)
    if current not in FINISHABLE:
        raise WorkloadError(409, "invalid-state", f"only a running workload can finish; it is {current}")
    changes: dict[str, Any] = {}
    if outcome is WorkloadState.FAILED:
        changes["failure_reason"] = message or "reported failed"
    transition(session, row, current, outcome, now, message or f"reported {outcome.lower()}", **changes)
    stop_everything(session, row, now, f"workload {outcome.lower()}")
    return row


def record_checkpoint(session: Session, org_id: str, workload_id: str, now: datetime) -> WorkloadRow:
    """The workload wrote a checkpoint: a migration waiting for one may cut over now."""
    row = _locked(session, org_id, workload_id)
    if WorkloadState(row.state).terminal:
        raise WorkloadError(409, "invalid-state", f"the workload is already {row.state}")
    row.history = {**row.history, "last_checkpoint_at": now.isoformat()}
    row.updated_at = now
    record_event(session, row.id, org_id, now, "checkpoint", "checkpoint written")
    wake(session, Topic.EXECUTE)
    return row


def events(
    session: Session, org_id: str, workload_id: str, *, after: int = 0, limit: int = 100
) -> list[WorkloadEvent]:
    """The workload's audit trail, oldest first, after event id ``after``."""
    return list(
        session.scalars(
            select(WorkloadEvent)
            .where(
                WorkloadEvent.workload_id == workload_id,
                WorkloadEvent.org_id == org_id,
                WorkloadEvent.id > after,
            )
            .order_by(WorkloadEvent.id)
            .limit(limit)
        )
    )


__all__ = [
    "LIVE_INSTANCE_STATES",
    "Page",
    "RunSpec",
    "WorkloadError",
    "WorkloadSpec",
    "cancel",
    "enqueue_terminate",
    "events",
    "finish",
    "get",
    "list_workloads",
    "live_instances",
    "project_names",
    "record_checkpoint",
    "row_to_core",
    "spec_from_json",
    "spec_to_json",
    "stop_everything",
    "submit",
    "to_core",
]
