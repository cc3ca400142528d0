"""Reconciliation as a pure diff: what the database believes vs what a provider lists (pure: no I/O).

The database is the source of truth for *intent*; the provider is the source of truth for
*what exists*. The diff says how to bring them together:

* an instance we intended and the provider has, while our row still says ``requested``: the launch
  happened but its result was never recorded (a crash, a timeout) → **adopt** it;
* a live instance the provider has but we have no live row for (no row at all, or a row we ended,
  or a row of a finished workload) → **terminate** it: it is ours (tagged) and nobody wants it;
* a provider-side preemption notice we have not recorded → **notice**; a preemption → **preempted**;
* a row we believe live that the provider no longer lists, past a grace period (listings lag
  launches on some clouds) and not waiting on its launch → **lost**; a ``terminating`` row the
  provider no longer lists, or lists as terminated → **terminated**.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from broker.core.ports import Instance, InstanceState

LIVE_PROVIDER_STATES = frozenset({InstanceState.PENDING, InstanceState.RUNNING, InstanceState.UNKNOWN})


class Action(enum.StrEnum):
    ADOPT = "adopt"
    REFRESH = "refresh"  # a pending row the provider now reports running
    NOTICE = "notice"
    PREEMPTED = "preempted"
    LOST = "lost"
    FAILED = "failed"
    TERMINATED = "terminated"
    TERMINATE_ORPHAN = "terminate-orphan"


@dataclass(frozen=True, slots=True)
class Known:
    """What the database holds for one of our instances on this provider."""

    instance_id: str
    state: str  # InstanceRow.state
    updated_at: datetime
    notice_at: datetime | None = None
    launch_in_flight: bool = False  # its launch command is still pending or running
    workload_final: bool = False  # its workload is SUCCEEDED, FAILED or CANCELLED


@dataclass(frozen=True, slots=True)
class Step:
    action: Action
    instance_id: str
    observed: Instance | None = None


LIVE_ROW_STATES = frozenset({"requested", "pending", "running", "terminating"})


def diff(
    known: Mapping[str, Known], inventory: Iterable[Instance], now: datetime, grace: timedelta
) -> list[Step]:
    """The steps that reconcile ``known`` (our rows, by instance id) with a provider's ``inventory``."""
    steps: list[Step] = []
    seen: set[str] = set()
    for observed in inventory:
        instance_id = observed.instance_id
        seen.add(instance_id)
        row = known.get(instance_id)
        alive = observed.state in LIVE_PROVIDER_STATES
        if row is None or row.state not in LIVE_ROW_STATES:
            if alive:
                steps.append(Step(Action.TERMINATE_ORPHAN, instance_id, observed))
            continue
        if alive and row.workload_final and row.state != "terminating":
            steps.append(Step(Action.TERMINATE_ORPHAN, instance_id, observed))
            continue
        if observed.state is InstanceState.PREEMPTED:
            steps.append(Step(Action.PREEMPTED, instance_id, observed))
        elif observed.state is InstanceState.FAILED:
            steps.append(Step(Action.FAILED, instance_id, observed))
        elif observed.state in (InstanceState.TERMINATED, InstanceState.STOPPED, InstanceState.STOPPING):
            ended = Action.TERMINATED if row.state == "terminating" else Action.LOST
            steps.append(Step(ended, instance_id, observed))
        elif row.state == "requested":
            steps.append(Step(Action.ADOPT, instance_id, observed))
        elif row.state == "pending" and observed.state is InstanceState.RUNNING:
            steps.append(Step(Action.REFRESH, instance_id, observed))
        if (
            alive
            and row.state != "terminating"
            and row.notice_at is None
            and observed.state_reason == "preemption-notice"
        ):
            steps.append(Step(Action.NOTICE, instance_id, observed))
    for instance_id, row in known.items():
        if instance_id in seen or row.state not in LIVE_ROW_STATES or row.launch_in_flight:
            continue
        if now - row.updated_at < grace:
            continue  # listings can lag a launch; look again next round
        if row.state == "terminating":
            steps.append(Step(Action.TERMINATED, instance_id))
        elif row.state == "requested":
            steps.append(Step(Action.FAILED, instance_id))  # the launch never produced an instance
        else:
            steps.append(Step(Action.LOST, instance_id))
    return steps


__all__ = ["LIVE_ROW_STATES", "Action", "Known", "Step", "diff"]
