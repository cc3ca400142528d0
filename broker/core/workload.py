"""What a user asks the broker to run, and the contracts it may run under (pure: no I/O).

These are the inputs the placement and workload-migration engines share: a ``Workload`` (the
provisioning request), the ``Commitment`` contracts in force, ``Quota`` and ``Budget`` limits,
and observed ``PreemptionRate`` figures. All money is ``Decimal`` USD; all times are
timezone-aware. Construction validates, so the engines downstream can stay total.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from broker.core.checks import check_amount, check_aware
from broker.core.types import CapacityType

_ZERO = Decimal(0)


class CapacityPreference(enum.StrEnum):
    """How the user wants capacity bought. ``auto`` lets the engine pick the cheapest safe one."""

    SPOT = "spot"
    ON_DEMAND = "on-demand"
    RESERVED = "reserved"
    AUTO = "auto"

    def allows(self, capacity: CapacityType) -> bool:
        return self is CapacityPreference.AUTO or self.value == capacity.value


class GangScope(enum.StrEnum):
    """Where the nodes of a multi-node workload must all be: anywhere, one region, or one zone."""

    NONE = "none"
    REGION = "region"
    ZONE = "zone"


class CommitmentKind(enum.StrEnum):
    """The kinds of paid-for capacity contracts the broker tracks."""

    RESERVED_INSTANCE = "reserved-instance"
    CAPACITY_BLOCK = "capacity-block"
    SAVINGS_PLAN = "savings-plan"
    NEOCLOUD_CONTRACT = "neocloud-contract"


@dataclass(frozen=True, slots=True)
class Workload:
    """A provisioning request: what GPUs, how many, how to buy them, by when, and where not.

    ``gpu_types`` are canonical accelerator names (``H100``, ``A100-80GB``) in order of the
    user's preference; any of them is acceptable. ``nodes`` instances of ``gpus_per_node`` GPUs
    each; with ``gang`` set they must all land in one region or one zone. ``expected_hours`` is
    the run time on the chosen GPUs; ``restart_overhead_hours`` is what a (re)start costs before
    progress resumes (boot, image pull, checkpoint load); ``checkpoint_interval_hours`` bounds
    the progress a preemption can lose. An ``interruptible=False`` workload never runs on spot.
    Empty allow-sets mean "any".
    """

    workload_id: str
    gpu_types: tuple[str, ...]
    gpus_per_node: int
    expected_hours: Decimal
    nodes: int = 1
    gang: GangScope = GangScope.NONE
    capacity: CapacityPreference = CapacityPreference.AUTO
    max_price_per_gpu_hour: Decimal | None = None
    deadline: datetime | None = None
    checkpoint_gb: Decimal = _ZERO
    restart_overhead_hours: Decimal = _ZERO
    checkpoint_interval_hours: Decimal | None = None
    interruptible: bool = True
    allowed_clouds: frozenset[str] = frozenset()
    denied_clouds: frozenset[str] = frozenset()
    allowed_regions: frozenset[str] = frozenset()
    denied_regions: frozenset[str] = frozenset()
    project: str | None = None

    def __post_init__(self) -> None:
        if not self.workload_id:
            raise ValueError("workload_id must not be empty")
        if not self.gpu_types or any(not g for g in self.gpu_types):
            raise ValueError("gpu_types must name at least one GPU type")
        if self.gpus_per_node <= 0:
            raise ValueError(f"gpus_per_node must be positive, got {self.gpus_per_node}")
        if self.nodes <= 0:
            raise ValueError(f"nodes must be positive, got {self.nodes}")
        check_amount("expected_hours", self.expected_hours, positive=True)
        check_amount("max_price_per_gpu_hour", self.max_price_per_gpu_hour)
        check_amount("checkpoint_gb", self.checkpoint_gb)
        check_amount("restart_overhead_hours", self.restart_overhead_hours)
        check_amount("checkpoint_interval_hours", self.checkpoint_interval_hours, positive=True)
        check_aware("deadline", self.deadline)
        if not self.interruptible and self.capacity is CapacityPreference.SPOT:
            raise ValueError("a workload that is not interruptible cannot ask for spot capacity")

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass(frozen=True, slots=True)
class Commitment:
    """A reserved-capacity contract: ``gpu_count`` GPUs of one type in one place, already paid for.

    ``price_per_gpu_hour`` is what the contract costs whether used or not, so capacity under it
    costs nothing at the margin while ``gpus_in_use < gpu_count``. ``instance_type`` and
    ``zone`` narrow it where the contract does (an AWS capacity block is one type in one zone).
    """

    commitment_id: str
    cloud: str
    region: str
    accelerator: str
    gpu_count: int
    starts_at: datetime
    ends_at: datetime
    price_per_gpu_hour: Decimal
    kind: CommitmentKind = CommitmentKind.RESERVED_INSTANCE
    gpus_in_use: int = 0
    zone: str | None = None
    instance_type: str | None = None

    def __post_init__(self) -> None:
        if self.gpu_count <= 0:
            raise ValueError(f"gpu_count must be positive, got {self.gpu_count}")
        if not 0 <= self.gpus_in_use <= self.gpu_count:
            raise ValueError(f"gpus_in_use must be within 0..{self.gpu_count}, got {self.gpus_in_use}")
        check_amount("price_per_gpu_hour", self.price_per_gpu_hour)
        check_aware("starts_at", self.starts_at)
        check_aware("ends_at", self.ends_at)
        if self.ends_at <= self.starts_at:
            raise ValueError("a commitment must end after it starts")

    @property
    def gpus_free(self) -> int:
        return self.gpu_count - self.gpus_in_use

    def in_force(self, at: datetime) -> bool:
        return self.starts_at <= at < self.ends_at


@dataclass(frozen=True, slots=True)
class Quota:
    """A provider's limit on GPUs in a scope (``None`` fields match anything)."""

    cloud: str
    max_gpus: int
    gpus_in_use: int = 0
    region: str | None = None
    capacity_type: CapacityType | None = None

    def __post_init__(self) -> None:
        if self.max_gpus < 0 or self.gpus_in_use < 0:
            raise ValueError("quota figures must be non-negative")

    @property
    def gpus_free(self) -> int:
        return max(0, self.max_gpus - self.gpus_in_use)


@dataclass(frozen=True, slots=True)
class Budget:
    """A project's limits: GPUs at once and dollars per month (``None``: no limit)."""

    project: str
    max_gpus: int | None = None
    gpus_in_use: int = 0
    max_usd_per_month: Decimal | None = None
    spent_usd_this_month: Decimal = _ZERO

    def __post_init__(self) -> None:
        if self.max_gpus is not None and self.max_gpus < 0:
            raise ValueError("max_gpus must be non-negative")
        check_amount("max_usd_per_month", self.max_usd_per_month)
        check_amount("spent_usd_this_month", self.spent_usd_this_month)

    @property
    def usd_left(self) -> Decimal | None:
        if self.max_usd_per_month is None:
            return None
        return max(_ZERO, self.max_usd_per_month - self.spent_usd_this_month)


@dataclass(frozen=True, slots=True)
class PreemptionRate:
    """Observed spot preemptions per instance-hour for (cloud, region, instance type)."""

    cloud: str
    region: str
    instance_type: str
    per_hour: Decimal
    observed_hours: Decimal = field(default=_ZERO)  # how much evidence the rate rests on

    def __post_init__(self) -> None:
        check_amount("per_hour", self.per_hour)
        check_amount("observed_hours", self.observed_hours)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.cloud, self.region, self.instance_type)


__all__ = [
    "Budget",
    "CapacityPreference",
    "Commitment",
    "CommitmentKind",
    "GangScope",
    "PreemptionRate",
    "Quota",
    "Workload",
]
