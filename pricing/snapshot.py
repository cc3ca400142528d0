"""Parser for gpubroker's bundled price snapshot, ``pricing/data/offers.csv`` (pure: no I/O).

The snapshot is a compact table transcribed from SkyPilot's public catalog (see
``pricing/data/README.md``): one row per instance type and place, with an on-demand and an
optional spot price per instance-hour. Each row becomes one or two :class:`Offer` objects.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime

from broker.core.types import CapacityType, Offer
from pricing.normalize import accelerator_count, canonical_accelerator
from pricing.rows import CatalogFormatError, CatalogProblem, RowFields

COLUMNS: tuple[str, ...] = (
    "cloud",
    "instance_type",
    "accelerator",
    "accelerator_count",
    "vcpus",
    "memory_gib",
    "region",
    "zone",
    "price_ondemand_usd_hr",
    "price_spot_usd_hr",
)

# Vast rows carry SkyPilot's fixed minimum request (32 vCPUs, 64 GiB), not the host's specs.
_HOST_SPECS_UNKNOWN = frozenset({"vast"})


def parse_offers_csv(
    text: str, *, source_name: str, observed_at: datetime, sources: dict[str, str]
) -> list[Offer]:
    """Parse the bundled snapshot. All-or-nothing: every problem is reported together.

    ``sources`` maps each cloud to where its rows came from (file and commit); a row of a
    cloud without an entry is a problem, so no price is ever loaded without its provenance.
    Rows with an empty ``instance_type`` (GCP GPUs attached to a general-purpose host) are
    skipped: their price leaves out the host VM, so they cannot be compared with whole-VM prices.
    """
    reader = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    problems: list[CatalogProblem] = []
    header = next(reader, None)
    if header is None:
        raise CatalogFormatError(source_name, [CatalogProblem(None, None, "empty file: no header row")])
    problems += [CatalogProblem(1, c, "required column is missing") for c in COLUMNS if c not in header]
    problems += [CatalogProblem(1, c, f"unknown column {c!r}") for c in header if c not in COLUMNS]
    if problems:
        raise CatalogFormatError(source_name, problems)
    offers: list[Offer] = []
    for row in reader:
        line = reader.line_num
        if not row:
            continue
        if len(row) != len(header):
            problems.append(CatalogProblem(line, None, f"expected {len(header)} fields, found {len(row)}"))
            continue
        f = RowFields(dict(zip(header, row, strict=True)), line, problems)
        cloud = f.text("cloud").lower()
        if cloud not in sources:
            f.fail("cloud", f"no source recorded for cloud {cloud!r}")
        for required in ("region", "accelerator"):
            if not f.text(required):
                f.fail(required, "must not be empty")
        listed_count = f.accelerator_count("accelerator_count")
        if listed_count is None and f.ok:
            f.fail("accelerator_count", "must be a whole number of GPUs")
        vcpus = f.number("vcpus", what="vCPU count")
        memory = f.number("memory_gib", what="memory size")
        prices = {
            CapacityType.ON_DEMAND: f.number("price_ondemand_usd_hr", what="price"),
            CapacityType.SPOT: f.number("price_spot_usd_hr", what="price"),
        }
        if not f.ok or listed_count is None or not f.text("instance_type"):
            continue
        if cloud in _HOST_SPECS_UNKNOWN:
            vcpus = memory = None
        instance_type = f.text("instance_type")
        for capacity, price in prices.items():
            if price is None:
                continue
            offers.append(
                Offer(
                    cloud=cloud,
                    region=f.text("region"),
                    zone=f.text("zone") or None,
                    instance_type=instance_type,
                    accelerator=canonical_accelerator(f.text("accelerator")),
                    accelerator_count=accelerator_count(cloud, instance_type, listed_count),
                    vcpus=vcpus,
                    memory_gib=memory,
                    capacity_type=capacity,
                    price_per_hour=price,
                    currency="USD",
                    source=sources[cloud],
                    observed_at=observed_at,
                )
            )
    if problems:
        raise CatalogFormatError(source_name, problems)
    return offers
