"""Replays one deadline policy over one market window, tick by tick (pure: no I/O).

Semantics follow SkyNomad's simulator (``sky_spot/env.py`` ``MultiTraceEnv`` and
``sky_spot/simulate.py`` ``_simulate_one``, andylizf/skynomad-artifact) and Can't Be Late's
single-region ``TraceEnv`` (Michaelvll/skypilot-spot-strategy ``sky_spot/env.py``):

* ``data[t]`` describes tick ``[t, t+1)``. A spot instance running in tick ``t-1`` whose market
  is unavailable at ``t`` is preempted at that boundary: the work it did in ``t-1`` is kept (the
  job checkpoints continuously), the policy sees ``preempted=True`` and may relaunch at once.
* Every tick an instance is held is billed whole at that tick's price, restart overhead
  included (SkyNomad bills ``gap_seconds`` per held tick; so does Can't Be Late). The tick in
  which the job completes is billed whole as well. SkyNomad's multi-region figure sweeps read
  the cost from the snapshot taken *before* that last tick is finalised
  (``simulation_runner.py``: ``dump_history`` off), so their published multi-region costs are
  one tick lower; ``RunResult.final_tick_cost`` lets a report show that convention too.
* A launch that is not a continuation starts ``restart_overhead_hours`` (+ the transfer time
  from the checkpoint's venue) of billed time without progress. Moving to a venue other than
  the checkpoint's pays ``checkpoint_gb`` × egress $/GB and counts as a migration; the
  checkpoint then lives in the new venue (SkyNomad's ``_current_leader_region``).
* The job stops the moment its work is done; it meets the deadline iff that moment is no later
  than ``deadline_hours``. A job still unfinished when the deadline passes is stopped there and
  reported as missed (SkyNomad raises instead).

Money is accumulated as ``Decimal`` price × tick seconds and divided by 3600 once, so a cost
is exact to the last digit of the prices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from broker.core.deadline import (
    EPSILON_HOURS,
    IDLE,
    Choice,
    DeadlinePolicy,
    Job,
    Observation,
    Venue,
)
from broker.core.types import CapacityType
from broker.simulation.market import Market

_SPOT = CapacityType.SPOT
_SECONDS_PER_HOUR = Decimal(3600)


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one policy on one market window."""

    policy: str
    market: str
    cost: Decimal
    compute_cost: Decimal
    egress_cost: Decimal
    deadline_met: bool
    finish_hours: float | None
    done_hours: float
    spot_hours: float
    on_demand_hours: float
    migrations: int
    launches: int
    preemptions: int
    failed_launches: int
    choices: tuple[Choice, ...]
    final_tick_cost: Decimal = Decimal(0)


def _price(market: Market, t: int, choice: Choice) -> Decimal:
    venue = choice.venue
    assert venue is not None
    price = market.spot_price[t][venue] if choice.capacity is _SPOT else market.on_demand_price[t][venue]
    if price is None:
        raise ValueError(
            f"{market.label}: a policy chose {choice.capacity} in {market.venues[venue].name}, "
            "which does not sell it"
        )
    return price


def replay(market: Market, job: Job, policy: DeadlinePolicy) -> RunResult:
    """Run ``policy`` over ``market`` for ``job`` and account for every tick."""
    n_ticks = market.ticks_for(job.deadline_hours)
    if n_ticks > market.n_ticks:
        raise ValueError(
            f"{market.label}: the deadline needs {n_ticks} ticks, the window has {market.n_ticks}"
        )
    venues = market.venues
    n_venues = len(venues)
    tick_h = market.tick_hours
    tick_s = market.tick_seconds
    policy.reset(venues, job)

    current = IDLE
    last = IDLE
    anchor: int | None = None
    overhead_left = 0.0
    done = 0.0
    price_seconds = Decimal(0)
    egress = Decimal(0)
    spot_h = od_h = 0.0
    migrations = launches = preemptions = failed = 0
    finish: float | None = None
    final_tick = Decimal(0)
    choices: list[Choice] = []

    for t in range(n_ticks):
        now = t * tick_h
        preempted = False
        if current.capacity is _SPOT and not market.available[t][current.venue]:  # type: ignore[index]
            current, preempted, overhead_left = IDLE, True, 0.0
            preemptions += 1
        obs = Observation(
            tick=t,
            now_hours=now,
            tick_hours=tick_h,
            done_hours=done,
            current=current,
            last=last,
            preempted=preempted,
            overhead_left_hours=overhead_left,
            spot_available=market.available[t],
            spot_price=market.spot_price[t],
            on_demand_price=market.on_demand_price[t],
            egress_per_gb=market.egress_per_gb,
            transfer_hours=market.transfer_hours,
            job=job,
            venues=venues,
            checkpoint_venue=anchor,
        )
        choice = policy.decide(obs)
        if choice != current:
            if choice.venue is not None and not 0 <= choice.venue < n_venues:
                raise ValueError(f"{market.label}: policy {policy.name} chose venue {choice.venue}")
            if choice.is_idle:
                current, overhead_left = IDLE, 0.0
            elif choice.capacity is _SPOT and not market.available[t][choice.venue]:  # type: ignore[index]
                # The launch fails: whatever ran before was already given up for it.
                current, overhead_left = IDLE, 0.0
                failed += 1
            else:
                target: int = choice.venue  # type: ignore[assignment]
                _price(market, t, choice)  # reject capacity the venue does not sell, before paying
                overhead_left = job.restart_overhead_hours
                if anchor is not None and anchor != target:
                    overhead_left += market.transfer_hours[anchor][target]
                    egress += job.checkpoint_gb * market.egress_per_gb[anchor][target]
                    migrations += 1
                anchor = target
                current = choice
                launches += 1
        choices.append(current)
        last = current
        if current.is_idle:
            continue
        tick_cost = _price(market, t, current) * tick_s
        price_seconds += tick_cost
        if current.capacity is _SPOT:
            spot_h += tick_h
        else:
            od_h += tick_h
        gain = tick_h - overhead_left
        remaining = job.work_hours - done
        if gain > 0 and gain >= remaining - EPSILON_HOURS:
            finish = now + overhead_left + remaining
            done = job.work_hours
            final_tick = tick_cost / _SECONDS_PER_HOUR
            break
        if gain > 0:
            done += gain
        overhead_left = max(0.0, overhead_left - tick_h)

    compute = price_seconds / _SECONDS_PER_HOUR
    return RunResult(
        policy=policy.name,
        market=market.label,
        cost=compute + egress,
        compute_cost=compute,
        egress_cost=egress,
        deadline_met=finish is not None and finish <= job.deadline_hours + EPSILON_HOURS,
        finish_hours=finish,
        done_hours=done,
        spot_hours=spot_h,
        on_demand_hours=od_h,
        migrations=migrations,
        launches=launches,
        preemptions=preemptions,
        failed_launches=failed,
        choices=tuple(choices),
        final_tick_cost=final_tick,
    )


class Schedule:
    """A fixed plan replayed as a policy: ``plan[t]`` is the choice for tick ``t`` (then idle)."""

    def __init__(self, name: str, plan: Sequence[Choice]) -> None:
        self.name = name
        self._plan = tuple(plan)

    def reset(self, venues: tuple[Venue, ...], job: Job) -> None:
        return None

    def decide(self, obs: Observation) -> Choice:
        return self._plan[obs.tick] if obs.tick < len(self._plan) else IDLE
