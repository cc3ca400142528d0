"""Build one organization's cost report for one day and store it in ``cost_report`` (does I/O).

The numbers come from the cost-accounting contract (``broker.services.costs.cost_lines``) for the
day and each of the 7 days before, and from the utilization samples; names from the fleet
tables. Nothing here decides anything: :func:`broker.reports.model.build_report` does the math.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from broker.db.fleet import CommitmentRow, CostReport, Organization, Project, WorkloadRow
from broker.reports.export import to_json
from broker.reports.model import (
    HISTORY_DAYS,
    Report,
    ReportInputs,
    UtilizationFigures,
    build_report,
    day_window,
)
from broker.reports.render import render_csv, render_html
from broker.services.costs import cost_lines
from broker.services.utilization import GroupBy, summarize
from broker.settings import Settings


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """How reports are made: the day's time zone, the anomaly threshold, how many workloads to list."""

    timezone: str = "UTC"
    anomaly_pct: Decimal = Decimal(25)
    top_workloads: int = 10

    @classmethod
    def from_settings(cls, settings: Settings) -> ReportOptions:
        return cls(settings.report_timezone, settings.report_anomaly_pct, settings.report_top_workloads)


@dataclass(frozen=True, slots=True)
class StoredReport:
    """A report as stored: its numbers (``data``), its HTML and CSV, and when it was made."""

    report: Report
    data: dict[str, Any]
    html: str
    csv: str
    generated_at: datetime


class UnknownOrganization(LookupError):
    """No organization by that id or name."""


def find_org_id(session: Session, name_or_id: str) -> str:
    """The id of the organization called (or identified by) ``name_or_id``."""
    org_id = session.scalar(
        select(Organization.id).where((Organization.id == name_or_id) | (Organization.name == name_or_id))
    )
    if org_id is None:
        raise UnknownOrganization(f"no organization {name_or_id!r}")
    return org_id


def load_inputs(
    session: Session, org_id: str, day: date, options: ReportOptions, now: datetime
) -> ReportInputs:
    """Read everything the report for ``org_id`` on ``day`` is computed from.

    ``now`` cuts off a day that has not ended yet (a report on today counts nothing after now);
    for a past day it changes nothing, so a re-run gives the same numbers."""
    org_name = session.scalar(select(Organization.name).where(Organization.id == org_id))
    if org_name is None:
        raise UnknownOrganization(f"no organization {org_id!r}")
    start, end = day_window(day, options.timezone)
    if now <= start:
        raise ValueError(f"{day.isoformat()} has not started yet in {options.timezone}")
    lines = cost_lines(session, org_id=org_id, start=start, end=end, now=now)
    history = {}
    for n in range(1, HISTORY_DAYS + 1):
        earlier = day - timedelta(days=n)
        h_start, h_end = day_window(earlier, options.timezone)
        history[earlier] = cost_lines(session, org_id=org_id, start=h_start, end=h_end, now=now)

    # ``now`` only fills in a missing bound; both bounds are given, so the day decides, not the clock.
    org_util = summarize(session, org_id, GroupBy.ORG, end, start=start, end=end).groups
    utilization = None
    if org_util:
        g = org_util[0]
        utilization = UtilizationFigures(g.avg_gpu_util_pct, g.samples, g.gpus, g.idle_gpu_fraction)
    by_project = {
        g.project_id: g.avg_gpu_util_pct
        for g in summarize(session, org_id, GroupBy.PROJECT, end, start=start, end=end).groups
        if g.project_id is not None
    }

    workload_ids = {line.workload_id for line in lines if line.workload_id is not None}
    commitment_ids = {line.commitment_id for line in lines if line.commitment_id is not None}
    # (Not ``dict(result)``: a Result has ``keys()``, so dict() would read it as a mapping.)
    projects = {
        pid: name
        for pid, name in session.execute(select(Project.id, Project.name).where(Project.org_id == org_id))
    }
    workloads: dict[str, str | None] = {}
    if workload_ids:
        workloads = {
            wid: name
            for wid, name in session.execute(
                select(WorkloadRow.id, WorkloadRow.name).where(
                    WorkloadRow.org_id == org_id, WorkloadRow.id.in_(workload_ids)
                )
            )
        }
    commitments: dict[str, str | None] = {}
    if commitment_ids:
        commitments = {
            cid: name
            for cid, name in session.execute(
                select(CommitmentRow.id, CommitmentRow.name).where(
                    CommitmentRow.org_id == org_id, CommitmentRow.id.in_(commitment_ids)
                )
            )
        }
    return ReportInputs(
        org_id=org_id,
        org_name=org_name,
        day=day,
        timezone=options.timezone,
        lines=lines,
        history=history,
        utilization=utilization,
        utilization_by_project=by_project,
        project_names=projects,
        workload_names=workloads,
        commitment_names=commitments,
        anomaly_pct=options.anomaly_pct,
        top_workloads=options.top_workloads,
    )


def build_and_store(
    session: Session,
    org_id: str,
    day: date,
    options: ReportOptions,
    now: datetime,
    *,
    delivery: dict[str, Any] | None = None,
) -> StoredReport:
    """Compute the report and upsert it (a rebuild replaces the stored one, and its delivery record)."""
    report = build_report(load_inputs(session, org_id, day, options, now))
    stored = StoredReport(report, to_json(report), render_html(report, now), render_csv(report), now)
    values = {
        "org_id": org_id,
        "day": day,
        "timezone": options.timezone,
        "generated_at": now,
        "data": stored.data,
        "html": stored.html,
        "csv": stored.csv,
        "delivery": delivery or {},
    }
    stmt = insert(CostReport).values(**values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[CostReport.org_id, CostReport.day],
            set_={k: stmt.excluded[k] for k in values if k not in ("org_id", "day")},
        )
    )
    return stored


def report_exists(session: Session, org_id: str, day: date) -> bool:
    """Whether ``org_id`` already has a stored report for ``day`` (reads the key, not the HTML)."""
    found = session.scalar(select(CostReport.day).where(CostReport.org_id == org_id, CostReport.day == day))
    return found is not None


__all__ = [
    "ReportOptions",
    "StoredReport",
    "UnknownOrganization",
    "build_and_store",
    "find_org_id",
    "load_inputs",
    "report_exists",
]
