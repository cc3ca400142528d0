"""POST /v1/instances/{id}/preemption-notice: the node agent relays a spot reclaim notice (thin over
``broker.services.notices``; the migrate job decides, not this request)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.auth import Operator
from api.deps import NowDep, SessionDep
from api.errors import ApiProblem, not_found
from broker.services.instances import InstanceNotFound
from broker.services.lifecycle import Topic
from broker.services.notices import InvalidNotice, record_notice

router = APIRouter(prefix="/v1", tags=["instances"])


class PreemptionNoticeIn(BaseModel):
    """What the instance's metadata service said, as the agent read it."""

    model_config = ConfigDict(extra="forbid")

    at: AwareDatetime = Field(
        description="When the agent saw the notice; at most 5 minutes ahead, at most 1 hour ago"
    )
    reclaim_at: AwareDatetime | None = Field(
        default=None,
        description="When the cloud reclaims the instance (AWS `time`, Azure `NotBefore`, GCP at + 30 s); "
        "null: any moment. At most 1 hour after `at`",
    )
    source: str = Field(
        min_length=1,
        max_length=32,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Whose metadata service: aws, gcp, azure, ...",
    )


class PreemptionNoticeOut(BaseModel):
    instance_id: str
    workload_id: str
    recorded: bool = Field(description="False: already recorded, or the instance has already ended")
    detail: str
    notice_at: datetime | None = Field(description="When the recorded notice was seen (the first one's)")
    reclaim_at: datetime | None


@router.post(
    "/instances/{instance_id}/preemption-notice",
    status_code=202,
    response_model=PreemptionNoticeOut,
    summary="Relay a spot preemption notice (the node agent posts this)",
    responses={404: {"description": "No such instance in the organization"}},
)
def post_preemption_notice(
    instance_id: Annotated[str, Path(min_length=1, max_length=128)],
    body: PreemptionNoticeIn,
    principal: Operator,
    session: SessionDep,
    now: NowDep,
    request: Request,
) -> PreemptionNoticeOut:
    """Record the notice and wake the migrate job, which moves the workload off the instance before it
    is reclaimed. Posting again is harmless: a notice already recorded is answered 202 with
    ``recorded: false``."""
    try:
        outcome = record_notice(
            session, principal.org_id, instance_id, body.at, body.reclaim_at, body.source, now
        )
    except InvalidNotice as exc:
        errors = [{"field": exc.field, "message": exc.message}]
        raise ApiProblem(422, "validation-error", "Request is not valid", str(exc), errors=errors) from None
    except InstanceNotFound:
        raise not_found("instance", instance_id) from None
    if outcome.recorded:
        wake = request.app.state.wake  # the in-process scheduler's, if any; NOTIFY reaches the rest
        if wake is not None:
            wake(Topic.MIGRATE)
    return PreemptionNoticeOut(
        instance_id=outcome.instance_id,
        workload_id=outcome.workload_id,
        recorded=outcome.recorded,
        detail=outcome.detail,
        notice_at=outcome.notice_at,
        reclaim_at=outcome.reclaim_at,
    )
