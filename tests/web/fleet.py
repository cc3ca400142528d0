"""A small, realistic fleet put straight into the database for the dashboard tests (no scheduler).

Two organizations: ``acme`` with running spot, on-demand and reserved instances on three clouds,
a commitment, utilization samples (two instances idle), a pending workload and a preempted-then-
migrated one with its events; ``globex`` with one instance on a cloud acme never uses, so any of
its data showing on acme's pages is a leak a test can see."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from broker.core.workload import CapacityPreference
from broker.db.engine import Database
from broker.db.fleet import CommitmentRow, Project, UtilizationSample, WorkloadEvent, WorkloadRow
from broker.services import workloads as service
from tests.api.conftest import Tenant, make_tenant
from tests.fleet_rows import add_instance_row


@dataclass
class Fleet:
    acme: Tenant
    globex: Tenant
    running: dict[str, str] = field(default_factory=dict)  # name -> instance id
    workloads: dict[str, str] = field(default_factory=dict)  # name -> workload id
    commitment_id: str = ""


def add_running_workload(
    session: Session,
    org_id: str,
    name: str,
    now: datetime,
    *,
    project: str = "default",
    gpus: int = 8,
    capacity: str = "spot",
) -> str:
    spec = service.WorkloadSpec(
        gpu_types=("H100",),
        gpus_per_node=gpus,
        name=name,
        project=project,
        capacity=CapacityPreference(capacity if capacity != "reserved" else "auto"),
        expected_hours=Decimal(6),
    )
    row = service.submit(session, org_id, spec, now - timedelta(hours=2))
    session.flush()
    return row.id


def add_placed_instance(
    session: Session,
    org_id: str,
    workload_id: str,
    now: datetime,
    *,
    provider: str,
    region: str,
    capacity_type: str,
    price_per_hour: str,
    gpus: int = 8,
    state: str = "running",
    commitment_id: str | None = None,
    instance_type: str = "p5.48xlarge",
) -> str:
    """An instance of ``workload_id`` launched two hours before ``now`` (and, unless running, ended
    half an hour before it); a running one serves the workload, whose placement points at it."""
    workload = session.get(WorkloadRow, workload_id)
    assert workload is not None
    started = now - timedelta(hours=2)
    iid = add_instance_row(
        session,
        org_id,
        workload.project_id,
        workload_id=workload_id,
        provider=provider,
        region=region,
        instance_type=instance_type,
        gpus=gpus,
        capacity_type=capacity_type,
        price_per_hour=price_per_hour,
        commitment_id=commitment_id,
        state=state,
        serving=state == "running",
        launched_at=started,
        ended_at=None if state == "running" else now - timedelta(minutes=30),
    )
    if state == "running":
        workload.state = "RUNNING"
        workload.placement = {
            "cloud": provider,
            "region": region,
            "zone": f"{region}a",
            "instance_type": instance_type,
            "accelerator": "H100",
            "capacity_type": capacity_type,
            "price_per_hour": price_per_hour,
            "commitment_id": commitment_id,
            "label": f"{provider}/{region}/{capacity_type}",
            "started_at": started.isoformat(),
        }
    session.flush()
    return iid


def add_samples(
    session: Session, org_id: str, instance_id: str, now: datetime, util: str, gpus: int = 2
) -> None:
    """One sample a minute for the last hour on ``gpus`` GPUs, all at ``util`` percent."""
    for minute in range(60):
        for gpu in range(gpus):
            session.add(
                UtilizationSample(
                    instance_id=instance_id,
                    gpu_index=gpu,
                    at=now - timedelta(minutes=minute, seconds=5),
                    org_id=org_id,
                    gpu_util_pct=Decimal(util),
                    memory_used_mib=1000,
                    memory_total_mib=81559,
                )
            )


def add_event(
    session: Session,
    org_id: str,
    workload_id: str,
    at: datetime,
    kind: str,
    message: str,
    from_state: str | None = None,
    to_state: str | None = None,
) -> None:
    session.add(
        WorkloadEvent(
            workload_id=workload_id,
            org_id=org_id,
            at=at,
            kind=kind,
            message=message,
            from_state=from_state,
            to_state=to_state,
            data={},
        )
    )


def seed(database: Database, now: datetime) -> Fleet:
    fleet = Fleet(make_tenant(database, "acme"), make_tenant(database, "globex"))
    org = fleet.acme.org_id
    with database.sessions.begin() as s:
        s.add(Project(id="prj_web_research", org_id=org, name="research", created_at=now - timedelta(days=3)))
        s.flush()
        commitment = CommitmentRow(
            id="cmt_web_1",
            org_id=org,
            project_id=None,
            name="aws-west-reserved",
            provider="aws",
            region="us-west-2",
            zone=None,
            accelerator="H100",
            instance_type="p5.48xlarge",
            gpu_count=16,
            kind="reserved-instance",
            starts_at=now - timedelta(days=2),
            ends_at=now + timedelta(days=30),
            price_per_gpu_hour=Decimal("2.10"),
            reservation_id=None,
            created_at=now - timedelta(days=2),
            updated_at=now - timedelta(days=2),
        )
        s.add(commitment)
        fleet.commitment_id = commitment.id
        w = fleet.workloads
        w["train"] = add_running_workload(s, org, "train-7b", now, gpus=8)
        w["serve"] = add_running_workload(s, org, "serve-llm", now, project="research", capacity="on-demand")
        w["batch"] = add_running_workload(s, org, "batch-embed", now, capacity="reserved")
        w["waiting"] = add_running_workload(s, org, "needs-b200", now)
        r = fleet.running
        r["train-a"] = add_placed_instance(
            s,
            org,
            w["train"],
            now,
            provider="aws",
            region="us-east-1",
            capacity_type="spot",
            price_per_hour="31.4641",
        )
        r["train-b"] = add_placed_instance(
            s,
            org,
            w["train"],
            now,
            provider="aws",
            region="us-east-1",
            capacity_type="spot",
            price_per_hour="31.4641",
        )
        r["serve"] = add_placed_instance(
            s,
            org,
            w["serve"],
            now,
            provider="gcp",
            region="us-central1",
            capacity_type="on-demand",
            price_per_hour="88.49",
            instance_type="a3-highgpu-8g",
        )
        r["batch"] = add_placed_instance(
            s,
            org,
            w["batch"],
            now,
            provider="aws",
            region="us-west-2",
            capacity_type="reserved",
            price_per_hour="16.80",
            commitment_id=commitment.id,
        )
        add_placed_instance(
            s,
            org,
            w["train"],
            now,
            provider="azure",
            region="eastus",
            capacity_type="spot",
            price_per_hour="29.00",
            state="preempted",
            instance_type="Standard_ND96isr_H100_v5",
        )
        pending = s.get(WorkloadRow, w["waiting"])
        assert pending is not None
        pending.wait_reason = "no offer: every candidate was rejected (gpu type)"
        add_samples(s, org, r["train-a"], now, "91.5")
        add_samples(s, org, r["train-b"], now, "2.25")  # idle
        add_samples(s, org, r["serve"], now, "48")
        add_samples(s, org, r["batch"], now, "1.5")  # idle, on the commitment
        t = now - timedelta(minutes=90)
        add_event(s, org, w["train"], t, "preempted", "azure spot instance preempted", "RUNNING", "MIGRATING")
        add_event(
            s,
            org,
            w["train"],
            t + timedelta(minutes=5),
            "migrated",
            "moved to aws us-east-1 spot",
            "MIGRATING",
            "RUNNING",
        )

        gorg = fleet.globex.org_id
        gw = add_running_workload(s, gorg, "globex-secret-job", now)
        gi = add_placed_instance(
            s,
            gorg,
            gw,
            now,
            provider="lambda",
            region="us-south-1",
            capacity_type="on-demand",
            price_per_hour="23.92",
            gpus=8,
        )
        add_samples(s, gorg, gi, now, "0.5")
        fleet.running["globex"] = gi
    return fleet
