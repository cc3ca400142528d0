"""The broker's deadline policy, decision by decision, on hand-built observations."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from broker.core.deadline import IDLE, Choice, Job, Observation, Venue
from broker.core.slack_policy import SlackPolicyTuning, SlackPricedPolicy

TICK = 1 / 6
VENUES = (
    Venue("cheap", "gcp", "europe-west1", "europe-west1-c"),
    Venue("mid", "gcp", "us-central1", "us-central1-a"),
    Venue("pricey", "gcp", "asia-south2", "asia-south2-b"),
)
SPOT = (Decimal("16"), Decimal("19"), Decimal("70"))
OD = (Decimal("90"), Decimal("82"), Decimal("99"))
ZERO3 = ((Decimal(0),) * 3,) * 3
EGRESS = tuple(tuple(Decimal(0) if i == j else Decimal("0.02") for j in range(3)) for i in range(3))
NO_TRANSFER = ((0.0,) * 3,) * 3


def observe(
    *,
    tick: int = 0,
    done: float = 0.0,
    current: Choice = IDLE,
    last: Choice = IDLE,
    available: tuple[bool, ...] = (True, True, True),
    job: Job | None = None,
    overhead_left: float = 0.0,
    preempted: bool = False,
) -> Observation:
    job = job or Job(
        work_hours=30.0, deadline_hours=45.0, restart_overhead_hours=0.2, checkpoint_gb=Decimal(50)
    )
    return Observation(
        tick=tick,
        now_hours=tick * TICK,
        tick_hours=TICK,
        done_hours=done,
        current=current,
        last=last,
        preempted=preempted,
        overhead_left_hours=overhead_left,
        spot_available=available,
        spot_price=SPOT,
        on_demand_price=OD,
        egress_per_gb=EGRESS,
        transfer_hours=NO_TRANSFER,
        job=job,
        venues=VENUES,
    )


def fresh(tuning: SlackPolicyTuning | None = None, job: Job | None = None) -> SlackPricedPolicy:
    policy = SlackPricedPolicy(tuning)
    policy.reset(VENUES, job or observe().job)
    return policy


def test_starts_on_the_cheapest_available_spot() -> None:
    assert fresh().decide(observe()) == Choice.spot(0)


def test_waits_for_the_cheapest_venue_while_slack_is_plentiful() -> None:
    policy = fresh()
    # The cheap zone has been reliable for a day, then drops; lots of slack left (15 h for 30 h).
    for t in range(144):
        policy.decide(observe(tick=t, current=Choice.spot(0), last=Choice.spot(0), done=t * TICK))
    decision = policy.decide(
        observe(tick=144, done=24.0, available=(False, True, True), preempted=True, last=Choice.spot(0))
    )
    assert decision == IDLE


def test_takes_a_dearer_spot_zone_when_slack_runs_short() -> None:
    policy = fresh()
    # 1 hour of slack left and the cheap zone is down: waiting is no longer affordable.
    job = Job(work_hours=30.0, deadline_hours=31.4, restart_overhead_hours=0.2, checkpoint_gb=Decimal(50))
    decision = policy.decide(observe(job=job, available=(False, True, True)))
    assert decision == Choice.spot(1)


def test_falls_back_to_the_cheapest_on_demand_when_slack_is_gone() -> None:
    job = Job(work_hours=30.0, deadline_hours=30.35, restart_overhead_hours=0.2, checkpoint_gb=Decimal(50))
    decision = fresh(job=job).decide(observe(job=job, available=(False, False, False)))
    # us-central1 sells on-demand at 82/h: the cheapest total, egress included.
    assert decision == Choice.on_demand(1)


def test_on_demand_is_kept_to_the_end() -> None:
    decision = fresh().decide(observe(current=Choice.on_demand(1), last=Choice.on_demand(1), done=10.0))
    assert decision == Choice.on_demand(1)


def test_a_running_spot_instance_is_kept_when_nothing_is_cheaper() -> None:
    decision = fresh().decide(observe(tick=3, current=Choice.spot(0), last=Choice.spot(0), done=0.3))
    assert decision == Choice.spot(0)


def test_moves_back_to_a_cheaper_zone_once_it_has_stayed_up() -> None:
    policy = fresh()
    # Running in the mid zone; the cheap zone is down, then comes back.
    running = Choice.spot(1)
    for t in range(6):
        policy.decide(observe(tick=t, current=running, last=running, available=(False, True, True)))
    just_back = policy.decide(observe(tick=6, current=running, last=running, done=0.8))
    assert just_back == running  # up for one tick only: not yet
    for t in range(7, 9):
        decision = policy.decide(observe(tick=t, current=running, last=running, done=0.8 + (t - 6) * TICK))
    assert decision == Choice.spot(0)  # up for half an hour and 3/h cheaper over ~28 h: worth a move


def test_does_not_move_for_a_saving_smaller_than_twice_the_move() -> None:
    tuning = SlackPolicyTuning(move_factor=1000.0)
    policy = fresh(tuning)
    running = Choice.spot(1)
    for t in range(12):
        decision = policy.decide(observe(tick=t, current=running, last=running, done=t * TICK))
    assert decision == running


def test_an_instance_still_booting_is_not_second_guessed() -> None:
    decision = fresh().decide(
        observe(current=Choice.spot(1), last=Choice.spot(1), overhead_left=0.1, available=(True, True, True))
    )
    assert decision == Choice.spot(1)


def test_same_inputs_same_decisions() -> None:
    seq = [(True, True, True), (False, True, True), (False, False, True), (True, True, False)] * 10
    runs = []
    for _ in range(2):
        policy = fresh()
        runs.append([policy.decide(observe(tick=t, available=a)) for t, a in enumerate(seq)])
    assert runs[0] == runs[1]


def test_tuning_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="prior_availability"):
        SlackPolicyTuning(prior_availability=1.0)
    with pytest.raises(ValueError, match="positive"):
        replace(SlackPolicyTuning(), move_factor=0.0)
