"""Workload migration: events (preemption, refusal, price, commitment, deadline) to plans (pure: no I/O).

``decide(event, running, replacements, policy, now)`` returns a ``Decision``: a ``Plan`` of
commands with idempotency keys (Launch → [WaitForCheckpoint] → CutOver → Terminate old), or a
reason to stay. The engine rules are in ``engine``, the money in ``cost`` (its docstring has
the formulas), the keys in ``decision``. Hysteresis (minimum dwell, move-back cooldown, a
saving that beats the move cost with margin) keeps it from flapping between two offers.
"""

from broker.core.migration.cost import MoveCost, MoveEconomics, checkpoint_wait, deadline_at_risk, economics
from broker.core.migration.decision import Decision, Rejection, launch_key, migration_plan
from broker.core.migration.engine import decide
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
    OfferKey,
    Refusal,
    Replacement,
    RunningWorkload,
    describe_key,
    offer_key,
)

__all__ = [
    "CommitmentFreed",
    "DeadlineAtRisk",
    "Decision",
    "LaunchRefused",
    "MigrationEvent",
    "MigrationPolicy",
    "Move",
    "MoveCost",
    "MoveEconomics",
    "MoveKind",
    "OfferKey",
    "Preempted",
    "PreemptionNotice",
    "PriceChanged",
    "Rebalance",
    "Refusal",
    "Rejection",
    "Replacement",
    "RunningWorkload",
    "Trigger",
    "checkpoint_wait",
    "deadline_at_risk",
    "decide",
    "describe_key",
    "economics",
    "launch_key",
    "migration_plan",
    "offer_key",
]
