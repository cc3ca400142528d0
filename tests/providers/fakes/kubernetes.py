"""A fake Kubernetes API server (core/v1 nodes and pods) on a local FakeHTTPServer (I/O on 127.0.0.1 only).

It speaks the real REST paths and JSON the official client expects: ``/api/v1/nodes``,
``/api/v1/pods`` (all namespaces), ``/api/v1/namespaces/{ns}/pods[/{name}]``; ``NodeList`` /
``PodList`` envelopes with ``metadata.continue`` paging (``limit`` + ``continue``); label selectors
(``k=v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``k notin (a,b)``) and the pod field selectors
``spec.nodeName`` and ``status.phase``; errors as ``metav1.Status`` bodies (NotFound, AlreadyExists,
Unauthorized, Forbidden incl. the ResourceQuota "exceeded quota" message, Invalid, InternalError,
ServiceUnavailable, Timeout) and the API server's throttling answer: a 429 whose body is the plain
text of ``http.Error`` with ``Retry-After: 1`` (k8s.io/apiserver filters ``tooManyRequests``).

It also plays the parts the API server alone does not: a scheduler (``schedule()``, run before every
read) that binds pending pods to a node with enough free ``nvidia.com/gpu`` or marks them
``Unschedulable``, a kubelet that finishes graceful deletions (``finish_deletions()``), and the ways
a pod is disrupted (``preempt()``: eviction, scheduler preemption, node shutdown).
"""

from __future__ import annotations

import base64
import copy
import re
import uuid
from typing import Any

from tests.providers.fakes.http import FakeHTTPServer, FakeRequest, FakeResponse

TOKEN = "kube-sa-token.eyJhbGciOiJSUzI1NiJ9.fake-signature-0123456789"
NAMESPACE = "gpubroker"
NOW = "2026-11-20T12:00:00Z"
GPU = "nvidia.com/gpu"
_POD = r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)"
_PODS = r"/api/v1/namespaces/(?P<ns>[^/]+)/pods"

# --- realistic objects -----------------------------------------------------------------------------


def coreweave_labels(
    gpu_class: str, product: str, count: int, zone: str, instance_type: str
) -> dict[str, str]:
    """Labels of a CoreWeave CKS GPU node (gpu.nvidia.com/* from CoreWeave, nvidia.com/* from GFD)."""
    return {
        "gpu.nvidia.com/class": gpu_class,
        "gpu.nvidia.com/count": str(count),
        "gpu.nvidia.com/model": gpu_class,
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.count": str(count),
        "nvidia.com/gpu.present": "true",
        "node.kubernetes.io/instance-type": instance_type,
        "topology.kubernetes.io/region": zone[:-1],
        "topology.kubernetes.io/zone": zone,
    }


def make_node(
    name: str,
    labels: dict[str, str],
    *,
    gpus: int,
    taints: list[dict[str, str]] | None = None,
    ready: bool = True,
    unschedulable: bool = False,
) -> dict[str, Any]:
    resources = {"cpu": "128", "memory": "2113245380Ki", "pods": "110", "ephemeral-storage": "7499362332Ki"}
    if gpus:
        resources[GPU] = str(gpus)
    spec: dict[str, Any] = {"providerID": f"coreweave://{name}", "taints": taints or []}
    if unschedulable:
        spec["unschedulable"] = True
    return {
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)),
            "resourceVersion": "4242",
            "creationTimestamp": "2026-10-01T08:00:00Z",
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                **labels,
            },
        },
        "spec": spec,
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "Unknown",
                    "reason": "KubeletReady" if ready else "NodeStatusUnknown",
                    "message": "kubelet is posting ready status"
                    if ready
                    else "Kubelet stopped posting node status.",
                    "lastHeartbeatTime": NOW,
                    "lastTransitionTime": "2026-10-01T08:05:00Z",
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
                "containerRuntimeVersion": "containerd://1.7.27",
                "kernelVersion": "6.8.0-1015-nvidia",
                "kubeProxyVersion": "",
                "kubeletVersion": "v1.32.4",
                "machineID": uuid.uuid5(uuid.NAMESPACE_OID, name).hex,
                "operatingSystem": "linux",
                "osImage": "Ubuntu 22.04.5 LTS",
                "systemUUID": str(uuid.uuid5(uuid.NAMESPACE_X500, name)),
            },
        },
    }


GPU_TAINT = {"key": GPU, "value": "present", "effect": "NoSchedule"}


def default_nodes() -> list[dict[str, Any]]:
    """A small CoreWeave-like cluster plus a GFD-only node, a spot node, a CPU node and a cordoned one."""
    h100 = ("H100_NVLINK_80GB", "NVIDIA-H100-80GB-HBM3", 8, "US-EAST-04A", "gd-8xh100ib-i128")
    a100 = ("A100_NVLINK_80GB", "NVIDIA-A100-SXM4-80GB", 8, "US-EAST-04B", "gd-8xa100-i128")
    a5000 = ("RTX_A5000", "NVIDIA-RTX-A5000", 4, "US-EAST-04B", "rtx-a5000-4x")
    spot_labels = {**coreweave_labels(*h100), "karpenter.sh/capacity-type": "spot"}
    return [
        make_node("g8h100-a1", coreweave_labels(*h100), gpus=8),
        make_node("g8h100-a2", coreweave_labels(*h100), gpus=8),
        make_node("g8a100-b1", coreweave_labels(*a100), gpus=8),
        make_node("ga5000-b1", coreweave_labels(*a5000), gpus=4),  # not in the contract: no price
        make_node(
            "gfd-l40s-1",  # a plain cluster: NVIDIA GFD labels only, no zone label
            {
                "nvidia.com/gpu.product": "NVIDIA-L40S",
                "nvidia.com/gpu.count": "4",
                "nvidia.com/gpu.present": "true",
            },
            gpus=4,
            taints=[GPU_TAINT],
        ),
        make_node("g8h100-spot1", spot_labels, gpus=8, taints=[GPU_TAINT]),
        make_node(
            "g8h100-a3",  # cordoned for maintenance: its GPUs are not free
            coreweave_labels(*h100),
            gpus=8,
            taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
            unschedulable=True,
        ),
        make_node(
            "gmig-a100-1",  # MIG "single" strategy: nvidia.com/gpu counts 1g.10gb slices
            {
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb",
                "nvidia.com/gpu.count": "56",
                "nvidia.com/mig.strategy": "single",
            },
            gpus=56,
        ),
        make_node("cpu-epyc-1", {"node.coreweave.cloud/cpu": "amd-epyc-genoa"}, gpus=0),
    ]


def foreign_pod(name: str, namespace: str, node: str, gpus: int, phase: str = "Running") -> dict[str, Any]:
    """Someone else's pod holding GPUs on a node."""
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "resourceVersion": "77",
            "creationTimestamp": "2026-11-19T09:00:00Z",
            "labels": {"app": name},
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Always",
            "containers": [
                {
                    "name": "train",
                    "image": "nvcr.io/nvidia/pytorch:24.10-py3",
                    "resources": {"limits": {GPU: str(gpus)}, "requests": {GPU: str(gpus)}},
                }
            ],
        },
        "status": {"phase": phase, "startTime": "2026-11-19T09:00:05Z"},
    }


def default_pods() -> list[dict[str, Any]]:
    return [
        foreign_pod("train-7f9c", "research", "g8a100-b1", 6),  # 2 of 8 A100s left
        foreign_pod("eval-done", "research", "g8h100-a1", 8, phase="Succeeded"),  # finished: holds nothing
    ]


# --- Status bodies (metav1.Status) ----------------------------------------------------------------


def status_body(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        body["details"] = details
    return body


def error_response(kind: str, name: str = "gpubroker-x") -> FakeResponse:
    """The API server's answer for a contract error kind (and a few more)."""
    if kind == "throttle":  # APF / max-in-flight: http.Error text, not a Status
        return FakeResponse(
            429,
            b"Too many requests, please try again later.\n",
            {
                "Retry-After": "1",
                "Content-Type": "text/plain; charset=utf-8",
                "X-Content-Type-Options": "nosniff",
            },
        )
    bodies: dict[str, tuple[int, str, str, dict[str, Any] | None]] = {
        "auth": (401, "Unauthorized", "Unauthorized", None),
        "forbidden": (
            403,
            "Forbidden",
            'pods is forbidden: User "system:serviceaccount:gpubroker:broker" cannot create resource "pods" '
            f'in API group "" in the namespace "{NAMESPACE}"',
            {"kind": "pods"},
        ),
        "quota": (
            403,
            "Forbidden",
            f'pods "{name}" is forbidden: exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=8, '
            "used: requests.nvidia.com/gpu=8, limited: requests.nvidia.com/gpu=8",
            {"name": name, "kind": "pods"},
        ),
        "invalid": (
            422,
            "Invalid",
            f'Pod "{name}" is invalid: spec.containers[0].image: Required value',
            {
                "name": name,
                "kind": "Pod",
                "causes": [
                    {
                        "reason": "FieldValueRequired",
                        "message": "Required value",
                        "field": "spec.containers[0].image",
                    }
                ],
            },
        ),
        "server": (
            500,
            "InternalError",
            "Internal error occurred: etcdserver: leader changed",
            {"causes": [{"message": "etcdserver: leader changed"}]},
        ),
        "unavailable": (
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            None,
        ),
        "timeout": (
            504,
            "Timeout",
            "Timeout: request did not complete within requested timeout - context deadline exceeded",
            {},
        ),
        "status-429": (429, "TooManyRequests", "Too many requests", {"retryAfterSeconds": 3}),
    }
    code, reason, message, details = bodies[kind]
    return FakeResponse(code, status_body(code, reason, message, details))


# --- selectors ---------------------------------------------------------------------------------------


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current.strip())
    return terms


_SET_TERM = re.compile(r"^(?P<key>\S+)\s+(?P<op>in|notin)\s+\((?P<values>[^)]*)\)$")


def matches_labels(selector: str, labels: dict[str, str]) -> bool:
    for term in _split_terms(selector):
        if found := _SET_TERM.match(term):
            values = {v.strip() for v in found["values"].split(",")}
            present = labels.get(found["key"]) in values
            if present != (found["op"] == "in"):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field(pod: dict[str, Any], path: str) -> str:
    value: Any = pod
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def matches_fields(selector: str, pod: dict[str, Any]) -> bool:
    supported = {"spec.nodeName", "status.phase", "metadata.name", "metadata.namespace"}
    for term in _split_terms(selector):
        negate = "!=" in term
        key, value = term.split("!=" if negate else "=", 1)
        key = key.strip().rstrip("=")
        if key not in supported:
            raise ValueError(f"field label not supported: {key}")
        if (_field(pod, key) == value.strip().lstrip("=")) == negate:
            return False
    return True


# --- the server --------------------------------------------------------------------------------------


class FakeKubernetes:
    """Nodes and pods behind the core/v1 REST API, with a scheduler and a kubelet you can drive."""

    def __init__(self, *, token: str = TOKEN, auto_schedule: bool = True) -> None:
        self.server = FakeHTTPServer()
        self.token = token
        self.auto_schedule = auto_schedule
        self.nodes: dict[str, dict[str, Any]] = {n["metadata"]["name"]: n for n in default_nodes()}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {
            (p["metadata"]["namespace"], p["metadata"]["name"]): p for p in default_pods()
        }
        self._version = 1000
        s = self.server
        s.route("GET", r"/api/v1/nodes")(self._list_nodes)
        s.route("GET", r"/api/v1/nodes/(?P<name>[^/]+)")(self._read_node)
        s.route("GET", r"/api/v1/pods")(self._list_all_pods)
        s.route("GET", _PODS)(self._list_pods)
        s.route("POST", _PODS)(self._create_pod)
        s.route("GET", _POD)(self._read_pod)
        s.route("DELETE", _POD)(self._delete_pod)

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> str:
        return self.server.start()

    def stop(self) -> None:
        self.server.stop()

    @property
    def base_url(self) -> str:
        return self.server.base_url

    # --- scripting -------------------------------------------------------------------------------
    def fail_next(self, method: str, pattern: str, kind: str, name: str = "gpubroker-x") -> None:
        self.server.inject(method, pattern, error_response(kind, name))

    def lose_next_create(self, namespace: str = NAMESPACE) -> None:
        self.server.lose_response("POST", f"/api/v1/namespaces/{namespace}/pods")

    def fill_nodes(self) -> None:
        """Someone else takes every free GPU: the cluster is full (the contract's "capacity" error)."""
        for name in self.nodes:
            free = self.free_gpus(name)
            if free > 0:
                pod = foreign_pod(f"filler-{name}", "other-team", name, free)
                self.pods[("other-team", pod["metadata"]["name"])] = pod

    def preempt(self, namespace: str, name: str, how: str = "evicted") -> None:
        """Disrupt a pod the way Kubernetes reports it (docs: "Pod disruption conditions")."""
        pod = self.pods[(namespace, name)]
        status = pod["status"]
        reason, condition_reason, message = {
            "evicted": ("Evicted", "TerminationByKubelet", "The node was low on resource: memory. "),
            "node-shutdown": (
                "Terminated",
                "TerminationByKubelet",
                "Pod was terminated in response to imminent node shutdown.",
            ),
            "kubelet-preempt": (
                "Preempting",
                "TerminationByKubelet",
                "Preempted in order to admit critical pod",
            ),
            "scheduler": ("", "PreemptionByScheduler", "higher-priority pod needs the node"),
            "drain": ("", "EvictionByEvictionAPI", "Eviction API: evicting"),
        }[how]
        status.setdefault("conditions", []).append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": condition_reason,
                "message": message,
                "lastTransitionTime": NOW,
            }
        )
        if how in ("scheduler", "drain"):  # the pod is deleted gracefully; the phase stays for now
            pod["metadata"]["deletionTimestamp"] = NOW
            pod["metadata"]["deletionGracePeriodSeconds"] = 30
            return
        status.update(phase="Failed", reason=reason, message=message)
        for container in status.get("containerStatuses", []):
            container["state"] = {
                "terminated": {"exitCode": 137, "reason": "Error", "startedAt": NOW, "finishedAt": NOW}
            }
            container["ready"] = False

    def set_phase(self, namespace: str, name: str, phase: str, **status: Any) -> None:
        self.pods[(namespace, name)]["status"].update(phase=phase, **status)

    def finish_deletions(self) -> None:
        """The kubelet confirms every graceful deletion: terminating pods leave the API."""
        for key in [k for k, p in self.pods.items() if p["metadata"].get("deletionTimestamp")]:
            del self.pods[key]

    # --- inspection ------------------------------------------------------------------------------
    def managed_pods(self, namespace: str = NAMESPACE) -> list[dict[str, Any]]:
        return [
            p
            for (ns, _), p in self.pods.items()
            if ns == namespace and p["metadata"].get("labels", {}).get("gpubroker-managed") == "true"
        ]

    def live_count(self, namespace: str = NAMESPACE) -> int:
        return sum(
            1
            for p in self.managed_pods(namespace)
            if not p["metadata"].get("deletionTimestamp")
            and p["status"].get("phase") not in ("Succeeded", "Failed")
        )

    def free_gpus(self, node_name: str) -> int:
        node = self.nodes[node_name]
        used = sum(
            _gpus(p)
            for p in self.pods.values()
            if p["spec"].get("nodeName") == node_name
            and p["status"].get("phase") not in ("Succeeded", "Failed")
        )
        return int(node["status"]["allocatable"].get(GPU, "0")) - used

    # --- scheduler -------------------------------------------------------------------------------
    def schedule(self) -> None:
        for pod in self.pods.values():
            if pod["spec"].get("nodeName") or pod["status"].get("phase") != "Pending":
                continue
            if pod["metadata"].get("deletionTimestamp"):
                continue
            wanted, fits, short, mismatched = _gpus(pod), [], 0, 0
            for name, node in self.nodes.items():
                if not _selects(pod, node) or not _tolerated(pod, node):
                    mismatched += 1
                elif self.free_gpus(name) < wanted or not _schedulable(node):
                    short += 1
                else:
                    fits.append(name)
            if fits:
                self._bind(pod, fits[0])
            else:
                message = (
                    f"0/{len(self.nodes)} nodes are available: {short} Insufficient nvidia.com/gpu, "
                    f"{mismatched} node(s) didn't match Pod's node affinity/selector. preemption: "
                    f"0/{len(self.nodes)} nodes are available: {short} No preemption victims found for "
                    f"incoming pod, {mismatched} Preemption is not helpful for scheduling."
                )
                pod["status"]["conditions"] = [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": message,
                        "lastTransitionTime": NOW,
                    }
                ]

    def _bind(self, pod: dict[str, Any], node: str) -> None:
        pod["spec"]["nodeName"] = node
        conditions = [
            {"type": kind, "status": "True", "lastTransitionTime": NOW}
            for kind in (
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            )
        ]
        containers = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": f"docker.io/{c['image']}@sha256:{'0' * 64}",
                "containerID": f"containerd://{uuid.uuid4().hex}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": NOW}},
                "lastState": {},
            }
            for c in pod["spec"]["containers"]
        ]
        pod["status"].update(
            phase="Running",
            conditions=conditions,
            containerStatuses=containers,
            hostIP="10.0.3.17",
            podIP="10.244.3.41",
            startTime=NOW,
        )

    # --- handlers --------------------------------------------------------------------------------
    def _authorized(self, request: FakeRequest) -> FakeResponse | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return FakeResponse(401, status_body(401, "Unauthorized", "Unauthorized"))
        if self.auto_schedule and request.method == "GET":
            self.schedule()
        return None

    def _list(self, kind: str, items: list[dict[str, Any]], request: FakeRequest) -> FakeResponse:
        limit = int(request.query.get("limit", ["0"])[0] or 0)
        token = request.query.get("continue", [""])[0]
        start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
        page = items[start : start + limit] if limit else items[start:]
        self._version += 1
        metadata: dict[str, Any] = {"resourceVersion": str(self._version)}
        if limit and start + limit < len(items):
            metadata["continue"] = base64.urlsafe_b64encode(str(start + limit).encode()).decode()
            metadata["remainingItemCount"] = len(items) - start - limit
        return FakeResponse(200, {"kind": kind, "apiVersion": "v1", "metadata": metadata, "items": page})

    def _selected(
        self, pods: list[dict[str, Any]], request: FakeRequest
    ) -> list[dict[str, Any]] | FakeResponse:
        labels = request.query.get("labelSelector", [""])[0]
        fields = request.query.get("fieldSelector", [""])[0]
        try:
            return [
                copy.deepcopy(p)
                for p in pods
                if (not labels or matches_labels(labels, p["metadata"].get("labels", {})))
                and (not fields or matches_fields(fields, p))
            ]
        except ValueError as exc:
            return FakeResponse(400, status_body(400, "BadRequest", f"Unable to find field selector: {exc}"))

    def _list_nodes(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        labels = request.query.get("labelSelector", [""])[0]
        nodes = [
            copy.deepcopy(n)
            for n in self.nodes.values()
            if not labels or matches_labels(labels, n["metadata"]["labels"])
        ]
        return self._list("NodeList", nodes, request)

    def _read_node(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        node = self.nodes.get(request.params["name"])
        if node is None:
            name = request.params["name"]
            return FakeResponse(
                404,
                status_body(404, "NotFound", f'nodes "{name}" not found', {"name": name, "kind": "nodes"}),
            )
        return FakeResponse(200, copy.deepcopy(node))

    def _list_all_pods(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        selected = self._selected(list(self.pods.values()), request)
        return selected if isinstance(selected, FakeResponse) else self._list("PodList", selected, request)

    def _list_pods(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        ns = request.params["ns"]
        selected = self._selected([p for (n, _), p in self.pods.items() if n == ns], request)
        return selected if isinstance(selected, FakeResponse) else self._list("PodList", selected, request)

    def _read_pod(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        pod = self.pods.get((request.params["ns"], request.params["name"]))
        return FakeResponse(200, copy.deepcopy(pod)) if pod else _not_found(request.params["name"])

    def _create_pod(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        ns, body = request.params["ns"], request.json()
        name = (body.get("metadata") or {}).get("name", "")
        if (
            not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name)
            or len(name) > 253
        ):
            return _invalid(name, "metadata.name", "Invalid value", "FieldValueInvalid")
        containers = (body.get("spec") or {}).get("containers") or []
        if not containers:
            return _invalid(name, "spec.containers", "Required value", "FieldValueRequired")
        for i, container in enumerate(containers):
            if not container.get("image"):
                return _invalid(name, f"spec.containers[{i}].image", "Required value", "FieldValueRequired")
        if (ns, name) in self.pods:
            return FakeResponse(
                409,
                status_body(
                    409, "AlreadyExists", f'pods "{name}" already exists', {"name": name, "kind": "pods"}
                ),
            )
        self._version += 1
        body["metadata"].update(
            namespace=ns, uid=str(uuid.uuid4()), resourceVersion=str(self._version), creationTimestamp=NOW
        )
        body["spec"].setdefault("restartPolicy", "Always")
        body["spec"].setdefault("schedulerName", "default-scheduler")
        body["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        self.pods[(ns, name)] = body
        return FakeResponse(201, copy.deepcopy(body))

    def _delete_pod(self, request: FakeRequest) -> FakeResponse:
        if denied := self._authorized(request):
            return denied
        key = (request.params["ns"], request.params["name"])
        pod = self.pods.get(key)
        if pod is None:
            return _not_found(request.params["name"])
        # registry/core/pod strategy: an unscheduled or terminal pod goes at once; a running one
        # gets deletionTimestamp and leaves when the kubelet has stopped it.
        if not pod["spec"].get("nodeName") or pod["status"].get("phase") in ("Succeeded", "Failed"):
            del self.pods[key]
        else:
            pod["metadata"].setdefault("deletionTimestamp", NOW)
            pod["metadata"].setdefault("deletionGracePeriodSeconds", 30)
        return FakeResponse(200, copy.deepcopy(pod))


def _gpus(pod: dict[str, Any]) -> int:
    total = 0
    for container in pod["spec"].get("containers", []):
        resources = container.get("resources") or {}
        total += int((resources.get("requests") or resources.get("limits") or {}).get(GPU, 0))
    return total


def _selects(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = node["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in (pod["spec"].get("nodeSelector") or {}).items()):
        return False
    required = ((pod["spec"].get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    for term in terms:  # terms are ORed, expressions ANDed
        ok = True
        for expr in term.get("matchExpressions") or []:
            value, values = labels.get(expr["key"]), set(expr.get("values") or [])
            op = expr["operator"]
            ok &= {
                "In": value in values,
                "NotIn": value not in values,
                "Exists": value is not None,
                "DoesNotExist": value is None,
            }[op]
        if ok:
            return True
    return False


def _tolerated(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    tolerations = pod["spec"].get("tolerations") or []
    for taint in node["spec"].get("taints") or []:
        if taint["effect"] not in ("NoSchedule", "NoExecute"):
            continue
        if not any(
            t.get("key") in (None, "", taint["key"])
            and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
            and t.get("effect") in (None, "", taint["effect"])
            for t in tolerations
        ):
            return False
    return True


def _schedulable(node: dict[str, Any]) -> bool:
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    return ready and not node["spec"].get("unschedulable")


def _not_found(name: str) -> FakeResponse:
    return FakeResponse(
        404, status_body(404, "NotFound", f'pods "{name}" not found', {"name": name, "kind": "pods"})
    )


def _invalid(name: str, field: str, message: str, reason: str) -> FakeResponse:
    return FakeResponse(
        422,
        status_body(
            422,
            "Invalid",
            f'Pod "{name}" is invalid: {field}: {message}',
            {"name": name, "kind": "Pod", "causes": [{"reason": reason, "message": message, "field": field}]},
        ),
    )
