"""RunPod adapter: GPU pods through RunPod's GraphQL API at api.runpod.io (does network I/O).

Verified against (Nov 2026): docs.runpod.io "GraphQL API / Manage Pods"; runpod-python
``runpod/api/graphql.py`` (``Authorization: Bearer <key>``, PR #394 "no longer recommending the
query param method"), ``api/queries/gpus.py``, ``api/queries/pods.py``, ``api/mutations/pods.py``;
runpodctl ``api/pod.go`` and ``api/cloud.go`` (typed variables ``PodFindAndDeployOnDemandInput!``,
``GpuLowestPriceInput``); SkyPilot ``sky/provision/runpod`` (``podRentInterruptable`` with
``PodRentInterruptableInput``, the REST v2 API has no spot pods) and
``sky/catalog/data_fetchers/fetch_runpod.py`` (``securePrice``/``secureSpotPrice`` are per GPU).

Model and encodings:

* RunPod has no regions we choose in the API: one region ``"global"``. Secure Cloud data centers
  (``EU-RO-1``, ``US-GA-2``, ...) are zones: with ``data_centers`` configured, offers are listed
  per data center (``lowestPrice(input: {dataCenterId})``) and a request's ``zone`` becomes the
  pod's ``dataCenterId``; without it, offers have zone None and RunPod picks the data center.
* ``instance_type`` is ``"<gpuCount>x <gpuTypeId>"``, e.g. ``"8x NVIDIA H100 80GB HBM3"``: the GPU
  type id and count are exactly what the deploy mutations take.
* Prices: ``securePrice`` (on demand) and ``secureSpotPrice`` (spot) are USD per GPU-hour; an
  offer is that times the GPU count. ``lowestPrice.stockStatus`` (High/Medium/Low/null) is the
  availability signal. Only Secure Cloud is sold (``cloudType: SECURE``).
* Spot: ``request.max_price_per_hour`` is the bid for the whole pod; RunPod takes ``bidPerGpu``.
* No idempotency token and no unique names: launch lists ``myself { pods }`` and returns the pod
  named ``gpubroker-<instance_id>`` when there is one.
* Preemption: an interruptible pod (``podType: INTERRUPTABLE``) that loses its GPU is *stopped*
  after a 5 s SIGTERM (docs "Pods / Pricing / Spot instances"), i.e. ``desiredStatus: EXITED``
  with its volume kept. We never stop pods (terminate only), so EXITED on an interruptible pod
  is a preemption.
* Errors: GraphQL errors come as HTTP 200 (400 for schema/variable errors) with
  ``{"errors": [{"message", "path", "extensions": {"code"}}]}``; RunPod's business errors have no
  code, so the message text is the signal (see ``_MESSAGE_ERRORS``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

import httpx

from broker.clock import Clock, utc_now
from broker.core.errors import (
    AuthError,
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
    ProviderError,
    QuotaExceeded,
    Transient,
)
from broker.core.ports import (
    NAME_PREFIX,
    Capabilities,
    Instance,
    InstanceState,
    LaunchIdempotency,
    LaunchRequest,
    ProviderStatus,
    owned_instance_id,
)
from broker.core.types import Availability, CapacityType, Offer
from pricing.normalize import canonical_accelerator
from providers.http import DEFAULT_TIMEOUT, error_for_status, json_decimal, make_client, send

PROVIDER = "runpod"
REGION = "global"
DEFAULT_BASE_URL = "https://api.runpod.io"
GRAPHQL_PATH = "/graphql"
ENV_API_KEY = "RUNPOD_API_KEY"
SOURCE = "runpod:graphql"
DEFAULT_GPU_COUNTS = (1, 2, 4, 8)
DEFAULT_IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"
INSTANCE_ID_ENV = "GPUBROKER_INSTANCE_ID"
_INSTANCE_TYPE = re.compile(r"^(?P<count>[1-9]\d*)x (?P<gpu>\S.*)$")

# --- provider states -> ours (one visible table) ---------------------------------------------
# desiredStatus is RunPod's PodStatus enum (graphql-spec.runpod.io#definition-PodStatus).
POD_STATES: Mapping[str, InstanceState] = {
    "CREATED": InstanceState.PENDING,
    "RESTARTING": InstanceState.PENDING,
    "RUNNING": InstanceState.RUNNING,  # PENDING until ``runtime`` is set (container not up yet)
    "PAUSED": InstanceState.STOPPED,
    "EXITED": InstanceState.STOPPED,  # PREEMPTED for an INTERRUPTABLE pod: we never stop pods
    "DEAD": InstanceState.FAILED,
    "TERMINATED": InstanceState.TERMINATED,
}
POD_TYPES: Mapping[str, CapacityType] = {
    "RESERVED": CapacityType.ON_DEMAND,  # what podFindAndDeployOnDemand makes
    "INTERRUPTABLE": CapacityType.SPOT,  # what podRentInterruptable makes
}
STOCK_STATUS: Mapping[str | None, Availability] = {
    "High": Availability.AVAILABLE,
    "Medium": Availability.AVAILABLE,
    "Low": Availability.LIMITED,
    "None": Availability.UNAVAILABLE,
    None: Availability.UNAVAILABLE,  # null: no host passes the filters right now
}

# --- provider errors -> ours (one visible table) ---------------------------------------------
# Message patterns first (RunPod's own errors carry no code), then the GraphQL server's
# extensions.code, then the HTTP status (providers.http.error_for_status).
_MESSAGE_ERRORS: tuple[tuple[re.Pattern[str], type[ProviderError], str], ...] = (
    # "There are no longer any instances available with the requested specifications. Please
    # refresh and try again." (create/rent); "There are not enough free GPUs on the host machine
    # to start this pod" (resume).
    (
        re.compile(r"no longer any instances available|not enough free gpus|no instances? available", re.I),
        InsufficientCapacity,
        "NO_INSTANCES_AVAILABLE",
    ),
    (re.compile(r"^\s*(unauthori[sz]ed|forbidden)\b", re.I), AuthError, "UNAUTHORIZED"),
    (re.compile(r"\bpod\b.*\bnot found\b|could not find pod", re.I), NotFound, "POD_NOT_FOUND"),
    # Wording not verified against a captured response: balance / spend-limit refusals.
    (
        re.compile(r"spend limit|insufficient (funds|balance)|balance is too low", re.I),
        QuotaExceeded,
        "QUOTA",
    ),
)
_CODE_ERRORS: Mapping[str, type[ProviderError]] = {
    "UNAUTHENTICATED": AuthError,
    "FORBIDDEN": AuthError,
    "GRAPHQL_PARSE_FAILED": InvalidRequest,
    "GRAPHQL_VALIDATION_FAILED": InvalidRequest,
    "BAD_USER_INPUT": InvalidRequest,
    # "Something went wrong. Please try again later or contact support." (runpod-python #239)
    "INTERNAL_SERVER_ERROR": Transient,
}

# --- GraphQL documents -----------------------------------------------------------------------
_POD_FIELDS = """
    id name desiredStatus podType costPerHr gpuCount lastStatusChange
    machine { gpuTypeId gpuDisplayName dataCenterId }
    runtime { ports { ip isIpPublic privatePort publicPort type } }
"""
MYSELF_PODS = "query MyPods { myself { pods {" + _POD_FIELDS + "} } }"
DEPLOY_ON_DEMAND = (
    "mutation DeployOnDemand($input: PodFindAndDeployOnDemandInput!) {"
    " podFindAndDeployOnDemand(input: $input) {" + _POD_FIELDS + "} }"
)
RENT_INTERRUPTABLE = (
    "mutation RentInterruptable($input: PodRentInterruptableInput!) {"
    " podRentInterruptable(input: $input) {" + _POD_FIELDS + "} }"
)
TERMINATE = "mutation Terminate($input: PodTerminateInput!) { podTerminate(input: $input) }"
MYSELF = "query Myself { myself { id } }"


class RunPodProvider:
    """RunPod Secure Cloud pods, on demand and interruptible (spot)."""

    name = PROVIDER

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        data_centers: Sequence[str] = (),
        gpu_counts: Sequence[int] = DEFAULT_GPU_COUNTS,
        image: str = DEFAULT_IMAGE,
        container_disk_gb: int = 50,
        clock: Clock = utc_now,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
    ) -> None:
        if not api_key:
            raise ValueError("a RunPod API key is required")
        # Bearer header, not ?api_key=: a key in the URL would reach httpx's request log.
        self._client = make_client(base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)
        self._base_url = base_url
        self._data_centers = tuple(data_centers)
        self._gpu_counts = tuple(sorted(set(gpu_counts)))
        self._image = image
        self._disk_gb = container_disk_gb
        self._clock = clock
        self.capabilities = Capabilities(
            capacity_types=frozenset({CapacityType.ON_DEMAND, CapacityType.SPOT}),
            reservations=False,  # savings plans are bought in the console, not through this API
            interruption_notice_seconds=5,  # SIGTERM, then SIGKILL 5 s later (docs: Pods/Pricing)
            availability_signal=True,
            live_prices=True,
            launch_idempotency=LaunchIdempotency.LOOKUP_FIRST,
            regions=(REGION,),
        )

    def __repr__(self) -> str:
        return f"RunPodProvider(base_url={self._base_url!r}, data_centers={self._data_centers!r})"

    def close(self) -> None:
        self._client.close()

    # --- offers ----------------------------------------------------------------------------
    def list_offers(self, *, regions: Sequence[str] | None = None) -> list[Offer]:
        if regions is not None and REGION not in regions:
            return []
        slots = [(count, dc) for count in self._gpu_counts for dc in (self._data_centers or (None,))]
        definitions = ", ".join(f"$in{i}: GpuLowestPriceInput!" for i in range(len(slots)))
        prices = " ".join(f"p{i}: lowestPrice(input: $in{i}) {{ stockStatus }}" for i in range(len(slots)))
        document = (
            f"query GpuOffers({definitions}) {{ gpuTypes {{ id displayName secureCloud maxGpuCount"
            f" securePrice secureSpotPrice {prices} }} }}"
        )
        variables: dict[str, Any] = {}
        for i, (count, dc) in enumerate(slots):
            price_input: dict[str, Any] = {"gpuCount": count, "secureCloud": True}
            if dc is not None:
                price_input["dataCenterId"] = dc
            variables[f"in{i}"] = price_input
        data = self._graphql(document, variables)
        observed = self._clock()
        offers: list[Offer] = []
        for gpu_type in data.get("gpuTypes") or []:
            if not gpu_type.get("secureCloud"):
                continue  # we only deploy cloudType SECURE
            for i, (count, dc) in enumerate(slots):
                if count > int(gpu_type.get("maxGpuCount") or 0):
                    continue
                lowest = gpu_type.get(f"p{i}") or {}
                offers.extend(self._offers_for(gpu_type, count, dc, lowest, observed))
        return offers

    def _offers_for(
        self,
        gpu_type: Mapping[str, Any],
        count: int,
        zone: str | None,
        lowest: Mapping[str, Any],
        observed: datetime,
    ) -> list[Offer]:
        availability = STOCK_STATUS.get(lowest.get("stockStatus"), Availability.UNKNOWN)
        # List prices per GPU-hour (SkyPilot and gpuhunt multiply them by the count too). Not
        # lowestPrice's uninterruptablePrice/minimumBidPrice: whether those are per GPU or per pod
        # for gpuCount > 1 is undocumented.
        per_gpu = {
            CapacityType.ON_DEMAND: json_decimal(gpu_type.get("securePrice")),
            CapacityType.SPOT: json_decimal(gpu_type.get("secureSpotPrice")),
        }
        accelerator = accelerator_name(str(gpu_type.get("displayName") or gpu_type["id"]))
        return [
            Offer(
                cloud=PROVIDER,
                region=REGION,
                zone=zone,
                instance_type=f"{count}x {gpu_type['id']}",
                accelerator=accelerator,
                accelerator_count=count,
                vcpus=None,  # lowestPrice.minVcpu/minMemory move by the minute; not an instance spec
                memory_gib=None,
                capacity_type=capacity,
                price_per_hour=price * count,
                currency="USD",
                source=SOURCE,
                observed_at=observed,
                availability=availability,
            )
            for capacity, price in per_gpu.items()
            if price is not None and price > 0
        ]

    # --- instances ---------------------------------------------------------------------------
    def launch(self, request: LaunchRequest) -> Instance:
        count, gpu_type_id = self._check(request)
        existing = self._find_pod(request.name, region=request.region)
        if existing is not None:
            return self._instance(existing)
        env = [{"key": INSTANCE_ID_ENV, "value": request.instance_id}]
        if request.ssh_public_key:
            env.append({"key": "PUBLIC_KEY", "value": request.ssh_public_key})  # RunPod's sshd reads it
        pod_input: dict[str, Any] = {
            "name": request.name,
            "imageName": request.image or self._image,
            "gpuTypeId": gpu_type_id,
            "gpuCount": count,
            "cloudType": "SECURE",
            "containerDiskInGb": self._disk_gb,
            "volumeInGb": 0,
            "startSsh": True,
            "supportPublicIp": True,
            "ports": "22/tcp",
            "env": env,
        }
        if request.zone:
            pod_input["dataCenterId"] = request.zone
        if request.capacity_type is CapacityType.SPOT:
            assert request.max_price_per_hour is not None  # checked in _check
            bid = (request.max_price_per_hour / count).quantize(Decimal("0.001"), rounding=ROUND_DOWN)
            pod_input["bidPerGpu"] = float(bid)
            document, field = RENT_INTERRUPTABLE, "podRentInterruptable"
        else:
            document, field = DEPLOY_ON_DEMAND, "podFindAndDeployOnDemand"
        data = self._graphql(document, {"input": pod_input}, region=request.region)
        pod = data.get(field)
        if not isinstance(pod, dict) or not pod.get("id"):
            raise Transient(f"{field} answered without a pod", provider=PROVIDER, region=request.region)
        return self._instance(pod, request=request)

    def get_instance(self, instance_id: str, *, region: str) -> Instance | None:
        pod = self._find_pod(NAME_PREFIX + instance_id, region=region)
        return None if pod is None else self._instance(pod)

    def list_instances(self, *, regions: Sequence[str] | None = None) -> list[Instance]:
        if regions is not None and REGION not in regions:
            return []
        return [self._instance(pod) for pod in self._pods(region=None) if owned_instance_id(pod.get("name"))]

    def terminate(self, instance_id: str, *, region: str) -> None:
        pod = self._find_pod(NAME_PREFIX + instance_id, region=region)
        if pod is None or pod.get("desiredStatus") == "TERMINATED":
            return
        try:
            self._graphql(TERMINATE, {"input": {"podId": pod["id"]}}, region=region)
        except NotFound:
            return  # gone between the lookup and the mutation: done

    def check(self) -> ProviderStatus:
        try:
            self._graphql(MYSELF, {})
        except AuthError as exc:
            return ProviderStatus(
                PROVIDER, configured=True, reachable=True, detail=f"credentials refused: {exc}"
            )
        except ProviderError as exc:
            return ProviderStatus(PROVIDER, configured=True, reachable=False, detail=str(exc))
        except Exception as exc:  # check() never raises
            return ProviderStatus(PROVIDER, configured=True, reachable=False, detail=type(exc).__name__)
        return ProviderStatus(PROVIDER, configured=True, reachable=True, detail="GraphQL API answered")

    # --- helpers -----------------------------------------------------------------------------
    def _check(self, request: LaunchRequest) -> tuple[int, str]:
        def invalid(message: str) -> InvalidRequest:
            return InvalidRequest(message, provider=PROVIDER, region=request.region, code="request")

        if request.region != REGION:
            raise invalid(f"RunPod has one region, {REGION!r}; data centers go in zone")
        if request.capacity_type not in self.capabilities.capacity_types:
            raise invalid(f"RunPod sells no {request.capacity_type.value} capacity through this API")
        match = _INSTANCE_TYPE.match(request.instance_type)
        if not match:
            raise invalid("instance_type must be '<gpuCount>x <gpuTypeId>', e.g. '8x NVIDIA H100 80GB HBM3'")
        if request.capacity_type is CapacityType.SPOT and request.max_price_per_hour is None:
            raise invalid("an interruptible RunPod pod needs max_price_per_hour: it is the bid")
        return int(match["count"]), match["gpu"]

    def _pods(self, *, region: str | None) -> list[dict[str, Any]]:
        data = self._graphql(MYSELF_PODS, {}, region=region)
        pods = (data.get("myself") or {}).get("pods") or []
        return [pod for pod in pods if isinstance(pod, dict) and pod.get("id")]

    def _find_pod(self, name: str, *, region: str | None) -> dict[str, Any] | None:
        # RunPod does not enforce unique names; a live pod wins over a terminated one.
        pods = [pod for pod in self._pods(region=region) if pod.get("name") == name]
        pods.sort(key=lambda pod: pod.get("desiredStatus") == "TERMINATED")
        return pods[0] if pods else None

    def _instance(self, pod: Mapping[str, Any], *, request: LaunchRequest | None = None) -> Instance:
        name = pod.get("name") or (request.name if request else None)
        instance_id = owned_instance_id(name) or (request.instance_id if request else str(pod["id"]))
        capacity = POD_TYPES.get(str(pod.get("podType")))
        if capacity is None:
            capacity = request.capacity_type if request else CapacityType.ON_DEMAND
        machine = pod.get("machine") or {}
        count = pod.get("gpuCount")
        gpu_type = machine.get("gpuTypeId")
        if count and gpu_type:
            instance_type = f"{count}x {gpu_type}"
        else:
            instance_type = (
                request.instance_type if request else f"{count or '?'}x {machine.get('gpuDisplayName')}"
            )
        return Instance(
            provider=PROVIDER,
            instance_id=instance_id,
            provider_instance_id=str(pod["id"]),
            instance_type=instance_type,
            region=REGION,
            zone=machine.get("dataCenterId") or (request.zone if request else None),
            capacity_type=capacity,
            state=pod_state(pod),
            launched_at=_status_change_time(pod.get("lastStatusChange")),
            state_reason=pod.get("lastStatusChange"),
            price_per_hour=json_decimal(pod.get("costPerHr")),
            public_ip=_public_ip(pod.get("runtime")),
        )

    def _graphql(
        self, document: str, variables: Mapping[str, Any], *, region: str | None = None
    ) -> dict[str, Any]:
        """One POST /graphql: the ``data`` object, or the typed error for whatever came back."""
        response = send(
            self._client,
            "POST",
            GRAPHQL_PATH,
            provider=PROVIDER,
            region=region,
            json={"query": document, "variables": dict(variables)},
        )
        body = _json_body(response)
        errors = body.get("errors") if isinstance(body, dict) else None
        if response.status_code >= 400 or errors:
            raise graphql_error(response, body, region=region)
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise Transient("GraphQL answer without data", provider=PROVIDER, region=region, code="malformed")
        return data


def pod_state(pod: Mapping[str, Any]) -> InstanceState:
    """Our state for a pod, from ``POD_STATES`` plus the two rules that need more than one field."""
    status = str(pod.get("desiredStatus"))
    state = POD_STATES.get(status, InstanceState.UNKNOWN)
    if status == "EXITED" and pod.get("podType") == "INTERRUPTABLE":
        return InstanceState.PREEMPTED
    if state is InstanceState.RUNNING and not pod.get("runtime"):
        return InstanceState.PENDING  # desired RUNNING, container not started yet
    return state


def graphql_error(response: httpx.Response, body: Any, *, region: str | None = None) -> ProviderError:
    """The typed error for a failed GraphQL call (HTTP status first, then the GraphQL error)."""
    status = response.status_code
    errors = body.get("errors") if isinstance(body, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    message = str(first.get("message") or f"HTTP {status} from RunPod")
    extensions = first.get("extensions") if isinstance(first.get("extensions"), dict) else {}
    code = extensions.get("code")
    if status in (401, 403, 429) or status >= 500:
        return error_for_status(response, provider=PROVIDER, region=region, message=message)
    for pattern, kind, label in _MESSAGE_ERRORS:
        if pattern.search(message):
            return kind(message, provider=PROVIDER, region=region, code=code or label)
    if isinstance(code, str) and code in _CODE_ERRORS:
        return _CODE_ERRORS[code](message, provider=PROVIDER, region=region, code=code)
    if status >= 400:
        return error_for_status(response, provider=PROVIDER, region=region, message=message, code=code)
    return InvalidRequest(message, provider=PROVIDER, region=region, code=code or "GRAPHQL_ERROR")


# SkyPilot's spelling of RunPod GPUs (fetch_runpod.format_gpu_name and GPU_NAME_OVERRIDES), so live
# offers name accelerators as the bundled SkyPilot catalog does; RunPod's A100s are all 80 GB.
_NAME_OVERRIDES = {"A100-PCIe": "A100-80GB", "A100-SXM": "A100-80GB-SXM", "H100-PCIe": "H100"}


def accelerator_name(display_name: str) -> str:
    """Canonical accelerator for a RunPod ``displayName``: "H100 SXM" -> "H100", "RTX 4090" -> "RTX4090"."""
    name = display_name.strip().replace("RTX PRO ", "RTXPRO").replace("RTX ", "RTX").replace(" ", "-")
    return canonical_accelerator(_NAME_OVERRIDES.get(name, name))


def _json_body(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content, parse_float=Decimal)  # exact prices, no float rounding
    except ValueError:
        return None


def _public_ip(runtime: Any) -> str | None:
    if not isinstance(runtime, dict):
        return None
    for port in runtime.get("ports") or []:
        if isinstance(port, dict) and port.get("isIpPublic") and port.get("ip"):
            return str(port["ip"])
    return None


# lastStatusChange reads "Rented by User: Thu Aug 20 2026 03:29:12 GMT+0000 (Coordinated Universal Time)"
_STATUS_TIME = re.compile(r"(\w{3} \w{3} \d{1,2} \d{4} \d{2}:\d{2}:\d{2}) GMT([+-]\d{4})")


def _status_change_time(text: Any) -> datetime | None:
    match = _STATUS_TIME.search(str(text or ""))
    if not match:
        return None
    try:
        return datetime.strptime(f"{match[1]} {match[2]}", "%a %b %d %Y %H:%M:%S %z").astimezone(UTC)
    except ValueError:
        return None


def from_environment() -> RunPodProvider | None:
    """The adapter from ``RUNPOD_API_KEY`` (the variable runpodctl and runpod-python read), or None."""
    api_key = os.environ.get(ENV_API_KEY, "").strip()
    return RunPodProvider(api_key) if api_key else None


__all__ = [
    "POD_STATES",
    "POD_TYPES",
    "STOCK_STATUS",
    "RunPodProvider",
    "accelerator_name",
    "from_environment",
    "graphql_error",
    "pod_state",
]
