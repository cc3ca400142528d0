"""GPU utilization use-cases: record the node agent's samples, summarize them, read the latest (does I/O).

Samples are keyed by ``(instance_id, gpu_index, at)``; a re-posted batch inserts nothing twice
(``ON CONFLICT DO NOTHING``), so an agent that retries after a lost response is harmless. Every
query filters on ``org_id``: a key only ever writes to, and reads from, its own organization.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import ColumnElement, Numeric, case, cast, distinct, func, select, text, tuple_
from sqlalchemy.orm import Session

from broker.clock import utc_now
from broker.db.fleet import InstanceRow, Project, UtilizationSample
from broker.services.tenancy import find_project

MAX_SAMPLES_PER_BATCH = 10_000
MAX_FUTURE = timedelta(minutes=5)  # agent clocks drift; further ahead than this is a broken clock
MAX_AGE = timedelta(days=30)  # older samples are not worth back-filling
DEFAULT_SUMMARY_SPAN = timedelta(hours=1)
MAX_SUMMARY_SPAN = timedelta(days=93)
IDLE_BELOW_PCT = Decimal(5)  # a sample under this GPU utilization counts as idle
LATEST_WINDOW = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Sample:
    """One GPU's reading at one instant, as the node agent reports it."""

    instance_id: str
    gpu_index: int
    at: datetime
    gpu_util_pct: Decimal
    memory_used_mib: int | None = None
    memory_total_mib: int | None = None
    power_watts: Decimal | None = None


@dataclass(frozen=True, slots=True)
class RecordResult:
    accepted: int  # newly stored
    duplicates: int  # already stored (same instance, GPU and time), ignored


class UtilizationError(ValueError):
    """A utilization request that cannot be carried out."""


class InvalidSamples(UtilizationError):
    """Samples whose time is outside what the API accepts: ``problems`` is ``(index, message)``."""

    def __init__(self, problems: Sequence[tuple[int, str]]) -> None:
        super().__init__(f"{len(problems)} sample(s) rejected")
        self.problems = list(problems)


class UnknownInstances(UtilizationError):
    """Instance ids that are not instances of the caller's organization (missing or another org's)."""

    def __init__(self, instance_ids: Iterable[str]) -> None:
        self.instance_ids = sorted(instance_ids)
        super().__init__("no instance " + ", ".join(repr(i) for i in self.instance_ids))


class InvalidRange(UtilizationError):
    """A summary time range that is empty, inverted or too long."""


class UnknownProject(UtilizationError):
    """A project filter that names no project of the caller's organization."""

    def __init__(self, name_or_id: str) -> None:
        super().__init__(f"no project {name_or_id!r}")
        self.name_or_id = name_or_id


# One statement for the whole batch: each column travels as one array parameter and ``unnest``
# zips them back into rows. A multi-row VALUES list would need 8 parameters a row and hit
# PostgreSQL's 65,535-parameter limit at 8,192 rows; this stays at 9 parameters for any size.
_INSERT = text(
    """
    INSERT INTO utilization_sample
        (instance_id, gpu_index, at, org_id, gpu_util_pct, memory_used_mib, memory_total_mib, power_watts)
    SELECT s.instance_id, s.gpu_index, s.at, :org_id, s.gpu_util_pct,
           s.memory_used_mib, s.memory_total_mib, s.power_watts
    FROM unnest(
        CAST(:instance_id AS text[]),
        CAST(:gpu_index AS smallint[]),
        CAST(:at AS timestamptz[]),
        CAST(:gpu_util_pct AS numeric[]),
        CAST(:memory_used_mib AS integer[]),
        CAST(:memory_total_mib AS integer[]),
        CAST(:power_watts AS numeric[])
    ) AS s(instance_id, gpu_index, at, gpu_util_pct, memory_used_mib, memory_total_mib, power_watts)
    ON CONFLICT (instance_id, gpu_index, at) DO NOTHING
    """
)


def check_sample_times(samples: Sequence[Sample], now: datetime) -> list[tuple[int, str]]:
    """``(index, message)`` for each sample stamped too far in the future or too long ago."""
    latest, earliest = now + MAX_FUTURE, now - MAX_AGE
    problems = []
    for i, s in enumerate(samples):
        if s.at.tzinfo is None:
            problems.append((i, "the time must carry a timezone"))
        elif s.at > latest:
            problems.append((i, f"the time is more than {_minutes(MAX_FUTURE)} minutes in the future"))
        elif s.at < earliest:
            problems.append((i, f"the time is more than {MAX_AGE.days} days ago"))
    return problems


def record_samples(session: Session, org_id: str, samples: Sequence[Sample], now: datetime) -> RecordResult:
    """Store a batch of samples for ``org_id``, ignoring ones already stored.

    All or nothing: raises :class:`InvalidSamples` when a time is out of bounds and
    :class:`UnknownInstances` when an instance id is not one of the organization's (another
    organization's instance is reported exactly like a missing one)."""
    if not samples:
        return RecordResult(0, 0)
    problems = check_sample_times(samples, now)
    if problems:
        raise InvalidSamples(problems)
    wanted = {s.instance_id for s in samples}
    known = set(
        session.scalars(
            select(InstanceRow.id).where(InstanceRow.org_id == org_id, InstanceRow.id.in_(wanted))
        )
    )
    if wanted - known:
        raise UnknownInstances(wanted - known)
    result = session.execute(
        _INSERT,
        {
            "org_id": org_id,
            "instance_id": [s.instance_id for s in samples],
            "gpu_index": [s.gpu_index for s in samples],
            "at": [s.at.astimezone(UTC) for s in samples],
            "gpu_util_pct": [s.gpu_util_pct for s in samples],
            "memory_used_mib": [s.memory_used_mib for s in samples],
            "memory_total_mib": [s.memory_total_mib for s in samples],
            "power_watts": [s.power_watts for s in samples],
        },
    )
    accepted = result.rowcount  # type: ignore[attr-defined]
    return RecordResult(accepted=accepted, duplicates=len(samples) - accepted)


class GroupBy(enum.StrEnum):
    """What a utilization summary is broken down by."""

    ORG = "org"
    PROJECT = "project"
    CLOUD = "cloud"
    REGION = "region"
    CAPACITY_TYPE = "capacity_type"


@dataclass(frozen=True, slots=True)
class UtilizationGroup:
    """Aggregates over one group's samples. Percentages are 0-100; ``idle_gpu_fraction`` is 0-1."""

    key: str
    cloud: str | None  # set when grouped by region: one region name can exist on two clouds
    project_id: str | None  # set when grouped by project
    instances: int
    gpus: int  # distinct (instance, GPU index) pairs
    samples: int
    avg_gpu_util_pct: Decimal
    p95_gpu_util_pct: Decimal | None
    avg_memory_used_pct: Decimal | None  # None when no sample reported memory
    avg_power_watts: Decimal | None  # None when no sample reported power
    idle_gpu_fraction: Decimal  # share of samples under IDLE_BELOW_PCT


@dataclass(frozen=True, slots=True)
class UtilizationSummary:
    group_by: GroupBy
    start: datetime  # inclusive
    end: datetime  # exclusive
    project: Project | None
    groups: list[UtilizationGroup]


def resolve_range(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """The summary window ``[start, end)``: by default the hour before ``now`` (or before ``end``).

    Raises :class:`InvalidRange` when ``end`` is not after ``start`` or the span is over 93 days."""
    end = end if end is not None else now
    start = start if start is not None else end - DEFAULT_SUMMARY_SPAN
    if end <= start:
        raise InvalidRange("end must be after start")
    if end - start > MAX_SUMMARY_SPAN:
        raise InvalidRange(f"the range may span at most {MAX_SUMMARY_SPAN.days} days")
    return start.astimezone(UTC), end.astimezone(UTC)


def summarize(
    session: Session,
    org_id: str,
    group_by: GroupBy,
    now: datetime,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    project: str | None = None,
) -> UtilizationSummary:
    """Utilization of ``org_id``'s GPUs in ``[start, end)``, aggregated in SQL per group.

    ``project`` (name or id) narrows it to one project; :class:`UnknownProject` when the
    organization has none by that name. The p95 is the nearest-rank percentile (a sampled value)."""
    start, end = resolve_range(start, end, now)
    project_row = None
    if project is not None:
        project_row = find_project(session, org_id, project)
        if project_row is None:
            raise UnknownProject(project)

    s, i = UtilizationSample, InstanceRow
    keys: dict[GroupBy, list[ColumnElement[str]]] = {
        GroupBy.ORG: [s.org_id],
        GroupBy.PROJECT: [Project.name, Project.id],
        GroupBy.CLOUD: [i.provider],
        GroupBy.REGION: [i.region, i.provider],
        GroupBy.CAPACITY_TYPE: [i.capacity_type],
    }
    key_columns = keys[group_by]
    memory_pct = 100 * cast(s.memory_used_mib, Numeric) / func.nullif(s.memory_total_mib, 0)
    stmt = (
        select(
            *key_columns,
            func.count(distinct(s.instance_id)),
            func.count(distinct(tuple_(s.instance_id, s.gpu_index))),
            func.count(),
            func.round(func.avg(s.gpu_util_pct), 2),
            func.percentile_disc(0.95).within_group(s.gpu_util_pct),
            func.round(func.avg(memory_pct), 2),
            func.round(func.avg(s.power_watts), 2),
            func.round(func.avg(case((s.gpu_util_pct < IDLE_BELOW_PCT, 1), else_=0)), 4),
        )
        .select_from(s)
        .join(i, i.id == s.instance_id)
        .where(s.org_id == org_id, i.org_id == org_id, s.at >= start, s.at < end)
        .group_by(*key_columns)
        .order_by(*key_columns)
    )
    if group_by is GroupBy.PROJECT:
        stmt = stmt.join(Project, Project.id == i.project_id)
    if project_row is not None:
        stmt = stmt.where(i.project_id == project_row.id)

    groups = []
    for row in session.execute(stmt):
        key, extra = row[0], (row[1] if len(key_columns) == 2 else None)
        rest = row[len(key_columns) :]
        groups.append(
            UtilizationGroup(
                key=key,
                cloud=extra if group_by is GroupBy.REGION else None,
                project_id=extra if group_by is GroupBy.PROJECT else None,
                instances=rest[0],
                gpus=rest[1],
                samples=rest[2],
                avg_gpu_util_pct=rest[3],
                p95_gpu_util_pct=rest[4],
                avg_memory_used_pct=rest[5],
                avg_power_watts=rest[6],
                idle_gpu_fraction=rest[7],
            )
        )
    return UtilizationSummary(group_by, start, end, project_row, groups)


def latest_utilization(
    session: Session,
    org_id: str,
    instance_ids: Iterable[str],
    *,
    now: datetime | None = None,
    window: timedelta = LATEST_WINDOW,
) -> dict[str, Decimal]:
    """Current GPU utilization (0-100, two decimals) of each of ``instance_ids`` that has reported lately.

    For each GPU of an instance, its most recent sample stamped after ``now - window`` (10 minutes
    by default) is taken, and those are averaged across the instance's GPUs. Instances without
    such a sample, and instances of other organizations, are absent from the result (the caller
    shows "no data"). Pass the request's ``now`` (the API's clock); without it the system clock
    is used. One query, whatever the number of instances (the list endpoint calls this per page).
    """
    ids = list(dict.fromkeys(instance_ids))
    if not ids:
        return {}
    since = (now if now is not None else utc_now()) - window
    s = UtilizationSample
    newest_first = func.row_number().over(partition_by=(s.instance_id, s.gpu_index), order_by=s.at.desc())
    ranked = (
        select(s.instance_id, s.gpu_util_pct, newest_first.label("rank"))
        .where(s.org_id == org_id, s.instance_id.in_(ids), s.at > since)
        .subquery()
    )
    rows = session.execute(
        select(ranked.c.instance_id, func.round(func.avg(ranked.c.gpu_util_pct), 2))
        .where(ranked.c.rank == 1)
        .group_by(ranked.c.instance_id)
    )
    return {instance_id: util for instance_id, util in rows}


# --- per-instance history and idle GPUs -------------------------------------------------------------

MIN_BUCKET_SECONDS = 60  # the node agent samples about once a minute; finer buckets would be mostly empty
MAX_BUCKET_SECONDS = 86_400
MAX_BUCKETS = 500  # columns per instance in one answer
MAX_IDLE_MINUTES = 1440
IDLE_LOOKBACK = timedelta(days=7)  # how far back "idle since" looks for the last busy sample


@dataclass(frozen=True, slots=True)
class InstanceBucket:
    """One instance's samples in ``[at, at + bucket)``: their mean over all its GPUs, and how many."""

    at: datetime
    gpu_util_pct: Decimal | None  # None when the instance reported nothing in the bucket
    samples: int


@dataclass(frozen=True, slots=True)
class InstanceSeries:
    """A running instance and its utilization per time bucket (every bucket of the range, in order)."""

    instance: InstanceRow
    buckets: list[InstanceBucket]


@dataclass(frozen=True, slots=True)
class InstanceHistory:
    start: datetime  # inclusive; the first bucket starts here
    end: datetime  # exclusive; the last bucket may be shorter than the others
    bucket_seconds: int
    instances: list[InstanceSeries]
    next_cursor: str | None  # the last instance id of this page when more running instances follow


# Bucket k holds the samples with start + k*bucket <= at < start + (k+1)*bucket. The aggregate runs in
# PostgreSQL over the (instance_id, gpu_index, at) primary key: one row per instance and bucket comes back.
_BUCKETED = text(
    """
    SELECT s.instance_id,
           CAST(floor(extract(epoch FROM s.at - :start) / :bucket_seconds) AS integer) AS bucket,
           round(avg(s.gpu_util_pct), 2) AS util,
           count(*) AS samples
    FROM utilization_sample s
    WHERE s.org_id = :org_id AND s.instance_id = ANY(CAST(:ids AS text[]))
      AND s.at >= :start AND s.at < :end
    GROUP BY 1, 2
    """
)


def instance_history(
    session: Session,
    org_id: str,
    now: datetime,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    bucket_seconds: int = 300,
    limit: int = 100,
    cursor: str | None = None,
) -> InstanceHistory:
    """Mean GPU utilization of each of ``org_id``'s running instances per ``bucket_seconds`` in
    ``[start, end)`` (default: the hour before ``now``), a page of ``limit`` instances ordered by id
    after ``cursor``. Raises :class:`InvalidRange` for a bad range or more than 500 buckets."""
    start, end = resolve_range(start, end, now)
    if not MIN_BUCKET_SECONDS <= bucket_seconds <= MAX_BUCKET_SECONDS:
        raise InvalidRange(f"bucket_seconds must be between {MIN_BUCKET_SECONDS} and {MAX_BUCKET_SECONDS}")
    count = -(-int((end - start).total_seconds()) // bucket_seconds)  # ceiling: a partial last bucket
    if count > MAX_BUCKETS:
        raise InvalidRange(f"the range holds {count} buckets; at most {MAX_BUCKETS}: widen bucket_seconds")
    query = select(InstanceRow).where(InstanceRow.org_id == org_id, InstanceRow.state == "running")
    if cursor is not None:
        query = query.where(InstanceRow.id > cursor)
    rows = list(session.scalars(query.order_by(InstanceRow.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    values: dict[tuple[str, int], tuple[Decimal, int]] = {}
    if rows:
        params = {
            "org_id": org_id,
            "ids": [r.id for r in rows],
            "start": start,
            "end": end,
            "bucket_seconds": bucket_seconds,
        }
        for instance_id, bucket, util, samples in session.execute(_BUCKETED, params):
            values[(instance_id, bucket)] = (util, samples)
    starts = [start + timedelta(seconds=k * bucket_seconds) for k in range(count)]
    series = [
        InstanceSeries(
            row,
            [InstanceBucket(at, *values.get((row.id, k), (None, 0))) for k, at in enumerate(starts)],
        )
        for row in rows
    ]
    return InstanceHistory(start, end, bucket_seconds, series, rows[-1].id if more else None)


@dataclass(frozen=True, slots=True)
class IdleInstance:
    """A running instance whose every sample in the window is under the threshold."""

    instance: InstanceRow
    samples: int  # in the window, over all its GPUs
    max_gpu_util_pct: Decimal
    avg_gpu_util_pct: Decimal
    idle_since: datetime  # its first sample after its last one at or above the threshold


@dataclass(frozen=True, slots=True)
class IdleReport:
    threshold_pct: Decimal
    minutes: int
    window_start: datetime  # exclusive
    at: datetime  # inclusive: the window's end (the request's "now")
    idle: list[IdleInstance]
    no_recent_samples: list[InstanceRow]  # running, but nothing reported in the window: not called idle
    busy: int  # running instances with a sample at or above the threshold in the window


# One statement: the running instances, their samples in the window (count, max, mean), and for the
# idle ones the last busy sample in the lookback and the first sample after it. Python only sorts the
# resulting one-row-per-instance answer into idle / busy / no recent samples.
_IDLE = text(
    """
    WITH running AS (
        SELECT id FROM instance WHERE org_id = :org_id AND state = 'running'
    ), recent AS (
        SELECT s.instance_id, count(*) AS samples, max(s.gpu_util_pct) AS max_util,
               round(avg(s.gpu_util_pct), 2) AS avg_util
        FROM utilization_sample s JOIN running r ON r.id = s.instance_id
        WHERE s.org_id = :org_id AND s.at > :window_start AND s.at <= :now
        GROUP BY s.instance_id
    ), idle AS (
        SELECT instance_id FROM recent WHERE max_util < :threshold
    ), last_busy AS (
        SELECT s.instance_id, max(s.at) AS at
        FROM utilization_sample s JOIN idle USING (instance_id)
        WHERE s.org_id = :org_id AND s.at > :lookback AND s.at <= :now AND s.gpu_util_pct >= :threshold
        GROUP BY s.instance_id
    ), since AS (
        SELECT s.instance_id, min(s.at) AS idle_since
        FROM utilization_sample s JOIN idle USING (instance_id) LEFT JOIN last_busy b USING (instance_id)
        WHERE s.org_id = :org_id AND s.at > coalesce(b.at, :lookback) AND s.at <= :now
        GROUP BY s.instance_id
    )
    SELECT r.id, recent.samples, recent.max_util, recent.avg_util, since.idle_since
    FROM running r
    LEFT JOIN recent ON recent.instance_id = r.id
    LEFT JOIN since ON since.instance_id = r.id
    ORDER BY r.id
    """
)


def idle_instances(
    session: Session, org_id: str, now: datetime, *, threshold_pct: Decimal, minutes: int
) -> IdleReport:
    """``org_id``'s running instances whose every GPU sample in ``(now - minutes, now]`` is under
    ``threshold_pct``, with since when (the first sample after the last busy one, looking back at most
    7 days). A running instance with no sample in the window is listed apart, never called idle."""
    if not 0 < threshold_pct <= 100:
        raise InvalidRange("threshold_pct must be more than 0 and at most 100")
    if not 1 <= minutes <= MAX_IDLE_MINUTES:
        raise InvalidRange(f"minutes must be between 1 and {MAX_IDLE_MINUTES}")
    now = now.astimezone(UTC)
    window_start = now - timedelta(minutes=minutes)
    params = {
        "org_id": org_id,
        "now": now,
        "window_start": window_start,
        "lookback": now - IDLE_LOOKBACK,
        "threshold": threshold_pct,
    }
    answer = list(session.execute(_IDLE, params))
    rows = {
        r.id: r
        for r in session.scalars(
            select(InstanceRow).where(InstanceRow.org_id == org_id, InstanceRow.state == "running")
        )
    }
    idle, silent, busy = [], [], 0
    for instance_id, samples, max_util, avg_util, since in answer:
        row = rows.get(instance_id)
        if row is None:  # stopped between the two statements
            continue
        if samples is None:
            silent.append(row)
        elif max_util < threshold_pct:
            idle.append(IdleInstance(row, samples, max_util, avg_util, since))
        else:
            busy += 1
    idle.sort(key=lambda i: (i.idle_since, i.instance.id))  # idle longest first
    return IdleReport(threshold_pct, minutes, window_start, now, idle, silent, busy)


def _minutes(delta: timedelta) -> int:
    return int(delta.total_seconds() // 60)


__all__ = [
    "IDLE_BELOW_PCT",
    "LATEST_WINDOW",
    "MAX_AGE",
    "MAX_FUTURE",
    "MAX_SAMPLES_PER_BATCH",
    "MAX_SUMMARY_SPAN",
    "GroupBy",
    "IdleInstance",
    "IdleReport",
    "InstanceBucket",
    "InstanceHistory",
    "InstanceSeries",
    "InvalidRange",
    "InvalidSamples",
    "RecordResult",
    "Sample",
    "UnknownInstances",
    "UnknownProject",
    "UtilizationError",
    "UtilizationGroup",
    "UtilizationSummary",
    "check_sample_times",
    "idle_instances",
    "instance_history",
    "latest_utilization",
    "record_samples",
    "resolve_range",
    "summarize",
]
