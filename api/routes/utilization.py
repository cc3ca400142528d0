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
from broker.db.fleet import InstanceRow
from broker.services.utilization import (
    MAX_BUCKET_SECONDS,
    MAX_IDLE_MINUTES,
    MAX_SAMPLES_PER_BATCH,
    MIN_BUCKET_SECONDS,
    GroupBy,
    InvalidRange,
    InvalidSamples,
    Sample,
    UnknownInstances,
    UnknownProject,
    UtilizationSummary,
    idle_instances,
    instance_history,
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


class InstanceRef(BaseModel):
    """A running instance: where it runs, how many GPUs, what it costs."""

    id: str
    provider: str
    region: str
    capacity_type: str
    commitment_id: str | None
    gpus: int
    price_per_hour: Decimal = Field(description="USD per hour for the whole instance")

    @classmethod
    def of(cls, row: InstanceRow) -> InstanceRef:
        return cls(
            id=row.id,
            provider=row.provider,
            region=row.region,
            capacity_type=row.capacity_type,
            commitment_id=row.commitment_id,
            gpus=row.gpus,
            price_per_hour=row.price_per_hour,
        )


class BucketOut(BaseModel):
    at: datetime = Field(description="The bucket's start (inclusive); it ends bucket_seconds later or at end")
    gpu_util_pct: Decimal | None = Field(description="Mean of all the instance's GPU samples; null: none")
    samples: int


class InstanceSeriesOut(InstanceRef):
    buckets: list[BucketOut] = Field(description="Every bucket of [start, end), oldest first")


class InstanceHistoryOut(BaseModel):
    start: datetime
    end: datetime
    bucket_seconds: int
    items: list[InstanceSeriesOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for more running instances")


class IdleInstanceOut(InstanceRef):
    samples: int = Field(description="Samples in the window, over all the instance's GPUs")
    max_gpu_util_pct: Decimal
    avg_gpu_util_pct: Decimal
    idle_since: datetime = Field(
        description="Its first sample after its last one at or above the threshold (looking back 7 days)"
    )


class IdleOut(BaseModel):
    threshold_pct: Decimal
    minutes: int
    window_start: datetime = Field(description="Exclusive")
    at: datetime = Field(description="The window's end (inclusive): the server's now")
    idle_gpus: int
    idle_cost_per_hour: Decimal = Field(description="USD per hour of the idle instances together")
    items: list[IdleInstanceOut] = Field(description="Idle instances, idle longest first")
    busy_instances: int = Field(description="Running instances with a sample at or above the threshold")
    no_recent_samples: list[InstanceRef] = Field(
        description="Running, with no sample in the window: not called idle (no agent, or it stopped)"
    )


@router.get(
    "/instances",
    response_model=InstanceHistoryOut,
    summary="GPU utilization of each running instance over time, in buckets",
)
def get_instance_history(
    principal: Viewer,
    session: SessionDep,
    now: NowDep,
    start: Annotated[AwareDatetime | None, Query(description="Inclusive; default: end - 1 hour")] = None,
    end: Annotated[AwareDatetime | None, Query(description="Exclusive; default: now")] = None,
    bucket_seconds: Annotated[int, Query(ge=MIN_BUCKET_SECONDS, le=MAX_BUCKET_SECONDS)] = 300,
    limit: Annotated[int, Query(ge=1, le=500, description="Instances per page")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=128, description="`next_cursor` of the previous page")
    ] = None,
) -> InstanceHistoryOut:
    """Per running instance (ordered by id), the mean GPU utilization of its samples in each
    ``bucket_seconds`` of ``[start, end)``; at most 500 buckets. Another organization's instances
    never appear."""
    try:
        history = instance_history(
            session,
            principal.org_id,
            now,
            start=start,
            end=end,
            bucket_seconds=bucket_seconds,
            limit=limit,
            cursor=cursor,
        )
    except InvalidRange as exc:
        raise _invalid([{"field": "bucket_seconds", "message": str(exc)}]) from None
    return InstanceHistoryOut(
        start=history.start,
        end=history.end,
        bucket_seconds=history.bucket_seconds,
        items=[
            InstanceSeriesOut(
                **InstanceRef.of(series.instance).model_dump(),
                buckets=[
                    BucketOut(at=b.at, gpu_util_pct=b.gpu_util_pct, samples=b.samples) for b in series.buckets
                ],
            )
            for series in history.instances
        ],
        next_cursor=history.next_cursor,
    )


@router.get("/idle", response_model=IdleOut, summary="Running instances whose GPUs sit idle")
def get_idle(
    principal: Viewer,
    session: SessionDep,
    now: NowDep,
    threshold_pct: Annotated[
        Decimal, Query(gt=0, le=100, description="Idle means every sample is below this GPU utilization")
    ] = Decimal(10),
    minutes: Annotated[
        int, Query(ge=1, le=MAX_IDLE_MINUTES, description="For at least this long (up to now)")
    ] = 30,
) -> IdleOut:
    """Running instances whose every GPU sample in the last ``minutes`` is below ``threshold_pct``,
    with their cost per hour and since when they have been idle. An instance that reported nothing
    in that window is listed under ``no_recent_samples``, not as idle."""
    try:
        report = idle_instances(session, principal.org_id, now, threshold_pct=threshold_pct, minutes=minutes)
    except InvalidRange as exc:
        raise _invalid([{"field": "threshold_pct", "message": str(exc)}]) from None
    return IdleOut(
        threshold_pct=report.threshold_pct,
        minutes=report.minutes,
        window_start=report.window_start,
        at=report.at,
        idle_gpus=sum(i.instance.gpus for i in report.idle),
        idle_cost_per_hour=sum((i.instance.price_per_hour for i in report.idle), Decimal(0)),
        items=[
            IdleInstanceOut(
                **InstanceRef.of(i.instance).model_dump(),
                samples=i.samples,
                max_gpu_util_pct=i.max_gpu_util_pct,
                avg_gpu_util_pct=i.avg_gpu_util_pct,
                idle_since=i.idle_since,
            )
            for i in report.idle
        ],
        busy_instances=report.busy,
        no_recent_samples=[InstanceRef.of(r) for r in report.no_recent_samples],
    )
