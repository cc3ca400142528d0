"""What the workload-migration engine answers: a plan of keyed commands, or a reason to stay (pure: no I/O).

Keys come from ``command_key(workload_id, generation, step, ...)`` and nothing else, so the
same inputs always give the same keys and a replayed event (same generation) gives a plan the
executor dedupes. A launch key names the offer and the commitment it launches into, so a key is
never reused for a different offer; every later step names the launch it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.core.commands import Command, CutOver, Launch, Plan, Terminate, WaitForCheckpoint, command_key
from broker.core.migration.cost import MoveEconomics
from broker.core.migration.events import Trigger
from broker.core.migration.model import Move, MoveKind, OfferKey, Refusal, Replacement, RunningWorkload
from broker.core.types import CapacityType


@dataclass(frozen=True, slots=True)
class Rejection:
    """A replacement the engine passed over, and why."""

    offer_key: OfferKey
    commitment_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Decision:
    """The engine's answer to one event: ``plan`` (empty to stay) and why.

    ``move`` is the history entry and ``refusal`` the backoff entry the caller records in the
    next ``RunningWorkload`` (``refusal`` even when staying). ``economics`` is the chosen
    replacement's, or on a stay the best-ranked one that was costed.
    """

    workload_id: str
    trigger: Trigger
    reason: str
    plan: Plan
    kind: MoveKind | None = None
    target: Replacement | None = None
    economics: MoveEconomics | None = None
    move: Move | None = None
    refusal: Refusal | None = None
    rejections: tuple[Rejection, ...] = ()

    @property
    def migrates(self) -> bool:
        return not self.plan.empty


def launch_key(workload_id: str, generation: int, target: Replacement) -> str:
    """The idempotency key of launching ``target`` in ``generation``: one per (generation, offer)."""
    return command_key(
        workload_id,
        generation,
        "launch",
        *target.key,
        target.commitment_id or "",
    )


def migration_plan(
    running: RunningWorkload, target: Replacement, reason: str, wait_seconds: int | None
) -> Plan:
    """Launch ``target`` → [WaitForCheckpoint] → CutOver → Terminate each old instance.

    ``wait_seconds`` None leaves the wait out (the old instances are gone). A dead instance
    still gets its Terminate: it is a no-op at the provider, and it closes our books.
    """
    workload = running.workload
    wid, gen = workload.workload_id, running.generation
    launch = launch_key(wid, gen, target)
    max_price = None
    if target.capacity_type is CapacityType.SPOT and workload.max_price_per_gpu_hour is not None:
        max_price = workload.max_price_per_gpu_hour * workload.gpus_per_node
    commands: list[Command] = [
        Launch(
            idempotency_key=launch,
            workload_id=wid,
            cloud=target.cloud,
            region=target.region,
            zone=target.zone,
            instance_type=target.instance_type,
            capacity_type=target.capacity_type,
            count=workload.nodes,
            price_per_hour=target.price_per_hour,
            commitment_id=target.commitment_id,
            max_price_per_hour=max_price,
        )
    ]
    if wait_seconds is not None:
        commands.append(
            WaitForCheckpoint(
                idempotency_key=command_key(wid, gen, "wait-for-checkpoint", launch),
                workload_id=wid,
                instance_ids=running.instance_ids,
                timeout_seconds=wait_seconds,
            )
        )
    commands.append(
        CutOver(
            idempotency_key=command_key(wid, gen, "cut-over", launch),
            workload_id=wid,
            launch_key=launch,
            from_instance_ids=running.instance_ids,
        )
    )
    commands.extend(
        Terminate(
            idempotency_key=command_key(wid, gen, "terminate", launch, instance_id),
            workload_id=wid,
            instance_id=instance_id,
            cloud=running.cloud,
            region=running.region,
        )
        for instance_id in running.instance_ids
    )
    return Plan(workload_id=wid, reason=reason, commands=tuple(commands))


__all__ = ["Decision", "Rejection", "launch_key", "migration_plan"]
