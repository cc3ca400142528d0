"""The nightly cost report's numbers, built from cost lines and utilization figures (pure, no I/O).

One report covers one organization's calendar day in one time zone: the window is
``[local midnight, next local midnight)``, which is 23 or 25 hours long on a DST change. Every
amount is a ``Decimal`` computed from the unrounded cost lines and rounded once, at the end
(dollars to the cent, GPU-hours to 3 places, percentages to 1 place), so the same inputs always
give the same report, digit for digit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

HISTORY_DAYS = 7  # the trailing average compares the day with the 7 days before it
USD = Decimal("0.01")
GPU_HOURS = Decimal("0.001")
PCT = Decimal("0.1")
_ZERO = Decimal(0)
_HUNDRED = Decimal(100)

CAPACITY_LABELS = {"on-demand": "On-demand", "spot": "Spot", "reserved": "Reserved"}
UNASSIGNED = "Unassigned"
BREAKDOWN_TITLES = {  # dimension -> heading, in the report's order
    "project": "Spend by project",
    "cloud": "Spend by cloud",
    "region": "Spend by region",
    "capacity_type": "Spend by capacity type",
    "gpu_type": "Spend by GPU type",
}


class CostItem(Protocol):
    """What the report reads from one cost line (``broker.services.costs.CostLine`` fits)."""

    @property
    def kind(self) -> str: ...  # "instance" | "commitment"
    @property
    def project_id(self) -> str | None: ...
    @property
    def workload_id(self) -> str | None: ...
    @property
    def commitment_id(self) -> str | None: ...
    @property
    def provider(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def capacity_type(self) -> str: ...
    @property
    def accelerator(self) -> str: ...
    @property
    def gpu_hours(self) -> Decimal: ...
    @property
    def used_gpu_hours(self) -> Decimal: ...
    @property
    def usd(self) -> Decimal: ...
    @property
    def ondemand_usd(self) -> Decimal | None: ...
    @property
    def price_per_gpu_hour(self) -> Decimal: ...


@dataclass(frozen=True, slots=True)
class UtilizationFigures:
    """GPU utilization over the day, from the node agents' samples."""

    avg_gpu_util_pct: Decimal
    samples: int
    gpus: int
    idle_sample_fraction: Decimal  # 0-1: share of samples under the idle threshold


@dataclass(frozen=True, slots=True)
class ReportInputs:
    """Everything the report is computed from; the builder (``build.py``) loads it."""

    org_id: str
    org_name: str
    day: date
    timezone: str
    lines: Sequence[CostItem]
    history: Mapping[date, Sequence[CostItem]]  # the cost lines of each of the 7 days before ``day``
    utilization: UtilizationFigures | None  # None: no GPU reported a sample that day
    utilization_by_project: Mapping[str, Decimal]  # project id -> average GPU utilization %
    project_names: Mapping[str, str]
    workload_names: Mapping[str, str | None]
    commitment_names: Mapping[str, str | None]
    anomaly_pct: Decimal
    top_workloads: int


@dataclass(frozen=True, slots=True)
class Totals:
    spend_usd: Decimal  # everything the day cost: instances plus commitment charges
    instance_spend_usd: Decimal  # pay-as-you-go instances (on-demand and spot)
    commitment_charge_usd: Decimal  # commitments' charge for the day, used or not
    gpu_hours: Decimal  # GPU-hours that ran (commitment capacity counts when used)
    ondemand_equivalent_usd: Decimal  # the same usage at on-demand prices (where a price is known)
    savings_usd: Decimal  # on-demand equivalent minus what was paid for it
    unpriced_spend_usd: Decimal  # spend whose on-demand price is unknown: left out of the savings
    committed_gpu_hours: Decimal
    committed_used_gpu_hours: Decimal
    commitment_utilization_pct: Decimal | None  # None when nothing was committed
    commitment_waste_usd: Decimal  # idle committed GPU-hours x the commitment's price


@dataclass(frozen=True, slots=True)
class Comparison:
    previous_day_usd: Decimal
    change_vs_previous_day_usd: Decimal
    change_vs_previous_day_pct: Decimal | None  # None when the previous day cost nothing
    seven_day_avg_usd: Decimal
    change_vs_seven_day_avg_usd: Decimal
    change_vs_seven_day_avg_pct: Decimal | None


@dataclass(frozen=True, slots=True)
class DaySpend:
    day: date
    usd: Decimal


@dataclass(frozen=True, slots=True)
class SpendRow:
    """One group of a breakdown (one project, one cloud, ...)."""

    key: str
    label: str
    usd: Decimal
    gpu_hours: Decimal
    share_pct: Decimal | None  # of the day's spend; None when the day cost nothing
    previous_day_usd: Decimal
    change_pct: Decimal | None  # against the previous day; None when that was 0
    avg_gpu_util_pct: Decimal | None = None  # projects only


@dataclass(frozen=True, slots=True)
class Breakdown:
    dimension: str  # project | cloud | region | capacity_type | gpu_type
    title: str
    rows: tuple[SpendRow, ...]


@dataclass(frozen=True, slots=True)
class CommitmentUse:
    id: str
    name: str
    provider: str
    region: str
    gpu_type: str
    committed_gpu_hours: Decimal
    used_gpu_hours: Decimal
    utilization_pct: Decimal | None
    price_per_gpu_hour: Decimal
    charge_usd: Decimal
    waste_usd: Decimal


@dataclass(frozen=True, slots=True)
class WorkloadSpend:
    id: str
    name: str
    project: str
    usd: Decimal
    gpu_hours: Decimal
    ondemand_usd: Decimal | None  # None when no on-demand price is known for any of its instances


@dataclass(frozen=True, slots=True)
class Anomaly:
    dimension: str  # total | project | cloud | region | capacity_type | gpu_type
    key: str
    label: str
    usd: Decimal
    previous_day_usd: Decimal
    change_pct: Decimal | None  # None: nothing was spent the day before
    message: str


@dataclass(frozen=True, slots=True)
class Report:
    org_id: str
    org_name: str
    day: date
    timezone: str
    window_start: datetime  # UTC, inclusive
    window_end: datetime  # UTC, exclusive
    totals: Totals
    comparison: Comparison
    daily_spend: tuple[DaySpend, ...]  # the 7 days before, then the day itself
    breakdowns: tuple[Breakdown, ...]
    commitments: tuple[CommitmentUse, ...]
    top_workloads: tuple[WorkloadSpend, ...]
    utilization: UtilizationFigures | None
    anomalies: tuple[Anomaly, ...]
    anomaly_pct: Decimal

    @property
    def window_hours(self) -> Decimal:
        return Decimal(int((self.window_end - self.window_start).total_seconds())) / 3600

    def breakdown(self, dimension: str) -> Breakdown:
        return next(b for b in self.breakdowns if b.dimension == dimension)


def day_window(day: date, timezone: str) -> tuple[datetime, datetime]:
    """``[local midnight, next local midnight)`` of ``day`` in ``timezone``, as UTC datetimes."""
    tz = ZoneInfo(timezone)
    start = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return start, end


def build_report(inputs: ReportInputs) -> Report:
    """Compute the report for ``inputs.day`` from its cost lines and the 7 days before."""
    lines = list(inputs.lines)
    start, end = day_window(inputs.day, inputs.timezone)
    previous_day = inputs.day - timedelta(days=1)
    previous = list(inputs.history.get(previous_day, ()))
    history_days = [inputs.day - timedelta(days=n) for n in range(HISTORY_DAYS, 0, -1)]
    history_spend = [_spend(inputs.history.get(d, ())) for d in history_days]

    spend = _spend(lines)
    prev_spend = _spend(previous)
    avg7 = sum(history_spend, _ZERO) / HISTORY_DAYS
    comparison = Comparison(
        previous_day_usd=_usd(prev_spend),
        change_vs_previous_day_usd=_usd(spend - prev_spend),
        change_vs_previous_day_pct=_change_pct(spend, prev_spend),
        seven_day_avg_usd=_usd(avg7),
        change_vs_seven_day_avg_usd=_usd(spend - avg7),
        change_vs_seven_day_avg_pct=_change_pct(spend, avg7),
    )
    daily = (
        *(DaySpend(d, _usd(s)) for d, s in zip(history_days, history_spend, strict=True)),
        DaySpend(inputs.day, _usd(spend)),
    )

    breakdowns = tuple(
        _breakdown(dimension, title, key_of, lines, previous, spend, inputs)
        for dimension, title, key_of in _dimensions(inputs)
    )
    commitments = _commitments(lines, inputs)
    anomalies = _anomalies(spend, prev_spend, breakdowns, inputs.anomaly_pct)
    return Report(
        org_id=inputs.org_id,
        org_name=inputs.org_name,
        day=inputs.day,
        timezone=inputs.timezone,
        window_start=start,
        window_end=end,
        totals=_totals(lines, spend),
        comparison=comparison,
        daily_spend=daily,
        breakdowns=breakdowns,
        commitments=commitments,
        top_workloads=_top_workloads(lines, inputs),
        utilization=inputs.utilization,
        anomalies=anomalies,
        anomaly_pct=inputs.anomaly_pct,
    )


# --- the parts ----------------------------------------------------------------------------------


def _spend(lines: Iterable[CostItem]) -> Decimal:
    return sum((line.usd for line in lines), _ZERO)


def _ran(lines: Iterable[CostItem]) -> Decimal:
    """GPU-hours that ran: instance lines only (a commitment line's hours are committed, not run)."""
    return sum((line.gpu_hours for line in lines if line.kind == "instance"), _ZERO)


def _totals(lines: Sequence[CostItem], spend: Decimal) -> Totals:
    instances = [line for line in lines if line.kind == "instance"]
    commitments = [line for line in lines if line.kind == "commitment"]
    # Savings follow the cost-line contract: sum(ondemand_usd) - sum(usd) over lines with a known
    # on-demand price. Commitment lines have ondemand_usd 0, so their charge is subtracted, and the
    # instances they carry (usd 0) count at their full on-demand value.
    priced = [line for line in lines if line.ondemand_usd is not None]
    ondemand = sum((line.ondemand_usd or _ZERO for line in priced), _ZERO)
    paid_priced = _spend(priced)
    committed = sum((c.gpu_hours for c in commitments), _ZERO)
    used = sum((c.used_gpu_hours for c in commitments), _ZERO)
    waste = sum((_waste(c) for c in commitments), _ZERO)
    return Totals(
        spend_usd=_usd(spend),
        instance_spend_usd=_usd(_spend(instances)),
        commitment_charge_usd=_usd(_spend(commitments)),
        gpu_hours=_hours(_ran(lines)),
        ondemand_equivalent_usd=_usd(ondemand),
        savings_usd=_usd(ondemand - paid_priced),
        unpriced_spend_usd=_usd(spend - paid_priced),
        committed_gpu_hours=_hours(committed),
        committed_used_gpu_hours=_hours(used),
        commitment_utilization_pct=_ratio_pct(used, committed),
        commitment_waste_usd=_usd(waste),
    )


def _waste(line: CostItem) -> Decimal:
    idle = max(line.gpu_hours - line.used_gpu_hours, _ZERO)
    return idle * line.price_per_gpu_hour


KeyOf = Callable[[CostItem], tuple[str, str]]


def _dimensions(inputs: ReportInputs) -> list[tuple[str, str, KeyOf]]:
    def project(line: CostItem) -> tuple[str, str]:
        if line.project_id is None:
            return "", UNASSIGNED
        return line.project_id, inputs.project_names.get(line.project_id, line.project_id)

    keys: dict[str, KeyOf] = {
        "project": project,
        "cloud": lambda line: (line.provider, line.provider),
        "region": lambda line: (f"{line.provider}/{line.region}", f"{line.region} ({line.provider})"),
        "capacity_type": lambda line: (
            line.capacity_type,
            CAPACITY_LABELS.get(line.capacity_type, line.capacity_type),
        ),
        "gpu_type": lambda line: (line.accelerator, line.accelerator),
    }
    return [(dimension, title, keys[dimension]) for dimension, title in BREAKDOWN_TITLES.items()]


def _breakdown(
    dimension: str,
    title: str,
    key_of: KeyOf,
    lines: Sequence[CostItem],
    previous: Sequence[CostItem],
    spend: Decimal,
    inputs: ReportInputs,
) -> Breakdown:
    today: dict[str, list[CostItem]] = defaultdict(list)
    labels: dict[str, str] = {}
    for line in lines:
        key, label = key_of(line)
        today[key].append(line)
        labels[key] = label
    before: dict[str, Decimal] = defaultdict(Decimal)
    for line in previous:
        key, label = key_of(line)
        before[key] += line.usd
        labels.setdefault(key, label)
    rows = []
    # A group that cost something the day before but nothing today is listed too: a drop to zero
    # is worth seeing next to the rises.
    for key in set(today) | {k for k, v in before.items() if v != 0}:
        group = today.get(key, [])
        usd, ran = _spend(group), _ran(group)
        if usd == 0 and ran == 0 and before[key] == 0:
            continue
        util = inputs.utilization_by_project.get(key) if dimension == "project" else None
        rows.append(
            SpendRow(
                key=key,
                label=labels[key],
                usd=_usd(usd),
                gpu_hours=_hours(ran),
                share_pct=_ratio_pct(usd, spend),
                previous_day_usd=_usd(before[key]),
                change_pct=_change_pct(usd, before[key]),
                avg_gpu_util_pct=util,
            )
        )
    rows.sort(key=lambda r: (-r.usd, -r.gpu_hours, r.label, r.key))
    return Breakdown(dimension, title, tuple(rows))


def _commitments(lines: Sequence[CostItem], inputs: ReportInputs) -> tuple[CommitmentUse, ...]:
    uses = []
    for line in lines:
        if line.kind != "commitment" or line.commitment_id is None:
            continue
        cid = line.commitment_id
        uses.append(
            CommitmentUse(
                id=cid,
                name=inputs.commitment_names.get(cid) or cid,
                provider=line.provider,
                region=line.region,
                gpu_type=line.accelerator,
                committed_gpu_hours=_hours(line.gpu_hours),
                used_gpu_hours=_hours(line.used_gpu_hours),
                utilization_pct=_ratio_pct(line.used_gpu_hours, line.gpu_hours),
                price_per_gpu_hour=line.price_per_gpu_hour,
                charge_usd=_usd(line.usd),
                waste_usd=_usd(_waste(line)),
            )
        )
    uses.sort(key=lambda u: (-u.waste_usd, -u.charge_usd, u.name, u.id))
    return tuple(uses)


def _top_workloads(lines: Sequence[CostItem], inputs: ReportInputs) -> tuple[WorkloadSpend, ...]:
    groups: dict[str, list[CostItem]] = defaultdict(list)
    for line in lines:
        if line.kind == "instance" and line.workload_id is not None:
            groups[line.workload_id].append(line)
    spends = []
    for wid, group in groups.items():
        prices = [line.ondemand_usd for line in group if line.ondemand_usd is not None]
        project_id = group[0].project_id
        spends.append(
            (
                _spend(group),
                _ran(group),
                WorkloadSpend(
                    id=wid,
                    name=inputs.workload_names.get(wid) or wid,
                    project=(inputs.project_names.get(project_id, project_id) if project_id else UNASSIGNED),
                    usd=_usd(_spend(group)),
                    gpu_hours=_hours(_ran(group)),
                    ondemand_usd=_usd(sum(prices, _ZERO)) if prices else None,
                ),
            )
        )
    spends.sort(key=lambda s: (-s[0], -s[1], s[2].id))
    return tuple(s[2] for s in spends[: inputs.top_workloads])


def _anomalies(
    spend: Decimal, prev_spend: Decimal, breakdowns: Sequence[Breakdown], threshold: Decimal
) -> tuple[Anomaly, ...]:
    found = []
    total = _anomaly("total", "", "Total spend", _usd(spend), _usd(prev_spend), threshold)
    if total is not None:
        found.append(total)
    grouped = []
    for breakdown in breakdowns:
        for row in breakdown.rows:
            anomaly = _anomaly(
                breakdown.dimension, row.key, row.label, row.usd, row.previous_day_usd, threshold
            )
            if anomaly is not None:
                grouped.append(anomaly)
    grouped.sort(key=lambda a: (-(a.usd - a.previous_day_usd), a.dimension, a.key))
    return tuple(found + grouped)


def _anomaly(
    dimension: str, key: str, label: str, usd: Decimal, before: Decimal, threshold: Decimal
) -> Anomaly | None:
    if usd <= 0:
        return None
    if before == 0:
        message = f"{label}: ${usd:,} spent; nothing was spent the day before"
        return Anomaly(dimension, key, label, usd, before, None, message)
    if (usd - before) * _HUNDRED / before <= threshold:  # on the cents, not on the rounded percentage
        return None
    change = _change_pct(usd, before)
    message = f"{label}: ${usd:,} against ${before:,} the day before (up {change}%)"
    return Anomaly(dimension, key, label, usd, before, change, message)


# --- rounding and ratios ------------------------------------------------------------------------


def _usd(value: Decimal) -> Decimal:
    return value.quantize(USD, rounding=ROUND_HALF_EVEN)


def _hours(value: Decimal) -> Decimal:
    return value.quantize(GPU_HOURS, rounding=ROUND_HALF_EVEN)


def _ratio_pct(part: Decimal, whole: Decimal) -> Decimal | None:
    if whole == 0:
        return None
    return (part * _HUNDRED / whole).quantize(PCT, rounding=ROUND_HALF_EVEN)


def _change_pct(now: Decimal, before: Decimal) -> Decimal | None:
    if before == 0:
        return None
    return ((now - before) * _HUNDRED / before).quantize(PCT, rounding=ROUND_HALF_EVEN)


__all__ = [
    "BREAKDOWN_TITLES",
    "CAPACITY_LABELS",
    "HISTORY_DAYS",
    "Anomaly",
    "Breakdown",
    "CommitmentUse",
    "Comparison",
    "CostItem",
    "DaySpend",
    "Report",
    "ReportInputs",
    "SpendRow",
    "Totals",
    "UtilizationFigures",
    "WorkloadSpend",
    "build_report",
    "day_window",
]
