"""/v1/workloads: submit, read, list, cancel, finish, checkpoint, explain, events (thin over services)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.concurrency import run_in_threadpool

from api.auth import Operator, Viewer
from api.deps import NowDep, SessionDep
from api.errors import ApiProblem, not_found
from api.idempotency import HEADER as IDEMPOTENCY_HEADER
from api.idempotency import idempotent
from broker.core.lifecycle import WorkloadState
from broker.core.placement.decision import PlacementDecision
from broker.core.workload import CapacityPreference, GangScope
from broker.db.fleet import WorkloadEvent, WorkloadRow
from broker.services import workloads as service
from broker.services.budgets import BudgetExceeded
from broker.services.lifecycle import Topic
from broker.services.placement import explain_workload
from broker.services.submissions import Submission, SubmissionWriter, precheck
from broker.services.tenancy import Principal, find_project

router = APIRouter(prefix="/v1", tags=["workloads"])

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_LABEL_KEY = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$"


class RunIn(BaseModel):
    """What to run: ``{"kind": "capacity"}`` (bring your own stack) or a container image + command."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["capacity", "container"] = "capacity"
    image: str | None = Field(default=None, min_length=1, max_length=512)
    command: list[Annotated[str, Field(max_length=4096)]] = Field(default_factory=list, max_length=256)
    env: dict[str, Annotated[str, Field(max_length=8192)]] = Field(default_factory=dict, max_length=256)

    @model_validator(mode="after")
    def _image_for_container(self) -> RunIn:
        if self.kind == "container" and not self.image:
            raise ValueError("a container workload needs an image")
        if self.kind == "capacity" and (self.image or self.command):
            raise ValueError("a capacity workload runs nothing: leave image and command out")
        return self


class WorkloadIn(BaseModel):
    """A provisioning request: everything the placement engine takes, and what to run."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=_NAME)
    project: str = Field(default="default", min_length=1, max_length=100)
    gpu_types: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=8, description="Acceptable GPU types, preferred first (e.g. H100)"
    )
    gpus_per_node: int = Field(ge=1, le=16, description="GPUs per instance")
    nodes: int = Field(default=1, ge=1, le=256)
    gang: GangScope = GangScope.NONE
    capacity: CapacityPreference = CapacityPreference.AUTO
    max_price_per_gpu_hour: Decimal | None = Field(default=None, gt=0, le=1000)
    deadline: datetime | None = None
    expected_hours: Decimal = Field(default=Decimal(1), gt=0, le=8760)
    checkpoint_gb: Decimal = Field(default=Decimal(0), ge=0, le=1_000_000)
    restart_overhead_hours: Decimal = Field(default=Decimal(0), ge=0, le=48)
    checkpoint_interval_hours: Decimal | None = Field(default=None, gt=0, le=8760)
    interruptible: bool = True
    allowed_clouds: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=32
    )
    denied_clouds: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=32
    )
    allowed_regions: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=256
    )
    denied_regions: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=256
    )
    labels: dict[Annotated[str, Field(pattern=_LABEL_KEY)], Annotated[str, Field(max_length=256)]] = Field(
        default_factory=dict, max_length=64
    )
    run: RunIn = Field(default_factory=RunIn)

    @field_validator("deadline")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must include a time zone (e.g. 2026-12-01T00:00:00Z)")
        return value

    @field_validator("max_price_per_gpu_hour", "expected_hours", "checkpoint_gb", "restart_overhead_hours")
    @classmethod
    def _finite(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and not value.is_finite():
            raise ValueError("must be a finite number")
        return value

    def to_spec(self) -> service.WorkloadSpec:
        return service.WorkloadSpec(
            gpu_types=tuple(self.gpu_types),
            gpus_per_node=self.gpus_per_node,
            nodes=self.nodes,
            name=self.name,
            project=self.project,
            gang=self.gang,
            capacity=self.capacity,
            max_price_per_gpu_hour=self.max_price_per_gpu_hour,
            deadline=self.deadline,
            expected_hours=self.expected_hours,
            checkpoint_gb=self.checkpoint_gb,
            restart_overhead_hours=self.restart_overhead_hours,
            checkpoint_interval_hours=self.checkpoint_interval_hours,
            interruptible=self.interruptible,
            allowed_clouds=tuple(self.allowed_clouds),
            denied_clouds=tuple(self.denied_clouds),
            allowed_regions=tuple(self.allowed_regions),
            denied_regions=tuple(self.denied_regions),
            labels=dict(self.labels),
            run=service.RunSpec(self.run.kind, self.run.image, tuple(self.run.command), dict(self.run.env)),
        )


class PlacementOut(BaseModel):
    cloud: str
    region: str
    zone: str | None
    instance_type: str | None
    accelerator: str | None = None
    capacity_type: str
    price_per_hour: Decimal
    commitment_id: str | None
    label: str | None = None
    started_at: datetime | None = None


class WorkloadOut(BaseModel):
    id: str
    name: str | None
    project: str
    state: WorkloadState
    gpu_types: list[str]
    gpus_per_node: int
    nodes: int
    capacity: str
    max_price_per_gpu_hour: Decimal | None
    deadline: datetime | None
    expected_hours: Decimal
    labels: dict[str, str]
    run: dict[str, Any]
    placement: PlacementOut | None
    wait_reason: str | None
    failure_reason: str | None
    generation: int
    created_at: datetime
    updated_at: datetime
    state_changed_at: datetime

    @classmethod
    def of(cls, row: WorkloadRow, project: str) -> WorkloadOut:
        spec = row.spec
        run = dict(spec.get("run") or {})
        if run.get("env"):
            run["env"] = {k: "***" for k in run["env"]}  # values may be secrets: never echoed back
        return cls(
            id=row.id,
            name=row.name,
            project=project,
            state=WorkloadState(row.state),
            gpu_types=spec["gpu_types"],
            gpus_per_node=row.gpus_per_node,
            nodes=row.nodes,
            capacity=spec.get("capacity", "auto"),
            max_price_per_gpu_hour=spec.get("max_price_per_gpu_hour"),
            deadline=spec.get("deadline"),
            expected_hours=spec.get("expected_hours", "1"),
            labels=row.labels or {},
            run=run,
            placement=PlacementOut.model_validate(row.placement) if row.placement else None,
            wait_reason=row.wait_reason,
            failure_reason=row.failure_reason,
            generation=row.generation,
            created_at=row.created_at,
            updated_at=row.updated_at,
            state_changed_at=row.state_changed_at,
        )


class WorkloadPage(BaseModel):
    items: list[WorkloadOut]
    next_cursor: str | None


class CancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="", max_length=500)


class FinishIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Literal["succeeded", "failed"]
    message: str = Field(default="", max_length=2000)


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    kind: str
    from_state: str | None
    to_state: str | None
    message: str
    data: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    next_after: int | None


class CandidateOut(BaseModel):
    label: str
    cloud: str
    region: str
    zone: str | None
    instance_type: str | None
    capacity_type: str
    commitment_id: str | None
    price_per_hour: Decimal | None
    expected_total_usd: Decimal | None = None
    filter: str | None = None
    reason: str | None = None


class ExplanationOut(BaseModel):
    workload_id: str
    state: WorkloadState
    decision: Literal["place", "wait"]
    wait_reason: str | None
    chosen: CandidateOut | None
    scored: list[CandidateOut]
    rejected: list[CandidateOut]
    rejections_by_filter: dict[str, int]
    generated_at: datetime


def _candidate(candidate: Any, **extra: Any) -> CandidateOut:
    return CandidateOut(
        label=candidate.label,
        cloud=candidate.cloud,
        region=candidate.region,
        zone=candidate.zone,
        instance_type=candidate.instance_type,
        capacity_type=candidate.capacity_type.value,
        commitment_id=candidate.commitment.commitment_id if candidate.commitment else None,
        price_per_hour=candidate.offer.price_per_hour if candidate.offer is not None else None,
        **extra,
    )


def _problem(exc: service.WorkloadError) -> ApiProblem:
    titles = {404: "Not found", 409: "Conflict", 422: "Request is not valid"}
    return ApiProblem(exc.status, exc.kind, titles.get(exc.status, "Error"), exc.message)


def _out(session: SessionDep, row: WorkloadRow) -> WorkloadOut:
    return WorkloadOut.of(row, service.project_names(session, [row.project_id]).get(row.project_id, ""))


def _wake(request: Request, topic: str) -> None:
    wake = request.app.state.wake
    if wake is not None:
        wake(topic)


def _budget_problem(exc: BudgetExceeded) -> ApiProblem:
    return ApiProblem(409, f"{exc.limit_kind}-limit-exceeded", "Project limit exceeded", str(exc))


def _create_alone(request: Request, body: WorkloadIn, principal: Principal, now: datetime) -> Response:
    """One submission in its own transaction: the path for requests with an ``Idempotency-Key``
    (they must wait on each other's key row) and for apps without a submission writer."""
    with request.app.state.database.sessions.begin() as session:

        def work() -> WorkloadOut:
            try:
                row = service.submit(session, principal.org_id, body.to_spec(), now)
            except service.WorkloadError as exc:
                raise _problem(exc) from None
            except BudgetExceeded as exc:
                raise _budget_problem(exc) from None
            return WorkloadOut.of(row, body.project)

        return idempotent(request, session, principal, body, now, work)


@router.post(
    "/workloads",
    status_code=201,
    response_model=WorkloadOut,
    summary="Submit a workload: GPUs to provision (and optionally a container to run on them)",
)
async def create_workload(body: WorkloadIn, request: Request, principal: Operator, now: NowDep) -> Any:
    # Without an Idempotency-Key the submission joins the group commit (broker/services/submissions.py):
    # concurrent requests share one transaction, and the 201 is sent after it commits.
    writer: SubmissionWriter | None = request.app.state.submissions
    if writer is None or request.headers.get(IDEMPOTENCY_HEADER) is not None:
        response = await run_in_threadpool(_create_alone, request, body, principal, now)
    else:
        spec = body.to_spec()
        try:
            precheck(spec, now)
            submitted = await asyncio.wrap_future(writer.submit(Submission(principal.org_id, spec, now)))
        except service.WorkloadError as exc:
            raise _problem(exc) from None
        except BudgetExceeded as exc:
            raise _budget_problem(exc) from None
        out = WorkloadOut.of(submitted.row, submitted.project_name)
        response = Response(out.model_dump_json(), status_code=201, media_type="application/json")
    _wake(request, Topic.PLACE)
    return response


@router.get("/workloads", response_model=WorkloadPage, summary="List workloads, newest first")
def list_workloads(
    session: SessionDep,
    principal: Viewer,
    state: Annotated[list[WorkloadState] | None, Query(description="Only these states")] = None,
    project: Annotated[str | None, Query(max_length=100)] = None,
    label: Annotated[str | None, Query(max_length=400, description="key=value")] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> WorkloadPage:
    project_id = None
    if project is not None:
        found = find_project(session, principal.org_id, project)
        if found is None:
            raise not_found("project", project)
        project_id = found.id
    label_pair = None
    if label is not None:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise ApiProblem(422, "validation-error", "Request is not valid", "label: use key=value")
        label_pair = (key, value)
    try:
        page = service.list_workloads(
            session,
            principal.org_id,
            states=[s.value for s in state or ()],
            project_id=project_id,
            label=label_pair,
            cursor=cursor,
            limit=limit,
        )
    except service.WorkloadError as exc:
        raise _problem(exc) from None
    names = service.project_names(session, [r.project_id for r in page.items])
    return WorkloadPage(
        items=[WorkloadOut.of(r, names.get(r.project_id, "")) for r in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/workloads/{workload_id}", response_model=WorkloadOut, summary="One workload")
def get_workload(workload_id: str, session: SessionDep, principal: Viewer) -> WorkloadOut:
    row = service.get(session, principal.org_id, workload_id)
    if row is None:
        raise not_found("workload", workload_id)
    return _out(session, row)


@router.post(
    "/workloads/{workload_id}/cancel",
    response_model=WorkloadOut,
    summary="Cancel a workload: its instances are terminated",
)
def cancel_workload(
    workload_id: str,
    request: Request,
    session: SessionDep,
    principal: Operator,
    now: NowDep,
    body: CancelIn | None = None,
) -> WorkloadOut:
    try:
        row = service.cancel(session, principal.org_id, workload_id, now, body.reason if body else "")
    except service.WorkloadError as exc:
        raise _problem(exc) from None
    _wake(request, Topic.EXECUTE)
    return _out(session, row)


@router.post(
    "/workloads/{workload_id}/finish",
    response_model=WorkloadOut,
    summary="Report that the workload succeeded or failed (its instances are released)",
)
def finish_workload(
    workload_id: str, body: FinishIn, request: Request, session: SessionDep, principal: Operator, now: NowDep
) -> WorkloadOut:
    outcome = WorkloadState.SUCCEEDED if body.outcome == "succeeded" else WorkloadState.FAILED
    try:
        row = service.finish(session, principal.org_id, workload_id, outcome, body.message, now)
    except service.WorkloadError as exc:
        raise _problem(exc) from None
    _wake(request, Topic.EXECUTE)
    return _out(session, row)


@router.post(
    "/workloads/{workload_id}/checkpoint",
    response_model=WorkloadOut,
    summary="Report a checkpoint written (a migration waiting for one may cut over)",
)
def checkpoint_workload(
    workload_id: str, request: Request, session: SessionDep, principal: Operator, now: NowDep
) -> WorkloadOut:
    try:
        row = service.record_checkpoint(session, principal.org_id, workload_id, now)
    except service.WorkloadError as exc:
        raise _problem(exc) from None
    _wake(request, Topic.EXECUTE)
    return _out(session, row)


@router.get("/workloads/{workload_id}/events", response_model=EventPage, summary="The workload's history")
def workload_events(
    workload_id: str,
    session: SessionDep,
    principal: Viewer,
    after: Annotated[int, Query(ge=0, description="Events after this id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventPage:
    if service.get(session, principal.org_id, workload_id) is None:
        raise not_found("workload", workload_id)
    rows: list[WorkloadEvent] = service.events(
        session, principal.org_id, workload_id, after=after, limit=limit
    )
    return EventPage(
        items=[EventOut.model_validate(r) for r in rows],
        next_after=rows[-1].id if len(rows) == limit else None,
    )


@router.get(
    "/workloads/{workload_id}/explain",
    response_model=ExplanationOut,
    summary="Why the placement engine would place the workload where it would (or why it waits)",
)
def explain(
    workload_id: str,
    request: Request,
    session: SessionDep,
    principal: Viewer,
    now: NowDep,
    limit: Annotated[int, Query(ge=1, le=5000, description="Most candidates listed per section")] = 50,
) -> ExplanationOut:
    row = service.get(session, principal.org_id, workload_id)
    if row is None:
        raise not_found("workload", workload_id)
    providers = [e.info.name for e in request.app.state.providers if e.provider is not None] or ["sim"]
    decision: PlacementDecision = explain_workload(
        session, row, providers, now, request.app.state.stale_after
    )
    explanation = decision.explanation
    scored = explanation.scored if explanation else ()
    rejected = explanation.rejected if explanation else ()
    chosen = decision.placement
    return ExplanationOut(
        workload_id=row.id,
        state=WorkloadState(row.state),
        decision="wait" if chosen is None else "place",
        wait_reason=decision.wait_reason,
        chosen=_candidate(chosen.candidate, expected_total_usd=chosen.cost.total_usd) if chosen else None,
        scored=[_candidate(s.candidate, expected_total_usd=s.cost.total_usd) for s in scored[:limit]],
        rejected=[_candidate(r.candidate, filter=r.filter, reason=r.reason) for r in rejected[:limit]],
        rejections_by_filter=dict(explanation.rejections_by_filter()) if explanation else {},
        generated_at=now,
    )
