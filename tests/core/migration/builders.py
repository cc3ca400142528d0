"""Small builders for workload-migration tests: one workload, one place it runs, replacements."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from broker.core.migration import MigrationPolicy, Replacement, RunningWorkload
from broker.core.types import CapacityType
from broker.core.workload import Workload

T0 = datetime(2026, 11, 1, tzinfo=UTC)
NOW = T0 + timedelta(hours=20)
POLICY = MigrationPolicy()


def workload(**changes: object) -> Workload:
    base = Workload(
        workload_id="w1",
        gpu_types=("H100",),
        gpus_per_node=8,
        expected_hours=Decimal(100),
        checkpoint_gb=Decimal(200),
        restart_overhead_hours=Decimal("0.5"),
        checkpoint_interval_hours=Decimal(1),
    )
    return replace(base, **changes)


def running(**changes: object) -> RunningWorkload:
    """On AWS on-demand at $40/h since T0, 20 of 100 hours done, checkpointed 45 minutes ago."""
    base = RunningWorkload(
        workload=workload(),
        cloud="aws",
        region="us-east-1",
        zone="us-east-1a",
        instance_type="p5.48xlarge",
        capacity_type=CapacityType.ON_DEMAND,
        price_per_hour=Decimal(40),
        instance_ids=("i-old-1",),
        started_at=T0,
        progress_hours=Decimal(20),
        last_checkpoint_at=NOW - timedelta(minutes=45),
        generation=3,
    )
    return replace(base, **changes)


def replacement(price: str = "30", **changes: object) -> Replacement:
    """GCP on-demand, $0.09/GB to get the checkpoint there."""
    base = Replacement(
        cloud="gcp",
        region="us-central1",
        zone="us-central1-a",
        instance_type="a3-highgpu-8g",
        capacity_type=CapacityType.ON_DEMAND,
        price_per_hour=Decimal(price),
        egress_per_gb=Decimal("0.09"),
    )
    return replace(base, **changes)
