"""Domain types shared by the core, pricing and the edges (pure: no I/O)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal


class CapacityType(enum.StrEnum):
    """How capacity is bought: list price, interruptible, or under a reserved contract."""

    ON_DEMAND = "on-demand"
    SPOT = "spot"
    RESERVED = "reserved"


class Availability(enum.StrEnum):
    """What a provider says about capacity for an offer right now (where its API says anything)."""

    AVAILABLE = "available"
    LIMITED = "limited"
    UNAVAILABLE = "unavailable"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Offer:
    """One priced way to rent GPUs: an instance type in a place, bought one way, at one price.

    ``price_per_hour`` is USD (``currency``) per instance-hour. ``observed_at`` is when the
    source saw the price (timezone-aware), so callers can show its age. ``availability`` is the
    provider's capacity signal when it gives one (a catalog price alone says nothing about it).
    """

    cloud: str
    region: str
    zone: str | None
    instance_type: str
    accelerator: str
    accelerator_count: int
    vcpus: Decimal | None
    memory_gib: Decimal | None
    capacity_type: CapacityType
    price_per_hour: Decimal
    currency: str
    source: str
    observed_at: datetime
    availability: Availability = Availability.UNKNOWN

    def __post_init__(self) -> None:
        # The core stays total only if bad offers never get in: check at construction.
        if self.accelerator_count <= 0:
            raise ValueError(f"accelerator_count must be positive, got {self.accelerator_count}")
        if not isinstance(self.price_per_hour, Decimal):
            raise TypeError(f"price_per_hour must be Decimal, got {type(self.price_per_hour).__name__}")
        if not self.price_per_hour.is_finite() or self.price_per_hour < 0:
            raise ValueError(
                f"price_per_hour must be a finite non-negative Decimal, got {self.price_per_hour}"
            )
        if self.observed_at.tzinfo is None:
            raise ValueError("observed_at must be timezone-aware")

    @property
    def price_per_gpu_hour(self) -> Decimal:
        """USD per GPU-hour: the unit users compare offers in."""
        return self.price_per_hour / self.accelerator_count

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """Identity of the offer across price snapshots (what a price history is keyed by)."""
        return (self.cloud, self.region, self.zone or "", self.instance_type, self.capacity_type.value)
