"""Cost math for instances and commitments: proration, spot price changes, commitment charges and
the on-demand counterfactual (pure: no I/O).

Everything is exact. A charge is accumulated as ``price per hour × microseconds`` (a ``Decimal``
computed in a wide context, so nothing is rounded) and divided by the microseconds in an hour
only when read; splitting a window in two therefore gives exactly the same accumulated amount as
the whole window. Time is prorated to the microsecond (the resolution of the stored timestamps):
no rounding up to whole hours, no minimum charge.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Context, Decimal

MICROS_PER_HOUR = 3_600_000_000
# Wide enough that price × microseconds × GPUs sums over years never round (80 digits).
_EXACT = Context(prec=80)
_ZERO = Decimal(0)
_HOUR = Decimal(MICROS_PER_HOUR)


def micros(delta: timedelta) -> int:
    """A duration in whole microseconds; a negative duration counts as none."""
    return max(delta // timedelta(microseconds=1), 0)


def clip(
    start: datetime, end: datetime, window_start: datetime, window_end: datetime
) -> tuple[datetime, datetime] | None:
    """``[start, end)`` ∩ ``[window_start, window_end)``, or None when they do not overlap."""
    lo, hi = max(start, window_start), min(end, window_end)
    return (lo, hi) if hi > lo else None


@dataclass(frozen=True, slots=True)
class PriceChange:
    """A price per instance-hour that applies from ``at`` onward (until the next change)."""

    at: datetime
    price_per_hour: Decimal

    def __post_init__(self) -> None:
        if not isinstance(self.price_per_hour, Decimal) or not self.price_per_hour.is_finite():
            raise TypeError(f"price_per_hour must be a finite Decimal, got {self.price_per_hour!r}")
        if self.price_per_hour < 0:
            raise ValueError(f"price_per_hour must not be negative, got {self.price_per_hour}")
        if self.at.tzinfo is None:
            raise ValueError("a price change needs a timezone-aware time")


@dataclass(frozen=True, slots=True)
class Charge:
    """GPU time and money accumulated exactly: GPU-microseconds and ``Σ price/h × GPU-share × µs``.

    ``usd_micro_hours`` divided by the microseconds in an hour is the charge in USD. Charges add
    exactly, so the parts of a window sum to the whole."""

    gpu_micros: int = 0
    usd_micro_hours: Decimal = _ZERO

    @property
    def gpu_hours(self) -> Decimal:
        return Decimal(self.gpu_micros) / _HOUR

    @property
    def usd(self) -> Decimal:
        return self.usd_micro_hours / _HOUR

    def __add__(self, other: Charge) -> Charge:
        return Charge(
            self.gpu_micros + other.gpu_micros, _EXACT.add(self.usd_micro_hours, other.usd_micro_hours)
        )


def _at(change: PriceChange) -> datetime:
    return change.at


def schedule(changes: Iterable[PriceChange]) -> tuple[PriceChange, ...]:
    """Price changes ordered by time; of two at the same instant the later one in the input wins."""
    latest: dict[datetime, PriceChange] = {}
    for change in changes:
        latest[change.at] = change
    return tuple(latest[at] for at in sorted(latest))


def run_schedule(
    launched_at: datetime, launch_price: Decimal, later: Iterable[PriceChange]
) -> tuple[PriceChange, ...]:
    """The prices a run pays: its launch price from launch, then each change observed *after* launch
    from its own time. A change observed at or before launch never applies: the launch price is
    what the capacity was bought at."""
    return schedule([PriceChange(launched_at, launch_price), *(c for c in later if c.at > launched_at)])


def price_at(prices: Sequence[PriceChange], at: datetime) -> Decimal:
    """The price in force at ``at``: the latest change at or before it. Before the first change the
    first price applies (the best estimate there is; a run schedule always starts at launch)."""
    if not prices:
        raise ValueError("no prices")
    i = bisect_right(prices, at, key=_at)
    return prices[max(i - 1, 0)].price_per_hour


def integrate(
    prices: Sequence[PriceChange], start: datetime, end: datetime, *, gpus: int, share: Decimal = Decimal(1)
) -> Charge:
    """The charge of ``gpus`` GPUs over ``[start, end)`` at ``prices`` (per instance-hour, times
    ``share``: 1 for a whole instance), each price applying from its time to the next change."""
    if end <= start or not prices:
        return Charge()
    total = _ZERO
    cursor = start
    # Start at the price in force at ``start`` (the first one when ``start`` is before every change).
    i = max(bisect_right(prices, start, key=_at) - 1, 0)
    while cursor < end:
        next_at = prices[i + 1].at if i + 1 < len(prices) else end
        segment_end = min(next_at, end)
        price = _EXACT.multiply(prices[i].price_per_hour, share)
        total = _EXACT.add(total, _EXACT.multiply(price, micros(segment_end - cursor)))
        cursor = segment_end
        i += 1
    return Charge(gpus * micros(end - start), total)


@dataclass(frozen=True, slots=True)
class InstanceCost:
    """One instance inside one window: GPU-hours, USD, the on-demand counterfactual and the last
    price per instance-hour in force inside the window."""

    gpu_hours: Decimal
    usd: Decimal
    ondemand_usd: Decimal | None
    price_per_hour: Decimal
    charge: Charge
    ondemand_charge: Charge | None


def instance_cost(
    *,
    launched_at: datetime,
    ended_at: datetime | None,
    gpus: int,
    launch_price: Decimal,
    window_start: datetime,
    window_end: datetime,
    price_changes: Iterable[PriceChange] = (),
    ondemand_prices: Sequence[PriceChange] = (),
    commitment_term: tuple[datetime, datetime] | None = None,
) -> InstanceCost:
    """What one instance cost inside ``[window_start, window_end)``.

    The run is ``[launched_at, ended_at)``; a run without an end counts up to the window's end.
    ``price_changes`` are the later price observations of its offer (spot): each applies from its
    observed time onward, never before launch. ``ondemand_prices`` is the on-demand price schedule
    of the same capacity (empty: unknown, so no counterfactual).

    ``commitment_term`` is set for an instance on a commitment: the time its contract pays for
    (see :func:`commitment_term`; an empty interval when the contract never charged). Inside it
    the instance costs 0: the commitment's own charge pays for it. Outside it (the contract ended,
    or was cancelled, while the instance ran on) the cloud bills the instance at its on-demand
    price, as an expired reservation or savings plan is billed; where no on-demand price is
    known, at the price it was launched at."""
    if gpus <= 0:
        raise ValueError(f"gpus must be positive, got {gpus}")
    prices = run_schedule(launched_at, launch_price, price_changes)
    span = clip(launched_at, ended_at or window_end, window_start, window_end)
    ondemand = schedule(ondemand_prices)
    if span is None:
        zero = Charge()
        return InstanceCost(
            _ZERO, _ZERO, _ZERO if ondemand else None, launch_price, zero, zero if ondemand else None
        )
    last = span[1] - timedelta(microseconds=1)
    if commitment_term is None:
        charge = integrate(prices, *span, gpus=gpus)
        last_price = price_at(prices, last)
    else:
        billed = ondemand or prices
        covered = clip(*commitment_term, *span)
        charge = Charge(gpus * micros(covered[1] - covered[0]) if covered else 0)
        for part in _outside(span, commitment_term):
            charge += integrate(billed, *part, gpus=gpus)
        last_price = _ZERO if commitment_term[0] <= last < commitment_term[1] else price_at(billed, last)
    ondemand_charge = integrate(ondemand, *span, gpus=gpus) if ondemand else None
    return InstanceCost(
        gpu_hours=charge.gpu_hours,
        usd=charge.usd,
        ondemand_usd=ondemand_charge.usd if ondemand_charge else None,
        price_per_hour=last_price,
        charge=charge,
        ondemand_charge=ondemand_charge,
    )


Interval = tuple[datetime, datetime]


def _outside(span: Interval, term: Interval) -> list[Interval]:
    """The parts of ``span`` before and after ``term`` (none, one or two intervals; an empty
    ``term`` splits ``span`` in two at most, which together are all of it)."""
    parts = [(span[0], min(span[1], term[0])), (max(span[0], term[1]), span[1])]
    return [(lo, hi) for lo, hi in parts if hi > lo]


def commitment_term(
    starts_at: datetime, ends_at: datetime, deleted_at: datetime | None
) -> tuple[datetime, datetime] | None:
    """The time a commitment charges for: its contract ``[starts_at, ends_at)``, cut short at
    ``deleted_at`` when it was soft-deleted (None when deleted before it began)."""
    end = min(ends_at, deleted_at) if deleted_at is not None else ends_at
    return (starts_at, end) if end > starts_at else None


@dataclass(frozen=True, slots=True)
class UsedRun:
    """An instance that ran on a commitment: ``gpus`` over ``[launched_at, ended_at)`` (no end: running)."""

    launched_at: datetime
    ended_at: datetime | None
    gpus: int


@dataclass(frozen=True, slots=True)
class CommitmentCost:
    """One commitment inside one window: committed and used GPU-hours, its charge and idle waste."""

    committed_gpu_hours: Decimal
    used_gpu_hours: Decimal
    usd: Decimal
    idle_waste_usd: Decimal
    charge: Charge


def commitment_cost(
    *,
    starts_at: datetime,
    ends_at: datetime,
    deleted_at: datetime | None,
    gpu_count: int,
    price_per_gpu_hour: Decimal,
    window_start: datetime,
    window_end: datetime,
    used: Iterable[UsedRun] = (),
) -> CommitmentCost:
    """What a commitment charges inside ``[window_start, window_end)``: committed GPU-hours (its
    GPU count over its term clipped to the window) × price, used or not. Used GPU-hours are its
    instances' GPU-hours inside the same clipped term, capped at the committed hours (instances
    beyond the count are not negative idle); idle waste = (committed − used) × price."""
    term = commitment_term(starts_at, ends_at, deleted_at)
    span = clip(*term, window_start, window_end) if term else None
    if span is None:
        return CommitmentCost(_ZERO, _ZERO, _ZERO, _ZERO, Charge())
    prices = (PriceChange(span[0], price_per_gpu_hour),)
    charge = integrate(prices, *span, gpus=gpu_count, share=Decimal(gpu_count))
    used_micros = 0
    for run in used:
        overlap = clip(run.launched_at, run.ended_at or span[1], *span)
        if overlap is not None:
            used_micros += run.gpus * micros(overlap[1] - overlap[0])
    used_micros = min(used_micros, charge.gpu_micros)
    return CommitmentCost(
        committed_gpu_hours=charge.gpu_hours,
        used_gpu_hours=Decimal(used_micros) / _HOUR,
        usd=charge.usd,
        idle_waste_usd=_EXACT.multiply(price_per_gpu_hour, charge.gpu_micros - used_micros) / _HOUR,
        charge=charge,
    )


def utc_days(start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at each UTC midnight (``start`` and ``end`` must be UTC-aware)."""
    days: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        midnight = cursor.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        days.append((cursor, min(midnight, end)))
        cursor = midnight
    return days


__all__ = [
    "MICROS_PER_HOUR",
    "Charge",
    "CommitmentCost",
    "InstanceCost",
    "PriceChange",
    "UsedRun",
    "clip",
    "commitment_cost",
    "commitment_term",
    "instance_cost",
    "integrate",
    "micros",
    "price_at",
    "run_schedule",
    "schedule",
    "utc_days",
]
