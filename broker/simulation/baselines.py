"""Baseline deadline policies: on-demand only, greedy spot, Uniform Progress, UP(S) (pure: no I/O).

Each is written from the rules of the reference simulators, not their code:

* ``OnDemandOnly`` — on-demand in the venue with the cheapest on-demand price, start to end.
* ``GreedySpot`` — Can't Be Late's greedy/"strawman" policy (Michaelvll/skypilot-spot-strategy
  ``sky_spot/strategies/strawman.py``): spot whenever it is available, idle otherwise, and
  on-demand once the remaining work plus one restart no longer fits in the whole ticks left
  (a running spot instance is kept until it is preempted).
* ``UniformProgress`` — Can't Be Late's Uniform Progress, single region, as SkyNomad runs its
  ``rc_cr_threshold`` baseline (``sky_spot/strategies/strategy.py`` ``Strategy.step`` with the
  rules of ``rc_cr_threshold``; the same rules appear in
  ``sky_spot/strategies/multi_region_rc_cr_threshold.py`` ``_compute_request_type``): behind
  the uniform-progress line ``done < t·C/D`` it must run (spot, else on-demand); ahead of it,
  spot if available, else wait; once on on-demand it stays there until it is ``2d`` ahead of the
  line (hysteresis); near the deadline it switches to on-demand for good. Followed by the
  ``Strategy`` base class's "strong guarantee" and its "spot requested but unavailable" check.
* ``UniformProgressFailover`` — UP(S), SkyNomad's ``multi_region_rc_cr_threshold_eager_failover``:
  the UP decision, spot tried in venues ordered by spot price with the cloud region of the last
  active venue moved to the end (SkyPilot's EAGER_NEXT_REGION), on-demand in the venue it was
  in; under SkyNomad's environment safety net (``MultiTraceEnv.maybe_trigger_safety_net``):
  once the boundary is reached it latches on-demand (in the running venue, or the venue
  cheapest to finish in, egress included) and ignores the policy until the end.

The reference code keeps time in float seconds, where every quantity here is a whole number of
seconds and its comparisons are exact; the policies convert the observation's hours back to
seconds (rounded to microseconds) so that ties fall the same way.
"""

from __future__ import annotations

import math
from decimal import Decimal

from broker.core.deadline import IDLE, Choice, Job, Observation, Venue
from broker.core.types import CapacityType

SPOT = CapacityType.SPOT
ON_DEMAND = CapacityType.ON_DEMAND
_TINY_SECONDS = 1e-3  # the reference simulators' "is it zero" threshold on seconds


def _s(hours: float) -> float:
    return round(hours * 3600.0, 6)


class _Clock:
    """The reference simulators' per-tick quantities, in seconds."""

    __slots__ = ("deadline", "done", "elapsed", "gap", "overhead", "overhead_left", "remaining_task", "task")

    def __init__(self, obs: Observation, statics: tuple[float, float, float, float]) -> None:
        self.gap, self.deadline, self.task, self.overhead = statics
        self.elapsed = obs.tick * self.gap
        self.done = _s(obs.done_hours)
        self.overhead_left = _s(obs.overhead_left_hours) if obs.overhead_left_hours else 0.0
        self.remaining_task = self.task - self.done

    @staticmethod
    def statics(obs: Observation) -> tuple[float, float, float, float]:
        """The per-run constants (tick, deadline, work, restart overhead), computed once per run.

        Left unrounded, as the references compute them (``hours * 3600``): a job of 45.07 h is
        162260.869... s there too, and UP's comparisons against it must fall the same way.
        """
        job = obs.job
        return (
            _s(obs.tick_hours),
            job.deadline_hours * 3600,
            job.work_hours * 3600,
            job.restart_overhead_hours * 3600,
        )

    @property
    def remaining_time(self) -> float:
        """Whole ticks left before the deadline, in seconds (``floor`` as in the references)."""
        return math.floor((self.deadline - self.elapsed) / self.gap) * self.gap

    def needed(self, restarts: int) -> float:
        """Whole ticks to finish with ``restarts`` restart overheads, in seconds."""
        return math.ceil((self.remaining_task + restarts * self.overhead) / self.gap) * self.gap

    @property
    def behind(self) -> float:
        """< 0 when progress lags the uniform-progress line ``t · C / D`` (UP's ``_condition``)."""
        return self.done - self.elapsed * self.task / self.deadline

    @property
    def ahead_by_2d(self) -> float:
        """< 0 once progress leads the line by two restarts (UP's ``_condition2``)."""
        return (self.elapsed + 2 * self.overhead) * self.task / self.deadline - self.done


def _capacity_in(choice: Choice, venue: int) -> CapacityType | None:
    return choice.capacity if choice.venue == venue else None


class OnDemandOnly:
    """On-demand from start to finish in the venue with the cheapest on-demand price."""

    name = "on_demand"

    def __init__(self) -> None:
        self._venue: int | None = None

    def reset(self, venues: tuple[Venue, ...], job: Job) -> None:
        self._venue = None

    def decide(self, obs: Observation) -> Choice:
        if self._venue is None:
            priced = [(p, i) for i, p in enumerate(obs.on_demand_price) if p is not None]
            if not priced:
                raise ValueError("no venue sells on-demand capacity")
            self._venue = min(priced)[1]
        return Choice.on_demand(self._venue)


def _single_region_step(obs: Observation, clock: _Clock, venue: int, proposed: CapacityType | None) -> Choice:
    """``Strategy.step``'s checks after the heuristic: the strong guarantee, then spot availability."""
    has_spot = obs.spot_available[venue]
    last = _capacity_in(obs.last, venue)
    critical = clock.remaining_task > _TINY_SECONDS and clock.needed(1) >= clock.remaining_time
    request = proposed
    if critical:
        # Keep a warm spot instance (its preemption would still leave time for on-demand).
        request = SPOT if last is SPOT and clock.overhead_left < _TINY_SECONDS else ON_DEMAND
    if request is SPOT and not has_spot:
        request = ON_DEMAND if critical else None
    return IDLE if request is None else Choice(venue, request)


class GreedySpot:
    """Spot whenever available, idle otherwise, on-demand when the deadline forces it."""

    name = "greedy_spot"

    def __init__(self, venue: int = 0) -> None:
        self.venue = venue
        self._statics: tuple[float, float, float, float] | None = None

    def reset(self, venues: tuple[Venue, ...], job: Job) -> None:
        self._statics = None

    def decide(self, obs: Observation) -> Choice:
        if self._statics is None:
            self._statics = _Clock.statics(obs)
        clock = _Clock(obs, self._statics)
        if clock.remaining_task <= _TINY_SECONDS:
            return IDLE
        v = self.venue
        has_spot = obs.spot_available[v]
        current = _capacity_in(obs.current, v)
        request: CapacityType | None = SPOT if has_spot else None
        if clock.needed(1) >= clock.remaining_time:
            request = SPOT if current is SPOT else ON_DEMAND
            if clock.overhead == 0 and has_spot:
                request = SPOT
        return _single_region_step(obs, clock, v, request)


def _uniform_progress(
    clock: _Clock, current: CapacityType | None, has_spot: bool, *, strict_2d: bool, hysteresis: bool
) -> tuple[CapacityType | None, bool]:
    """UP's request for one region, and whether it is a hysteresis exit from on-demand.

    ``hysteresis`` enables SkyNomad's multi-region addition: leave on-demand for spot whenever
    progress is ``2d`` ahead of the line, even when the deadline rules asked for on-demand.
    """
    request: CapacityType | None = SPOT if has_spot else None
    if clock.behind < 0:
        request = SPOT if has_spot else ON_DEMAND
    if current is ON_DEMAND and (not has_spot or clock.ahead_by_2d >= 0):
        request = ON_DEMAND
    remaining_time = clock.remaining_time
    with_2d = clock.needed(2)
    if (with_2d > remaining_time if strict_2d else with_2d >= remaining_time) and current is not SPOT:
        request = ON_DEMAND
    if clock.needed(1) >= remaining_time:
        request = SPOT if current is SPOT and clock.overhead_left < _TINY_SECONDS else ON_DEMAND
        if clock.overhead == 0 and has_spot:
            request = SPOT
    hysteresis_exit = False
    if hysteresis and current is ON_DEMAND and has_spot and request is ON_DEMAND and clock.ahead_by_2d < 0:
        request, hysteresis_exit = SPOT, True
    return request, hysteresis_exit


class UniformProgress:
    """Can't Be Late's Uniform Progress in one venue (SkyNomad's ``rc_cr_threshold`` baseline).

    ``strict_2d`` picks how the "two restarts of slack left" rule compares (``>=`` in Can't Be
    Late's single-region code, ``>`` in SkyNomad's multi-region port) and ``hysteresis`` adds
    SkyNomad's multi-region early exit from on-demand; both default to Can't Be Late's rules.
    """

    name = "uniform_progress"

    def __init__(self, venue: int = 0, *, strict_2d: bool = False, hysteresis: bool = False) -> None:
        self.venue = venue
        self.strict_2d = strict_2d
        self.hysteresis = hysteresis
        self._statics: tuple[float, float, float, float] | None = None

    def reset(self, venues: tuple[Venue, ...], job: Job) -> None:
        self._statics = None

    def decide(self, obs: Observation) -> Choice:
        if self._statics is None:
            self._statics = _Clock.statics(obs)
        clock = _Clock(obs, self._statics)
        if clock.remaining_task <= _TINY_SECONDS:
            return IDLE
        v = self.venue
        has_spot = obs.spot_available[v]
        current = _capacity_in(obs.current, v)
        request, _ = _uniform_progress(
            clock, current, has_spot, strict_2d=self.strict_2d, hysteresis=self.hysteresis
        )
        return _single_region_step(obs, clock, v, request)


class UniformProgressFailover:
    """UP(S): Uniform Progress over many venues with eager failover, under SkyNomad's safety net."""

    name = "up_s"

    def __init__(self) -> None:
        self._latched = False
        self._last_active: int | None = None
        self._statics: tuple[float, float, float, float] | None = None

    def reset(self, venues: tuple[Venue, ...], job: Job) -> None:
        self._latched = False
        self._last_active = None
        self._statics = None

    def decide(self, obs: Observation) -> Choice:
        if self._statics is None:
            self._statics = _Clock.statics(obs)
        clock = _Clock(obs, self._statics)
        if clock.remaining_task <= _TINY_SECONDS:
            return IDLE
        net = self._safety_net(obs, clock)
        if net is not None:
            return net
        return self._step(obs, clock)

    def _safety_net(self, obs: Observation, clock: _Clock) -> Choice | None:
        if self._latched:
            if not obs.current.is_idle:
                return obs.current
            return Choice.on_demand(self._cheapest_to_finish(obs, clock))
        if clock.needed(1) < clock.remaining_time:
            return None
        self._latched = True
        if obs.current.venue is not None:
            return Choice.on_demand(obs.current.venue)
        return Choice.on_demand(self._cheapest_to_finish(obs, clock))

    @staticmethod
    def _cheapest_to_finish(obs: Observation, clock: _Clock) -> int:
        """The venue where on-demand for the remaining work plus the move is cheapest."""
        source = obs.checkpoint_venue
        best, best_cost = 0, None
        hours = Decimal(str(clock.remaining_task)) / 3600
        for i, price in enumerate(obs.on_demand_price):
            if price is None:
                continue
            cost = price * hours
            if source is not None and source != i:
                cost += obs.job.checkpoint_gb * obs.egress_per_gb[source][i]
            if best_cost is None or cost < best_cost:
                best, best_cost = i, cost
        return best

    def _spot_order(self, obs: Observation) -> list[int]:
        priced = [i for i, p in enumerate(obs.spot_price) if p is not None]
        by_price = sorted(priced, key=lambda i: obs.spot_price[i])  # type: ignore[arg-type,return-value]
        if self._last_active is None:
            return by_price
        last = obs.venues[self._last_active]
        place = (last.cloud, last.region)
        same_region = [i for i in by_price if (obs.venues[i].cloud, obs.venues[i].region) == place]
        return [i for i in by_price if i not in same_region] + same_region

    def _step(self, obs: Observation, clock: _Clock) -> Choice:
        current = obs.current
        if current.venue is not None:
            self._last_active = current.venue
        request, hysteresis_exit = _uniform_progress(
            clock, current.capacity, True, strict_2d=True, hysteresis=True
        )
        if current.venue is not None and request is current.capacity:
            return current
        if request is None:
            return IDLE
        fallback = current.venue if current.venue is not None else obs.checkpoint_venue
        if request is ON_DEMAND:
            return Choice.on_demand(fallback if fallback is not None else 0)
        for i in self._spot_order(obs):
            if obs.spot_available[i]:
                return Choice.spot(i)
        if hysteresis_exit:
            return IDLE
        # No spot anywhere: ask UP again as if idle and without spot.
        request, _ = _uniform_progress(clock, None, False, strict_2d=True, hysteresis=True)
        if request is ON_DEMAND:
            return Choice.on_demand(fallback if fallback is not None else 0)
        return IDLE
