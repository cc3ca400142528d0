"""A fake of Lambda Cloud's REST API v1 on a local FakeHTTPServer (does I/O on 127.0.0.1 only).

Paths, JSON field names, error bodies and codes follow Lambda's OpenAPI spec (1.4 vendored in
leptonai/leptonai, 1.10 models in lambda-ai-cloud-api-client): every answer is ``{"data": ...}``
and every error ``{"error": {"code", "message", "suggestion"}}``. Launch requests are checked as
strictly as the spec's ``additionalProperties: false`` schema. A 429's body is undocumented; the
fake sends a bare text one with a Retry-After header, and the adapter keys on the status.
"""

from __future__ import annotations

import copy
import re
import uuid
from typing import Any

from tests.providers.fakes.http import FakeHTTPServer, FakeRequest, FakeResponse, Handler

API = "/api/v1"
API_KEY = "secret_lambda-test-key_0123456789abcdef"
SSH_KEY_NAME = "gpubroker-deploy"

REGIONS = {
    "us-east-1": "Virginia, USA",
    "us-west-1": "California, USA",
    "us-south-1": "Texas, USA",
    "us-east-3": "Washington DC, USA",
}


def _type(
    name: str, description: str, gpu: str, cents: int, vcpus: int, memory: int, storage: int, gpus: int
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "gpu_description": gpu,
        "price_cents_per_hour": cents,
        "specs": {"vcpus": vcpus, "memory_gib": memory, "storage_gib": storage, "gpus": gpus},
    }


# Realistic catalog entries (names, descriptions and specs as Lambda lists them).
CATALOG: dict[str, dict[str, Any]] = {
    "gpu_8x_h100_sxm5": {
        "instance_type": _type(
            "gpu_8x_h100_sxm5", "8x H100 (80 GB SXM5)", "H100 (80 GB SXM5)", 2392, 208, 1800, 22528, 8
        ),
        "regions_with_capacity_available": ["us-east-1", "us-west-1"],
    },
    "gpu_1x_h100_pcie": {
        "instance_type": _type(
            "gpu_1x_h100_pcie", "1x H100 (80 GB PCIe)", "H100 (80 GB PCIe)", 249, 26, 200, 1024, 1
        ),
        "regions_with_capacity_available": ["us-south-1"],
    },
    "gpu_8x_a100_80gb_sxm4": {
        "instance_type": _type(
            "gpu_8x_a100_80gb_sxm4", "8x A100 (80 GB SXM4)", "A100 (80 GB SXM4)", 1432, 240, 1800, 19968, 8
        ),
        "regions_with_capacity_available": [],  # sold out everywhere
    },
    "gpu_1x_a10": {
        "instance_type": _type("gpu_1x_a10", "1x A10 (24 GB PCIe)", "A10 (24 GB PCIe)", 75, 30, 200, 1400, 1),
        "regions_with_capacity_available": ["us-east-1", "us-west-1", "us-south-1"],
    },
    "gpu_1x_gh200": {
        "instance_type": _type("gpu_1x_gh200", "1x GH200 (96 GB)", "GH200 (96 GB)", 149, 64, 432, 4096, 1),
        "regions_with_capacity_available": ["us-east-3"],
    },
}

# Error bodies as the spec's ApiError* schemas give them, keyed by the contract's error kinds.
ERRORS: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {
    "capacity": (
        400,
        {
            "code": "instance-operations/launch/insufficient-capacity",
            "message": "Not enough capacity to fulfill launch request.",
            "suggestion": "Choose an instance type with more availability, or try again later.",
        },
        {},
    ),
    "quota": (
        400,
        {
            "code": "global/quota-exceeded",
            "message": "Quota exceeded.",
            "suggestion": "Contact Support to increase your quota.",
        },
        {},
    ),
    "auth": (
        401,
        {
            "code": "global/invalid-api-key",
            "message": "API key was invalid, expired, or deleted.",
            "suggestion": "Check your API key or create a new one, then try again.",
        },
        {},
    ),
    "account": (
        403,
        {
            "code": "global/account-inactive",
            "message": "Your account is inactive.",
            "suggestion": "Make sure you have verified your email address and have a valid payment method.",
        },
        {},
    ),
    "invalid": (400, {"code": "global/invalid-parameters", "message": "Invalid request data."}, {}),
    "not-found": (
        404,
        {"code": "global/object-does-not-exist", "message": "Specified instance does not exist."},
        {},
    ),
    "server": (500, {"code": "global/unknown", "message": "Something unexpected occurred."}, {}),
}

_LAUNCH_FIELDS = {
    "region_name",
    "instance_type_name",
    "ssh_key_names",
    "file_system_names",
    "file_system_mounts",
    "hostname",
    "name",
    "image",
    "user_data",
    "tags",
    "firewall_rulesets",
}
_TAG_KEY = re.compile(r"^[a-z][a-z0-9-:]+$")


def error_response(kind: str, **extra: str) -> FakeResponse:
    if kind == "throttle":
        # The docs promise a 429 past ~1 request/s but document no body; send a bare one.
        return FakeResponse(429, b"Too Many Requests", {"Retry-After": "2", "Content-Type": "text/plain"})
    status, error, headers = ERRORS[kind]
    return FakeResponse(status, {"error": {**error, **extra}}, dict(headers))


class FakeLambdaCloud:
    """Lambda Cloud's API v1 in memory: the instance-type catalog, instances, and scripted faults."""

    def __init__(self, api_key: str = API_KEY) -> None:
        self.api_key = api_key
        self.server = FakeHTTPServer()
        self.catalog = copy.deepcopy(CATALOG)
        self.ssh_keys = {SSH_KEY_NAME}
        self.instances: dict[str, dict[str, Any]] = {}
        self.base_url = ""  # set by start(); stays valid (and refused) after stop()
        self._register()

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> str:
        """Start serving; returns the base URL to hand the adapter (ends in /api/v1)."""
        self.base_url = self.server.start() + API
        return self.base_url

    def stop(self) -> None:
        self.server.stop()

    # --- scripting ----------------------------------------------------------------------------
    def fail_next(self, method: str, path: str, kind: str, times: int = 1) -> None:
        self.server.inject(method, API + path, error_response(kind), times)

    def lose_next_response(self, method: str, path: str) -> None:
        self.server.lose_response(method, API + path)

    def set_status(self, instance_id: str, status: str) -> None:
        self.instances[instance_id]["status"] = status

    def live_count(self) -> int:
        return sum(1 for i in self.instances.values() if i["status"] not in ("terminating", "terminated"))

    def calls(self, method: str, path: str) -> list[FakeRequest]:
        return self.server.calls(method, API + path)

    # --- the API ------------------------------------------------------------------------------
    def _authorized(self, request: FakeRequest) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.api_key}"

    def _register(self) -> None:
        route = self.server.route

        def guarded(handler: Handler) -> Handler:
            def wrapped(request: FakeRequest) -> FakeResponse:
                if not self._authorized(request):
                    return error_response("auth")
                return handler(request)

            return wrapped

        route("GET", API + r"/instance-types")(guarded(self._instance_types))
        route("GET", API + r"/instances")(guarded(self._list))
        route("GET", API + r"/instances/(?P<id>[^/]+)")(guarded(self._get))
        route("POST", API + r"/instance-operations/launch")(guarded(self._launch))
        route("POST", API + r"/instance-operations/terminate")(guarded(self._terminate))
        route("GET", API + r"/ssh-keys")(guarded(self._ssh_keys))

    def _instance_types(self, request: FakeRequest) -> FakeResponse:
        data = {
            name: {
                "instance_type": entry["instance_type"],
                "regions_with_capacity_available": [
                    {"name": r, "description": REGIONS[r]} for r in entry["regions_with_capacity_available"]
                ],
            }
            for name, entry in self.catalog.items()
        }
        return FakeResponse(200, {"data": data})

    def _list(self, request: FakeRequest) -> FakeResponse:
        # "Retrieves a detailed list of running instances": terminated ones drop out.
        live = [i for i in self.instances.values() if i["status"] != "terminated"]
        return FakeResponse(200, {"data": live})

    def _get(self, request: FakeRequest) -> FakeResponse:
        instance = self.instances.get(request.params["id"])
        if instance is None:
            return error_response("not-found")
        return FakeResponse(200, {"data": instance})

    def _ssh_keys(self, request: FakeRequest) -> FakeResponse:
        keys = [
            {"id": uuid.uuid4().hex, "name": n, "public_key": "ssh-ed25519 AAAA fake"} for n in self.ssh_keys
        ]
        return FakeResponse(200, {"data": keys})

    def _launch(self, request: FakeRequest) -> FakeResponse:
        body = request.json()
        if not isinstance(body, dict) or set(body) - _LAUNCH_FIELDS:
            return error_response("invalid", message="Invalid request data.")
        for required in ("region_name", "instance_type_name", "ssh_key_names"):
            if required not in body:
                return error_response("invalid", message=f"Missing {required}.")
        keys = body["ssh_key_names"]
        if not isinstance(keys, list) or len(keys) != 1:
            return error_response("invalid", message="Exactly one SSH key must be specified.")
        if keys[0] not in self.ssh_keys:
            return error_response("not-found", message=f"SSH key {keys[0]!r} does not exist.")
        name = body.get("name")
        if name is not None and not (isinstance(name, str) and 1 <= len(name) <= 64):
            return error_response("invalid", message="Name must be 64 characters or fewer.")
        for tag in body.get("tags", []):
            if not (isinstance(tag, dict) and set(tag) == {"key", "value"} and _TAG_KEY.match(tag["key"])):
                return error_response("invalid", message="Invalid tag.")
        entry = self.catalog.get(body["instance_type_name"])
        if entry is None:
            return error_response("not-found", message="Instance type does not exist.")
        if body["region_name"] not in REGIONS:
            return error_response("invalid", message="Invalid region.")
        if body["region_name"] not in entry["regions_with_capacity_available"]:
            return error_response("capacity")
        instance_id = uuid.uuid4().hex
        region = body["region_name"]
        self.instances[instance_id] = {
            "id": instance_id,
            "name": name,
            "ip": None,
            "private_ip": None,
            "status": "booting",
            "ssh_key_names": keys,
            "file_system_names": body.get("file_system_names", []),
            "region": {"name": region, "description": REGIONS[region]},
            "instance_type": entry["instance_type"],
            "hostname": None,
            "jupyter_token": uuid.uuid4().hex,
            "jupyter_url": None,
            "actions": {
                "migrate": {"available": False, "reason_code": "vm-has-not-launched"},
                "rebuild": {"available": False, "reason_code": "vm-has-not-launched"},
                "restart": {"available": False, "reason_code": "vm-has-not-launched"},
                "cold_reboot": {"available": False, "reason_code": "vm-has-not-launched"},
                "terminate": {"available": True},
            },
            "tags": body.get("tags", []),
        }
        return FakeResponse(200, {"data": {"instance_ids": [instance_id]}})

    def _terminate(self, request: FakeRequest) -> FakeResponse:
        body = request.json()
        ids = body.get("instance_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not ids:
            return error_response("invalid")
        missing = [i for i in ids if i not in self.instances or self.instances[i]["status"] == "terminated"]
        if missing:
            return error_response("not-found")
        terminated = []
        for instance_id in ids:
            self.instances[instance_id]["status"] = "terminated"
            terminated.append(self.instances[instance_id])
        return FakeResponse(200, {"data": {"terminated_instances": terminated}})
