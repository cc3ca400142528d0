"""Placement filters: small named checks that say why a candidate is out (pure: no I/O).

Each filter returns None when the candidate passes, else a reason that names the numbers.
Names are stable (an API and the dashboard group rejections by them). The pipeline runs
:data:`CANDIDATE_FILTERS` in order, prices the candidate, runs :data:`COST_FILTERS`, then
:data:`DEADLINE` and :func:`spot_deadline_safety` (which needs to know whether any non-spot
candidate is left to fall back to). A candidate is reported under the first filter that
turns it down.

Documented choices:

* Gang scheduling: all ``nodes`` instances go on one offer (one zone, or one region-wide
  offer that has no zone), whatever the ``gang`` scope; combining offers within a region is
  left out so a decision stays one launch.
* ``max-price`` and ``stale-price`` apply to offers only: capacity under a commitment is paid
  for already and has no market price.
* An offer whose capacity type is ``reserved`` is usable only through a commitment.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

from broker.core.placement.cost import CostBreakdown, hours_in_microseconds, slack_microseconds
from broker.core.placement.decision import Candidate
from broker.core.placement.request import Request
from broker.core.types import Availability, CapacityType
from pricing.core import format_age, price_age


@dataclass(frozen=True, slots=True)
class Filter:
    """A named check on a candidate."""

    name: str
    check: Callable[[Request, Candidate], str | None]


@dataclass(frozen=True, slots=True)
class CostFilter:
    """A named check that needs the candidate's expected cost."""

    name: str
    check: Callable[[Request, Candidate, CostBreakdown], str | None]


def usd(amount: Decimal) -> str:
    return f"${amount:,.2f}"


def hours(amount: Decimal) -> str:
    return f"{amount:,.2f} h"


def _gpu_type(request: Request, candidate: Candidate) -> str | None:
    if candidate.accelerator.casefold() in request.gpu_rank:
        return None
    return f"accelerator {candidate.accelerator} is not among {', '.join(request.workload.gpu_types)}"


def _gpus_per_node(request: Request, candidate: Candidate) -> str | None:
    wanted = request.workload.gpus_per_node
    commitment = candidate.commitment
    if commitment is not None:
        if candidate.offer is not None:
            return None
        narrowed = " ".join(
            p for p in (commitment.zone, commitment.instance_type) if p
        )
        return (
            f"no offer in the snapshot gives a {wanted}x {commitment.accelerator} instance in "
            f"{commitment.cloud}/{commitment.region}{' ' + narrowed if narrowed else ''} for this commitment"
        )
    assert candidate.offer is not None
    count = candidate.offer.accelerator_count
    return None if count == wanted else f"{count} GPUs per instance, the workload needs {wanted} per node"


def _reserved_offer(request: Request, candidate: Candidate) -> str | None:
    if candidate.commitment is None and candidate.capacity_type is CapacityType.RESERVED:
        return "reserved capacity is usable only through a commitment in force, not bought from the catalog"
    return None


def _capacity_preference(request: Request, candidate: Candidate) -> str | None:
    wanted = request.workload.capacity
    if wanted.allows(candidate.capacity_type):
        return None
    return f"capacity {candidate.capacity_type.value}, the workload asks for {wanted.value}"


def _interruptible(request: Request, candidate: Candidate) -> str | None:
    if candidate.capacity_type is CapacityType.SPOT and not request.workload.interruptible:
        return "spot can be preempted and the workload is not interruptible"
    return None


def _cloud(request: Request, candidate: Candidate) -> str | None:
    cloud = candidate.cloud.casefold()
    if cloud in request.denied_clouds:
        return f"cloud {candidate.cloud} is denied"
    if request.allowed_clouds and cloud not in request.allowed_clouds:
        return f"cloud {candidate.cloud} is not among {', '.join(sorted(request.workload.allowed_clouds))}"
    return None


def _region(request: Request, candidate: Candidate) -> str | None:
    region = candidate.region.casefold()
    if region in request.denied_regions:
        return f"region {candidate.region} is denied"
    if request.allowed_regions and region not in request.allowed_regions:
        return f"region {candidate.region} is not among {', '.join(sorted(request.workload.allowed_regions))}"
    return None


def _max_price(request: Request, candidate: Candidate) -> str | None:
    limit = request.workload.max_price_per_gpu_hour
    offer = candidate.offer
    if limit is None or candidate.commitment is not None or offer is None:
        return None
    # Compare per instance (exact in Decimal); the reason shows the per-GPU figure users think in.
    if offer.price_per_hour <= limit * offer.accelerator_count:
        return None
    return f"${offer.price_per_gpu_hour:.4f}/GPU-h is above the ${limit}/GPU-h limit"


def _stale_price(request: Request, candidate: Candidate) -> str | None:
    snapshot = request.snapshot
    offer = candidate.offer
    if candidate.commitment is not None or offer is None or not snapshot.is_stale(offer):
        return None
    assert snapshot.stale_after is not None
    age = format_age(price_age(offer.observed_at, snapshot.now))
    limit = format_age(snapshot.stale_after)
    return f"price is {age} old (seen {offer.observed_at.isoformat()}), older than {limit}"


def _unavailable(request: Request, candidate: Candidate) -> str | None:
    offer = candidate.offer
    if candidate.commitment is None and offer is not None and offer.availability is Availability.UNAVAILABLE:
        return f"{offer.cloud} says {offer.instance_type} {offer.capacity_type.value} is unavailable"
    return None


def _commitment_term(request: Request, candidate: Candidate) -> str | None:
    commitment = candidate.commitment
    if commitment is None:
        return None
    now = request.snapshot.now
    if now < commitment.starts_at:
        return f"commitment starts {commitment.starts_at.isoformat()}, after now ({now.isoformat()})"
    if now >= commitment.ends_at:
        return f"commitment ended {commitment.ends_at.isoformat()}"
    left_us = slack_microseconds(now, commitment.ends_at)
    if hours_in_microseconds(request.terms.wall_hours) > left_us:
        left = Decimal(left_us) / 3_600_000_000
        return (
            f"commitment ends {commitment.ends_at.isoformat()}, {hours(left)} from now; "
            f"the run needs {hours(request.terms.wall_hours)}"
        )
    return None


def _capacity(request: Request, candidate: Candidate) -> str | None:
    commitment = candidate.commitment
    if commitment is not None:
        free = request.commitment_gpus_free(commitment)
        if free >= request.total_gpus:
            return None
        return f"needs {request.total_gpus} GPUs, commitment has {free} free of {commitment.gpu_count}"
    assert candidate.offer is not None
    free_instances = request.free_instances(candidate.offer.key)
    nodes = request.workload.nodes
    if free_instances is None or free_instances >= nodes:
        return None
    return f"needs {nodes} instances in one place, {free_instances} available"


def _quota(request: Request, candidate: Candidate) -> str | None:
    cloud, region = candidate.cloud.casefold(), candidate.region.casefold()
    return request.quota_shortfall(cloud, region, candidate.capacity_type)


def _budget_gpus(request: Request, candidate: Candidate) -> str | None:
    left = request.budget_gpus_left
    if left is None or left >= request.total_gpus:
        return None
    assert request.budget is not None
    return (
        f"needs {request.total_gpus} GPUs, project {request.budget.project} has {max(left, 0)} left "
        f"of its {request.budget.max_gpus}"
    )


def _budget_usd(request: Request, candidate: Candidate, cost: CostBreakdown) -> str | None:
    left = request.budget_usd_left
    if left is None or cost.total_usd <= left:
        return None
    assert request.budget is not None
    return (
        f"expected cost {usd(cost.total_usd)} is more than the {usd(max(left, Decimal(0)))} "
        f"left of project {request.budget.project}'s monthly budget"
    )


def _deadline(request: Request, candidate: Candidate, cost: CostBreakdown) -> str | None:
    slack = request.slack_us
    if slack is None or hours_in_microseconds(cost.wall_hours) <= slack:
        return None
    reserve = " including the spot preemption reserve" if candidate.capacity_type is CapacityType.SPOT else ""
    return (
        f"needs {hours(cost.wall_hours)}{reserve}, "
        f"{hours(Decimal(slack) / 3_600_000_000)} left before the deadline"
    )


def spot_deadline_safety(request: Request, candidate: Candidate, fallback_exists: bool) -> str | None:
    """Spot only if a worst-case preemption still leaves a non-spot candidate time to finish.

    Worst case: preempted just before a checkpoint (or before the end, without checkpoints),
    then a fresh non-spot start that redoes the rest. With no non-spot candidate left at all,
    spot cannot make the deadline any less reachable; then only the ``deadline`` filter applies.
    """
    slack = request.slack_us
    if slack is None or candidate.capacity_type is not CapacityType.SPOT or not fallback_exists:
        return None
    worst = request.terms.worst_fallback_hours
    if hours_in_microseconds(worst) <= slack:
        return None
    return (
        f"a worst-case preemption then a non-spot restart needs {hours(worst)}, "
        f"{hours(Decimal(slack) / 3_600_000_000)} left before the deadline"
    )


SPOT_DEADLINE_SAFETY = "spot-deadline-safety"

CANDIDATE_FILTERS: tuple[Filter, ...] = (
    Filter("gpu-type", _gpu_type),
    Filter("gpus-per-node", _gpus_per_node),
    Filter("reserved-offer", _reserved_offer),
    Filter("capacity-preference", _capacity_preference),
    Filter("interruptible", _interruptible),
    Filter("cloud", _cloud),
    Filter("region", _region),
    Filter("max-price", _max_price),
    Filter("stale-price", _stale_price),
    Filter("unavailable", _unavailable),
    Filter("commitment-term", _commitment_term),
    Filter("capacity", _capacity),
    Filter("quota", _quota),
    Filter("budget-gpus", _budget_gpus),
)

COST_FILTERS: tuple[CostFilter, ...] = (CostFilter("budget-usd", _budget_usd),)

# Runs after the fallback question is settled: a non-spot candidate that fails only this one
# still counts as "could run", which is what the spot safety rule is about.
DEADLINE = CostFilter("deadline", _deadline)

# The filters that can still turn a commitment down once its GPU type matches, reserved
# capacity is allowed and the GPU budget fits; the rest never do (a commitment is not spot,
# has no market price and no price age). Cheapest and most selective first: the fast path's order.
COMMITMENT_FILTERS: tuple[Filter, ...] = tuple(
    f for name in ("gpus-per-node", "commitment-term", "capacity", "cloud", "region", "quota")
    for f in CANDIDATE_FILTERS if f.name == name
)

FILTER_NAMES: tuple[str, ...] = (
    *(f.name for f in CANDIDATE_FILTERS),
    *(f.name for f in COST_FILTERS),
    DEADLINE.name,
    SPOT_DEADLINE_SAFETY,
)

FILTERS_BY_NAME: Mapping[str, Filter | CostFilter] = MappingProxyType(
    {f.name: f for f in (*CANDIDATE_FILTERS, *COST_FILTERS, DEADLINE)}
)


__all__ = [
    "CANDIDATE_FILTERS",
    "COMMITMENT_FILTERS",
    "COST_FILTERS",
    "DEADLINE",
    "FILTERS_BY_NAME",
    "FILTER_NAMES",
    "SPOT_DEADLINE_SAFETY",
    "CostFilter",
    "Filter",
    "spot_deadline_safety",
]
