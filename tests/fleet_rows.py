"""Fleet rows (projects, workloads, instances) inserted straight into a test database: I/O, no scheduler.

The one place tests make ``instance`` rows, and the workload and project rows those need, without
the scheduler that normally writes them. ``add_instance_row`` covers every shape the tests use;
``add_running_instance`` is the whole of it in a transaction of its own, for tests on a ``database``
whose code under test commits. Ids come from a counter, so rows made in order sort in that order.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from broker.db.engine import Database
from broker.db.fleet import InstanceRow, Project, WorkloadRow
from broker.services.tenancy import find_project
from tests.api.conftest import NOW

HOUR_AGO = NOW - timedelta(hours=1)  # when an instance was made, unless launched or told otherwise

_ids = itertools.count(1)


def ensure_project(
    session: Session, org_id: str, name: str = "default", *, created_at: datetime = NOW
) -> str:
    """The id of ``org_id``'s project ``name`` (a name or an id), made (at ``created_at``) if new."""
    project = find_project(session, org_id, name)
    if project is None:
        project = Project(id=f"prj_test{next(_ids):06d}", org_id=org_id, name=name, created_at=created_at)
        session.add(project)
        session.flush()
    return project.id


def add_workload_row(
    session: Session,
    org_id: str,
    project_id: str,
    *,
    state: str = "RUNNING",
    gpus_per_node: int = 8,
    nodes: int = 1,
    spec: dict[str, Any] | None = None,
    created_at: datetime = NOW,
) -> str:
    """A workload row as the API would have stored it (only the columns that must be set), last
    changed when it was made."""
    workload_id = f"wl_test{next(_ids):06d}"
    session.add(
        WorkloadRow(
            id=workload_id,
            org_id=org_id,
            project_id=project_id,
            state=state,
            spec={} if spec is None else spec,
            gpus_per_node=gpus_per_node,
            nodes=nodes,
            created_at=created_at,
            updated_at=created_at,
            state_changed_at=created_at,
        )
    )
    session.flush()  # the ORM has no relationship to order the inserts by: the instance's FK needs it
    return workload_id


def add_instance_row(
    session: Session,
    org_id: str,
    project_id: str,
    *,
    workload_id: str | None = None,
    provider: str = "aws",
    region: str = "us-east-1",
    zone: str | None = "{region}a",
    instance_type: str = "p5.48xlarge",
    accelerator: str = "H100",
    gpus: int = 8,
    capacity_type: str = "on-demand",
    price_per_hour: Decimal | str = Decimal(10),
    commitment_id: str | None = None,
    state: str | None = None,
    serving: bool = False,
    provider_instance_id: str | None = "prov-{id}",
    launched_at: datetime | None = None,
    ended_at: datetime | None = None,
    created_at: datetime | None = None,
) -> str:
    """An instance row as the scheduler would have stored it; its id.

    Without ``workload_id``, a ``RUNNING`` workload of its own (one node of ``gpus``) is made with it.
    ``zone`` and ``provider_instance_id`` are templates filled with ``region`` and the instance's id
    (``us-east-1a``, ``prov-i_test000042``); pass None for none. ``state`` defaults to
    ``terminated`` if ``ended_at`` is given, else ``running``; ``created_at`` (and ``updated_at``,
    always the same) to ``launched_at``, or an hour before ``NOW`` if it never launched.
    """
    created = created_at or launched_at or HOUR_AGO
    if workload_id is None:
        workload_id = add_workload_row(session, org_id, project_id, gpus_per_node=gpus, created_at=created)
    instance_id = f"i_test{next(_ids):06d}"
    provider_id = None if provider_instance_id is None else provider_instance_id.format(id=instance_id)
    session.add(
        InstanceRow(
            id=instance_id,
            org_id=org_id,
            project_id=project_id,
            workload_id=workload_id,
            provider=provider,
            provider_instance_id=provider_id,
            region=region,
            zone=None if zone is None else zone.format(region=region),
            instance_type=instance_type,
            accelerator=accelerator,
            gpus=gpus,
            capacity_type=capacity_type,
            price_per_hour=Decimal(price_per_hour),
            commitment_id=commitment_id,
            state=state or ("terminated" if ended_at else "running"),
            serving=serving,
            launched_at=launched_at,
            ended_at=ended_at,
            created_at=created,
            updated_at=created,
        )
    )
    session.flush()
    return instance_id


def add_running_instance(
    database: Database,
    org_id: str,
    *,
    project: str = "default",
    provider: str = "aws",
    region: str = "us-east-1",
    capacity_type: str = "on-demand",
    gpus: int = 8,
) -> str:
    """A running ``p5.48xlarge`` of ``org_id`` at $98.32/h, made at ``NOW`` with the workload it
    serves in ``project`` (made if new), committed in a transaction of its own; its id."""
    with database.sessions.begin() as session:
        project_id = ensure_project(session, org_id, project)
        workload_id = add_workload_row(
            session, org_id, project_id, gpus_per_node=gpus, spec={"gpu": "H100", "count": gpus}
        )
        return add_instance_row(
            session,
            org_id,
            project_id,
            workload_id=workload_id,
            provider=provider,
            region=region,
            zone=None,
            capacity_type=capacity_type,
            gpus=gpus,
            price_per_hour=Decimal("98.32"),
            provider_instance_id=None,
            created_at=NOW,
        )
