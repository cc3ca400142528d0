"""Read stored cost reports, always within one organization (does I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from broker.db.fleet import CostReport

MAX_LIST = 366


@dataclass(frozen=True, slots=True)
class ReportListing:
    """One line of the report list: the day and its headline figures, without the HTML or CSV."""

    day: date
    timezone: str
    generated_at: datetime
    totals: dict[str, Any]
    comparison: dict[str, Any]
    anomalies: int


def list_reports(
    session: Session,
    org_id: str,
    *,
    start: date | None = None,
    end: date | None = None,
    before: date | None = None,
    limit: int = 31,
) -> tuple[list[ReportListing], date | None]:
    """``org_id``'s reports in ``[start, end]``, newest first, older than ``before`` when given; and
    the day to pass as ``before`` for the next page (None: this was the last)."""
    data = CostReport.data
    query = (
        select(
            CostReport.day,
            CostReport.timezone,
            CostReport.generated_at,
            data["totals"],
            data["comparison"],
            func.jsonb_array_length(data["anomalies"]),
        )
        .where(CostReport.org_id == org_id)
        .order_by(CostReport.day.desc())
        .limit(limit + 1)
    )
    if start is not None:
        query = query.where(CostReport.day >= start)
    if end is not None:
        query = query.where(CostReport.day <= end)
    if before is not None:
        query = query.where(CostReport.day < before)
    rows = [ReportListing(*row) for row in session.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].day if more and rows else None)


def get_report(session: Session, org_id: str, day: date) -> CostReport | None:
    """``org_id``'s report for ``day``; None when there is none (or it is another organization's)."""
    return session.scalar(select(CostReport).where(CostReport.org_id == org_id, CostReport.day == day))


__all__ = ["MAX_LIST", "ReportListing", "get_report", "list_reports"]
