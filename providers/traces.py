"""Spot availability traces: the shared JSON schema, loading, and "how much capacity at time t" (reads files).

Schema (``../shared/data/spot-traces/README.md``): ``metadata`` (cloud, region, zone,
instance_type, accelerator, accelerators_per_instance, instances_requested, gap_seconds,
start_time, optional list prices), ``data`` (instances available per tick, ``null`` = no sample)
and optional per-tick ``prices``. The GCP H100 traces ship with gpubroker (Apache-2.0); others
are read from a path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from pricing.normalize import canonical_accelerator

BUNDLED_TRACE_SET = "gcp-h100"


class TraceFormatError(ValueError):
    """A trace file does not follow the schema; the message names the file and the field."""


@dataclass(frozen=True, slots=True)
class SpotTrace:
    """One zone's spot availability over time, for one instance type."""

    cloud: str
    region: str
    zone: str
    instance_type: str
    accelerator: str
    gpus_per_instance: int
    instances_requested: int
    gap_seconds: int
    start_time: datetime
    values: tuple[int | None, ...]
    spot_price_per_gpu: Decimal | None
    on_demand_price_per_gpu: Decimal | None
    tick_prices: tuple[Decimal | None, ...] | None
    source: str

    @property
    def duration_seconds(self) -> int:
        return self.gap_seconds * len(self.values)

    def tick(self, at: datetime) -> int:
        """The tick index covering ``at``; the trace repeats after its end (a replay loops)."""
        elapsed = int((at - self.start_time).total_seconds())
        return (elapsed // self.gap_seconds) % len(self.values)

    def instances_available(self, index: int) -> int:
        """Instances obtainable at tick ``index``; a missing sample repeats the last one seen."""
        for back in range(len(self.values)):
            value = self.values[(index - back) % len(self.values)]
            if value is not None:
                return value
        return 0

    def gpus_available(self, index: int) -> int:
        return self.instances_available(index) * self.gpus_per_instance

    def spot_price_per_gpu_at(self, index: int) -> Decimal | None:
        if self.tick_prices is not None and self.tick_prices[index] is not None:
            return self.tick_prices[index] / self.gpus_per_instance  # type: ignore[operator]
        return self.spot_price_per_gpu


def _price(value: Any, per: int) -> Decimal | None:
    return None if value is None else Decimal(str(value)) / per


def parse_trace(document: dict[str, Any], *, source_name: str) -> SpotTrace:
    """A :class:`SpotTrace` from one decoded trace file; raises TraceFormatError naming the field."""
    try:
        meta = document["metadata"]
        values = document["data"]
        gap = int(meta["gap_seconds"])
        if gap <= 0 or not values:
            raise TraceFormatError(f"{source_name}: gap_seconds must be positive and data non-empty")
        if any(v is not None and (not isinstance(v, int) or v < 0) for v in values):
            raise TraceFormatError(f"{source_name}: data must hold non-negative integers or null")
        gpus = int(meta.get("accelerators_per_instance") or 1)
        # Prices in the metadata are for a3-highgpu-8g (8 GPUs) in the GCP H100 traces.
        priced_gpus = 8 if "spot_price_a3_highgpu_8g_usd_hr" in meta else gpus
        raw_ticks = document.get("prices")
        tick_prices = (
            tuple(None if p is None else Decimal(str(p)) * gpus / priced_gpus for p in raw_ticks)
            if raw_ticks is not None
            else None
        )
        if tick_prices is not None and len(tick_prices) != len(values):
            raise TraceFormatError(f"{source_name}: prices and data differ in length")
        return SpotTrace(
            cloud=str(meta["cloud"]),
            region=str(meta["region"]),
            zone=str(meta["zone"]),
            instance_type=str(meta["instance_type"]).split(" ")[0],
            accelerator=canonical_accelerator(str(meta["accelerator"])),
            gpus_per_instance=gpus,
            instances_requested=int(meta.get("instances_requested") or 1),
            gap_seconds=gap,
            start_time=datetime.fromisoformat(str(meta["start_time"])),
            values=tuple(values),
            spot_price_per_gpu=_price(meta.get("spot_price_a3_highgpu_8g_usd_hr"), priced_gpus),
            on_demand_price_per_gpu=_price(meta.get("on_demand_price_a3_highgpu_8g_usd_hr"), priced_gpus),
            tick_prices=tick_prices,
            source=f"trace:{source_name}",
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, TraceFormatError):
            raise
        raise TraceFormatError(f"{source_name}: not a spot trace ({type(exc).__name__}: {exc})") from exc


def load_trace(path: Path) -> SpotTrace:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TraceFormatError(f"{path}: cannot read trace: {exc}") from exc
    return parse_trace(document, source_name=path.name)


def load_traces(paths: Iterable[Path]) -> list[SpotTrace]:
    """Every ``*.json`` trace under the given files or folders, sorted by zone."""
    found: list[SpotTrace] = []
    for path in paths:
        files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
        found += [load_trace(f) for f in files if f.name != "index.json"]
    return sorted(found, key=lambda t: (t.cloud, t.zone, t.instance_type))


def bundled_traces() -> list[SpotTrace]:
    """The GCP H100 traces shipped with gpubroker (see their ATTRIBUTION.md)."""
    folder = resources.files("providers") / "data" / "spot-traces" / BUNDLED_TRACE_SET
    traces = [
        parse_trace(json.loads(entry.read_text(encoding="utf-8")), source_name=entry.name)
        for entry in folder.iterdir()
        if entry.name.endswith(".json")
    ]
    return sorted(traces, key=lambda t: t.zone)


def zones(traces: Sequence[SpotTrace]) -> list[str]:
    return sorted({t.zone for t in traces})
