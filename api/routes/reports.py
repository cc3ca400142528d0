"""/v1/reports: the nightly cost reports as JSON, HTML and CSV (thin over broker.reports.store)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from api.auth import Viewer
from api.deps import SessionDep
from api.errors import ApiProblem, not_found
from broker.db.fleet import CostReport
from broker.reports.store import MAX_LIST, ReportListing, get_report, list_reports

router = APIRouter(prefix="/v1/reports", tags=["reports"])

DayParam = Annotated[date, Path(description="The report's day, YYYY-MM-DD (a calendar day in its time zone)")]


class ReportLinks(BaseModel):
    """Where the same report is, in each format (paths on this API)."""

    json_url: str
    html_url: str
    csv_url: str


class ReportSummaryOut(BaseModel):
    """One report in the list: its day and headline figures (amounts in USD, as decimal strings)."""

    day: date
    timezone: str
    generated_at: datetime
    spend_usd: Decimal
    gpu_hours: Decimal
    savings_usd: Decimal
    commitment_waste_usd: Decimal
    change_vs_previous_day_pct: Decimal | None = Field(description="Null when the day before cost nothing")
    anomalies: int
    links: ReportLinks

    @classmethod
    def of(cls, row: ReportListing) -> ReportSummaryOut:
        t, c = row.totals, row.comparison
        return cls(
            day=row.day,
            timezone=row.timezone,
            generated_at=row.generated_at,
            spend_usd=t["spend_usd"],
            gpu_hours=t["gpu_hours"],
            savings_usd=t["savings_usd"],
            commitment_waste_usd=t["commitment_waste_usd"],
            change_vs_previous_day_pct=c["change_vs_previous_day_pct"],
            anomalies=row.anomalies,
            links=_links(row.day),
        )


class ReportPage(BaseModel):
    items: list[ReportSummaryOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for older reports; null on the last page")


class ReportOut(BaseModel):
    """One report: ``report`` holds every figure (see docs/reports.md); ``delivery`` how it was sent."""

    org_id: str
    day: date
    timezone: str
    generated_at: datetime
    delivery: dict[str, Any]
    links: ReportLinks
    report: dict[str, Any]


def _links(day: date) -> ReportLinks:
    base = f"/v1/reports/{day.isoformat()}"
    return ReportLinks(json_url=base, html_url=f"{base}.html", csv_url=f"{base}.csv")


def _found(session: SessionDep, org_id: str, day: date) -> CostReport:
    row = get_report(session, org_id, day)
    if row is None:
        raise not_found("report for", day.isoformat())
    return row


@router.get("", response_model=ReportPage, summary="Stored nightly cost reports, newest first")
def get_reports(
    principal: Viewer,
    session: SessionDep,
    start: Annotated[date | None, Query(description="Only days on or after this one")] = None,
    end: Annotated[date | None, Query(description="Only days on or before this one")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 31,
    cursor: Annotated[
        str | None, Query(max_length=64, description="`next_cursor` of the previous page")
    ] = None,
) -> ReportPage:
    if start is not None and end is not None and end < start:
        raise _invalid("end", "end is before start")
    before = None
    if cursor is not None:
        try:
            before = date.fromisoformat(cursor)
        except ValueError:
            raise _invalid(
                "cursor", "the cursor is not valid; pass next_cursor from the previous page"
            ) from None
    rows, next_day = list_reports(session, principal.org_id, start=start, end=end, before=before, limit=limit)
    return ReportPage(
        items=[ReportSummaryOut.of(r) for r in rows],
        next_cursor=next_day.isoformat() if next_day else None,
    )


# The .html and .csv routes come before the JSON one: "{day}" alone would also match "2026-11-23.csv".
@router.get(
    "/{day}.html",
    response_class=HTMLResponse,
    summary="One day's report as a self-contained HTML page",
    responses={200: {"content": {"text/html": {}}}, 404: {"description": "No report for that day"}},
)
def get_report_html(day: DayParam, principal: Viewer, session: SessionDep) -> HTMLResponse:
    return HTMLResponse(_found(session, principal.org_id, day).html)


@router.get(
    "/{day}.csv",
    response_class=Response,
    summary="One day's report as CSV (one table, one row per figure group)",
    responses={200: {"content": {"text/csv": {}}}, 404: {"description": "No report for that day"}},
)
def get_report_csv(day: DayParam, principal: Viewer, session: SessionDep) -> Response:
    row = _found(session, principal.org_id, day)
    name = f"gpubroker-report-{day.isoformat()}.csv"
    return Response(
        row.csv,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/{day}",
    response_model=ReportOut,
    summary="One day's report as JSON",
    responses={404: {"description": "No report for that day"}},
)
def get_report_json(day: DayParam, principal: Viewer, session: SessionDep) -> ReportOut:
    row = _found(session, principal.org_id, day)
    return ReportOut(
        org_id=row.org_id,
        day=row.day,
        timezone=row.timezone,
        generated_at=row.generated_at,
        delivery=row.delivery,
        links=_links(row.day),
        report=row.data,
    )


def _invalid(field: str, message: str) -> ApiProblem:
    errors = [{"field": field, "message": message}]
    return ApiProblem(422, "validation-error", "Request is not valid", f"{field}: {message}", errors=errors)
