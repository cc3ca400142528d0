"""Placing pending workloads: snapshot from the database, the pure placement engine, a launch plan
written to the outbox (does I/O).

One transaction per round: pending workloads are claimed with ``FOR UPDATE SKIP LOCKED`` (so
several schedulers share the queue without placing one workload twice), placed as a batch per
organization, and each placed workload gets its instance rows (state ``requested``) and one
launch command per node, all committed together *before* any provider is called.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from broker.core.commands import Launch, command_key
from broker.core.lifecycle import WorkloadState
from broker.core.migration.model import offer_key
from broker.core.placement import PlacementSnapshot, explain, place, place_batch
from broker.core.placement.decision import Placement, PlacementDecision
from broker.core.types import CapacityType, Offer
from broker.db.fleet import CommandRow, InstanceRow, Project, WorkloadRow
from broker.db.prices import current_offers
from broker.services.budgets import budget_for
from broker.services.commitments import active_commitments, commitment_reservations
from broker.services.lifecycle import Topic, record_event, transition, wake
from broker.services.workloads import row_to_core, spec_from_json

_log = logging.getLogger(__name__)

REFUSAL_BACKOFF = timedelta(minutes=30)
MAX_WAIT_BACKOFF = timedelta(seconds=60)
PLACING_LEASE = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class RoundReport:
    claimed: int
    placed: int
    waiting: int
    failed: int


def load_offers(session: Session, providers: Collection[str]) -> list[Offer]:
    """Current offers of the providers this scheduler can launch on (a catalog price elsewhere is
    no use: nobody could start it)."""
    wanted = {p.lower() for p in providers}
    return [o for o in current_offers(session) if o.cloud.lower() in wanted]


def build_snapshot(
    session: Session,
    org_id: str,
    now: datetime,
    offers: Sequence[Offer],
    *,
    stale_after: timedelta | None = None,
) -> PlacementSnapshot:
    """What placement may use for ``org_id`` now: the offers, its commitments, its projects' budgets."""
    projects = session.scalars(
        select(Project).where(
            Project.org_id == org_id,
            or_(Project.max_gpus.is_not(None), Project.max_usd_per_month.is_not(None)),
        )
    )
    return PlacementSnapshot(
        now=now,
        offers=tuple(offers),
        commitments=tuple(active_commitments(session, org_id, now)),
        budgets=tuple(budget_for(session, p, now) for p in projects),
        stale_after=stale_after,
    )


def refusals(row: WorkloadRow, now: datetime) -> list[tuple[str, ...]]:
    """Offer keys this workload's launches were refused on recently (placement avoids them)."""
    keys = []
    for item in row.history.get("refusals", []):
        if now - datetime.fromisoformat(item["at"]) < REFUSAL_BACKOFF:
            keys.append(tuple(item["key"]))
    return keys


def without(snapshot: PlacementSnapshot, keys: list[tuple[str, ...]]) -> PlacementSnapshot:
    """The snapshot minus the offers under ``keys`` (a workload's refused offers)."""
    banned = set(keys)
    offers = tuple(
        o
        for o in snapshot.offers
        if offer_key(o.cloud, o.region, o.zone, o.instance_type, o.capacity_type) not in banned
    )
    return replace(snapshot, offers=offers)  # __post_init__ rebuilds the index


def placement_json(placement: Placement, launch: Launch, now: datetime) -> dict[str, Any]:
    candidate = placement.candidate
    return {
        "cloud": candidate.cloud,
        "region": candidate.region,
        "zone": candidate.zone,
        "instance_type": candidate.instance_type,
        "accelerator": candidate.accelerator,
        "capacity_type": candidate.capacity_type.value,
        "price_per_hour": str(launch.price_per_hour),
        "commitment_id": launch.commitment_id,
        "expected_total_usd": str(placement.cost.total_usd),
        "label": candidate.label,
        "launch_key": launch.idempotency_key,
        "started_at": now.isoformat(),
    }


def write_launch_plan(
    session: Session,
    row: WorkloadRow,
    launch: Launch,
    accelerator: str,
    generation: int,
    now: datetime,
    *,
    reservation_id: str | None,
    seq: int = 0,
) -> list[str]:
    """Instance rows (``requested``) and one launch command per node; returns the instance ids.

    The instance id is the launch key plus the node index: the provider-side idempotency key, so
    a retried launch after a crash or timeout finds the instance instead of making a second.
    Capacity under a commitment without a provider reservation id (a savings plan, say) launches
    as on-demand: the contract's discount applies to on-demand usage.
    """
    spec = spec_from_json(row.spec)
    launch_capacity = launch.capacity_type
    if launch_capacity is CapacityType.RESERVED and not reservation_id:
        launch_capacity = CapacityType.ON_DEMAND
    labels = {"gpubroker-workload": row.id, "gpubroker-org": row.org_id}
    ids = []
    for node in range(launch.count):
        instance_id = f"{launch.idempotency_key}-{node}"
        ids.append(instance_id)
        session.add(
            InstanceRow(
                id=instance_id,
                org_id=row.org_id,
                project_id=row.project_id,
                workload_id=row.id,
                generation=generation,
                node_index=node,
                provider=launch.cloud,
                region=launch.region,
                zone=launch.zone,
                instance_type=launch.instance_type,
                accelerator=accelerator,
                gpus=row.gpus_per_node,
                capacity_type=launch.capacity_type.value,
                price_per_hour=launch.price_per_hour,
                commitment_id=launch.commitment_id,
                reservation_id=reservation_id,
                state="requested",
                serving=False,
                created_at=now,
                updated_at=now,
            )
        )
        session.add(
            CommandRow(
                idempotency_key=instance_id,
                plan_id=launch.idempotency_key,
                seq=seq,
                org_id=row.org_id,
                workload_id=row.id,
                kind="launch",
                provider=launch.cloud,
                payload={
                    "instance_id": instance_id,
                    "instance_type": launch.instance_type,
                    "region": launch.region,
                    "zone": launch.zone,
                    "capacity_type": launch_capacity.value,
                    "reservation_id": reservation_id,
                    "max_price_per_hour": str(launch.max_price_per_hour)
                    if launch.max_price_per_hour is not None
                    else None,
                    "image": spec.run.image,
                    "labels": labels,
                },
                state="pending",
                attempts=0,
                not_before=now,
                created_at=now,
                updated_at=now,
            )
        )
    session.flush()
    return ids


def _wait_backoff(attempts: int) -> timedelta:
    return min(MAX_WAIT_BACKOFF, timedelta(seconds=2 ** min(attempts, 6)))


def _claim(session: Session, now: datetime, limit: int) -> list[WorkloadRow]:
    # A PLACING row older than the lease belongs to a placer that died mid-round (the round is
    # one transaction, so this only happens with an external writer); take it back first.
    stale = session.scalars(
        select(WorkloadRow)
        .where(WorkloadRow.state == "PLACING", WorkloadRow.state_changed_at < now - PLACING_LEASE)
        .with_for_update(skip_locked=True)
        .limit(limit)
    )
    for row in stale:
        transition(session, row, WorkloadState.PLACING, WorkloadState.PENDING, now, "placer lease expired")
    return list(
        session.scalars(
            select(WorkloadRow)
            .where(
                WorkloadRow.state == "PENDING",
                or_(WorkloadRow.next_attempt_at.is_(None), WorkloadRow.next_attempt_at <= now),
            )
            .order_by(WorkloadRow.next_attempt_at, WorkloadRow.created_at)
            .with_for_update(skip_locked=True)
            .limit(limit)
        )
    )


def place_pending(
    session: Session,
    providers: Collection[str],
    now: datetime,
    *,
    limit: int = 500,
    stale_after: timedelta | None = None,
) -> RoundReport:
    """One placement round in the caller's transaction."""
    claimed = _claim(session, now, limit)
    if not claimed:
        return RoundReport(0, 0, 0, 0)
    offers = load_offers(session, providers)
    by_org: dict[str, list[WorkloadRow]] = defaultdict(list)
    for row in claimed:
        by_org[row.org_id].append(row)
    placed = waiting = failed = 0
    for org_id, rows in by_org.items():
        snapshot = build_snapshot(session, org_id, now, offers, stale_after=stale_after)
        reservations = commitment_reservations(session, org_id)
        plain, refused = [], []
        for row in rows:
            (refused if refusals(row, now) else plain).append(row)
        decisions: dict[str, PlacementDecision] = {}
        cores = {row.id: row_to_core(row) for row in rows}
        if plain:
            decisions.update(place_batch([cores[r.id] for r in plain], snapshot).by_workload())
        for row in refused:
            decisions[row.id] = place(cores[row.id], without(snapshot, refusals(row, now)))
        for row in rows:
            decision = decisions[row.id]
            deadline = cores[row.id].deadline
            if decision.placement is None:
                if deadline is not None and deadline <= now:
                    _fail(
                        session,
                        row,
                        now,
                        f"deadline passed before capacity was found: {decision.wait_reason}",
                    )
                    failed += 1
                else:
                    _wait(session, row, now, decision.wait_reason or "no capacity")
                    waiting += 1
                continue
            _place(session, row, decision.placement, reservations, now)
            placed += 1
    if placed:
        wake(session, Topic.EXECUTE)
    return RoundReport(len(claimed), placed, waiting, failed)


def _fail(session: Session, row: WorkloadRow, now: datetime, reason: str) -> None:
    transition(session, row, WorkloadState.PENDING, WorkloadState.FAILED, now, reason, failure_reason=reason)


def _wait(session: Session, row: WorkloadRow, now: datetime, reason: str) -> None:
    """Nothing fits yet: look again after a backoff; one event per new reason, not per round."""
    if row.wait_reason != reason:
        record_event(session, row.id, row.org_id, now, "waiting", reason)
    row.wait_reason = reason
    row.attempts = row.attempts + 1
    row.next_attempt_at = now + _wait_backoff(row.attempts)
    row.updated_at = now


def _place(
    session: Session, row: WorkloadRow, placement: Placement, reservations: dict[str, str], now: datetime
) -> None:
    core = row_to_core(row)
    launch = placement.launch(core.max_price_per_gpu_hour)
    # The launch key names the generation too: a workload placed again after losing its instances
    # must not reuse (and so dedupe onto) the ids of the instances it lost.
    launch = replace(launch, idempotency_key=_generation_key(launch.idempotency_key, row.generation))
    reservation = reservations.get(launch.commitment_id or "")
    transition(session, row, WorkloadState.PENDING, WorkloadState.PLACING, now, "placing")
    write_launch_plan(
        session, row, launch, placement.candidate.accelerator, row.generation, now, reservation_id=reservation
    )
    transition(
        session,
        row,
        WorkloadState.PLACING,
        WorkloadState.PROVISIONING,
        now,
        f"placed on {placement.candidate.label}",
        placement=placement_json(placement, launch, now),
        wait_reason=None,
        attempts=0,
        next_attempt_at=None,
    )
    cost = placement.cost
    record_event(
        session,
        row.id,
        row.org_id,
        now,
        "placed",
        f"{placement.candidate.label}: {launch.count} × {launch.instance_type} at "
        f"${launch.price_per_hour}/h, expected ${cost.total_usd.quantize(Decimal('0.01'))}",
        data={"launch_key": launch.idempotency_key, "offer": placement.candidate.label},
    )


def _generation_key(key: str, generation: int) -> str:
    return key if generation == 0 else command_key(key, "generation", generation)


def explain_workload(
    session: Session,
    row: WorkloadRow,
    providers: Collection[str],
    now: datetime,
    stale_after: timedelta | None,
) -> PlacementDecision:
    """The placement engine's full explanation for ``row`` against the current snapshot."""
    offers = load_offers(session, providers)
    snapshot = build_snapshot(session, row.org_id, now, offers, stale_after=stale_after)
    keys = refusals(row, now)
    if keys:
        snapshot = without(snapshot, keys)
    return explain(row_to_core(row), snapshot)


__all__ = [
    "REFUSAL_BACKOFF",
    "RoundReport",
    "build_snapshot",
    "explain_workload",
    "load_offers",
    "place_pending",
    "placement_json",
    "refusals",
    "without",
    "write_launch_plan",
]
