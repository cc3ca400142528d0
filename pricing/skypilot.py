"""Parser for SkyPilot's v8 ``vms.csv`` price catalogs (aws, gcp, azure, lambda, runpod); pure: no I/O.

Text in, :class:`~broker.core.types.Offer` objects out. The caller reads the file (or the HTTP
body) and passes its text; this module never touches files, the network or a database.

Parsing is all-or-nothing: every problem in the file is collected and raised together as one
:class:`CatalogFormatError` (``FILE:LINE: field X: message`` per problem), or the offers are
returned. A half-read catalog never reaches the broker.

What one row becomes
--------------------
* Columns are matched by *name* against :data:`KNOWN_COLUMNS` (order does not matter). A
  required column that is missing, or a column not in that cloud's set, is a problem on line 1.
* A row with an empty ``AcceleratorName`` is a CPU instance: valid, checked, but not an offer.
* A GPU row gives one ``ON_DEMAND`` offer from ``Price`` and one ``SPOT`` offer from
  ``SpotPrice``, each only when that field is non-empty. Prices are ``Decimal(text)``, never
  floats. Non-numeric, NaN/infinite and negative numbers are problems.
* A final price of exactly 0 is skipped without a problem: in SkyPilot's catalogs 0 means
  "no price known", not "free" (``fetch_azure.py`` fills missing H100 prices with 0 "to enable
  launching"; GCP's ``a4-highgpu-8g`` VM rows are 0.0 and only carry a price once the B200 GPU
  row is added to them).
* ``AcceleratorCount`` may be written ``8.0``; it must be a positive whole number. Counts
  strictly between 0 and 1 are SkyPilot's fractional-GPU sizes (AWS ``g6f``/``gr6f`` L4 slices,
  Azure ``Standard_NV{6,12,18}ads_A10_v5``, written e.g. ``0.125``/``0.167`` by the fetchers):
  valid, but not whole-GPU offers, so skipped. Other non-whole counts, 0 and negatives are
  problems. Names go through :func:`pricing.normalize.canonical_accelerator`, counts through
  :func:`pricing.normalize.accelerator_count` (which fixes Azure ND96isr H100 v5: 12 -> 8).
* Two rows that give the same :attr:`Offer.key` at the same price are one offer; at different
  prices they are a problem (the price would be ambiguous).

GCP: what SkyPilot does, and what we do
---------------------------------------
GCP's catalog is split (``sky/catalog/data_fetchers/fetch_gcp.py``, ``get_catalog_df``): VM rows
carry ``InstanceType``/``vCPUs``/``MemoryGiB`` and the *host* price, and never an
``AcceleratorName`` -- not even ``a2``/``a3``/``a4``, whose GPUs are built in. GPU rows have an
empty ``InstanceType``/``vCPUs``/``MemoryGiB`` and carry ``AcceleratorName``,
``AcceleratorCount`` and the price of that many GPUs in one zone. TPU rows (``tpu-*``) look the
same.

``sky/catalog/gcp_catalog.py`` ``list_accelerators`` (``require_price=True``) joins them:
it takes the rows with an ``AcceleratorName`` (asserting their ``InstanceType`` is empty), sets
TPUs aside uncombined, and for each GPU row picks a host in the *same region and zone*
(``_get_host_instance_type``): for accelerators in ``_ACC_INSTANCE_TYPE_DICTS`` the host must be
one of the machine types listed there for that count (mirrored in :data:`GCP_HOST_ACCELERATORS`);
for any other GPU (T4, V100, P100, P4, K80) the cheapest ``n1-standard/highmem/highcpu`` with at
least ``_NUM_ACC_TO_NUM_CPU`` vCPUs and 4x that memory. GPU rows without a host or without a
``Price`` are dropped; the rest are merged with the host row on
(``InstanceType``, ``Region``, ``AvailabilityZone``) and ``Price = GPU Price + host Price``,
``SpotPrice = GPU SpotPrice + host SpotPrice`` (missing if either part is missing).
``get_accelerators_from_instance_type`` uses the same table, so other ``a3`` variants
(``a3-edgegpu-8g``, ``*-nolssd``) are plain VMs to SkyPilot.

We do the same join from the host side: every VM row whose type is in
:data:`GCP_HOST_ACCELERATORS` is priced as host + the GPU row for that accelerator and count in
the same region and zone (on-demand = both ``Price``; spot = both ``SpotPrice``). SkyPilot's
``show-gpus`` keeps only the cheapest host per GPU row (it matters only for L4, which fits
several ``g2-standard`` sizes); we keep every listed host, each a separate instance type.
Skipped on purpose, without a problem:

* host VM rows with no matching GPU row in their zone (no complete price);
* GPU rows for GPUs attached to general-purpose hosts (T4/V100/P100/P4/K80 on N1): which host
  to add is SkyPilot's sizing policy, not a catalog fact, so there is no complete price (the
  bundled snapshot skips them too);
* TPU rows (not GPUs; SkyPilot does not combine them with a host either).

A GCP VM row that *does* name an accelerator must agree with the table, and a VM type outside
the table must not name one; either is reported as a problem (the schema changed under us).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from broker.core.types import CapacityType, Offer
from pricing.normalize import accelerator_count, canonical_accelerator
from pricing.rows import MAX_REPORTED_PROBLEMS, CatalogFormatError, CatalogProblem, RowFields

__all__ = [
    "KNOWN_COLUMNS",
    "MAX_REPORTED_PROBLEMS",
    "SUPPORTED_CLOUDS",
    "CatalogFormatError",
    "CatalogProblem",
    "cloud_from_path",
    "parse_vms_csv",
]

SUPPORTED_CLOUDS: tuple[str, ...] = ("aws", "gcp", "azure", "lambda", "runpod")

# ---------------------------------------------------------------------------------------------
# The columns of each cloud's v8 vms.csv, in the order SkyPilot writes them.
# Verified against the files in github.com/skypilot-org/skypilot-catalog:
#   aws    catalogs/v8/aws/vms.csv@00148f2a     (and USEFUL_COLUMNS in data_fetchers/fetch_aws.py)
#   gcp    catalogs/v8/gcp/vms.csv@006059e0     (and the column reorder in fetch_gcp.py)
#   azure  catalogs/v8/azure/vms.csv (fork coopslarhette/skypilot-catalog@20291d7e;
#          same as USEFUL_COLUMNS in data_fetchers/fetch_azure.py)
#   lambda catalogs/v8/lambda/vms.csv@0f407038
#   runpod catalogs/v8/runpod/vms.csv@01acdfd4
# Columns in INFORMATIONAL_COLUMNS are known but never read, so they may be absent; every other
# known column is required.
# ---------------------------------------------------------------------------------------------
KNOWN_COLUMNS: dict[str, tuple[str, ...]] = {
    "aws": (
        "InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB",
        "GpuInfo", "Price", "SpotPrice", "Region", "AvailabilityZone", "Arch",
    ),
    "gcp": (
        "InstanceType", "vCPUs", "MemoryGiB", "AcceleratorName", "AcceleratorCount",
        "GpuInfo", "Region", "AvailabilityZone", "Price", "SpotPrice",
    ),
    "azure": (
        "InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB",
        "GpuInfo", "Price", "SpotPrice", "Region", "Generation",
    ),
    "lambda": (
        "InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB",
        "Price", "Region", "GpuInfo", "SpotPrice",
    ),
    "runpod": (
        "InstanceType", "AcceleratorName", "AcceleratorCount", "vCPUs", "MemoryGiB",
        "Region", "SpotPrice", "Price", "AvailabilityZone", "GpuInfo",
    ),
}  # fmt: skip
INFORMATIONAL_COLUMNS: frozenset[str] = frozenset({"GpuInfo", "Arch", "Generation"})

# GCP machine types with GPUs built in -> (GPU row's AcceleratorName, AcceleratorCount).
# Mirrors _ACC_INSTANCE_TYPE_DICTS in skypilot-org/skypilot sky/catalog/gcp_catalog.py.
GCP_HOST_ACCELERATORS: dict[str, tuple[str, int]] = {
    "a2-highgpu-1g": ("A100", 1),
    "a2-highgpu-2g": ("A100", 2),
    "a2-highgpu-4g": ("A100", 4),
    "a2-highgpu-8g": ("A100", 8),
    "a2-megagpu-16g": ("A100", 16),
    "a2-ultragpu-1g": ("A100-80GB", 1),
    "a2-ultragpu-2g": ("A100-80GB", 2),
    "a2-ultragpu-4g": ("A100-80GB", 4),
    "a2-ultragpu-8g": ("A100-80GB", 8),
    "g2-standard-4": ("L4", 1),
    "g2-standard-8": ("L4", 1),
    "g2-standard-12": ("L4", 1),
    "g2-standard-16": ("L4", 1),
    "g2-standard-32": ("L4", 1),
    "g2-standard-24": ("L4", 2),
    "g2-standard-48": ("L4", 4),
    "g2-standard-96": ("L4", 8),
    "a3-highgpu-1g": ("H100", 1),
    "a3-highgpu-2g": ("H100", 2),
    "a3-highgpu-4g": ("H100", 4),
    "a3-highgpu-8g": ("H100", 8),
    "a3-megagpu-8g": ("H100-MEGA", 8),
    "a3-ultragpu-8g": ("H200", 8),
    "a4-highgpu-8g": ("B200", 8),
}
_GCP_HOSTED_GPUS: frozenset[str] = frozenset(name.upper() for name, _ in GCP_HOST_ACCELERATORS.values())

CURRENCY = "USD"


def cloud_from_path(path: str) -> str | None:
    """'~/.sky/catalogs/v8/aws/vms.csv' -> 'aws' (the directory name before vms.csv, if supported)."""
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if len(parts) < 2 or parts[-1] != "vms.csv":
        return None
    cloud = parts[-2].lower()
    return cloud if cloud in SUPPORTED_CLOUDS else None


@dataclass(frozen=True, slots=True)
class _Row:
    """One data row, checked and typed."""

    line: int
    instance_type: str
    accelerator: str  # "" for a CPU row
    count: int | None  # whole accelerator count; None for CPU rows and fractional GPUs
    vcpus: Decimal | None
    memory_gib: Decimal | None
    price: Decimal | None
    spot_price: Decimal | None
    region: str
    zone: str | None


def parse_vms_csv(
    text: str, *, cloud: str, source_name: str, observed_at: datetime, source: str
) -> list[Offer]:
    """Parse one SkyPilot vms.csv. Pure: text in, offers out. All-or-nothing: collects every problem and
    raises CatalogFormatError listing them (the message shows the first 50 and says how many more), or
    returns offers (in file order; on-demand before spot)."""
    if cloud not in SUPPORTED_CLOUDS:
        raise ValueError(f"unsupported cloud {cloud!r}; expected one of {', '.join(SUPPORTED_CLOUDS)}")
    if observed_at.tzinfo is None or observed_at.utcoffset() is None:
        raise ValueError("observed_at must be timezone-aware")

    problems: list[CatalogProblem] = []
    records = _records(text, problems)
    if not records:
        if not problems:
            problems.append(CatalogProblem(None, None, "empty file: no header row"))
        raise CatalogFormatError(source_name, problems)

    header_line, header = records[0]
    columns = _check_header(header, header_line, cloud, problems)
    if problems:
        raise CatalogFormatError(source_name, problems)

    rows: list[_Row] = []
    for line, fields in records[1:]:
        if len(fields) != len(columns):
            problems.append(
                CatalogProblem(
                    line, None, f"expected {len(columns)} fields (as in the header), found {len(fields)}"
                )
            )
            continue
        row = _parse_row(dict(zip(columns, fields, strict=True)), line, cloud, problems)
        if row is not None:
            rows.append(row)

    made = _gcp_offers(rows, problems) if cloud == "gcp" else _plain_offers(rows, cloud)
    offers = [
        Offer(
            cloud=cloud,
            region=row.region,
            zone=row.zone,
            instance_type=row.instance_type,
            accelerator=canonical_accelerator(acc),
            accelerator_count=accelerator_count(cloud, row.instance_type, count),
            vcpus=row.vcpus,
            memory_gib=row.memory_gib,
            capacity_type=capacity,
            price_per_hour=price,
            currency=CURRENCY,
            source=source,
            observed_at=observed_at,
        )
        for row, acc, count, capacity, price in made
    ]
    unique = _drop_duplicates(offers, [row.line for row, *_ in made], problems)
    if problems:
        raise CatalogFormatError(source_name, problems)
    return unique


# --- reading -----------------------------------------------------------------------------------


def _records(text: str, problems: list[CatalogProblem]) -> list[tuple[int, list[str]]]:
    """CSV records with the physical line each starts on; blank lines dropped; BOM/CRLF handled."""
    if text.startswith("\ufeff"):
        text = text[1:]
    # newline="": split on \n, \r\n and \r without translating, as the csv module expects.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    start = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(CatalogProblem(start, None, f"malformed CSV: {exc}"))
            break
        if fields and not (len(fields) == 1 and not fields[0].strip()):
            records.append((start, fields))
        start = reader.line_num + 1
    return records


def _check_header(header: list[str], line: int, cloud: str, problems: list[CatalogProblem]) -> list[str]:
    columns = [name.strip() for name in header]
    known = KNOWN_COLUMNS[cloud]
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            problems.append(CatalogProblem(line, name, f"duplicate column {name!r}"))
        seen.add(name)
        if name not in known:
            problems.append(
                CatalogProblem(line, name, f"unknown column {name!r} for {cloud} (known: {', '.join(known)})")
            )
    for name in known:
        if name not in seen and name not in INFORMATIONAL_COLUMNS:
            problems.append(CatalogProblem(line, name, f"required column {name!r} is missing"))
    return columns


def _parse_row(
    values: Mapping[str, str], line: int, cloud: str, problems: list[CatalogProblem]
) -> _Row | None:
    f = RowFields(values, line, problems)
    instance_type = f.text("InstanceType")
    accelerator = f.text("AcceleratorName")
    count = f.accelerator_count("AcceleratorCount") if accelerator else None
    vcpus = f.number("vCPUs", what="vCPU count")
    memory = f.number("MemoryGiB", what="memory size")
    price = f.number("Price", what="price")
    spot_price = f.number("SpotPrice", what="price")
    region = f.text("Region")
    if not region:
        f.fail("Region", "empty; every row needs a region")
    if not instance_type and not (cloud == "gcp" and accelerator):
        # Only GCP's accelerator-price rows may leave InstanceType empty.
        f.fail("InstanceType", "empty")
    if not f.ok:
        return None
    return _Row(
        line=line,
        instance_type=instance_type,
        accelerator=accelerator,
        count=count,
        vcpus=vcpus,
        memory_gib=memory,
        price=price,
        spot_price=spot_price,
        region=region,
        zone=f.text("AvailabilityZone") or None,
    )


# --- offers ------------------------------------------------------------------------------------

# (row the offer is about, accelerator name as listed, whole count, capacity type, final price)
_Made = tuple[_Row, str, int, CapacityType, Decimal]


def _priced(
    row: _Row, accelerator: str, count: int, prices: tuple[Decimal | None, Decimal | None]
) -> Iterator[_Made]:
    for capacity, price in zip((CapacityType.ON_DEMAND, CapacityType.SPOT), prices, strict=True):
        # None: no price for this capacity type. 0: SkyPilot's "price unknown" (see module doc).
        if price is not None and price > 0:
            yield row, accelerator, count, capacity, price


def _plain_offers(rows: list[_Row], cloud: str) -> list[_Made]:
    """aws, azure, lambda, runpod: one row is one instance type with its own complete price."""
    made: list[_Made] = []
    for row in rows:
        if row.accelerator and row.count is not None:  # CPU rows and fractional GPUs are skipped
            made += _priced(row, row.accelerator, row.count, (row.price, row.spot_price))
    return made


@dataclass(frozen=True, slots=True)
class _GpuPrice:
    line: int
    price: Decimal | None
    spot_price: Decimal | None


def _gcp_offers(rows: list[_Row], problems: list[CatalogProblem]) -> list[_Made]:
    """GCP: host VM price + GPU price in the same zone, for SkyPilot's GPU machine types."""
    gpu_prices: dict[tuple[str, int, str, str | None], _GpuPrice] = {}
    hosts: list[tuple[_Row, str, int]] = []
    for row in rows:
        if row.instance_type:  # a VM row
            built_in = GCP_HOST_ACCELERATORS.get(row.instance_type)
            if built_in is None:
                if row.accelerator:
                    problems.append(
                        CatalogProblem(
                            row.line,
                            "AcceleratorName",
                            f"GCP VM rows carry no accelerator in SkyPilot's catalog, but "
                            f"{row.instance_type} lists {row.accelerator!r} and is not a GPU "
                            "machine type SkyPilot knows",
                        )
                    )
                continue  # CPU VM (or a GPU family SkyPilot does not treat as one)
            name, count = built_in
            if row.accelerator and (row.accelerator.upper(), row.count) != (name.upper(), count):
                problems.append(
                    CatalogProblem(
                        row.line,
                        "AcceleratorName",
                        f"{row.instance_type} has {name} x{count} built in, "
                        f"but the row lists {row.accelerator} x{row.count}",
                    )
                )
                continue
            hosts.append((row, name, count))
            continue
        # An accelerator-price row (empty InstanceType).
        if row.accelerator.lower().startswith("tpu-") or row.count is None:
            continue  # TPUs are not GPUs and are never combined with a host
        if row.accelerator.upper() not in _GCP_HOSTED_GPUS:
            continue  # T4/V100/P100/P4/K80: attached to an N1 host of SkyPilot's choosing; no complete price
        key = (row.accelerator.upper(), row.count, row.region, row.zone)
        seen = gpu_prices.get(key)
        if seen is None:
            gpu_prices[key] = _GpuPrice(row.line, row.price, row.spot_price)
        elif (seen.price, seen.spot_price) != (row.price, row.spot_price):
            problems.append(
                CatalogProblem(
                    row.line,
                    None,
                    f"{row.accelerator} x{row.count} in {row.zone or row.region} is priced differently "
                    f"on line {seen.line}",
                )
            )

    made: list[_Made] = []
    for host, name, count in hosts:
        gpu = gpu_prices.get((name.upper(), count, host.region, host.zone))
        if gpu is None:
            continue  # the GPU is not priced in this zone: no complete price
        made += _priced(
            host, name, count, (_add(host.price, gpu.price), _add(host.spot_price, gpu.spot_price))
        )
    return made


def _add(host: Decimal | None, gpu: Decimal | None) -> Decimal | None:
    return None if host is None or gpu is None else host + gpu


def _drop_duplicates(offers: list[Offer], lines: list[int], problems: list[CatalogProblem]) -> list[Offer]:
    """Keep the first of offers with the same key and price; a different price is a problem."""
    first: dict[tuple[str, str, str, str, str], tuple[Offer, int]] = {}
    unique: list[Offer] = []
    for offer, line in zip(offers, lines, strict=True):
        seen = first.get(offer.key)
        if seen is None:
            first[offer.key] = (offer, line)
            unique.append(offer)
        elif seen[0].price_per_hour != offer.price_per_hour:
            problems.append(
                CatalogProblem(
                    line,
                    None,
                    f"{offer.instance_type} ({offer.capacity_type.value}) in "
                    f"{offer.zone or offer.region} costs {offer.price_per_hour} here "
                    f"but {seen[0].price_per_hour} on line {seen[1]}",
                )
            )
    return unique
