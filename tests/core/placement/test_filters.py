"""Each placement filter on its own: passes what it should, and names the numbers when it rejects."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from broker.core.placement.cost import offer_cost
from broker.core.placement.decision import Candidate
from broker.core.placement.filters import (
    CANDIDATE_FILTERS,
    FILTER_NAMES,
    FILTERS_BY_NAME,
    CostFilter,
    Filter,
    spot_deadline_safety,
)
from broker.core.placement.request import Request, Usage
from broker.core.placement.snapshot import PlacementSnapshot
from broker.core.types import Availability, CapacityType, Offer
from broker.core.workload import Budget, CapacityPreference, Quota, Workload
from tests.core.placement.builders import NOW, OD, RESERVED, SPOT, commitment, offer, snapshot, workload

D = Decimal


def check(name: str, w: Workload, candidate: Candidate, snap: PlacementSnapshot | None = None) -> str | None:
    rule = FILTERS_BY_NAME[name]
    assert isinstance(rule, Filter)
    return rule.check(Request(w, snap or snapshot()), candidate)


def cost_check(name: str, w: Workload, o: Offer, snap: PlacementSnapshot | None = None) -> str | None:
    rule = FILTERS_BY_NAME[name]
    assert isinstance(rule, CostFilter)
    request = Request(w, snap or snapshot(o))
    rate = D("0.1") if o.capacity_type is SPOT else None
    cost = offer_cost(request.terms, o.price_per_hour, rate, False, D(0), NOW)
    return rule.check(request, Candidate(o.capacity_type, o), cost)


def of(o: Offer) -> Candidate:
    return Candidate(o.capacity_type, o)


def test_filter_names_are_stable_and_unique() -> None:
    assert FILTER_NAMES == (
        "gpu-type", "gpus-per-node", "reserved-offer", "capacity-preference", "interruptible", "cloud",
        "region", "max-price", "stale-price", "unavailable", "commitment-term", "capacity", "quota",
        "budget-gpus", "budget-usd", "deadline", "spot-deadline-safety",
    )
    assert len(set(FILTER_NAMES)) == len(FILTER_NAMES)
    assert [f.name for f in CANDIDATE_FILTERS] == list(FILTER_NAMES[:14])


def test_gpu_type_matches_any_listed_type_case_insensitively() -> None:
    w = workload(gpu_types=("H100", "A100-80GB"))
    assert check("gpu-type", w, of(offer(gpu="a100-80gb"))) is None
    assert check("gpu-type", w, of(offer(gpu="L4"))) == "accelerator L4 is not among H100, A100-80GB"


def test_gpus_per_node_needs_the_exact_instance_size() -> None:
    assert check("gpus-per-node", workload(gpus_per_node=8), of(offer(count=8))) is None
    reason = check("gpus-per-node", workload(gpus_per_node=8), of(offer(count=4)))
    assert reason == "4 GPUs per instance, the workload needs 8 per node"


def test_gpus_per_node_rejects_a_commitment_without_an_instance_shape() -> None:
    c = commitment(zone="use1-az9")
    reason = check("gpus-per-node", workload(), Candidate(RESERVED, None, c))
    assert reason is not None and "8x H100" in reason and "use1-az9" in reason
    assert check("gpus-per-node", workload(), Candidate(RESERVED, offer(), c)) is None


def test_reserved_catalog_offers_are_only_usable_through_a_commitment() -> None:
    reserved = offer(capacity=RESERVED)
    reason = check("reserved-offer", workload(), of(reserved))
    assert reason is not None and "only through a commitment" in reason
    assert check("reserved-offer", workload(), Candidate(RESERVED, reserved, commitment())) is None


@pytest.mark.parametrize(
    ("preference", "capacity", "passes"),
    [
        (CapacityPreference.AUTO, SPOT, True),
        (CapacityPreference.SPOT, SPOT, True),
        (CapacityPreference.SPOT, OD, False),
        (CapacityPreference.ON_DEMAND, SPOT, False),
        (CapacityPreference.RESERVED, OD, False),
    ],
)
def test_capacity_preference(preference: CapacityPreference, capacity: CapacityType, passes: bool) -> None:
    reason = check("capacity-preference", workload(capacity=preference), of(offer(capacity=capacity)))
    assert (reason is None) is passes
    if not passes:
        assert reason == f"capacity {capacity.value}, the workload asks for {preference.value}"


def test_interruptible_keeps_non_interruptible_work_off_spot() -> None:
    w = workload(interruptible=False)
    assert check("interruptible", w, of(offer(capacity=SPOT))) == (
        "spot can be preempted and the workload is not interruptible"
    )
    assert check("interruptible", w, of(offer(capacity=OD))) is None
    assert check("interruptible", workload(), of(offer(capacity=SPOT))) is None


def test_cloud_allow_and_deny() -> None:
    assert check("cloud", workload(allowed_clouds=frozenset({"AWS"})), of(offer(cloud="aws"))) is None
    assert check("cloud", workload(allowed_clouds=frozenset({"gcp", "azure"})), of(offer())) == (
        "cloud aws is not among azure, gcp"
    )
    assert check("cloud", workload(denied_clouds=frozenset({"aws"})), of(offer())) == "cloud aws is denied"


def test_region_allow_and_deny() -> None:
    assert check("region", workload(allowed_regions=frozenset({"us-east-1"})), of(offer())) is None
    assert check("region", workload(allowed_regions=frozenset({"us-west-2"})), of(offer())) == (
        "region us-east-1 is not among us-west-2"
    )
    assert check("region", workload(denied_regions=frozenset({"us-east-1"})), of(offer())) == (
        "region us-east-1 is denied"
    )


def test_max_price_compares_per_gpu_hour_and_ignores_commitments() -> None:
    w = workload(max_price_per_gpu_hour=D("3"))
    assert check("max-price", w, of(offer("24"))) is None  # exactly $3/GPU-h
    assert check("max-price", w, of(offer("24.08"))) == "$3.0100/GPU-h is above the $3/GPU-h limit"
    assert check("max-price", w, Candidate(RESERVED, offer("80"), commitment())) is None


def test_stale_price_shows_the_age_and_the_limit() -> None:
    old = offer(observed_at=NOW - timedelta(days=3))
    snap = snapshot(old, stale_after=timedelta(days=1))
    reason = check("stale-price", workload(), of(old), snap)
    assert reason is not None and reason.startswith("price is 3d old") and reason.endswith("older than 1d")
    assert check("stale-price", workload(), of(offer()), snap) is None
    assert check("stale-price", workload(), of(old), snapshot(old)) is None  # no limit set


def test_unavailable_offers_are_out_limited_ones_are_not() -> None:
    reason = check("unavailable", workload(), of(offer(availability=Availability.UNAVAILABLE)))
    assert reason == "aws says p5.48xlarge on-demand is unavailable"
    assert check("unavailable", workload(), of(offer(availability=Availability.LIMITED))) is None


def test_commitment_term_must_cover_the_whole_run() -> None:
    w = workload(hours="10", restart_overhead_hours=D("1"))
    assert check("commitment-term", w, Candidate(RESERVED, offer(), commitment())) is None
    not_yet = check("commitment-term", w, Candidate(RESERVED, offer(), commitment(starts=timedelta(hours=1))))
    assert not_yet is not None and not_yet.startswith("commitment starts")
    over = commitment(starts=timedelta(days=-9), ends=timedelta(0))
    ended = check("commitment-term", w, Candidate(RESERVED, offer(), over))
    assert ended is not None and ended.startswith("commitment ended")
    short = check("commitment-term", w, Candidate(RESERVED, offer(), commitment(ends=timedelta(hours=10))))
    assert short is not None and "10.00 h from now; the run needs 11.00 h" in short


def test_capacity_counts_instances_for_offers_and_gpus_for_commitments() -> None:
    o = offer()
    w = workload(nodes=3)
    assert check("capacity", w, of(o), snapshot(o)) is None  # unknown capacity is not held against it
    assert check("capacity", w, of(o), snapshot(o, available={o.key: 3})) is None
    assert check("capacity", w, of(o), snapshot(o, available={o.key: 2})) == (
        "needs 3 instances in one place, 2 available"
    )
    c = commitment(gpu_count=32, in_use=16)
    assert check("capacity", w, Candidate(RESERVED, o, c)) == "needs 24 GPUs, commitment has 16 free of 32"
    assert check("capacity", workload(nodes=2), Candidate(RESERVED, o, c)) is None


def test_capacity_subtracts_what_a_batch_already_took() -> None:
    o = offer()
    snap = snapshot(o, available={o.key: 2})
    rule = FILTERS_BY_NAME["capacity"]
    assert isinstance(rule, Filter)
    assert rule.check(Request(workload(), snap, Usage(instances={o.key: 1})), of(o)) is None
    assert rule.check(Request(workload(), snap, Usage(instances={o.key: 2})), of(o)) == (
        "needs 1 instances in one place, 0 available"
    )


def test_quota_matches_cloud_region_and_capacity_type() -> None:
    o = offer()
    quotas = (
        Quota("aws", max_gpus=100, region="us-west-2"),  # other region: does not apply
        Quota("aws", max_gpus=100, capacity_type=SPOT),  # other capacity: does not apply
        Quota("AWS", max_gpus=20, gpus_in_use=16, region="us-east-1", capacity_type=OD),
    )
    snap = snapshot(o, quotas=quotas)
    assert check("quota", workload(gpus_per_node=4), of(offer(count=4)), snap) is None
    assert check("quota", workload(), of(o), snap) == (
        "needs 8 GPUs, quota AWS/us-east-1/on-demand has 4 free of 20"
    )


def test_budget_gpus_applies_to_the_workloads_project_only() -> None:
    snap = snapshot(offer(), budgets=(Budget("ml", max_gpus=10, gpus_in_use=4),))
    assert check("budget-gpus", workload(project="ml"), of(offer()), snap) == (
        "needs 8 GPUs, project ml has 6 left of its 10"
    )
    assert check("budget-gpus", workload(project="other"), of(offer()), snap) is None
    assert check("budget-gpus", workload(project="ml", gpus_per_node=4), of(offer(count=4)), snap) is None


def test_budget_usd_needs_the_expected_cost_to_fit_the_month() -> None:
    o = offer("10")  # 10 h × $10 = $100
    budget = Budget("ml", max_usd_per_month=D("500"), spent_usd_this_month=D("450"))
    reason = cost_check("budget-usd", workload(project="ml"), o, snapshot(o, budgets=(budget,)))
    assert reason == "expected cost $100.00 is more than the $50.00 left of project ml's monthly budget"
    roomy = Budget("ml", max_usd_per_month=D("500"), spent_usd_this_month=D("400"))
    assert cost_check("budget-usd", workload(project="ml"), o, snapshot(o, budgets=(roomy,))) is None


def test_deadline_includes_the_restart_and_for_spot_the_preemption_reserve() -> None:
    w = workload(hours="10", restart_overhead_hours=D("1"), deadline=NOW + timedelta(hours=11))
    assert cost_check("deadline", w, offer()) is None  # exactly 11 h
    late = workload(hours="10", restart_overhead_hours=D("1"), deadline=NOW + timedelta(hours=10))
    assert cost_check("deadline", late, offer()) == "needs 11.00 h, 10.00 h left before the deadline"
    # Spot at λ = 0.1: 10 h × 0.1 × (1 h restart + 5 h lost) = 6 h reserve.
    spot_reason = cost_check("deadline", w, offer(capacity=SPOT))
    assert spot_reason == (
        "needs 17.00 h including the spot preemption reserve, 11.00 h left before the deadline"
    )


def test_spot_deadline_safety_needs_room_for_a_worst_case_preemption() -> None:
    spot = of(offer(capacity=SPOT))
    common = {"hours": "10", "restart_overhead_hours": D("1"), "checkpoint_interval_hours": D("2")}
    # Worst case: 1 h boot + 2 h lost + 1 h restart + 10 h = 14 h.
    roomy = Request(workload(deadline=NOW + timedelta(hours=14), **common), snapshot())
    tight = Request(workload(deadline=NOW + timedelta(hours=13), **common), snapshot())
    assert spot_deadline_safety(roomy, spot, fallback_exists=True) is None
    assert spot_deadline_safety(tight, spot, fallback_exists=True) == (
        "a worst-case preemption then a non-spot restart needs 14.00 h, 13.00 h left before the deadline"
    )
    # With nothing to fall back to, spot cannot make matters worse.
    assert spot_deadline_safety(tight, spot, fallback_exists=False) is None
    assert spot_deadline_safety(tight, of(offer()), fallback_exists=True) is None


def test_filters_pass_a_plain_candidate() -> None:
    o = offer()
    request = Request(workload(), snapshot(o))
    assert [f.name for f in CANDIDATE_FILTERS if f.check(request, of(o)) is not None] == []
    spot = replace(o, capacity_type=SPOT)
    assert [f.name for f in CANDIDATE_FILTERS if f.check(Request(workload(), snapshot(spot)), of(spot))] == []
