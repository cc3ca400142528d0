"""The tick-level interface between a deadline-aware spot policy and a replay engine (pure: no I/O).

A batch job (``Job``) must finish ``work_hours`` of work before ``deadline_hours`` after it
starts. Time advances in ticks of ``tick_hours``. At the start of every tick the engine hands
the policy an ``Observation`` (what it may know *now*: progress, what is running, which spot
markets would accept a launch this tick, this tick's prices) and the policy answers with a
``Choice``: run spot or on-demand capacity in one ``Venue``, or stay idle. The engine does the
bookkeeping (billing, restart overhead, preemption, egress); the policy only decides.

Semantics the engine guarantees (the simulator in ``broker.simulation`` implements them; they
follow SkyNomad's ``MultiTraceEnv`` in ``sky_spot/env.py`` and Can't Be Late's ``TraceEnv``):

* Keeping the same ``Choice`` as the running one costs nothing extra and makes progress.
* Any other non-idle ``Choice`` is a (re)launch: it starts ``job.restart_overhead_hours`` of
  overhead (plus the cross-venue transfer time, if any) during which the instance is billed
  but makes no progress, and moving to another venue pays ``checkpoint_gb`` × egress $/GB.
* Asking for spot in a venue whose ``spot_available`` is False gets nothing for that tick
  (no charge, no progress); the policy is expected to look before it leaps.
* A running spot instance whose market turns unavailable is preempted at the tick boundary:
  the next ``Observation`` has ``preempted=True`` and ``current == IDLE``.

Time is float hours (ticks, progress); money is ``Decimal`` USD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, runtime_checkable

from broker.core.checks import check_amount
from broker.core.types import CapacityType


@dataclass(frozen=True, slots=True)
class Venue:
    """Somewhere the job can run: one zone of one cloud, selling spot and/or on-demand capacity."""

    name: str
    cloud: str
    region: str
    zone: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A checkpointable batch job with a hard deadline.

    ``work_hours`` of compute must be done within ``deadline_hours`` of the start. Every
    (re)launch costs ``restart_overhead_hours`` of billed time with no progress; moving between
    venues also ships ``checkpoint_gb`` of checkpoint (priced by the egress matrix).
    """

    work_hours: float
    deadline_hours: float
    restart_overhead_hours: float
    checkpoint_gb: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if not self.work_hours > 0:
            raise ValueError(f"work_hours must be positive, got {self.work_hours}")
        if not self.deadline_hours >= self.work_hours:
            raise ValueError(
                f"deadline_hours ({self.deadline_hours}) must be at least work_hours ({self.work_hours})"
            )
        if not self.restart_overhead_hours >= 0:
            raise ValueError(
                f"restart_overhead_hours must be non-negative, got {self.restart_overhead_hours}"
            )
        check_amount("checkpoint_gb", self.checkpoint_gb)


@dataclass(frozen=True, slots=True)
class Choice:
    """What to run for the coming tick: ``capacity`` in venue number ``venue``, or nothing (``IDLE``)."""

    venue: int | None
    capacity: CapacityType | None

    def __post_init__(self) -> None:
        if (self.venue is None) != (self.capacity is None):
            raise ValueError("a Choice names both a venue and a capacity type, or neither (IDLE)")
        if self.capacity is CapacityType.RESERVED:
            raise ValueError("the deadline simulator buys spot or on-demand capacity only")

    @property
    def is_idle(self) -> bool:
        return self.venue is None

    @classmethod
    def spot(cls, venue: int) -> Choice:
        return cls(venue, CapacityType.SPOT)

    @classmethod
    def on_demand(cls, venue: int) -> Choice:
        return cls(venue, CapacityType.ON_DEMAND)


IDLE = Choice(None, None)
"""Run nothing this tick (no cost, no progress)."""


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything an online policy may know at the start of tick ``tick``.

    Per-venue sequences are indexed like ``venues``. ``spot_available[i]`` is what a spot
    launch attempt in venue ``i`` would get this tick. ``spot_price[i]`` / ``on_demand_price[i]``
    are this tick's USD per instance-hour, ``None`` where the venue does not sell that capacity.
    ``egress_per_gb[i][j]`` is USD per GB to move the checkpoint from venue ``i`` to ``j`` and
    ``transfer_hours[i][j]`` the extra launch time that move adds (both zero on the diagonal).

    ``current`` is what is running now (``IDLE`` after a preemption); ``last`` is what ran
    during the previous tick, so after a preemption ``last.venue`` says where it happened.
    ``overhead_left_hours`` is restart overhead still to pay before ``current`` makes progress.
    ``checkpoint_venue`` is where the latest checkpoint lives (the venue of the last instance
    launched; ``None`` before the first launch): launching anywhere else pays egress from it.
    """

    tick: int
    now_hours: float
    tick_hours: float
    done_hours: float
    current: Choice
    last: Choice
    preempted: bool
    overhead_left_hours: float
    spot_available: tuple[bool, ...]
    spot_price: tuple[Decimal | None, ...]
    on_demand_price: tuple[Decimal | None, ...]
    egress_per_gb: tuple[tuple[Decimal, ...], ...]
    transfer_hours: tuple[tuple[float, ...], ...]
    job: Job
    venues: tuple[Venue, ...]
    checkpoint_venue: int | None = None


@runtime_checkable
class DeadlinePolicy(Protocol):
    """An online policy: told the venues and the job once, then asked for a ``Choice`` every tick."""

    name: str

    def reset(self, venues: tuple[Venue, ...], job: Job) -> None:
        """Forget any state from a previous run; called before the first tick of every run."""
        ...

    def decide(self, obs: Observation) -> Choice:
        """The capacity to run for the tick that starts at ``obs.now_hours``."""
        ...


# Float comparisons on accumulated hours: a tick of 1/6 h summed 300 times drifts by ~1e-13.
EPSILON_HOURS = 1e-9


def remaining_work_hours(obs: Observation) -> float:
    """Hours of work still to do (never negative)."""
    return max(0.0, obs.job.work_hours - obs.done_hours)


def remaining_time_hours(obs: Observation) -> float:
    """Hours left until the deadline (negative once it has passed)."""
    return obs.job.deadline_hours - obs.now_hours


def is_done(obs: Observation) -> bool:
    return remaining_work_hours(obs) <= EPSILON_HOURS


def slack_hours(obs: Observation) -> float:
    """Spare time if the job ran from now to the end without a hitch.

    Remaining time minus remaining work minus the overhead still owed by the running instance
    (or a full restart overhead when nothing is running, because getting going again costs one).
    A policy that lets slack fall below zero can no longer meet the deadline.
    """
    owed = obs.overhead_left_hours if not obs.current.is_idle else obs.job.restart_overhead_hours
    return remaining_time_hours(obs) - remaining_work_hours(obs) - owed


def ticks_left(obs: Observation) -> int:
    """Whole ticks that still end by the deadline (SkyNomad's ``floor(remaining / gap)``)."""
    return math.floor(remaining_time_hours(obs) / obs.tick_hours + EPSILON_HOURS)


def ticks_to_finish(obs: Observation, *, restarts: int = 1) -> int:
    """Whole ticks needed to finish from a cold start: remaining work plus ``restarts`` overheads."""
    if is_done(obs):
        return 0
    need = remaining_work_hours(obs) + restarts * obs.job.restart_overhead_hours
    return math.ceil(need / obs.tick_hours - EPSILON_HOURS)


def must_fall_back(obs: Observation) -> bool:
    """True once a fresh on-demand launch started now would only just finish by the deadline.

    This is the safety net SkyNomad's simulator applies to every online policy
    (``MultiTraceEnv.maybe_trigger_safety_net`` in ``sky_spot/env.py``): when the whole ticks
    needed for the remaining work plus one restart overhead reach the whole ticks left, switch to
    on-demand and stay there. Waiting one more tick could miss the deadline.
    """
    return not is_done(obs) and ticks_to_finish(obs) >= ticks_left(obs)


def price_of(obs: Observation, choice: Choice) -> Decimal | None:
    """This tick's hourly price of ``choice`` (``Decimal(0)`` for IDLE, ``None`` if not sold there)."""
    if choice.venue is None:
        return Decimal(0)
    if choice.capacity is CapacityType.SPOT:
        return obs.spot_price[choice.venue]
    return obs.on_demand_price[choice.venue]


def cheapest_on_demand(obs: Observation, *, venues: tuple[int, ...] | None = None) -> int | None:
    """Index of the venue with the lowest on-demand price this tick (ties: lowest index)."""
    best: int | None = None
    for i in venues if venues is not None else range(len(obs.venues)):
        price = obs.on_demand_price[i]
        if price is not None and (best is None or price < obs.on_demand_price[best]):  # type: ignore[operator]
            best = i
    return best


def cheapest_available_spot(obs: Observation, *, venues: tuple[int, ...] | None = None) -> int | None:
    """Index of the venue with the lowest spot price among those accepting a launch (ties: lowest index)."""
    best: int | None = None
    for i in venues if venues is not None else range(len(obs.venues)):
        price = obs.spot_price[i]
        if price is None or not obs.spot_available[i]:
            continue
        if best is None or price < obs.spot_price[best]:  # type: ignore[operator]
            best = i
    return best
