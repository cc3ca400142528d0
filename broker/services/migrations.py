"""Workload migration glue: instance events and rebalance ticks in, the pure migration engine's
plan written to the outbox (does I/O).

The engine (``broker.core.migration``) decides from a ``RunningWorkload`` (built here from the
workload row, its serving instances and its history) and ``Replacement``s (the placement engine's
scored candidates for the same workload, each with the egress cost of moving its checkpoint).
A plan is committed with the workload's move to MIGRATING and its generation bumped, in one
transaction; the executor then launches, waits for a checkpoint, cuts over and terminates.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.core.commands import CutOver, Launch, Terminate, WaitForCheckpoint
from broker.core.lifecycle import WorkloadState
from broker.core.migration import decide
from broker.core.migration.decision import Decision
from broker.core.migration.events import LaunchRefused, MigrationEvent, Preempted, PreemptionNotice, Rebalance
from broker.core.migration.model import (
    MigrationPolicy,
    Move,
    MoveKind,
    Refusal,
    Replacement,
    RunningWorkload,
    offer_key,
)
from broker.core.placement import explain
from broker.core.types import CapacityType
from broker.db.fleet import CommandRow, InstanceRow, WorkloadRow
from broker.services.commitments import commitment_reservations
from broker.services.lifecycle import Topic, record_event, transition, wake
from broker.services.placement import build_snapshot, load_offers, without, write_launch_plan
from broker.services.workloads import enqueue_terminate, row_to_core
from pricing.egress import egress_per_gb

_log = logging.getLogger(__name__)

DEFAULT_POLICY = MigrationPolicy(checkpoint_wait_timeout=timedelta(minutes=5))


@dataclass(frozen=True, slots=True)
class InstanceEvent:
    """Something a provider (or the node agent) told us about one of our instances."""

    instance_id: str
    kind: str  # "preemption-notice" | "preempted" | "lost"
    at: datetime
    reclaim_at: datetime | None = None


@dataclass
class MigrationContext:
    """What a round of migration decisions shares: providers, offers, policy, clock."""

    providers: Collection[str]
    now: datetime
    policy: MigrationPolicy = DEFAULT_POLICY
    stale_after: timedelta | None = None
    _offers: list[Any] | None = None

    def offers(self, session: Session) -> list[Any]:
        if self._offers is None:
            self._offers = load_offers(session, self.providers)
        return self._offers


def _history_moves(history: dict[str, Any]) -> tuple[Move, ...]:
    return tuple(
        Move(tuple(m["from"]), tuple(m["to"]), datetime.fromisoformat(m["at"]), MoveKind(m["kind"]))  # type: ignore[arg-type]
        for m in history.get("moves", [])
    )


def _history_refusals(history: dict[str, Any]) -> tuple[Refusal, ...]:
    return tuple(
        Refusal(tuple(r["key"]), datetime.fromisoformat(r["at"]))  # type: ignore[arg-type]
        for r in history.get("refusals", [])
    )


def running_workload(session: Session, row: WorkloadRow, now: datetime) -> RunningWorkload | None:
    """The engine's view of a RUNNING workload, or None when it has no serving instances."""
    placement = row.placement or {}
    serving = session.scalars(
        select(InstanceRow)
        .where(InstanceRow.workload_id == row.id, InstanceRow.serving.is_(True))
        .order_by(InstanceRow.node_index)
    ).all()
    if not serving or not placement:
        return None
    workload = row_to_core(row)
    if len(serving) != workload.nodes:
        return None
    history = row.history or {}
    started_at = datetime.fromisoformat(placement.get("started_at") or row.state_changed_at.isoformat())
    progress = Decimal(history.get("progress_hours", "0"))
    progress += Decimal(max(0.0, (now - started_at).total_seconds()) / 3600).quantize(Decimal("0.0001"))
    checkpoint = history.get("last_checkpoint_at")
    reclaim = history.get("reclaim_at")
    lost = history.get("lost_at")
    first = serving[0]
    return RunningWorkload(
        workload=workload,
        cloud=first.provider,
        region=first.region,
        zone=first.zone,
        instance_type=first.instance_type,
        capacity_type=CapacityType(first.capacity_type),
        price_per_hour=Decimal(0) if first.commitment_id else first.price_per_hour,
        instance_ids=tuple(i.id for i in serving),
        started_at=started_at,
        progress_hours=min(progress, workload.expected_hours),
        last_checkpoint_at=datetime.fromisoformat(checkpoint) if checkpoint else None,
        generation=row.generation,
        commitment_id=first.commitment_id,
        moves=_history_moves(history),
        refusals=_history_refusals(history),
        reclaim_at=datetime.fromisoformat(reclaim) if reclaim else None,
        lost_at=datetime.fromisoformat(lost) if lost else None,
    )


def replacements(
    session: Session, row: WorkloadRow, running: RunningWorkload, ctx: MigrationContext
) -> list[Replacement]:
    """The placement engine's scored candidates for this workload, best first, as replacements."""
    snapshot = build_snapshot(session, row.org_id, ctx.now, ctx.offers(session), stale_after=ctx.stale_after)
    refused = [r.offer_key for r in running.refusals if ctx.now - r.at < ctx.policy.launch_refused_backoff]
    if refused:
        snapshot = without(snapshot, list(refused))
    decision = explain(running.workload, snapshot)
    found: list[Replacement] = []
    remaining = running.remaining_hours
    deadline = running.workload.deadline
    for scored in decision.explanation.scored if decision.explanation else ():
        candidate = scored.candidate
        if candidate.instance_type is None:
            continue
        price = Decimal(0) if candidate.commitment is not None else candidate.offer.price_per_hour  # type: ignore[union-attr]
        hours_needed = remaining + running.workload.restart_overhead_hours
        meets = deadline is None or ctx.now + timedelta(hours=float(hours_needed)) <= deadline
        found.append(
            Replacement(
                cloud=candidate.cloud,
                region=candidate.region,
                zone=candidate.zone,
                instance_type=candidate.instance_type,
                capacity_type=candidate.capacity_type,
                price_per_hour=price,
                commitment_id=candidate.commitment.commitment_id if candidate.commitment else None,
                egress_per_gb=egress_per_gb(running.cloud, running.region, candidate.cloud, candidate.region),
                meets_deadline=meets,
            )
        )
    return found


def _move_json(move: Move) -> dict[str, Any]:
    return {
        "from": list(move.from_key),
        "to": list(move.to_key),
        "at": move.at.isoformat(),
        "kind": move.kind.value,
    }


def apply(
    session: Session, row: WorkloadRow, running: RunningWorkload, decision: Decision, now: datetime
) -> bool:
    """Commit a decision: the plan into the outbox and the workload to MIGRATING (True), or a stay."""
    history = dict(row.history)
    if decision.refusal is not None:
        history["refusals"] = [
            *history.get("refusals", [])[-19:],
            {"key": list(decision.refusal.offer_key), "at": decision.refusal.at.isoformat()},
        ]
    if not decision.migrates:
        row.history = history
        return False
    if decision.move is not None:
        history["moves"] = [*history.get("moves", [])[-19:], _move_json(decision.move)]
    history["progress_hours"] = str(running.progress_hours)
    row.history = history
    generation = row.generation + 1
    reservations = commitment_reservations(session, row.org_id)
    target = decision.target
    assert target is not None  # a plan always has a target
    new_ids: list[str] = []
    plan_id = ""
    placement: dict[str, Any] = {}
    seq = 0
    for command in decision.plan.commands:
        if isinstance(command, Launch):
            plan_id = command.idempotency_key
            accelerator = running.workload.gpu_types[0]
            new_ids = write_launch_plan(
                session,
                row,
                command,
                accelerator,
                generation,
                now,
                reservation_id=reservations.get(command.commitment_id or ""),
                seq=0,
            )
            placement = {
                "cloud": command.cloud,
                "region": command.region,
                "zone": command.zone,
                "instance_type": command.instance_type,
                "accelerator": accelerator,
                "capacity_type": command.capacity_type.value,
                "price_per_hour": str(command.price_per_hour),
                "commitment_id": command.commitment_id,
                "label": target.describe(),
                "launch_key": command.idempotency_key,
            }
            continue
        seq += 1
        if isinstance(command, WaitForCheckpoint):
            kind, payload = "wait-for-checkpoint", {"timeout_seconds": command.timeout_seconds}
        elif isinstance(command, CutOver):
            kind, payload = (
                "cut-over",
                {"generation": generation, "placement": placement, "instance_ids": new_ids},
            )
        elif isinstance(command, Terminate):
            # The old instance keeps serving until the cut-over; its terminate runs after it.
            kind, payload = "terminate", {"instance_id": command.instance_id, "region": command.region}
        else:  # pragma: no cover - the engine emits only these
            continue
        session.add(
            CommandRow(
                idempotency_key=command.idempotency_key,
                plan_id=plan_id,
                seq=seq if not isinstance(command, Terminate) else 100,
                org_id=row.org_id,
                workload_id=row.id,
                kind=kind,
                provider=command.cloud if isinstance(command, Terminate) else None,
                payload=payload,
                state="pending",
                attempts=0,
                not_before=now,
                created_at=now,
                updated_at=now,
            )
        )
    transition(
        session,
        row,
        WorkloadState(row.state),
        WorkloadState.MIGRATING,
        now,
        decision.reason,
        generation=generation,
        data={"trigger": decision.trigger.value, "to": target.describe()},
    )
    record_event(
        session,
        row.id,
        row.org_id,
        now,
        "migration-planned",
        f"{decision.kind.value if decision.kind else 'move'} to {target.describe()}: {decision.reason}",
        data={"trigger": decision.trigger.value, "launch_key": plan_id},
    )
    wake(session, Topic.EXECUTE)
    return True


def _lose(session: Session, row: WorkloadRow, now: datetime, why: str) -> None:
    """No replacement could be planned and the instances are gone: place the workload from scratch."""
    history = dict(row.history)
    history.pop("reclaim_at", None)
    history.pop("lost_at", None)
    row.history = history
    for instance in session.scalars(
        select(InstanceRow).where(
            InstanceRow.workload_id == row.id, InstanceRow.state.in_(("requested", "pending", "running"))
        )
    ):
        enqueue_terminate(session, row, instance, f"stop-{row.id}-{row.generation}", 0, now)
    transition(
        session,
        row,
        WorkloadState(row.state),
        WorkloadState.PENDING,
        now,
        f"{why}; placing again",
        placement=None,
        next_attempt_at=now,
        generation=row.generation + 1,
    )
    wake(session, Topic.PLACE)


def handle_instance_event(session: Session, event: InstanceEvent, ctx: MigrationContext) -> Decision | None:
    """Record a notice/preemption/loss on the instance and ask the engine what the workload does."""
    now = ctx.now
    instance = session.get(InstanceRow, event.instance_id, with_for_update=True)
    if instance is None:
        return None
    if event.kind == "preemption-notice":
        if instance.notice_at is not None or instance.state not in ("pending", "running"):
            return None
        instance.notice_at = event.at
        instance.state_reason = "preemption notice"
    else:
        if instance.state in ("preempted", "lost", "terminated", "failed"):
            return None
        instance.state = "preempted" if event.kind == "preempted" else "lost"
        instance.ended_at = event.at
        instance.state_reason = event.kind
    instance.updated_at = now
    row = session.get(WorkloadRow, instance.workload_id, with_for_update=True)
    if row is None:
        return None
    record_event(
        session,
        row.id,
        row.org_id,
        now,
        "preemption-notice" if event.kind == "preemption-notice" else "preempted",
        f"{instance.id} on {instance.provider}/{instance.zone or instance.region}: {event.kind}",
        data={
            "instance_id": instance.id,
            "reclaim_at": event.reclaim_at.isoformat() if event.reclaim_at else None,
        },
    )
    if not instance.serving:
        return None  # an old or not-yet-serving instance: the plan it belongs to handles it
    mark_in_history(row, event)
    state = WorkloadState(row.state)
    if state is WorkloadState.MIGRATING:
        return None  # already moving away
    if state is not WorkloadState.RUNNING:
        return None
    return decide_event(session, row, instance.id, event, ctx)


def mark_in_history(row: WorkloadRow, event: InstanceEvent) -> None:
    """Put the event in the workload's history, where the engine reads it (``running_workload``).

    ``reclaim_at`` also marks a notice as decided: the migrate job's queue
    (``migration_queue.handle_losses``) skips a RUNNING workload that has one, and a cut-over or a
    new placement clears it."""
    history = dict(row.history)
    if event.kind == "preemption-notice":
        history["reclaim_at"] = (event.reclaim_at or event.at).isoformat()
    else:
        history["lost_at"] = event.at.isoformat()
    row.history = history


def decide_event(
    session: Session, row: WorkloadRow, instance_id: str, event: InstanceEvent, ctx: MigrationContext
) -> Decision | None:
    """Ask the engine what a RUNNING workload does about ``event`` on its serving ``instance_id``, and
    commit the answer: a migration plan, or (the instance being gone and nowhere to go) a new placement."""
    now = ctx.now
    running = running_workload(session, row, now)
    if running is None:
        _lose(session, row, now, f"{instance_id} {event.kind}")
        return None
    engine_event: MigrationEvent
    if event.kind == "preemption-notice":
        engine_event = PreemptionNotice(instance_id, event.at, event.reclaim_at or event.at)
    else:
        engine_event = Preempted(instance_id, event.at)
    decision = decide(engine_event, running, replacements(session, row, running, ctx), ctx.policy, now)
    if not apply(session, row, running, decision, now) and event.kind != "preemption-notice":
        _lose(session, row, now, f"{instance_id} {event.kind} and {decision.reason}")
    return decision


def replan_after_refusal(
    session: Session, row: WorkloadRow, command: CommandRow, now: datetime, providers: Collection[str]
) -> None:
    """A migration's launch was refused: MIGRATING → back to RUNNING on what it has, then ask the
    engine again with the refusal (it backs off that offer)."""
    transition(session, row, WorkloadState.MIGRATING, WorkloadState.RUNNING, now, "migration launch refused")
    running = running_workload(session, row, now)
    if running is None:
        _lose(session, row, now, "migration launch refused and the old instances are gone")
        return
    key = offer_key(
        command.provider or "",
        command.payload["region"],
        command.payload.get("zone"),
        command.payload["instance_type"],
        CapacityType(command.payload["capacity_type"]),
    )
    ctx = MigrationContext(providers=providers, now=now)
    event = LaunchRefused(command.plan_id, key, now)
    decision = decide(event, running, replacements(session, row, running, ctx), ctx.policy, now)
    if not apply(session, row, running, decision, now):
        _log.info("workload %s stays after a refused migration: %s", row.id, decision.reason)
        if running.lost_at is not None:
            _lose(session, row, now, f"no replacement: {decision.reason}")


def rebalance(session: Session, ctx: MigrationContext, limit: int = 200) -> int:
    """A periodic look at RUNNING workloads: move those a cheaper offer now pays for (the engine
    applies hysteresis)."""
    rows = session.scalars(
        select(WorkloadRow)
        .where(WorkloadRow.state == "RUNNING")
        .order_by(WorkloadRow.updated_at)
        .with_for_update(skip_locked=True)
        .limit(limit)
    ).all()
    moved = 0
    for row in rows:
        running = running_workload(session, row, ctx.now)
        if running is None:
            continue
        decision = decide(
            Rebalance(ctx.now), running, replacements(session, row, running, ctx), ctx.policy, ctx.now
        )
        moved += apply(session, row, running, decision, ctx.now)
    return moved


__all__ = [
    "DEFAULT_POLICY",
    "InstanceEvent",
    "MigrationContext",
    "apply",
    "decide_event",
    "handle_instance_event",
    "mark_in_history",
    "rebalance",
    "replacements",
    "replan_after_refusal",
    "running_workload",
]
