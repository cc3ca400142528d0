"""Instances as the API lists them: filters, keyset pages, current GPU utilization (reads the database).

``current_gpu_util_pct`` is the mean ``gpu_util_pct`` over an instance's GPUs at its latest
utilization sample, when that sample is at most :data:`UTILIZATION_FRESH_FOR` old; an instance
whose agent has been silent longer (or never reported) shows ``None``, not a stale figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from broker.db.fleet import InstanceRow, Project
from broker.services.paging import Page, after_cursor, page_of
from broker.services.utilization import latest_utilization

UTILIZATION_FRESH_FOR = timedelta(minutes=10)
UTIL_QUANTUM = Decimal("0.1")


class InstanceNotFound(LookupError):
    """No such instance in the caller's organization."""


@dataclass(frozen=True, slots=True)
class InstanceView:
    """One instance as the API shows it (``project`` is the project's name)."""

    id: str
    workload_id: str
    project: str
    provider: str
    provider_instance_id: str | None
    region: str
    zone: str | None
    instance_type: str
    accelerator: str
    gpus: int
    capacity_type: str
    price_per_hour: Decimal
    commitment_id: str | None
    state: str
    state_reason: str | None
    notice_at: datetime | None
    launched_at: datetime | None
    ended_at: datetime | None
    created_at: datetime
    current_gpu_util_pct: Decimal | None


def _query(org_id: str) -> Select[tuple[InstanceRow, str]]:
    return (
        select(InstanceRow, Project.name)
        .join(Project, Project.id == InstanceRow.project_id)
        .where(InstanceRow.org_id == org_id)
    )


def _utilization(session: Session, org_id: str, ids: list[str], now: datetime) -> dict[str, Decimal]:
    found = latest_utilization(session, org_id, ids, now=now, window=UTILIZATION_FRESH_FOR)
    return {k: v.quantize(UTIL_QUANTUM) for k, v in found.items()}


def _view(row: InstanceRow, project: str, util: Decimal | None) -> InstanceView:
    return InstanceView(
        id=row.id,
        workload_id=row.workload_id,
        project=project,
        provider=row.provider,
        provider_instance_id=row.provider_instance_id,
        region=row.region,
        zone=row.zone,
        instance_type=row.instance_type,
        accelerator=row.accelerator,
        gpus=row.gpus,
        capacity_type=row.capacity_type,
        price_per_hour=row.price_per_hour,
        commitment_id=row.commitment_id,
        state=row.state,
        state_reason=row.state_reason,
        notice_at=row.notice_at,
        launched_at=row.launched_at,
        ended_at=row.ended_at,
        created_at=row.created_at,
        current_gpu_util_pct=util,
    )


def list_instances(
    session: Session,
    org_id: str,
    now: datetime,
    *,
    workload_id: str | None = None,
    state: str | None = None,
    provider: str | None = None,
    capacity_type: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page[InstanceView]:
    """The organization's instances, newest first (:class:`~broker.services.commitments.InvalidCursor`
    for a bad cursor)."""
    query = _query(org_id)
    if workload_id is not None:
        query = query.where(InstanceRow.workload_id == workload_id)
    if state is not None:
        query = query.where(InstanceRow.state == state)
    if provider is not None:
        query = query.where(InstanceRow.provider == provider.strip().lower())
    if capacity_type is not None:
        query = query.where(InstanceRow.capacity_type == capacity_type)
    after = after_cursor(InstanceRow.created_at, InstanceRow.id, cursor)
    if after is not None:
        query = query.where(after)
    query = query.order_by(InstanceRow.created_at.desc(), InstanceRow.id.desc()).limit(limit + 1)
    rows, next_cursor = page_of(session.execute(query).all(), limit, lambda r: (r[0].created_at, r[0].id))
    utils = _utilization(session, org_id, [r[0].id for r in rows], now)
    return Page([_view(r[0], r[1], utils.get(r[0].id)) for r in rows], next_cursor)


def get_instance(session: Session, org_id: str, instance_id: str, now: datetime) -> InstanceView:
    found = session.execute(_query(org_id).where(InstanceRow.id == instance_id)).first()
    if found is None:
        raise InstanceNotFound(instance_id)
    utils = _utilization(session, org_id, [instance_id], now)
    return _view(found[0], found[1], utils.get(instance_id))


__all__ = [
    "UTILIZATION_FRESH_FOR",
    "InstanceNotFound",
    "InstanceView",
    "get_instance",
    "list_instances",
]
