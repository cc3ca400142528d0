"""Small builders for placement tests: offers, commitments, workloads, snapshots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from broker.core.placement import PlacementSnapshot
from broker.core.types import Availability, CapacityType, Offer
from broker.core.workload import Commitment, Workload

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
OD = CapacityType.ON_DEMAND
SPOT = CapacityType.SPOT
RESERVED = CapacityType.RESERVED


def offer(
    price: str = "8",
    *,
    cloud: str = "aws",
    region: str = "us-east-1",
    zone: str | None = "use1-az1",
    instance_type: str = "p5.48xlarge",
    gpu: str = "H100",
    count: int = 8,
    capacity: CapacityType = OD,
    observed_at: datetime = NOW,
    availability: Availability = Availability.UNKNOWN,
) -> Offer:
    return Offer(
        cloud=cloud,
        region=region,
        zone=zone,
        instance_type=instance_type,
        accelerator=gpu,
        accelerator_count=count,
        vcpus=None,
        memory_gib=None,
        capacity_type=capacity,
        price_per_hour=Decimal(price),
        currency="USD",
        source="test",
        observed_at=observed_at,
        availability=availability,
    )


def commitment(
    commitment_id: str = "c1",
    *,
    cloud: str = "aws",
    region: str = "us-east-1",
    gpu: str = "H100",
    gpu_count: int = 16,
    in_use: int = 0,
    starts: timedelta = timedelta(days=-30),
    ends: timedelta = timedelta(days=30),
    price: str = "2",
    zone: str | None = None,
    instance_type: str | None = None,
) -> Commitment:
    return Commitment(
        commitment_id=commitment_id,
        cloud=cloud,
        region=region,
        accelerator=gpu,
        gpu_count=gpu_count,
        starts_at=NOW + starts,
        ends_at=NOW + ends,
        price_per_gpu_hour=Decimal(price),
        gpus_in_use=in_use,
        zone=zone,
        instance_type=instance_type,
    )


def workload(
    workload_id: str = "w1",
    *,
    gpu_types: tuple[str, ...] = ("H100",),
    gpus_per_node: int = 8,
    hours: str = "10",
    **changes: object,
) -> Workload:
    return Workload(
        workload_id=workload_id,
        gpu_types=gpu_types,
        gpus_per_node=gpus_per_node,
        expected_hours=Decimal(hours),
        **changes,  # type: ignore[arg-type]
    )


def snapshot(*offers: Offer, **changes: object) -> PlacementSnapshot:
    return PlacementSnapshot(now=NOW, offers=offers, **changes)  # type: ignore[arg-type]
