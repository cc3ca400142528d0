"""A fake Compute Engine v1 + Cloud Billing Catalog REST API on FakeHTTPServer (127.0.0.1 only; does I/O).

Paths are the ones the REST transports of google-cloud-compute 1.57 and google-cloud-billing 1.21
call (``compute_v1/services/*/transports/rest_base.py``, ``billing_v1/.../cloud_catalog/...``):
``/compute/v1/projects/{project}/...`` and ``/v1/services/{service}/skus``. Bodies use the
documented JSON field names (camelCase, int64 as strings), error bodies the Google JSON error
shape ``{"error": {"code", "message", "errors": [{"message", "domain", "reason"}], "status"}}``,
and Operations carry failures in ``error.errors[].code`` with ``httpErrorStatusCode`` as GCE does
(shapes from real answers quoted in GitHub issues, e.g. CCExtractor/sample-platform#901).

Lifecycle: an insert answers a RUNNING Operation and shows the VM PROVISIONING; the Operation
finishes (DONE, VM RUNNING, or DONE with the scripted error and no VM) when the client waits on
it or reads it. A delete shows the VM STOPPING until its Operation finishes. ``requestId``
replays the first Operation, a second insert of a name answers 409 ``alreadyExists``.
"""

from __future__ import annotations

import itertools
import re
import secrets
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.providers.fakes.http import FakeHTTPServer, FakeRequest, FakeResponse

SELF = "https://www.googleapis.com/compute/v1"
P = r"/compute/v1/projects/(?P<project>[^/]+)"
ZONE = P + r"/zones/(?P<zone>[^/]+)"
INSTANCES_PATH = ZONE + r"/instances"
MACHINE_TYPES_AGG_PATH = P + r"/aggregated/machineTypes"
SKUS_PATH = r"/v1/services/(?P<service>[^/]+)/skus"
COMPUTE_ENGINE = "6F81-5844-456A"

_LABEL = re.compile(r"^[a-z0-9_-]{0,63}$")
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_TERM = re.compile(
    r'^\s*\(?\s*(?P<field>[\w.-]+)\s*(?P<op>=|!=|\beq\b|\bne\b)\s*"(?P<value>[^"]*)"\s*\)?\s*$'
)


def error_body(code: int, reason: str, message: str, status: str | None = None, **extra: Any) -> dict:
    """The Google JSON error body the Compute API answers with."""
    body: dict[str, Any] = {
        "code": code,
        "message": message,
        "errors": [{"message": message, "domain": "global", "reason": reason}],
    }
    if status:
        body["status"] = status
    body.update(extra)
    return {"error": body}


def machine_type(
    name: str, cpus: int, memory_mb: int, accelerator: str | None, count: int, ssd: int = 0
) -> dict:
    mt: dict[str, Any] = {
        "kind": "compute#machineType",
        "id": str(zlib.crc32(name.encode())),
        "creationTimestamp": "2023-05-10T09:52:11.000-07:00",
        "name": name,
        "description": f"{cpus} vCPUs, {memory_mb // 1024} GB RAM"
        + (f", {count} accelerator cards" if count else ""),
        "guestCpus": cpus,
        "memoryMb": memory_mb,
        "imageSpaceGb": 0,
        "maximumPersistentDisks": 128,
        "maximumPersistentDisksSizeGb": "263168",
        "isSharedCpu": False,
    }
    if accelerator:
        mt["accelerators"] = [{"guestAcceleratorType": accelerator, "guestAcceleratorCount": count}]
    if ssd:
        mt["bundledLocalSsds"] = {"defaultInterface": "NVME", "partitionCount": ssd}
    return mt


# Real specs (cloud.google.com/compute/docs/accelerator-optimized-machines).
A3_HIGH_8G = machine_type("a3-highgpu-8g", 208, 1916928, "nvidia-h100-80gb", 8, 16)
A3_HIGH_1G = machine_type("a3-highgpu-1g", 26, 239616, "nvidia-h100-80gb", 1, 2)
A3_MEGA_8G = machine_type("a3-megagpu-8g", 208, 1916928, "nvidia-h100-mega-80gb", 8, 16)
A3_ULTRA_8G = machine_type("a3-ultragpu-8g", 224, 3022848, "nvidia-h200-141gb", 8, 32)
A2_HIGH_1G = machine_type("a2-highgpu-1g", 12, 87040, "nvidia-tesla-a100", 1)
A2_ULTRA_8G = machine_type("a2-ultragpu-8g", 96, 1392640, "nvidia-a100-80gb", 8, 8)
N2_STANDARD_8 = machine_type("n2-standard-8", 8, 32768, None, 0)


def sku(description: str, group: str, usage: str, regions: list[str], price: str, unit: str = "h") -> dict:
    """A Billing Catalog SKU as ``services.skus.list`` returns it (price in USD per ``unit``)."""
    units, _, fraction = price.partition(".")
    sku_id = f"{zlib.crc32(description.encode()) & 0xFFFF:04X}-{zlib.crc32(usage.encode()) & 0xFFFF:04X}-A1B2"
    family = {"LocalSSD": "Storage", "InterzoneEgress": "Network"}.get(group, "Compute")
    return {
        "name": f"services/{COMPUTE_ENGINE}/skus/{sku_id}",
        "skuId": sku_id,
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": family,
            "resourceGroup": group,
            "usageType": usage,
        },
        "serviceRegions": regions,
        "pricingInfo": [
            {
                "summary": "",
                "pricingExpression": {
                    "usageUnit": unit,
                    "displayQuantity": 1,
                    "tieredRates": [
                        {
                            "startUsageAmount": 0,
                            "unitPrice": {
                                "currencyCode": "USD",
                                "units": units,
                                "nanos": int(fraction.ljust(9, "0")),
                            },
                        }
                    ],
                    "usageUnitDescription": {"h": "hour", "GiBy.h": "gibibyte hour"}.get(
                        unit, "gibibyte month"
                    ),
                    "baseUnit": "s" if unit == "h" else "By.s",
                    "baseUnitDescription": "second" if unit == "h" else "byte second",
                    "baseUnitConversionFactor": 3600 if unit == "h" else 3865470566400,
                },
                "currencyConversionRate": 1,
                "effectiveTime": "2026-11-20T08:13:52.133Z",
            }
        ],
        "serviceProviderName": "Google",
        "geoTaxonomy": {"type": "MULTI_REGIONAL" if len(regions) > 1 else "REGIONAL", "regions": regions},
    }


AMERICAS = ["us-central1", "us-east1", "us-east4", "us-west1", "us-west4"]
EMEA = ["europe-west1", "europe-west3", "europe-west4"]
SPOT_GPU = "attached to Spot Preemptible VMs running in"
SPOT = "Spot Preemptible"
_SKU_TABLE = [  # description, resourceGroup, usageType, serviceRegions, USD per unit, unit
    ("A3 Instance Core running in Americas", "CPU", "OnDemand", AMERICAS, "0.02181159", "h"),
    ("A3 Instance Ram running in Americas", "RAM", "OnDemand", AMERICAS, "0.0027162", "GiBy.h"),
    (f"{SPOT} A3 Instance Core running in Americas", "CPU", "Preemptible", AMERICAS, "0.006543477", "h"),
    (f"{SPOT} A3 Instance Ram running in Americas", "RAM", "Preemptible", AMERICAS, "0.00081486", "GiBy.h"),
    ("Nvidia H100 80GB GPU running in Americas", "GPU", "OnDemand", AMERICAS, "9.796550569", "h"),
    ("Nvidia H100 80GB GPU running in Virginia", "GPU", "OnDemand", ["us-east4"], "10.005", "h"),
    (f"Nvidia H100 80GB GPU {SPOT_GPU} Americas", "GPU", "Preemptible", AMERICAS, "2.253206", "h"),
    ("Nvidia H100 80GB Plus GPU running in Americas", "GPU", "OnDemand", AMERICAS, "11.06", "h"),
    (f"{SPOT} Nvidia H100 80GB Plus GPU running in Americas", "GPU", "Preemptible", AMERICAS, "3.41", "h"),
    (f"H200 141GB GPU {SPOT_GPU} Americas", "GPU", "Preemptible", AMERICAS, "3.72", "h"),
    ("SSD backed Local Storage", "LocalSSD", "OnDemand", AMERICAS + EMEA, "0.08", "GiBy.mo"),
    ("SSD backed Local Storage attached to Spot Preemptible VMs", "LocalSSD", "Preemptible", AMERICAS + EMEA,
     "0.048", "GiBy.mo"),
    ("A2 Instance Core running in Americas", "CPU", "OnDemand", AMERICAS, "0.031611", "h"),
    ("A2 Instance Ram running in Americas", "RAM", "OnDemand", AMERICAS, "0.004237", "GiBy.h"),
    ("Nvidia Tesla A100 GPU running in Americas", "GPU", "OnDemand", AMERICAS, "2.933908", "h"),
    ("A2 Instance Core running in EMEA", "CPU", "OnDemand", EMEA, "0.034802", "h"),
    ("A2 Instance Ram running in EMEA", "RAM", "OnDemand", EMEA, "0.004664", "GiBy.h"),
    ("Nvidia Tesla A100 GPU running in EMEA", "GPU", "OnDemand", EMEA, "3.229", "h"),
    # What the real catalog also lists, and pricing must ignore:
    ("Commitment v1: Nvidia H100 80GB GPU running in Americas for 1 Year", "GPU", "Commit1Yr", AMERICAS,
     "6.79880857", "h"),
    ("Reserved Nvidia H100 80GB GPU running in Americas", "GPU", "OnDemand", AMERICAS, "0", "h"),
    ("Nvidia Tesla T4 GPU attached to Sole Tenancy VMs running in Americas", "GPU", "OnDemand", AMERICAS,
     "0.385", "h"),
    ("N2 Instance Core running in Americas", "CPU", "OnDemand", AMERICAS, "0.031611", "h"),
    ("Network Inter Zone Egress", "InterzoneEgress", "OnDemand", AMERICAS, "0.01", "GiBy"),
]  # fmt: skip
DEFAULT_SKUS = [sku(*row) for row in _SKU_TABLE]


class FakeGce:
    """Compute Engine zones, machine types, reservations, instances and Operations, plus the catalog."""

    def __init__(self, project: str = "gpubroker-test") -> None:
        self.project = project
        self.server = FakeHTTPServer()
        self.machine_types: dict[str, list[dict]] = {
            "us-central1-a": [A3_HIGH_8G, A3_HIGH_1G, A3_MEGA_8G, A2_HIGH_1G, N2_STANDARD_8],
            "us-central1-b": [A3_HIGH_8G, N2_STANDARD_8],
            "us-east4-a": [A3_HIGH_8G, A3_ULTRA_8G],
            "europe-west1-c": [A2_HIGH_1G],
            "us-east1-b": [A2_ULTRA_8G],  # not a configured zone of the adapter under test
        }
        self.skus: list[dict] = list(DEFAULT_SKUS)
        self.sku_page_size = 4  # the real API pages at up to 5000; small pages exercise the pager
        self.aggregated_page_zones = 2  # zones per aggregatedList page, to exercise nextPageToken
        self.reservations: dict[str, list[dict]] = {
            "us-central1-a": [self.reservation("h100-res", "a3-highgpu-8g", 2)]
        }
        self.instances: dict[tuple[str, str], dict] = {}
        self.operations: dict[tuple[str, str], dict] = {}
        self.request_ids: dict[str, tuple[str, str]] = {}
        self.pending: dict[tuple[str, str], Callable[[], None]] = {}  # finishes an Operation
        self.next_insert_error: dict | None = None
        self.hold_operations = False  # True: waits answer RUNNING (the 2-minute wait timed out)
        self._ids = itertools.count(5_300_000_000_000_000_001)
        self._routes()

    # --- scripting ------------------------------------------------------------------------------
    def start(self) -> str:
        return self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def reservation(
        self, name: str, machine: str, count: int, in_use: int = 0, zone: str = "us-central1-a"
    ) -> dict:
        return {
            "kind": "compute#reservation",
            "id": str(next(itertools.count(7_000_000_000_000_000_000 + len(name)))),
            "creationTimestamp": "2026-10-01T10:00:00.000-07:00",
            "selfLink": f"{SELF}/projects/{self.project}/zones/{zone}/reservations/{name}",
            "zone": f"{SELF}/projects/{self.project}/zones/{zone}",
            "name": name,
            "specificReservation": {
                "instanceProperties": {"machineType": machine},
                "count": str(count),
                "inUseCount": str(in_use),
                "assuredCount": str(count),
            },
            "commitment": "",
            "specificReservationRequired": True,
            "status": "READY",
            "shareSettings": {"shareType": "LOCAL"},
        }

    def fail_insert_with(self, code: str, message: str, http_status: int, http_message: str) -> None:
        """The next insert's Operation finishes DONE with this error (no VM is made)."""
        self.next_insert_error = {
            "error": {"errors": [{"code": code, "message": message}]},
            "httpErrorStatusCode": http_status,
            "httpErrorMessage": http_message,
        }

    def preempt(self, zone: str, name: str) -> None:
        """GCE reclaims a Spot VM: per instanceTerminationAction it is stopped or deleted, and a
        ``compute.instances.preempted`` Operation is recorded (status DONE, user "system")."""
        instance = self.instances[(zone, name)]
        now = _now()
        if instance["scheduling"].get("instanceTerminationAction") == "STOP":
            instance.update(status="TERMINATED", lastStopTimestamp=now)
        else:
            del self.instances[(zone, name)]
        op = self._operation(
            zone,
            "compute.instances.preempted",
            instance,
            status="DONE",
            user="system",
            name=f"systemevent-{int(datetime.now(UTC).timestamp() * 1000)}-{secrets.token_hex(6)}",
        )
        op["statusMessage"] = "Instance was preempted."
        op["endTime"] = now

    def live_count(self) -> int:
        return sum(1 for i in self.instances.values() if i["status"] not in ("TERMINATED", "STOPPING"))

    # --- handlers -------------------------------------------------------------------------------
    def _routes(self) -> None:
        route = self.server.route
        route("GET", MACHINE_TYPES_AGG_PATH)(
            lambda r: self._aggregated(r, "machineTypes", self._machine_types_by_zone())
        )
        route("GET", P + r"/aggregated/reservations")(
            lambda r: self._aggregated(r, "reservations", self.reservations)
        )
        route("GET", P + r"/aggregated/instances")(
            lambda r: self._aggregated(r, "instances", self._instances_by_zone())
        )
        route("GET", INSTANCES_PATH)(self._list_instances)
        route("POST", INSTANCES_PATH)(self._insert)
        route("GET", INSTANCES_PATH + r"/(?P<name>[^/]+)")(self._get_instance)
        route("DELETE", INSTANCES_PATH + r"/(?P<name>[^/]+)")(self._delete)
        route("GET", ZONE + r"/operations")(self._list_operations)
        route("GET", ZONE + r"/operations/(?P<op>[^/]+)")(self._get_operation)
        route("POST", ZONE + r"/operations/(?P<op>[^/]+)/wait")(self._get_operation)
        route("GET", SKUS_PATH)(self._skus)

    def _machine_types_by_zone(self) -> dict[str, list[dict]]:
        return {
            z: [
                {
                    **mt,
                    "zone": z,
                    "selfLink": f"{SELF}/projects/{self.project}/zones/{z}/machineTypes/{mt['name']}",
                }
                for mt in mts
            ]
            for z, mts in self.machine_types.items()
        }

    def _instances_by_zone(self) -> dict[str, list[dict]]:
        zones: dict[str, list[dict]] = {z: [] for z in self.machine_types}
        for (zone, _), instance in sorted(self.instances.items()):
            zones.setdefault(zone, []).append(instance)
        return zones

    def _aggregated(self, request: FakeRequest, kind: str, by_zone: dict[str, list[dict]]) -> FakeResponse:
        try:
            keep = _filter(request.query.get("filter", [""])[0])
        except ValueError as exc:
            return FakeResponse(400, error_body(400, "invalid", f"Invalid value for field 'filter': {exc}"))
        zones = sorted(by_zone)
        start = int(request.query.get("pageToken", ["0"])[0])
        page = zones[start : start + self.aggregated_page_zones]
        items: dict[str, dict] = {}
        for zone in page:
            found = [r for r in by_zone[zone] if keep(r)]
            items[f"zones/{zone}"] = (
                {kind: found}
                if found
                else {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": f"There are no results for scope 'zones/{zone}' on this page.",
                        "data": [{"key": "scope", "value": f"zones/{zone}"}],
                    }
                }
            )
        body: dict[str, Any] = {
            "kind": f"compute#{kind[:-1]}AggregatedList",
            "items": items,
            "id": f"projects/{self.project}/aggregated/{kind}",
        }
        if start + self.aggregated_page_zones < len(zones):
            body["nextPageToken"] = str(start + self.aggregated_page_zones)
        return FakeResponse(200, body)

    def _list_instances(self, request: FakeRequest) -> FakeResponse:
        zone = request.params["zone"]
        found = [i for (z, _), i in self.instances.items() if z == zone]
        limit = int(request.query.get("maxResults", ["500"])[0])
        return FakeResponse(
            200,
            {
                "kind": "compute#instanceList",
                "items": found[:limit],
                "id": f"projects/{self.project}/zones/{zone}/instances",
            },
        )

    def _not_found(self, path: str) -> FakeResponse:
        message = f"The resource '{path}' was not found"
        return FakeResponse(404, error_body(404, "notFound", message))

    def _get_instance(self, request: FakeRequest) -> FakeResponse:
        zone, name = request.params["zone"], request.params["name"]
        instance = self.instances.get((zone, name))
        if instance is None:
            return self._not_found(f"projects/{self.project}/zones/{zone}/instances/{name}")
        return FakeResponse(200, instance)

    def _insert(self, request: FakeRequest) -> FakeResponse:
        zone = request.params["zone"]
        request_id = request.query.get("requestId", [""])[0]
        if request_id in self.request_ids:  # GCE replays the first answer to a repeated requestId
            return FakeResponse(200, self.operations[self.request_ids[request_id]])
        body = request.json() or {}
        problem = self._invalid_insert(zone, body)
        if problem:
            return FakeResponse(400, error_body(400, "invalid", problem))
        name = body["name"]
        if (zone, name) in self.instances:
            path = f"projects/{self.project}/zones/{zone}/instances/{name}"
            return FakeResponse(
                409, error_body(409, "alreadyExists", f"The resource '{path}' already exists")
            )
        instance = self._new_instance(zone, body)
        error, self.next_insert_error = self.next_insert_error, None
        if error is None:
            self.instances[(zone, name)] = instance
        op = self._operation(zone, "insert", instance)
        key = (zone, op["name"])

        def finish() -> None:
            if error is not None:
                op.update(error)
            elif (zone, name) in self.instances:
                self.instances[(zone, name)]["status"] = "RUNNING"
                self.instances[(zone, name)]["lastStartTimestamp"] = _now()

        self.pending[key] = finish
        if request_id:
            self.request_ids[request_id] = key
        return FakeResponse(200, op)

    def _invalid_insert(self, zone: str, body: dict) -> str | None:
        name = body.get("name", "")
        if not _NAME.match(name):
            return (
                f"Invalid value for field 'resource.name': '{name}'. Must be a match of regex {_NAME.pattern}"
            )
        machine = body.get("machineType", "").rsplit("/", 1)[-1]
        known = {mt["name"]: mt for mt in self.machine_types.get(zone, [])}
        if machine not in known:
            return (
                f"Invalid value for field 'resource.machineType': '{body.get('machineType')}'. "
                f"Machine type with name '{machine}' does not exist in zone '{zone}'."
            )
        scheduling = body.get("scheduling", {})
        if known[machine].get("accelerators") and scheduling.get("onHostMaintenance") != "TERMINATE":
            return "Instances with guest accelerators do not support live migration."
        if scheduling.get("provisioningModel") == "SPOT" and scheduling.get("automaticRestart", True):
            return "Invalid value for field 'resource.scheduling.automaticRestart': 'true'."
        boots = [d for d in body.get("disks", []) if d.get("boot")]
        if len(boots) != 1 or not boots[0].get("initializeParams", {}).get("sourceImage"):
            return "Invalid value for field 'resource.disks': a boot disk needs initializeParams.sourceImage."
        for key, value in body.get("labels", {}).items():
            if not (_LABEL.match(key) and key[:1].isalpha() and _LABEL.match(value)):
                return f"Invalid value for field 'resource.labels': '{key}'."
        affinity = body.get("reservationAffinity", {})
        if affinity.get("consumeReservationType") == "SPECIFIC_RESERVATION":
            wanted = affinity.get("values", [""])[0]
            matching = [r for r in self.reservations.get(zone, []) if r["name"] == wanted]
            if affinity.get("key") != "compute.googleapis.com/reservation-name" or not matching:
                return f"Specified reservation '{wanted}' does not exist."
            matching[0]["specificReservation"]["inUseCount"] = str(
                int(matching[0]["specificReservation"]["inUseCount"]) + 1
            )
        return None

    def _new_instance(self, zone: str, body: dict) -> dict:
        base = f"{SELF}/projects/{self.project}/zones/{zone}"
        interfaces = [
            {
                **nic,
                "kind": "compute#networkInterface",
                "name": f"nic{i}",
                "networkIP": f"10.128.0.{10 + i}",
                "network": f"{SELF}/projects/{self.project}/{nic.get('network', 'global/networks/default')}",
                "accessConfigs": [
                    {**ac, "kind": "compute#accessConfig", "natIP": "34.121.7.20", "networkTier": "PREMIUM"}
                    for ac in nic.get("accessConfigs", [])
                ],
            }
            for i, nic in enumerate(body.get("networkInterfaces", []))
        ]
        return {
            **body,
            "kind": "compute#instance",
            "id": str(next(self._ids)),
            "creationTimestamp": _now(),
            "machineType": f"{base}/machineTypes/{body['machineType'].rsplit('/', 1)[-1]}",
            "status": "PROVISIONING",
            "zone": base,
            "networkInterfaces": interfaces,
            "selfLink": f"{base}/instances/{body['name']}",
            "cpuPlatform": "Unknown CPU Platform",
            "labelFingerprint": secrets.token_urlsafe(8),
            "fingerprint": secrets.token_urlsafe(8),
            "startRestricted": False,
            "deletionProtection": False,
        }

    def _delete(self, request: FakeRequest) -> FakeResponse:
        zone, name = request.params["zone"], request.params["name"]
        request_id = request.query.get("requestId", [""])[0]
        if request_id in self.request_ids:
            return FakeResponse(200, self.operations[self.request_ids[request_id]])
        instance = self.instances.get((zone, name))
        if instance is None:
            return self._not_found(f"projects/{self.project}/zones/{zone}/instances/{name}")
        instance["status"] = "STOPPING"
        op = self._operation(zone, "delete", instance)
        self.pending[(zone, op["name"])] = lambda: self.instances.pop((zone, name), None)
        if request_id:
            self.request_ids[request_id] = (zone, op["name"])
        return FakeResponse(200, op)

    def _operation(
        self, zone: str, kind: str, instance: dict, status: str = "RUNNING", user: str = "", name: str = ""
    ) -> dict:
        now = _now()
        name = name or f"operation-{int(datetime.now(UTC).timestamp() * 1000)}-{secrets.token_hex(6)}"
        op = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "zone": f"{SELF}/projects/{self.project}/zones/{zone}",
            "operationType": kind,
            "targetLink": instance["selfLink"],
            "targetId": instance["id"],
            "status": status,
            "user": user or "gpubroker@gpubroker-test.iam.gserviceaccount.com",
            "progress": 100 if status == "DONE" else 0,
            "insertTime": now,
            "startTime": now,
            "selfLink": f"{SELF}/projects/{self.project}/zones/{zone}/operations/{name}",
        }
        self.operations[(zone, name)] = op
        return op

    def _get_operation(self, request: FakeRequest) -> FakeResponse:
        key = (request.params["zone"], request.params["op"])
        op = self.operations.get(key)
        if op is None:
            return self._not_found(f"projects/{self.project}/zones/{key[0]}/operations/{key[1]}")
        if not self.hold_operations and key in self.pending:
            self.pending.pop(key)()
            op.update(status="DONE", progress=100, endTime=_now())
        return FakeResponse(200, op)

    def _list_operations(self, request: FakeRequest) -> FakeResponse:
        zone = request.params["zone"]
        try:
            keep = _filter(request.query.get("filter", [""])[0])
        except ValueError as exc:
            return FakeResponse(400, error_body(400, "invalid", f"Invalid value for field 'filter': {exc}"))
        found = [op for (z, _), op in self.operations.items() if z == zone and keep(op)]
        return FakeResponse(
            200,
            {
                "kind": "compute#operationList",
                "items": found,
                "id": f"projects/{self.project}/zones/{zone}/operations",
            },
        )

    def _skus(self, request: FakeRequest) -> FakeResponse:
        if request.params["service"] != COMPUTE_ENGINE:
            return FakeResponse(
                404, {"error": {"code": 404, "message": "Service not found.", "status": "NOT_FOUND"}}
            )
        size = min(int(request.query.get("pageSize", ["5000"])[0]), self.sku_page_size)
        start = int(request.query.get("pageToken", ["0"])[0] or 0)
        end = start + size
        return FakeResponse(
            200, {"skus": self.skus[start:end], "nextPageToken": str(end) if end < len(self.skus) else ""}
        )


def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="milliseconds")


def _filter(expression: str) -> Callable[[dict], bool]:
    """The Compute list ``filter`` forms the adapter sends: ``field = "v"``, ``field eq "RE2"``, AND-ed."""
    if not expression.strip():
        return lambda resource: True
    checks: list[Callable[[dict], bool]] = []
    for term in expression.split(" AND "):
        match = _TERM.match(term)
        if match is None:
            raise ValueError(f"unsupported filter term {term!r}")
        path, op, value = match["field"].split("."), match["op"], match["value"]

        def check(resource: dict, path: list[str] = path, op: str = op, value: str = value) -> bool:
            current: Any = resource
            for part in path:
                current = current.get(part) if isinstance(current, dict) else None
            text = (
                "" if current is None else str(current).lower() if isinstance(current, bool) else str(current)
            )
            if op in ("eq", "ne"):
                return (re.fullmatch(value, text) is not None) == (op == "eq")
            return (text == value) == (op == "=")

        checks.append(check)
    return lambda resource: all(check(resource) for check in checks)
