"""/v1/instances: the instances the broker launched for the organization, with current GPU utilization."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Viewer
from api.deps import NowDep, SessionDep
from api.errors import ApiProblem, not_found
from broker.core.types import CapacityType
from broker.services.instances import InstanceNotFound, get_instance, list_instances
from broker.services.paging import InvalidCursor

router = APIRouter(prefix="/v1", tags=["instances"])

InstanceState = Literal[
    "requested", "pending", "running", "terminating", "terminated", "preempted", "failed", "lost"
]


class InstanceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    workload_id: str
    project: str = Field(description="The project's name")
    provider: str
    provider_instance_id: str | None
    region: str
    zone: str | None
    instance_type: str
    accelerator: str
    gpus: int
    capacity_type: str
    price_per_hour: Decimal = Field(description="USD per instance-hour")
    commitment_id: str | None = Field(description="The commitment it runs under (prepaid capacity)")
    state: str
    state_reason: str | None
    notice_at: datetime | None = Field(
        description="When the provider (or the node agent) announced a spot preemption; null without one"
    )
    launched_at: datetime | None
    ended_at: datetime | None
    created_at: datetime
    current_gpu_util_pct: Decimal | None = Field(
        description="Mean GPU utilization at the latest sample of the last 10 minutes; null without one"
    )


class InstancePage(BaseModel):
    items: list[InstanceOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last")


@router.get("/instances", response_model=InstancePage, summary="Instances, newest first")
def list_all(
    principal: Viewer,
    session: SessionDep,
    now: NowDep,
    workload_id: Annotated[str | None, Query(max_length=64)] = None,
    state: InstanceState | None = None,
    provider: Annotated[str | None, Query(max_length=64)] = None,
    capacity_type: CapacityType | None = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> InstancePage:
    try:
        page = list_instances(
            session,
            principal.org_id,
            now,
            workload_id=workload_id,
            state=state,
            provider=provider,
            capacity_type=capacity_type.value if capacity_type else None,
            cursor=cursor,
            limit=limit,
        )
    except InvalidCursor as exc:
        raise ApiProblem(
            422,
            "validation-error",
            "Request is not valid",
            f"cursor: {exc}",
            errors=[{"field": "cursor", "message": str(exc)}],
        ) from exc
    return InstancePage(
        items=[InstanceOut.model_validate(i) for i in page.items], next_cursor=page.next_cursor
    )


@router.get("/instances/{instance_id}", response_model=InstanceOut, summary="One instance")
def get_one(instance_id: str, principal: Viewer, session: SessionDep, now: NowDep) -> InstanceOut:
    try:
        return InstanceOut.model_validate(get_instance(session, principal.org_id, instance_id, now))
    except InstanceNotFound as exc:
        raise not_found("instance", instance_id) from exc
