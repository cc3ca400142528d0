"""Each baseline's rules, traced tick by tick on tiny traces (10-minute ticks)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from broker.core.deadline import IDLE, Choice
from broker.simulation.baselines import GreedySpot, OnDemandOnly, UniformProgress, UniformProgressFailover
from broker.simulation.engine import replay
from tests.simulation.helpers import job, market

S, OD = Choice.spot(0), Choice.on_demand(0)
SPOT_TICK, OD_TICK = Decimal("0.6"), Decimal("1.2")


def test_on_demand_only_runs_in_the_venue_with_the_cheapest_on_demand_price() -> None:
    m = market(["000", "000"], on_demand=["7.2", "3.6"])
    result = replay(m, job(25, 30), OnDemandOnly())
    assert set(result.choices) == {Choice.on_demand(1)}
    assert result.cost == 3 * SPOT_TICK  # $3.60/h for three ticks
    assert result.deadline_met


def test_greedy_uses_spot_idles_without_it_then_switches_to_on_demand_when_forced() -> None:
    # 40 min of work, 10 min restarts, 110 min deadline. Spot runs ticks 0-1 (10 min done),
    # then it waits; at tick 7 the 3 remaining ticks of work plus a restart exactly fill the
    # time left, so it goes on-demand and stays to finish at the deadline.
    result = replay(market(["11000000000"]), job(40, 110, 10), GreedySpot())
    assert result.choices == (S, S, IDLE, IDLE, IDLE, IDLE, IDLE, OD, OD, OD, OD)
    assert result.cost == 2 * SPOT_TICK + 4 * OD_TICK
    assert result.finish_hours == pytest.approx(110 / 60) and result.deadline_met


def test_greedy_keeps_a_warm_spot_instance_at_the_boundary_until_it_is_preempted() -> None:
    # From tick 1 the work left plus a restart exactly fills the time left: a running spot
    # instance is kept (a preemption would still leave time for on-demand) ...
    kept = replay(market(["11111"]), job(30, 50, 10), GreedySpot())
    assert kept.choices == (S,) * 4 and kept.cost == 4 * SPOT_TICK and kept.deadline_met
    # ... and replaced by on-demand the moment it is preempted.
    preempted = replay(market(["11011"]), job(30, 50, 10), GreedySpot())
    assert preempted.choices == (S, S, OD, OD, OD)
    assert preempted.cost == 2 * SPOT_TICK + 3 * OD_TICK and preempted.deadline_met


def test_greedy_starts_on_demand_when_the_deadline_leaves_no_slack() -> None:
    result = replay(market(["11111"]), job(40, 50, 10), GreedySpot())
    assert result.choices == (OD,) * 5 and result.deadline_met


def test_uniform_progress_waits_while_ahead_and_runs_on_demand_once_behind() -> None:
    # 30 min of work in 120 min: the line is 1/4 min of work per minute. After 5 min of spot
    # work and a preemption it is ahead at ticks 1-2 (waits), behind at tick 3 (on-demand),
    # and keeps on-demand while spot stays away.
    result = replay(market(["100000000000"]), job(30, 120, 5), UniformProgress())
    assert result.choices == (S, IDLE, IDLE, OD, OD, OD)
    assert result.cost == SPOT_TICK + 3 * OD_TICK
    assert result.finish_hours == pytest.approx(60 / 60)


def test_uniform_progress_leaves_on_demand_only_once_two_restarts_ahead() -> None:
    # Spot is back at tick 4 but UP is not yet 2d ahead of the line: it stays on-demand one
    # more tick (hysteresis) and returns to spot at tick 5.
    result = replay(market(["100011111111"]), job(30, 120, 5), UniformProgress())
    assert result.choices == (S, IDLE, IDLE, OD, OD, S, S)
    assert result.cost == 3 * SPOT_TICK + 2 * OD_TICK
    assert result.finish_hours == pytest.approx(65 / 60)


def test_up_s_fails_over_to_the_cheapest_zone_outside_the_preempted_region() -> None:
    # v0 and v1 share a region; v2 is elsewhere and dearest. After v0 is preempted, UP(S)
    # deprioritises v0's whole region and launches in v2, paying the checkpoint's egress.
    m = market(
        ["1101111", "1111111", "1111111"],
        spot=["3.0", "3.3", "3.6"],
        regions=["ra", "ra", "rb"],
        egress="0.05",
    )
    result = replay(m, job(30, 70, 5, checkpoint_gb="10"), UniformProgressFailover())
    assert result.choices[:3] == (Choice.spot(0), Choice.spot(0), Choice.spot(2))
    assert result.migrations == 1 and result.egress_cost == Decimal("0.50")
    assert result.deadline_met


def test_up_s_without_a_preemption_history_orders_zones_by_spot_price() -> None:
    m = market(["0111", "1111", "1111"], spot=["3.0", "3.3", "3.6"], regions=["ra", "ra", "rb"])
    result = replay(m, job(20, 40, 5), UniformProgressFailover())
    assert result.choices[0] == Choice.spot(1)


def test_up_s_safety_net_latches_on_demand_in_the_cheapest_venue_to_finish() -> None:
    # 40 min of work + a 10 min restart fill the 50 min deadline: the net latches at tick 0 and
    # keeps on-demand to the end although spot is up all along.
    m = market(["11111", "11111"], on_demand=["7.2", "6.0"])
    result = replay(m, job(40, 50, 10), UniformProgressFailover())
    assert result.choices == (Choice.on_demand(1),) * 5
    assert result.deadline_met
