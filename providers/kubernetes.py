"""Kubernetes GPU-cluster adapter (CoreWeave CKS, any NVIDIA GPU cluster) via the official client (does I/O).

The capacity model: one adapter instance is one cluster (its name is the offer ``region``). An
"instance" is a **Pod** in our namespace that asks for ``nvidia.com/gpu: N`` in its limits and pins a
GPU product with a nodeSelector on the node's product label. ``instance_type`` encodes both as
``<product>-x<N>``, e.g. ``H100_NVLINK_80GB-x8`` (CoreWeave) or ``NVIDIA-L40S-x4`` (NVIDIA GFD).

Facts this module depends on, checked against:

* Product labels: CoreWeave ``gpu.nvidia.com/class`` with values ``H100_NVLINK_80GB``, ``A100_NVLINK_80GB``,
  ``A40``, ``RTX_A6000``, … (coreweave/kubernetes-cloud ``coreweave-kubernetes/node-types.md`` and
  ``resources/resource-based-pricing.md``); NVIDIA GPU Feature Discovery ``nvidia.com/gpu.product`` =
  the NVML name with blanks as dashes, e.g. ``NVIDIA-H100-80GB-HBM3``, ``A100-SXM4-40GB``
  (NVIDIA/k8s-device-plugin ``docs/gpu-feature-discovery/README.md``). SkyPilot's
  ``kubernetes_utils.py`` keys on the same two labels. Zone: ``topology.kubernetes.io/zone``.
* Free GPUs = node ``status.allocatable["nvidia.com/gpu"]`` minus the GPU requests of the pods bound
  to it that are not Succeeded/Failed (field selector ``status.phase!=Succeeded,status.phase!=Failed``,
  as ``kubectl describe node`` counts). Cordoned, NotReady or untolerated-tainted nodes have none.
* Disruptions (kubernetes.io "Disruptions" → "Pod disruption conditions"): condition type
  ``DisruptionTarget`` with reason PreemptionByScheduler, DeletionByTaintManager, EvictionByEvictionAPI,
  DeletionByPodGC or TerminationByKubelet; the kubelet also sets ``status.reason`` "Evicted"
  (node-pressure eviction) or "Preempting" (admitting a critical pod) on a Failed pod.
* Errors are ``metav1.Status`` bodies (``reason`` AlreadyExists, NotFound, Forbidden, Invalid, …); a
  ResourceQuota refusal is a 403 whose message says "exceeded quota"; API priority-and-fairness
  throttling is a plain-text 429 with ``Retry-After`` (k8s.io/apiserver ``tooManyRequests``).
* The client retries through urllib3 unless ``Configuration.retries`` is set: we set 0 (single
  attempt; ``kubernetes/client/rest.py`` passes it to the PoolManager). ``load_kube_config`` runs
  exec/auth-provider plugins, which may reach the network, so kubeconfigs are loaded on first use.

Two choices to know about: launch checks free GPUs (the same computation as list_offers) and raises
InsufficientCapacity *before* creating a pod that could only sit Unschedulable; a pod that goes
Unschedulable anyway stays PENDING with the scheduler's message as ``state_reason``. Kubernetes has
no price API: prices come from a contract table ($ per GPU-hour per product), so ``live_prices`` is
False. Spot exists only where a preemptible pool is configured (node labels and/or a PriorityClass).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from broker.clock import utc_now
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
    TAG_INSTANCE_ID,
    TAG_MANAGED,
    TERMINAL_STATES,
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
from providers.http import error_for_status, retry_after_seconds

log = logging.getLogger(__name__)

PROVIDER = "kubernetes"
OFFER_SOURCE = "kubernetes:contract-prices"
GPU = "nvidia.com/gpu"
ZONE_LABEL = "topology.kubernetes.io/zone"
PRODUCT_LABELS = ("gpu.nvidia.com/class", "nvidia.com/gpu.product")  # CoreWeave first, then GFD
CAPACITY_LABEL = "gpubroker-capacity-type"
RESERVATION_LABEL = "gpubroker-reservation-id"
_OUR_LABELS = (TAG_MANAGED, TAG_INSTANCE_ID, CAPACITY_LABEL, RESERVATION_LABEL)
DEFAULT_NAMESPACE = "gpubroker"
DEFAULT_IMAGE = "nvidia/cuda:12.4.1-base-ubuntu22.04"
GRACE_SECONDS = 30  # terminationGracePeriodSeconds: SIGTERM to SIGKILL when the pod is deleted or preempted
# GKE and AKS taint GPU nodes nvidia.com/gpu:NoSchedule; tolerating it is harmless where there is no taint.
GPU_TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}

# GPU product label value (upper-cased) -> canonical accelerator, before pricing.normalize.
# fmt: off
PRODUCT_ACCELERATORS: dict[str, str] = {
    # CoreWeave gpu.nvidia.com/class (coreweave/kubernetes-cloud node-types.md; L40/L40S as CKS lists them)
    "H100_NVLINK_80GB": "H100",       "H100_PCIE": "H100",
    "A100_NVLINK_80GB": "A100-80GB",  "A100_PCIE_80GB": "A100-80GB",
    "A100_NVLINK": "A100",            "A100_PCIE_40GB": "A100",
    "A40": "A40",                     "RTX_A6000": "A6000",
    "RTX_A5000": "A5000",             "RTX_A4000": "A4000",
    "TESLA_V100_NVLINK": "V100",      "TESLA_V100_PCIE": "V100",        "TESLA_V100": "V100",
    "QUADRO_RTX_5000": "RTX5000",     "QUADRO_RTX_4000": "RTX4000",
    "L40": "L40",                     "L40S": "L40S",
    # NVIDIA GPU Feature Discovery nvidia.com/gpu.product (the NVML name, blanks -> "-")
    "NVIDIA-H100-80GB-HBM3": "H100",  "NVIDIA-H100-PCIE": "H100",       "NVIDIA-H100-NVL": "H100",
    "NVIDIA-H200": "H200",            "NVIDIA-B200": "B200",
    "NVIDIA-A100-SXM4-80GB": "A100-80GB", "NVIDIA-A100-80GB-PCIE": "A100-80GB",
    "NVIDIA-A100-SXM4-40GB": "A100",  "A100-SXM4-40GB": "A100",         "NVIDIA-A100-PCIE-40GB": "A100",
    "NVIDIA-L40S": "L40S",            "NVIDIA-L40": "L40",              "NVIDIA-L4": "L4",
    "NVIDIA-A10G": "A10G",            "NVIDIA-A10": "A10",              "NVIDIA-A40": "A40",
    "NVIDIA-RTX-A6000": "A6000",      "NVIDIA-RTX-A5000": "A5000",      "TESLA-T4": "T4",
}
# fmt: on
_VENDOR_WORDS = {"NVIDIA", "TESLA", "QUADRO", "GEFORCE"}
_MODEL = re.compile(r"^(?:GH|GB|[A-Z])\d{1,4}[A-Z]?$")

# Pod phase -> ours. Overridden first by disruption (PREEMPTED), then by deletionTimestamp (STOPPING).
PHASE_STATES: dict[str, InstanceState] = {
    "Pending": InstanceState.PENDING,
    "Running": InstanceState.RUNNING,
    "Succeeded": InstanceState.TERMINATED,
    "Failed": InstanceState.FAILED,
    "Unknown": InstanceState.UNKNOWN,
}
PREEMPTED_POD_REASONS = frozenset({"Evicted", "Preempting"})  # status.reason set by the kubelet
# DisruptionTarget condition reasons (kubernetes.io "Pod disruption conditions"); with phase Failed or a
# deletionTimestamp they mean the cluster took the pod away: PREEMPTED.
DISRUPTION_REASONS = frozenset(
    {"PreemptionByScheduler", "DeletionByTaintManager", "EvictionByEvictionAPI", "DeletionByPodGC"}
    | {"TerminationByKubelet"}
)

# metav1.Status reason -> our type (k8s.io/apimachinery pkg/apis/meta/v1 StatusReason*). A 403 that
# says "exceeded quota" is ResourceQuota: QuotaExceeded. Unknown reasons fall back to the HTTP status.
STATUS_REASONS: dict[str, type[ProviderError]] = {
    "Unauthorized": AuthError,  # 401
    "Forbidden": AuthError,  # 403: RBAC
    "NotFound": NotFound,  # 404
    "AlreadyExists": InvalidRequest,  # 409 on create (launch reads the existing pod instead)
    "Conflict": Transient,  # 409 on write: stale resourceVersion, re-read and retry
    "Gone": Transient,  # 410
    "Expired": Transient,  # 410: a list continue token expired
    "Invalid": InvalidRequest,  # 422
    "BadRequest": InvalidRequest,  # 400
    "MethodNotAllowed": InvalidRequest,  # 405
    "NotAcceptable": InvalidRequest,  # 406
    "RequestEntityTooLarge": InvalidRequest,  # 413
    "UnsupportedMediaType": InvalidRequest,  # 415
    "TooManyRequests": Transient,  # 429
    "InternalError": Transient,  # 500
    "ServerTimeout": Transient,  # 500 with retryAfterSeconds
    "ServiceUnavailable": Transient,  # 503
    "Timeout": Transient,  # 504
}

_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_INSTANCE_TYPE = re.compile(r"^(?P<product>.+)-x(?P<count>[1-9]\d*)$")


@dataclass(frozen=True, slots=True)
class PreemptiblePool:
    """Where spot pods may run and what they cost. ``node_selector`` labels mark the pool's nodes (empty:
    any GPU node, preemptible by priority alone); ``priority_class`` is given to spot pods so the scheduler
    preempts them first; ``tolerations`` admit them to the pool's tainted nodes."""

    prices: Mapping[str, Decimal]  # $ per GPU-hour by product label value
    node_selector: Mapping[str, str] = field(default_factory=dict)
    priority_class: str | None = None
    tolerations: tuple[Mapping[str, str], ...] = ()
    # Notice before a spot pod dies, as the pool guarantees it: scheduler preemption honours the pod's
    # grace period, but node-pressure eviction or a reclaimed spot VM may give none. None: no promise.
    notice_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class _Node:
    """One GPU node as capacity: its product, place, size and free GPUs (None: usage unknown)."""

    name: str
    label: str
    product: str
    zone: str | None
    allocatable: int
    free: int | None
    preemptible: bool


def accelerator_for(product: str) -> str:
    """Canonical GPU model for a product label value (table first, then the model word in the name)."""
    known = PRODUCT_ACCELERATORS.get(product.strip().upper())
    if known:
        return canonical_accelerator(known)
    words = [w for w in re.split(r"[-_ ]+", product.strip().upper()) if w and w not in _VENDOR_WORDS]
    for i, word in enumerate(words):
        if _MODEL.match(word):
            memory = next((w for w in words[i + 1 :] if w.endswith("GB")), "")
            return canonical_accelerator(f"{word}-80GB" if word == "A100" and memory == "80GB" else word)
    return canonical_accelerator(product)


def parse_instance_type(instance_type: str) -> tuple[str, int] | None:
    """``H100_NVLINK_80GB-x8`` -> ("H100_NVLINK_80GB", 8)."""
    found = _INSTANCE_TYPE.match(instance_type)
    return (found["product"], int(found["count"])) if found else None


def _at(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]…`` over JSON, or None where a step is missing."""
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def pod_state(pod: Mapping[str, Any]) -> tuple[InstanceState, str | None]:
    """Our state and the cluster's reason for a Pod (JSON): the one place the tables above are applied."""
    status = pod.get("status") or {}
    phase = status.get("phase") or "Unknown"
    deleting = _at(pod, "metadata", "deletionTimestamp") is not None
    conditions = status.get("conditions") or []
    if status.get("reason") in PREEMPTED_POD_REASONS:
        return InstanceState.PREEMPTED, _join(status.get("reason"), status.get("message"))
    for condition in conditions:
        disrupted = condition.get("type") == "DisruptionTarget" and condition.get("status") == "True"
        if disrupted and condition.get("reason") in DISRUPTION_REASONS and (phase == "Failed" or deleting):
            return InstanceState.PREEMPTED, _join(condition.get("reason"), condition.get("message"))
    state = PHASE_STATES.get(phase, InstanceState.UNKNOWN)
    if state in TERMINAL_STATES:
        return state, _join(status.get("reason"), status.get("message")) or _exit(status)
    if deleting:
        return InstanceState.STOPPING, "deletionTimestamp set"
    if state is InstanceState.PENDING:
        for condition in conditions:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return state, _join(condition.get("reason"), condition.get("message"))
        for container in status.get("containerStatuses") or []:
            if waiting := _at(container, "state", "waiting"):
                return state, _join(waiting.get("reason"), waiting.get("message"))
    return state, None


def _exit(status: Mapping[str, Any]) -> str | None:
    for container in status.get("containerStatuses") or []:
        if done := _at(container, "state", "terminated"):
            return f"{done.get('reason') or 'Terminated'} (exit {done.get('exitCode')})"
    return None


def _join(reason: str | None, message: str | None) -> str | None:
    return f"{reason}: {message}" if reason and message else reason or message


def error_from_api(exc: ApiException, *, region: str | None = None) -> ProviderError:
    """The typed error for an ApiException: Status reason table first, then the HTTP status."""
    status = int(exc.status or 0)
    if status == 0:  # the client's own failures: TLS errors, unparseable content types
        return Transient(f"no HTTP answer: {exc.reason}", provider=PROVIDER, region=region, code="transport")
    body: dict[str, Any] = {}
    try:
        parsed = json.loads(exc.body) if exc.body else None
        body = parsed if isinstance(parsed, dict) and parsed.get("kind") == "Status" else {}
    except (TypeError, ValueError):
        pass
    reason = body.get("reason") or None
    message = str(body.get("message") or (exc.body or "").strip()[:300] or exc.reason or f"HTTP {status}")
    shim = httpx.Response(status, headers=list((exc.headers or {}).items()))
    retry_after = retry_after_seconds(shim)
    if retry_after is None and isinstance(body.get("details"), dict):
        hinted = body["details"].get("retryAfterSeconds")
        retry_after = float(hinted) if isinstance(hinted, int | float) and hinted > 0 else None
    code = reason or str(status)
    kind = (
        QuotaExceeded if status == 403 and "exceeded quota" in message else STATUS_REASONS.get(reason or "")
    )
    if kind is None:  # no Status reason we know (a plain-text 429 is one): the HTTP status decides
        error = error_for_status(shim, provider=PROVIDER, region=region, message=message, code=code)
    elif kind is Transient:
        error = Transient(message, provider=PROVIDER, region=region, code=code)
    else:
        error = kind(message, provider=PROVIDER, region=region, code=code)
    if isinstance(error, Transient) and error.retry_after is None:
        error.retry_after = retry_after
    return error


class KubernetesProvider:
    """GPU pods on one Kubernetes cluster, priced by a contract table. Single attempts; no SDK retries."""

    name = PROVIDER

    def __init__(
        self,
        configuration: k8s.Configuration | Callable[[], k8s.Configuration],
        *,
        prices: Mapping[str, Decimal],
        cluster: str,
        namespace: str = DEFAULT_NAMESPACE,
        contract: CapacityType = CapacityType.ON_DEMAND,
        preemptible: PreemptiblePool | None = None,
        default_image: str = DEFAULT_IMAGE,
        product_labels: Sequence[str] = PRODUCT_LABELS,
        clock: Callable[[], datetime] = utc_now,
        request_timeout: float | tuple[float, float] = (10.0, 30.0),
        page_size: int = 500,
    ) -> None:
        if contract is CapacityType.SPOT:
            raise ValueError("a contract is on-demand or reserved; spot comes from a PreemptiblePool")
        if not cluster:
            raise ValueError("the cluster name (used as the region) is required")
        self._configuration = configuration
        self._prices = {k: Decimal(v) for k, v in prices.items()}
        self._cluster, self._namespace, self._contract = cluster, namespace, contract
        self._pool = preemptible
        self._image, self._labels = default_image, tuple(product_labels)
        self._clock, self._timeout, self._page_size = clock, request_timeout, page_size
        self._lock = threading.Lock()
        self._api: k8s.CoreV1Api | None = None
        self._unpriced: set[tuple[str, CapacityType]] = set()
        types = {contract} | ({CapacityType.SPOT} if preemptible else set())
        self.capabilities = Capabilities(
            capacity_types=frozenset(types),
            reservations=contract is CapacityType.RESERVED,
            interruption_notice_seconds=preemptible.notice_seconds if preemptible else None,
            availability_signal=True,
            live_prices=False,
            launch_idempotency=LaunchIdempotency.UNIQUE_NAME,
            regions=(cluster,),
        )

    def __repr__(self) -> str:  # never the token
        return f"KubernetesProvider(cluster={self._cluster!r}, namespace={self._namespace!r})"

    def close(self) -> None:
        if self._api is not None:
            self._api.api_client.close()

    # --- calls --------------------------------------------------------------------------------------
    def _core(self) -> k8s.CoreV1Api:
        with self._lock:
            if self._api is None:
                try:
                    conf = self._configuration
                    conf = conf if isinstance(conf, k8s.Configuration) else conf()
                except (k8s_config.ConfigException, OSError, ValueError, TypeError) as exc:
                    what = f"cannot load cluster credentials: {type(exc).__name__}: {str(exc)[:200]}"
                    raise self._error(AuthError, what, "kubeconfig") from None
                conf.retries = 0  # one attempt: the resilience layer retries
                self._api = k8s.CoreV1Api(k8s.ApiClient(conf))
            return self._api

    def _call(self, method: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """One API call, its answer as JSON. The typed models are skipped on purpose: they reject objects
        a newer API server adds fields or enum values to (kubernetes-client/python#1735)."""
        api = self._core()
        try:
            response = getattr(api, method)(
                *args, _request_timeout=self._timeout, _preload_content=False, **kwargs
            )
            data = response.data
        except ApiException as exc:
            raise error_from_api(exc, region=self._cluster) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # refused, reset, timed out, answer lost
            raise self._error(Transient, f"{type(exc).__name__} calling {method}", "transport") from None
        try:
            answer = json.loads(data)
        except ValueError as exc:
            raise self._error(Transient, f"unparseable answer to {method}: {exc}", "bad-response") from None
        if not isinstance(answer, dict):
            raise self._error(Transient, f"unexpected answer to {method}", "bad-response")
        return answer

    def _error(self, kind: type[ProviderError], message: str, code: str) -> ProviderError:
        return kind(message, provider=PROVIDER, region=self._cluster, code=code)

    def _list_all(self, method: str, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        """Every item of a list call, following ``metadata.continue`` (limit/continue paging)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._call(method, *args, limit=self._page_size, _continue=token, **kwargs)
            if not isinstance(page.get("items") or [], list):
                raise self._error(Transient, f"{method} answered without an item list", "bad-response")
            items.extend(item for item in page.get("items") or [] if isinstance(item, dict))
            token = _at(page, "metadata", "continue") or None
            if not token:
                return items

    # --- capacity -----------------------------------------------------------------------------------
    def _gpu_usage(self) -> dict[str, int] | None:
        """GPUs requested per node by live pods in every namespace; None when RBAC hides other namespaces."""
        try:
            live = "status.phase!=Succeeded,status.phase!=Failed"
            pods = self._list_all("list_pod_for_all_namespaces", field_selector=live)
        except AuthError:
            return None
        usage: dict[str, int] = {}
        for pod in pods:
            if node := _at(pod, "spec", "nodeName"):
                usage[node] = usage.get(node, 0) + _pod_gpus(pod.get("spec") or {})
        return usage

    def _nodes(self) -> list[_Node]:
        nodes = self._list_all("list_node")
        usage = self._gpu_usage()
        found: list[_Node] = []
        for node in nodes:
            labels = _at(node, "metadata", "labels") or {}
            allocatable = _quantity(_at(node, "status", "allocatable", GPU))
            label = next((key for key in self._labels if labels.get(key)), None)
            # MIG "single" strategy relabels nvidia.com/gpu as MIG slices (GFD README): not whole GPUs.
            if allocatable <= 0 or label is None or "-MIG-" in labels[label].upper():
                continue
            pool = self._in_pool(labels)
            tolerations = [GPU_TOLERATION, *(self._pool.tolerations if self._pool and pool else ())]
            taints = _at(node, "spec", "taints") or []
            usable = (
                _ready(node)
                and not _at(node, "spec", "unschedulable")
                and all(_tolerated(t, tolerations) for t in taints)
            )
            name = str(_at(node, "metadata", "name"))
            free = 0 if not usable else None if usage is None else max(allocatable - usage.get(name, 0), 0)
            found.append(_Node(name, label, labels[label], labels.get(ZONE_LABEL), allocatable, free, pool))
        return found

    def _in_pool(self, labels: Mapping[str, str]) -> bool:
        selector = self._pool.node_selector if self._pool else {}
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    def _sells(self, node: _Node, capacity: CapacityType) -> bool:
        """How a node's GPUs are sold: the preemptible pool's nodes as spot, the rest under the contract."""
        if capacity is CapacityType.SPOT:
            return self._pool is not None and (node.preemptible or not self._pool.node_selector)
        return capacity is self._contract and not node.preemptible

    def _price(self, product: str, capacity: CapacityType) -> Decimal | None:
        table = self._pool.prices if capacity is CapacityType.SPOT and self._pool else self._prices
        price = table.get(product)
        if price is None and (product, capacity) not in self._unpriced:
            self._unpriced.add((product, capacity))  # log once per product, not per refresh
            log.warning(
                "kubernetes %s: no %s price for GPU product %r", self._cluster, capacity.value, product
            )
        return Decimal(price) if price is not None else None

    # --- offers -------------------------------------------------------------------------------------
    def list_offers(self, *, regions: Sequence[str] | None = None) -> list[Offer]:
        """One offer per (product, zone, capacity type, GPU count) that fits on a node.

        Counts are 1, 2, 4, 8, … up to the largest node's allocatable GPUs (plus that number when it
        is not a power of two). Availability counts placements, Σ over the nodes of free // count:
        two or more AVAILABLE, one LIMITED, none UNAVAILABLE; UNKNOWN when RBAC hides the usage.
        """
        if regions and self._cluster not in regions:
            return []
        nodes = self._nodes()
        observed_at = self._clock()
        groups: dict[tuple[str, str, CapacityType], list[_Node]] = {}
        for node in nodes:
            for capacity in sorted(self.capabilities.capacity_types):
                if self._sells(node, capacity):
                    groups.setdefault((node.product, node.zone or "", capacity), []).append(node)
        offers: list[Offer] = []
        for (product, zone, capacity), members in sorted(groups.items()):
            price = self._price(product, capacity)
            for count in _counts(max(n.allocatable for n in members)) if price is not None else []:
                offers.append(
                    Offer(
                        cloud=PROVIDER,
                        region=self._cluster,
                        zone=zone or None,
                        instance_type=f"{product}-x{count}",
                        accelerator=accelerator_for(product),
                        accelerator_count=count,
                        vcpus=None,  # pods ask for GPUs only; CPU and memory are the node's to share
                        memory_gib=None,
                        capacity_type=capacity,
                        price_per_hour=price * count,
                        currency="USD",
                        source=OFFER_SOURCE,
                        observed_at=observed_at,
                        availability=_availability(members, count),
                    )
                )
        return offers

    # --- instances ----------------------------------------------------------------------------------
    def launch(self, request: LaunchRequest) -> Instance:
        if request.region != self._cluster:
            what = f"this adapter serves cluster {self._cluster!r}, not {request.region!r}"
            raise self._error(InvalidRequest, what, "unknown-region")
        if request.capacity_type not in self.capabilities.capacity_types:
            what = f"cluster {self._cluster} sells no {request.capacity_type.value} capacity"
            raise self._error(InvalidRequest, what, "unsupported-capacity-type")
        existing = self._read_pod(request.name)  # a retry after a lost answer finds the first pod
        if existing is not None:
            return self._instance(existing)
        parsed = parse_instance_type(request.instance_type)
        if parsed is None or self._price(parsed[0], request.capacity_type) is None:
            what = f"{request.instance_type!r} is not an offered <product>-x<count> type"
            raise self._error(InvalidRequest, what, "unknown-instance-type")
        product, count = parsed
        candidates = [
            n
            for n in self._nodes()
            if n.product == product
            and self._sells(n, request.capacity_type)
            and request.zone in (None, n.zone)
        ]
        if not candidates or count > max(n.allocatable for n in candidates):
            what = f"no {request.capacity_type.value} node in {self._cluster} has {count} x {product}"
            raise self._error(InvalidRequest, what, "unknown-instance-type")
        # Documented choice: refuse before creating a pod that could only sit Unschedulable.
        if all(n.free is not None for n in candidates) and max(n.free or 0 for n in candidates) < count:
            what = f"no node has {count} free {product} GPUs right now"
            raise self._error(InsufficientCapacity, what, "Insufficient nvidia.com/gpu")
        body = self._manifest(request, candidates[0].label, product, count)
        try:
            created = self._call("create_namespaced_pod", self._namespace, body)
        except InvalidRequest as exc:
            if exc.code != "AlreadyExists":
                raise
            found = self._read_pod(request.name)  # a concurrent launch of the same id won the name
            if found is None:
                raise self._error(Transient, "pod vanished after AlreadyExists", "AlreadyExists") from None
            created = found
        log.info("kubernetes %s: launched pod %s (%s)", self._cluster, request.name, request.instance_type)
        return self._instance(created)

    def get_instance(self, instance_id: str, *, region: str) -> Instance | None:
        if region != self._cluster:
            return None
        pod = self._read_pod(NAME_PREFIX + instance_id)
        if pod is None or _at(pod, "metadata", "labels", TAG_MANAGED) != "true":
            return None
        return self._instance(pod, self._zones([pod]))

    def list_instances(self, *, regions: Sequence[str] | None = None) -> list[Instance]:
        if regions and self._cluster not in regions:
            return []
        pods = self._list_all("list_namespaced_pod", self._namespace, label_selector=f"{TAG_MANAGED}=true")
        zones = self._zones(pods)
        return [self._instance(pod, zones) for pod in pods if _our_id(pod)]

    def terminate(self, instance_id: str, *, region: str) -> None:
        if region != self._cluster:
            return
        try:
            self._call("delete_namespaced_pod", NAME_PREFIX + instance_id, self._namespace)
        except NotFound:
            return  # already gone: done
        log.info("kubernetes %s: deleting pod %s%s", self._cluster, NAME_PREFIX, instance_id)

    def check(self) -> ProviderStatus:
        try:
            self._call("list_namespaced_pod", self._namespace, limit=1, label_selector=f"{TAG_MANAGED}=true")
        except AuthError as exc:
            reachable = exc.code != "kubeconfig"  # the API answered 401/403, or we never got that far
            return ProviderStatus(PROVIDER, configured=False, reachable=reachable, detail=str(exc))
        except ProviderError as exc:
            return ProviderStatus(PROVIDER, configured=True, reachable=False, detail=str(exc))
        return ProviderStatus(
            PROVIDER, configured=True, reachable=True, detail=f"cluster {self._cluster}: ok"
        )

    # --- helpers ------------------------------------------------------------------------------------
    def _read_pod(self, name: str) -> dict[str, Any] | None:
        try:
            return self._call("read_namespaced_pod", name, self._namespace)
        except NotFound:
            return None

    def _zones(self, pods: Iterable[Mapping[str, Any]]) -> dict[str, str | None]:
        """Zone of each node our pods run on (best effort: one read per node, failures give None)."""
        zones: dict[str, str | None] = {}
        for pod in pods:
            node = _at(pod, "spec", "nodeName")
            if node and node not in zones:
                try:
                    zones[node] = _at(self._call("read_node", node), "metadata", "labels", ZONE_LABEL)
                except ProviderError:
                    zones[node] = None
        return zones

    def _manifest(self, request: LaunchRequest, label: str, product: str, count: int) -> k8s.V1Pod:
        labels = dict(_sanitized(request.labels))
        labels |= {TAG_MANAGED: "true", TAG_INSTANCE_ID: request.instance_id}
        labels[CAPACITY_LABEL] = request.capacity_type.value
        if request.reservation_id:
            labels[RESERVATION_LABEL] = _label_value(request.reservation_id)
        selector = {label: product} | ({ZONE_LABEL: request.zone} if request.zone else {})
        tolerations = [GPU_TOLERATION]
        affinity = priority = None
        if request.capacity_type is CapacityType.SPOT and self._pool:
            selector |= dict(self._pool.node_selector)
            tolerations += list(self._pool.tolerations)
            priority = self._pool.priority_class
        elif self._pool and self._pool.node_selector:  # keep contract pods off the preemptible nodes
            off_pool = [
                k8s.V1NodeSelectorRequirement(key=k, operator="NotIn", values=[v])
                for k, v in self._pool.node_selector.items()
            ]
            terms = k8s.V1NodeSelector(
                node_selector_terms=[k8s.V1NodeSelectorTerm(match_expressions=off_pool)]
            )
            affinity = k8s.V1Affinity(
                node_affinity=k8s.V1NodeAffinity(required_during_scheduling_ignored_during_execution=terms)
            )
        env = [k8s.V1EnvVar(name="GPUBROKER_INSTANCE_ID", value=request.instance_id)]
        if request.ssh_public_key:
            env.append(k8s.V1EnvVar(name="GPUBROKER_SSH_PUBLIC_KEY", value=request.ssh_public_key.strip()))
        container = k8s.V1Container(
            name="main",
            image=request.image or self._image,
            # Capacity only (no image asked for): hold the GPUs. A given image runs its own entrypoint.
            command=None if request.image else ["sleep", "infinity"],
            env=env,
            resources=k8s.V1ResourceRequirements(limits={GPU: str(count)}),
        )
        return k8s.V1Pod(
            api_version="v1",
            kind="Pod",
            metadata=k8s.V1ObjectMeta(
                name=request.name,
                namespace=self._namespace,
                labels=labels,
                annotations={"gpubroker/instance-type": request.instance_type},
            ),
            spec=k8s.V1PodSpec(
                containers=[container],
                node_selector=selector,
                affinity=affinity,
                tolerations=[k8s.V1Toleration(**t) for t in tolerations],
                priority_class_name=priority,
                restart_policy="Never",  # one pod is one instance run; the broker replaces failed ones
                termination_grace_period_seconds=GRACE_SECONDS,
            ),
        )

    def _instance(self, pod: Mapping[str, Any], zones: Mapping[str, str | None] | None = None) -> Instance:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        labels, selector = meta.get("labels") or {}, spec.get("nodeSelector") or {}
        product = next((selector[k] for k in self._labels if k in selector), None)
        count = sum(_container_gpus(c) for c in spec.get("containers") or [])
        annotated = _at(meta, "annotations", "gpubroker/instance-type") or ""
        try:
            capacity = CapacityType(labels.get(CAPACITY_LABEL, self._contract.value))
        except ValueError:
            capacity = self._contract
        price = self._price(product, capacity) if product else None
        state, reason = pod_state(pod)
        node = spec.get("nodeName")
        return Instance(
            provider=PROVIDER,
            instance_id=_our_id(pod) or "",
            provider_instance_id=str(meta.get("uid") or f"{self._namespace}/{meta.get('name')}"),
            instance_type=f"{product}-x{count}" if product and count else annotated,
            region=self._cluster,
            zone=(zones or {}).get(node) if node else None,
            capacity_type=capacity,
            state=state,
            launched_at=_timestamp(meta.get("creationTimestamp")),
            state_reason=reason,
            price_per_hour=price * count if price is not None and count else None,
            public_ip=None,  # pod IPs are cluster-internal
        )


def _timestamp(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")) if value else None
    except ValueError:
        return None


def _quantity(value: object) -> int:
    """An integer resource quantity ("8"); GPUs are whole devices."""
    try:
        return int(Decimal(str(value))) if value is not None else 0
    except InvalidOperation:
        return 0


def _container_gpus(container: Mapping[str, Any]) -> int:
    # For extended resources the request defaults to the limit (and must equal it).
    resources = container.get("resources") or {}
    return _quantity((resources.get("requests") or {}).get(GPU) or (resources.get("limits") or {}).get(GPU))


def _pod_gpus(spec: Mapping[str, Any]) -> int:
    """The scheduler's effective request: max(sum of app containers, largest init container)."""
    app = sum(_container_gpus(c) for c in spec.get("containers") or [])
    return max([app, *(_container_gpus(c) for c in spec.get("initContainers") or [])])


def _ready(node: Mapping[str, Any]) -> bool:
    conditions = _at(node, "status", "conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _tolerated(taint: Mapping[str, Any], tolerations: Sequence[Mapping[str, str]]) -> bool:
    effect = taint.get("effect")
    if effect not in ("NoSchedule", "NoExecute"):
        return True  # PreferNoSchedule does not keep a pod off the node
    return any(
        t.get("key") in (None, "", taint.get("key"))
        and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
        and t.get("effect") in (None, "", effect)
        for t in tolerations
    )


def _counts(largest: int) -> list[int]:
    counts, n = [], 1
    while n <= largest:
        counts.append(n)
        n *= 2
    return counts if counts[-1] == largest else [*counts, largest]


def _availability(nodes: Sequence[_Node], count: int) -> Availability:
    if any(n.free is None for n in nodes):
        return Availability.UNKNOWN
    placements = sum((n.free or 0) // count for n in nodes)
    if placements >= 2:
        return Availability.AVAILABLE
    return Availability.LIMITED if placements else Availability.UNAVAILABLE


def _label_value(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", value)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)


def _sanitized(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    """request.labels in label syntax; keys that cannot be made valid or are reserved are dropped."""
    out = []
    for key, value in sorted(labels.items()):
        prefix, _, name = key.rpartition("/")
        name = _label_value(name)
        if not _LABEL_NAME.match(name) or (prefix and not _LABEL_PREFIX.match(prefix)):
            continue
        if prefix.endswith(("kubernetes.io", "k8s.io")) or name in _OUR_LABELS:
            continue
        out.append((f"{prefix}/{name}" if prefix else name, _label_value(str(value))))
    return out


def _our_id(pod: Mapping[str, Any]) -> str | None:
    """Our id from the pod name, else from our label (a pod renamed by a controller keeps the label)."""
    by_label = owned_instance_id(NAME_PREFIX + str(_at(pod, "metadata", "labels", TAG_INSTANCE_ID) or ""))
    return owned_instance_id(_at(pod, "metadata", "name")) or by_label


def _load_prices(raw: str) -> dict[str, Decimal]:
    """A {product: usd_per_gpu_hour} table from inline JSON or a JSON file path."""
    text = raw if raw.lstrip()[:1] in ("{", "[") else Path(raw).expanduser().read_text()
    table = json.loads(text, parse_float=Decimal)
    if not isinstance(table, dict) or not table:
        raise ValueError("the price table must be a non-empty JSON object {product: usd_per_gpu_hour}")
    try:
        prices = {str(k): Decimal(str(v)) for k, v in table.items()}
    except InvalidOperation:
        raise ValueError("prices must be numbers of USD per GPU-hour") from None
    if any(not p.is_finite() or p < 0 for p in prices.values()):
        raise ValueError("prices must be non-negative numbers of USD per GPU-hour")
    return prices


def from_environment(environ: Mapping[str, str] | None = None) -> KubernetesProvider | None:
    """The adapter from ``GPUBROKER_KUBE_PRICES`` (inline JSON or a file) plus a kubeconfig (``KUBECONFIG``,
    ``~/.kube/config``; ``GPUBROKER_KUBE_CONTEXT`` picks a context) or the in-cluster service account.

    Optional: ``GPUBROKER_KUBE_NAMESPACE`` (default "gpubroker"), ``GPUBROKER_KUBE_CLUSTER`` (region name;
    default the kubeconfig context), ``GPUBROKER_KUBE_CAPACITY`` ("on-demand" | "reserved"), and a spot
    pool: ``GPUBROKER_KUBE_SPOT_PRICES`` (JSON/file) with ``GPUBROKER_KUBE_SPOT_SELECTOR`` ("k=v,k=v"),
    ``GPUBROKER_KUBE_SPOT_PRIORITY_CLASS`` and ``GPUBROKER_KUBE_SPOT_NOTICE_SECONDS``. Nothing is contacted
    here: the kubeconfig (whose exec/auth plugins may call out) is loaded on first use.
    """
    env = os.environ if environ is None else environ
    raw = env.get("GPUBROKER_KUBE_PRICES", "").strip()
    if not raw:
        return None
    prices = _load_prices(raw)
    context = env.get("GPUBROKER_KUBE_CONTEXT", "").strip() or None
    kubeconfig = env.get("KUBECONFIG", "").strip() or str(
        Path(env.get("HOME", "~")).expanduser() / ".kube" / "config"
    )
    paths = [p for p in kubeconfig.split(os.pathsep) if p]
    cluster = env.get("GPUBROKER_KUBE_CLUSTER", "").strip()
    loader: Callable[[], k8s.Configuration]
    if any(Path(p).expanduser().is_file() for p in paths):
        if not cluster:  # parsing the YAML runs no auth plugin
            try:
                _, current = k8s_config.list_kube_config_contexts(config_file=kubeconfig)
            except k8s_config.ConfigException as exc:
                raise ValueError(f"unreadable kubeconfig: {exc}") from None
            cluster = context or str(current["name"])

        def loader() -> k8s.Configuration:
            conf = k8s.Configuration()
            k8s_config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=conf, persist_config=False
            )
            return conf
    elif env.get("KUBERNETES_SERVICE_HOST") and env.get("KUBERNETES_SERVICE_PORT"):
        cluster = cluster or "in-cluster"

        def loader() -> k8s.Configuration:
            conf = k8s.Configuration()
            k8s_config.load_incluster_config(client_configuration=conf)
            return conf
    else:
        raise ValueError(
            "GPUBROKER_KUBE_PRICES is set but there is no kubeconfig (KUBECONFIG, ~/.kube/config) "
            "and no in-cluster service account"
        )
    pool = None
    if spot_raw := env.get("GPUBROKER_KUBE_SPOT_PRICES", "").strip():
        pairs = [p.split("=", 1) for p in env.get("GPUBROKER_KUBE_SPOT_SELECTOR", "").split(",") if "=" in p]
        pool = PreemptiblePool(
            prices=_load_prices(spot_raw),
            node_selector={k.strip(): v.strip() for k, v in pairs},
            priority_class=env.get("GPUBROKER_KUBE_SPOT_PRIORITY_CLASS", "").strip() or None,
            notice_seconds=int(notice) if (notice := env.get("GPUBROKER_KUBE_SPOT_NOTICE_SECONDS")) else None,
        )
    return KubernetesProvider(
        loader,
        prices=prices,
        cluster=cluster,
        namespace=env.get("GPUBROKER_KUBE_NAMESPACE", "").strip() or DEFAULT_NAMESPACE,
        contract=CapacityType(env.get("GPUBROKER_KUBE_CAPACITY", "").strip() or CapacityType.ON_DEMAND.value),
        preemptible=pool,
    )


__all__ = [
    "DISRUPTION_REASONS",
    "PHASE_STATES",
    "PREEMPTED_POD_REASONS",
    "PRODUCT_ACCELERATORS",
    "STATUS_REASONS",
    "KubernetesProvider",
    "PreemptiblePool",
    "accelerator_for",
    "error_from_api",
    "from_environment",
    "parse_instance_type",
    "pod_state",
]
