"""A fake of Shadeform's REST API v1 on a local FakeHTTPServer (does I/O on 127.0.0.1 only).

Paths and JSON field names follow Shadeform's OpenAPI spec (shadeform/docs ``openapi.yaml`` and
the newer spec in shadeform/shadeform-cli ``.speakeasy/out.openapi.yaml``), with example values
from ``getting-started/quickstart.mdx`` and ``guides/spotinstances.mdx``: availability entries
carry ``rental_type``, spot entries their own ``hourly_price`` in dollars, instances
``rental_terms``, and a reclaimed spot instance goes to ``deleting`` with
``status_details: "preempted"``.

Shadeform documents only one error body, the 401's ``{"message": "Invalid API key"}``; the fake
uses that shape for every error. The out-of-capacity wording is ours (the docs only say the
error "implies that the selected instance is out of capacity"), as is the 429's Retry-After.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from tests.providers.fakes.http import FakeHTTPServer, FakeRequest, FakeResponse, Handler

API = "/v1"
API_KEY = "sf_test_key_4e1c2b9a7d3f4a0b8c6d"


def _availability(
    region: str, display: str, available: bool, spot: str | None = None
) -> list[dict[str, Any]]:
    entries = [
        {"region": region, "available": available, "display_name": display, "rental_type": "on_demand"}
    ]
    if spot is not None:
        entries.append(
            {
                "region": region,
                "available": True,
                "display_name": display,
                "rental_type": "spot",
                "hourly_price": spot,
            }
        )
    return entries


def _config(
    memory: int, storage: int, vcpus: int, gpus: int, gpu: str, link: str, vram: int
) -> dict[str, Any]:
    return {
        "memory_in_gb": memory,
        "storage_in_gb": storage,
        "vcpus": vcpus,
        "num_gpus": gpus,
        "gpu_type": gpu,
        "interconnect": link,
        "nvlink": link.startswith("sxm"),
        "vram_per_gpu_in_gb": vram,
        "os_options": ["ubuntu22.04_cuda12.2_shade_os", "ubuntu20.04_cuda12.0_shade_os"],
        "gpu_manufacturer": "nvidia",
    }


CATALOG: list[dict[str, Any]] = [
    {
        "cloud": "hyperstack",
        "shade_instance_type": "H100_sxm5x8",
        "cloud_instance_type": "n3-H100-SXM5x8",
        "configuration": _config(1440, 32000, 192, 8, "H100", "sxm5", 80),
        "hourly_price": 1920,
        "deployment_type": "vm",
        "availability": [
            *_availability("canada-1", "Canada, Montreal", True),
            *_availability("norway-1", "Norway, Oslo", False),
        ],
        "boot_time": {"min_boot_in_sec": 600, "max_boot_in_sec": 900},
    },
    {
        "cloud": "massedcompute",
        "shade_instance_type": "A6000_plus",
        "cloud_instance_type": "gpu_1x_A6000_high_perf",
        "configuration": _config(64, 256, 12, 1, "A6000", "pcie", 48),
        "hourly_price": 57,
        "deployment_type": "vm",
        "availability": _availability("us-central-1", "US, Wichita, KS", True),
        "boot_time": {"min_boot_in_sec": 180, "max_boot_in_sec": 300},
    },
    {
        "cloud": "excesssupply",
        "shade_instance_type": "A6000",
        "cloud_instance_type": "A6000x1",
        "configuration": _config(48, 256, 8, 1, "A6000", "pcie", 48),
        "hourly_price": 49,
        "deployment_type": "vm",
        "availability": _availability("us-central-1", "US, Wichita, KS", False, spot="0.30"),
        "boot_time": {"min_boot_in_sec": 120, "max_boot_in_sec": 240},
    },
    {
        "cloud": "datacrunch",
        "shade_instance_type": "A100_80G",
        "cloud_instance_type": "1A100.22V",
        "configuration": _config(120, 512, 22, 1, "A100_80G", "sxm4", 80),
        "hourly_price": 129,
        "deployment_type": "vm",
        "availability": _availability("FIN-01", "Finland, Helsinki", True),
        "boot_time": {"min_boot_in_sec": 120, "max_boot_in_sec": 300},
    },
]

# Error answers keyed by the contract's kinds, in the documented {"message": ...} shape.
ERRORS: dict[str, FakeResponse] = {
    "auth": FakeResponse(401, {"message": "Invalid API key"}),
    "forbidden": FakeResponse(403, {"message": "API key lacks the platform_write permission"}),
    "invalid": FakeResponse(400, {"message": "invalid shade_instance_type for cloud"}),
    "capacity": FakeResponse(
        400, {"message": "The selected instance is out of capacity. Please try another."}
    ),
    "not-found": FakeResponse(404, {"message": "instance not found"}),
    "throttle": FakeResponse(429, {"message": "Too Many Requests"}, {"Retry-After": "3"}),
    "server": FakeResponse(500, {"message": "Internal Server Error"}),
}


def error_response(kind: str, message: str | None = None) -> FakeResponse:
    base = ERRORS[kind]
    body = {"message": message} if message else copy.deepcopy(base.body)
    return FakeResponse(base.status, body, dict(base.headers))


class FakeShadeform:
    """Shadeform's API v1 in memory: the instance-type catalog, instances, and scripted faults."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.server = FakeHTTPServer()
        self.catalog = copy.deepcopy(CATALOG)
        self.instances: dict[str, dict[str, Any]] = {}
        self.base_url = ""  # set by start(); stays valid (and refused) after stop()
        self._register()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> str:
        self.base_url = self.server.start() + API
        return self.base_url

    def stop(self) -> None:
        self.server.stop()

    # --- scripting ----------------------------------------------------------------------------
    def fail_next(self, method: str, path: str, kind: str, times: int = 1) -> None:
        self.server.inject(method, API + path, error_response(kind), times)

    def lose_next_response(self, method: str, path: str) -> None:
        self.server.lose_response(method, API + path)

    def set_status(self, instance_id: str, status: str, details: str = "") -> None:
        self.instances[instance_id].update(status=status, status_details=details)

    def reclaim(self, instance_id: str) -> None:
        """Shadeform takes a spot instance back: 'deleting' with status_details 'preempted'."""
        self.set_status(instance_id, "deleting", "preempted")

    def finish_deletes(self) -> None:
        for instance in self.instances.values():
            if instance["status"] == "deleting":
                instance.update(status="deleted", deleted_at="2026-11-20T12:30:00Z")

    def by_name(self, name: str) -> dict[str, Any]:
        (found,) = [i for i in self.instances.values() if i["name"] == name]
        return found

    def live_count(self) -> int:
        return sum(1 for i in self.instances.values() if i["status"] not in ("deleting", "deleted"))

    def calls(self, method: str, path: str) -> list[FakeRequest]:
        return self.server.calls(method, API + path)

    # --- the API ------------------------------------------------------------------------------
    def _register(self) -> None:
        def guarded(handler: Handler) -> Handler:
            def wrapped(request: FakeRequest) -> FakeResponse:
                if request.headers.get("x-api-key") != self.api_key:
                    return error_response("auth")
                return handler(request)

            return wrapped

        route = self.server.route
        route("GET", API + r"/instances/types")(guarded(self._types))
        route("GET", API + r"/instances")(guarded(self._list))
        route("POST", API + r"/instances/create")(guarded(self._create))
        route("GET", API + r"/instances/(?P<id>[^/]+)/info")(guarded(self._info))
        route("POST", API + r"/instances/(?P<id>[^/]+)/delete")(guarded(self._delete))

    def _types(self, request: FakeRequest) -> FakeResponse:
        query = {k: v[0] for k, v in request.query.items()}
        types = []
        for itype in self.catalog:
            config = itype["configuration"]
            if "cloud" in query and itype["cloud"] != query["cloud"]:
                continue
            if (
                "shade_instance_type" in query
                and itype["shade_instance_type"] != query["shade_instance_type"]
            ):
                continue
            if "gpu_type" in query and config["gpu_type"] != query["gpu_type"]:
                continue
            if "num_gpus" in query and str(config["num_gpus"]) != query["num_gpus"]:
                continue
            entries = itype["availability"]
            if "region" in query:
                entries = [e for e in entries if e["region"] == query["region"]]
            if query.get("available") == "true":
                # "Applies to individual availability entries"
                entries = [e for e in entries if e["available"]]
            if entries:
                types.append({**itype, "availability": entries})
        if query.get("sort") == "price":
            types.sort(key=lambda t: t["hourly_price"])
        return FakeResponse(200, {"instance_types": types})

    def _list(self, request: FakeRequest) -> FakeResponse:
        # "Get all non deleted instances. Note: instances in the "deleting" status will also show up here."
        return FakeResponse(
            200, {"instances": [i for i in self.instances.values() if i["status"] != "deleted"]}
        )

    def _info(self, request: FakeRequest) -> FakeResponse:
        instance = self.instances.get(request.params["id"])
        return FakeResponse(200, instance) if instance else error_response("not-found")

    def _delete(self, request: FakeRequest) -> FakeResponse:
        instance = self.instances.get(request.params["id"])
        if instance is None or instance["status"] == "deleted":
            return error_response("not-found")
        instance["status"] = "deleting"  # billing stops here
        return FakeResponse(200, b"")

    def _create(self, request: FakeRequest) -> FakeResponse:
        body = request.json()
        if not isinstance(body, dict):
            return error_response("invalid", "request body must be a JSON object")
        missing = [
            f for f in ("cloud", "region", "shade_instance_type", "shade_cloud", "name") if f not in body
        ]
        if missing:
            return error_response("invalid", f"missing required fields: {', '.join(missing)}")
        rental_type = body.get("rental_type", "on_demand")
        if rental_type not in ("on_demand", "spot"):
            return error_response("invalid", f"invalid rental_type {rental_type!r}")
        if rental_type == "spot" and body["shade_cloud"] is not True:
            return error_response("invalid", "spot instances require shade_cloud to be true")
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            return error_response("invalid", "tags must be a list of strings")
        itype = next(
            (
                t
                for t in self.catalog
                if t["cloud"] == body["cloud"] and t["shade_instance_type"] == body["shade_instance_type"]
            ),
            None,
        )
        if itype is None:
            return error_response("invalid")
        entry = next(
            (
                e
                for e in itype["availability"]
                if e["region"] == body["region"] and e["rental_type"] == rental_type
            ),
            None,
        )
        if entry is None:
            return error_response(
                "invalid", f"{rental_type} is not offered for this instance type in that region"
            )
        if not entry["available"]:
            return error_response("capacity")
        os_name = body.get("os", itype["configuration"]["os_options"][0])
        if os_name not in itype["configuration"]["os_options"]:
            return error_response("invalid", f"invalid os {os_name!r}")
        price = entry["hourly_price"] if rental_type == "spot" else f"{itype['hourly_price'] / 100:.2f}"
        instance_id = str(uuid.uuid4())
        config = {k: v for k, v in itype["configuration"].items() if k != "os_options"}
        self.instances[instance_id] = {
            "id": instance_id,
            "cloud": itype["cloud"],
            "region": body["region"],
            "shade_instance_type": itype["shade_instance_type"],
            "cloud_instance_type": itype["cloud_instance_type"],
            "cloud_assigned_id": str(uuid.uuid4()),
            "shade_cloud": True,
            "name": body["name"],
            "configuration": {**config, "os": os_name},
            "ip": None,
            "ssh_user": "shadeform",
            "ssh_port": None,
            "status": "creating",
            "status_details": "",
            "cost_estimate": "0",
            "hourly_price": itype["hourly_price"],
            "rental_terms": {"rental_type": rental_type, "hourly_price": price, "ending_at": None},
            "ssh_key_id": body.get("ssh_key_id"),
            "tags": tags,
            "port_mappings": [],
            "active_at": None,
            "created_at": "2026-11-20T12:00:00.118626Z",
            "deleted_at": None,
            "boot_time": itype["boot_time"],
        }
        return FakeResponse(
            200, {"id": instance_id, "cloud_assigned_id": self.instances[instance_id]["cloud_assigned_id"]}
        )
