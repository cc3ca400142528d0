"""The per-UTC-day cost-record rollup: the same math as cost lines, idempotent, hand-computed."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.db.fleet import CostRecord
from broker.services.accounting import rollup
from broker.services.costs import cost_lines
from tests.services.test_costs import DAY, add_commitment, add_prices, add_testcloud_instance, new_org

H = timedelta(hours=1)


def _records(session: Session, org_id: str) -> dict[tuple[str, str], CostRecord]:
    session.expire_all()
    rows = session.scalars(select(CostRecord).where(CostRecord.org_id == org_id)).all()
    return {(r.instance_id, r.day.isoformat()): r for r in rows}


def test_run_across_midnight_with_a_spot_change_gives_one_record_per_day(session: Session) -> None:
    org, project = new_org(session)
    add_prices(session, DAY - timedelta(days=5), [("r1", "", "t4", "H100", 4, "on-demand", "20")])
    spot = add_testcloud_instance(
        session,
        org,
        project,
        launched_at=DAY + 22 * H,
        ended_at=DAY + 26 * H,
        price_per_hour="10",
        gpus=4,
        instance_type="t4",
        capacity_type="spot",
    )
    add_prices(session, DAY + 25 * H, [("r1", "r1-a", "t4", "H100", 4, "spot", "6")])
    cid = add_commitment(session, org, starts_at=DAY, ends_at=DAY + timedelta(days=10))
    held = add_testcloud_instance(
        session,
        org,
        project,
        launched_at=DAY + 20 * H,
        price_per_hour="16",
        commitment_id=cid,
        capacity_type="reserved",
    )
    now = DAY + 27 * H
    written = rollup(session, now)
    records = _records(session, org)
    assert written >= 4
    day1, day2 = DAY.date().isoformat(), (DAY + 24 * H).date().isoformat()
    first, second = records[(spot, day1)], records[(spot, day2)]
    assert (first.gpu_hours, first.usd, first.ondemand_usd) == (8, 20, 40)  # 22-24 at $10
    assert (second.gpu_hours, second.usd, second.ondemand_usd) == (8, 16, 40)  # 00-01 $10, 01-02 $6
    assert (first.accelerator, first.instance_type, first.capacity_type) == ("H100", "t4", "spot")
    # On the commitment: no dollars (the commitment's charge pays for it), GPU-hours still counted.
    assert (records[(held, day1)].usd, records[(held, day1)].gpu_hours) == (0, 32)
    assert (records[(held, day2)].usd, records[(held, day2)].gpu_hours) == (0, 24)
    assert records[(held, day1)].commitment_id == cid
    assert records[(held, day1)].ondemand_usd is None  # no on-demand 8 x H100 price in r1
    # The same numbers as the cost lines of each day: one math.
    for day_start, key in ((DAY, day1), (DAY + 24 * H, day2)):
        lines = cost_lines(session, org_id=org, start=day_start, end=day_start + 24 * H, now=now)
        by_instance = {line.instance_id: line for line in lines if line.kind == "instance"}
        for iid in (spot, held):
            assert by_instance[iid].usd == records[(iid, key)].usd
            assert by_instance[iid].gpu_hours == records[(iid, key)].gpu_hours


def test_rollup_is_idempotent_and_recomputes_a_changed_run(session: Session) -> None:
    org, project = new_org(session)
    iid = add_testcloud_instance(session, org, project, launched_at=DAY + 10 * H, price_per_hour="8")
    now = DAY + 12 * H
    assert rollup(session, now) == 1
    assert rollup(session, now) == 1
    records = _records(session, org)
    assert len(records) == 1
    assert records[(iid, DAY.date().isoformat())].usd == Decimal(16)
    # Later the same day the record grows; it is the same row, recomputed.
    rollup(session, DAY + 15 * H)
    records = _records(session, org)
    assert len(records) == 1 and records[(iid, DAY.date().isoformat())].usd == Decimal(40)


def test_rollup_skips_runs_before_the_lookback(session: Session) -> None:
    org, project = new_org(session)
    add_testcloud_instance(
        session, org, project, launched_at=DAY - timedelta(days=9), ended_at=DAY - timedelta(days=8)
    )
    recent = add_testcloud_instance(
        session, org, project, launched_at=DAY - timedelta(days=3), ended_at=DAY - 12 * H
    )
    rollup(session, DAY + H, lookback=timedelta(days=2))
    records = _records(session, org)
    # Lookback of 2 days from 01:00: from midnight two days before, so the recent run's last two days.
    assert sorted(day for _, day in records) == [
        (DAY - timedelta(days=2)).date().isoformat(),
        (DAY - timedelta(days=1)).date().isoformat(),
    ]
    assert {iid for iid, _ in records} == {recent}
