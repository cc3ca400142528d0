"""GCP offers: Billing Catalog SKUs and machine types -> priced GPU offers (pure: no I/O).

How Compute Engine prices an accelerator-optimized VM (checked against the catalog, SkyPilot's
``sky/catalog/data_fetchers/fetch_gcp.py`` and SpareCores' ``sc_crawler/vendors/_gcp.py``):
there is no SKU for a whole ``a3-highgpu-8g``. Google "bills accelerator-optimized machine types
for their attached GPUs, predefined vCPU, memory, and bundled Local SSD (if applicable)"
(cloud.google.com/compute/docs/accelerator-optimized-machines, "Pricing"), so an hour is

    vCPUs x "<Series> Instance Core running in <place>"        (resourceGroup CPU, unit h)
  + GiB   x "<Series> Instance Ram running in <place>"         (resourceGroup RAM, unit GiBy.h)
  + GPUs  x "Nvidia H100 80GB GPU running in <place>"          (resourceGroup GPU, unit h)
  + GiB of bundled Local SSD x "SSD backed Local Storage ..."  (resourceGroup LocalSSD, GiBy.mo / 730)

Spot rows carry ``usageType: Preemptible`` and descriptions "Spot Preemptible A3 Instance Core
running in ...", "Nvidia H100 80GB GPU attached to Spot Preemptible VMs running in ..." (older
catalogs: "Spot Preemptible Nvidia H100 80GB GPU running in ..."); both spellings are read.
Newer GPU SKUs drop the vendor ("H200 141GB GPU running in Netherlands"). Commitment, reserved,
sole-tenancy, DWS and custom SKUs never match the description patterns below and are ignored.
A SKU lists the regions it prices in ``serviceRegions``; where a region-specific SKU and a
multi-region one ("running in Americas") both list a region, the region-specific one wins.

The adapter (``providers/gcp.py``) fetches; this module turns what it fetched into offers.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from google.cloud import billing_v1, compute_v1

from broker.core.types import Availability, CapacityType, Offer
from pricing.normalize import canonical_accelerator

PROVIDER = "gcp"
GPU_MACHINE_TYPES = (
    "a3-highgpu-1g",
    "a3-highgpu-2g",
    "a3-highgpu-4g",
    "a3-highgpu-8g",
    "a3-megagpu-8g",
    "a3-ultragpu-8g",
    "a2-highgpu-1g",
    "a2-highgpu-2g",
    "a2-highgpu-4g",
    "a2-highgpu-8g",
    "a2-megagpu-16g",
    "a2-ultragpu-1g",
    "a2-ultragpu-2g",
    "a2-ultragpu-4g",
    "a2-ultragpu-8g",
)
# Sold only as Spot, Flex-start or reservations, never as plain on-demand VMs
# (cloud.google.com/compute/docs/accelerator-optimized-machines, "Pricing and consumption options").
NOT_ON_DEMAND = frozenset({"a3-highgpu-1g", "a3-highgpu-2g", "a3-highgpu-4g", "a3-ultragpu-8g"})
CATALOG_SOURCE = "gcp:billing-catalog"
NANOS = Decimal("0.000000001")
HOURS_PER_MONTH = Decimal(730)  # the catalog's conversion for GiB-month storage SKUs
LOCAL_SSD_PARTITION_GIB = 375  # every bundled Local SSD partition is 375 GiB
PRICE_QUANTUM = Decimal("0.000001")

# Hours in one catalog usage unit, for the units the SKUs we read use.
_UNIT_HOURS: dict[str, Decimal] = {"h": Decimal(1), "GiBy.h": Decimal(1), "GiBy.mo": HOURS_PER_MONTH}


class Usage(enum.StrEnum):
    """The catalog's ``category.usageType`` values we price (commitments are not list prices)."""

    ON_DEMAND = "OnDemand"
    SPOT = "Preemptible"  # Spot VMs are billed on the Preemptible SKUs


# GPU SKU description (vendor, "Spot Preemptible" and place stripped) -> GCE accelerator type.
GPU_SKU_ACCELERATORS: dict[str, str] = {
    "H100 80GB GPU": "nvidia-h100-80gb",
    "H100 80GB Mega GPU": "nvidia-h100-mega-80gb",  # regions spell A3 Mega's GPU three ways
    "H100 Mega 80GB GPU": "nvidia-h100-mega-80gb",
    "H100 80GB Plus GPU": "nvidia-h100-mega-80gb",
    "H200 141GB GPU": "nvidia-h200-141gb",
    "A100 80GB GPU": "nvidia-a100-80gb",
    "A100 GPU": "nvidia-tesla-a100",
}

# Machine-type prefix -> the host SKU series that price its cores and RAM, most specific first.
# A2 Ultra shares the A2 core/RAM SKUs; A3 High/Mega/Ultra use "A3 Instance" unless the catalog
# has a series of their own.
HOST_SKU_SERIES: dict[str, tuple[str, ...]] = {
    "a3-highgpu": ("A3 High", "A3"),
    "a3-megagpu": ("A3 Mega", "A3"),
    "a3-ultragpu": ("A3 Ultra", "A3"),
    "a3-edgegpu": ("A3 Edge", "A3"),
    "a2-highgpu": ("A2",),
    "a2-megagpu": ("A2",),
    "a2-ultragpu": ("A2 Ultra", "A2"),
}

_GPU_RE = re.compile(
    r"^(?:Spot Preemptible )?(?:Nvidia |NVIDIA )?(?:Tesla )?(?P<stem>.+?)"
    r"(?: attached to Spot Preemptible VMs)? running in (?P<place>.+)$"
)
_HOST_RE = re.compile(
    r"^(?:Spot Preemptible )?(?P<series>[A-Z][A-Za-z0-9 ]*?) Instance (?P<kind>Core|Ram) running in "
)
_LOCAL_SSD_RE = re.compile(r"^SSD backed Local Storage(?: attached to Spot Preemptible VMs)?(?: in .+)?$")


@dataclass(frozen=True, slots=True)
class CatalogSku:
    """The fields of one Billing Catalog SKU that pricing needs, with the unit price as Decimal."""

    description: str
    resource_family: str
    resource_group: str
    usage_type: str
    service_regions: tuple[str, ...]
    usage_unit: str
    unit_price: Decimal
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """A GCE machine type as ``machineTypes`` describes it (GPU types only)."""

    name: str
    guest_cpus: int
    memory_mb: int
    accelerator_type: str
    accelerator_count: int
    local_ssd_partitions: int = 0

    @property
    def memory_gib(self) -> Decimal:
        return Decimal(self.memory_mb) / 1024

    @property
    def local_ssd_gib(self) -> int:
        return self.local_ssd_partitions * LOCAL_SSD_PARTITION_GIB

    @property
    def series(self) -> str:
        return self.name.rsplit("-", 1)[0]


def money(units: int | str, nanos: int) -> Decimal:
    """A ``google.type.Money`` amount as an exact Decimal (units may arrive as a JSON string)."""
    return Decimal(int(units)) + Decimal(nanos) * NANOS


_K = TypeVar("_K", bound=tuple[object, ...])


@dataclass(frozen=True, slots=True)
class _Rate:
    per_hour: Decimal
    specificity: int  # how many regions the SKU covers: fewer is more specific


def _keep_most_specific(table: dict[_K, _Rate], key: _K, rate: _Rate) -> None:
    known = table.get(key)
    if known is None or rate.specificity < known.specificity:
        table[key] = rate


@dataclass
class PriceBook:
    """Hourly unit rates keyed by what they price, per region and usage."""

    # (series, "core"|"ram", usage, region), (accelerator type, usage, region), (usage, region): per hour
    host: dict[tuple[str, str, Usage, str], _Rate] = field(default_factory=dict)
    gpu: dict[tuple[str, Usage, str], _Rate] = field(default_factory=dict)
    local_ssd: dict[tuple[Usage, str], _Rate] = field(default_factory=dict)  # per GiB-hour

    @classmethod
    def from_skus(cls, skus: Iterable[CatalogSku]) -> PriceBook:
        book = cls()
        for sku in skus:
            book.add(sku)
        return book

    def add(self, sku: CatalogSku) -> None:
        try:
            usage = Usage(sku.usage_type)
        except ValueError:
            return  # Commit1Yr / Commit3Yr and the like are not list prices
        hours = _UNIT_HOURS.get(sku.usage_unit)
        if sku.currency != "USD" or hours is None or not sku.service_regions:
            return
        rate = _Rate(sku.unit_price / hours, len(sku.service_regions))
        if sku.resource_group == "GPU":
            match = _GPU_RE.match(sku.description)
            accelerator = GPU_SKU_ACCELERATORS.get(match["stem"]) if match else None
            if accelerator:
                for region in sku.service_regions:
                    _keep_most_specific(self.gpu, (accelerator, usage, region), rate)
        elif sku.resource_group in ("CPU", "RAM"):
            match = _HOST_RE.match(sku.description)
            if match:
                for region in sku.service_regions:
                    key = (match["series"], match["kind"].lower(), usage, region)
                    _keep_most_specific(self.host, key, rate)
        elif sku.resource_group == "LocalSSD" and _LOCAL_SSD_RE.match(sku.description):
            for region in sku.service_regions:
                _keep_most_specific(self.local_ssd, (usage, region), rate)

    def _host_rates(self, series: str, usage: Usage, region: str) -> tuple[Decimal, Decimal] | None:
        for label in HOST_SKU_SERIES.get(series, ()):
            core = self.host.get((label, "core", usage, region))
            ram = self.host.get((label, "ram", usage, region))
            if core is not None and ram is not None:
                return core.per_hour, ram.per_hour
        return None

    def machine_price(self, machine: MachineSpec, *, region: str, usage: Usage) -> Decimal | None:
        """USD per instance-hour, or None when the catalog lacks a component (never a partial price).

        Bundled Local SSD is added when the catalog has its rate; it is under 1% of an A3 hour,
        so a missing Local SSD SKU does not hide the offer.
        """
        host = self._host_rates(machine.series, usage, region)
        gpu = self.gpu.get((machine.accelerator_type, usage, region))
        if host is None or gpu is None:
            return None
        core, ram = host
        price = core * machine.guest_cpus + ram * machine.memory_gib
        price += gpu.per_hour * machine.accelerator_count
        ssd = self.local_ssd.get((usage, region))
        if machine.local_ssd_partitions and ssd is not None:
            price += ssd.per_hour * machine.local_ssd_gib
        return price.quantize(PRICE_QUANTUM)


def accelerator_source_name(accelerator_type: str) -> str:
    """GCE's accelerator type as the GPU name SkyPilot uses (``nvidia-h100-80gb`` -> ``H100-80GB``).

    The result goes through :func:`pricing.normalize.canonical_accelerator`, which folds it.
    """
    name = accelerator_type.lower().removeprefix("nvidia-").removeprefix("tesla-")
    return name.upper()


def region_of(zone: str) -> str:
    """``us-central1-a`` -> ``us-central1``."""
    return zone.rsplit("-", 1)[0]


def catalog_sku(sku: billing_v1.Sku) -> CatalogSku | None:
    """The pricing fields of a catalog SKU: its current price, last (marginal) tier."""
    if not sku.pricing_info or not sku.pricing_info[0].pricing_expression.tiered_rates:
        return None
    expression = sku.pricing_info[0].pricing_expression
    unit_price = expression.tiered_rates[-1].unit_price
    return CatalogSku(
        description=sku.description,
        resource_family=sku.category.resource_family,
        resource_group=sku.category.resource_group,
        usage_type=sku.category.usage_type,
        service_regions=tuple(sku.service_regions),
        usage_unit=expression.usage_unit,
        unit_price=money(unit_price.units, unit_price.nanos),
        currency=unit_price.currency_code or "USD",
    )


def machine_spec(machine_type: compute_v1.MachineType) -> MachineSpec | None:
    """A GPU machine type from ``machineTypes`` (``accelerators[0]``), or None for CPU/deprecated ones."""
    if not machine_type.accelerators or machine_type.deprecated.state:
        return None
    accelerator = machine_type.accelerators[0]
    return MachineSpec(
        name=machine_type.name,
        guest_cpus=machine_type.guest_cpus,
        memory_mb=machine_type.memory_mb,
        accelerator_type=accelerator.guest_accelerator_type,
        accelerator_count=accelerator.guest_accelerator_count,
        local_ssd_partitions=machine_type.bundled_local_ssds.partition_count,
    )


def make_offer(
    machine: MachineSpec,
    zone: str,
    capacity: CapacityType,
    price: Decimal,
    *,
    source: str,
    observed_at: datetime,
    availability: Availability = Availability.UNKNOWN,
) -> Offer:
    return Offer(
        cloud=PROVIDER,
        region=region_of(zone),
        zone=zone,
        instance_type=machine.name,
        accelerator=canonical_accelerator(accelerator_source_name(machine.accelerator_type)),
        accelerator_count=machine.accelerator_count,
        vcpus=Decimal(machine.guest_cpus),
        memory_gib=machine.memory_gib,
        capacity_type=capacity,
        price_per_hour=price,
        currency="USD",
        source=source,
        observed_at=observed_at,
        availability=availability,
    )


def catalog_offers(
    machines: Mapping[str, Mapping[str, MachineSpec]],
    book: PriceBook,
    *,
    zones: Iterable[str],
    observed_at: datetime,
) -> list[Offer]:
    """ON_DEMAND and SPOT offers for the GPU machine types each zone has, at catalog prices.

    GCE publishes no capacity signal for these, so availability stays UNKNOWN.
    """
    offers: list[Offer] = []
    for zone in zones:
        for machine in machines.get(zone, {}).values():
            for capacity, usage in (
                (CapacityType.ON_DEMAND, Usage.ON_DEMAND),
                (CapacityType.SPOT, Usage.SPOT),
            ):
                if capacity is CapacityType.ON_DEMAND and machine.name in NOT_ON_DEMAND:
                    continue
                price = book.machine_price(machine, region=region_of(zone), usage=usage)
                if price is not None:
                    offers.append(
                        make_offer(
                            machine, zone, capacity, price, source=CATALOG_SOURCE, observed_at=observed_at
                        )
                    )
    return offers


def reservation_offer(
    reservation: compute_v1.Reservation,
    zone: str,
    specs: Mapping[str, MachineSpec],
    book: PriceBook,
    *,
    observed_at: datetime,
) -> Offer | None:
    """A RESERVED offer for a specific reservation of one of our GPU machine types.

    ``specificReservation.count`` VMs are reserved and ``inUseCount`` run: free slots make it
    AVAILABLE (a reservation not READY is UNAVAILABLE). GCE bills reserved VMs at the on-demand
    rate whether or not they run (committed-use discounts apply on the bill, not in the
    catalog), so that is the price. ``source`` names the reservation (``gcp:reservation/<name>``):
    launch with that name as ``reservation_id``.
    """
    specific = reservation.specific_reservation
    machine = specs.get(specific.instance_properties.machine_type.rsplit("/", 1)[-1])
    if machine is None:
        return None  # not a GPU type of ours, or made from an instance template
    price = book.machine_price(machine, region=region_of(zone), usage=Usage.ON_DEMAND)
    if price is None:
        return None
    free = specific.count - specific.in_use_count
    available = reservation.status == "READY" and free > 0
    return make_offer(
        machine,
        zone,
        CapacityType.RESERVED,
        price,
        source=f"gcp:reservation/{reservation.name}",
        observed_at=observed_at,
        availability=Availability.AVAILABLE if available else Availability.UNAVAILABLE,
    )


__all__ = [
    "GPU_MACHINE_TYPES",
    "GPU_SKU_ACCELERATORS",
    "HOST_SKU_SERIES",
    "NOT_ON_DEMAND",
    "CatalogSku",
    "MachineSpec",
    "PriceBook",
    "Usage",
    "accelerator_source_name",
    "catalog_offers",
    "catalog_sku",
    "machine_spec",
    "make_offer",
    "money",
    "region_of",
    "reservation_offer",
]
