"""Move cost, saving and deadline risk, with the money worked out by hand."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from broker.core.migration import (
    MigrationPolicy,
    RunningWorkload,
    checkpoint_wait,
    deadline_at_risk,
    economics,
)
from broker.core.migration.cost import format_duration, format_usd, hours, lost_progress_hours
from broker.core.types import CapacityType
from tests.core.migration.builders import NOW, POLICY, T0, replacement, running, workload

T = timedelta(minutes=15)


def test_hours_are_exact_decimals():
    assert hours(timedelta(minutes=45)) == Decimal("0.75")
    assert hours(timedelta(days=1, minutes=6)) == Decimal("24.1")
    assert hours(timedelta(microseconds=36)) == Decimal("1E-8")


def test_checkpoint_due_within_the_timeout_costs_overlap_only():
    # Checkpointed 45 min ago every hour: the next one is due in 15 min, exactly the timeout.
    assert checkpoint_wait(running(), T, NOW) == (Decimal("0.25"), Decimal(0))


def test_checkpoint_due_after_the_timeout_loses_the_progress_since_the_last_one():
    # Checkpointed 30 min ago: due in 30 min > 15 min, so cut over at 15 min with 45 min of work lost.
    r = running(last_checkpoint_at=NOW - timedelta(minutes=30))
    assert checkpoint_wait(r, T, NOW) == (Decimal("0.25"), Decimal("0.75"))


def test_no_checkpoint_schedule_waits_the_whole_timeout():
    r = running(workload=workload(checkpoint_interval_hours=None))
    assert checkpoint_wait(r, T, NOW) == (Decimal("0.25"), Decimal(0))


def test_no_schedule_and_no_time_to_wait_loses_the_progress_since_the_last_checkpoint():
    r = running(workload=workload(checkpoint_interval_hours=None))
    assert checkpoint_wait(r, timedelta(0), NOW) == (Decimal(0), Decimal("0.75"))


def test_lost_progress_never_exceeds_the_progress_made():
    r = running(
        workload=workload(checkpoint_interval_hours=Decimal(3)),
        progress_hours=Decimal("0.5"),
        last_checkpoint_at=NOW - timedelta(hours=2),
    )
    assert checkpoint_wait(r, T, NOW) == (Decimal("0.25"), Decimal("0.5"))
    assert lost_progress_hours(r, NOW) == Decimal("0.5")


def test_lost_progress_without_a_checkpoint_counts_from_landing_here():
    r = running(last_checkpoint_at=None, started_at=NOW - timedelta(hours=2))
    assert lost_progress_hours(r, NOW) == Decimal(2)


def test_economics_by_hand():
    # saving  = (40 − 30) × 1 node × 80 h                   = 800
    # cost    = 200 GB × 0.09 + 0.5 h × 30 + 0 × 30 + 0.25 h × 40 = 18 + 15 + 0 + 10 = 43
    # margin  = 43 × 0.20 + 1                                = 9.60
    econ = economics(running(), replacement("30"), POLICY, Decimal("0.25"), Decimal(0))
    assert econ.saving == Decimal(800)
    assert (econ.cost.egress, econ.cost.restart, econ.cost.lost_progress, econ.cost.overlap) == (
        Decimal(18),
        Decimal(15),
        Decimal(0),
        Decimal(10),
    )
    assert econ.cost.total == Decimal(43)
    assert econ.margin == Decimal("9.60")
    assert econ.required == Decimal("52.60")
    assert econ.net == Decimal(757)
    assert econ.worth_it
    assert econ.describe() == "saving $800.00 > move cost $43.00 + margin $9.60"


def test_economics_scale_with_nodes_except_egress():
    r = running(workload=workload(nodes=2), instance_ids=("i-1", "i-2"))
    econ = economics(r, replacement("30"), POLICY, Decimal("0.25"), Decimal("0.75"))
    # saving 10 × 2 × 80; egress once 18; restart 0.5×30×2; lost 0.75×30×2; overlap 0.25×40×2
    assert econ.saving == Decimal(1600)
    assert econ.cost.total == Decimal(18) + Decimal(30) + Decimal(45) + Decimal(20)


def test_a_saving_above_cost_but_inside_the_margin_is_not_worth_it():
    # saving 0.7 × 80 = 56 > cost 18 + 19.65 + 10 = 47.65, but margin 10.53 makes 58.18 required.
    econ = economics(running(), replacement("39.3"), POLICY, Decimal("0.25"), Decimal(0))
    assert econ.saving == Decimal(56)
    assert econ.cost.total == Decimal("47.65")
    assert econ.required == Decimal("58.18")
    assert econ.saving > econ.cost.total
    assert not econ.worth_it


def test_capacity_under_a_commitment_never_saves_by_moving():
    r = running(price_per_hour=Decimal(0), commitment_id="ri-1")
    econ = economics(r, replacement("10"), POLICY, Decimal("0.25"), Decimal(0))
    assert econ.saving == Decimal(-800)
    assert not econ.worth_it


def _with_deadline(hours_left: int, **changes: object) -> RunningWorkload:
    return running(workload=workload(deadline=NOW + timedelta(hours=hours_left)), **changes)


def test_no_deadline_is_never_at_risk():
    assert deadline_at_risk(running(), POLICY, NOW) is None


def test_non_spot_on_pace_is_not_at_risk_even_with_little_slack():
    assert deadline_at_risk(_with_deadline(81), POLICY, NOW) is None
    assert deadline_at_risk(_with_deadline(80), POLICY, NOW) is None


def test_non_spot_behind_pace_is_at_risk():
    assert deadline_at_risk(_with_deadline(79), POLICY, NOW) == (
        "needs 80.00h at the current pace with 79.00h to the deadline"
    )
    slow = _with_deadline(150, progress_rate=Decimal("0.5"))
    assert "needs 160.00h" in (deadline_at_risk(slow, POLICY, NOW) or "")


def test_spot_is_at_risk_when_one_preemption_could_sink_the_deadline():
    # slack = 82 − 80 = 2 h < buffer 1 h + restart 0.5 h + checkpoint interval 1 h = 2.5 h
    at_risk = _with_deadline(82, capacity_type=CapacityType.SPOT)
    assert deadline_at_risk(at_risk, POLICY, NOW) == (
        "slack 2.00h on spot is below buffer 1h + one preemption's 1.50h"
    )
    safe = _with_deadline(83, capacity_type=CapacityType.SPOT)
    assert deadline_at_risk(safe, POLICY, NOW) is None


def test_spot_without_a_checkpoint_schedule_puts_the_progress_since_the_last_one_at_stake():
    # exposure = restart 0.5 + 0.75 h since the checkpoint; needed = 1 + 1.25 = 2.25
    w = workload(deadline=NOW + timedelta(hours=82), checkpoint_interval_hours=None)
    r = running(workload=w, capacity_type=CapacityType.SPOT)
    assert deadline_at_risk(r, POLICY, NOW) is not None
    roomier = running(workload=workload(deadline=NOW + timedelta(hours=82, minutes=30),
                                        checkpoint_interval_hours=None), capacity_type=CapacityType.SPOT)
    assert deadline_at_risk(roomier, POLICY, NOW) is None


def test_no_progress_or_no_work_left():
    assert deadline_at_risk(_with_deadline(500, progress_rate=Decimal(0)), POLICY, NOW) is not None
    assert deadline_at_risk(_with_deadline(-5, progress_hours=Decimal(100)), POLICY, NOW) is None


def test_formatting():
    assert format_usd(Decimal("3.1")) == "$3.10"
    assert format_usd(Decimal("-1.25")) == "-$1.25"
    assert format_duration(timedelta(seconds=45)) == "45s"
    assert format_duration(timedelta(minutes=20)) == "20m"
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"
    assert format_duration(timedelta(hours=6)) == "6h"
    assert format_duration(-timedelta(hours=1)) == "0s"


def test_policy_and_snapshot_validate_at_the_edge():
    with pytest.raises(ValueError, match="min_dwell"):
        MigrationPolicy(min_dwell=-timedelta(seconds=1))
    with pytest.raises(TypeError, match="min_saving_usd"):
        MigrationPolicy(min_saving_usd=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2 instance ids"):
        running(workload=workload(nodes=2))
    with pytest.raises(ValueError, match="timezone-aware"):
        running(started_at=T0.replace(tzinfo=None))
    with pytest.raises(ValueError, match="non-negative"):
        replacement("-1")
