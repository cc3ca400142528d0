"""Kubernetes (CoreWeave-style GPU cluster) adapter against a faithful local fake API server (no network)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from broker.core.errors import (
    AuthError,
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
    ProviderError,
    QuotaExceeded,
    Transient,
)
from broker.core.ports import InstanceState, LaunchRequest
from broker.core.types import Availability, CapacityType
from providers.kubernetes import (
    PHASE_STATES,
    STATUS_REASONS,
    KubernetesProvider,
    PreemptiblePool,
    accelerator_for,
    error_from_api,
    from_environment,
    parse_instance_type,
)
from tests.providers.contract import ProviderContract
from tests.providers.fakes.http import FakeResponse
from tests.providers.fakes.kubernetes import NAMESPACE, TOKEN, FakeKubernetes, foreign_pod, status_body

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CLUSTER = "coreweave-ord1"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
PRICES = {
    "H100_NVLINK_80GB": Decimal("4.76"),
    "A100_NVLINK_80GB": Decimal("2.21"),
    "NVIDIA-L40S": Decimal("1.25"),
}
POOL = PreemptiblePool(
    prices={"H100_NVLINK_80GB": Decimal("2.40")},
    node_selector={"karpenter.sh/capacity-type": "spot"},
    priority_class="gpubroker-preemptible",
)
H100X8 = "H100_NVLINK_80GB-x8"


def configuration(fake: FakeKubernetes, token: str = TOKEN) -> k8s.Configuration:
    return k8s.Configuration(
        host=fake.base_url, api_key={"BearerToken": token}, api_key_prefix={"BearerToken": "Bearer"}
    )


def make_provider(fake: FakeKubernetes, token: str = TOKEN, **kwargs: object) -> KubernetesProvider:
    options: dict[str, object] = {
        "prices": PRICES,
        "cluster": CLUSTER,
        "preemptible": POOL,
        "clock": lambda: NOW,
        "request_timeout": 5.0,
    }
    options.update(kwargs)
    return KubernetesProvider(configuration(fake, token), **options)  # type: ignore[arg-type]


def req(instance_id: str, itype: str = H100X8, capacity: CapacityType = CapacityType.ON_DEMAND, **kw: object):
    return LaunchRequest(instance_id, itype, CLUSTER, capacity, **kw)  # type: ignore[arg-type]


@dataclass
class KubernetesHarness:
    fake: FakeKubernetes
    provider: KubernetesProvider
    launch_errors: frozenset[str] = field(
        default=frozenset({"capacity", "quota", "auth", "invalid", "throttle", "server"})
    )

    def request(self, instance_id: str, capacity: CapacityType = CapacityType.ON_DEMAND) -> LaunchRequest:
        return req(instance_id, capacity=capacity)

    def fail_next(self, operation: str, kind: str) -> None:
        if operation == "launch" and kind == "capacity":
            self.fake.fill_nodes()  # Kubernetes has no capacity error: the nodes are simply full
        elif operation == "launch":
            self.fake.fail_next("POST", PODS, kind)
        else:
            self.fake.fail_next("GET", "/api/v1/nodes", kind)

    def lose_next_launch_response(self) -> None:
        self.fake.lose_next_create()

    def preempt(self, request: LaunchRequest) -> None:
        self.fake.schedule()
        self.fake.preempt(NAMESPACE, request.name, "evicted")

    def live_instance_count(self) -> int:
        return self.fake.live_count()


@pytest.fixture
def fake() -> Iterator[FakeKubernetes]:
    server = FakeKubernetes()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def provider(fake: FakeKubernetes) -> Iterator[KubernetesProvider]:
    adapter = make_provider(fake)
    yield adapter
    adapter.close()


@pytest.fixture
def harness(fake: FakeKubernetes, provider: KubernetesProvider) -> KubernetesHarness:
    return KubernetesHarness(fake, provider)


class TestContract(ProviderContract):
    pass


# --- offers -----------------------------------------------------------------------------------
def test_offers_are_contract_priced_per_product_zone_count_and_capacity(
    provider: KubernetesProvider, caplog: pytest.LogCaptureFixture
) -> None:
    offers = provider.list_offers()
    by_key = {(o.instance_type, o.capacity_type): o for o in offers}
    assert len(offers) == 15  # H100 on-demand 4 + spot 4, A100 4, L40S 3; RTX_A5000 has no price
    assert not any("MIG" in o.instance_type for o in offers)  # MIG slices are not whole GPUs
    h100 = by_key[H100X8, CapacityType.ON_DEMAND]
    assert (h100.accelerator, h100.accelerator_count, h100.price_per_hour) == ("H100", 8, Decimal("38.08"))
    assert (h100.cloud, h100.region, h100.zone, h100.currency) == (
        "kubernetes",
        CLUSTER,
        "US-EAST-04A",
        "USD",
    )
    assert (h100.source, h100.observed_at, h100.vcpus) == ("kubernetes:contract-prices", NOW, None)
    assert h100.availability is Availability.AVAILABLE  # two free nodes; the cordoned one counts nothing
    assert by_key["H100_NVLINK_80GB-x1", CapacityType.ON_DEMAND].price_per_hour == Decimal("4.76")
    spot = by_key[H100X8, CapacityType.SPOT]
    assert (spot.price_per_hour, spot.availability) == (Decimal("19.20"), Availability.LIMITED)
    a100 = {o.accelerator_count: o for o in offers if o.instance_type.startswith("A100")}
    assert {n: o.availability for n, o in a100.items()} == {  # 6 of 8 held by another team's pod
        1: Availability.AVAILABLE,
        2: Availability.LIMITED,
        4: Availability.UNAVAILABLE,
        8: Availability.UNAVAILABLE,
    }
    assert a100[8].accelerator == "A100-80GB" and a100[8].zone == "US-EAST-04B"
    l40s = by_key["NVIDIA-L40S-x4", CapacityType.ON_DEMAND]  # GFD-only node, no zone label
    assert (l40s.accelerator, l40s.zone, l40s.price_per_hour) == ("L40S", None, Decimal("5.00"))
    assert l40s.availability is Availability.LIMITED
    provider.list_offers()
    assert caplog.text.count("'RTX_A5000'") == 1  # skipped and logged once
    assert provider.capabilities.live_prices is False


def test_offers_for_another_region_are_empty(fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    assert provider.list_offers(regions=["us-east-1"]) == []
    assert fake.server.requests == []
    assert provider.list_offers(regions=[CLUSTER])


def test_offers_follow_continue_pages(fake: FakeKubernetes) -> None:
    adapter = make_provider(fake, page_size=3)
    offers = adapter.list_offers()
    assert len(offers) == 15
    pages = fake.server.calls("GET", "/api/v1/nodes")
    assert [c.query.get("limit") for c in pages] == [["3"]] * 3  # 9 nodes in pages of 3
    assert "continue" not in pages[0].query and pages[1].query["continue"]


def test_availability_is_unknown_when_rbac_hides_other_namespaces(
    fake: FakeKubernetes, provider: KubernetesProvider
) -> None:
    fake.fail_next("GET", "/api/v1/pods", "forbidden")
    offers = provider.list_offers()
    assert offers and {o.availability for o in offers} == {Availability.UNKNOWN}


@pytest.mark.parametrize(
    ("product", "accelerator"),
    [
        ("H100_NVLINK_80GB", "H100"),
        ("H100_PCIE", "H100"),
        ("A100_NVLINK_80GB", "A100-80GB"),
        ("A100_NVLINK", "A100"),
        ("A100_PCIE_40GB", "A100"),
        ("RTX_A6000", "A6000"),
        ("Tesla_V100_NVLINK", "V100"),
        ("Quadro_RTX_5000", "RTX5000"),
        ("L40S", "L40S"),
        ("NVIDIA-H100-80GB-HBM3", "H100"),
        ("NVIDIA-A100-SXM4-80GB", "A100-80GB"),
        ("A100-SXM4-40GB", "A100"),
        ("NVIDIA-L40S", "L40S"),
        ("Tesla-T4", "T4"),
        ("NVIDIA-H200-141GB-HBM3e", "H200"),  # not in the table: the model word
        ("NVIDIA-GH200-480GB", "GH200"),
    ],
)
def test_product_labels_map_to_canonical_accelerators(product: str, accelerator: str) -> None:
    assert accelerator_for(product) == accelerator


def test_instance_type_names() -> None:
    assert parse_instance_type(H100X8) == ("H100_NVLINK_80GB", 8)
    assert parse_instance_type("NVIDIA-L40S-x4") == ("NVIDIA-L40S", 4)
    assert parse_instance_type("H100_NVLINK_80GB") is None
    assert parse_instance_type("H100-x0") is None


# --- launch -----------------------------------------------------------------------------------
def test_launch_creates_the_documented_pod(fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    labels = {"team": "ml", "Cost Center": "a/b c", "kubernetes.io/role": "x", "gpubroker-managed": "no"}
    instance = provider.launch(req("job-abc-1", labels=labels, ssh_public_key="ssh-ed25519 AAAA user\n"))
    calls = [(r.method, r.path) for r in fake.server.requests]
    assert calls == [
        ("GET", f"{PODS}/gpubroker-job-abc-1"),  # lookup first: 404
        ("GET", "/api/v1/nodes"),
        ("GET", "/api/v1/pods"),
        ("POST", PODS),
    ]
    assert fake.server.requests[2].query["fieldSelector"] == ["status.phase!=Succeeded,status.phase!=Failed"]
    (sent,) = fake.server.calls("POST", PODS)
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    body = sent.json()
    assert body["metadata"] == {
        "name": "gpubroker-job-abc-1",
        "namespace": NAMESPACE,
        "labels": {
            "Cost-Center": "a-b-c",
            "team": "ml",
            "gpubroker-managed": "true",
            "gpubroker-instance-id": "job-abc-1",
            "gpubroker-capacity-type": "on-demand",
        },
        "annotations": {"gpubroker/instance-type": H100X8},
    }
    spec = body["spec"]
    assert spec["nodeSelector"] == {"gpu.nvidia.com/class": "H100_NVLINK_80GB"}
    assert spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [
            {
                "matchExpressions": [
                    {"key": "karpenter.sh/capacity-type", "operator": "NotIn", "values": ["spot"]}
                ]
            }
        ]
    }
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert (spec["restartPolicy"], spec["terminationGracePeriodSeconds"]) == ("Never", 30)
    assert "priorityClassName" not in spec
    (container,) = spec["containers"]
    assert container["image"] == "nvidia/cuda:12.4.1-base-ubuntu22.04"
    assert container["command"] == ["sleep", "infinity"]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "8"}}
    assert {"name": "GPUBROKER_SSH_PUBLIC_KEY", "value": "ssh-ed25519 AAAA user"} in container["env"]
    assert instance.state is InstanceState.PENDING  # the create answer: not yet scheduled
    assert (instance.instance_id, instance.instance_type, instance.price_per_hour) == (
        "job-abc-1",
        H100X8,
        Decimal("38.08"),
    )
    assert instance.launched_at == NOW
    assert provider.get_instance("job-abc-1", region=CLUSTER).state is InstanceState.RUNNING  # type: ignore[union-attr]


def test_spot_launch_goes_to_the_preemptible_pool(fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    instance = provider.launch(req("job-spot-1", capacity=CapacityType.SPOT))
    spec = fake.server.calls("POST", PODS)[0].json()["spec"]
    assert spec["nodeSelector"] == {
        "gpu.nvidia.com/class": "H100_NVLINK_80GB",
        "karpenter.sh/capacity-type": "spot",
    }
    assert spec["priorityClassName"] == "gpubroker-preemptible" and "affinity" not in spec
    assert instance.capacity_type is CapacityType.SPOT and instance.price_per_hour == Decimal("19.20")
    got = provider.get_instance("job-spot-1", region=CLUSTER)
    assert got is not None and got.zone == "US-EAST-04A" and got.state is InstanceState.RUNNING
    assert fake.pods[NAMESPACE, "gpubroker-job-spot-1"]["spec"]["nodeName"] == "g8h100-spot1"


def test_launch_with_image_and_zone(fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    image = "nvcr.io/nvidia/pytorch:24.10-py3"
    provider.launch(req("job-img-1", "A100_NVLINK_80GB-x2", image=image, zone="US-EAST-04B"))
    spec = fake.server.calls("POST", PODS)[0].json()["spec"]
    assert spec["containers"][0]["image"] == image and "command" not in spec["containers"][0]
    assert spec["nodeSelector"] == {
        "gpu.nvidia.com/class": "A100_NVLINK_80GB",
        "topology.kubernetes.io/zone": "US-EAST-04B",
    }


def test_relaunch_finds_the_pod_and_creates_nothing(
    fake: FakeKubernetes, provider: KubernetesProvider
) -> None:
    first = provider.launch(req("job-once-1"))
    again = provider.launch(req("job-once-1"))
    assert again.provider_instance_id == first.provider_instance_id
    assert again.state is InstanceState.RUNNING
    assert len(fake.server.calls("POST", PODS)) == 1


def test_already_exists_returns_the_existing_pod(fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    winner = provider.launch(req("job-race-1"))
    # A concurrent launch of the same id: its lookup saw nothing, its create meets the winner's name.
    not_found = FakeResponse(404, status_body(404, "NotFound", 'pods "gpubroker-job-race-1" not found'))
    fake.server.inject("GET", f"{PODS}/gpubroker-job-race-1", not_found)
    loser = provider.launch(req("job-race-1"))
    assert loser.provider_instance_id == winner.provider_instance_id
    assert loser.state is InstanceState.RUNNING
    assert [r.json()["metadata"]["name"] for r in fake.server.calls("POST", PODS)] == [
        "gpubroker-job-race-1"
    ] * 2
    assert fake.live_count() == 1


@pytest.mark.parametrize(
    ("itype", "capacity", "code"),
    [
        ("RTX_A5000-x4", CapacityType.ON_DEMAND, "unknown-instance-type"),  # no contract price
        ("H100_NVLINK_80GB-x16", CapacityType.ON_DEMAND, "unknown-instance-type"),  # no 16-GPU node
        ("NVIDIA-L40S-x1", CapacityType.SPOT, "unknown-instance-type"),  # no spot price for it
        ("h100", CapacityType.ON_DEMAND, "unknown-instance-type"),
        (H100X8, CapacityType.RESERVED, "unsupported-capacity-type"),
    ],
)
def test_bad_launches_are_refused_without_a_pod(
    fake: FakeKubernetes, provider: KubernetesProvider, itype: str, capacity: CapacityType, code: str
) -> None:
    extra = {"reservation_id": "cw-contract-1"} if capacity is CapacityType.RESERVED else {}
    with pytest.raises(InvalidRequest) as raised:
        provider.launch(req("job-bad-1", itype, capacity, **extra))
    assert raised.value.code == code
    assert fake.server.calls("POST", PODS) == []


def test_full_nodes_are_insufficient_capacity_before_any_pod(
    fake: FakeKubernetes, provider: KubernetesProvider
) -> None:
    with pytest.raises(InsufficientCapacity) as raised:
        provider.launch(req("job-full-1", "A100_NVLINK_80GB-x4"))  # 2 of 8 free
    assert (raised.value.code, raised.value.region) == ("Insufficient nvidia.com/gpu", CLUSTER)
    assert fake.server.calls("POST", PODS) == []


def test_unschedulable_pod_is_pending_with_the_schedulers_reason(
    fake: FakeKubernetes, provider: KubernetesProvider
) -> None:
    fake.fail_next("GET", "/api/v1/pods", "forbidden")  # usage hidden: no pre-check possible
    launched = provider.launch(req("job-wait-1", "A100_NVLINK_80GB-x8"))
    got = provider.get_instance("job-wait-1", region=CLUSTER)
    assert launched.state is InstanceState.PENDING and got is not None
    assert got.state is InstanceState.PENDING
    assert got.state_reason and got.state_reason.startswith("Unschedulable: 0/9 nodes are available: ")
    assert "Insufficient nvidia.com/gpu" in got.state_reason


def test_capabilities_say_what_the_configuration_allows(
    fake: FakeKubernetes, provider: KubernetesProvider
) -> None:
    caps = provider.capabilities
    assert (
        caps.capacity_types == frozenset({CapacityType.ON_DEMAND, CapacityType.SPOT})
        and not caps.reservations
    )
    assert (caps.interruption_notice_seconds, caps.live_prices, caps.availability_signal) == (
        None,
        False,
        True,
    )
    assert caps.regions == (CLUSTER,) and caps.launch_idempotency.value == "unique-name"
    plain = make_provider(fake, preemptible=None).capabilities
    assert plain.capacity_types == frozenset({CapacityType.ON_DEMAND}) and not plain.spot
    noticed = PreemptiblePool(prices={}, priority_class="low", notice_seconds=30)
    assert make_provider(fake, preemptible=noticed).capabilities.interruption_notice_seconds == 30
    with pytest.raises(ValueError):
        make_provider(fake, contract=CapacityType.SPOT)


def test_a_priority_only_pool_sells_every_node_as_spot_too(fake: FakeKubernetes) -> None:
    pool = PreemptiblePool(prices={"NVIDIA-L40S": Decimal("0.60")}, priority_class="gpubroker-preemptible")
    adapter = make_provider(fake, preemptible=pool)
    spot = [o for o in adapter.list_offers() if o.capacity_type is CapacityType.SPOT]
    assert [o.instance_type for o in spot] == ["NVIDIA-L40S-x1", "NVIDIA-L40S-x2", "NVIDIA-L40S-x4"]
    adapter.launch(req("job-low-1", "NVIDIA-L40S-x1", CapacityType.SPOT))
    adapter.launch(req("job-od-1", "NVIDIA-L40S-x1"))
    spot_spec, contract_spec = (c.json()["spec"] for c in fake.server.calls("POST", PODS))
    assert spot_spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L40S"}
    assert spot_spec["priorityClassName"] == "gpubroker-preemptible"
    assert "affinity" not in contract_spec and "priorityClassName" not in contract_spec


def test_reserved_contract(fake: FakeKubernetes) -> None:
    adapter = make_provider(fake, contract=CapacityType.RESERVED, preemptible=None)
    caps = adapter.capabilities
    assert caps.capacity_types == frozenset({CapacityType.RESERVED}) and caps.reservations and not caps.spot
    assert caps.interruption_notice_seconds is None
    assert {o.capacity_type for o in adapter.list_offers()} == {CapacityType.RESERVED}
    instance = adapter.launch(
        req("job-res-1", capacity=CapacityType.RESERVED, reservation_id="CW Contract #7")
    )
    labels = fake.server.calls("POST", PODS)[0].json()["metadata"]["labels"]
    assert labels["gpubroker-reservation-id"] == "CW-Contract-7"
    assert instance.capacity_type is CapacityType.RESERVED
    assert "affinity" not in fake.server.calls("POST", PODS)[0].json()["spec"]


# --- states -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("script", "state", "reason"),
    [
        ("pending", InstanceState.PENDING, None),
        ("running", InstanceState.RUNNING, None),
        ("succeeded", InstanceState.TERMINATED, "Completed (exit 0)"),
        ("oom", InstanceState.FAILED, "OOMKilled (exit 137)"),
        ("unknown", InstanceState.UNKNOWN, None),
        ("evicted", InstanceState.PREEMPTED, "Evicted: The node was low on resource: memory."),
        ("node-shutdown", InstanceState.PREEMPTED, "TerminationByKubelet: Pod was terminated in response"),
        ("kubelet-preempt", InstanceState.PREEMPTED, "Preempting: Preempted in order to admit critical pod"),
        ("scheduler", InstanceState.PREEMPTED, "PreemptionByScheduler: "),
        ("drain", InstanceState.PREEMPTED, "EvictionByEvictionAPI: "),
        ("deleting", InstanceState.STOPPING, "deletionTimestamp set"),
        ("disruption-called-off", InstanceState.RUNNING, None),
        ("image-pull", InstanceState.PENDING, "ImagePullBackOff: Back-off pulling image"),
    ],
)
def test_pod_state_table(
    fake: FakeKubernetes, provider: KubernetesProvider, script: str, state: InstanceState, reason: str | None
) -> None:
    provider.launch(req("job-state-1", "NVIDIA-L40S-x1"))
    key = (NAMESPACE, "gpubroker-job-state-1")
    pod = fake.pods[key]
    fake.auto_schedule = False
    if script not in ("pending", "image-pull"):
        fake.schedule()
    terminated = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "x", "finishedAt": "x"}}
    if script == "succeeded":
        fake.set_phase(*key, "Succeeded", containerStatuses=[{"name": "main", "state": terminated}])
    elif script == "oom":
        oom = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
        fake.set_phase(*key, "Failed", containerStatuses=[{"name": "main", "state": oom}])
    elif script == "unknown":
        fake.set_phase(*key, "Unknown")
    elif script in ("evicted", "node-shutdown", "kubelet-preempt", "scheduler", "drain"):
        fake.preempt(*key, script)
    elif script == "deleting":
        provider.terminate("job-state-1", region=CLUSTER)
    elif script == "disruption-called-off":  # the condition stays, the pod was never deleted
        pod["status"]["conditions"].append(
            {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
        )
    elif script == "image-pull":
        waiting = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}
        pod["spec"]["nodeName"] = "gfd-l40s-1"
        pod["status"] = {"phase": "Pending", "containerStatuses": [{"name": "main", "state": waiting}]}
    got = provider.get_instance("job-state-1", region=CLUSTER)
    assert got is not None and got.state is state
    assert (got.state_reason or "").startswith(reason or "") and (reason is not None) == (
        got.state_reason is not None
    )


def test_every_pod_phase_is_in_the_table() -> None:
    assert set(PHASE_STATES) == {"Pending", "Running", "Succeeded", "Failed", "Unknown"}


def test_list_instances_returns_ours_with_zones(fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    provider.launch(req("job-list-1"))
    provider.launch(req("job-list-2", "NVIDIA-L40S-x2"))
    stranger = foreign_pod("gpubroker-not-ours", NAMESPACE, "g8h100-a2", 1)  # our prefix, not our label
    fake.pods[NAMESPACE, "gpubroker-not-ours"] = stranger
    listed = {i.instance_id: i for i in provider.list_instances()}
    assert set(listed) == {"job-list-1", "job-list-2"}
    assert fake.server.calls("GET", PODS)[-1].query["labelSelector"] == ["gpubroker-managed=true"]
    assert (listed["job-list-1"].zone, listed["job-list-2"].zone) == ("US-EAST-04A", None)
    assert provider.list_instances(regions=["elsewhere"]) == []
    assert provider.get_instance("not-ours", region=CLUSTER) is None
    assert provider.get_instance("job-list-1", region="elsewhere") is None


def test_terminate_deletes_once_and_gone_is_done(fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    provider.launch(req("job-term-1"))
    provider.get_instance("job-term-1", region=CLUSTER)  # scheduled: deletion is graceful
    provider.terminate("job-term-1", region=CLUSTER)
    assert fake.server.calls("DELETE", f"{PODS}/gpubroker-job-term-1")
    assert provider.get_instance("job-term-1", region=CLUSTER).state is InstanceState.STOPPING  # type: ignore[union-attr]
    fake.finish_deletions()
    assert provider.get_instance("job-term-1", region=CLUSTER) is None
    provider.terminate("job-term-1", region=CLUSTER)  # 404: done


# --- errors -----------------------------------------------------------------------------------
def _api_exception(status: int, body: object, headers: dict[str, str] | None = None) -> ApiException:
    exc = ApiException(status=status, reason="r")
    exc.body = json.dumps(body) if isinstance(body, dict) else body  # type: ignore[assignment]
    exc.headers = headers or {}  # type: ignore[assignment]
    return exc


@pytest.mark.parametrize(
    ("status", "reason", "message", "kind"),
    [
        (401, "Unauthorized", "Unauthorized", AuthError),
        (403, "Forbidden", 'pods is forbidden: User "u" cannot create resource "pods"', AuthError),
        (403, "Forbidden", 'pods "p" is forbidden: exceeded quota: gpu-quota, requested: …', QuotaExceeded),
        (404, "NotFound", 'pods "p" not found', NotFound),
        (409, "AlreadyExists", 'pods "p" already exists', InvalidRequest),
        (409, "Conflict", "the object has been modified", Transient),
        (410, "Expired", "The provided continue parameter is too old", Transient),
        (422, "Invalid", 'Pod "p" is invalid: spec.containers[0].image: Required value', InvalidRequest),
        (400, "BadRequest", "bad", InvalidRequest),
        (429, "TooManyRequests", "Too many requests", Transient),
        (500, "InternalError", "Internal error occurred: etcdserver: leader changed", Transient),
        (500, "ServerTimeout", "The list operation could not be completed at this time", Transient),
        (503, "ServiceUnavailable", "the server is currently unable to handle the request", Transient),
        (504, "Timeout", "Timeout: request did not complete within requested timeout", Transient),
        (418, "SomethingNew", "teapot", InvalidRequest),
        (502, "SomethingNew", "bad gateway", Transient),
    ],
)
def test_status_reason_table(status: int, reason: str, message: str, kind: type[ProviderError]) -> None:
    error = error_from_api(_api_exception(status, status_body(status, reason, message)), region=CLUSTER)
    assert type(error) is kind
    assert (error.provider, error.region, error.code, error.message) == (
        "kubernetes",
        CLUSTER,
        reason,
        message,
    )


def test_every_documented_status_reason_is_in_the_table() -> None:
    documented = {  # metav1.StatusReason* that an API call can answer with
        "Unauthorized", "Forbidden", "NotFound", "AlreadyExists", "Conflict", "Gone", "Invalid",
        "ServerTimeout", "Timeout", "TooManyRequests", "BadRequest", "MethodNotAllowed", "NotAcceptable",
        "RequestEntityTooLarge", "UnsupportedMediaType", "InternalError", "Expired", "ServiceUnavailable",
    }  # fmt: skip
    assert documented <= set(STATUS_REASONS)


def test_retry_after_from_header_or_status_details() -> None:
    plain = _api_exception(429, "Too many requests, please try again later.\n", {"Retry-After": "1"})
    error = error_from_api(plain)
    assert isinstance(error, Transient) and (error.retry_after, error.code) == (1.0, "429")
    hinted = error_from_api(
        _api_exception(429, status_body(429, "TooManyRequests", "m", {"retryAfterSeconds": 3}))
    )
    assert isinstance(hinted, Transient) and hinted.retry_after == 3.0
    assert isinstance(error_from_api(ApiException(status=0, reason="SSLError")), Transient)


@pytest.mark.parametrize(
    ("kind", "code"), [("throttle", "429"), ("timeout", "Timeout"), ("unavailable", "ServiceUnavailable")]
)
def test_throttling_and_server_errors_through_the_client(
    fake: FakeKubernetes, provider: KubernetesProvider, kind: str, code: str
) -> None:
    fake.fail_next("GET", "/api/v1/nodes", kind)
    with pytest.raises(Transient) as raised:
        provider.list_offers()
    assert raised.value.code == code
    assert raised.value.retry_after == (1.0 if kind == "throttle" else None)
    assert len(fake.server.calls("GET", "/api/v1/nodes")) == 1  # no client-side retry


def test_the_client_makes_a_single_attempt(fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    fake.server.lose_response("GET", "/api/v1/nodes", times=5)
    with pytest.raises(Transient) as raised:
        provider.list_offers()
    assert raised.value.code == "transport"
    assert len(fake.server.calls("GET", "/api/v1/nodes")) == 1  # urllib3 would retry a GET 3 times
    assert provider._core().api_client.configuration.retries == 0


def test_connection_refused_and_garbage_are_transient(fake: FakeKubernetes) -> None:
    adapter = make_provider(fake)
    fake.server.inject("GET", "/api/v1/nodes", FakeResponse(200, b"<html>gateway</html>"))
    with pytest.raises(Transient) as raised:
        adapter.list_offers()
    assert raised.value.code == "bad-response"
    fresh = make_provider(fake)
    fake.stop()
    with pytest.raises(Transient) as raised:
        fresh.list_instances()  # a new connection to a closed port
    assert raised.value.code == "transport"


def test_credentials_never_appear_in_logs_errors_or_repr(
    fake: FakeKubernetes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = make_provider(fake)
    adapter.launch(req("job-log-1"))
    errors: list[ProviderError] = []
    with pytest.raises(AuthError) as denied:
        make_provider(fake, token="wrong-token").list_instances()
    errors.append(denied.value)
    for kind in ("server", "throttle", "quota"):
        fake.fail_next("POST", PODS, kind)
        with pytest.raises(ProviderError) as raised:
            adapter.launch(req(f"job-log-{kind}"))
        errors.append(raised.value)
    fresh = make_provider(fake)
    fake.stop()
    with pytest.raises(Transient) as raised:
        fresh.list_instances()
    errors.append(raised.value)
    text = caplog.text + "".join(f"{e!s}{e!r}" for e in errors) + repr(adapter)
    assert TOKEN not in text and "kube-sa-token" not in text


def test_check(fake: FakeKubernetes, provider: KubernetesProvider) -> None:
    assert (provider.check().configured, provider.check().reachable) == (True, True)
    wrong = make_provider(fake, token="not-the-token").check()
    assert (wrong.configured, wrong.reachable) == (False, True) and "not-the-token" not in wrong.detail

    def broken() -> k8s.Configuration:
        raise OSError("no such file: /nowhere/config")

    unloadable = KubernetesProvider(broken, prices=PRICES, cluster=CLUSTER).check()
    assert (unloadable.configured, unloadable.reachable) == (False, False)
    fresh = make_provider(fake)
    fake.stop()
    down = fresh.check()
    assert (down.configured, down.reachable) == (True, False)


# --- from_environment ------------------------------------------------------------------------------
def _kubeconfig(path: Path, server: str, user: dict[str, object]) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "cw-ord1",
        "clusters": [{"name": "ord1", "cluster": {"server": server}}],
        "users": [{"name": "broker", "user": user}],
        "contexts": [{"name": "cw-ord1", "context": {"cluster": "ord1", "user": "broker", "namespace": "x"}}],
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def test_from_environment_is_lazy_and_uses_the_kubeconfig(fake: FakeKubernetes, tmp_path: Path) -> None:
    assert from_environment({}) is None
    assert from_environment({"KUBECONFIG": "/x"}) is None  # no prices: not configured
    marker = tmp_path / "exec-ran"
    exec_user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "sh",
                          "args": ["-c", f"touch {marker}; exit 1"], "interactiveMode": "Never"}}  # fmt: skip
    lazy = _kubeconfig(tmp_path / "exec.yaml", fake.base_url, exec_user)
    env = {"GPUBROKER_KUBE_PRICES": '{"H100_NVLINK_80GB": 4.76}', "KUBECONFIG": str(lazy)}
    adapter = from_environment(env)
    assert adapter is not None and not marker.exists() and fake.server.requests == []  # nothing ran
    assert adapter.capabilities.regions == ("cw-ord1",)  # the context name
    assert adapter.check().configured is False  # the plugin runs (and fails) on first use only
    assert marker.exists()
    prices = tmp_path / "contract.json"
    prices.write_text('{"H100_NVLINK_80GB": "4.76", "NVIDIA-L40S": 1.25}')
    token = _kubeconfig(tmp_path / "token.yaml", fake.base_url, {"token": TOKEN})
    env = {
        "GPUBROKER_KUBE_PRICES": str(prices),
        "KUBECONFIG": str(token),
        "GPUBROKER_KUBE_CLUSTER": CLUSTER,
        "GPUBROKER_KUBE_NAMESPACE": NAMESPACE,
        "GPUBROKER_KUBE_SPOT_PRICES": '{"H100_NVLINK_80GB": 2.40}',
        "GPUBROKER_KUBE_SPOT_SELECTOR": "karpenter.sh/capacity-type=spot",
        "GPUBROKER_KUBE_SPOT_NOTICE_SECONDS": "30",
    }
    adapter = from_environment(env)
    assert adapter is not None and adapter.check().reachable and adapter.capabilities.spot
    assert adapter.capabilities.interruption_notice_seconds == 30
    offers = {(o.instance_type, o.capacity_type): o for o in adapter.list_offers()}
    assert offers["NVIDIA-L40S-x1", CapacityType.ON_DEMAND].price_per_hour == Decimal("1.25")
    assert offers[H100X8, CapacityType.SPOT].price_per_hour == Decimal("19.20")


def test_from_environment_in_cluster_and_misconfiguration(tmp_path: Path) -> None:
    base = {"GPUBROKER_KUBE_PRICES": '{"L40S": 1}', "HOME": str(tmp_path)}
    with pytest.raises(ValueError, match="no kubeconfig"):
        from_environment(base)
    in_cluster = from_environment(
        {**base, "KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    )
    assert in_cluster is not None and in_cluster.capabilities.regions == ("in-cluster",)
    assert not in_cluster.capabilities.spot
    if not os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"):
        assert in_cluster.check().configured is False  # no service-account token here
    with pytest.raises(ValueError):
        from_environment({**base, "GPUBROKER_KUBE_PRICES": "[1, 2]"})
    for bad in ('{"L40S": -1}', '{"L40S": "cheap"}', '{"L40S": null}', "{}"):
        with pytest.raises(ValueError):
            from_environment({**base, "GPUBROKER_KUBE_PRICES": bad})
    with pytest.raises(OSError):  # a path that is not there: the registry reports it as misconfigured
        from_environment({**base, "GPUBROKER_KUBE_PRICES": str(tmp_path / "missing.json")})
