"""/v1/costs: spend, burn rate, budgets, savings against on demand and commitment waste (thin over services).

Amounts are rounded for display only, after summing: USD to the cent, GPU-hours to the
micro-hour, the burn rate to 1/100 of a cent per hour. Decimals serialize as JSON strings.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, Field

from api.auth import Viewer
from api.deps import NowDep, SessionDep
from api.errors import ApiProblem, not_found
from broker.services import costs as svc
from broker.services.budgets import month_start
from broker.services.tenancy import find_project

router = APIRouter(prefix="/v1/costs", tags=["costs"])

_CENT = Decimal("0.01")
_RATE = Decimal("0.0001")
_HOURS = Decimal("0.000001")
GroupBy = Literal["project", "provider", "region", "capacity_type", "accelerator", "workload"]


def _usd(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_EVEN)


def _usd_or_none(value: Decimal | None) -> Decimal | None:
    return None if value is None else _usd(value)


def _invalid(field: str, message: str) -> ApiProblem:
    return ApiProblem(
        422,
        "validation-error",
        "Request is not valid",
        f"{field}: {message}",
        errors=[{"field": field, "message": message}],
    )


class ProjectSpendOut(BaseModel):
    project_id: str | None = Field(description="null: commitments reserved for no project")
    name: str | None
    spend_today_usd: Decimal
    spend_month_to_date_usd: Decimal
    max_usd_per_month: Decimal | None = Field(description="The project's monthly limit; null: none")


class CostSummaryOut(BaseModel):
    now: datetime = Field(description="The instant the figures are for; days and months are UTC")
    burn_rate_usd_per_hour: Decimal = Field(
        description="Running instances not on a commitment at their current price, plus active commitments"
    )
    spend_today_usd: Decimal
    spend_month_to_date_usd: Decimal
    projects: list[ProjectSpendOut]
    budget_usd_per_month: Decimal | None = Field(
        description="Sum of the listed projects' monthly limits; null when none has one"
    )
    savings_vs_on_demand_usd: Decimal = Field(
        description="Month to date: the on-demand price of the same GPU-hours minus what was paid"
    )
    commitment_waste_usd: Decimal = Field(description="Month to date: idle committed GPU-hours x their price")


class CostGroupOut(BaseModel):
    key: str | None = Field(description="The group's value (an id for project and workload); null: none")
    name: str | None = Field(description="The project's name when grouped by project")
    gpu_hours: Decimal = Field(description="GPU-hours run by instances (committed-but-idle hours excluded)")
    usd: Decimal
    ondemand_usd: Decimal | None = Field(description="Over the lines with a known on-demand price")
    savings_usd: Decimal | None = Field(description="ondemand_usd minus the usd of those same lines")
    commitment_waste_usd: Decimal


class CostGroupsOut(BaseModel):
    start: datetime
    end: datetime
    group_by: str
    groups: list[CostGroupOut]
    total_usd: Decimal
    total_savings_usd: Decimal


@router.get("/summary", response_model=CostSummaryOut, summary="Spend, burn rate, budget, savings, waste")
def summary(
    principal: Viewer,
    session: SessionDep,
    clock_now: NowDep,
    project: Annotated[str | None, Query(max_length=100, description="A project's name or id")] = None,
    now: Annotated[
        AwareDatetime | None, Query(description="Figures as of this instant (default: now)")
    ] = None,
) -> CostSummaryOut:
    at = clock_now if now is None else now
    if at > clock_now:
        raise _invalid("now", "now may not be in the future")
    project_id = None
    if project is not None:
        found = find_project(session, principal.org_id, project)
        if found is None:
            raise not_found("project", project)
        project_id = found.id
    s = svc.cost_summary(session, org_id=principal.org_id, now=at, project_id=project_id)
    return CostSummaryOut(
        now=s.now,
        burn_rate_usd_per_hour=s.burn_rate_usd_per_hour.quantize(_RATE, rounding=ROUND_HALF_EVEN),
        spend_today_usd=_usd(s.spend_today_usd),
        spend_month_to_date_usd=_usd(s.spend_month_to_date_usd),
        projects=[
            ProjectSpendOut(
                project_id=p.project_id,
                name=p.name,
                spend_today_usd=_usd(p.spend_today_usd),
                spend_month_to_date_usd=_usd(p.spend_month_to_date_usd),
                max_usd_per_month=p.max_usd_per_month,
            )
            for p in s.projects
        ],
        budget_usd_per_month=s.budget_usd_per_month,
        savings_vs_on_demand_usd=_usd(s.savings_vs_on_demand_usd),
        commitment_waste_usd=_usd(s.commitment_waste_usd),
    )


@router.get("", response_model=CostGroupsOut, summary="Cost totals over a window, grouped")
def grouped(
    principal: Viewer,
    session: SessionDep,
    now: NowDep,
    group_by: GroupBy = "project",
    start: Annotated[AwareDatetime | None, Query(description="Default: the start of this UTC month")] = None,
    end: Annotated[
        AwareDatetime | None, Query(description="Default: now; nothing after now is counted")
    ] = None,
) -> CostGroupsOut:
    window_start = start if start is not None else month_start(now)
    window_end = end if end is not None else now
    try:
        groups = svc.grouped_costs(
            session, org_id=principal.org_id, start=window_start, end=window_end, group_by=group_by, now=now
        )
    except svc.CostWindowInvalid as exc:
        raise _invalid(exc.field, exc.message) from exc
    return CostGroupsOut(
        start=window_start,
        end=window_end,
        group_by=group_by,
        groups=[
            CostGroupOut(
                key=g.key,
                name=g.name,
                gpu_hours=g.gpu_hours.quantize(_HOURS, rounding=ROUND_HALF_EVEN),
                usd=_usd(g.usd),
                ondemand_usd=_usd_or_none(g.ondemand_usd),
                savings_usd=_usd_or_none(g.savings_usd),
                commitment_waste_usd=_usd(g.idle_waste_usd),
            )
            for g in groups
        ],
        total_usd=_usd(sum((g.usd for g in groups), Decimal(0))),
        total_savings_usd=_usd(sum((g.savings_usd or Decimal(0) for g in groups), Decimal(0))),
    )
