"""One test per migration trigger: the plan's commands, their order, the money, the stay reasons."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

from broker.core.commands import CutOver, Launch, Terminate, WaitForCheckpoint
from broker.core.migration import (
    CommitmentFreed,
    DeadlineAtRisk,
    Decision,
    LaunchRefused,
    Move,
    MoveKind,
    Preempted,
    PreemptionNotice,
    PriceChanged,
    Rebalance,
    Refusal,
    Trigger,
    decide,
    launch_key,
)
from broker.core.types import CapacityType
from tests.core.migration.builders import NOW, POLICY, replacement, running, workload


def kinds(decision: Decision) -> list[str]:
    return [type(c).__name__ for c in decision.plan.commands]


def launch_of(decision: Decision) -> Launch:
    first = decision.plan.commands[0]
    assert isinstance(first, Launch)
    return first


# --- rebalance: a cheaper offer by more than the cost of moving -------------------------------


def test_rebalance_moves_when_the_saving_beats_cost_and_margin():
    r = running()
    target = replacement("30")
    d = decide(Rebalance(at=NOW), r, [target], POLICY, NOW)
    assert d.migrates and d.kind is MoveKind.VOLUNTARY and d.trigger is Trigger.REBALANCE
    assert kinds(d) == ["Launch", "WaitForCheckpoint", "CutOver", "Terminate"]
    launch, wait, cut, term = d.plan.commands
    assert isinstance(launch, Launch) and isinstance(wait, WaitForCheckpoint)
    assert isinstance(cut, CutOver) and isinstance(term, Terminate)
    assert (launch.cloud, launch.instance_type, launch.count, launch.price_per_hour) == (
        "gcp",
        "a3-highgpu-8g",
        1,
        Decimal(30),
    )
    assert launch.idempotency_key == launch_key("w1", 3, target)
    assert wait.instance_ids == ("i-old-1",) and wait.timeout_seconds == 900
    assert cut.launch_key == launch.idempotency_key and cut.from_instance_ids == ("i-old-1",)
    assert (term.instance_id, term.cloud, term.region) == ("i-old-1", "aws", "us-east-1")
    # Hand-computed in test_cost: saving 800, cost 43, margin 9.60.
    assert d.economics is not None and d.economics.cost.total == Decimal(43)
    assert d.reason == "rebalance: move to gcp/us-central1/us-central1-a/a3-highgpu-8g/on-demand" \
        " (saving $800.00 > move cost $43.00 + margin $9.60)"
    assert d.plan.reason == d.reason
    assert d.move == Move(from_key=r.key, to_key=target.key, at=NOW, kind=MoveKind.VOLUNTARY)


def test_rebalance_stays_when_the_saving_does_not_cover_cost_and_margin():
    # saving 0.5 × 80 = 40; cost 18 + 0.5 × 39.5 + 0.25 × 40 = 47.75; margin 10.55
    d = decide(Rebalance(at=NOW), running(), [replacement("39.5")], POLICY, NOW)
    assert not d.migrates and d.plan.commands == ()
    assert "stay (saving $40.00 ≤ move cost $47.75 + margin $10.55 for gcp/" in d.reason
    assert d.economics is not None and d.economics.saving == Decimal(40)
    assert d.move is None and d.kind is None


def test_rebalance_stays_inside_the_margin_even_when_saving_exceeds_cost():
    d = decide(Rebalance(at=NOW), running(), [replacement("39.3")], POLICY, NOW)
    assert not d.migrates
    assert "saving $56.00 ≤ move cost $47.65 + margin $10.53" in d.reason


def test_rebalance_takes_the_first_replacement_that_pays_in_the_callers_order():
    poor = replacement("39.9", cloud="azure")
    good = replacement("35", cloud="lambda")
    better = replacement("20", cloud="runpod")
    d = decide(Rebalance(at=NOW), running(), [poor, good, better], POLICY, NOW)
    assert d.target == good
    assert [r.offer_key[0] for r in d.rejections] == ["azure"]
    assert d.rejections[0].reason.startswith("saving $8.00 ≤ move cost")


def test_rebalance_respects_min_dwell():
    fresh = running(started_at=NOW - timedelta(minutes=20))
    d = decide(Rebalance(at=NOW), fresh, [replacement("1")], POLICY, NOW)
    assert not d.migrates
    assert d.reason == (
        "rebalance: stay (on aws/us-east-1/us-east-1a/p5.48xlarge/on-demand for 20m, min dwell 1h)"
    )


def test_rebalance_never_moves_back_within_the_cooldown():
    target = replacement("1")
    r = running(moves=(Move(target.key, running().key, NOW - timedelta(hours=2), MoveKind.VOLUNTARY),))
    d = decide(Rebalance(at=NOW), r, [target], POLICY, NOW)
    assert not d.migrates
    assert "left 2h ago (cooldown 6h)" in d.reason
    later = decide(Rebalance(at=NOW), r, [target], POLICY, NOW + timedelta(hours=4))
    assert later.migrates


def test_rebalance_skips_the_offer_it_runs_on_and_says_so_when_nothing_is_offered():
    r = running()
    same = replacement("1", cloud="aws", region="us-east-1", zone="us-east-1a", instance_type="p5.48xlarge")
    d = decide(Rebalance(at=NOW), r, [same], POLICY, NOW)
    assert not d.migrates and d.rejections[0].reason == "where it runs now"
    assert decide(Rebalance(at=NOW), r, [], POLICY, NOW).reason == "rebalance: stay (no replacement offered)"


def test_a_workload_under_a_commitment_never_moves_voluntarily():
    r = running(price_per_hour=Decimal(0), commitment_id="ri-1")
    d = decide(Rebalance(at=NOW), r, [replacement("0.01")], POLICY, NOW)
    assert not d.migrates and d.economics is not None and d.economics.saving < 0


def test_not_interruptible_never_moves_to_spot():
    r = running(workload=workload(interruptible=False))
    d = decide(Rebalance(at=NOW), r, [replacement("1", capacity_type=CapacityType.SPOT)], POLICY, NOW)
    assert not d.migrates and "not interruptible" in d.reason


# --- price change ----------------------------------------------------------------------------


def test_price_rise_where_it_runs_makes_a_move_pay():
    # The snapshot still says $40; the event says $45: saving (45 − 39.3) × 80 = 456.
    r = running()
    event = PriceChanged(offer_key=r.key, old_price=Decimal(40), new_price=Decimal(45), at=NOW)
    d = decide(event, r, [replacement("39.3")], POLICY, NOW)
    assert d.migrates and d.trigger is Trigger.PRICE_CHANGED
    assert d.economics is not None and d.economics.saving == Decimal(456)
    # Overlap is paid at the new current price: 0.25 h × 45.
    assert d.economics.cost.overlap == Decimal("11.25")
    assert d.reason.startswith(
        "aws/us-east-1/us-east-1a/p5.48xlarge/on-demand now $45.00/h (was $40.00): move"
    )


def test_price_drop_of_a_replacement_is_applied_from_the_event():
    target = replacement("39.5")
    event = PriceChanged(offer_key=target.key, old_price=Decimal("39.5"), new_price=Decimal(30), at=NOW)
    d = decide(event, running(), [target], POLICY, NOW)
    assert d.migrates and launch_of(d).price_per_hour == Decimal(30)


def test_price_change_under_a_commitment_keeps_the_marginal_price_at_zero():
    r = running(price_per_hour=Decimal(0), commitment_id="ri-1")
    event = PriceChanged(offer_key=r.key, old_price=Decimal(40), new_price=Decimal(400), at=NOW)
    d = decide(event, r, [replacement("30")], POLICY, NOW)
    assert not d.migrates


# --- commitment freed ------------------------------------------------------------------------


def test_commitment_freed_moves_onto_zero_marginal_capacity():
    elsewhere = replacement("20", cloud="lambda")
    reserved = replacement(
        "0", capacity_type=CapacityType.RESERVED, commitment_id="cb-1", egress_per_gb=Decimal("0.02")
    )
    d = decide(CommitmentFreed("cb-1", gpus_free=8, at=NOW), running(), [elsewhere, reserved], POLICY, NOW)
    assert d.migrates and d.target == reserved and d.trigger is Trigger.COMMITMENT_FREED
    launch = launch_of(d)
    assert (launch.commitment_id, launch.price_per_hour, launch.capacity_type) == (
        "cb-1",
        Decimal(0),
        CapacityType.RESERVED,
    )
    # saving 40 × 80 = 3200; cost 200 × 0.02 + 0 restart + 0 lost + 0.25 × 40 overlap = 14
    assert d.economics is not None
    assert (d.economics.saving, d.economics.cost.total) == (Decimal(3200), Decimal(14))
    assert d.rejections[0].reason == "not under commitment cb-1"


def test_commitment_freed_with_too_few_gpus_or_already_used_stays():
    reserved = replacement("0", capacity_type=CapacityType.RESERVED, commitment_id="cb-1")
    small = decide(CommitmentFreed("cb-1", gpus_free=4, at=NOW), running(), [reserved], POLICY, NOW)
    assert not small.migrates and small.reason.endswith("stay (the workload needs 8 GPUs)")
    inside = running(commitment_id="cb-1", price_per_hour=Decimal(0))
    same = decide(CommitmentFreed("cb-1", gpus_free=8, at=NOW), inside, [reserved], POLICY, NOW)
    assert not same.migrates and "already runs under it" in same.reason


def test_commitment_freed_still_respects_dwell():
    reserved = replacement("0", capacity_type=CapacityType.RESERVED, commitment_id="cb-1")
    r = running(started_at=NOW - timedelta(minutes=5))
    d = decide(CommitmentFreed("cb-1", gpus_free=8, at=NOW), r, [reserved], POLICY, NOW)
    assert not d.migrates and "min dwell" in d.reason


# --- preemption notice and preemption ----------------------------------------------------------


def _on_spot(**changes: object):
    return running(capacity_type=CapacityType.SPOT, price_per_hour=Decimal(12), **changes)


def test_preemption_notice_launches_waits_bounded_by_reclaim_cuts_over_and_terminates():
    r = _on_spot(started_at=NOW - timedelta(minutes=1))  # dwell does not apply to a forced move
    notice = PreemptionNotice("i-old-1", at=NOW, reclaim_at=NOW + timedelta(minutes=6))
    d = decide(notice, r, [replacement("30")], POLICY, NOW)
    assert d.migrates and d.kind is MoveKind.FORCED and d.trigger is Trigger.PREEMPTION_NOTICE
    assert kinds(d) == ["Launch", "WaitForCheckpoint", "CutOver", "Terminate"]
    wait = d.plan.commands[1]
    assert isinstance(wait, WaitForCheckpoint) and wait.timeout_seconds == 360
    # Checkpoint due in 15 min, after the 6 min to reclaim: W = 0.1 h, L = 45 + 6 min = 0.85 h.
    # cost = 200 × 0.09 + 0.5 × 30 + 0.85 × 30 + 0.1 × 12 = 18 + 15 + 25.5 + 1.2 = 59.70
    assert d.economics is not None and d.economics.cost.total == Decimal("59.70")
    assert d.reason.startswith("preemption notice for i-old-1, reclaim in 6m: move to gcp/")


def test_preemption_notice_with_a_long_reclaim_waits_only_the_policy_timeout():
    notice = PreemptionNotice("i-old-1", at=NOW, reclaim_at=NOW + timedelta(hours=1))
    d = decide(notice, _on_spot(), [replacement("30")], POLICY, NOW)
    wait = d.plan.commands[1]
    assert isinstance(wait, WaitForCheckpoint) and wait.timeout_seconds == 900


def test_preemption_notice_past_its_reclaim_time_is_a_hard_preemption():
    notice = PreemptionNotice("i-old-1", at=NOW - timedelta(minutes=3), reclaim_at=NOW - timedelta(minutes=1))
    d = decide(notice, _on_spot(), [replacement("30")], POLICY, NOW)
    assert kinds(d) == ["Launch", "CutOver", "Terminate"]


def test_hard_preemption_launches_cuts_over_and_still_terminates_the_dead_instance():
    d = decide(Preempted("i-old-1", at=NOW), _on_spot(), [replacement("30")], POLICY, NOW)
    assert d.migrates and d.kind is MoveKind.FORCED and d.trigger is Trigger.PREEMPTED
    assert kinds(d) == ["Launch", "CutOver", "Terminate"]
    # No overlap; lost 45 min: 18 + 15 + 0.75 × 30 = 55.50
    assert d.economics is not None and d.economics.cost.total == Decimal("55.50")
    assert d.economics.cost.overlap == 0


def test_preemption_of_one_node_moves_the_whole_multi_node_workload():
    r = _on_spot(workload=workload(nodes=3), instance_ids=("i-a", "i-b", "i-c"))
    d = decide(Preempted("i-b", at=NOW), r, [replacement("30")], POLICY, NOW)
    assert kinds(d) == ["Launch", "CutOver", "Terminate", "Terminate", "Terminate"]
    assert launch_of(d).count == 3
    terminated = [c.instance_id for c in d.plan.commands if isinstance(c, Terminate)]
    assert terminated == ["i-a", "i-b", "i-c"]
    assert len({c.idempotency_key for c in d.plan.commands}) == 5


def test_preemption_ignores_hysteresis_but_not_refusal_backoff():
    target = replacement("30")
    refused = replacement("25", cloud="lambda")
    r = _on_spot(
        started_at=NOW - timedelta(minutes=1),
        moves=(Move(target.key, running().key, NOW - timedelta(minutes=30), MoveKind.VOLUNTARY),),
        refusals=(Refusal(refused.key, NOW - timedelta(minutes=10)),),
    )
    d = decide(Preempted("i-old-1", at=NOW), r, [refused, target], POLICY, NOW)
    assert d.target == target
    assert d.rejections[0].reason == "launch refused 10m ago (backoff 30m)"


def test_preemption_of_an_instance_that_is_not_ours_stays():
    d = decide(Preempted("i-stranger", at=NOW), _on_spot(), [replacement("30")], POLICY, NOW)
    assert not d.migrates and "not one of this workload's" in d.reason


def test_preemption_with_no_replacement_stays_and_says_why():
    r = _on_spot(refusals=(Refusal(replacement().key, NOW),))
    d = decide(Preempted("i-old-1", at=NOW), r, [replacement("30")], POLICY, NOW)
    assert not d.migrates and "no replacement available: launch refused 0s ago" in d.reason


def test_preemption_with_a_deadline_prefers_a_replacement_that_meets_it():
    r = _on_spot(workload=workload(deadline=NOW + timedelta(hours=200)))
    late = replacement("10", cloud="vast", meets_deadline=False)
    on_time = replacement("30")
    d = decide(Preempted("i-old-1", at=NOW), r, [late, on_time], POLICY, NOW)
    assert d.target == on_time and d.rejections[0].reason == "cannot meet the deadline"
    only_late = decide(Preempted("i-old-1", at=NOW), r, [late], POLICY, NOW)
    assert only_late.target == late and "no replacement can meet the deadline" in only_late.reason


# --- launch refused --------------------------------------------------------------------------


def test_launch_refused_falls_back_to_the_next_candidate_with_a_new_key():
    first = replacement("30")
    second = replacement("32", cloud="lambda", region="us-east-3", zone=None, instance_type="gpu_8x_h100")
    preempted = _on_spot(lost_at=NOW - timedelta(minutes=2))
    refused_key = launch_key("w1", 3, first)
    event = LaunchRefused(launch_key=refused_key, offer_key=first.key, at=NOW, reason="capacity")
    d = decide(event, preempted, [first, second], POLICY, NOW)
    assert d.migrates and d.target == second and d.trigger is Trigger.LAUNCH_REFUSED
    assert launch_of(d).idempotency_key not in {refused_key, launch_key("w1", 4, first)}
    assert d.refusal == Refusal(first.key, NOW)
    assert d.rejections[0].reason == "launch refused 0s ago (backoff 30m)"
    # The instances are gone: no checkpoint wait.
    assert kinds(d) == ["Launch", "CutOver", "Terminate"]
    assert d.reason.startswith(
        "launch of gcp/us-central1/us-central1-a/a3-highgpu-8g/on-demand refused (capacity)"
    )


def test_launch_refused_during_a_notice_keeps_waiting_for_the_checkpoint():
    first, second = replacement("30"), replacement("32", cloud="lambda")
    r = _on_spot(reclaim_at=NOW + timedelta(seconds=90), generation=4)
    event = LaunchRefused(launch_key=launch_key("w1", 3, first), offer_key=first.key, at=NOW)
    d = decide(event, r, [first, second], POLICY, NOW)
    assert d.target == second and kinds(d) == ["Launch", "WaitForCheckpoint", "CutOver", "Terminate"]
    wait = d.plan.commands[1]
    assert isinstance(wait, WaitForCheckpoint) and wait.timeout_seconds == 90


def test_launch_refused_of_a_voluntary_move_retries_only_if_the_next_one_also_pays():
    first, pays = replacement("30"), replacement("35", cloud="lambda")
    does_not = replacement("39.9", cloud="vast")
    event = LaunchRefused(launch_key=launch_key("w1", 3, first), offer_key=first.key, at=NOW)
    moved = decide(event, running(), [first, pays], POLICY, NOW)
    assert moved.target == pays and moved.kind is MoveKind.VOLUNTARY
    stayed = decide(event, running(), [first, does_not], POLICY, NOW)
    assert not stayed.migrates and stayed.refusal == Refusal(first.key, NOW)


def test_a_refused_offer_is_tried_again_after_the_backoff():
    target = replacement("30")
    r = running(refusals=(Refusal(target.key, NOW - timedelta(minutes=31)),))
    assert decide(Rebalance(at=NOW), r, [target], POLICY, NOW).migrates
    r = running(refusals=(Refusal(target.key, NOW - timedelta(minutes=29)),))
    assert not decide(Rebalance(at=NOW), r, [target], POLICY, NOW).migrates


# --- deadline at risk ------------------------------------------------------------------------


def test_deadline_at_risk_overrides_dwell_and_moves_to_non_spot_that_meets_it():
    w = workload(deadline=NOW + timedelta(hours=82))
    r = _on_spot(workload=w, started_at=NOW - timedelta(minutes=10))  # dwell would forbid a voluntary move
    spot = replacement("5", capacity_type=CapacityType.SPOT)
    late = replacement("20", cloud="vast", meets_deadline=False)
    safe = replacement("50", cloud="lambda")
    d = decide(DeadlineAtRisk(at=NOW), r, [spot, late, safe], POLICY, NOW)
    assert d.migrates and d.kind is MoveKind.DEADLINE and d.target == safe
    assert kinds(d) == ["Launch", "WaitForCheckpoint", "CutOver", "Terminate"]
    assert [x.reason for x in d.rejections] == [
        "spot, and the deadline needs capacity that stays",
        "cannot meet the deadline",
    ]
    # A dearer target is fine: the deadline is worth more than the money.
    assert d.economics is not None and d.economics.saving < 0


def test_deadline_at_risk_also_ignores_the_move_back_cooldown():
    safe = replacement("50")
    r = running(
        workload=workload(deadline=NOW + timedelta(hours=79)),
        moves=(Move(safe.key, running().key, NOW - timedelta(minutes=30), MoveKind.VOLUNTARY),),
    )
    assert decide(DeadlineAtRisk(at=NOW), r, [safe], POLICY, NOW).target == safe


def test_a_rebalance_tick_detects_the_deadline_risk_itself():
    w = workload(deadline=NOW + timedelta(hours=82))
    r = _on_spot(workload=w, started_at=NOW - timedelta(minutes=10))
    d = decide(Rebalance(at=NOW), r, [replacement("50")], POLICY, NOW)
    assert d.kind is MoveKind.DEADLINE
    assert "deadline at risk: slack 2.00h on spot" in d.reason


def test_deadline_at_risk_without_a_safe_replacement_or_a_deadline_stays():
    r = _on_spot(workload=workload(deadline=NOW + timedelta(hours=82)))
    d = decide(DeadlineAtRisk(at=NOW), r, [replacement("5", capacity_type=CapacityType.SPOT)], POLICY, NOW)
    assert not d.migrates and "no non-spot replacement can meet the deadline" in d.reason
    event = DeadlineAtRisk(at=NOW, detail="caller says so")
    none = decide(event, running(), [replacement("50")], POLICY, NOW)
    assert not none.migrates
    assert none.reason == "deadline at risk: caller says so: stay (the workload has no deadline)"


def test_voluntary_moves_never_pick_a_replacement_that_would_miss_the_deadline():
    r = running(workload=workload(deadline=NOW + timedelta(hours=200)))
    d = decide(Rebalance(at=NOW), r, [replacement("1", meets_deadline=False)], POLICY, NOW)
    assert not d.migrates and "cannot meet the deadline" in d.reason


# --- events that arrive while the instances are going or gone ------------------------------------


def test_deadline_at_risk_after_a_preemption_moves_without_waiting_for_a_checkpoint():
    r = _on_spot(workload=workload(deadline=NOW + timedelta(hours=500)), lost_at=NOW - timedelta(minutes=1))
    spot = replacement("5", capacity_type=CapacityType.SPOT)
    safe = replacement("50", cloud="lambda")
    d = decide(DeadlineAtRisk(at=NOW), r, [spot, safe], POLICY, NOW)
    # The caller says the deadline is at risk: non-spot first, even where our own test would not.
    assert d.kind is MoveKind.FORCED and d.target == safe
    assert kinds(d) == ["Launch", "CutOver", "Terminate"]
    assert d.rejections[0].reason == "spot while the deadline is at risk"


def test_commitment_freed_while_preempted_is_a_forced_move_over_every_replacement():
    reserved = replacement("0", capacity_type=CapacityType.RESERVED, commitment_id="cb-1")
    elsewhere = replacement("20", cloud="lambda")
    r = running(commitment_id="cb-1", price_per_hour=Decimal(0), lost_at=NOW)
    d = decide(CommitmentFreed("cb-1", gpus_free=1, at=NOW), r, [elsewhere, reserved], POLICY, NOW)
    assert d.kind is MoveKind.FORCED and d.target == elsewhere


def test_no_checkpoint_wait_prices_the_progress_lost_by_cutting_over():
    policy = replace(POLICY, checkpoint_wait_timeout=timedelta(0))
    r = running(workload=workload(checkpoint_interval_hours=None))
    d = decide(Rebalance(at=NOW), r, [replacement("30")], policy, NOW)
    assert kinds(d) == ["Launch", "CutOver", "Terminate"]
    # No overlap; 45 min lost at $30: 18 + 15 + 22.50
    assert d.economics is not None and d.economics.cost.total == Decimal("55.50")
