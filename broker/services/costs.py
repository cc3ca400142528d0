"""Cost accounting over any time window: what each instance and each commitment cost (reads the database).

Everything is derived from the fleet tables (``instance``, ``commitment``) and the price history
(``offer_price``); the arithmetic is :mod:`pricing.costs`. :func:`cost_lines` reads a window in a
fixed number of queries (instances, spot price observations, on-demand prices in three parts,
commitments), however many instances there are. See ``docs/costs.md`` for the rules in words.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from typing import Any

from sqlalchemy import Row, Select, or_, select, tuple_
from sqlalchemy.dialects.postgresql import distinct_on
from sqlalchemy.orm import Session

from broker.db.fleet import CommitmentRow, InstanceRow, Project
from broker.db.models import OfferPrice
from pricing.costs import (
    MICROS_PER_HOUR,
    InstanceCost,
    PriceChange,
    UsedRun,
    commitment_cost,
    commitment_term,
    instance_cost,
    micros,
    schedule,
)

_ZERO = Decimal(0)
_EXACT = Context(prec=80)  # as in pricing.costs: sums of price x microseconds never round


@dataclass(frozen=True, slots=True)
class CostLine:
    """What one instance, or one commitment, cost inside one time window.

    Instance lines: ``gpu_hours`` = ``used_gpu_hours`` = GPU-hours it ran inside the window;
    ``usd`` what it cost (per-second proration, spot price changes applied from their effective
    time); an instance on a commitment has ``usd`` 0 (its commitment line carries the charge);
    ``ondemand_usd`` is the same GPU-hours at the on-demand price of that instance type in that
    region (None when no on-demand price is known).
    Commitment lines: ``gpu_hours`` = GPU-hours committed inside the window; ``used_gpu_hours`` =
    GPU-hours its instances ran inside it; ``usd`` = the contract's charge for the window
    (committed GPU-hours x price, used or not); ``ondemand_usd`` = 0.
    Savings against on-demand = sum(ondemand_usd) - sum(usd) over all lines (with a known price).
    Idle commitment waste = (gpu_hours - used_gpu_hours) x price_per_gpu_hour of the commitment line.

    Amounts are unrounded (exact to 28 significant digits): sum first, round for display.
    An instance on a commitment has ``price_per_gpu_hour`` 0 (its marginal price), consistent
    with its ``usd`` 0.
    """

    kind: str  # "instance" | "commitment"
    org_id: str
    project_id: str | None
    workload_id: str | None
    instance_id: str | None
    commitment_id: str | None
    provider: str
    region: str
    capacity_type: str  # "spot" | "on-demand" | "reserved"
    accelerator: str
    instance_type: str | None
    gpu_hours: Decimal
    used_gpu_hours: Decimal
    usd: Decimal
    ondemand_usd: Decimal | None
    price_per_gpu_hour: Decimal  # the (last) effective price in the window, per GPU-hour

    @property
    def idle_waste_usd(self) -> Decimal:
        """Commitment lines: what the unused committed GPU-hours cost; instance lines: 0."""
        if self.kind != "commitment":
            return _ZERO
        return (self.gpu_hours - self.used_gpu_hours) * self.price_per_gpu_hour


# --- loading the fleet ---------------------------------------------------------------------------------

_INSTANCE_COLUMNS = (
    InstanceRow.id,
    InstanceRow.org_id,
    InstanceRow.project_id,
    InstanceRow.workload_id,
    InstanceRow.provider,
    InstanceRow.region,
    InstanceRow.zone,
    InstanceRow.instance_type,
    InstanceRow.accelerator,
    InstanceRow.gpus,
    InstanceRow.capacity_type,
    InstanceRow.price_per_hour,
    InstanceRow.commitment_id,
    InstanceRow.launched_at,
    InstanceRow.ended_at,
    # The term of the commitment it runs on (outer-joined: None without one).
    CommitmentRow.starts_at.label("commitment_starts_at"),
    CommitmentRow.ends_at.label("commitment_ends_at"),
    CommitmentRow.deleted_at.label("commitment_deleted_at"),
)


def _select_instances(*where: Any) -> Select[Any]:
    return (
        select(*_INSTANCE_COLUMNS)
        .outerjoin(CommitmentRow, CommitmentRow.id == InstanceRow.commitment_id)
        .where(*where)
    )


_ALWAYS = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))


def covered_term(instance: Row[Any]) -> tuple[datetime, datetime] | None:
    """The time ``instance``'s commitment pays for it (None: not on a commitment). A contract
    cancelled before it began pays for nothing: an empty interval. A commitment id without a row
    (there is no foreign key) is taken as paying for all of the run, as before terms were read."""
    if instance.commitment_id is None:
        return None
    if instance.commitment_starts_at is None:
        return _ALWAYS
    term = commitment_term(
        instance.commitment_starts_at, instance.commitment_ends_at, instance.commitment_deleted_at
    )
    return term or (instance.commitment_starts_at, instance.commitment_starts_at)


def instances_between(
    session: Session, org_id: str | None, start: datetime, end: datetime, project_id: str | None = None
) -> list[Row[Any]]:
    """Instances that ran at some time in ``[start, end)`` (never-launched ones cost nothing)."""
    query = _select_instances(
        InstanceRow.launched_at.is_not(None),
        InstanceRow.launched_at < end,
        or_(InstanceRow.ended_at.is_(None), InstanceRow.ended_at > start),
    )
    if org_id is not None:
        query = query.where(InstanceRow.org_id == org_id)
    if project_id is not None:
        query = query.where(InstanceRow.project_id == project_id)
    return list(session.execute(query.order_by(InstanceRow.launched_at, InstanceRow.id)))


def _pays_spot(instance: Row[Any]) -> bool:
    return instance.capacity_type == "spot" and instance.commitment_id is None


def _spot_changes(
    session: Session, instances: Sequence[Row[Any]], until: datetime
) -> dict[str, list[PriceChange]]:
    """Per spot instance, the spot price observations of its offer after its launch, up to ``until``.

    Its offer is the same provider, region and instance type in its zone; where the history has no
    row for that zone, the region-wide row (zone ""). Another zone's price never applies: spot
    prices differ several-fold between zones."""
    spot = [i for i in instances if _pays_spot(i)]
    if not spot:
        return {}
    keys = {(i.provider, i.region, i.instance_type) for i in spot}
    rows = session.execute(
        select(
            OfferPrice.cloud,
            OfferPrice.region,
            OfferPrice.zone,
            OfferPrice.instance_type,
            OfferPrice.observed_at,
            OfferPrice.price_per_hour,
        )
        .where(
            OfferPrice.capacity_type == "spot",
            tuple_(OfferPrice.cloud, OfferPrice.region, OfferPrice.instance_type).in_(sorted(keys)),
            OfferPrice.observed_at > min(i.launched_at for i in spot),
            OfferPrice.observed_at <= until,
        )
        .order_by(OfferPrice.observed_at, OfferPrice.snapshot_id, OfferPrice.id)
    )
    by_offer: dict[tuple[str, str, str, str], list[PriceChange]] = defaultdict(list)
    for r in rows:
        by_offer[(r.cloud, r.region, r.instance_type, r.zone)].append(
            PriceChange(r.observed_at, r.price_per_hour)
        )
    changes: dict[str, list[PriceChange]] = {}
    for i in spot:
        zoned = by_offer.get((i.provider, i.region, i.instance_type, i.zone or ""))
        found = zoned or by_offer.get((i.provider, i.region, i.instance_type, ""), [])
        changes[i.id] = [c for c in found if c.at > i.launched_at]
    return changes


_ONDEMAND_COLUMNS = (
    OfferPrice.cloud,
    OfferPrice.region,
    OfferPrice.instance_type,
    OfferPrice.accelerator,
    OfferPrice.accelerator_count,
    OfferPrice.observed_at,
    OfferPrice.price_per_hour,
)


def _ondemand_schedules(
    session: Session, instances: Sequence[Row[Any]], start: datetime, end: datetime
) -> dict[str, tuple[PriceChange, ...]]:
    """Per instance, the on-demand price schedule of its capacity (absent: no price known).

    The on-demand offer of the same provider, region and instance type; where there is none, the
    cheapest on-demand offer of the same accelerator and GPU count in that provider's region. At
    each observation the cheapest zone counts. Read in three parts so the history outside the
    window is not all read: the observations inside it, the last one before it (in force at its
    start) and the first one after it (the best estimate when nothing earlier was ever observed)."""
    if not instances:
        return {}
    places = sorted({(i.provider, i.region) for i in instances})
    types = sorted({i.instance_type for i in instances})
    shapes = sorted({(i.accelerator, i.gpus) for i in instances})
    same_capacity = (
        OfferPrice.capacity_type == "on-demand",
        tuple_(OfferPrice.cloud, OfferPrice.region).in_(places),
        or_(
            OfferPrice.instance_type.in_(types),
            tuple_(OfferPrice.accelerator, OfferPrice.accelerator_count).in_(shapes),
        ),
    )
    offer_key = (OfferPrice.cloud, OfferPrice.region, OfferPrice.zone, OfferPrice.instance_type)
    inside = select(*_ONDEMAND_COLUMNS).where(
        *same_capacity, OfferPrice.observed_at >= start, OfferPrice.observed_at < end
    )
    before = (
        select(*_ONDEMAND_COLUMNS)
        .where(*same_capacity, OfferPrice.observed_at < start)
        .ext(distinct_on(*offer_key))
        .order_by(*offer_key, OfferPrice.observed_at.desc(), OfferPrice.snapshot_id.desc())
    )
    after = (
        select(*_ONDEMAND_COLUMNS)
        .where(*same_capacity, OfferPrice.observed_at >= end)
        .ext(distinct_on(*offer_key))
        .order_by(*offer_key, OfferPrice.observed_at, OfferPrice.snapshot_id)
    )
    # (key, observed_at) -> the cheapest price observed then.
    by_type: dict[tuple[str, str, str], dict[datetime, Decimal]] = defaultdict(dict)
    by_shape: dict[tuple[str, str, str, int], dict[datetime, Decimal]] = defaultdict(dict)
    for query in (before, inside, after):
        for r in session.execute(query):
            for table, key in (
                (by_type, (r.cloud, r.region, r.instance_type)),
                (by_shape, (r.cloud, r.region, r.accelerator, r.accelerator_count)),
            ):
                seen = table[key].get(r.observed_at)  # type: ignore[index]
                if seen is None or r.price_per_hour < seen:
                    table[key][r.observed_at] = r.price_per_hour  # type: ignore[index]

    def as_schedule(points: dict[datetime, Decimal]) -> tuple[PriceChange, ...]:
        return schedule(PriceChange(at, price) for at, price in points.items())

    schedules: dict[str, tuple[PriceChange, ...]] = {}
    for i in instances:
        points = by_type.get((i.provider, i.region, i.instance_type)) or by_shape.get(
            (i.provider, i.region, i.accelerator, i.gpus)
        )
        if points:
            schedules[i.id] = as_schedule(points)
    return schedules


def _commitments(
    session: Session, org_id: str, start: datetime, end: datetime, project_id: str | None = None
) -> list[CommitmentRow]:
    """Commitments whose charging term (cut at ``deleted_at``) overlaps ``[start, end)``."""
    query = select(CommitmentRow).where(
        CommitmentRow.org_id == org_id,
        CommitmentRow.starts_at < end,
        CommitmentRow.ends_at > start,
        or_(CommitmentRow.deleted_at.is_(None), CommitmentRow.deleted_at > start),
    )
    if project_id is not None:
        query = query.where(CommitmentRow.project_id == project_id)
    return list(session.scalars(query.order_by(CommitmentRow.starts_at, CommitmentRow.id)))


# --- lines ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetPrices:
    """The price facts a set of instances needs: spot observations and on-demand schedules."""

    spot_changes: dict[str, list[PriceChange]]
    ondemand: dict[str, tuple[PriceChange, ...]]

    @classmethod
    def load(
        cls, session: Session, instances: Sequence[Row[Any]], start: datetime, end: datetime
    ) -> FleetPrices:
        return cls(
            _spot_changes(session, instances, end), _ondemand_schedules(session, instances, start, end)
        )


def _paid_by_commitment(instance: Row[Any], at: datetime) -> bool:
    term = covered_term(instance)
    return term is not None and term[0] <= at < term[1]


def _cost(instance: Row[Any], prices: FleetPrices, start: datetime, end: datetime) -> InstanceCost:
    return instance_cost(
        launched_at=instance.launched_at,
        ended_at=instance.ended_at,
        gpus=instance.gpus,
        launch_price=instance.price_per_hour,
        window_start=start,
        window_end=end,
        price_changes=prices.spot_changes.get(instance.id, ()),
        ondemand_prices=prices.ondemand.get(instance.id, ()),
        commitment_term=covered_term(instance),
    )


def instance_line(instance: Row[Any], prices: FleetPrices, start: datetime, end: datetime) -> CostLine | None:
    """One instance's line for ``[start, end)`` (None when it did not run inside it)."""
    cost = _cost(instance, prices, start, end)
    if cost.charge.gpu_micros == 0:
        return None
    return CostLine(
        kind="instance",
        org_id=instance.org_id,
        project_id=instance.project_id,
        workload_id=instance.workload_id,
        instance_id=instance.id,
        commitment_id=instance.commitment_id,
        provider=instance.provider,
        region=instance.region,
        capacity_type=instance.capacity_type,
        accelerator=instance.accelerator,
        instance_type=instance.instance_type,
        gpu_hours=cost.gpu_hours,
        used_gpu_hours=cost.gpu_hours,
        usd=cost.usd,
        ondemand_usd=cost.ondemand_usd,
        price_per_gpu_hour=cost.price_per_hour / instance.gpus,
    )


def commitment_line(
    commitment: CommitmentRow, used: Iterable[UsedRun], start: datetime, end: datetime
) -> CostLine | None:
    """One commitment's line for ``[start, end)`` (None when it charged nothing inside it)."""
    cost = commitment_cost(
        starts_at=commitment.starts_at,
        ends_at=commitment.ends_at,
        deleted_at=commitment.deleted_at,
        gpu_count=commitment.gpu_count,
        price_per_gpu_hour=commitment.price_per_gpu_hour,
        window_start=start,
        window_end=end,
        used=used,
    )
    if cost.charge.gpu_micros == 0:
        return None
    return CostLine(
        kind="commitment",
        org_id=commitment.org_id,
        project_id=commitment.project_id,
        workload_id=None,
        instance_id=None,
        commitment_id=commitment.id,
        provider=commitment.provider,
        region=commitment.region,
        capacity_type="reserved",
        accelerator=commitment.accelerator,
        instance_type=commitment.instance_type,
        gpu_hours=cost.committed_gpu_hours,
        used_gpu_hours=cost.used_gpu_hours,
        usd=cost.usd,
        ondemand_usd=_ZERO,
        price_per_gpu_hour=commitment.price_per_gpu_hour,
    )


def cost_lines(
    session: Session,
    *,
    org_id: str,
    start: datetime,
    end: datetime,
    now: datetime | None = None,
    project_id: str | None = None,
) -> list[CostLine]:
    """Every instance and commitment of ``org_id`` that cost anything in ``[start, end)``.

    A running instance counts up to ``end``; with ``now`` the window stops at ``now`` (nothing in
    the future is counted, commitments included). ``project_id`` keeps the lines of one project
    (commitments reserved for it; a commitment without a project is then left out).
    Instance lines first (by launch), then commitment lines (by start)."""
    if now is not None:
        end = min(end, now)
    if end <= start:
        return []
    instances = instances_between(session, org_id, start, end, project_id)
    commitments = _commitments(session, org_id, start, end, project_id)
    prices = FleetPrices.load(session, instances, start, end)
    lines = [line for i in instances if (line := instance_line(i, prices, start, end)) is not None]
    if commitments:
        used: dict[str, list[UsedRun]] = defaultdict(list)
        riders = instances
        if project_id is not None:  # a project's commitment may carry other projects' instances
            riders = instances_between(session, org_id, start, end)
        for i in riders:
            if i.commitment_id is not None:
                used[i.commitment_id].append(UsedRun(i.launched_at, i.ended_at, i.gpus))
        lines.extend(
            line
            for c in commitments
            if (line := commitment_line(c, used.get(c.id, ()), start, end)) is not None
        )
    return lines


def instance_spend(session: Session, *, project_id: str, start: datetime, end: datetime) -> Decimal:
    """What ``project_id``'s instances cost in ``[start, end)``, unrounded: the ``usd`` of their
    cost lines (spot price changes from their time; a run past its commitment's end at the
    on-demand price), without the commitments' own charges or the on-demand counterfactual."""
    instances = instances_between(session, None, start, end, project_id)
    billed_past_term = [i for i in instances if i.commitment_id is not None and not _covered(i, start, end)]
    prices = FleetPrices(
        _spot_changes(session, instances, end),
        _ondemand_schedules(session, billed_past_term, start, end) if billed_past_term else {},
    )
    # It is on the admission path, so the common cases skip the general rule (which gives the same):
    # a run its commitment pays for costs nothing, and one whose price never changed is price x time.
    past_term = {i.id for i in billed_past_term}
    flat = _ZERO
    spent = _ZERO
    for i in instances:
        if i.commitment_id is None and not prices.spot_changes.get(i.id):
            ran = micros(min(i.ended_at or end, end) - max(i.launched_at, start))
            flat = _EXACT.add(flat, _EXACT.multiply(i.price_per_hour, ran))
        elif i.commitment_id is None or i.id in past_term:
            spent += _cost(i, prices, start, end).usd
    return spent + flat / MICROS_PER_HOUR


def _covered(instance: Row[Any], start: datetime, end: datetime) -> bool:
    """Whether its commitment pays for all of its run inside ``[start, end)``."""
    term = covered_term(instance)
    lo, hi = max(instance.launched_at, start), min(instance.ended_at or end, end)
    return term is not None and term[0] <= lo and hi <= term[1]


def burn_rate(session: Session, *, org_id: str, now: datetime, project_id: str | None = None) -> Decimal:
    """Dollars per hour the org is paying at ``now``: running instances that no active commitment
    pays for, plus the hourly charge of every active commitment.

    A spot instance pays the latest price observed for its offer at or before ``now`` (after its
    launch); one still running on a commitment that has ended pays its on-demand price (see
    :func:`pricing.costs.instance_cost`). ``project_id`` keeps one project's instances and the
    commitments reserved for it."""
    running = _select_instances(
        InstanceRow.org_id == org_id,
        InstanceRow.launched_at <= now,
        or_(InstanceRow.ended_at.is_(None), InstanceRow.ended_at > now),
    )
    if project_id is not None:
        running = running.where(InstanceRow.project_id == project_id)
    instances = [i for i in session.execute(running) if not _paid_by_commitment(i, now)]
    instant = now + timedelta(microseconds=1)
    expired = [i for i in instances if i.commitment_id is not None]
    prices = FleetPrices(
        _spot_changes(session, instances, now),
        _ondemand_schedules(session, expired, now, instant) if expired else {},
    )
    rate = sum((_cost(i, prices, now, instant).price_per_hour for i in instances), _ZERO)
    active = select(CommitmentRow).where(
        CommitmentRow.org_id == org_id,
        CommitmentRow.starts_at <= now,
        CommitmentRow.ends_at > now,
        or_(CommitmentRow.deleted_at.is_(None), CommitmentRow.deleted_at > now),
    )
    if project_id is not None:
        active = active.where(CommitmentRow.project_id == project_id)
    for c in session.scalars(active):
        rate += c.gpu_count * c.price_per_gpu_hour
    return rate


def as_utc(at: datetime) -> datetime:
    """``at`` in UTC (a naive time is refused: a window must say which instant it means)."""
    if at.tzinfo is None:
        raise ValueError("times must carry a time zone")
    return at.astimezone(UTC)


# --- summaries -----------------------------------------------------------------------------------

GROUP_BY = ("project", "provider", "region", "capacity_type", "accelerator", "workload")
MAX_WINDOW = timedelta(days=400)


class CostWindowInvalid(ValueError):
    """A window or grouping the cost reports refuse; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def savings(lines: Iterable[CostLine]) -> Decimal:
    """On-demand counterfactual minus what was paid, over the lines with a known on-demand price."""
    return sum((line.ondemand_usd - line.usd for line in lines if line.ondemand_usd is not None), _ZERO)


def idle_waste(lines: Iterable[CostLine]) -> Decimal:
    """What the unused part of the commitments among ``lines`` cost."""
    return sum((line.idle_waste_usd for line in lines), _ZERO)


@dataclass(frozen=True, slots=True)
class ProjectSpend:
    """One project's spend (``project_id`` None: commitments reserved for no project)."""

    project_id: str | None
    name: str | None
    spend_today_usd: Decimal
    spend_month_to_date_usd: Decimal
    max_usd_per_month: Decimal | None


@dataclass(frozen=True, slots=True)
class CostSummary:
    """The organization's (or one project's) money at ``now``; days and months are UTC."""

    now: datetime
    burn_rate_usd_per_hour: Decimal
    spend_today_usd: Decimal
    spend_month_to_date_usd: Decimal
    projects: list[ProjectSpend]
    budget_usd_per_month: Decimal | None  # the sum of the listed projects' limits; None: none has one
    savings_vs_on_demand_usd: Decimal  # month to date
    commitment_waste_usd: Decimal  # month to date: idle committed GPU-hours x their price


def cost_summary(
    session: Session, *, org_id: str, now: datetime, project_id: str | None = None
) -> CostSummary:
    """Burn rate, spend today and this month (per project too), budget, savings and commitment waste."""
    now = as_utc(now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = midnight.replace(day=1)
    mtd = cost_lines(session, org_id=org_id, start=month, end=now, project_id=project_id)
    today = cost_lines(session, org_id=org_id, start=midnight, end=now, project_id=project_id)
    query = select(Project).where(Project.org_id == org_id).order_by(Project.name)
    if project_id is not None:
        query = query.where(Project.id == project_id)
    projects: list[tuple[str | None, str | None, Decimal | None]] = [
        (p.id, p.name, p.max_usd_per_month) for p in session.scalars(query)
    ]
    if any(line.project_id is None for line in mtd):
        projects.append((None, None, None))

    def spend(lines: list[CostLine], pid: str | None) -> Decimal:
        return sum((line.usd for line in lines if line.project_id == pid), _ZERO)

    limits = [limit for _, _, limit in projects if limit is not None]
    return CostSummary(
        now=now,
        burn_rate_usd_per_hour=burn_rate(session, org_id=org_id, now=now, project_id=project_id),
        spend_today_usd=sum((line.usd for line in today), _ZERO),
        spend_month_to_date_usd=sum((line.usd for line in mtd), _ZERO),
        projects=[
            ProjectSpend(pid, name, spend(today, pid), spend(mtd, pid), limit)
            for pid, name, limit in projects
        ],
        budget_usd_per_month=sum(limits, _ZERO) if limits else None,
        savings_vs_on_demand_usd=savings(mtd),
        commitment_waste_usd=idle_waste(mtd),
    )


@dataclass(frozen=True, slots=True)
class GroupTotal:
    """The lines of one group added up. ``key`` None: lines without one (a commitment has no
    workload; a commitment reserved for no project). ``ondemand_usd`` and ``savings_usd`` are
    over the lines with a known on-demand price (None when no line has one)."""

    key: str | None
    name: str | None
    gpu_hours: Decimal
    usd: Decimal
    ondemand_usd: Decimal | None
    savings_usd: Decimal | None
    idle_waste_usd: Decimal


def grouped_costs(
    session: Session,
    *,
    org_id: str,
    start: datetime,
    end: datetime,
    group_by: str,
    now: datetime | None = None,
) -> list[GroupTotal]:
    """The window's cost lines added up per ``group_by`` value, costliest first
    (:class:`CostWindowInvalid` for an empty or over-long window or an unknown grouping)."""
    if group_by not in GROUP_BY:
        raise CostWindowInvalid("group_by", f"group_by must be one of {', '.join(GROUP_BY)}")
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        raise CostWindowInvalid("end", "end must be after start")
    if end - start > MAX_WINDOW:
        raise CostWindowInvalid("end", "the window may span at most 400 days")
    attribute = {"project": "project_id", "workload": "workload_id"}.get(group_by, group_by)
    groups: dict[str | None, list[CostLine]] = defaultdict(list)
    for line in cost_lines(session, org_id=org_id, start=start, end=end, now=now):
        groups[getattr(line, attribute)].append(line)
    names: dict[str | None, str | None] = {}
    if group_by == "project":
        names = dict(session.execute(select(Project.id, Project.name).where(Project.org_id == org_id)).all())
    totals = []
    for key, lines in groups.items():
        known = [line for line in lines if line.ondemand_usd is not None]
        totals.append(
            GroupTotal(
                key=key,
                name=names.get(key),
                gpu_hours=sum((line.gpu_hours for line in lines if line.kind == "instance"), _ZERO),
                usd=sum((line.usd for line in lines), _ZERO),
                ondemand_usd=sum((line.ondemand_usd or _ZERO for line in known), _ZERO) if known else None,
                savings_usd=savings(known) if known else None,
                idle_waste_usd=idle_waste(lines),
            )
        )
    return sorted(totals, key=lambda t: (-t.usd, t.key or ""))


__all__ = [
    "GROUP_BY",
    "CostLine",
    "CostSummary",
    "CostWindowInvalid",
    "FleetPrices",
    "GroupTotal",
    "ProjectSpend",
    "as_utc",
    "burn_rate",
    "commitment_line",
    "cost_lines",
    "cost_summary",
    "grouped_costs",
    "idle_waste",
    "instance_line",
    "instance_spend",
    "instances_between",
    "savings",
]
