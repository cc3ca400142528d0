"""/v1/utilization: the node agent posts GPU samples; viewers read summaries (thin over services)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Self

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from api.auth import Operator, Viewer
from api.deps import NowDep, SessionDep
from api.errors import ApiProblem, not_found
from broker.services.utilization import (
    MAX_SAMPLES_PER_BATCH,
    GroupBy,
    InvalidRange,
    InvalidSamples,
    Sample,
    UnknownInstances,
    UnknownProject,
    UtilizationSummary,
    record_samples,
    summarize,
)

router = APIRouter(prefix="/v1/utilization", tags=["utilization"])

MAX_MIB = 16 * 1024 * 1024  # 16 TiB of GPU memory: far above any GPU, far below the column's limit
_LISTED = 50  # problem responses name at most this many ids / errors


class SampleIn(BaseModel):
    """One GPU's reading at one instant."""

    model_config = ConfigDict(extra="forbid")

    instance_id: str = Field(min_length=1, max_length=128)
    gpu_index: int = Field(ge=0, le=63, description="The GPU's NVML index on the instance")
    at: AwareDatetime = Field(description="When it was read; at most 5 minutes ahead, at most 30 days ago")
    gpu_util_pct: Decimal = Field(ge=0, le=100, decimal_places=6, description="GPU utilization, 0-100")
    memory_used_mib: int | None = Field(default=None, ge=0, le=MAX_MIB)
    memory_total_mib: int | None = Field(default=None, ge=0, le=MAX_MIB)
    power_watts: Decimal | None = Field(
        default=None, ge=0, le=5000, decimal_places=6, description="Board power draw; null when unsupported"
    )

    @model_validator(mode="after")
    def _used_within_total(self) -> Self:
        if (
            self.memory_used_mib is not None
            and self.memory_total_mib is not None
            and self.memory_used_mib > self.memory_total_mib
        ):
            raise ValueError("memory_used_mib is more than memory_total_mib")
        return self

    def to_sample(self) -> Sample:
        return Sample(
            instance_id=self.instance_id,
            gpu_index=self.gpu_index,
            at=self.at,
            gpu_util_pct=self.gpu_util_pct,
            memory_used_mib=self.memory_used_mib,
            memory_total_mib=self.memory_total_mib,
            power_watts=self.power_watts,
        )


class SampleBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    samples: list[SampleIn] = Field(min_length=1, max_length=MAX_SAMPLES_PER_BATCH)


class BatchAccepted(BaseModel):
    accepted: int = Field(description="Samples newly stored")
    duplicates: int = Field(description="Samples already stored (same instance, GPU and time), ignored")


class UtilizationGroupOut(BaseModel):
    key: str = Field(description="The group: org id, project name, cloud, region or capacity type")
    cloud: str | None = Field(None, description="The region's cloud, when grouped by region")
    project_id: str | None = Field(None, description="The project's id, when grouped by project")
    instances: int
    gpus: int = Field(description="Distinct GPUs (instance x GPU index) that reported")
    samples: int
    avg_gpu_util_pct: Decimal
    p95_gpu_util_pct: Decimal | None = Field(description="Nearest-rank 95th percentile of the samples")
    avg_memory_used_pct: Decimal | None = Field(description="Null when no sample reported memory")
    avg_power_watts: Decimal | None = Field(description="Null when no sample reported power")
    idle_gpu_fraction: Decimal = Field(description="Share (0-1) of samples under 5% GPU utilization")


class UtilizationSummaryOut(BaseModel):
    group_by: GroupBy
    start: datetime = Field(description="Inclusive")
    end: datetime = Field(description="Exclusive")
    project: str | None = Field(description="The project filter's name, if any")
    groups: list[UtilizationGroupOut]

    @classmethod
    def of(cls, summary: UtilizationSummary) -> UtilizationSummaryOut:
        return cls(
            group_by=summary.group_by,
            start=summary.start,
            end=summary.end,
            project=summary.project.name if summary.project is not None else None,
            groups=[
                UtilizationGroupOut(
                    key=g.key,
                    cloud=g.cloud,
                    project_id=g.project_id,
                    instances=g.instances,
                    gpus=g.gpus,
                    samples=g.samples,
                    avg_gpu_util_pct=g.avg_gpu_util_pct,
                    p95_gpu_util_pct=g.p95_gpu_util_pct,
                    avg_memory_used_pct=g.avg_memory_used_pct,
                    avg_power_watts=g.avg_power_watts,
                    idle_gpu_fraction=g.idle_gpu_fraction,
                )
                for g in summary.groups
            ],
        )


def _invalid(errors: list[dict[str, str]], more: int = 0) -> ApiProblem:
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    if more:
        detail += f"; and {more} more"
    return ApiProblem(422, "validation-error", "Request is not valid", detail, errors=errors)


@router.post(
    "",
    status_code=202,
    response_model=BatchAccepted,
    summary="Record GPU utilization samples (the node agent posts these)",
    responses={404: {"description": "An instance id is not one of the organization's"}},
)
def post_samples(body: SampleBatch, principal: Operator, session: SessionDep, now: NowDep) -> BatchAccepted:
    """Store up to 10,000 samples at once. Re-posting a batch is harmless: samples already stored
    (same instance, GPU and time) are counted as ``duplicates`` and left alone."""
    try:
        result = record_samples(session, principal.org_id, [s.to_sample() for s in body.samples], now)
    except InvalidSamples as exc:
        errors = [{"field": f"samples.{i}.at", "message": m} for i, m in exc.problems[:_LISTED]]
        raise _invalid(errors, len(exc.problems) - len(errors)) from None
    except UnknownInstances as exc:
        listed = exc.instance_ids[:_LISTED]
        more = len(exc.instance_ids) - len(listed)
        detail = "no instance " + ", ".join(repr(i) for i in listed) + (f" and {more} more" if more else "")
        raise ApiProblem(404, "not-found", "Not found", detail, instance_ids=listed) from None
    return BatchAccepted(accepted=result.accepted, duplicates=result.duplicates)


@router.get("/summary", response_model=UtilizationSummaryOut, summary="GPU utilization, aggregated per group")
def get_summary(
    principal: Viewer,
    session: SessionDep,
    now: NowDep,
    group_by: Annotated[GroupBy, Query(description="org, project, cloud, region or capacity_type")] = (
        GroupBy.ORG
    ),
    start: Annotated[AwareDatetime | None, Query(description="Inclusive; default: end - 1 hour")] = None,
    end: Annotated[AwareDatetime | None, Query(description="Exclusive; default: now")] = None,
    project: Annotated[
        str | None, Query(max_length=128, description="Only this project (name or id)")
    ] = None,
) -> UtilizationSummaryOut:
    """Averages, p95 and idle share of the organization's GPU samples in ``[start, end)``
    (at most 93 days), grouped by ``group_by``. Groups without samples are absent."""
    try:
        summary = summarize(session, principal.org_id, group_by, now, start=start, end=end, project=project)
    except InvalidRange as exc:
        raise _invalid([{"field": "end", "message": str(exc)}]) from None
    except UnknownProject as exc:
        raise not_found("project", exc.name_or_id) from None
    return UtilizationSummaryOut.of(summary)
