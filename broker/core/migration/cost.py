"""What moving a workload costs and saves, and whether its deadline is at risk (pure: no I/O).

Notation (Decimal throughout; hours are Decimal hours, money is USD)::

    n      nodes (instances) of the workload
    P_cur  marginal price per instance-hour where it runs now (0 under a commitment)
    P_new  marginal price per instance-hour of the replacement (0 under a free commitment)
    R      remaining expected hours = max(0, expected_hours − progress_hours)
    O      restart_overhead_hours: boot, image pull, checkpoint load on the replacement
    G      checkpoint_gb (what crosses the boundary, once for the whole workload)
    E      egress_per_gb from the current location to the replacement's
    W      overlap hours: both sets of instances are paid while the old ones reach a checkpoint
    L      lost progress hours: work done since the last checkpoint, done again after the move

    saving     = (P_cur − P_new) × n × R
    move cost  = G × E                      egress of the checkpoint
               + (O + L) × P_new × n        restart and redone work on the replacement
               + W × P_cur × n              overlap
    margin     = move cost × min_saving_fraction + min_saving_usd
    a voluntary move happens only when  saving > move cost + margin  (so never when saving ≤ move cost)

Why those terms (the model): staying costs ``P_cur·n·R``. Moving launches the replacement
first, keeps the old instances working until their checkpoint (``W`` hours), cuts over, and the
replacement then pays the restart, redoes the lost work and finishes the rest:
``P_cur·n·W + P_new·n·(W + O + L + R − W)``. The difference is exactly ``saving − move cost``;
the overlap is priced at ``P_cur`` because the replacement idles for ``W`` hours while the old
instances do ``W`` hours of work that would otherwise have been done at ``P_new``. Progress is
costed at one progress hour per wall-clock hour.

``W`` and ``L`` by kind of move (``T`` is the checkpoint wait timeout; the next checkpoint is
due at ``(last_checkpoint_at or started_at) + checkpoint_interval_hours``):

* voluntary or deadline move, checkpoint due within ``T``: ``W`` = time until it is due, ``L`` = 0.
* no checkpoint schedule known: ``W = T`` (wait the whole timeout: pessimistic), ``L`` = 0
  (with ``T`` = 0, no wait: ``W`` = 0 and ``L`` = progress since the last checkpoint).
* checkpoint due after ``T``: ``W = T`` and ``L`` = progress since the last checkpoint at ``now + T``.
* preemption notice: the same, with ``T = min(checkpoint_wait_timeout, reclaim_at − now)``.
* hard preemption: ``W`` = 0 and ``L`` = progress since the last checkpoint at the preemption.

``L`` never exceeds ``progress_hours``. Deadline risk (``deadline_at_risk``): with ``S`` the
slack, hours to the deadline minus ``R / progress_rate``, a workload on spot is at risk when
``S < deadline_buffer + O + checkpoint_interval`` (one more preemption could sink it; with no
interval, the progress at stake since the last checkpoint), one on other capacity when ``S < 0``
(it cannot finish at its pace; moving between safe offers at a safe pace would only flap).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from broker.core.migration.model import MigrationPolicy, Replacement, RunningWorkload
from broker.core.types import CapacityType

_ZERO = Decimal(0)
_MICROSECONDS_PER_HOUR = Decimal(3_600_000_000)


def hours(span: timedelta) -> Decimal:
    """A timedelta as exact Decimal hours (microsecond resolution, no float on the way)."""
    return Decimal(span // timedelta(microseconds=1)) / _MICROSECONDS_PER_HOUR


def format_usd(amount: Decimal) -> str:
    """``$3.10``, ``-$1.25``: cents, rounded half-even."""
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount):.2f}"


def format_hours(amount: Decimal) -> str:
    return f"{amount:.2f}h"


def format_duration(span: timedelta) -> str:
    """``45s``, ``20m``, ``1h30m``, ``6h``: how long, to the minute past a minute."""
    seconds = max(0, int(span.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    whole_hours, minutes = divmod(seconds // 60, 60)
    if not whole_hours:
        return f"{minutes}m"
    return f"{whole_hours}h{minutes}m" if minutes else f"{whole_hours}h"


@dataclass(frozen=True, slots=True)
class MoveCost:
    """The one-off cost of one move, by term (see the module docstring)."""

    egress: Decimal
    restart: Decimal
    lost_progress: Decimal
    overlap: Decimal
    overlap_hours: Decimal
    lost_hours: Decimal

    @property
    def total(self) -> Decimal:
        return self.egress + self.restart + self.lost_progress + self.overlap


@dataclass(frozen=True, slots=True)
class MoveEconomics:
    """Saving over the remaining hours against the move cost plus the policy's margin."""

    saving: Decimal
    cost: MoveCost
    margin: Decimal

    @property
    def required(self) -> Decimal:
        return self.cost.total + self.margin

    @property
    def net(self) -> Decimal:
        return self.saving - self.cost.total

    @property
    def worth_it(self) -> bool:
        return self.saving > self.required

    def describe(self) -> str:
        relation = ">" if self.worth_it else "≤"
        return (
            f"saving {format_usd(self.saving)} {relation} move cost {format_usd(self.cost.total)}"
            f" + margin {format_usd(self.margin)}"
        )


def lost_progress_hours(running: RunningWorkload, at: datetime) -> Decimal:
    """Progress since the last checkpoint (or since landing here, with none yet) at ``at``."""
    since = running.last_checkpoint_at or running.started_at
    return min(running.progress_hours, max(_ZERO, hours(at - since)))


def checkpoint_wait(running: RunningWorkload, timeout: timedelta, now: datetime) -> tuple[Decimal, Decimal]:
    """``(W, L)``: overlap and lost progress hours of a move that waits up to ``timeout``."""
    limit = max(_ZERO, hours(timeout))
    interval = running.workload.checkpoint_interval_hours
    if interval is None:
        # No schedule: assume it checkpoints when asked, given any time at all to do it.
        return (limit, _ZERO) if limit > 0 else (_ZERO, lost_progress_hours(running, now))
    since = running.last_checkpoint_at or running.started_at
    due_in = max(_ZERO, interval - hours(now - since))
    if due_in <= limit:
        return due_in, _ZERO
    return limit, lost_progress_hours(running, now + timeout)


def move_cost(
    running: RunningWorkload, target: Replacement, overlap_hours: Decimal, lost_hours: Decimal
) -> MoveCost:
    nodes = Decimal(running.workload.nodes)
    return MoveCost(
        egress=running.workload.checkpoint_gb * target.egress_per_gb,
        restart=running.workload.restart_overhead_hours * target.price_per_hour * nodes,
        lost_progress=lost_hours * target.price_per_hour * nodes,
        overlap=overlap_hours * running.price_per_hour * nodes,
        overlap_hours=overlap_hours,
        lost_hours=lost_hours,
    )


def saving(running: RunningWorkload, target: Replacement) -> Decimal:
    """``(P_cur − P_new) × n × R``: negative when the replacement is dearer."""
    nodes = Decimal(running.workload.nodes)
    return (running.price_per_hour - target.price_per_hour) * nodes * running.remaining_hours


def economics(
    running: RunningWorkload,
    target: Replacement,
    policy: MigrationPolicy,
    overlap_hours: Decimal,
    lost_hours: Decimal,
) -> MoveEconomics:
    cost = move_cost(running, target, overlap_hours, lost_hours)
    margin = cost.total * policy.min_saving_fraction + policy.min_saving_usd
    return MoveEconomics(saving=saving(running, target), cost=cost, margin=margin)


def deadline_at_risk(running: RunningWorkload, policy: MigrationPolicy, now: datetime) -> str | None:
    """Why the workload's deadline is at risk at ``now``, or None when it is not (or it has none)."""
    deadline = running.workload.deadline
    remaining = running.remaining_hours
    if deadline is None or remaining == 0:
        return None
    left = hours(deadline - now)
    if running.progress_rate == 0:
        return f"no progress, {format_hours(remaining)} of work left, {format_hours(left)} to the deadline"
    slack = left - remaining / running.progress_rate
    if running.capacity_type is not CapacityType.SPOT:
        if slack >= 0:
            return None
        return (
            f"needs {format_hours(remaining / running.progress_rate)} at the current pace"
            f" with {format_hours(left)} to the deadline"
        )
    interval = running.workload.checkpoint_interval_hours
    at_stake = interval if interval is not None else lost_progress_hours(running, now)
    exposure = running.workload.restart_overhead_hours + at_stake
    needed = hours(policy.deadline_buffer) + exposure
    if slack >= needed:
        return None
    return (
        f"slack {format_hours(slack)} on spot is below buffer {format_duration(policy.deadline_buffer)}"
        f" + one preemption's {format_hours(exposure)}"
    )


__all__ = [
    "MoveCost",
    "MoveEconomics",
    "checkpoint_wait",
    "deadline_at_risk",
    "economics",
    "format_duration",
    "format_hours",
    "format_usd",
    "hours",
    "lost_progress_hours",
    "move_cost",
    "saving",
]
