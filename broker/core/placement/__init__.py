"""Placement: choose where a workload runs, filter then score, and explain every rejection (pure: no I/O).

``place`` is the fast path, ``explain`` the complete one (same choice, every reason kept),
``place_batch`` places many workloads against limited capacity. See ``cost`` for the cost
model and ``filters`` for the filters and the documented choices.
"""

from broker.core.placement.cost import CostBreakdown, Location, MoveCost, move_cost
from broker.core.placement.decision import (
    Candidate,
    Explanation,
    Placement,
    PlacementDecision,
    Rejection,
    Scored,
)
from broker.core.placement.engine import BatchResult, batch_order, explain, place, place_batch
from broker.core.placement.request import Usage
from broker.core.placement.snapshot import PlacementSnapshot

__all__ = [
    "BatchResult",
    "Candidate",
    "CostBreakdown",
    "Explanation",
    "Location",
    "MoveCost",
    "Placement",
    "PlacementDecision",
    "PlacementSnapshot",
    "Rejection",
    "Scored",
    "Usage",
    "batch_order",
    "explain",
    "move_cost",
    "place",
    "place_batch",
]
