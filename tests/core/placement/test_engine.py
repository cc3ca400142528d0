"""Placement decisions on hand-built snapshots: commitments first, spot when safe, explanations complete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from broker.core.placement import (
    Candidate,
    Location,
    PlacementDecision,
    PlacementSnapshot,
    batch_order,
    explain,
    place,
    place_batch,
)
from broker.core.types import Availability
from broker.core.workload import Budget, CapacityPreference, GangScope, PreemptionRate, Quota, Workload
from pricing.bundled import bundled_snapshot
from tests.core.placement.builders import NOW, OD, RESERVED, SPOT, commitment, offer, snapshot, workload

D = Decimal


def both(w: Workload, snap: PlacementSnapshot, origin: Location | None = None) -> PlacementDecision:
    """Decide on both paths, check they agree, return the explained decision."""
    fast, full = place(w, snap, origin=origin), explain(w, snap, origin=origin)
    assert (fast.placement is None) == (full.placement is None)
    if fast.placement is not None and full.placement is not None:
        assert fast.placement == full.placement
    return full


def label(decision: PlacementDecision) -> str:
    assert decision.placement is not None, decision.wait_reason
    return decision.placement.candidate.label


def rejected(decision: PlacementDecision) -> dict[str, str]:
    assert decision.explanation is not None
    return {r.candidate.label: r.filter for r in decision.explanation.rejected}


def test_paid_for_commitment_capacity_is_used_first_at_zero_marginal_cost() -> None:
    snap = snapshot(offer("8"), offer("2", capacity=SPOT), commitments=(commitment(gpu_count=16),))
    decision = both(workload(), snap)
    assert decision.placement is not None
    assert label(decision) == "commitment c1 (aws/us-east-1/use1-az1 p5.48xlarge)"
    assert decision.placement.cost.total_usd == 0
    launch = decision.placement.launch()
    assert (launch.commitment_id, launch.instance_type, launch.count) == ("c1", "p5.48xlarge", 1)
    assert launch.price_per_hour == D("16")  # the contract's $2/GPU-h × 8


def test_commitment_shape_prefers_reserved_then_on_demand_and_honours_its_instance_type() -> None:
    spot = offer("1", capacity=SPOT, instance_type="spot-shape")
    od = offer("9", instance_type="od-shape")
    reserved = offer("5", capacity=RESERVED, instance_type="reserved-shape")
    assert label(both(workload(), snapshot(spot, od, commitments=(commitment(),)))) == (
        "commitment c1 (aws/us-east-1/use1-az1 od-shape)"
    )
    snap = snapshot(spot, od, reserved, commitments=(commitment(),))
    assert "reserved-shape" in label(both(workload(), snap))
    snap = snapshot(spot, od, reserved, commitments=(commitment(instance_type="spot-shape"),))
    assert "spot-shape" in label(both(workload(), snap))


def test_a_full_or_expired_commitment_falls_back_to_the_market() -> None:
    snap = snapshot(offer("8"), commitments=(commitment(gpu_count=8, in_use=4),))
    decision = both(workload(), snap)
    assert label(decision) == "aws/us-east-1/use1-az1 p5.48xlarge on-demand"
    assert rejected(decision)["commitment c1 (aws/us-east-1/use1-az1 p5.48xlarge)"] == "capacity"


def test_reserved_catalog_offers_are_explained_not_used() -> None:
    snap = snapshot(offer("1", capacity=RESERVED), offer("8"))
    decision = both(workload(), snap)
    assert label(decision).endswith("on-demand")
    assert rejected(decision)["aws/us-east-1/use1-az1 p5.48xlarge reserved"] == "reserved-offer"


def test_without_a_deadline_spot_wins_when_its_risk_adjusted_cost_is_lowest() -> None:
    w = workload(hours="10", restart_overhead_hours=D("0.5"), checkpoint_interval_hours=D("1"))
    od, spot = offer("8"), offer("4", capacity=SPOT)
    decision = both(w, snapshot(od, spot))
    assert decision.placement is not None and decision.placement.capacity_type is SPOT
    # Default rate 0.05/h: 0.5 preemptions × 1 h lost × $4 = $2 on top of $42.
    assert decision.placement.cost.total_usd == D("44")
    # A spot market that preempts 1.5 times an hour is worse: 15 × 1 h × $4 = $60 on top of $42.
    risky = (PreemptionRate("aws", "us-east-1", "p5.48xlarge", D("1.5")),)
    decision = both(w, snapshot(od, spot, preemption_rates=risky))
    assert decision.placement is not None and decision.placement.capacity_type is OD
    assert decision.explanation is not None
    assert [s.cost.total_usd for s in decision.explanation.scored] == [D("84"), D("102")]


def test_a_deadline_keeps_spot_only_while_a_worst_case_preemption_leaves_time() -> None:
    common = {"hours": "10", "restart_overhead_hours": D("0.5"), "checkpoint_interval_hours": D("2")}
    od, spot = offer("8"), offer("4", capacity=SPOT)
    # Worst case 0.5 + 2 + 0.5 + 10 = 13 h; expected spot run 10.5 + 0.05 × 10 × 1.5 = 11.25 h.
    safe = workload(deadline=NOW + timedelta(hours=13), **common)
    assert both(safe, snapshot(od, spot)).placement.capacity_type is SPOT  # type: ignore[union-attr]
    tight = workload(deadline=NOW + timedelta(hours=12), **common)
    decision = both(tight, snapshot(od, spot))
    assert label(decision).endswith("on-demand")
    assert rejected(decision)["aws/us-east-1/use1-az1 p5.48xlarge spot"] == "spot-deadline-safety"


def test_spot_only_workloads_take_spot_when_its_expected_run_fits_the_deadline() -> None:
    deadline = NOW + timedelta(hours=11)
    w = workload(capacity=CapacityPreference.SPOT, deadline=deadline, checkpoint_interval_hours=D(1))
    decision = both(w, snapshot(offer("8"), offer("4", capacity=SPOT)))
    assert decision.placement is not None and decision.placement.capacity_type is SPOT  # 10.25 h expected
    late = workload(capacity=CapacityPreference.SPOT, deadline=NOW + timedelta(hours=10, minutes=10))
    assert both(late, snapshot(offer("4", capacity=SPOT))).placement is None


def test_an_unreachable_deadline_means_wait_with_the_numbers() -> None:
    w = workload(hours="10", deadline=NOW + timedelta(hours=5))
    fast = place(w, snapshot(offer("8"), offer("4", capacity=SPOT)))
    assert fast.placement is None
    assert fast.wait_reason == "wait: the run needs 10.00 h, 5.00 h left before the deadline"
    full = explain(w, snapshot(offer("8"), offer("4", capacity=SPOT)))
    assert full.wait_reason == "wait: none of 2 candidates passed the filters (deadline 2)"


def test_wait_reasons_count_the_filters() -> None:
    gcp = offer("9", cloud="gcp", region="us-central1")
    snap = snapshot(offer("8", count=4), offer("8", gpu="A100"), gcp)
    w = workload(denied_clouds=frozenset({"gcp"}))
    full = explain(w, snap)
    assert full.wait_reason == (
        "wait: none of 3 candidates passed the filters (cloud 1, gpu-type 1, gpus-per-node 1)"
    )
    fast = place(w, snap)
    assert fast.wait_reason is not None and "cloud or region 1" in fast.wait_reason


def test_preferred_gpu_type_breaks_a_cost_tie() -> None:
    w = workload(gpu_types=("A100-80GB", "H100"))
    snap = snapshot(offer("8", gpu="H100"), offer("8", gpu="A100-80GB", instance_type="p4de.24xlarge"))
    assert "p4de.24xlarge" in label(both(w, snap))


def test_a_free_offer_of_the_preferred_gpu_beats_a_commitment_of_the_other_on_a_tie() -> None:
    # Both cost $0: the preferred GPU type decides, even though commitments are looked at first.
    w = workload(gpu_types=("H100", "A100"))
    snap = snapshot(offer("0"), offer("9", gpu="A100"), commitments=(commitment(gpu="A100"),))
    assert label(both(w, snap)) == "aws/us-east-1/use1-az1 p5.48xlarge on-demand"


def test_limited_availability_tips_an_equal_price_to_the_available_offer() -> None:
    limited = offer("8", zone="use1-az1", availability=Availability.LIMITED)
    plenty = offer("8", zone="use1-az2", availability=Availability.AVAILABLE)
    assert "use1-az2" in label(both(workload(), snapshot(limited, plenty)))


def test_moving_a_checkpoint_is_priced_into_the_choice() -> None:
    w = workload(checkpoint_gb=D("1000"))
    aws = offer("8")
    gcp = offer("8.05", cloud="gcp", region="us-central1", zone="us-central1-a", instance_type="a3")
    assert label(both(w, snapshot(aws, gcp))).startswith("aws/")
    # From GCP, leaving costs 1000 GB × $0.12 = $120; staying costs $0.50 more in compute.
    decision = both(w, snapshot(aws, gcp), origin=Location("gcp", "us-central1", "us-central1-a"))
    assert label(decision).startswith("gcp/")
    assert decision.explanation is not None
    assert [s.cost.move_usd for s in decision.explanation.scored] == [D(0), D("120.00")]


def test_a_gang_needs_all_its_instances_on_one_offer() -> None:
    small, big = offer("8", zone="use1-az1"), offer("9", zone="use1-az2")
    snap = snapshot(small, big, available={small.key: 2, big.key: 3})
    w = workload(nodes=3, gang=GangScope.ZONE)
    decision = both(w, snap)
    assert "use1-az2" in label(decision)
    assert decision.placement is not None and decision.placement.launch().count == 3


def test_explanation_lists_every_candidate_once_winner_first() -> None:
    offers = (offer("8"), offer("4", capacity=SPOT), offer("1", gpu="L4", count=1), offer("7", count=4))
    snap = snapshot(*offers, commitments=(commitment(gpu_count=8, in_use=8),))
    decision = both(workload(), snap)
    assert decision.explanation is not None
    considered = [s.candidate for s in decision.explanation.scored] + [
        r.candidate for r in decision.explanation.rejected
    ]
    assert len(considered) == len(offers) + 1
    assert {c.offer for c in considered if c.commitment is None} == set(offers)
    assert decision.placement is not None
    assert decision.explanation.scored[0].candidate == decision.placement.candidate
    assert all(r.reason for r in decision.explanation.rejected)


def test_launch_key_is_derived_from_the_placement() -> None:
    decision = place(workload(max_price_per_gpu_hour=D("1")), snapshot(offer("4", capacity=SPOT)))
    assert decision.placement is not None
    first, again = decision.placement.launch(D("1")), decision.placement.launch(D("1"))
    assert first == again and first.idempotency_key.startswith("c")
    assert first.max_price_per_hour == D("8")
    other = place(workload("w2"), snapshot(offer("4", capacity=SPOT))).placement
    assert other is not None and other.launch().idempotency_key != first.idempotency_key


def test_observed_preemption_rates_replace_the_default() -> None:
    a = offer("4", capacity=SPOT, zone="use1-az1")
    b = offer("4.1", capacity=SPOT, region="us-west-2", zone="usw2-az1")
    quiet_west = (PreemptionRate("aws", "us-west-2", "p5.48xlarge", D("0")),)
    assert "us-east-1" in label(both(workload(), snapshot(a, b)))
    assert "us-west-2" in label(both(workload(), snapshot(a, b, preemption_rates=quiet_west)))


def test_batch_places_earliest_deadline_first_and_takes_capacity_as_it_goes() -> None:
    cheap, dear = offer("8", zone="use1-az1"), offer("9", zone="use1-az2")
    snap = snapshot(
        cheap, dear,
        available={cheap.key: 1, dear.key: 1},
        quotas=(Quota("aws", max_gpus=24),),
        budgets=(Budget("ml", max_usd_per_month=D("1000")),),
    )
    relaxed = workload("a-relaxed", project="ml")
    urgent = workload("b-urgent", project="ml", deadline=NOW + timedelta(hours=20))
    third = workload("c-third", project="ml")
    result = place_batch([relaxed, third, urgent], snap)
    assert [d.workload_id for d in result.decisions] == ["b-urgent", "a-relaxed", "c-third"]
    by_id = result.by_workload()
    assert "use1-az1" in label(by_id["b-urgent"]) and "use1-az2" in label(by_id["a-relaxed"])
    assert by_id["c-third"].placement is None
    assert result.usage.instances == {cheap.key: 1, dear.key: 1}
    assert result.usage.quota_gpus == {0: 16}
    assert result.usage.budget_usd == {"ml": D("170")}
    assert len(result.placed) == 2 and len(result.waiting) == 1


@pytest.mark.parametrize(
    ("limits", "reason_part"),
    [
        ({"quotas": (Quota("aws", max_gpus=16, region="us-east-1"),)}, "quota"),
        ({"budgets": (Budget("ml", max_gpus=16),)}, "project ml has 0 left of its 16"),
        ({"budgets": (Budget("ml", max_usd_per_month=D("200")),)}, "budget"),
        ({"commitments": (commitment(gpu_count=16),), "capacity": CapacityPreference.RESERVED}, "capacity"),
    ],
)
def test_a_batch_stops_at_each_limit(limits: dict[str, object], reason_part: str) -> None:
    # Three 8-GPU workloads at $80 each; every limit above has room for exactly two.
    preference = limits.pop("capacity", CapacityPreference.AUTO)
    o = offer("8")
    snap = snapshot(o, available={o.key: 5}, **limits)
    batch = [workload(f"w{i}", project="ml", capacity=preference) for i in range(3)]
    result = place_batch(batch, snap)
    assert [d.workload_id for d in result.placed] == ["w0", "w1"]
    (waiting,) = result.waiting
    assert waiting.wait_reason is not None and reason_part in waiting.wait_reason


def test_a_batch_stops_at_an_offers_capacity() -> None:
    o = offer("8")
    result = place_batch([workload(f"w{i}") for i in range(3)], snapshot(o, available={o.key: 2}))
    assert len(result.placed) == 2
    assert result.waiting[0].wait_reason is not None and "capacity 1" in result.waiting[0].wait_reason


def test_batch_order_and_validation() -> None:
    late = workload("z", deadline=NOW + timedelta(hours=30))
    soon = workload("y", deadline=(NOW + timedelta(hours=20)).astimezone(UTC))
    free = workload("a")
    assert [w.workload_id for w in batch_order([free, late, soon])] == ["y", "z", "a"]
    with pytest.raises(ValueError, match="unique"):
        place_batch([workload("a"), workload("a")], snapshot())


def test_a_candidate_is_an_offer_or_reserved_capacity_under_a_commitment() -> None:
    with pytest.raises(ValueError, match="offer or a commitment"):
        Candidate(OD, None)
    with pytest.raises(ValueError, match="reserved"):
        Candidate(OD, offer(), commitment())


def test_snapshot_validates_its_inputs() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PlacementSnapshot(now=datetime(2026, 11, 24))  # noqa: DTZ001
    with pytest.raises(ValueError, match="unique"):
        snapshot(commitments=(commitment(), commitment()))
    with pytest.raises(ValueError, match="non-negative int"):
        snapshot(offer(), available={offer().key: -1})
    with pytest.raises(ValueError, match="one budget per project"):
        snapshot(budgets=(Budget("ml"), Budget("ml")))
    with pytest.raises(ValueError, match="stale_after"):
        snapshot(stale_after=timedelta(0))


def test_the_bundled_catalog_places_an_eight_gpu_h100_job() -> None:
    bundle = bundled_snapshot()
    snap = PlacementSnapshot(now=NOW, offers=tuple(bundle.offers), stale_after=timedelta(days=30))
    decision = both(workload(restart_overhead_hours=D("0.25"), checkpoint_interval_hours=D("1")), snap)
    assert decision.placement is not None
    assert decision.placement.candidate.offer is not None
    assert decision.placement.candidate.offer.accelerator_count == 8
    assert decision.explanation is not None
    assert len(decision.explanation.scored) + len(decision.explanation.rejected) == len(bundle.offers)
