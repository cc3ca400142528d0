"""/v1/projects (a team's limits and usage) and /v1/api-keys (issue, list, revoke keys)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.auth import KEY_CACHE_SECONDS, Admin, Viewer
from api.deps import NowDep, SessionDep
from api.errors import ApiProblem, not_found
from api.idempotency import idempotent
from broker.db.fleet import Project
from broker.services import budgets
from broker.services.tenancy import Role, TenancyError, create_api_key, list_api_keys, revoke_api_key

router = APIRouter(prefix="/v1")

MaxGpus = Annotated[int, Field(ge=0, le=budgets.MAX_PROJECT_GPUS)]
MaxUsd = Annotated[Decimal, Field(ge=0, le=Decimal("1e12"), allow_inf_nan=False)]
ProjectName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]


class ProjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: ProjectName
    max_gpus: MaxGpus | None = Field(None, description="GPUs at once (null: no limit)")
    max_usd_per_month: MaxUsd | None = Field(None, description="USD per UTC calendar month (null: no limit)")


class ProjectUpdate(BaseModel):
    """Only the limits sent change; null removes a limit."""

    model_config = ConfigDict(extra="forbid")

    max_gpus: MaxGpus | None = None
    max_usd_per_month: MaxUsd | None = None


class ProjectUsageOut(BaseModel):
    gpus_in_use: int = Field(description="GPUs of the project's unfinished workloads")
    spent_usd_this_month: Decimal = Field(
        description="On-demand and spot spend this UTC month; capacity under a commitment is prepaid (0)"
    )


class ProjectOut(BaseModel):
    id: str
    name: str
    max_gpus: int | None
    max_usd_per_month: Decimal | None
    created_at: datetime
    usage: ProjectUsageOut


class ProjectList(BaseModel):
    items: list[ProjectOut]


def _out(session: Session, project: Project, now: datetime) -> ProjectOut:
    usage = budgets.project_usage(session, project.id, now)
    return ProjectOut(
        id=project.id,
        name=project.name,
        max_gpus=project.max_gpus,
        max_usd_per_month=project.max_usd_per_month,
        created_at=project.created_at,
        usage=ProjectUsageOut(gpus_in_use=usage.gpus_in_use, spent_usd_this_month=usage.spent_usd_this_month),
    )


def _invalid(exc: budgets.ProjectInvalid) -> ApiProblem:
    return ApiProblem(
        422,
        "validation-error",
        "Request is not valid",
        f"{exc.field}: {exc.message}",
        errors=[{"field": exc.field, "message": exc.message}],
    )


@router.get("/projects", response_model=ProjectList, tags=["projects"], summary="Projects, with usage")
def list_projects(principal: Viewer, session: SessionDep, now: NowDep) -> ProjectList:
    return ProjectList(
        items=[_out(session, p, now) for p in budgets.list_projects(session, principal.org_id)]
    )


@router.get("/projects/{project}", response_model=ProjectOut, tags=["projects"], summary="One project")
def get_project(project: str, principal: Viewer, session: SessionDep, now: NowDep) -> ProjectOut:
    try:
        return _out(session, budgets.get_project(session, principal.org_id, project), now)
    except budgets.ProjectNotFound as exc:
        raise not_found("project", project) from exc


@router.post(
    "/projects", status_code=201, response_model=ProjectOut, tags=["projects"], summary="Create a project"
)
def create_project(
    request: Request, body: ProjectIn, principal: Admin, session: SessionDep, now: NowDep
) -> JSONResponse:
    def work() -> ProjectOut:
        try:
            project = budgets.create_project(
                session,
                principal.org_id,
                body.name,
                now,
                max_gpus=body.max_gpus,
                max_usd_per_month=body.max_usd_per_month,
            )
        except budgets.ProjectConflict as exc:
            raise ApiProblem(409, "conflict", "Already exists", str(exc)) from exc
        except budgets.ProjectInvalid as exc:
            raise _invalid(exc) from exc
        return _out(session, project, now)

    return idempotent(request, session, principal, body, now, work)


@router.patch(
    "/projects/{project}", response_model=ProjectOut, tags=["projects"], summary="Set a project's limits"
)
def update_project(
    project: str, body: ProjectUpdate, principal: Admin, session: SessionDep, now: NowDep
) -> ProjectOut:
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    try:
        updated = budgets.update_project_limits(session, principal.org_id, project, **changes)
    except budgets.ProjectNotFound as exc:
        raise not_found("project", project) from exc
    except budgets.ProjectInvalid as exc:
        raise _invalid(exc) from exc
    return _out(session, updated, now)


# --- API keys ---------------------------------------------------------------------------------------


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=100)]
    role: Role


class ApiKeyOut(BaseModel):
    """A key as listed: never its secret nor the secret's hash."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None


class IssuedKeyOut(ApiKeyOut):
    key: str = Field(description="The whole key: shown this once, never stored; keep it secret")


class ApiKeyList(BaseModel):
    items: list[ApiKeyOut]


@router.post(
    "/api-keys",
    status_code=201,
    response_model=IssuedKeyOut,
    tags=["api-keys"],
    summary="Issue an API key (the response is the only time its secret is shown)",
)
def issue_key(body: ApiKeyIn, principal: Admin, session: SessionDep, now: NowDep) -> IssuedKeyOut:
    # Deliberately not under Idempotency-Key: a replay would need the response, secret included,
    # stored in the database, and the secret must live nowhere but with the caller.
    try:
        issued = create_api_key(session, principal.org_id, body.name, body.role, now)
    except TenancyError as exc:
        raise ApiProblem(
            422,
            "validation-error",
            "Request is not valid",
            f"name: {exc}",
            errors=[{"field": "name", "message": str(exc)}],
        ) from exc
    return IssuedKeyOut(
        id=issued.key_id,
        name=issued.name,
        role=issued.role,
        created_at=issued.created_at,
        revoked_at=None,
        key=issued.secret,
    )


@router.get("/api-keys", response_model=ApiKeyList, tags=["api-keys"], summary="The organization's keys")
def list_keys(principal: Admin, session: SessionDep) -> ApiKeyList:
    return ApiKeyList(items=[ApiKeyOut.model_validate(k) for k in list_api_keys(session, principal.org_id)])


@router.delete(
    "/api-keys/{key_id}",
    status_code=204,
    tags=["api-keys"],
    summary="Revoke a key",
    description=(
        "The key stops working on this server at once. Other replicas cache a verified key for up to "
        f"{KEY_CACHE_SECONDS:g} seconds, so there it may work for that long."
    ),
)
def revoke_key(key_id: str, request: Request, principal: Admin, session: SessionDep, now: NowDep) -> Response:
    if not revoke_api_key(session, principal.org_id, key_id, now):
        raise not_found("API key", key_id)
    session.flush()
    # This replica forgets every verified key (they re-verify on their next request); other
    # replicas keep theirs for up to KEY_CACHE_SECONDS.
    request.app.state.key_cache.clear()
    return Response(status_code=204)
