"""Placement entry points: one workload, one workload explained, or a batch (pure: no I/O).

``place`` and ``explain`` pick the same candidate; ``place`` is the fast path (an index walk
that stops early), ``explain`` looks at every offer and commitment and says why each one is
out. ``place_batch`` places many workloads against one snapshot, taking capacity, quota and
budget as it goes, so later workloads see what earlier ones left.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType

from broker.core.placement.cost import Location
from broker.core.placement.decision import Placement, PlacementDecision
from broker.core.placement.explain import explain_request
from broker.core.placement.request import NO_USAGE, Request, Usage, quota_covers
from broker.core.placement.search import search
from broker.core.placement.snapshot import PlacementSnapshot
from broker.core.workload import Workload

_ZERO = Decimal(0)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # any instant: only compared when a deadline is set


def place(
    workload: Workload, snapshot: PlacementSnapshot, *, origin: Location | None = None
) -> PlacementDecision:
    """Where to run ``workload`` now, or why to wait (no per-candidate explanation).

    ``origin`` is where the workload's checkpoint is now, when it has one: each candidate then
    carries the cost of moving it there.
    """
    return _decide(Request(workload, snapshot, NO_USAGE, origin))


def explain(
    workload: Workload, snapshot: PlacementSnapshot, *, origin: Location | None = None
) -> PlacementDecision:
    """The same decision as :func:`place`, with every candidate scored or rejected and why."""
    return explain_request(Request(workload, snapshot, NO_USAGE, origin))


def batch_order(workloads: Iterable[Workload]) -> list[Workload]:
    """The order a batch is placed in: earliest deadline first, no deadline last, then by id.

    Deadlines first because a workload that can wait should not take the capacity one that
    cannot wait needs; the id makes the order total.
    """
    return sorted(workloads, key=lambda w: (w.deadline is None, w.deadline or _EPOCH, w.workload_id))


@dataclass(frozen=True, slots=True)
class BatchResult:
    """Decisions in placement order (see :func:`batch_order`) and what they took in all."""

    decisions: tuple[PlacementDecision, ...]
    usage: Usage

    @property
    def placed(self) -> tuple[PlacementDecision, ...]:
        return tuple(d for d in self.decisions if d.placement is not None)

    @property
    def waiting(self) -> tuple[PlacementDecision, ...]:
        return tuple(d for d in self.decisions if d.placement is None)

    def by_workload(self) -> dict[str, PlacementDecision]:
        return {d.workload_id: d for d in self.decisions}


def place_batch(
    workloads: Iterable[Workload],
    snapshot: PlacementSnapshot,
    *,
    origins: Mapping[str, Location] | None = None,
) -> BatchResult:
    """Place many workloads against limited capacity, deterministically.

    Workloads go in :func:`batch_order`. Each placement takes its instances from the offer
    (where the snapshot knows that offer's capacity), its GPUs from the commitment, from every
    quota that covers its place and capacity type and from its project's budget, and its
    expected cost from the project's dollars, so no later placement can exceed any of them.
    Workload ids must be unique.
    """
    ordered = batch_order(workloads)
    ids = [w.workload_id for w in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("workload ids in a batch must be unique")
    origins = origins or {}
    instances: dict[tuple[str, str, str, str, str], int] = {}
    commitment_gpus: dict[str, int] = {}
    quota_gpus: dict[int, int] = {}
    budget_gpus: dict[str, int] = {}
    budget_usd: dict[str, Decimal] = {}
    usage = Usage(instances, commitment_gpus, quota_gpus, budget_gpus, budget_usd)
    quotas = snapshot.index.quotas
    decisions: list[PlacementDecision] = []
    for workload in ordered:
        decision = _decide(Request(workload, snapshot, usage, origins.get(workload.workload_id)))
        decisions.append(decision)
        placement = decision.placement
        if placement is None:
            continue
        candidate = placement.candidate
        gpus = workload.total_gpus
        if candidate.commitment is not None:
            cid = candidate.commitment.commitment_id
            commitment_gpus[cid] = commitment_gpus.get(cid, 0) + gpus
        elif candidate.offer is not None and snapshot.available.get(candidate.offer.key) is not None:
            key = candidate.offer.key
            instances[key] = instances.get(key, 0) + workload.nodes
        region = candidate.region.casefold()
        for i, quota in quotas.get(candidate.cloud.casefold(), ()):
            if quota_covers(quota, region, candidate.capacity_type):
                quota_gpus[i] = quota_gpus.get(i, 0) + gpus
        project = workload.project
        if project is not None and project in snapshot.index.budgets:
            budget_gpus[project] = budget_gpus.get(project, 0) + gpus
            budget_usd[project] = budget_usd.get(project, _ZERO) + placement.cost.total_usd
    taken = Usage(
        MappingProxyType(dict(instances)),
        MappingProxyType(dict(commitment_gpus)),
        MappingProxyType(dict(quota_gpus)),
        MappingProxyType(dict(budget_gpus)),
        MappingProxyType(dict(budget_usd)),
    )
    return BatchResult(tuple(decisions), taken)


def _decide(request: Request) -> PlacementDecision:
    workload = request.workload
    found = search(request)
    if isinstance(found, str):
        return PlacementDecision(workload.workload_id, None, found)
    candidate, cost = found
    placement = Placement(workload.workload_id, candidate, cost, workload.nodes, workload.gpus_per_node)
    return PlacementDecision(workload.workload_id, placement)


__all__ = ["BatchResult", "batch_order", "explain", "place", "place_batch"]
