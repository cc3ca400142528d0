"""The placement cost model on hand-computed examples."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from broker.core.placement.cost import (
    LIMITED_AVAILABILITY_PENALTY,
    CostTerms,
    Location,
    commitment_cost,
    finish_at,
    move_cost,
    offer_cost,
    offer_total,
    slack_microseconds,
)
from broker.core.workload import GangScope
from pricing.egress import egress_per_gb
from tests.core.placement.builders import NOW, workload

D = Decimal


def test_on_demand_costs_price_times_nodes_times_run_plus_restart() -> None:
    terms = CostTerms.of(workload(hours="10", nodes=2, restart_overhead_hours=D("0.5")))
    cost = offer_cost(terms, D("8"), None, False, D(0), NOW)
    assert cost.run_usd == D("168")  # 8 $/h × 2 nodes × 10.5 h
    assert cost.preemption_usd == 0
    assert cost.total_usd == D("168")
    assert cost.wall_hours == D("10.5")
    assert cost.expected_finish == NOW + timedelta(hours=10, minutes=30)


def test_spot_adds_expected_preemptions_times_restart_and_half_a_checkpoint_interval() -> None:
    terms = CostTerms.of(
        workload(hours="10", restart_overhead_hours=D("0.5"), checkpoint_interval_hours=D("2"))
    )
    # λ = 0.1/h over 10 h: 1 preemption, each losing 0.5 h restart + 1 h (half the interval).
    cost = offer_cost(terms, D("4"), D("0.1"), False, D(0), NOW)
    assert cost.run_usd == D("42")  # 4 × 10.5
    assert cost.expected_preemptions == D("1")
    assert cost.preemption_usd == D("6")  # 1.5 h × $4
    assert cost.total_usd == D("48")
    assert cost.wall_hours == D("12")  # 10.5 + 1.5


def test_a_gang_loses_every_node_to_any_nodes_preemption() -> None:
    common = {
        "hours": "10", "nodes": 2, "restart_overhead_hours": D("0.5"), "checkpoint_interval_hours": D("2")
    }
    gang = CostTerms.of(workload(gang=GangScope.ZONE, **common))
    loose = CostTerms.of(workload(gang=GangScope.NONE, **common))
    gang_cost = offer_cost(gang, D("4"), D("0.1"), False, D(0), NOW)
    loose_cost = offer_cost(loose, D("4"), D("0.1"), False, D(0), NOW)
    assert gang_cost.expected_preemptions == loose_cost.expected_preemptions == D("2")
    # Gang: 2 interruptions × 1.5 h × 2 nodes × $4 = $24; each interruption delays the run 1.5 h.
    assert gang_cost.preemption_usd == D("24")
    assert gang_cost.total_usd == D("108")
    assert gang_cost.wall_hours == D("13.5")
    # Independent nodes: each node's own preemption costs that node 1.5 h: 2 × 1.5 × $4 = $12.
    assert loose_cost.preemption_usd == D("12")
    assert loose_cost.wall_hours == D("12")


def test_without_checkpoints_a_preemption_loses_half_the_run_on_average() -> None:
    terms = CostTerms.of(workload(hours="10"))
    assert terms.lost_hours == D("5")
    assert offer_cost(terms, D("2"), D("0.1"), False, D(0), NOW).preemption_usd == D("10")  # 1 × 5 h × $2
    # The worst case for the deadline: preempted just before the end, then a full non-spot rerun.
    assert terms.worst_fallback_hours == D("20")


def test_a_checkpoint_interval_longer_than_the_run_is_capped_at_the_run() -> None:
    terms = CostTerms.of(workload(hours="2", restart_overhead_hours=D("1"), checkpoint_interval_hours=D("8")))
    assert terms.lost_hours == D("2")  # 1 h restart + half of 2 h
    assert terms.worst_fallback_hours == D("6")  # 1 + 2 + 1 + 2


def test_limited_availability_adds_a_share_of_the_run_cost() -> None:
    terms = CostTerms.of(workload(hours="10", restart_overhead_hours=D("0.5")))
    cost = offer_cost(terms, D("4"), None, True, D(0), NOW)
    assert cost.availability_usd == D("0.84") == D("42") * LIMITED_AVAILABILITY_PENALTY
    assert cost.total_usd == D("42.84")


def test_commitment_capacity_costs_nothing_at_the_margin_but_the_move() -> None:
    terms = CostTerms.of(workload(hours="10", restart_overhead_hours=D("0.5")))
    assert commitment_cost(terms, D(0), NOW).total_usd == 0
    moved = commitment_cost(terms, D("2"), NOW)
    assert (moved.run_usd, moved.move_usd, moved.total_usd) == (0, D("2"), D("2"))
    assert moved.wall_hours == D("10.5")


def test_offer_total_is_the_breakdowns_total() -> None:
    terms = CostTerms.of(workload(hours="7", nodes=3, restart_overhead_hours=D("0.3")))
    for rate, limited, move in ((None, False, D(0)), (D("0.07"), True, D("1.5")), (D("0"), False, D("3"))):
        cost = offer_cost(terms, D("3.1"), rate, limited, move, NOW)
        assert cost.total_usd == offer_total(terms, D("3.1"), rate, limited, move)
        assert cost.total_usd == cost.run_usd + cost.preemption_usd + cost.availability_usd + cost.move_usd


def test_move_cost_prices_the_checkpoint_at_egress_and_the_restart_at_the_destination() -> None:
    w = workload(nodes=2, checkpoint_gb=D("100"), restart_overhead_hours=D("0.5"))
    move = move_cost(w, Location("aws", "us-east-1"), Location("gcp", "us-central1"), D("8"), egress_per_gb)
    assert move.data_usd == D("9.00")  # 100 GB × AWS internet egress $0.09
    assert move.restart_usd == D("8.0")  # 0.5 h × 2 nodes × $8
    assert move.total_usd == D("17.00")
    same_zone = Location("aws", "us-east-1", "use1-az1")
    assert move_cost(w, same_zone, same_zone, D("8"), egress_per_gb).data_usd == 0


def test_time_helpers() -> None:
    assert slack_microseconds(NOW, NOW + timedelta(hours=1, microseconds=5)) == 3_600_000_005
    assert slack_microseconds(NOW, NOW - timedelta(seconds=1)) == -1_000_000
    assert finish_at(NOW, D("1.5")) == NOW + timedelta(minutes=90)
    assert finish_at(NOW, D("1e12")) is None  # past year 9999: no exception, no date
