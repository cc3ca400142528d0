"""gpubroker's deadline-aware spot policy: spend slack like money, across every venue (pure: no I/O).

The problem: a checkpointable job must do ``W`` hours of work in ``R`` hours. Spot capacity is
4-6× cheaper than on-demand but comes and goes; every (re)launch costs ``d`` hours of billed
overhead. Time not spent making progress is *slack*; when slack runs out the job must finish on
on-demand capacity. Uniform Progress (Can't Be Late, NSDI'24) guards one region with a progress
line; SkyNomad (arXiv 2601.06520) prices regions by lifetime and moves between them. This policy
keeps their two good ideas (a hard on-demand safety net; a cost per unit of *progress*, not per
hour) and adds one: slack itself has a price that rises as it runs out.

Every tick it:

1. **Learns** each venue's spot availability ``a`` and preemption rate ``λ`` (drops per
   available hour) from what it has observed, with exponential forgetting (half-life
   ``half_life_hours``) so a zone that just turned flaky is believed quickly, and a weak prior.
2. **Keeps the deadline** (the safety net): slack ``S = R − W − owed overhead − the restart to
   on-demand`` is the time it can still afford to lose. Idling needs ``S ≥ one tick``; a spot
   launch needs ``S ≥ its overhead``; otherwise it launches the cheapest on-demand venue
   (price × remaining hours + egress) and stays there. A running instance never loses slack,
   so a job that follows this never misses a deadline on-demand capacity could meet.
3. **Prices slack**: ``σ = (cheapest on-demand − cheapest spot) × pressure``, where pressure is
   the slack the remaining preemptions are expected to need divided by the slack left (capped
   at 1). A venue's cost per hour of progress is ``p·(1 + dλ) + σ·dλ``: flaky venues get dear
   exactly when slack is short.
4. **Waits only while it can afford to**: it takes the cheapest venues (by that cost) until
   their combined availability ``1 − Π(1 − a)`` covers the progress rate the deadline needs
   (``W / (R − d)`` × ``rate_margin``). When idle it launches the cheapest available of those;
   if none is up, it waits (free), because the accepted set already widens as slack shrinks.
5. **Moves voluntarily only when it pays twice over**: when running, it moves to a cheaper
   accepted venue only if that venue has been up for ``min_up_hours`` (no chasing a zone that
   just flickered back), the saving over the expected stay ``min(W, 1/λ)`` exceeds
   ``move_factor`` × (restart overhead at the new price + egress + the slack it burns, priced
   at σ), and the slack after the move still leaves a tick. That hysteresis is what stops it
   flapping between two zones.

Floats are used inside the heuristic (rates and ratios); the decision it returns is the only
output, and the replay engine bills it in ``Decimal``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from broker.core.deadline import IDLE, Choice, Job, Observation, Venue
from broker.core.types import CapacityType

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class SlackPolicyTuning:
    """The policy's knobs. Defaults were chosen from first principles, not fitted to a trace set:

    * ``rate_margin`` 1.1: plan for 10% less spot availability than observed.
    * ``move_factor`` 2: a voluntary move must save twice what it costs.
    * ``half_life_hours`` 6: availability changes over hours (GCP H100 outages last 0.2-100 h).
    * ``min_up_hours`` 0.5: a zone must stay up half an hour before we move to it.
    * ``prior_availability`` 0.5 with ``prior_weight_hours`` 0.67: know-nothing start, quickly
      overridden by observation.
    """

    rate_margin: float = 1.1
    move_factor: float = 2.0
    half_life_hours: float = 6.0
    min_up_hours: float = 0.5
    prior_availability: float = 0.5
    prior_weight_hours: float = 2.0 / 3.0
    prior_drops: float = 0.5
    prior_up_hours: float = 2.0

    def __post_init__(self) -> None:
        if self.rate_margin <= 0 or self.move_factor <= 0 or self.half_life_hours <= 0:
            raise ValueError("rate_margin, move_factor and half_life_hours must be positive")
        if not 0 < self.prior_availability < 1:
            raise ValueError("prior_availability must be strictly between 0 and 1")


class SlackPricedPolicy:
    """The broker's own deadline policy (see the module docstring); one instance per job run."""

    name = "gpubroker"

    def __init__(self, tuning: SlackPolicyTuning | None = None) -> None:
        self.tuning = tuning or SlackPolicyTuning()
        self._venues: tuple[Venue, ...] = ()
        self._job: Job | None = None
        self._seen: list[float] = []  # decayed hours observed
        self._up: list[float] = []  # decayed hours available
        self._drops: list[float] = []  # decayed available → unavailable transitions
        self._was_up: list[bool | None] = []
        self._up_streak: list[float] = []  # hours continuously available
        self._last_tick = -1

    def reset(self, venues: tuple[Venue, ...], job: Job) -> None:
        n = len(venues)
        self._venues, self._job = venues, job
        self._seen, self._up, self._drops = [0.0] * n, [0.0] * n, [0.0] * n
        self._was_up = [None] * n
        self._up_streak = [0.0] * n
        self._last_tick = -1

    # --- learning ---------------------------------------------------------------------------

    def _observe(self, obs: Observation) -> None:
        if obs.tick == self._last_tick:  # asked twice for the same tick: learn once
            return
        self._last_tick = obs.tick
        dt = obs.tick_hours
        keep = 0.5 ** (dt / self.tuning.half_life_hours)
        for i, up in enumerate(obs.spot_available):
            self._seen[i] = self._seen[i] * keep + dt
            self._up[i] = self._up[i] * keep + (dt if up else 0.0)
            self._drops[i] *= keep
            if self._was_up[i] and not up:
                self._drops[i] += 1.0
            self._was_up[i] = up
            self._up_streak[i] = self._up_streak[i] + dt if up else 0.0

    def _availability(self, i: int) -> float:
        t = self.tuning
        prior_up = t.prior_availability * t.prior_weight_hours
        return (self._up[i] + prior_up) / (self._seen[i] + t.prior_weight_hours)

    def _preemptions_per_hour(self, i: int) -> float:
        t = self.tuning
        return (self._drops[i] + t.prior_drops) / (self._up[i] + t.prior_up_hours)

    # --- deciding ---------------------------------------------------------------------------

    def decide(self, obs: Observation) -> Choice:
        self._observe(obs)
        job = obs.job
        d = job.restart_overhead_hours
        work_left = max(0.0, job.work_hours - obs.done_hours)
        time_left = job.deadline_hours - obs.now_hours
        current = obs.current
        if current.capacity is CapacityType.ON_DEMAND:
            return current  # on-demand is the end of the line: it never loses slack
        here = current.venue if current.venue is not None else obs.last.venue
        od_venue, od_restart = self._fallback(obs, here, work_left)
        owed = obs.overhead_left_hours if not current.is_idle else 0.0
        # Slack left after reserving the restart onto on-demand.
        slack = time_left - work_left - owed - od_restart
        fallback = Choice.on_demand(od_venue) if od_venue is not None else current

        if not current.is_idle:
            if slack < -_EPS:  # cannot happen when this policy drove the run; be safe anyway
                return fallback
            return self._maybe_move(obs, current.venue, od_venue, slack, work_left, time_left)  # type: ignore[arg-type]
        accepted, _sigma, eff = self._accepted(obs, slack, work_left, time_left)
        cheap_od = self._cheap_on_demand(obs, od_venue, eff, accepted)
        if cheap_od is not None:
            return cheap_od
        for i in accepted:  # cheapest first
            launch = d + (obs.transfer_hours[here][i] if here is not None else 0.0)
            if obs.spot_available[i] and slack - launch >= -_EPS:
                return Choice.spot(i)
        # Waiting a tick is free only while the slack covers it.
        return IDLE if slack >= obs.tick_hours - _EPS else fallback

    @staticmethod
    def _cheap_on_demand(
        obs: Observation, od_venue: int | None, eff: list[float], accepted: list[int]
    ) -> Choice | None:
        """On-demand capacity that undercuts every usable spot market (another cloud's, say).

        On-demand never preempts, so when its price beats the cost of progress on the best spot
        venue the policy would use, it is simply the cheaper place to run, not a fallback.
        """
        if od_venue is None:
            return None
        price = obs.on_demand_price[od_venue]
        # ``accepted`` is empty only when no venue sells spot at all.
        if price is not None and (not accepted or float(price) < min(eff[i] for i in accepted)):
            return Choice.on_demand(od_venue)
        return None

    def _fallback(self, obs: Observation, here: int | None, work_left: float) -> tuple[int | None, float]:
        """The on-demand venue to finish on, and the restart it would cost from ``here``."""
        d = obs.job.restart_overhead_hours
        best: tuple[Decimal, int] | None = None
        for i, price in enumerate(obs.on_demand_price):
            if price is None:
                continue
            extra = obs.transfer_hours[here][i] if here is not None else 0.0
            egress = obs.egress_per_gb[here][i] * obs.job.checkpoint_gb if here is not None else Decimal(0)
            total = price * Decimal(repr(work_left + d + extra)) + egress
            if best is None or total < best[0]:
                best = (total, i)
        if best is None:
            return None, d
        i = best[1]
        return i, d + (obs.transfer_hours[here][i] if here is not None else 0.0)

    def _accepted(
        self, obs: Observation, slack: float, work_left: float, time_left: float
    ) -> tuple[list[int], float, list[float]]:
        """Spot venues worth using now, cheapest first; the slack price σ; per-venue cost of progress."""
        d = obs.job.restart_overhead_hours
        spot = [i for i, p in enumerate(obs.spot_price) if p is not None]
        if not spot:
            return [], 0.0, []
        n = len(obs.venues)
        rate = [self._preemptions_per_hour(i) for i in range(n)]
        base = [0.0] * n
        for i in spot:
            base[i] = float(obs.spot_price[i]) * (1.0 + d * rate[i])  # type: ignore[arg-type]
        od_prices = [float(p) for p in obs.on_demand_price if p is not None]
        cheapest_base = min(base[i] for i in spot)
        expected_restarts = min(work_left * rate[i] for i in spot)
        pressure = min(1.0, (d * (1.0 + expected_restarts) + obs.tick_hours) / max(slack, _EPS))
        sigma = max(0.0, (min(od_prices) - cheapest_base) * pressure) if od_prices else 0.0
        eff = [base[i] + sigma * d * rate[i] for i in range(n)]
        order = sorted(spot, key=lambda i: (eff[i], i))
        need = work_left / max(time_left - d, _EPS) * self.tuning.rate_margin
        accepted: list[int] = []
        all_down = 1.0
        for i in order:
            accepted.append(i)
            all_down *= 1.0 - self._availability(i)
            if 1.0 - all_down >= need:
                break
        return accepted, sigma, eff

    def _maybe_move(
        self,
        obs: Observation,
        here: int,
        od_venue: int | None,
        slack: float,
        work_left: float,
        time_left: float,
    ) -> Choice:
        current = obs.current
        if obs.overhead_left_hours > _EPS:
            return current  # let the launch finish before second-guessing it
        accepted, sigma, eff = self._accepted(obs, slack, work_left, time_left)
        if od_venue is not None and eff and self._cheap_on_demand(obs, od_venue, eff, accepted):
            od_price = float(obs.on_demand_price[od_venue])  # type: ignore[arg-type]
            launch = obs.job.restart_overhead_hours + obs.transfer_hours[here][od_venue]
            move_cost = launch * od_price + float(obs.egress_per_gb[here][od_venue] * obs.job.checkpoint_gb)
            if (eff[here] - od_price) * work_left > self.tuning.move_factor * move_cost and slack >= launch:
                return Choice.on_demand(od_venue)
        min_up = self.tuning.min_up_hours - _EPS
        better = [
            i for i in accepted if i != here and obs.spot_available[i] and self._up_streak[i] >= min_up
        ]
        if not better:
            return current
        target = min(better, key=lambda i: (eff[i], i))
        d = obs.job.restart_overhead_hours
        launch = d + obs.transfer_hours[here][target]
        if slack - launch < obs.tick_hours - _EPS:
            return current
        new_price = float(obs.spot_price[target])  # type: ignore[arg-type]
        old_price = float(obs.spot_price[here]) if obs.spot_price[here] is not None else new_price  # type: ignore[arg-type]
        rate_new = self._preemptions_per_hour(target)
        rate_old = self._preemptions_per_hour(here)
        move_cost = (
            launch * new_price
            + float(obs.egress_per_gb[here][target] * obs.job.checkpoint_gb)
            + sigma * launch
        )
        stay_hours = min(work_left, 1.0 / max(rate_new, _EPS))
        saving = (old_price * (1 + d * rate_old) - new_price * (1 + d * rate_new)) * stay_hours
        if saving > self.tuning.move_factor * move_cost:
            return Choice.spot(target)
        return current


__all__ = ["SlackPolicyTuning", "SlackPricedPolicy"]
