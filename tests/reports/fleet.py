"""A small fleet whose report for 2026-11-23 (UTC) is worked out by hand, shared by the report tests.

The fleet (testcloud on-demand price for t8 in r1: $40 per instance-hour, observed 10 days before):

* I1  project default,  on-demand t8 (8 x H100) bought at $32/h, 22:00 on D-1 to 06:00 on D:
      D: 6 h -> $192, 48 GPU-hours, on-demand $240.   D-1: 2 h -> $64.
* I2  project research, spot t8 at $16/h, 10:00-13:00 on D: $48, 24 GPU-hours, on-demand $120.
* I3  project research, reserved t8 on commitment C1, 00:00-12:00 on D: $0 (the commitment pays),
      96 GPU-hours, on-demand $480.
* I4  project default,  on-demand t1 (1 x A100) on othercloud r9 (no price known) at $3/h, from
      20:00 on D, still running: 4 h -> $12, 4 GPU-hours, on-demand unknown.
* C1  commitment, project research, 16 x H100 at $2/GPU-hour from 00:00 on D-5 for 35 days:
      each full day 384 GPU-hours -> $768. On D 96 of them used (I3): waste 288 x $2 = $576.

Day D totals: spend 192 + 48 + 0 + 12 + 768 = $1,020 (instances $252, commitment $768);
GPU-hours 48 + 24 + 96 + 4 = 172; on-demand equivalent 240 + 120 + 480 + 0 (C1) = $840 over
the lines with a known price, which cost 192 + 48 + 0 + 768 = $1,008: savings 840 - 1,008 = -$168
(the commitment is mostly idle), and I4's $12 is unpriced.
The days before: D-7 $0, D-6 $0, D-5..D-2 $768 each (C1 only), D-1 $768 + $64 = $832.
Utilization on D: I1 GPU 0 at 50% and 70%, I2 GPU 0 at 90%: average 70%; default 60%, research 90%.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from broker.db.fleet import InstanceRow, UtilizationSample, WorkloadRow
from tests.fleet_rows import ensure_project
from tests.services.test_costs import add_commitment, add_prices, add_project, add_testcloud_instance

D = date(2026, 11, 23)
MIDNIGHT = datetime(2026, 11, 23, tzinfo=UTC)
H = timedelta(hours=1)
AFTER = MIDNIGHT + 36 * H  # a "now" well after the day ended


@dataclass(frozen=True)
class Fleet:
    org_id: str
    default_project: str
    research_project: str
    workloads: dict[str, str]  # I1..I4 -> workload id
    commitment: str


def seed_fleet(session: Session, org_id: str) -> Fleet:
    default = ensure_project(session, org_id)
    research = add_project(session, org_id, "research")
    add_prices(session, MIDNIGHT - timedelta(days=10), [("r1", "", "t8", "H100", 8, "on-demand", "40")])
    c1 = add_commitment(
        session,
        org_id,
        starts_at=MIDNIGHT - timedelta(days=5),
        ends_at=MIDNIGHT + timedelta(days=30),
        gpu_count=16,
        price_per_gpu_hour="2",
        project_id=research,
    )
    i1 = add_testcloud_instance(
        session, org_id, default, launched_at=MIDNIGHT - 2 * H, ended_at=MIDNIGHT + 6 * H, price_per_hour="32"
    )
    i2 = add_testcloud_instance(
        session,
        org_id,
        research,
        launched_at=MIDNIGHT + 10 * H,
        ended_at=MIDNIGHT + 13 * H,
        price_per_hour="16",
        capacity_type="spot",
    )
    i3 = add_testcloud_instance(
        session,
        org_id,
        research,
        launched_at=MIDNIGHT,
        ended_at=MIDNIGHT + 12 * H,
        price_per_hour="16",
        capacity_type="reserved",
        commitment_id=c1,
    )
    i4 = add_testcloud_instance(
        session,
        org_id,
        default,
        launched_at=MIDNIGHT + 20 * H,
        price_per_hour="3",
        gpus=1,
        provider="othercloud",
        region="r9",
        zone=None,
        instance_type="t1",
        accelerator="A100",
    )
    instances = {"I1": i1, "I2": i2, "I3": i3, "I4": i4}
    workloads = {}
    for label, iid in instances.items():
        wid = session.scalar(select(InstanceRow.workload_id).where(InstanceRow.id == iid))
        assert wid is not None
        session.execute(update(WorkloadRow).where(WorkloadRow.id == wid).values(name=f"job-{label.lower()}"))
        workloads[label] = wid
    for iid, at, util in (
        (i1, MIDNIGHT - H, "0"),  # the day before: not in the report
        (i1, MIDNIGHT + H, "50"),
        (i1, MIDNIGHT + 2 * H, "70"),
        (i2, MIDNIGHT + 11 * H, "90"),
    ):
        session.add(
            UtilizationSample(instance_id=iid, gpu_index=0, at=at, org_id=org_id, gpu_util_pct=Decimal(util))
        )
    session.flush()
    return Fleet(org_id, default, research, workloads, c1)
