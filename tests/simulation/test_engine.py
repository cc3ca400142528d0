"""The replay engine's accounting on hand-made traces, with costs worked out by hand."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from broker.core.deadline import IDLE, Choice, Job, must_fall_back, slack_hours, ticks_left, ticks_to_finish
from broker.core.types import CapacityType
from broker.simulation.engine import Schedule, replay
from tests.simulation.helpers import Scripted, SpotWhenUp, job, market

# $3.60/h spot is $0.60 a 10-minute tick; $7.20/h on-demand is $1.20.
SPOT_TICK = Decimal("0.6")
OD_TICK = Decimal("1.2")


def test_restart_overhead_is_billed_but_makes_no_progress() -> None:
    # 30 min of work, 12 min overhead: tick 0 is all overhead (2 min left over), tick 1 makes
    # 8 min, ticks 2-3 make 10 each (28), tick 4 finishes 2 min in: 5 ticks billed, done at 42 min.
    result = replay(market(["11111111"]), job(30, 80, 12), Scripted([Choice.spot(0)]))
    assert result.cost == 5 * SPOT_TICK
    assert result.compute_cost == 5 * SPOT_TICK and result.egress_cost == 0
    assert result.finish_hours == pytest.approx(42 / 60)
    assert result.deadline_met
    assert result.spot_hours == pytest.approx(5 / 6) and result.on_demand_hours == 0
    assert result.final_tick_cost == SPOT_TICK
    assert result.launches == 1 and result.migrations == 0 and result.preemptions == 0


def test_preemption_keeps_work_done_and_the_relaunch_pays_overhead_again() -> None:
    policy = Scripted([])
    # Spot in venue 0 whenever it is up: 5 + 10 min, preempted at tick 2, relaunch at tick 3
    # (5 min overhead → 5 min of work), tick 4 finishes the last 10 min at 50 min.
    watcher = _Watching(SpotWhenUp(), policy)
    result = replay(market(["1101111111"]), job(30, 100, 5), watcher)
    assert result.cost == 4 * SPOT_TICK
    assert result.preemptions == 1 and result.launches == 2
    assert result.finish_hours == pytest.approx(50 / 60)
    assert result.choices[:5] == (Choice.spot(0), Choice.spot(0), IDLE, Choice.spot(0), Choice.spot(0))
    at_preemption = policy.seen[2]
    assert at_preemption.preempted and at_preemption.current == IDLE
    assert at_preemption.last == Choice.spot(0)
    assert at_preemption.done_hours == pytest.approx(15 / 60)
    assert at_preemption.overhead_left_hours == 0
    assert not policy.seen[1].preempted


def test_moving_venue_pays_egress_and_transfer_time() -> None:
    plan = [Choice.spot(0), Choice.spot(1), Choice.spot(1)]
    policy = Scripted(plan)
    # 100 GB × $0.05/GB = $5 to move; the move adds 2 min of transfer to tick 1 (8 min of work),
    # tick 2 finishes the remaining 7 min at 27 min.
    m = market(["1111", "1111"], egress="0.05", transfer_seconds=120)
    result = replay(m, job(25, 40, 0, checkpoint_gb="100"), policy)
    assert result.egress_cost == Decimal("5.00")
    assert result.cost == 3 * SPOT_TICK + Decimal("5.00")
    assert result.migrations == 1 and result.launches == 2
    assert result.finish_hours == pytest.approx(27 / 60)
    assert [o.checkpoint_venue for o in policy.seen] == [None, 0, 1]


def test_switching_capacity_in_the_same_venue_is_a_restart_without_egress() -> None:
    plan = [Choice.spot(0), Choice.on_demand(0)]
    result = replay(market(["1111"]), job(20, 40, 5, checkpoint_gb="100"), Scripted(plan))
    # tick 0: 5 min; tick 1 (on-demand, restart): 5 min; tick 2: the last 10 min.
    assert result.cost == SPOT_TICK + 2 * OD_TICK
    assert result.egress_cost == 0 and result.migrations == 0 and result.launches == 2
    assert result.finish_hours == pytest.approx(30 / 60)


def test_a_job_left_idle_misses_its_deadline_at_no_cost() -> None:
    result = replay(market(["1111"]), job(10, 40), Scripted([IDLE]))
    assert not result.deadline_met
    assert result.finish_hours is None and result.done_hours == 0
    assert result.cost == 0 and result.choices == (IDLE,) * 4


def test_finishing_inside_the_last_partial_tick_but_after_the_deadline_is_a_miss() -> None:
    # Deadline 25 min: ticks 0-1 end in time, tick 2 straddles it. 22 min of work + 4 min
    # overhead on on-demand finishes at 26 min: billed 3 ticks, deadline missed.
    late = replay(market(["000"]), job(22, 25, 4), Scripted([Choice.on_demand(0)]))
    assert late.finish_hours == pytest.approx(26 / 60)
    assert not late.deadline_met
    assert late.cost == 3 * OD_TICK
    on_time = replay(market(["000"]), job(22, 25, 2), Scripted([Choice.on_demand(0)]))
    assert on_time.finish_hours == pytest.approx(24 / 60) and on_time.deadline_met


def test_a_spot_launch_where_spot_is_unavailable_gets_nothing_and_costs_nothing() -> None:
    result = replay(market(["0111"]), job(10, 40), Scripted([Choice.spot(0)]))
    assert result.failed_launches == 1
    assert result.choices[0] == IDLE
    assert result.cost == SPOT_TICK
    assert result.finish_hours == pytest.approx(20 / 60)


def test_a_policy_buying_capacity_a_venue_does_not_sell_is_an_error() -> None:
    m = market(["11"])
    no_on_demand = replace(m, on_demand_price=((None,), (None,)))
    with pytest.raises(ValueError, match="does not sell"):
        replay(no_on_demand, job(10, 20), Scripted([Choice.on_demand(0)]))


def test_the_window_must_cover_the_deadline() -> None:
    with pytest.raises(ValueError, match="needs 5 ticks"):
        replay(market(["1111"]), job(10, 50), Scripted([IDLE]))


def test_a_schedule_is_replayed_tick_by_tick_then_idles() -> None:
    result = replay(market(["1111"]), job(15, 40), Schedule("plan", [Choice.spot(0), Choice.spot(0)]))
    assert result.deadline_met and result.cost == 2 * SPOT_TICK and result.policy == "plan"


def test_deadline_helpers_follow_whole_ticks() -> None:
    # 30 min of work, 12 min overhead, 60 min deadline: 5 ticks needed from a cold start.
    policy = Scripted([IDLE])
    replay(market(["111111"]), job(30, 60, 12), policy)
    first, second = policy.seen[0], policy.seen[1]
    assert ticks_left(first) == 6 and ticks_to_finish(first) == 5 and not must_fall_back(first)
    assert ticks_left(second) == 5 and must_fall_back(second)
    assert slack_hours(first) == pytest.approx((60 - 30 - 12) / 60)


def test_inputs_are_validated_at_the_edges() -> None:
    with pytest.raises(ValueError):
        Job(0.0, 1.0, 0.0)
    with pytest.raises(ValueError):
        Job(2.0, 1.0, 0.0)
    with pytest.raises(TypeError):
        Job(1.0, 2.0, 0.0, 5.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Choice(0, None)
    with pytest.raises(ValueError):
        Choice(0, CapacityType.RESERVED)
    m = market(["11"])
    with pytest.raises(ValueError):
        replace(m, spot_price=m.spot_price[:1])


class _Watching:
    """Runs ``inner`` while letting ``recorder`` see every observation."""

    def __init__(self, inner: SpotWhenUp, recorder: Scripted) -> None:
        self.inner, self.recorder, self.name = inner, recorder, inner.name

    def reset(self, venues: tuple, job: Job) -> None:
        self.inner.reset(venues, job)
        self.recorder.reset(venues, job)

    def decide(self, obs):
        self.recorder.seen.append(obs)
        return self.inner.decide(obs)
