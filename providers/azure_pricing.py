"""Azure GPU offers: the SKU→GPU table, Resource SKU parsing and the Retail Prices API (does I/O: HTTPS).

Split out of :mod:`providers.azure` (the adapter) to keep both readable. Facts relied on:

* Resource SKUs (``GET /subscriptions/{sub}/providers/Microsoft.Compute/skus?api-version=2021-07-01
  &$filter=location eq '<region>'``, azure-mgmt-compute ``resource_skus.list``): items
  ``{resourceType, name, family, locationInfo[{location, zones}], capabilities[{name, value}],
  restrictions[{type: Location|Zone, values, restrictionInfo{locations, zones}, reasonCode:
  NotAvailableForSubscription|QuotaId}]}``. Capability values are strings ("8", "1900", "True").
  ``GPUs`` is the GPU count, ``MemoryGB`` is GiB, ``LowPriorityCapable`` says Spot is allowed.
  A restriction means "not offered to this subscription here", not "sold out": Azure publishes no
  live capacity signal, so unrestricted offers are UNKNOWN and restricted ones UNAVAILABLE.
* Retail Prices (``GET https://prices.azure.com/api/retail/prices?$filter=serviceName eq
  'Virtual Machines' and armRegionName eq '<region>' and armSkuName eq '<sku>'``, public, no
  auth; learn.microsoft.com/rest/api/cost-management/retail-prices/azure-retail-prices):
  ``{BillingCurrency, CustomerEntityId, CustomerEntityType, Items[], NextPageLink, Count}``; items
  ``{currencyCode, retailPrice, unitPrice, armRegionName, armSkuName, meterName, skuName,
  productName, unitOfMeasure, type: Consumption|Reservation|DevTestConsumption, reservationTerm,
  effectiveStartDate, isPrimaryMeterRegion}``. Spot rows end their meterName/skuName in " Spot",
  the old Batch/VMSS rows in " Low Priority"; Windows rows say "Windows" in productName.
  Reservation rows carry ``unitOfMeasure`` "1 Hour" but their ``unitPrice`` is the TOTAL for the
  term (Microsoft's examples: Standard_D8_v4 westeurope 3 Years = 4594.0): the hourly rate is
  unitPrice / hours in the term (8760 per year, the 730 h/month Azure's calculator uses).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx

from broker.core.errors import Transient
from broker.core.types import Availability, CapacityType, Offer
from pricing.normalize import accelerator_count, canonical_accelerator
from providers.http import error_for_status, make_client, send

PROVIDER = "azure"
RETAIL_PRICES_URL = "https://prices.azure.com"
RETAIL_PRICES_PATH = "/api/retail/prices"
OFFER_SOURCE = "azure:retail-prices-api"
HOURS_IN_TERM: dict[str, Decimal] = {"1 Year": Decimal(8760), "3 Years": Decimal(26280)}
RESERVED_PRICE_QUANTUM = Decimal("0.000001")  # term total / hours never ends; a micro-dollar is plenty
_MAX_PAGES = 50

# Azure VM size name -> the GPU model in it (pass through canonical_accelerator). One visible table;
# sizes not matched here are not GPU offers for the broker (the NV/NG graphics sizes slice GPUs,
# NP is FPGA). Checked against learn.microsoft.com/azure/virtual-machines/sizes/gpu-accelerated.
GPU_SIZES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), model)
    for pattern, model in (
        (r"^Standard_ND\d+isr_H200_v5$", "H200"),  # ND H200 v5: 8x H200 141 GB
        (r"^Standard_ND\d+is?r_H100_v5$", "H100"),  # ND H100 v5: 8x H100 80 GB SXM
        (r"^Standard_NCC?\d+adi?s_H100_v5$", "H100-NVL"),  # NC(C) H100 v5: H100 NVL 94 GB PCIe
        (r"^Standard_ND\d+isr_MI300X_v5$", "MI300X"),  # ND MI300X v5: 8x MI300X
        (r"^Standard_ND\d+isr_(?:NDR_)?GB200_v6$", "GB200"),  # ND GB200 v6: 4x B200 (Grace)
        (r"^Standard_ND\d+amsr_A100_v4$", "A100-80GB"),  # NDm A100 v4: 8x A100 80 GB
        (r"^Standard_ND\d+asr_v4$", "A100"),  # ND A100 v4: 8x A100 40 GB
        (r"^Standard_NC\d+ads_A100_v4$", "A100-80GB"),  # NC A100 v4: A100 80 GB PCIe
        (r"^Standard_NC\d+as_T4_v3$", "T4"),  # NCasT4_v3
        (r"^Standard_NC\d+r?s_v3$", "V100"),  # NCv3 (rs: with InfiniBand): V100 16 GB
        (r"^Standard_ND\d+rs_v2$", "V100"),  # NDv2: 8x V100 32 GB
    )
)


def gpu_model(vm_size: str) -> str | None:
    """The canonical GPU model of an Azure VM size, or None when it is not a GPU size we offer."""
    for pattern, model in GPU_SIZES:
        if pattern.match(vm_size):
            return canonical_accelerator(model)
    return None


def zone_name(region: str, zone: str) -> str:
    """Azure zones are "1", "2", "3" within a region; offers name them "eastus-1" (as AKS does)."""
    return f"{region}-{zone}"


def split_zone(region: str, zone: str | None) -> str | None:
    """The Azure zone number from "eastus-1" or "1"; None for a regional request."""
    if not zone:
        return None
    prefix = f"{region}-"
    return zone[len(prefix) :] if zone.startswith(prefix) else zone


# --- Resource SKUs -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GpuSku:
    """One GPU VM size in one region, as the Resource SKUs API describes it to this subscription."""

    name: str
    region: str
    accelerator: str
    gpus: int
    vcpus: Decimal | None
    memory_gib: Decimal | None
    zones: tuple[str, ...]
    spot_capable: bool
    region_restricted: bool
    restricted_zones: frozenset[str] = field(default_factory=frozenset)

    def availability(self, zone: str | None) -> Availability:
        if self.region_restricted or (zone is not None and zone in self.restricted_zones):
            return Availability.UNAVAILABLE
        return Availability.UNKNOWN


def _capabilities(sku: Mapping[str, Any]) -> dict[str, str]:
    return {str(c.get("name")): str(c.get("value")) for c in sku.get("capabilities") or [] if c.get("name")}


def _decimal(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(value)
    except ArithmeticError:
        return None


def gpu_sku(sku: Mapping[str, Any], region: str) -> GpuSku | None:
    """Parse one Resource SKU (REST JSON) into a :class:`GpuSku`, or None if it is not a GPU VM here."""
    if str(sku.get("resourceType", "")).lower() != "virtualmachines":
        return None
    name = str(sku.get("name", ""))
    model = gpu_model(name)
    caps = _capabilities(sku)
    try:
        listed = int(caps.get("GPUs", "0"))
    except ValueError:
        listed = 0
    count = accelerator_count(PROVIDER, name, listed)
    if model is None or count <= 0:
        return None
    zones: tuple[str, ...] = ()
    for info in sku.get("locationInfo") or []:
        if str(info.get("location", "")).lower() == region.lower():
            zones = tuple(sorted(str(z) for z in info.get("zones") or []))
    region_restricted = False
    restricted_zones: set[str] = set()
    for restriction in sku.get("restrictions") or []:
        info = restriction.get("restrictionInfo") or {}
        where = {str(loc).lower() for loc in (info.get("locations") or restriction.get("values") or [])}
        if where and region.lower() not in where:
            continue
        if restriction.get("type") == "Location":
            region_restricted = True
        elif restriction.get("type") == "Zone":
            restricted_zones.update(str(z) for z in info.get("zones") or [])
    return GpuSku(
        name=name,
        region=region,
        accelerator=model,
        gpus=count,
        vcpus=_decimal(caps.get("vCPUs")),
        memory_gib=_decimal(caps.get("MemoryGB")),
        zones=zones,
        spot_capable=caps.get("LowPriorityCapable", "False").lower() == "true",
        region_restricted=region_restricted,
        restricted_zones=frozenset(restricted_zones),
    )


# --- Retail prices -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SkuPrices:
    """USD per instance-hour for one size in one region; None where Azure lists no price."""

    on_demand: Decimal | None = None
    spot: Decimal | None = None
    reserved: Mapping[str, Decimal] = field(default_factory=dict)  # reservationTerm -> hourly


def _is_spot(item: Mapping[str, Any]) -> bool:
    return any(str(item.get(key, "")).endswith(" Spot") for key in ("meterName", "skuName"))


def _is_low_priority(item: Mapping[str, Any]) -> bool:
    return any(str(item.get(key, "")).endswith(" Low Priority") for key in ("meterName", "skuName"))


def prices_from_items(items: Iterable[Mapping[str, Any]]) -> SkuPrices:
    """Pick the Linux on-demand, Spot and reservation prices out of Retail Prices items (pure).

    Only USD, per-hour, primary-meter-region Linux rows count. When a kind has several rows
    (a price change), the one with the latest effectiveStartDate wins.
    """
    best: dict[str, tuple[str, Decimal]] = {}  # kind -> (effectiveStartDate, hourly price)

    def keep(kind: str, item: Mapping[str, Any], price: Decimal) -> None:
        start = str(item.get("effectiveStartDate", ""))
        if kind not in best or start >= best[kind][0]:
            best[kind] = (start, price)

    for item in items:
        if item.get("currencyCode", "USD") != "USD" or item.get("isPrimaryMeterRegion") is False:
            continue
        if item.get("unitOfMeasure") != "1 Hour" or "Windows" in str(item.get("productName", "")):
            continue
        kind = item.get("type")
        if kind == "Consumption" and not _is_low_priority(item):
            keep("spot" if _is_spot(item) else "on_demand", item, Decimal(str(item["retailPrice"])))
        elif kind == "Reservation" and item.get("reservationTerm") in HOURS_IN_TERM:
            term = str(item["reservationTerm"])
            hourly = Decimal(str(item["unitPrice"])) / HOURS_IN_TERM[term]
            keep(term, item, hourly.quantize(RESERVED_PRICE_QUANTUM))
    return SkuPrices(
        on_demand=best["on_demand"][1] if "on_demand" in best else None,
        spot=best["spot"][1] if "spot" in best else None,
        reserved={term: best[term][1] for term in HOURS_IN_TERM if term in best},
    )


class RetailPrices:
    """A client of the public Azure Retail Prices API: one filtered query per (region, size)."""

    def __init__(
        self, base_url: str = RETAIL_PRICES_URL, *, timeout: httpx.Timeout | float | None = None
    ) -> None:
        kwargs: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        self._client = make_client(base_url.rstrip("/"), **kwargs)
        self._host = urlsplit(base_url).netloc

    def close(self) -> None:
        self._client.close()

    def _page(self, url: str, params: Mapping[str, str] | None, region: str) -> dict[str, Any]:
        response = send(self._client, "GET", url, provider=PROVIDER, region=region, params=params)
        if response.status_code >= 400:
            raise error_for_status(response, provider=PROVIDER, region=region)
        try:
            body = response.json(parse_float=Decimal)  # prices stay exact: never through float
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("Items"), list):
            raise Transient(
                "unparseable Retail Prices answer", provider=PROVIDER, region=region, code="bad-json"
            )
        return body

    def items(self, region: str, vm_size: str) -> list[dict[str, Any]]:
        """Every Retail Prices item for one VM size in one region, following NextPageLink."""
        query = (
            f"serviceName eq 'Virtual Machines' and armRegionName eq '{region}' and armSkuName eq '{vm_size}'"
        )
        body = self._page(RETAIL_PRICES_PATH, {"$filter": query}, region)
        items: list[dict[str, Any]] = list(body["Items"])
        for _ in range(_MAX_PAGES):
            next_link = body.get("NextPageLink")
            if not next_link:
                break
            if urlsplit(str(next_link)).netloc.split(":")[0] != self._host.split(":")[0]:
                raise Transient(
                    "NextPageLink leaves the Retail Prices host", provider=PROVIDER, code="bad-link"
                )
            body = self._page(str(next_link), None, region)
            items.extend(body["Items"])
        return items

    def sku_prices(self, region: str, vm_size: str) -> SkuPrices:
        return prices_from_items(self.items(region, vm_size))


def offers_for(
    sku: GpuSku, prices: SkuPrices, *, observed_at: datetime, reservation_term: str
) -> list[Offer]:
    """The offers for one GPU size in one region: per zone (or regional) and per capacity type."""
    kinds: list[tuple[CapacityType, Decimal, str]] = []
    if prices.on_demand is not None:
        kinds.append((CapacityType.ON_DEMAND, prices.on_demand, OFFER_SOURCE))
    if prices.spot is not None and sku.spot_capable:
        kinds.append((CapacityType.SPOT, prices.spot, OFFER_SOURCE))
    if reservation_term in prices.reserved:
        term = reservation_term.replace(" ", "-").lower()
        kinds.append(
            (CapacityType.RESERVED, prices.reserved[reservation_term], f"{OFFER_SOURCE}:reservation-{term}")
        )
    zones: Sequence[str | None] = sku.zones or (None,)
    return [
        Offer(
            cloud=PROVIDER,
            region=sku.region,
            zone=zone_name(sku.region, zone) if zone else None,
            instance_type=sku.name,
            accelerator=sku.accelerator,
            accelerator_count=sku.gpus,
            vcpus=sku.vcpus,
            memory_gib=sku.memory_gib,
            capacity_type=capacity,
            price_per_hour=price,
            currency="USD",
            source=source,
            observed_at=observed_at,
            availability=sku.availability(zone),
        )
        for zone in zones
        for capacity, price, source in kinds
    ]
