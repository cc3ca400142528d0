"""The placement cost model: expected dollars and hours to run a workload on a candidate (pure: no I/O).

Every figure is ``Decimal``. With ``H`` the expected run hours, ``R`` the restart overhead,
``n`` the nodes and ``p`` the instance price per hour:

* **On-demand**: ``p × n × (H + R)``; the run takes ``R + H`` hours.
* **Spot**, risk-adjusted: the same, plus the expected cost of preemptions. With ``λ`` the
  observed preemptions per instance-hour (:data:`DEFAULT_SPOT_PREEMPTIONS_PER_HOUR` when none
  was observed), a preemption costs ``L = R + lost progress`` hours, where lost progress is
  half the checkpoint interval (half the run when the workload does not checkpoint). The
  workload sees ``λ × H × g`` interruptions, ``g = n`` for a gang (any node's preemption stops
  every node) and ``g = 1`` otherwise (a node's preemption stops only that node); each costs
  ``L`` hours on the nodes it stops. So the expected extra instance-hours are ``λ·H·g·L·n`` at
  price ``p``, and the expected run takes ``R + H + λ·H·g·L`` hours. This is the first-order
  model: preemptions during the redone work are not compounded (fine while ``λ·L`` is small).
* **Commitment** capacity is already paid for, so it costs nothing at the margin.
* **Limited availability** adds :data:`LIMITED_AVAILABILITY_PENALTY` of the run cost: a launch
  there is likelier to fail and be retried elsewhere, and the penalty tips ties to offers the
  provider says are available.
* **Moving** from an ``origin`` adds ``checkpoint GB × egress $/GB`` (the restart is already in
  the run cost above). :func:`move_cost` prices a move on its own for the migration engine:
  the data plus the restart time at the destination's price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import NamedTuple, Protocol

from broker.core.workload import GangScope, Workload

_ZERO = Decimal(0)
_TWO = Decimal(2)
MICROSECONDS_PER_HOUR = 3_600_000_000

# A conservative prior for GPU spot capacity without observations: about one preemption per
# 20 instance-hours, within the range AWS's Spot Advisor and GCP's preemptible history show
# for GPU instance families (the busiest see more, quiet ones far less).
DEFAULT_SPOT_PREEMPTIONS_PER_HOUR = Decimal("0.05")

# Share of the run cost added when the provider says capacity is limited.
LIMITED_AVAILABILITY_PENALTY = Decimal("0.02")


class EgressPricer(Protocol):
    """USD per GB from one place to another (``pricing.egress.egress_per_gb`` is the default)."""

    def __call__(
        self,
        src_cloud: str,
        src_region: str,
        dst_cloud: str,
        dst_region: str,
        src_zone: str | None = None,
        dst_zone: str | None = None,
    ) -> Decimal: ...


@dataclass(frozen=True, slots=True)
class Location:
    """Where a workload's data (its checkpoint) is now."""

    cloud: str
    region: str
    zone: str | None = None


class CostTerms(NamedTuple):
    """The per-workload factors every candidate's cost is a price times (computed once).

    A named tuple rather than a frozen dataclass: it is built once per decision, on the
    fast path, and a tuple is several times quicker to build.
    """

    run_factor: Decimal  # instance-hours billed: n × (H + R)
    risk_factor: Decimal  # extra spot instance-hours per unit of preemption rate: H·g·L·n
    delay_factor: Decimal  # extra spot wall hours per unit of preemption rate: H·g·L
    events_factor: Decimal  # expected preemptions (node events) per unit of rate: H·n
    wall_hours: Decimal  # R + H
    lost_hours: Decimal  # L: restart + expected lost progress per preemption
    worst_fallback_hours: Decimal  # a spot start preempted at the worst moment, then non-spot

    @staticmethod
    def of(workload: Workload) -> CostTerms:
        hours = workload.expected_hours
        restart = workload.restart_overhead_hours
        nodes = workload.nodes
        interval = workload.checkpoint_interval_hours
        # Without checkpoints a preemption loses everything done so far: half the run on average.
        lost_worst = hours if interval is None or interval > hours else interval
        lost = restart + lost_worst / _TWO
        delay = hours * lost
        if nodes > 1 and workload.gang is not GangScope.NONE:
            delay *= nodes
        return CostTerms(
            run_factor=nodes * (hours + restart),
            risk_factor=delay * nodes,
            delay_factor=delay,
            events_factor=hours * nodes,
            wall_hours=restart + hours,
            lost_hours=lost,
            # Preempted just before a checkpoint (or, without any, just before the end): the
            # spot boot, the lost work, then a fresh non-spot start that redoes the rest.
            worst_fallback_hours=restart + lost_worst + restart + hours,
        )


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """A candidate's expected cost, by part, and how long the run is expected to take."""

    run_usd: Decimal
    preemption_usd: Decimal
    availability_usd: Decimal
    move_usd: Decimal
    total_usd: Decimal
    expected_preemptions: Decimal
    wall_hours: Decimal
    starts_at: datetime  # the decision's ``now``

    @property
    def expected_finish(self) -> datetime | None:
        """When the run is expected to be done (None: beyond the calendar)."""
        return finish_at(self.starts_at, self.wall_hours)


def offer_total(
    terms: CostTerms, price_per_hour: Decimal, rate: Decimal | None, limited: bool, move_usd: Decimal
) -> Decimal:
    """The expected total of an offer candidate (``rate`` is None unless it is spot).

    The fast search and :func:`offer_cost` both use this exact expression, so they agree to
    the last digit; the search's lower bound ``p·run + p·(λmin·risk)`` is the same sum with the
    smallest rate, which keeps it a true bound under Decimal rounding.
    """
    run = price_per_hour * terms.run_factor
    total = run if rate is None else run + price_per_hour * (rate * terms.risk_factor)
    if limited:
        total += run * LIMITED_AVAILABILITY_PENALTY
    return total + move_usd if move_usd else total


def offer_cost(
    terms: CostTerms,
    price_per_hour: Decimal,
    rate: Decimal | None,
    limited: bool,
    move_usd: Decimal,
    now: datetime,
) -> CostBreakdown:
    """The cost breakdown of an offer candidate; its total is :func:`offer_total`'s."""
    run = price_per_hour * terms.run_factor
    risk = _ZERO if rate is None else price_per_hour * (rate * terms.risk_factor)
    wall = terms.wall_hours if rate is None else spot_wall_hours(terms, rate)
    return CostBreakdown(
        run_usd=run,
        preemption_usd=risk,
        availability_usd=run * LIMITED_AVAILABILITY_PENALTY if limited else _ZERO,
        move_usd=move_usd,
        total_usd=offer_total(terms, price_per_hour, rate, limited, move_usd),
        expected_preemptions=_ZERO if rate is None else rate * terms.events_factor,
        wall_hours=wall,
        starts_at=now,
    )


def commitment_cost(terms: CostTerms, move_usd: Decimal, now: datetime) -> CostBreakdown:
    """Capacity already paid for: nothing at the margin but the move."""
    return CostBreakdown(
        run_usd=_ZERO,
        preemption_usd=_ZERO,
        availability_usd=_ZERO,
        move_usd=move_usd,
        total_usd=move_usd,
        expected_preemptions=_ZERO,
        wall_hours=terms.wall_hours,
        starts_at=now,
    )


def spot_wall_hours(terms: CostTerms, rate: Decimal) -> Decimal:
    """Expected hours to finish on spot: ``R + H`` plus the preemption reserve."""
    return terms.wall_hours + rate * terms.delay_factor


def hours_in_microseconds(hours: Decimal) -> Decimal:
    return hours * MICROSECONDS_PER_HOUR


def slack_microseconds(now: datetime, deadline: datetime) -> int:
    """Whole microseconds from ``now`` to ``deadline`` (negative once it has passed)."""
    delta = deadline - now
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def finish_at(now: datetime, hours: Decimal) -> datetime | None:
    """``now`` plus ``hours`` (to the microsecond), or None past the last representable instant."""
    try:
        return now + timedelta(microseconds=int(hours_in_microseconds(hours)))
    except OverflowError:
        return None


def egress_usd(
    checkpoint_gb: Decimal,
    origin: Location,
    cloud: str,
    region: str,
    zone: str | None,
    egress: EgressPricer,
) -> Decimal:
    """Dollars to carry a checkpoint from ``origin`` to (cloud, region, zone)."""
    if not checkpoint_gb:
        return _ZERO
    return checkpoint_gb * egress(origin.cloud, origin.region, cloud, region, origin.zone, zone)


@dataclass(frozen=True, slots=True)
class MoveCost:
    """What moving a workload costs on top of running it: its data and its restart."""

    data_usd: Decimal
    restart_usd: Decimal

    @property
    def total_usd(self) -> Decimal:
        return self.data_usd + self.restart_usd


def move_cost(
    workload: Workload,
    origin: Location,
    destination: Location,
    destination_price_per_hour: Decimal,
    egress: EgressPricer,
) -> MoveCost:
    """Price a move: checkpoint GB × egress $/GB, plus the restart hours at the destination's price.

    ``destination_price_per_hour`` is per instance (zero for capacity under a commitment).
    """
    return MoveCost(
        data_usd=egress_usd(
            workload.checkpoint_gb, origin, destination.cloud, destination.region, destination.zone, egress
        ),
        restart_usd=destination_price_per_hour * workload.nodes * workload.restart_overhead_hours,
    )


__all__ = [
    "DEFAULT_SPOT_PREEMPTIONS_PER_HOUR",
    "LIMITED_AVAILABILITY_PENALTY",
    "CostBreakdown",
    "CostTerms",
    "EgressPricer",
    "Location",
    "MoveCost",
    "commitment_cost",
    "egress_usd",
    "finish_at",
    "move_cost",
    "offer_cost",
    "offer_total",
    "slack_microseconds",
    "spot_wall_hours",
]
