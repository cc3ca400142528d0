"""Local fakes of Azure Resource Manager (Compute) and the Retail Prices API (I/O on 127.0.0.1 only).

Faithful to what the adapter relies on: the paths and api-versions azure-mgmt-compute 39 sends,
bearer auth, ARM JSON (camelCase ``properties``, ``nextLink`` paging, 201 + Azure-AsyncOperation
on PUT, 202/204 on DELETE, ``$expand=instanceView`` statuses), ARM error bodies
``{"error": {code, message, details}}`` with the real codes, 429 + Retry-After throttling, and the
Retail Prices envelope with ``NextPageLink`` paging and ``eq``/``and`` filters.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from tests.providers.fakes.http import FakeHTTPServer, FakeRequest, FakeResponse

SUBSCRIPTION = "0b1f6471-1bf0-4dda-aec3-111122223333"
RESOURCE_GROUP = "gpubroker-test"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.fake-s3cret-token"
SKUS_API_VERSION = "2021-07-01"
VMS_API_VERSION = "2026-04-01"
SKUS_PATH = rf"/subscriptions/{SUBSCRIPTION}/providers/Microsoft\.Compute/skus"
_SUB_PATH = rf"/subscriptions/{SUBSCRIPTION}"
VMS_PATH = rf"{_SUB_PATH}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft\.Compute/virtualMachines"
VM_PATH = VMS_PATH + r"/(?P<name>[^/]+)"
OPERATION_PATH = (
    rf"{_SUB_PATH}/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/operations/(?P<op>[^/]+)"
)
PRICES_PATH = "/api/retail/prices"


def arm_error(
    status: int, code: str, message: str, *, details: list[dict[str, Any]] | None = None, **headers: str
) -> FakeResponse:
    """An ARM error answer exactly as management.azure.com sends it."""
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return FakeResponse(status, {"error": error}, {k.replace("_", "-"): v for k, v in headers.items()})


# The error answers the contract's kinds stand for, in Azure's words.
ERRORS: dict[str, FakeResponse] = {
    "capacity": arm_error(
        409,
        "SkuNotAvailable",
        "The requested VM size for resource 'Following SKUs have failed for Capacity Restrictions: "
        "Standard_ND96isr_H100_v5' is currently not available in location 'eastus'. Please try another "
        "size or deploy to a different location or different zone. See https://aka.ms/azureskunotavailable "
        "for details.",
    ),
    "quota": arm_error(
        409,
        "OperationNotAllowed",
        "Operation could not be completed as it results in exceeding approved standardNDSH100v5Family "
        "Cores quota. Additional details - Deployment Model: Resource Manager, Location: eastus, Current "
        "Limit: 0, Current Usage: 0, Additional Required: 96, (Minimum) New Limit Required: 96. Submit a "
        "request for Quota increase at https://aka.ms/ProdportalCRP/#blade/Microsoft_Azure_Capacity/"
        "UsageAndQuota.ReactView by specifying parameters listed in the 'Details' section for deployment "
        "to succeed.",
    ),
    "auth": arm_error(
        403,
        "AuthorizationFailed",
        "The client 'c0ffee00-0000-0000-0000-000000000000' with object id 'c0ffee00-0000-0000-0000-"
        "000000000000' does not have authorization to perform action 'Microsoft.Compute/virtualMachines/"
        "write' over scope '/subscriptions/0b1f6471-1bf0-4dda-aec3-111122223333/resourceGroups/"
        "gpubroker-test' or the scope is invalid. If access was recently granted, please refresh your "
        "credentials.",
    ),
    "invalid": arm_error(
        400,
        "InvalidParameter",
        "The value of parameter imageReference.publisher is invalid.",
        details=[{"code": "InvalidParameter", "target": "imageReference.publisher", "message": "invalid"}],
    ),
    # Compute RP throttling: HTTP 429, top-level OperationNotAllowed, details TooManyRequests.
    "throttle": arm_error(
        429,
        "OperationNotAllowed",
        "The server rejected the request because too many requests have been received for this subscription.",
        details=[
            {
                "code": "TooManyRequests",
                "target": "PutVM3Min",
                "message": '{"operationGroup":"PutVM3Min","startTime":"2026-11-20T11:58:00+00:00",'
                '"endTime":"2026-11-20T12:01:00+00:00","allowedRequestCount":240,"measuredRequestCount":262}',
            }
        ],
        Retry_After="17",
    ),
    "server": arm_error(
        500,
        "InternalServerError",
        "An unexpected error occurred while processing the request. Tracking ID: "
        "'4e2b8b9a-8f5b-4d6e-9f0a-1b2c3d4e5f60'",
    ),
}


def _sku(
    name: str, region: str, family: str, cpu: int, mem: int, gpus: int | None, **kw: Any
) -> dict[str, Any]:
    """A virtualMachines Resource SKU as the skus API lists it (capability values are strings)."""
    capabilities = [
        {"name": "MaxResourceVolumeMB", "value": "1048576"},
        {"name": "vCPUs", "value": str(cpu)},
        {"name": "HyperVGenerations", "value": "V2"},
        {"name": "MemoryGB", "value": str(mem)},
        {"name": "LowPriorityCapable", "value": str(kw.get("spot", True))},
        {"name": "vCPUsAvailable", "value": str(cpu)},
        {"name": "AcceleratedNetworkingEnabled", "value": "True"},
    ]
    if gpus is not None:
        capabilities.append({"name": "GPUs", "value": str(gpus)})
    zones = list(kw.get("zones", ("1", "2", "3")))
    return {
        "resourceType": "virtualMachines",
        "name": name,
        "tier": "Standard",
        "size": name.removeprefix("Standard_"),
        "family": family,
        "locations": [region],
        "locationInfo": [{"location": region, "zones": zones, "zoneDetails": []}],
        "capabilities": capabilities,
        "restrictions": kw.get("restrictions", []),
    }


def _not_for_subscription(region: str, zones: list[str] | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {"locations": [region], **({"zones": zones} if zones else {})}
    kind = "Zone" if zones else "Location"
    return {
        "type": kind,
        "values": [region],
        "restrictionInfo": info,
        "reasonCode": "NotAvailableForSubscription",
    }


DISK_SKU = {
    "resourceType": "disks",
    "name": "Premium_LRS",
    "tier": "Premium",
    "size": "P1",
    "locations": ["eastus"],
}
SKUS: dict[str, list[dict[str, Any]]] = {
    "eastus": [
        DISK_SKU,
        _sku("Standard_D4s_v5", "eastus", "standardDSv5Family", 4, 16, None),
        _sku("Standard_ND96isr_H100_v5", "eastus", "standardNDSH100v5Family", 96, 1900, 8),
        _sku("Standard_NC40ads_H100_v5", "eastus", "standardNCadsH100v5Family", 40, 320, 1, spot=False),
        _sku("Standard_ND96amsr_A100_v4", "eastus", "standardNDAMSv4_A100Family", 96, 1900, 8,
             restrictions=[_not_for_subscription("eastus", ["2"])]),
        _sku("Standard_NV36ads_A10_v5", "eastus", "StandardNVADSA10v5Family", 36, 440, 1),
    ],
    "westus3": [
        _sku("Standard_ND96isr_H100_v5", "westus3", "standardNDSH100v5Family", 96, 1900, 8),
        _sku("Standard_NC24ads_A100_v4", "westus3", "StandardNCADSA100v4Family", 24, 220, 1, zones=(),
             restrictions=[_not_for_subscription("westus3")]),
    ],
}  # fmt: skip


def _price(region: str, sku: str, meter: str, product: str, price: str, **kw: str) -> dict[str, Any]:
    """One Retail Prices item, every field the API returns."""
    item: dict[str, Any] = {
        "currencyCode": "USD",
        "tierMinimumUnits": 0.0,
        "retailPrice": float(price),
        "unitPrice": float(price),
        "armRegionName": region,
        "location": {"eastus": "US East", "westus3": "US West 3"}[region],
        "effectiveStartDate": kw.get("start", "2024-06-01T00:00:00Z"),
        "meterId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{region}/{sku}/{meter}/{product}")),
        "meterName": meter,
        "productId": "DZH318Z0CSHK",
        "skuId": "DZH318Z0CSHK/00TG",
        "productName": product,
        "skuName": meter,
        "serviceName": "Virtual Machines",
        "serviceId": "DZH313Z7MMC8",
        "serviceFamily": "Compute",
        "unitOfMeasure": "1 Hour",
        "type": kw.get("kind", "Consumption"),
        "isPrimaryMeterRegion": True,
        "armSkuName": sku,
    }
    if "term" in kw:
        item["reservationTerm"] = kw["term"]
    return item


def _vm_prices(
    region: str, sku: str, series: str, od: str, spot: str, ri1: str, ri3: str
) -> list[dict[str, Any]]:
    """The rows Azure lists for one size: Linux/Windows, Spot, Low Priority, DevTest, 1- and 3-year RIs."""
    meter = sku.removeprefix("Standard_").replace("_", " ")  # Standard_ND96isr_H100_v5 -> ND96isr H100 v5
    linux, windows = f"Virtual Machines {series} Series", f"Virtual Machines {series} Series Windows"
    return [
        _price(region, sku, meter, linux, od),
        _price(region, sku, meter, windows, str(float(od) * 1.09)),
        _price(region, sku, f"{meter} Spot", linux, spot),
        _price(region, sku, f"{meter} Spot", windows, str(float(spot) * 1.2)),
        _price(region, sku, f"{meter} Low Priority", linux, str(float(spot) / 2)),
        _price(region, sku, meter, linux, str(float(od) * 0.8), kind="DevTestConsumption"),
        _price(region, sku, meter, linux, ri1, kind="Reservation", term="1 Year"),
        _price(region, sku, meter, linux, ri3, kind="Reservation", term="3 Years"),
    ]


# region, size, series, on-demand, spot, 1-year and 3-year reservation totals (USD)
PRICE_TABLE = [
    ("eastus", "Standard_ND96isr_H100_v5", "NDSH100v5", "98.32", "29.496", "542608.0", "1110906.0"),
    ("eastus", "Standard_NC40ads_H100_v5", "NCadsH100v5", "6.98", "2.094", "38524.0", "74460.0"),
    ("eastus", "Standard_ND96amsr_A100_v4", "NDAMSv4_A100", "32.77", "9.831", "180855.0", "369630.0"),
    ("eastus", "Standard_NV36ads_A10_v5", "NVadsA10v5", "3.2", "0.96", "17660.0", "36139.0"),
    ("westus3", "Standard_ND96isr_H100_v5", "NDSH100v5", "98.32", "24.58", "542608.0", "1110906.0"),
    ("westus3", "Standard_NC24ads_A100_v4", "NCadsA100v4", "3.673", "0.7346", "20270.0", "39165.0"),
]
PRICES: list[dict[str, Any]] = [
    # an old list price, superseded by the 2024-06-01 one
    _price("eastus", "Standard_ND96isr_H100_v5", "ND96isr H100 v5", "Virtual Machines NDSH100v5 Series",
           "101.5", start="2023-10-01T00:00:00Z"),
    *(item for row in PRICE_TABLE for item in _vm_prices(*row)),
]  # fmt: skip


@dataclass
class FakeVM:
    body: dict[str, Any]
    provisioning: str = "Creating"
    power: str | None = None
    failure: tuple[str, str] | None = None

    @property
    def spot(self) -> bool:
        return self.body["properties"].get("priority") == "Spot"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0+00:00")  # ARM writes 7 digits


class FakeAzure:
    """ARM for one subscription and resource group: Resource SKUs and virtual machines."""

    def __init__(self, *, page_size: int = 100) -> None:
        self.server = FakeHTTPServer()
        self.vms: dict[str, FakeVM] = {}
        self.operations: dict[str, str] = {}
        self.page_size = page_size
        self.auto_complete = True  # creations and deletions finish before the next read
        self.skus = {region: list(items) for region, items in SKUS.items()}
        s = self.server
        s.route("GET", SKUS_PATH)(self._list_skus)
        s.route("GET", VMS_PATH)(self._list_vms)
        s.route("GET", VM_PATH)(self._get_vm)
        s.route("PUT", VM_PATH)(self._put_vm)
        s.route("DELETE", VM_PATH)(self._delete_vm)
        s.route("GET", OPERATION_PATH)(self._operation)

    def start(self) -> str:
        return self.server.start()

    def stop(self) -> None:
        self.server.stop()

    # --- levers -----------------------------------------------------------------------------------
    def fail_next(self, method: str, path: str, kind: str) -> None:
        self.server.inject(method, path, ERRORS[kind])

    def evict(self, name: str) -> None:
        """Azure reclaims a Spot VM: deallocated or deleted, by its eviction policy."""
        vm = self.vms[name]
        assert vm.spot, "only Spot VMs are evicted"
        if vm.body["properties"].get("evictionPolicy", "Deallocate") == "Delete":
            del self.vms[name]
        else:
            vm.provisioning, vm.power = "Succeeded", "deallocated"

    def fail_provisioning(self, name: str, code: str, message: str) -> None:
        """The create operation fails after the PUT was accepted (the usual AllocationFailed)."""
        vm = self.vms[name]
        vm.provisioning, vm.power, vm.failure = "Failed", None, (code, message)

    def live_count(self) -> int:
        return sum(1 for vm in self.vms.values() if vm.provisioning != "Deleting")

    # --- handlers ---------------------------------------------------------------------------------
    def _authorized(self, request: FakeRequest) -> FakeResponse | None:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return arm_error(
                401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            )
        if not request.query.get("api-version"):
            return arm_error(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        return None

    def _page(self, request: FakeRequest, items: list[dict[str, Any]]) -> FakeResponse:
        skip = int(request.query.get("$skiptoken", ["0"])[0])
        body: dict[str, Any] = {"value": items[skip : skip + self.page_size]}
        if skip + self.page_size < len(items):
            query = {k: v[0] for k, v in request.query.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(skip + self.page_size)
            body["nextLink"] = f"{self.server.base_url}{request.path}?{urlencode(query)}"
        return FakeResponse(200, body)

    def _list_skus(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        match = re.fullmatch(r"location eq '([^']+)'", request.query.get("$filter", [""])[0])
        items = self.skus.get(match.group(1), []) if match else [s for v in self.skus.values() for s in v]
        return self._page(request, items)

    def _advance(self, name: str) -> FakeVM | None:
        vm = self.vms.get(name)
        if vm is not None and self.auto_complete:
            if vm.provisioning == "Creating":
                vm.provisioning, vm.power = "Succeeded", "running"
            elif vm.provisioning == "Deleting":
                del self.vms[name]
                return None
        return vm

    def _json(self, vm: FakeVM, *, instance_view: bool) -> dict[str, Any]:
        body = {**vm.body, "properties": {**vm.body["properties"], "provisioningState": vm.provisioning}}
        if instance_view:
            statuses = []
            if vm.failure:
                code, message = vm.failure
                statuses.append(
                    {
                        "code": f"ProvisioningState/failed/{code}",
                        "level": "Error",
                        "displayStatus": "Provisioning failed",
                        "message": message,
                        "time": _now(),
                    }
                )
            else:
                statuses.append(
                    {
                        "code": f"ProvisioningState/{vm.provisioning.lower()}",
                        "level": "Info",
                        "displayStatus": f"Provisioning {vm.provisioning.lower()}",
                        "time": _now(),
                    }
                )
            if vm.power:
                statuses.append(
                    {"code": f"PowerState/{vm.power}", "level": "Info", "displayStatus": f"VM {vm.power}"}
                )
            body["properties"]["instanceView"] = {"computerName": vm.body["name"], "statuses": statuses}
        return body

    def _not_found(self, name: str) -> FakeResponse:
        return arm_error(
            404,
            "ResourceNotFound",
            f"The Resource 'Microsoft.Compute/virtualMachines/{name}' "
            f"under resource group '{RESOURCE_GROUP}' was not found. For more details please go "
            "to https://aka.ms/ARMResourceNotFoundFix",
        )

    def _list_vms(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        items = [self._json(vm, instance_view=False) for n in list(self.vms) if (vm := self._advance(n))]
        return self._page(request, items)

    def _get_vm(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        vm = self._advance(request.params["name"])
        if vm is None:
            return self._not_found(request.params["name"])
        expand = request.query.get("$expand", [""])[0]
        return FakeResponse(200, self._json(vm, instance_view=expand == "instanceView"))

    def _put_vm(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        name, body = request.params["name"], request.json()
        if name in self.vms:  # PUT on an existing VM is an update: nothing we send changes it
            return FakeResponse(200, self._json(self.vms[name], instance_view=False))
        props = body.get("properties") or {}
        region, size = body.get("location"), (props.get("hardwareProfile") or {}).get("vmSize")
        offered = {s["name"]: s for s in self.skus.get(region or "", [])}
        if size not in offered or any(r["type"] == "Location" for r in offered[size]["restrictions"]):
            return arm_error(
                409,
                "SkuNotAvailable",
                f"The requested VM size for resource 'Following SKUs have "
                f"failed for Capacity Restrictions: {size}' is currently not available in location "
                f"'{region}'.",
            )
        keys = (((props.get("osProfile") or {}).get("linuxConfiguration") or {}).get("ssh") or {}).get(
            "publicKeys"
        )
        network = props.get("networkProfile") or {}
        if (
            not keys
            or not network.get("networkApiVersion")
            or not network.get("networkInterfaceConfigurations")
        ):
            return arm_error(
                400,
                "InvalidParameter",
                "Required parameter 'osProfile' or 'networkProfile' is missing (null).",
            )
        stored = {
            "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
            f"Microsoft.Compute/virtualMachines/{name}",
            "name": name,
            "type": "Microsoft.Compute/virtualMachines",
            "location": region,
            "tags": body.get("tags") or {},
            "properties": {**props, "vmId": str(uuid.uuid4()), "timeCreated": _now()},
        }
        if body.get("zones"):
            stored["zones"] = body["zones"]
        self.vms[name] = FakeVM(stored)
        op = str(uuid.uuid4())
        self.operations[op] = name
        async_url = (
            f"{self.server.base_url}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/locations/"
            f"{region}/operations/{op}?api-version={VMS_API_VERSION}"
        )
        return FakeResponse(
            201,
            self._json(self.vms[name], instance_view=False),
            {"Azure-AsyncOperation": async_url, "Retry-After": "10"},
        )

    def _delete_vm(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        vm = self.vms.get(request.params["name"])
        if vm is None:
            return FakeResponse(204, None)  # ARM: deleting what is not there is a no-op
        vm.provisioning = "Deleting"
        op = str(uuid.uuid4())
        self.operations[op] = request.params["name"]
        location = (
            f"{self.server.base_url}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/locations/"
            f"{vm.body['location']}/operations/{op}?monitor=true&api-version={VMS_API_VERSION}"
        )
        return FakeResponse(
            202,
            None,
            {
                "Azure-AsyncOperation": location.replace("monitor=true&", ""),
                "Location": location,
                "Retry-After": "10",
            },
        )

    def _operation(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        vm = self._advance(self.operations.get(request.params["op"], ""))  # polling sees work finish
        status = "Succeeded" if vm is None or vm.provisioning == "Succeeded" else "InProgress"
        body: dict[str, Any] = {"name": request.params["op"], "startTime": _now(), "status": status}
        if vm is not None and vm.failure:
            body["status"] = "Failed"
            body["error"] = {"code": vm.failure[0], "message": vm.failure[1]}
        return FakeResponse(200, body)


class FakeRetailPrices:
    """prices.azure.com: ``$filter`` with ``field eq 'value'`` joined by ``and``; ``$skip`` paging."""

    def __init__(self, *, page_size: int = 1000) -> None:
        self.server = FakeHTTPServer()
        self.items = list(PRICES)
        self.page_size = page_size
        self.server.route("GET", PRICES_PATH)(self._prices)

    def start(self) -> str:
        return self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def _prices(self, request: FakeRequest) -> FakeResponse:
        query = request.query.get("$filter", [""])[0]
        clauses = re.findall(r"(\w+) eq '([^']*)'", query)
        if query and len(clauses) != query.count(" and ") + 1:
            return FakeResponse(400, {"Error": {"Code": "InvalidFilter", "Message": f"bad $filter: {query}"}})
        matching = [i for i in self.items if all(str(i.get(f)) == v for f, v in clauses)]
        skip = int(request.query.get("$skip", ["0"])[0])
        page = matching[skip : skip + self.page_size]
        next_link = None
        if skip + self.page_size < len(matching):
            query_string = urlencode({"$filter": query, "$skip": skip + self.page_size})
            next_link = f"{self.server.base_url}{PRICES_PATH}?{query_string}"
        return FakeResponse(
            200,
            {
                "BillingCurrency": "USD",
                "CustomerEntityId": "Default",
                "CustomerEntityType": "Retail",
                "Items": page,
                "NextPageLink": next_link,
                "Count": len(page),
            },
        )
