"""The explaining path: run every candidate through every filter and keep each reason (pure: no I/O).

Slower than :mod:`broker.core.placement.search` (it looks at every offer and commitment in the
snapshot) but complete: each candidate ends up either rejected, with the first filter that
turned it down, or scored. Property tests hold the two paths to the same choice.
"""

from __future__ import annotations

from broker.core.placement.cost import CostBreakdown, commitment_cost, offer_cost
from broker.core.placement.decision import (
    Candidate,
    Explanation,
    Placement,
    PlacementDecision,
    Rejection,
    Scored,
    order_key,
)
from broker.core.placement.filters import (
    CANDIDATE_FILTERS,
    COST_FILTERS,
    DEADLINE,
    SPOT_DEADLINE_SAFETY,
    spot_deadline_safety,
)
from broker.core.placement.request import Request
from broker.core.types import Availability, CapacityType


def candidates(request: Request) -> list[Candidate]:
    """Every offer of the snapshot (catalog order), then every commitment (snapshot order)."""
    snapshot = request.snapshot
    gpus_per_node = request.workload.gpus_per_node
    found = [Candidate(offer.capacity_type, offer) for offer in snapshot.offers]
    found += [
        Candidate(CapacityType.RESERVED, snapshot.commitment_shape(c, gpus_per_node), c)
        for c in snapshot.commitments
    ]
    return found


def candidate_cost(request: Request, candidate: Candidate) -> CostBreakdown:
    """The cost model applied to one candidate that passed the candidate filters."""
    now = request.snapshot.now
    move = request.move_usd(candidate.cloud, candidate.region, candidate.zone)
    if candidate.commitment is not None:
        return commitment_cost(request.terms, move, now)
    offer = candidate.offer
    assert offer is not None
    rate = request.snapshot.spot_rate(offer) if offer.capacity_type is CapacityType.SPOT else None
    limited = offer.availability is Availability.LIMITED
    return offer_cost(request.terms, offer.price_per_hour, rate, limited, move, now)


def explain_request(request: Request) -> PlacementDecision:
    """Filter, then score, every candidate; the winner is the first scored one."""
    rejected: list[tuple[int, Rejection]] = []
    priced: list[tuple[int, Candidate, CostBreakdown]] = []
    for position, candidate in enumerate(candidates(request)):
        rejection = _first_rejection(request, candidate)
        if rejection is not None:
            rejected.append((position, rejection))
            continue
        cost = candidate_cost(request, candidate)
        for cost_filter in COST_FILTERS:
            reason = cost_filter.check(request, candidate, cost)
            if reason is not None:
                rejected.append((position, Rejection(candidate, cost_filter.name, reason)))
                break
        else:
            priced.append((position, candidate, cost))
    fallback_exists = any(c.capacity_type is not CapacityType.SPOT for _, c, _ in priced)
    scored: list[tuple[tuple[object, ...], int, Scored]] = []
    for position, candidate, cost in priced:
        reason = DEADLINE.check(request, candidate, cost)
        if reason is not None:
            rejected.append((position, Rejection(candidate, DEADLINE.name, reason)))
            continue
        reason = spot_deadline_safety(request, candidate, fallback_exists)
        if reason is not None:
            rejected.append((position, Rejection(candidate, SPOT_DEADLINE_SAFETY, reason)))
            continue
        key = order_key(candidate, cost.total_usd, request.gpu_rank_of(candidate.accelerator))
        scored.append((key, position, Scored(candidate, cost)))
    # The position breaks ties between offers equal on every ranking field: catalog order.
    scored.sort(key=lambda row: (row[0], row[1]))
    rejected.sort(key=lambda row: row[0])
    explanation = Explanation(tuple(s for _, _, s in scored), tuple(r for _, r in rejected))
    workload = request.workload
    if not scored:
        return PlacementDecision(workload.workload_id, None, wait_reason(explanation), explanation)
    best = explanation.scored[0]
    placement = Placement(
        workload.workload_id, best.candidate, best.cost, workload.nodes, workload.gpus_per_node
    )
    return PlacementDecision(workload.workload_id, placement, None, explanation)


def wait_reason(explanation: Explanation) -> str:
    """One line: how many candidates, and how many each filter turned down."""
    counts = ", ".join(f"{name} {count}" for name, count in explanation.rejections_by_filter())
    total = len(explanation.rejected)
    if total == 0:
        return "wait: the snapshot has no offers or commitments to consider"
    return f"wait: none of {total} candidates passed the filters ({counts})"


def _first_rejection(request: Request, candidate: Candidate) -> Rejection | None:
    for candidate_filter in CANDIDATE_FILTERS:
        reason = candidate_filter.check(request, candidate)
        if reason is not None:
            return Rejection(candidate, candidate_filter.name, reason)
    return None


__all__ = ["candidate_cost", "candidates", "explain_request", "wait_reason"]
