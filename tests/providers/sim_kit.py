"""Test helpers for the simulated cloud: a clock moved by hand and one-zone spot traces (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from providers.traces import SpotTrace

T0 = datetime(2026, 11, 24, tzinfo=UTC)


class ManualClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def trace(
    values: list[int | None],
    zone: str = "us-central1-a",
    gap: int = 600,
    *,
    spot: str = "2.372376",
    on_demand: str = "10.315679",
) -> SpotTrace:
    """One zone of 1-GPU H100 spot capacity: ``values[i]`` GPUs obtainable in the i-th tick."""
    return SpotTrace(
        cloud="gcp",
        region=zone.rsplit("-", 1)[0],
        zone=zone,
        instance_type="a3-highgpu-1g",
        accelerator="H100",
        gpus_per_instance=1,
        instances_requested=16,
        gap_seconds=gap,
        start_time=datetime(2025, 10, 4, tzinfo=UTC),
        values=tuple(values),
        spot_price_per_gpu=Decimal(spot),
        on_demand_price_per_gpu=Decimal(on_demand),
        tick_prices=None,
        source="trace:test",
    )
