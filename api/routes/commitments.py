"""/v1/commitments: record reserved-capacity contracts, change and delete them, report their usage."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.auth import Operator, Viewer
from api.deps import NowDep, SessionDep
from api.errors import ApiProblem, not_found
from api.idempotency import idempotent
from broker.core.workload import CommitmentKind
from broker.services import commitments as svc
from broker.services.paging import InvalidCursor

router = APIRouter(prefix="/v1", tags=["commitments"])

Money = Annotated[Decimal, Field(ge=0, le=Decimal("1e12"), allow_inf_nan=False)]
GpuCount = Annotated[int, Field(ge=1, le=svc.MAX_GPUS)]
ShortText = Annotated[str, Field(min_length=1, max_length=200)]


class CommitmentIn(BaseModel):
    """A new commitment. Give exactly one of ``price_per_gpu_hour`` and ``total_usd`` (the contract's
    whole price, converted to USD per GPU-hour over ``gpu_count`` × the term's hours)."""

    model_config = ConfigDict(extra="forbid")

    name: ShortText | None = None
    project: ShortText | None = Field(None, description="A project of your organization (name or id)")
    provider: Annotated[str, Field(min_length=1, max_length=64)]
    region: Annotated[str, Field(min_length=1, max_length=128)]
    zone: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    accelerator: Annotated[str, Field(min_length=1, max_length=64, description="GPU type, e.g. H100")]
    instance_type: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    gpu_count: GpuCount
    starts_at: AwareDatetime
    ends_at: AwareDatetime = Field(description="After starts_at, at most 10 years later")
    price_per_gpu_hour: Money | None = None
    total_usd: Money | None = None
    kind: CommitmentKind = CommitmentKind.RESERVED_INSTANCE
    reservation_id: ShortText | None = Field(None, description="The provider's reservation to launch into")


class CommitmentUpdate(BaseModel):
    """A change: only the fields sent change (``name`` and ``reservation_id`` may be set to null)."""

    model_config = ConfigDict(extra="forbid")

    name: ShortText | None = None
    gpu_count: GpuCount | None = None
    ends_at: AwareDatetime | None = None
    price_per_gpu_hour: Money | None = None
    total_usd: Money | None = None
    reservation_id: ShortText | None = None


class CommitmentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None
    project: str | None
    provider: str
    region: str
    zone: str | None
    accelerator: str
    instance_type: str | None
    gpu_count: int
    kind: str
    starts_at: datetime
    ends_at: datetime
    price_per_gpu_hour: Decimal = Field(description="USD per GPU-hour, paid whether used or not")
    total_usd: Decimal = Field(description="The whole term's price")
    reservation_id: str | None
    created_at: datetime
    updated_at: datetime


class CommitmentPage(BaseModel):
    items: list[CommitmentOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last")


class UsageFiguresOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    committed_gpu_hours: Decimal
    used_gpu_hours: Decimal
    idle_gpu_hours: Decimal
    utilization: Decimal | None = Field(description="used / committed (0-1); null when nothing was committed")
    idle_waste_usd: Decimal


class DayUsageOut(UsageFiguresOut):
    day: date


class CommitmentUsageOut(BaseModel):
    commitment_id: str
    start: datetime
    end: datetime
    gpu_count: int
    price_per_gpu_hour: Decimal
    days: list[DayUsageOut]
    totals: UsageFiguresOut

    @classmethod
    def of(cls, u: svc.CommitmentUsage) -> CommitmentUsageOut:
        return cls(
            commitment_id=u.commitment_id,
            start=u.start,
            end=u.end,
            gpu_count=u.gpu_count,
            price_per_gpu_hour=u.price_per_gpu_hour,
            days=[
                DayUsageOut(day=d.day, **UsageFiguresOut.model_validate(d.figures).model_dump())
                for d in u.days
            ],
            totals=UsageFiguresOut.model_validate(u.totals),
        )


def invalid(field: str, message: str) -> ApiProblem:
    """A 422 shaped like the request-validation one (``errors`` names the field)."""
    return ApiProblem(
        422,
        "validation-error",
        "Request is not valid",
        f"{field}: {message}",
        errors=[{"field": field, "message": message}],
    )


@router.post(
    "/commitments",
    status_code=201,
    response_model=CommitmentOut,
    summary="Record a commitment (reserved instance, capacity block, savings plan, contract)",
)
def create_commitment(
    request: Request, body: CommitmentIn, principal: Operator, session: SessionDep, now: NowDep
) -> JSONResponse:
    terms = svc.CommitmentTerms(**body.model_dump())

    def work() -> CommitmentOut:
        try:
            return CommitmentOut.model_validate(svc.create_commitment(session, principal.org_id, terms, now))
        except svc.CommitmentInvalid as exc:
            raise invalid(exc.field, exc.message) from exc

    return idempotent(request, session, principal, body, now, work)


@router.get("/commitments", response_model=CommitmentPage, summary="Commitments, newest first")
def list_commitments(
    principal: Viewer,
    session: SessionDep,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    active_at: Annotated[AwareDatetime | None, Query(description="Only those in force at this time")] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CommitmentPage:
    try:
        page = svc.list_commitments(
            session, principal.org_id, provider=provider, active_at=active_at, cursor=cursor, limit=limit
        )
    except InvalidCursor as exc:
        raise invalid("cursor", str(exc)) from exc
    return CommitmentPage(
        items=[CommitmentOut.model_validate(c) for c in page.items], next_cursor=page.next_cursor
    )


@router.get("/commitments/{commitment_id}", response_model=CommitmentOut, summary="One commitment")
def get_commitment(commitment_id: str, principal: Viewer, session: SessionDep) -> CommitmentOut:
    try:
        return CommitmentOut.model_validate(svc.get_commitment(session, principal.org_id, commitment_id))
    except svc.CommitmentNotFound as exc:
        raise not_found("commitment", commitment_id) from exc


@router.patch("/commitments/{commitment_id}", response_model=CommitmentOut, summary="Change a commitment")
def update_commitment(
    commitment_id: str, body: CommitmentUpdate, principal: Operator, session: SessionDep, now: NowDep
) -> CommitmentOut:
    patch = svc.CommitmentPatch(**{name: getattr(body, name) for name in body.model_fields_set})
    try:
        view = svc.update_commitment(session, principal.org_id, commitment_id, patch, now)
    except svc.CommitmentNotFound as exc:
        raise not_found("commitment", commitment_id) from exc
    except svc.CommitmentInvalid as exc:
        raise invalid(exc.field, exc.message) from exc
    return CommitmentOut.model_validate(view)


@router.delete(
    "/commitments/{commitment_id}",
    status_code=204,
    summary="Delete a commitment (it stops counting for placement; its history is kept)",
)
def delete_commitment(commitment_id: str, principal: Operator, session: SessionDep, now: NowDep) -> Response:
    try:
        svc.delete_commitment(session, principal.org_id, commitment_id, now)
    except svc.CommitmentNotFound as exc:
        raise not_found("commitment", commitment_id) from exc
    return Response(status_code=204)


@router.get(
    "/commitments/{commitment_id}/usage",
    response_model=CommitmentUsageOut,
    summary="Per UTC day: GPU-hours committed, used and idle, and the idle waste",
)
def commitment_usage(
    commitment_id: str,
    principal: Viewer,
    session: SessionDep,
    now: NowDep,
    start: Annotated[AwareDatetime | None, Query(description="Default: the commitment's start")] = None,
    end: Annotated[AwareDatetime | None, Query(description="Default: its end, or now if sooner")] = None,
) -> CommitmentUsageOut:
    try:
        result = svc.usage(session, principal.org_id, commitment_id, now, start=start, end=end)
    except svc.CommitmentNotFound as exc:
        raise not_found("commitment", commitment_id) from exc
    except svc.CommitmentInvalid as exc:
        raise invalid(exc.field, exc.message) from exc
    return CommitmentUsageOut.of(result)
