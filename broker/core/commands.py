"""Decisions as data: the commands the engines emit and an executor carries out (pure: no I/O).

The placement and workload-migration engines never act; they return a ``Plan`` of commands.
Each command has an ``idempotency_key`` derived only from its inputs, so an executor that
crashes and runs the same plan again does each step once (a launch's key becomes the
provider-side instance id, which every adapter launches idempotently). A dry run is a plan
nobody executes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal

from broker.core.types import CapacityType


def command_key(*parts: object) -> str:
    """A short deterministic key from the parts that identify one step of one plan.

    The result also satisfies the provider instance-id rule (lowercase letter first, then
    ``[a-z0-9]``), so a launch's key can be the instance id itself.
    """
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return "c" + digest[:23]


@dataclass(frozen=True, slots=True)
class Launch:
    """Start ``count`` instances of one offer for a workload (into a commitment when set)."""

    idempotency_key: str
    workload_id: str
    cloud: str
    region: str
    zone: str | None
    instance_type: str
    capacity_type: CapacityType
    count: int
    price_per_hour: Decimal
    commitment_id: str | None = None
    max_price_per_hour: Decimal | None = None


@dataclass(frozen=True, slots=True)
class WaitForCheckpoint:
    """Hold the next steps until the workload has written a checkpoint (or the timeout passes)."""

    idempotency_key: str
    workload_id: str
    instance_ids: tuple[str, ...]
    timeout_seconds: int


@dataclass(frozen=True, slots=True)
class CutOver:
    """Point the workload at the replacement launched under ``launch_key``; the old ones stop serving."""

    idempotency_key: str
    workload_id: str
    launch_key: str
    from_instance_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Terminate:
    """Terminate one of our instances (done when the provider says NotFound)."""

    idempotency_key: str
    workload_id: str
    instance_id: str
    cloud: str
    region: str


Command = Launch | WaitForCheckpoint | CutOver | Terminate


@dataclass(frozen=True, slots=True)
class Plan:
    """An ordered list of commands with the reason the engine made it."""

    workload_id: str
    reason: str
    commands: tuple[Command, ...]

    @property
    def empty(self) -> bool:
        return not self.commands


__all__ = ["Command", "CutOver", "Launch", "Plan", "Terminate", "WaitForCheckpoint", "command_key"]
