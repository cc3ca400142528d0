"""The workload-migration engine: one event and a snapshot in, one ``Decision`` out (pure: no I/O).

Three kinds of move, in order of precedence:

* **forced**: a preemption notice, a preemption, or any event while the caller's snapshot says
  the instances are being reclaimed or gone. The workload moves to the best replacement it can
  get (preferring, with a deadline, one that can meet it; non-spot when the deadline is at
  risk); hysteresis does not apply, the launch-refused backoff does. Notice: Launch →
  WaitForCheckpoint (timeout bounded by the reclaim time) → CutOver → Terminate old; hard
  preemption: Launch → CutOver → Terminate old. The whole workload moves even when one node of
  several is hit (its nodes run as one job).
* **deadline**: a ``DeadlineAtRisk`` event, or any other event while ``deadline_at_risk`` says
  so. The workload moves to the best non-spot replacement that can meet the deadline,
  ignoring dwell and cooldown (safety beats hysteresis).
* **voluntary**: a price change, a freed commitment, a rebalance tick. Only after
  ``min_dwell`` where it is, never back to an offer left within ``move_back_cooldown``, and only
  when the saving beats the move cost plus margin (``cost`` has the formulas). The first
  replacement in the caller's order (best first) that passes is taken.

A ``LaunchRefused`` records a ``Refusal`` (the caller keeps it in ``RunningWorkload.refusals``)
and plans again by the workload's situation with that offer backed off; the new plan's launch
key names the new offer, so no key is reused for a different offer. ``now`` is an argument:
the engine reads no clock, and the same inputs always give the same decision and keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from broker.core.commands import Plan
from broker.core.migration.cost import (
    MoveEconomics,
    checkpoint_wait,
    deadline_at_risk,
    economics,
    format_duration,
    format_usd,
    lost_progress_hours,
)
from broker.core.migration.decision import Decision, Rejection, migration_plan
from broker.core.migration.events import (
    CommitmentFreed,
    DeadlineAtRisk,
    LaunchRefused,
    MigrationEvent,
    Preempted,
    PreemptionNotice,
    PriceChanged,
    Rebalance,
    Trigger,
)
from broker.core.migration.model import (
    MigrationPolicy,
    Move,
    MoveKind,
    Refusal,
    Replacement,
    RunningWorkload,
    describe_key,
)
from broker.core.types import CapacityType

_ZERO_HOURS = Decimal(0)


@dataclass(frozen=True, slots=True)
class _Situation:
    """One decision's inputs, after the event has been folded into the snapshot."""

    running: RunningWorkload
    candidates: tuple[Replacement, ...]
    policy: MigrationPolicy
    now: datetime
    trigger: Trigger
    context: str
    refusals: tuple[Refusal, ...]
    refusal: Refusal | None = None


def decide(
    event: MigrationEvent,
    running: RunningWorkload,
    replacements: Sequence[Replacement],
    policy: MigrationPolicy,
    now: datetime,
) -> Decision:
    """Answer ``event`` for ``running`` with a plan of commands, or a reason to stay."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not isinstance(running, RunningWorkload):
        raise TypeError(f"running must be a RunningWorkload, got {type(running).__name__}")
    candidates = tuple(replacements)
    for candidate in candidates:
        if not isinstance(candidate, Replacement):
            raise TypeError(f"replacements must be Replacement, got {type(candidate).__name__}")
    base = _Situation(
        running=running,
        candidates=candidates,
        policy=policy,
        now=now,
        trigger=event.trigger,
        context=event.trigger.value,
        refusals=running.refusals,
    )
    if isinstance(event, PreemptionNotice):
        if event.instance_id not in running.instance_ids:
            return _stay(base, f"instance {event.instance_id} is not one of this workload's")
        reclaim = format_duration(event.reclaim_at - now)
        situation = replace(base, context=f"preemption notice for {event.instance_id}, reclaim in {reclaim}")
        return _forced(situation, reclaim_at=event.reclaim_at, lost_at=running.lost_at)
    if isinstance(event, Preempted):
        if event.instance_id not in running.instance_ids:
            return _stay(base, f"instance {event.instance_id} is not one of this workload's")
        situation = replace(base, context=f"{event.instance_id} preempted")
        return _forced(situation, reclaim_at=None, lost_at=running.lost_at or event.at)
    if isinstance(event, LaunchRefused):
        refusal = Refusal(offer_key=event.offer_key, at=event.at)
        situation = replace(
            base,
            context=f"launch of {describe_key(event.offer_key)} refused ({event.reason})",
            refusals=(*running.refusals, refusal),
            refusal=refusal,
        )
        return _by_situation(situation)
    if isinstance(event, DeadlineAtRisk):
        detail = f": {event.detail}" if event.detail else ""
        situation = replace(base, context=f"deadline at risk{detail}")
        if _going_or_gone(running):
            return _forced(situation, reclaim_at=running.reclaim_at, lost_at=running.lost_at, at_risk=True)
        return _deadline(situation)
    if isinstance(event, PriceChanged):
        situation = _repriced(base, event)
        return _by_situation(situation)
    if isinstance(event, CommitmentFreed):
        return _commitment_freed(base, event)
    if isinstance(event, Rebalance):
        return _by_situation(base)
    raise TypeError(f"not a migration event: {type(event).__name__}")


def _by_situation(situation: _Situation, only_commitment: str | None = None) -> Decision:
    """Forced if the snapshot says the instances are going or gone; else deadline; else voluntary."""
    running = situation.running
    if _going_or_gone(running):
        return _forced(situation, reclaim_at=running.reclaim_at, lost_at=running.lost_at)
    risk = deadline_at_risk(running, situation.policy, situation.now)
    if risk is not None:
        return _deadline(replace(situation, context=f"{situation.context}; deadline at risk: {risk}"))
    return _voluntary(situation, only_commitment)


def _going_or_gone(running: RunningWorkload) -> bool:
    return running.lost_at is not None or running.reclaim_at is not None


def _repriced(situation: _Situation, event: PriceChanged) -> _Situation:
    """The event's price is the freshest fact about its offer; capacity under a commitment stays 0."""
    running = situation.running
    if running.key == event.offer_key and running.commitment_id is None:
        running = replace(running, price_per_hour=event.new_price)
    candidates = tuple(
        replace(c, price_per_hour=event.new_price)
        if c.key == event.offer_key and c.commitment_id is None
        else c
        for c in situation.candidates
    )
    context = (
        f"{describe_key(event.offer_key)} now {format_usd(event.new_price)}/h"
        f" (was {format_usd(event.old_price)})"
    )
    return replace(situation, running=running, candidates=candidates, context=context)


def _commitment_freed(situation: _Situation, event: CommitmentFreed) -> Decision:
    running = situation.running
    situation = replace(
        situation, context=f"commitment {event.commitment_id} has {event.gpus_free} GPUs free"
    )
    if _going_or_gone(running):
        return _by_situation(situation)
    if running.commitment_id == event.commitment_id:
        return _stay(situation, "already runs under it")
    needed = running.workload.total_gpus
    if event.gpus_free < needed:
        return _stay(situation, f"the workload needs {needed} GPUs")
    return _by_situation(situation, only_commitment=event.commitment_id)


def _stay(
    situation: _Situation,
    why: str,
    *,
    rejections: tuple[Rejection, ...] = (),
    best: MoveEconomics | None = None,
) -> Decision:
    reason = f"{situation.context}: stay ({why})"
    wid = situation.running.workload_id
    return Decision(
        workload_id=wid,
        trigger=situation.trigger,
        reason=reason,
        plan=Plan(workload_id=wid, reason=reason, commands=()),
        economics=best,
        refusal=situation.refusal,
        rejections=rejections,
    )


def _move(
    situation: _Situation,
    target: Replacement,
    kind: MoveKind,
    why: str,
    econ: MoveEconomics,
    wait_seconds: int | None,
    rejections: tuple[Rejection, ...],
) -> Decision:
    running = situation.running
    reason = f"{situation.context}: move to {target.describe()} ({why})"
    return Decision(
        workload_id=running.workload_id,
        trigger=situation.trigger,
        reason=reason,
        plan=migration_plan(running, target, reason, wait_seconds),
        kind=kind,
        target=target,
        economics=econ,
        move=Move(from_key=running.key, to_key=target.key, at=situation.now, kind=kind),
        refusal=situation.refusal,
        rejections=rejections,
    )


def _screen(
    situation: _Situation,
    candidate: Replacement,
    *,
    hysteresis: bool,
    non_spot_only: bool = False,
    need_deadline: bool = False,
) -> str | None:
    """Why ``candidate`` is out for this kind of move, or None when it may be considered."""
    running, policy, now = situation.running, situation.policy, situation.now
    if candidate.key == running.key and candidate.commitment_id == running.commitment_id:
        return "where it runs now"
    if candidate.capacity_type is CapacityType.SPOT and not running.workload.interruptible:
        return "spot, and the workload is not interruptible"
    for refusal in situation.refusals:
        age = max(now - refusal.at, timedelta(0))
        if refusal.offer_key == candidate.key and age < policy.launch_refused_backoff:
            return (
                f"launch refused {format_duration(age)} ago"
                f" (backoff {format_duration(policy.launch_refused_backoff)})"
            )
    if non_spot_only and candidate.capacity_type is CapacityType.SPOT:
        return "spot, and the deadline needs capacity that stays"
    if need_deadline and running.workload.deadline is not None and not candidate.meets_deadline:
        return "cannot meet the deadline"
    if hysteresis:
        for move in running.moves:
            age = max(now - move.at, timedelta(0))
            if move.from_key == candidate.key and age < policy.move_back_cooldown:
                return (
                    f"left {format_duration(age)} ago"
                    f" (cooldown {format_duration(policy.move_back_cooldown)})"
                )
    return None


def _forced(
    situation: _Situation,
    *,
    reclaim_at: datetime | None,
    lost_at: datetime | None,
    at_risk: bool = False,
) -> Decision:
    """The instances are going or gone: move to the best replacement there is."""
    running, policy, now = situation.running, situation.policy, situation.now
    wait_seconds: int | None = None
    if lost_at is None and reclaim_at is not None and reclaim_at > now:
        bound = min(policy.checkpoint_wait_timeout, reclaim_at - now)
        wait_seconds = int(bound.total_seconds()) or None
    if wait_seconds is not None:
        overlap, lost = checkpoint_wait(running, timedelta(seconds=wait_seconds), now)
    else:
        overlap, lost = _ZERO_HOURS, lost_progress_hours(running, lost_at or reclaim_at or now)

    rejections: list[Rejection] = []
    eligible: list[Replacement] = []
    for candidate in situation.candidates:
        why = _screen(situation, candidate, hysteresis=False)
        if why is None:
            eligible.append(candidate)
        else:
            rejections.append(Rejection(candidate.key, candidate.commitment_id, why))
    if not eligible:
        first = f": {rejections[0].reason} for {describe_key(rejections[0].offer_key)}" if rejections else ""
        return _stay(situation, f"no replacement available{first}", rejections=tuple(rejections))

    target, note = _forced_choice(situation, eligible, at_risk)
    for candidate in eligible[: eligible.index(target)]:
        passed_over = (
            "spot while the deadline is at risk" if candidate.meets_deadline else "cannot meet the deadline"
        )
        rejections.append(Rejection(candidate.key, candidate.commitment_id, passed_over))
    econ = economics(running, target, policy, overlap, lost)
    why = f"move cost {format_usd(econ.cost.total)}{note}"
    return _move(situation, target, MoveKind.FORCED, why, econ, wait_seconds, tuple(rejections))


def _forced_choice(
    situation: _Situation, eligible: list[Replacement], at_risk: bool
) -> tuple[Replacement, str]:
    """With a deadline, the first that can meet it (non-spot first when it is at risk); else the first."""
    running = situation.running
    if running.workload.deadline is None:
        return eligible[0], ""
    on_time = [c for c in eligible if c.meets_deadline]
    if not on_time:
        return eligible[0], "; no replacement can meet the deadline"
    if at_risk or deadline_at_risk(running, situation.policy, situation.now) is not None:
        safe = [c for c in on_time if c.capacity_type is not CapacityType.SPOT]
        if safe:
            return safe[0], ""
    return on_time[0], ""


def _deadline(situation: _Situation) -> Decision:
    """Move to the best non-spot replacement that can meet the deadline; dwell and cooldown don't apply."""
    running, policy, now = situation.running, situation.policy, situation.now
    if running.workload.deadline is None:
        return _stay(situation, "the workload has no deadline")
    rejections: list[Rejection] = []
    for candidate in situation.candidates:
        why = _screen(situation, candidate, hysteresis=False, non_spot_only=True, need_deadline=True)
        if why is not None:
            rejections.append(Rejection(candidate.key, candidate.commitment_id, why))
            continue
        wait_seconds = int(policy.checkpoint_wait_timeout.total_seconds())
        overlap, lost = checkpoint_wait(running, timedelta(seconds=wait_seconds), now)
        econ = economics(running, candidate, policy, overlap, lost)
        why = f"non-spot and on time; move cost {format_usd(econ.cost.total)}"
        return _move(
            situation, candidate, MoveKind.DEADLINE, why, econ, wait_seconds or None, tuple(rejections)
        )
    return _stay(situation, "no non-spot replacement can meet the deadline", rejections=tuple(rejections))


def _voluntary(situation: _Situation, only_commitment: str | None) -> Decision:
    """Move only when it pays for itself with margin, and hysteresis allows it."""
    running, policy, now = situation.running, situation.policy, situation.now
    dwell = max(now - running.started_at, timedelta(0))
    if dwell < policy.min_dwell:
        return _stay(
            situation,
            f"on {describe_key(running.key)} for {format_duration(dwell)},"
            f" min dwell {format_duration(policy.min_dwell)}",
        )
    wait_seconds = int(policy.checkpoint_wait_timeout.total_seconds())
    overlap, lost = checkpoint_wait(running, timedelta(seconds=wait_seconds), now)
    rejections: list[Rejection] = []
    best: MoveEconomics | None = None
    best_target: Replacement | None = None
    for candidate in situation.candidates:
        if only_commitment is not None and candidate.commitment_id != only_commitment:
            why: str | None = f"not under commitment {only_commitment}"
        else:
            why = _screen(situation, candidate, hysteresis=True, need_deadline=True)
        if why is not None:
            rejections.append(Rejection(candidate.key, candidate.commitment_id, why))
            continue
        econ = economics(running, candidate, policy, overlap, lost)
        if econ.worth_it:
            return _move(
                situation,
                candidate,
                MoveKind.VOLUNTARY,
                econ.describe(),
                econ,
                wait_seconds or None,
                tuple(rejections),
            )
        rejections.append(Rejection(candidate.key, candidate.commitment_id, econ.describe()))
        if best is None:
            best, best_target = econ, candidate
    if best is not None and best_target is not None:
        why = f"{best.describe()} for {best_target.describe()}"
    elif rejections:
        why = f"no eligible replacement: {describe_key(rejections[0].offer_key)} {rejections[0].reason}"
    else:
        why = "no replacement offered"
    return _stay(situation, why, rejections=tuple(rejections), best=best)

