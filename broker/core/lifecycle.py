"""The workload lifecycle as an explicit transition table (pure: no I/O).

PENDING → PLACING → PROVISIONING → RUNNING → (MIGRATING → RUNNING)* → SUCCEEDED | FAILED | CANCELLED.

Every state change the broker makes is one of the pairs in :data:`TRANSITIONS`, carried out as a
compare-and-set on the stored state plus an event row (``broker.services.lifecycle``). The
backward edges are the recoveries: PLACING → PENDING when nothing fits yet (or the placer died),
PROVISIONING → PENDING when the provider refused the launch, RUNNING or MIGRATING → PENDING when
the workload lost its instances and no replacement could be planned.
"""

from __future__ import annotations

import enum
from types import MappingProxyType


class WorkloadState(enum.StrEnum):
    PENDING = "PENDING"
    PLACING = "PLACING"
    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    MIGRATING = "MIGRATING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        """Holds (or is about to hold) instances: counts against a project's GPU limit."""
        return self not in TERMINAL


TERMINAL = frozenset({WorkloadState.SUCCEEDED, WorkloadState.FAILED, WorkloadState.CANCELLED})

_S = WorkloadState
TRANSITIONS: MappingProxyType[WorkloadState, frozenset[WorkloadState]] = MappingProxyType(
    {
        _S.PENDING: frozenset({_S.PLACING, _S.FAILED, _S.CANCELLED}),
        _S.PLACING: frozenset({_S.PROVISIONING, _S.PENDING, _S.FAILED, _S.CANCELLED}),
        _S.PROVISIONING: frozenset({_S.RUNNING, _S.PENDING, _S.FAILED, _S.CANCELLED}),
        _S.RUNNING: frozenset({_S.MIGRATING, _S.PENDING, _S.SUCCEEDED, _S.FAILED, _S.CANCELLED}),
        _S.MIGRATING: frozenset({_S.RUNNING, _S.PENDING, _S.SUCCEEDED, _S.FAILED, _S.CANCELLED}),
        _S.SUCCEEDED: frozenset(),
        _S.FAILED: frozenset(),
        _S.CANCELLED: frozenset(),
    }
)

# Who may ask for what: the API's finish endpoint reports an outcome only for a workload that runs.
FINISHABLE = frozenset({WorkloadState.RUNNING, WorkloadState.MIGRATING})
CANCELLABLE = frozenset(WorkloadState) - TERMINAL


class IllegalTransition(ValueError):
    """A state change the table does not allow."""

    def __init__(self, current: WorkloadState, target: WorkloadState) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (it is final)"
        super().__init__(f"a {current} workload cannot become {target}; from {current}: {allowed}")
        self.current = current
        self.target = target


def allowed(current: WorkloadState, target: WorkloadState) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: WorkloadState, target: WorkloadState) -> None:
    if not allowed(current, target):
        raise IllegalTransition(current, target)


def sources(target: WorkloadState) -> frozenset[WorkloadState]:
    """Every state ``target`` can be reached from (the WHERE clause of a compare-and-set)."""
    return frozenset(s for s, targets in TRANSITIONS.items() if target in targets)


__all__ = [
    "CANCELLABLE",
    "FINISHABLE",
    "TERMINAL",
    "TRANSITIONS",
    "IllegalTransition",
    "WorkloadState",
    "allowed",
    "check_transition",
    "sources",
]
