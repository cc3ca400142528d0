"""Parser for gpubroker's bundled price snapshot, ``pricing/data/offers.csv`` (pure: no I/O).

The snapshot is a compact table transcribed from SkyPilot's public catalog (see
``pricing/data/README.md``): one row per instance type and place, with an on-demand and an
optional spot price per instance-hour. Each row becomes one or two :class:`Offer` objects.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import Decimal, InvalidOperation

from broker.core.types import CapacityType, Offer
from pricing.normalize import accelerator_count, canonical_accelerator
from pricing.skypilot import CatalogFormatError, CatalogProblem

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

_MAX_PROBLEMS = 50


def _decimal(text: str, field: str, line: int, problems: list[CatalogProblem]) -> Decimal | None:
    """Parse an optional non-negative decimal; record a problem and return None when it is bad."""
    if text.strip() == "":
        return None
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        problems.append(CatalogProblem(line, field, f"not a number: {text!r}"))
        return None
    if not value.is_finite() or value < 0:
        problems.append(CatalogProblem(line, field, f"must be a non-negative amount, got {text!r}"))
        return None
    return value


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
        raise CatalogFormatError(source_name, [CatalogProblem(None, None, "the file is empty")])
    missing = [c for c in COLUMNS if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    problems += [CatalogProblem(1, c, "missing column") for c in missing]
    problems += [CatalogProblem(1, c, "unknown column") for c in unknown]
    if problems:
        raise CatalogFormatError(source_name, problems)
    index = {name: header.index(name) for name in COLUMNS}
    offers: list[Offer] = []
    for row in reader:
        line = reader.line_num
        if not row:
            continue
        if len(row) != len(header):
            problems.append(CatalogProblem(line, None, f"expected {len(header)} fields, found {len(row)}"))
            continue
        field = {name: row[i].strip() for name, i in index.items()}
        row_problems: list[CatalogProblem] = []
        cloud = field["cloud"].lower()
        if cloud not in sources:
            row_problems.append(CatalogProblem(line, "cloud", f"no source recorded for cloud {cloud!r}"))
        for required in ("region", "accelerator"):
            if not field[required]:
                row_problems.append(CatalogProblem(line, required, "must not be empty"))
        try:
            listed_count = int(field["accelerator_count"])
            if listed_count <= 0:
                raise ValueError
        except ValueError:
            row_problems.append(
                CatalogProblem(line, "accelerator_count", f"must be a positive whole number, got "
                               f"{field['accelerator_count']!r}")
            )
            listed_count = 0
        vcpus = _decimal(field["vcpus"], "vcpus", line, row_problems)
        memory = _decimal(field["memory_gib"], "memory_gib", line, row_problems)
        prices = {
            CapacityType.ON_DEMAND: _decimal(
                field["price_ondemand_usd_hr"], "price_ondemand_usd_hr", line, row_problems
            ),
            CapacityType.SPOT: _decimal(field["price_spot_usd_hr"], "price_spot_usd_hr", line, row_problems),
        }
        problems += row_problems
        if row_problems or not field["instance_type"]:
            continue
        if cloud in _HOST_SPECS_UNKNOWN:
            vcpus = memory = None
        for capacity, price in prices.items():
            if price is None:
                continue
            offers.append(
                Offer(
                    cloud=cloud,
                    region=field["region"],
                    zone=field["zone"] or None,
                    instance_type=field["instance_type"],
                    accelerator=canonical_accelerator(field["accelerator"]),
                    accelerator_count=accelerator_count(cloud, field["instance_type"], listed_count),
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
        raise CatalogFormatError(source_name, problems[:_MAX_PROBLEMS] + (
            [CatalogProblem(None, None, f"... and {len(problems) - _MAX_PROBLEMS} more problems")]
            if len(problems) > _MAX_PROBLEMS else []
        ))
    return offers
