"""A fake of RunPod's GraphQL API (POST /graphql) on a local FakeHTTPServer (does I/O on 127.0.0.1 only).

It reads the GraphQL documents it is sent, so it answers only the fields a query selects and
refuses what the real server refuses: unknown fields ('Cannot query field "x" on type "Pod".'),
variables of the wrong input type and unknown input fields (graphql-js wording, HTTP 400,
``extensions.code`` GRAPHQL_VALIDATION_FAILED / BAD_USER_INPUT). Type and field names follow
graphql-spec.runpod.io as runpod-python, runpodctl, SkyPilot and dstack use them.

Business errors are HTTP 200 with ``{"errors": [{"message", "path", "extensions"}], "data": {f: null}}``;
the capacity message is RunPod's own ("There are no longer any instances available with the
requested specifications. Please refresh and try again."). Not documented, so chosen here: the
401 body, the 429 body (no Retry-After) and the text of ``lastStatusChange`` after a preemption.

Every request is POST /graphql, so failures are scripted by GraphQL root field
(``fail_next(("podRentInterruptable",), "capacity")``), not by path.
"""

from __future__ import annotations

import copy
import io
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.providers.fakes.http import FakeHTTPServer, FakeRequest, FakeResponse

API_KEY = "rpa_TESTKEY3Q2ZRKZ98IUYTSK2OQQ2CWQxkd01"
CAPACITY_MESSAGE = (
    "There are no longer any instances available with the requested specifications. "
    "Please refresh and try again."
)


class GraphQLError(Exception):
    def __init__(self, message: str, code: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.code, self.status = message, code, status


# --- the schema subset the fake serves -------------------------------------------------------
def _names(text: str) -> list[str]:
    return text.split()


OUTPUT: dict[str, dict[str, str | None]] = {  # type -> field -> object type (None: scalar)
    "Query": {"myself": "User", "pod": "Pod", "gpuTypes": "GpuType"},
    "Mutation": {"podFindAndDeployOnDemand": "Pod", "podRentInterruptable": "Pod", "podTerminate": None},
    "User": {"id": None, "email": None, "clientBalance": None, "currentSpendPerHr": None, "pods": "Pod"},
    "Pod": dict.fromkeys(
        _names(
            "id name desiredStatus podType costPerHr gpuCount vcpuCount memoryInGb imageName "
            "lastStatusChange machineId uptimeSeconds env ports containerDiskInGb volumeInGb "
            "volumeMountPath dockerArgs"
        )
    )
    | {"machine": "PodMachineInfo", "runtime": "PodRuntime"},
    "PodMachineInfo": dict.fromkeys(
        _names("gpuTypeId gpuDisplayName dataCenterId location podHostId secureCloud costPerHr gpuAvailable")
    ),
    "PodRuntime": {"uptimeInSeconds": None, "ports": "PodRuntimePorts", "gpus": "PodRuntimeGpus"},
    "PodRuntimePorts": dict.fromkeys(_names("ip isIpPublic privatePort publicPort type")),
    "PodRuntimeGpus": dict.fromkeys(_names("id gpuUtilPercent memoryUtilPercent")),
    "GpuType": dict.fromkeys(
        _names(
            "id displayName manufacturer memoryInGb secureCloud communityCloud securePrice communityPrice "
            "secureSpotPrice communitySpotPrice maxGpuCount maxGpuCountSecureCloud maxGpuCountCommunityCloud"
        )
    )
    | {"lowestPrice": "LowestPrice"},
    "LowestPrice": dict.fromkeys(
        _names(
            "gpuName gpuTypeId minimumBidPrice uninterruptablePrice minVcpu minMemory stockStatus "
            "maxUnreservedGpuCount availableGpuCounts countryCode compliance"
        )
    ),
}
ARGUMENT_TYPES = {  # field -> input type its ``input`` argument takes
    "podFindAndDeployOnDemand": "PodFindAndDeployOnDemandInput",
    "podRentInterruptable": "PodRentInterruptableInput",
    "podTerminate": "PodTerminateInput",
    "pod": "PodFilter",
    "gpuTypes": "GpuTypeFilter",
    "lowestPrice": "GpuLowestPriceInput",
}
_DEPLOY_FIELDS = set(
    _names(
        "name imageName gpuTypeId gpuCount cloudType containerDiskInGb volumeInGb volumeMountPath "
        "minVcpuCount minMemoryInGb dockerArgs ports env startSsh startJupyter supportPublicIp "
        "dataCenterId countryCode "
        "templateId networkVolumeId allowedCudaVersions minDownload minUpload cudaVersion terminateAfter "
        "stopAfter volumeKey deployCost"
    )
)
INPUTS: dict[str, set[str]] = {
    "PodFindAndDeployOnDemandInput": _DEPLOY_FIELDS,
    "PodRentInterruptableInput": _DEPLOY_FIELDS | {"bidPerGpu"},
    "PodTerminateInput": {"podId"},
    "PodFilter": {"podId"},
    "GpuTypeFilter": {"id", "ids"},
    "GpuLowestPriceInput": set(
        _names(
            "gpuCount secureCloud dataCenterId countryCode minDisk minMemoryInGb minVcpuCount minDownload "
            "minUpload supportPublicIp compliance globalNetwork allowedCudaVersions includeAiApi totalDisk"
        )
    ),
}
REQUIRED = {
    "PodRentInterruptableInput": {"bidPerGpu"},
    "PodTerminateInput": {"podId"},
    "PodFilter": {"podId"},
}
CLOUD_TYPES = {"ALL", "SECURE", "COMMUNITY"}


# --- a minimal GraphQL reader ----------------------------------------------------------------
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|\$?[A-Za-z_]\w*|[{}()\[\]:!=@]')


@dataclass
class Selection:
    key: str  # alias, or the field name
    name: str
    args: dict[str, Any]
    variables: dict[str, str]  # argument -> variable it was given
    fields: list[Selection] | None


@dataclass
class Operation:
    kind: str  # "query" | "mutation"
    variable_types: dict[str, str]
    fields: list[Selection]


class _Reader:
    def __init__(self, text: str, variables: dict[str, Any]) -> None:
        self.tokens = _TOKENS.findall(text)
        self.pos = 0
        self.variables = variables

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            raise GraphQLError(
                f"Syntax Error: Expected {expected or 'token'}, found {token}.", "GRAPHQL_PARSE_FAILED"
            )
        self.pos += 1
        return token

    def operation(self) -> Operation:
        kind, types = "query", {}
        if self.peek() in ("query", "mutation"):
            kind = self.take()
            if self.peek() not in ("(", "{"):
                self.take()  # operation name
            if self.peek() == "(":
                self.take("(")
                while self.peek() != ")":
                    name = self.take()[1:]
                    self.take(":")
                    types[name] = self.take().strip("[]")
                    while self.peek() in ("!", "]"):
                        self.take()
                self.take(")")
        return Operation(kind, types, self.selection_set())

    def selection_set(self) -> list[Selection]:
        self.take("{")
        fields = []
        while self.peek() != "}":
            name, alias = self.take(), None
            if self.peek() == ":":
                self.take(":")
                alias, name = name, self.take()
            args: dict[str, Any] = {}
            variables: dict[str, str] = {}
            if self.peek() == "(":
                self.take("(")
                while self.peek() != ")":
                    arg = self.take()
                    self.take(":")
                    if (self.peek() or "").startswith("$"):
                        variables[arg] = (self.peek() or "")[1:]
                    args[arg] = self.value()
                self.take(")")
            subfields = self.selection_set() if self.peek() == "{" else None
            fields.append(Selection(alias or name, name, args, variables, subfields))
        self.take("}")
        return fields

    def value(self) -> Any:
        token = self.take()
        if token.startswith("$"):
            if token[1:] not in self.variables:
                raise GraphQLError(f'Variable "{token}" of required type was not provided.', "BAD_USER_INPUT")
            return self.variables[token[1:]]
        if token.startswith('"'):
            return json.loads(token)
        if token == "{":
            obj = {}
            while self.peek() != "}":
                key = self.take()
                self.take(":")
                obj[key] = self.value()
            self.take("}")
            return obj
        if token == "[":
            items = []
            while self.peek() != "]":
                items.append(self.value())
            self.take("]")
            return items
        if token in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[token]
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        if re.fullmatch(r"-?\d[\d.eE+-]*", token):
            return float(token)
        return token  # an enum value


def root_fields(body: bytes) -> tuple[str, ...]:
    """The root field names of a GraphQL request body (for scripting failures by operation)."""
    try:
        payload = json.loads(body or b"{}")
        return tuple(
            s.name
            for s in _Reader(payload.get("query", ""), payload.get("variables") or {}).operation().fields
        )
    except (ValueError, GraphQLError, AttributeError):
        return ()


# --- the server ------------------------------------------------------------------------------
@dataclass
class _FieldInjection:
    fields: frozenset[str]
    make: Callable[[str], FakeResponse | None]
    remaining: int
    response: FakeResponse | None = None  # what FakeHTTPServer._dispatch reads


def gpu_type(
    id: str, display: str, memory: int, secure: float | None, spot: float | None, max_count: int = 8,
    community: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A GpuType as ``gpuTypes`` answers it (prices are USD per GPU-hour)."""
    keys = "id displayName manufacturer memoryInGb secureCloud communityCloud securePrice communityPrice"
    values = [id, display, "Nvidia", memory, secure is not None, community is not None, secure, community]
    spot_and_max = {"secureSpotPrice": spot, "communitySpotPrice": None, "maxGpuCount": max_count}
    per_cloud = {"maxGpuCountSecureCloud": max_count * (secure is not None)}
    return dict(zip(keys.split(), values, strict=True)) | spot_and_max | per_cloud


GPU_TYPES = [
    gpu_type("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.69, 1.75),
    gpu_type("NVIDIA H100 PCIe", "H100 PCIe", 80, 2.39, 1.25),
    gpu_type("NVIDIA H100 NVL", "H100 NVL", 94, 2.79, None, max_count=2),
    gpu_type("NVIDIA H200", "H200 SXM", 141, 3.99, 2.29),
    gpu_type("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69, 0.35),
    gpu_type("NVIDIA GeForce RTX 3070", "RTX 3070", 8, None, None, community=0.13),
]
# Free Secure Cloud GPUs per data center (stockStatus is derived from these).
STOCK = {
    "NVIDIA H100 80GB HBM3": {"US-GA-2": 32, "EU-RO-1": 8},
    "NVIDIA H100 PCIe": {"US-TX-3": 2},
    "NVIDIA H100 NVL": {},
    "NVIDIA H200": {"EU-RO-1": 8},
    "NVIDIA GeForce RTX 4090": {"EU-RO-1": 64, "US-TX-3": 40},
}
COUNTRY = {"US-GA-2": "US", "US-TX-3": "US", "EU-RO-1": "RO"}
# A started pod's runtime, as pod { runtime { ... } } shows it.
RUNTIME = json.loads(
    '{"uptimeInSeconds": 12, "ports": ['
    '{"ip": "100.65.13.7", "isIpPublic": false, "privatePort": 22, "publicPort": 22, "type": "tcp"}, '
    '{"ip": "213.173.108.12", "isIpPublic": true, "privatePort": 22, "publicPort": 17022, "type": "tcp"}], '
    '"gpus": [{"id": "GPU-55839966-3287-5a9e-d4bb-45dec4df2b04", '
    '"gpuUtilPercent": 0, "memoryUtilPercent": 0}]}'
)


def _when() -> str:
    return datetime.now(UTC).strftime("%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)")


def error_body(message: str, code: str, path: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "locations": [{"line": 1, "column": 1}]}
    if path:
        error["path"] = [path]
    error["extensions"] = {"code": code}
    return {"errors": [error]} | ({"data": {path: None}} if path else {})


def scripted(kind: str, field: str) -> FakeResponse:
    """The answer RunPod gives for one of the contract's error kinds, for a call to ``field``."""
    if kind == "capacity":
        return FakeResponse(200, error_body(CAPACITY_MESSAGE, "INTERNAL_SERVER_ERROR", field))
    if kind == "auth":
        return FakeResponse(401, {"errors": [{"message": "Unauthorized"}]})
    if kind == "invalid":
        message = (
            'Variable "$input" got invalid value "SECURE_PLUS" at "input.cloudType"; '
            'Value "SECURE_PLUS" does not exist in "CloudTypeEnum" enum.'
        )
        return FakeResponse(400, error_body(message, "BAD_USER_INPUT"))
    if kind == "throttle":
        return FakeResponse(429, b"Too Many Requests", {"Content-Type": "text/plain"})
    if kind == "server":  # RunPod sits behind Cloudflare
        return FakeResponse(502, b"error code: 502", {"Content-Type": "text/plain"})
    raise ValueError(f"RunPod has no answer for error kind {kind!r}")


class FakeRunPod(FakeHTTPServer):
    """RunPod's GraphQL endpoint with an in-memory account: pods, GPU types and Secure Cloud stock."""

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.gpu_types = copy.deepcopy(GPU_TYPES)
        self.stock = copy.deepcopy(STOCK)
        self.pods: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._field_injections: list[_FieldInjection] = []
        self._current = threading.local()
        self.route("POST", "/graphql")(self._graphql)

    # --- scripting -------------------------------------------------------------------------
    def fail_next(self, fields: Iterable[str], kind: str, times: int = 1) -> None:
        """The next call to any of ``fields`` gets RunPod's answer for ``kind``."""
        self.inject_field(fields, lambda field: scripted(kind, field), times)

    def lose_next(self, fields: Iterable[str]) -> None:
        """The next call to any of ``fields`` is executed, but its answer never arrives."""
        self.inject_field(fields, lambda field: None)

    def inject_field(
        self, fields: Iterable[str], make: Callable[[str], FakeResponse | None], times: int = 1
    ) -> None:
        with self._lock:
            self._field_injections.append(_FieldInjection(frozenset(fields), make, times))

    def calls_to(self, field_name: str) -> list[dict[str, Any]]:
        """The JSON bodies of the requests that called root field ``field_name``."""
        return [r.json() for r in self.calls("POST", "/graphql") if field_name in root_fields(r.body)]

    def pod_named(self, name: str) -> dict[str, Any]:
        return next(p for p in self.pods.values() if p["name"] == name)

    def boot(self, name: str) -> None:
        """The container of pod ``name`` has started: RunPod fills ``runtime``."""
        pod = self.pod_named(name)
        pod["runtime"] = copy.deepcopy(RUNTIME)

    def preempt(self, name: str) -> None:
        """RunPod takes the GPUs of interruptible pod ``name`` back: the pod is stopped, its volume kept."""
        pod = self.pod_named(name)
        assert pod["podType"] == "INTERRUPTABLE", "only interruptible pods are preempted"
        self._release(pod)
        pod.update(desiredStatus="EXITED", runtime=None, lastStatusChange=f"Stopped by Runpod: {_when()}")

    def live_count(self) -> int:
        return len(self.pods)

    # --- serving ---------------------------------------------------------------------------
    def _dispatch(self, http: BaseHTTPRequestHandler) -> None:
        # Peek at the body to learn which root fields are called, then hand the request on.
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        original, http.rfile = http.rfile, io.BytesIO(body)
        self._current.fields = root_fields(body)
        try:
            super()._dispatch(http)
        finally:
            http.rfile = original

    def _take_injection(self, method: str, path: str) -> Any:
        fields = getattr(self._current, "fields", ())
        with self._lock:
            for injection in self._field_injections:
                matched = next((f for f in fields if f in injection.fields), None)
                if matched and injection.remaining > 0:
                    injection.remaining -= 1
                    injection.response = injection.make(matched)
                    return injection
        return super()._take_injection(method, path)

    def _graphql(self, request: FakeRequest) -> FakeResponse:
        if (
            request.headers.get("authorization") != f"Bearer {self.api_key}"
            and request.query.get("api_key", [""])[0] != self.api_key
        ):
            return FakeResponse(401, {"errors": [{"message": "Unauthorized"}]})
        try:
            payload = request.json()
            operation = _Reader(payload["query"], payload.get("variables") or {}).operation()
            self._validate(
                operation.fields, "Mutation" if operation.kind == "mutation" else "Query", operation
            )
        except GraphQLError as exc:
            return FakeResponse(exc.status, error_body(exc.message, exc.code))
        data: dict[str, Any] = {}
        for selection in operation.fields:
            try:
                data[selection.key] = self._resolve_root(selection)
            except GraphQLError as exc:
                if exc.status != 200:
                    return FakeResponse(exc.status, error_body(exc.message, exc.code))
                return FakeResponse(200, error_body(exc.message, exc.code, selection.key))
        return FakeResponse(200, {"data": data})

    def _validate(self, selections: list[Selection], type_name: str, operation: Operation) -> None:
        for selection in selections:
            if selection.name not in OUTPUT[type_name]:
                raise GraphQLError(
                    f'Cannot query field "{selection.name}" on type "{type_name}".',
                    "GRAPHQL_VALIDATION_FAILED",
                )
            child = OUTPUT[type_name][selection.name]
            if (child is None) != (selection.fields is None):
                raise GraphQLError(
                    f'Field "{selection.name}" must {"not " if child is None else ""}have a selection '
                    "of subfields.",
                    "GRAPHQL_VALIDATION_FAILED",
                )
            for arg, value in selection.args.items():
                expected = ARGUMENT_TYPES.get(selection.name)
                if arg != "input" or expected is None:
                    raise GraphQLError(
                        f'Unknown argument "{arg}" on field "{type_name}.{selection.name}".',
                        "GRAPHQL_VALIDATION_FAILED",
                    )
                variable = selection.variables.get(arg)
                if variable and operation.variable_types.get(variable) != expected:
                    raise GraphQLError(
                        f'Variable "${variable}" of type "{operation.variable_types.get(variable)}" used '
                        f'in position expecting type "{expected}".',
                        "GRAPHQL_VALIDATION_FAILED",
                    )
                self._check_input(value, expected, variable or arg)
            if child is not None and selection.fields is not None:
                self._validate(selection.fields, child, operation)

    @staticmethod
    def _check_input(value: Any, type_name: str, where: str) -> None:
        if not isinstance(value, dict):
            raise GraphQLError(
                f'Variable "${where}" got invalid value; Expected type "{type_name}" to be an object.',
                "BAD_USER_INPUT",
            )
        for key in value:
            if key not in INPUTS[type_name]:
                raise GraphQLError(
                    f'Variable "${where}" got invalid value; Field "{key}" is not defined by type '
                    f'"{type_name}".',
                    "BAD_USER_INPUT",
                )
        for key in REQUIRED.get(type_name, ()):
            if value.get(key) is None:
                raise GraphQLError(
                    f'Variable "${where}" got invalid value; Field "{key}" of required type was not '
                    "provided.",
                    "BAD_USER_INPUT",
                )
        if "cloudType" in value and value["cloudType"] not in CLOUD_TYPES:
            raise GraphQLError(
                f'Variable "${where}" got invalid value "{value["cloudType"]}" at "{where}.cloudType"; '
                f'Value "{value["cloudType"]}" does not exist in "CloudTypeEnum" enum.',
                "BAD_USER_INPUT",
            )

    def _resolve_root(self, selection: Selection) -> Any:
        args = selection.args.get("input") or {}
        if selection.name == "myself":
            user = {
                "id": "user_2PyTJrLzeuwfZilRZ7JhCQDuPqo",
                "email": "ops@example.com",
                "clientBalance": 512.4,
                "currentSpendPerHr": sum(p["costPerHr"] for p in self.pods.values()),
                "pods": list(self.pods.values()),
            }
            return self._project(user, selection.fields, "User")
        if selection.name == "pod":
            return self._project(self.pods.get(args.get("podId")), selection.fields, "Pod")
        if selection.name == "gpuTypes":
            ids = set(args.get("ids") or ([args["id"]] if args.get("id") else []))
            types = [t for t in self.gpu_types if not ids or t["id"] in ids]
            return self._project(types, selection.fields, "GpuType")
        if selection.name in ("podFindAndDeployOnDemand", "podRentInterruptable"):
            pod = self._deploy(args, interruptible=selection.name == "podRentInterruptable")
            return self._project(pod, selection.fields, "Pod")
        if selection.name == "podTerminate":
            pod = self.pods.pop(args["podId"], None)
            if pod is None:
                raise GraphQLError("pod not found", "INTERNAL_SERVER_ERROR", status=200)
            self._release(pod)
            return None
        raise AssertionError(selection.name)

    def _project(self, value: Any, selections: list[Selection] | None, type_name: str) -> Any:
        if value is None or selections is None:
            return value
        if isinstance(value, list):
            return [self._project(v, selections, type_name) for v in value]
        out = {}
        for selection in selections:
            child = OUTPUT[type_name][selection.name]
            if type_name == "GpuType" and selection.name == "lowestPrice":
                raw = self._lowest_price(value, selection.args.get("input") or {})
            else:
                raw = value.get(selection.name)
            out[selection.key] = self._project(raw, selection.fields, child) if child else raw
        return out

    def _lowest_price(self, gpu: dict[str, Any], price_input: dict[str, Any]) -> dict[str, Any]:
        count = int(price_input.get("gpuCount") or 1)
        free = self.stock.get(gpu["id"], {})
        dc = price_input.get("dataCenterId")
        available = free.get(dc, 0) if dc else sum(free.values())
        largest = free.get(dc, 0) if dc else max(free.values(), default=0)
        status = None
        if largest >= count:
            status = "High" if available >= 4 * count else "Medium" if available >= 2 * count else "Low"
        secure = price_input.get("secureCloud", True) is not False
        return {
            "gpuName": gpu["displayName"],
            "gpuTypeId": gpu["id"],
            "stockStatus": status,
            "uninterruptablePrice": gpu["securePrice"] if secure else gpu["communityPrice"],
            "minimumBidPrice": gpu["secureSpotPrice"] if secure else gpu["communitySpotPrice"],
            "minVcpu": 16 * count,
            "minMemory": 125 * count,
            "maxUnreservedGpuCount": largest,
            "availableGpuCounts": [n for n in (1, 2, 4, 8) if n <= largest],
            "countryCode": None,
            "compliance": None,
        }

    def _deploy(self, args: dict[str, Any], *, interruptible: bool) -> dict[str, Any]:
        gpu = next((t for t in self.gpu_types if t["id"] == args.get("gpuTypeId")), None)
        count = int(args.get("gpuCount") or 1)
        if gpu is None or count > gpu["maxGpuCount"] or args.get("cloudType") == "COMMUNITY":
            raise GraphQLError(CAPACITY_MESSAGE, "INTERNAL_SERVER_ERROR", status=200)
        free = self.stock.get(gpu["id"], {})
        wanted = [args["dataCenterId"]] if args.get("dataCenterId") else sorted(free)
        dc = next((d for d in wanted if free.get(d, 0) >= count), None)
        if dc is None:
            raise GraphQLError(CAPACITY_MESSAGE, "INTERNAL_SERVER_ERROR", status=200)
        free[dc] -= count
        number = next(self._ids)
        pod_id = f"{number:02d}r0oaqj8upcbn"[:14]
        per_gpu = args["bidPerGpu"] if interruptible else gpu["securePrice"]
        pod = {
            "id": pod_id,
            "name": args.get("name"),
            "desiredStatus": "RUNNING",
            "podType": "INTERRUPTABLE" if interruptible else "RESERVED",
            "costPerHr": round(per_gpu * count, 4),
            "gpuCount": count,
            "vcpuCount": 16 * count,
            "memoryInGb": 125 * count,
            "imageName": args.get("imageName"),
            "lastStatusChange": f"Rented by User: {_when()}",
            "machineId": f"m{number:04d}x7k2",
            "uptimeSeconds": 0,
            "env": [f"{e['key']}={e['value']}" for e in args.get("env") or []],
            "ports": args.get("ports"),
            "containerDiskInGb": args.get("containerDiskInGb"),
            "volumeInGb": args.get("volumeInGb"),
            "volumeMountPath": args.get("volumeMountPath"),
            "dockerArgs": args.get("dockerArgs"),
            "machine": {
                "gpuTypeId": gpu["id"],
                "gpuDisplayName": gpu["displayName"],
                "dataCenterId": dc,
                "location": COUNTRY.get(dc),
                "podHostId": f"{pod_id}-64410f23",
                "secureCloud": True,
                "costPerHr": round(per_gpu * count, 4),
                "gpuAvailable": free[dc],
            },
            "runtime": None,  # filled when the container starts (see boot())
        }
        self.pods[pod_id] = pod
        return pod

    def _release(self, pod: dict[str, Any]) -> None:
        if pod.get("desiredStatus") in ("RUNNING", "CREATED", "RESTARTING"):
            machine = pod["machine"]
            self.stock.setdefault(machine["gpuTypeId"], {})
            free = self.stock[machine["gpuTypeId"]]
            free[machine["dataCenterId"]] = free.get(machine["dataCenterId"], 0) + pod["gpuCount"]


__all__ = ["API_KEY", "CAPACITY_MESSAGE", "FakeRunPod", "error_body", "root_fields", "scripted"]
