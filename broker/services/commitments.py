"""Commitments: record reserved-capacity contracts, report their use, feed them to placement (does I/O).

A commitment is capacity the organization pays for whether it uses it or not (a reserved
instance, a capacity block, a savings plan, a neocloud contract). The API creates, changes and
soft-deletes them here (a deleted one keeps its row, for history, but no reader sees it again);
:func:`usage` says per UTC day how much of it was used and what the idle part wasted; and
:func:`active_commitments` is what the scheduler puts in its placement snapshot.

Also here: the keyset cursor that the API's list endpoints share (``(created_at, id)``, newest
first, carried as an opaque base64 string).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from broker.core.workload import Commitment, CommitmentKind
from broker.db.fleet import CommitmentRow, InstanceRow, Project
from broker.services.paging import Page, after_cursor, page_of
from broker.services.tenancy import find_project, new_id
from pricing.normalize import canonical_accelerator

MAX_GPUS = 100_000
MAX_TERM = timedelta(days=3653)  # ten years, leap days included
MAX_USAGE_SPAN = timedelta(days=400)
# Instance states that hold (or are about to hold) a commitment's GPUs.
HOLDING_STATES = ("requested", "pending", "running", "terminating")

PRICE_QUANTUM = Decimal("0.000001")  # USD per GPU-hour, from a contract total
HOURS_QUANTUM = Decimal("0.000001")  # GPU-hours in a usage report
USD_QUANTUM = Decimal("0.01")
FRACTION_QUANTUM = Decimal("0.0001")
_ZERO = Decimal(0)
_MICROSECONDS_PER_HOUR = Decimal(3_600_000_000)


# --- money and time --------------------------------------------------------------------------------


def hours(delta: timedelta) -> Decimal:
    """A duration in hours, exactly (to the microsecond); negative durations count as none."""
    micros = delta // timedelta(microseconds=1)
    return Decimal(max(micros, 0)) / _MICROSECONDS_PER_HOUR


def _overlap(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> Decimal:
    return hours(min(a1, b1) - max(a0, b0))


def per_gpu_hour_from_total(
    total_usd: Decimal, gpu_count: int, starts_at: datetime, ends_at: datetime
) -> Decimal:
    """A contract's total price as USD per GPU-hour: total / (GPUs × hours), to the micro-dollar."""
    gpu_hours = gpu_count * hours(ends_at - starts_at)
    return (total_usd / gpu_hours).quantize(PRICE_QUANTUM, rounding=ROUND_HALF_EVEN)


# --- the commitment itself ----------------------------------------------------------------------------


class CommitmentInvalid(ValueError):
    """A create or change that breaks a rule: ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class CommitmentNotFound(LookupError):
    """No such commitment in the caller's organization (deleted, or another organization's)."""


@dataclass(frozen=True, slots=True)
class CommitmentTerms:
    """What a new commitment says; exactly one of ``price_per_gpu_hour`` and ``total_usd``."""

    provider: str
    region: str
    accelerator: str
    gpu_count: int
    starts_at: datetime
    ends_at: datetime
    kind: CommitmentKind
    price_per_gpu_hour: Decimal | None = None
    total_usd: Decimal | None = None
    name: str | None = None
    project: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    reservation_id: str | None = None


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP


@dataclass(frozen=True, slots=True)
class CommitmentPatch:
    """A change to a commitment: fields left at ``KEEP`` stay as they are.

    A new ``gpu_count`` or ``ends_at`` without a price keeps the price per GPU-hour; a new
    ``total_usd`` is converted with the (new) GPU count and term."""

    name: str | _Keep | None = KEEP
    gpu_count: int | _Keep = KEEP
    ends_at: datetime | _Keep = KEEP
    price_per_gpu_hour: Decimal | _Keep = KEEP
    total_usd: Decimal | _Keep = KEEP
    reservation_id: str | _Keep | None = KEEP


@dataclass(frozen=True, slots=True)
class CommitmentView:
    """A commitment as the API shows it; ``total_usd`` is what the whole term costs."""

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
    price_per_gpu_hour: Decimal
    total_usd: Decimal
    reservation_id: str | None
    created_at: datetime
    updated_at: datetime


def _total_usd(row: CommitmentRow) -> Decimal:
    total = row.price_per_gpu_hour * row.gpu_count * hours(row.ends_at - row.starts_at)
    return total.quantize(USD_QUANTUM, rounding=ROUND_HALF_EVEN)


def _view(row: CommitmentRow, project_name: str | None) -> CommitmentView:
    return CommitmentView(
        id=row.id,
        name=row.name,
        project=project_name,
        provider=row.provider,
        region=row.region,
        zone=row.zone,
        accelerator=row.accelerator,
        instance_type=row.instance_type,
        gpu_count=row.gpu_count,
        kind=row.kind,
        starts_at=row.starts_at,
        ends_at=row.ends_at,
        price_per_gpu_hour=row.price_per_gpu_hour,
        total_usd=_total_usd(row),
        reservation_id=row.reservation_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _check_shape(gpu_count: int, starts_at: datetime, ends_at: datetime) -> None:
    if not 1 <= gpu_count <= MAX_GPUS:
        raise CommitmentInvalid("gpu_count", f"gpu_count must be 1-{MAX_GPUS}")
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise CommitmentInvalid("starts_at", "times must carry a time zone")
    if ends_at <= starts_at:
        raise CommitmentInvalid("ends_at", "ends_at must be after starts_at")
    if ends_at - starts_at > MAX_TERM:
        raise CommitmentInvalid("ends_at", "a commitment may last at most 10 years")


def _check_money(field: str, value: Decimal) -> None:
    if not value.is_finite() or value < 0:
        raise CommitmentInvalid(field, f"{field} must be a non-negative amount")


def _clean(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


def _live(org_id: str) -> Select[tuple[CommitmentRow, str | None]]:
    return (
        select(CommitmentRow, Project.name)
        .outerjoin(Project, Project.id == CommitmentRow.project_id)
        .where(CommitmentRow.org_id == org_id, CommitmentRow.deleted_at.is_(None))
    )


def create_commitment(session: Session, org_id: str, terms: CommitmentTerms, now: datetime) -> CommitmentView:
    """Record a commitment of ``org_id``; :class:`CommitmentInvalid` when the terms break a rule."""
    _check_shape(terms.gpu_count, terms.starts_at, terms.ends_at)
    if (terms.price_per_gpu_hour is None) == (terms.total_usd is None):
        raise CommitmentInvalid("price_per_gpu_hour", "give exactly one of price_per_gpu_hour and total_usd")
    if terms.total_usd is not None:
        _check_money("total_usd", terms.total_usd)
        price = per_gpu_hour_from_total(terms.total_usd, terms.gpu_count, terms.starts_at, terms.ends_at)
    else:
        assert terms.price_per_gpu_hour is not None
        _check_money("price_per_gpu_hour", terms.price_per_gpu_hour)
        price = terms.price_per_gpu_hour
    provider = (terms.provider or "").strip().lower()
    region = (terms.region or "").strip()
    accelerator = canonical_accelerator(terms.accelerator or "")
    for field, value in (("provider", provider), ("region", region), ("accelerator", accelerator)):
        if not value:
            raise CommitmentInvalid(field, f"{field} must not be empty")
    project: Project | None = None
    if terms.project is not None:
        project = find_project(session, org_id, terms.project)
        if project is None:
            raise CommitmentInvalid("project", f"no project {terms.project!r} in this organization")
    row = CommitmentRow(
        id=new_id("cmt"),
        org_id=org_id,
        project_id=project.id if project else None,
        name=_clean(terms.name),
        provider=provider,
        region=region,
        zone=_clean(terms.zone),
        accelerator=accelerator,
        instance_type=_clean(terms.instance_type),
        gpu_count=terms.gpu_count,
        kind=CommitmentKind(terms.kind).value,
        starts_at=terms.starts_at.astimezone(UTC),
        ends_at=terms.ends_at.astimezone(UTC),
        price_per_gpu_hour=price,
        reservation_id=_clean(terms.reservation_id),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return _view(row, project.name if project else None)


def get_commitment(session: Session, org_id: str, commitment_id: str) -> CommitmentView:
    found = session.execute(_live(org_id).where(CommitmentRow.id == commitment_id)).first()
    if found is None:
        raise CommitmentNotFound(commitment_id)
    return _view(found[0], found[1])


def list_commitments(
    session: Session,
    org_id: str,
    *,
    provider: str | None = None,
    active_at: datetime | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page[CommitmentView]:
    """The organization's commitments, newest first (:class:`InvalidCursor` for a bad cursor)."""
    query = _live(org_id)
    if provider is not None:
        query = query.where(CommitmentRow.provider == provider.strip().lower())
    if active_at is not None:
        query = query.where(CommitmentRow.starts_at <= active_at, CommitmentRow.ends_at > active_at)
    after = after_cursor(CommitmentRow.created_at, CommitmentRow.id, cursor)
    if after is not None:
        query = query.where(after)
    query = query.order_by(CommitmentRow.created_at.desc(), CommitmentRow.id.desc()).limit(limit + 1)
    rows = session.execute(query).all()
    items, next_cursor = page_of(rows, limit, lambda r: (r[0].created_at, r[0].id))
    return Page([_view(r[0], r[1]) for r in items], next_cursor)


def _locked(session: Session, org_id: str, commitment_id: str) -> CommitmentRow:
    row = session.scalar(
        select(CommitmentRow)
        .where(
            CommitmentRow.id == commitment_id,
            CommitmentRow.org_id == org_id,
            CommitmentRow.deleted_at.is_(None),
        )
        .with_for_update()
    )
    if row is None:
        raise CommitmentNotFound(commitment_id)
    return row


def update_commitment(
    session: Session, org_id: str, commitment_id: str, patch: CommitmentPatch, now: datetime
) -> CommitmentView:
    """Change a commitment (:class:`CommitmentNotFound`, :class:`CommitmentInvalid`)."""
    row = _locked(session, org_id, commitment_id)
    gpu_count = row.gpu_count if patch.gpu_count is KEEP else patch.gpu_count
    ends_at = row.ends_at if patch.ends_at is KEEP else patch.ends_at
    if gpu_count is None:
        raise CommitmentInvalid("gpu_count", "gpu_count cannot be null")
    if ends_at is None:
        raise CommitmentInvalid("ends_at", "ends_at cannot be null")
    _check_shape(gpu_count, row.starts_at, ends_at)
    price_given = patch.price_per_gpu_hour is not KEEP and patch.price_per_gpu_hour is not None
    total_given = patch.total_usd is not KEEP and patch.total_usd is not None
    if price_given and total_given:
        raise CommitmentInvalid("price_per_gpu_hour", "give at most one of price_per_gpu_hour and total_usd")
    if patch.price_per_gpu_hour is None or patch.total_usd is None:
        raise CommitmentInvalid("price_per_gpu_hour", "a price cannot be null")
    price = row.price_per_gpu_hour
    if isinstance(patch.total_usd, Decimal):
        _check_money("total_usd", patch.total_usd)
        price = per_gpu_hour_from_total(patch.total_usd, gpu_count, row.starts_at, ends_at)
    elif isinstance(patch.price_per_gpu_hour, Decimal):
        _check_money("price_per_gpu_hour", patch.price_per_gpu_hour)
        price = patch.price_per_gpu_hour
    row.gpu_count = gpu_count
    row.ends_at = ends_at.astimezone(UTC)
    row.price_per_gpu_hour = price
    if patch.name is not KEEP:
        row.name = _clean(patch.name)
    if patch.reservation_id is not KEEP:
        row.reservation_id = _clean(patch.reservation_id)
    row.updated_at = now
    session.flush()
    return get_commitment(session, org_id, commitment_id)


def delete_commitment(session: Session, org_id: str, commitment_id: str, now: datetime) -> None:
    """Soft-delete: the row stays (usage history, cost records) but no reader or placement sees it."""
    row = _locked(session, org_id, commitment_id)
    row.deleted_at = now
    row.updated_at = now
    session.flush()


# --- usage ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageFigures:
    """GPU-hours committed and used in a period, the idle part and what it wasted."""

    committed_gpu_hours: Decimal
    used_gpu_hours: Decimal
    idle_gpu_hours: Decimal
    utilization: Decimal | None  # used / committed; None when nothing was committed
    idle_waste_usd: Decimal


@dataclass(frozen=True, slots=True)
class DayUsage:
    day: date
    figures: UsageFigures


@dataclass(frozen=True, slots=True)
class CommitmentUsage:
    """A commitment's use per UTC day over ``[start, end)``, and the totals (sums of the days)."""

    commitment_id: str
    start: datetime
    end: datetime
    gpu_count: int
    price_per_gpu_hour: Decimal
    days: list[DayUsage]
    totals: UsageFigures


def _figures(committed: Decimal, used: Decimal, price: Decimal) -> UsageFigures:
    idle = committed - used
    return UsageFigures(
        committed_gpu_hours=committed,
        used_gpu_hours=used,
        idle_gpu_hours=idle,
        utilization=(used / committed).quantize(FRACTION_QUANTUM) if committed else None,
        idle_waste_usd=(idle * price).quantize(USD_QUANTUM, rounding=ROUND_HALF_EVEN),
    )


def _midnight(at: datetime) -> datetime:
    utc = at.astimezone(UTC)
    return datetime(utc.year, utc.month, utc.day, tzinfo=UTC)


def usage(
    session: Session,
    org_id: str,
    commitment_id: str,
    now: datetime,
    start: datetime | None = None,
    end: datetime | None = None,
) -> CommitmentUsage:
    """Per UTC day: GPU-hours committed (``gpu_count`` × the hours of the day inside the term), used
    (GPUs × running hours of the instances launched under it, inside the term), idle, utilization
    and idle waste (idle × price per GPU-hour).

    The window defaults to the term (at most its last 400 days) and always ends at ``now`` at the
    latest: the future has no usage yet. An instance still running counts up to ``now``. Used
    hours are capped at the committed hours of each day (instances over the count, which the
    scheduler never places, are not "negative idle"). :class:`CommitmentInvalid` for a window
    that ends before it starts or spans more than 400 days."""
    row = _live_row(session, org_id, commitment_id)
    if start is not None and end is not None:
        if end <= start:
            raise CommitmentInvalid("end", "end must be after start")
        if end - start > MAX_USAGE_SPAN:
            raise CommitmentInvalid("end", "the window may span at most 400 days")
    window_end = min(end if end is not None else row.ends_at, now)
    if start is None:
        start = max(row.starts_at, window_end - MAX_USAGE_SPAN)
    elif end is None and window_end - start > MAX_USAGE_SPAN:
        raise CommitmentInvalid("start", "the window may span at most 400 days")
    price = row.price_per_gpu_hour
    days: list[DayUsage] = []
    if window_end > start:
        instances = session.execute(
            select(InstanceRow.gpus, InstanceRow.launched_at, InstanceRow.ended_at).where(
                InstanceRow.org_id == org_id,
                InstanceRow.commitment_id == row.id,
                InstanceRow.launched_at.is_not(None),
                InstanceRow.launched_at < window_end,
                (InstanceRow.ended_at.is_(None)) | (InstanceRow.ended_at > start),
            )
        ).all()
        day_start = _midnight(start)
        while day_start < window_end:
            day_end = day_start + timedelta(days=1)
            w0 = max(day_start, start, row.starts_at)
            w1 = min(day_end, window_end, row.ends_at)
            committed = (row.gpu_count * hours(w1 - w0)).quantize(HOURS_QUANTUM)
            used = _ZERO
            if committed:
                used = sum(
                    (i.gpus * _overlap(i.launched_at, i.ended_at or now, w0, w1) for i in instances), _ZERO
                )
                used = min(used, committed).quantize(HOURS_QUANTUM)
            days.append(DayUsage(day_start.date(), _figures(committed, used, price)))
            day_start = day_end
    committed_total = sum((d.figures.committed_gpu_hours for d in days), _ZERO)
    used_total = sum((d.figures.used_gpu_hours for d in days), _ZERO)
    # The total waste is the sum of the days' (each rounded to the cent), so the figures add up.
    totals = replace(
        _figures(committed_total, used_total, price),
        idle_waste_usd=sum((d.figures.idle_waste_usd for d in days), _ZERO),
    )
    return CommitmentUsage(row.id, start, max(window_end, start), row.gpu_count, price, days, totals)


def _live_row(session: Session, org_id: str, commitment_id: str) -> CommitmentRow:
    """The live (not deleted) commitment, without a row lock: readers need none."""
    row = session.scalar(
        select(CommitmentRow).where(
            CommitmentRow.id == commitment_id,
            CommitmentRow.org_id == org_id,
            CommitmentRow.deleted_at.is_(None),
        )
    )
    if row is None:
        raise CommitmentNotFound(commitment_id)
    return row


# --- what the scheduler reads ----------------------------------------------------------------------


def active_commitments(session: Session, org_id: str, now: datetime) -> list[Commitment]:
    """The commitments of ``org_id`` in force at ``now``, as the placement core's ``Commitment``.

    In force: not deleted and ``starts_at <= now < ends_at``. ``gpus_in_use`` is the GPUs of the
    instances launched under each one that hold capacity (states requested, pending, running,
    terminating), capped at ``gpu_count``: an instance already requested counts, so two placement
    rounds in a row do not both fill the same free GPUs. A commitment's ``project`` is for
    reporting only; its capacity is open to every project of the organization."""
    rows = session.scalars(
        select(CommitmentRow)
        .where(
            CommitmentRow.org_id == org_id,
            CommitmentRow.deleted_at.is_(None),
            CommitmentRow.starts_at <= now,
            CommitmentRow.ends_at > now,
        )
        .order_by(CommitmentRow.starts_at, CommitmentRow.id)
    ).all()
    if not rows:
        return []
    in_use = dict(
        session.execute(
            select(InstanceRow.commitment_id, func.sum(InstanceRow.gpus))
            .where(
                InstanceRow.org_id == org_id,
                InstanceRow.commitment_id.in_([r.id for r in rows]),
                InstanceRow.state.in_(HOLDING_STATES),
            )
            .group_by(InstanceRow.commitment_id)
        ).all()
    )
    return [
        Commitment(
            commitment_id=r.id,
            cloud=r.provider,
            region=r.region,
            accelerator=r.accelerator,
            gpu_count=r.gpu_count,
            starts_at=r.starts_at,
            ends_at=r.ends_at,
            price_per_gpu_hour=r.price_per_gpu_hour,
            kind=CommitmentKind(r.kind),
            gpus_in_use=min(int(in_use.get(r.id) or 0), r.gpu_count),
            zone=r.zone,
            instance_type=r.instance_type,
        )
        for r in rows
    ]


def commitment_reservations(session: Session, org_id: str) -> dict[str, str]:
    """``{commitment_id: reservation_id}`` for the organization's live commitments that name the
    provider's reservation to launch into (the executor passes it with the launch)."""
    return {
        cid: rid
        for cid, rid in session.execute(
            select(CommitmentRow.id, CommitmentRow.reservation_id).where(
                CommitmentRow.org_id == org_id,
                CommitmentRow.deleted_at.is_(None),
                CommitmentRow.reservation_id.is_not(None),
            )
        ).all()
    }


__all__ = [
    "HOLDING_STATES",
    "KEEP",
    "MAX_GPUS",
    "CommitmentInvalid",
    "CommitmentNotFound",
    "CommitmentPatch",
    "CommitmentTerms",
    "CommitmentUsage",
    "CommitmentView",
    "DayUsage",
    "UsageFigures",
    "active_commitments",
    "commitment_reservations",
    "create_commitment",
    "delete_commitment",
    "get_commitment",
    "hours",
    "list_commitments",
    "per_gpu_hour_from_total",
    "update_commitment",
    "usage",
]
