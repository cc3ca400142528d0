"""AWS GPU offers from the EC2 and Price List APIs (does I/O, through the boto3 clients it is given).

The AWS adapter (:mod:`providers.aws`) calls these and maps SDK errors; this module knows the
API shapes. Facts it depends on, checked against botocore 1.44's service models and the EC2 /
Price List documentation:

* ``DescribeInstanceTypeOfferings(LocationType="availability-zone", Filters=[instance-type])``
  says which availability zones offer each type (paged by ``NextToken``).
* ``DescribeInstanceTypes(InstanceTypes=[...])`` → ``GpuInfo.Gpus[].{Name, Manufacturer, Count}``,
  ``VCpuInfo.DefaultVCpus``, ``MemoryInfo.SizeInMiB``, ``SupportedUsageClasses``
  (``on-demand`` / ``spot`` / ``capacity-block``). Only types a region offers are asked for: an
  unknown type fails the whole call with ``InvalidInstanceType``.
* ``DescribeSpotPriceHistory(StartTime=now, ProductDescriptions=["Linux/UNIX"])``: "it also
  returns the last price change before the start time, which is the effective price as of the
  start time" (EC2 API reference), so a start time of *now* gives the current price per zone.
* Price List ``GetProducts`` (service code ``AmazonEC2``; endpoint in us-east-1) with
  ``TERM_MATCH`` filters on ``instanceType``, ``regionCode``, ``operatingSystem=Linux``,
  ``tenancy=Shared``, ``preInstalledSw=NA``, ``capacitystatus=Used``. ``PriceList`` items are
  JSON *strings*: ``terms.OnDemand.<offer>.priceDimensions.<rate>.pricePerUnit.USD`` per ``Hrs``.
* ``DescribeCapacityReservations(Filters=[state=active, instance-type])`` →
  ``AvailableInstanceCount`` and ``ReservationType`` (``default`` = On-Demand Capacity
  Reservation, ``capacity-block`` = Capacity Block for ML).

Zones are availability-zone *names* (``us-east-1a``), which is what ``Placement.AvailabilityZone``
takes. Names are mapped to physical zones per account (zone IDs such as ``use1-az6`` are the
same for everyone), so a zone name is only meaningful inside the account that listed it.

Reserved offers are priced at 0 USD per instance-hour: an On-Demand Capacity Reservation bills
its on-demand rate whether used or not and a Capacity Block is paid up front, so launching into
one costs nothing more. Their availability is ``AvailableInstanceCount``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from broker.core.types import Availability, CapacityType, Offer
from pricing.normalize import canonical_accelerator

# GPU instance types we list by default: the 8-GPU training boxes (and p5's 1-GPU size).
DEFAULT_GPU_INSTANCE_TYPES: tuple[str, ...] = (
    "p4d.24xlarge",  # 8x A100 40 GB
    "p4de.24xlarge",  # 8x A100 80 GB
    "p5.4xlarge",  # 1x H100
    "p5.48xlarge",  # 8x H100
    "p5e.48xlarge",  # 8x H200
    "p5en.48xlarge",  # 8x H200
    "p6-b200.48xlarge",  # 8x B200
    "p6-b300.48xlarge",  # 8x B300
)
PRICING_REGION = "us-east-1"  # the Price List API is served from a few regions; us-east-1 is one
SPOT_PRODUCT_DESCRIPTION = "Linux/UNIX"
# Attributes of the one EC2 product that is "Linux, shared tenancy, on-demand, no licensed software".
ON_DEMAND_ATTRIBUTES: Mapping[str, str] = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
}
RESERVATION_PLATFORM = "Linux/UNIX"
SOURCE_ON_DEMAND = "aws:pricing-api"
SOURCE_SPOT = "aws:spot-price-history"
SOURCE_RESERVED = "aws:capacity-reservations"
_MIB_PER_GIB = Decimal(1024)


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """What ``DescribeInstanceTypes`` says about one GPU instance type."""

    instance_type: str
    accelerator: str
    accelerator_count: int
    vcpus: Decimal | None
    memory_gib: Decimal | None
    usage_classes: frozenset[str]


@dataclass(frozen=True, slots=True)
class ReservedCapacity:
    """Active capacity reservations of one type in one zone, summed."""

    instance_type: str
    zone: str
    available: int
    total: int
    reservation_ids: tuple[str, ...]


def offered_zones(ec2: Any, instance_types: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Instance type → the availability zones (names) of the client's region that offer it."""
    zones: dict[str, set[str]] = {}
    pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": list(instance_types)}],
    )
    for page in pages:
        for offering in page.get("InstanceTypeOfferings", []):
            zones.setdefault(offering["InstanceType"], set()).add(offering["Location"])
    return {itype: tuple(sorted(found)) for itype, found in zones.items()}


def parse_gpu_spec(raw: Mapping[str, Any]) -> GpuSpec | None:
    """A GpuSpec from one ``DescribeInstanceTypes`` item, or None when the type has no GPU."""
    gpus = (raw.get("GpuInfo") or {}).get("Gpus") or []
    count = sum(int(gpu.get("Count") or 0) for gpu in gpus)
    if not gpus or count <= 0:
        return None
    names = {canonical_accelerator(_gpu_name(gpu)) for gpu in gpus}
    vcpus = (raw.get("VCpuInfo") or {}).get("DefaultVCpus")
    mib = (raw.get("MemoryInfo") or {}).get("SizeInMiB")
    return GpuSpec(
        instance_type=raw["InstanceType"],
        accelerator="+".join(sorted(names)),
        accelerator_count=count,
        vcpus=Decimal(vcpus) if vcpus is not None else None,
        memory_gib=Decimal(mib) / _MIB_PER_GIB if mib is not None else None,
        usage_classes=frozenset(raw.get("SupportedUsageClasses") or ()),
    )


def _gpu_name(gpu: Mapping[str, Any]) -> str:
    """EC2 names both A100 sizes "A100" (p4d: 40 GB, p4de: 80 GB); users choose between them, as
    SkyPilot's catalog does, so the 80 GB one is named apart."""
    name = str(gpu.get("Name", ""))
    mib = int((gpu.get("MemoryInfo") or {}).get("SizeInMiB") or 0)
    return "A100-80GB" if name.upper() == "A100" and mib >= 80 * 1024 else name


def gpu_specs(ec2: Any, instance_types: Sequence[str]) -> dict[str, GpuSpec]:
    """Instance type → GpuSpec for the given (offered) types; types without GPUs are left out."""
    specs: dict[str, GpuSpec] = {}
    if not instance_types:
        return specs
    for page in ec2.get_paginator("describe_instance_types").paginate(InstanceTypes=list(instance_types)):
        for raw in page.get("InstanceTypes", []):
            spec = parse_gpu_spec(raw)
            if spec is not None:
                specs[spec.instance_type] = spec
    return specs


def latest_spot_prices(
    ec2: Any, instance_types: Sequence[str], now: datetime
) -> dict[tuple[str, str], Decimal]:
    """(zone, instance type) → the spot price in effect now (the newest entry of each pair)."""
    newest: dict[tuple[str, str], tuple[datetime, Decimal]] = {}
    if not instance_types:
        return {}
    pages = ec2.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=list(instance_types),
        ProductDescriptions=[SPOT_PRODUCT_DESCRIPTION],
        StartTime=now,
    )
    for page in pages:
        for entry in page.get("SpotPriceHistory", []):
            if entry.get("ProductDescription") != SPOT_PRODUCT_DESCRIPTION:
                continue
            price = _decimal(entry.get("SpotPrice"))
            if price is None:
                continue
            key = (entry["AvailabilityZone"], entry["InstanceType"])
            stamp = entry["Timestamp"]
            if key not in newest or stamp > newest[key][0]:
                newest[key] = (stamp, price)
    return {key: price for key, (_, price) in newest.items()}


def pricing_filters(region: str, instance_type: str) -> list[dict[str, str]]:
    """The GetProducts filters that select the on-demand Linux product of one type in one region."""
    fields = {"instanceType": instance_type, "regionCode": region, **ON_DEMAND_ATTRIBUTES}
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in fields.items()]


def parse_on_demand_price(
    item: str | Mapping[str, Any], *, instance_type: str, region: str
) -> Decimal | None:
    """USD per hour from one PriceList item, or None when the item is not the product we asked for."""
    doc = json.loads(item) if isinstance(item, str) else item
    attributes = (doc.get("product") or {}).get("attributes") or {}
    if attributes.get("instanceType") != instance_type or attributes.get("regionCode") != region:
        return None
    if any(attributes.get(key) != value for key, value in ON_DEMAND_ATTRIBUTES.items()):
        return None
    if attributes.get("operation", "RunInstances") != "RunInstances":  # RunInstances:00xx = licensed OS
        return None
    prices = []
    for term in ((doc.get("terms") or {}).get("OnDemand") or {}).values():
        for dimension in (term.get("priceDimensions") or {}).values():
            if dimension.get("unit") != "Hrs":
                continue
            price = _decimal((dimension.get("pricePerUnit") or {}).get("USD"))
            if price is not None and price > 0:  # placeholder SKUs carry 0.0000000000
                prices.append(price)
    return min(prices) if prices else None


def on_demand_price(pricing: Any, region: str, instance_type: str) -> Decimal | None:
    """The on-demand Linux price of one instance type in one region, from the Price List API."""
    prices = []
    pages = pricing.get_paginator("get_products").paginate(
        ServiceCode="AmazonEC2",
        Filters=pricing_filters(region, instance_type),
        FormatVersion="aws_v1",
        PaginationConfig={"PageSize": 100},
    )
    for page in pages:
        for item in page.get("PriceList", []):
            price = parse_on_demand_price(item, instance_type=instance_type, region=region)
            if price is not None:
                prices.append(price)
    return min(prices) if prices else None


def reserved_capacity(ec2: Any, instance_types: Sequence[str]) -> list[ReservedCapacity]:
    """Active Linux capacity reservations (ODCRs and Capacity Blocks), summed per (type, zone)."""
    sums: dict[tuple[str, str], tuple[int, int, list[str]]] = {}
    pages = ec2.get_paginator("describe_capacity_reservations").paginate(
        Filters=[
            {"Name": "state", "Values": ["active"]},
            {"Name": "instance-type", "Values": list(instance_types)},
        ]
    )
    for page in pages:
        for raw in page.get("CapacityReservations", []):
            if raw.get("State") != "active" or raw.get("InstancePlatform") != RESERVATION_PLATFORM:
                continue
            if raw.get("Tenancy", "default") != "default":
                continue
            key = (raw["InstanceType"], raw["AvailabilityZone"])
            available, total, ids = sums.get(key, (0, 0, []))
            ids.append(raw["CapacityReservationId"])
            sums[key] = (
                available + int(raw.get("AvailableInstanceCount") or 0),
                total + int(raw.get("TotalInstanceCount") or 0),
                ids,
            )
    return [
        ReservedCapacity(itype, zone, available, total, tuple(sorted(ids)))
        for (itype, zone), (available, total, ids) in sorted(sums.items())
    ]


def build_offers(
    *,
    cloud: str,
    region: str,
    zones: Mapping[str, Sequence[str]],
    specs: Mapping[str, GpuSpec],
    on_demand: Mapping[str, Decimal],
    spot: Mapping[tuple[str, str], Decimal],
    reserved: Iterable[ReservedCapacity],
    observed_at: datetime,
) -> list[Offer]:
    """Offers of one region: on-demand and spot per offering zone, reserved per reserved zone."""
    offers: list[Offer] = []

    def offer(
        spec: GpuSpec,
        zone: str,
        capacity: CapacityType,
        price: Decimal,
        source: str,
        availability: Availability = Availability.UNKNOWN,
    ) -> Offer:
        return Offer(
            cloud=cloud,
            region=region,
            zone=zone,
            instance_type=spec.instance_type,
            accelerator=spec.accelerator,
            accelerator_count=spec.accelerator_count,
            vcpus=spec.vcpus,
            memory_gib=spec.memory_gib,
            capacity_type=capacity,
            price_per_hour=price,
            currency="USD",
            source=source,
            observed_at=observed_at,
            availability=availability,
        )

    for itype in sorted(specs):
        spec = specs[itype]
        for zone in zones.get(itype, ()):
            if itype in on_demand and "on-demand" in spec.usage_classes:
                offers.append(offer(spec, zone, CapacityType.ON_DEMAND, on_demand[itype], SOURCE_ON_DEMAND))
            if (zone, itype) in spot and "spot" in spec.usage_classes:
                offers.append(offer(spec, zone, CapacityType.SPOT, spot[(zone, itype)], SOURCE_SPOT))
    for block in reserved:
        spec = specs.get(block.instance_type)
        if spec is None:
            continue
        availability = Availability.AVAILABLE if block.available > 0 else Availability.UNAVAILABLE
        offers.append(
            offer(spec, block.zone, CapacityType.RESERVED, Decimal(0), SOURCE_RESERVED, availability)
        )
    return offers


def _decimal(value: object) -> Decimal | None:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() and number >= 0 else None


__all__ = [
    "DEFAULT_GPU_INSTANCE_TYPES", "ON_DEMAND_ATTRIBUTES", "PRICING_REGION", "SOURCE_ON_DEMAND",
    "SOURCE_RESERVED", "SOURCE_SPOT", "SPOT_PRODUCT_DESCRIPTION", "GpuSpec", "ReservedCapacity",
    "build_offers", "gpu_specs", "latest_spot_prices", "offered_zones", "on_demand_price", "parse_gpu_spec",
    "parse_on_demand_price", "pricing_filters", "reserved_capacity",
]  # fmt: skip
