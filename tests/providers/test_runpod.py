"""RunPod adapter against a local fake of its GraphQL API that checks every query against the schema."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

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
from providers.runpod import POD_STATES, RunPodProvider, accelerator_name, from_environment, pod_state
from tests.providers.contract import ProviderContract
from tests.providers.fakes.http import FakeResponse
from tests.providers.fakes.runpod import API_KEY, CAPACITY_MESSAGE, FakeRunPod, error_body

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
H100 = "NVIDIA H100 80GB HBM3"
MUTATIONS = ("podFindAndDeployOnDemand", "podRentInterruptable")
NOT_ENOUGH_GPUS = "There are not enough free GPUs on the host machine to start this pod"
WENT_WRONG = "Something went wrong. Please try again later or contact support."


@dataclass
class RunPodHarness:
    fake: FakeRunPod
    provider: RunPodProvider
    launch_errors: frozenset[str] = field(
        default=frozenset({"capacity", "auth", "invalid", "throttle", "server"})
    )

    def request(self, instance_id: str, capacity: CapacityType = CapacityType.ON_DEMAND) -> LaunchRequest:
        bid = Decimal("14.00") if capacity is CapacityType.SPOT else None
        return LaunchRequest(instance_id, f"8x {H100}", "global", capacity, max_price_per_hour=bid)

    def fail_next(self, operation: str, kind: str) -> None:
        self.fake.fail_next({"launch": MUTATIONS, "list_offers": ("gpuTypes",)}[operation], kind)

    def lose_next_launch_response(self) -> None:
        self.fake.lose_next(MUTATIONS)

    def preempt(self, request: LaunchRequest) -> None:
        self.fake.preempt(request.name)

    def live_instance_count(self) -> int:
        return self.fake.live_count()


@pytest.fixture
def fake() -> Iterator[FakeRunPod]:
    server = FakeRunPod()
    server.start()
    yield server
    server.stop()


def make_provider(fake: FakeRunPod, api_key: str = API_KEY, **kwargs: Any) -> RunPodProvider:
    options: dict[str, Any] = {"clock": lambda: NOW, "timeout": 5.0} | kwargs
    return RunPodProvider(api_key, base_url=fake.base_url, **options)


@pytest.fixture
def provider(fake: FakeRunPod) -> Iterator[RunPodProvider]:
    adapter = make_provider(fake)
    yield adapter
    adapter.close()


@pytest.fixture
def harness(fake: FakeRunPod, provider: RunPodProvider) -> RunPodHarness:
    return RunPodHarness(fake, provider)


class TestContract(ProviderContract):
    pass


# --- offers -----------------------------------------------------------------------------------
def test_offers_are_per_gpu_prices_times_count_with_stock_status(provider: RunPodProvider) -> None:
    offers = {(o.instance_type, o.capacity_type): o for o in provider.list_offers()}
    h100x8 = offers[(f"8x {H100}", CapacityType.ON_DEMAND)]
    assert (h100x8.cloud, h100x8.region, h100x8.zone) == ("runpod", "global", None)
    assert (h100x8.accelerator, h100x8.accelerator_count) == ("H100", 8)
    assert h100x8.price_per_hour == Decimal("21.52")  # 8 x securePrice 2.69, exact
    assert h100x8.price_per_gpu_hour == Decimal("2.69")
    assert h100x8.availability is Availability.AVAILABLE  # 40 free: High
    assert (h100x8.observed_at, h100x8.source, h100x8.currency) == (NOW, "runpod:graphql", "USD")
    assert offers[(f"8x {H100}", CapacityType.SPOT)].price_per_hour == Decimal("14.00")  # 8 x 1.75
    assert offers[("2x NVIDIA H100 PCIe", CapacityType.ON_DEMAND)].availability is Availability.LIMITED
    assert offers[("4x NVIDIA H100 PCIe", CapacityType.ON_DEMAND)].availability is Availability.UNAVAILABLE
    assert offers[("1x NVIDIA H200", CapacityType.ON_DEMAND)].accelerator == "H200"
    # H100 NVL: maxGpuCount 2, no spot price, sold out.
    nvl = {key for key in offers if "NVL" in key[0]}
    assert nvl == {
        ("1x NVIDIA H100 NVL", CapacityType.ON_DEMAND),
        ("2x NVIDIA H100 NVL", CapacityType.ON_DEMAND),
    }
    assert {offers[key].availability for key in nvl} == {Availability.UNAVAILABLE}
    assert not any("RTX 3070" in key[0] for key in offers)  # Community Cloud only: we deploy SECURE


def test_offers_query_is_one_call_with_a_typed_variable_per_gpu_count(
    fake: FakeRunPod, provider: RunPodProvider
) -> None:
    provider.list_offers()
    (body,) = fake.calls_to("gpuTypes")
    assert body["variables"] == {
        "in0": {"gpuCount": 1, "secureCloud": True},
        "in1": {"gpuCount": 2, "secureCloud": True},
        "in2": {"gpuCount": 4, "secureCloud": True},
        "in3": {"gpuCount": 8, "secureCloud": True},
    }
    assert "$in3: GpuLowestPriceInput!" in body["query"]


def test_data_centers_are_zones(fake: FakeRunPod) -> None:
    adapter = make_provider(fake, data_centers=["EU-RO-1", "US-TX-3"], gpu_counts=[8])
    offers = [o for o in adapter.list_offers() if o.capacity_type is CapacityType.ON_DEMAND]
    (body,) = fake.calls_to("gpuTypes")
    assert body["variables"]["in0"] == {"gpuCount": 8, "secureCloud": True, "dataCenterId": "EU-RO-1"}
    by_zone = {(o.instance_type, o.zone): o.availability for o in offers}
    assert by_zone[(f"8x {H100}", "EU-RO-1")] is Availability.LIMITED  # 8 free there
    assert by_zone[(f"8x {H100}", "US-TX-3")] is Availability.UNAVAILABLE
    assert {o.region for o in offers} == {"global"}


def test_offers_for_other_regions_are_empty_without_a_call(
    fake: FakeRunPod, provider: RunPodProvider
) -> None:
    assert provider.list_offers(regions=["us-east-1"]) == []
    assert fake.requests == []


@pytest.mark.parametrize(
    ("display_name", "canonical"),
    [
        ("H100 SXM", "H100"),
        ("H100 PCIe", "H100"),
        ("H100 NVL", "H100"),
        ("H200 SXM", "H200"),
        ("A100 SXM", "A100-80GB"),  # RunPod's A100s are 80 GB (SkyPilot's overrides)
        ("A100 PCIe", "A100-80GB"),
        ("RTX 4090", "RTX4090"),  # SkyPilot's catalog spelling
        ("B200", "B200"),
    ],
)
def test_accelerator_names_match_the_catalogs(display_name: str, canonical: str) -> None:
    assert accelerator_name(display_name) == canonical


# --- launch -----------------------------------------------------------------------------------
def test_on_demand_launch_sends_the_documented_mutation_after_a_name_lookup(
    fake: FakeRunPod, provider: RunPodProvider
) -> None:
    request = LaunchRequest(
        "job-1",
        f"8x {H100}",
        "global",
        CapacityType.ON_DEMAND,
        zone="US-GA-2",
        ssh_public_key="ssh-ed25519 AAAA",
    )
    instance = provider.launch(request)
    first, second = fake.calls("POST", "/graphql")
    assert "myself" in first.json()["query"] and "podFindAndDeployOnDemand" in second.json()["query"]
    assert second.json()["variables"]["input"] == {
        "name": "gpubroker-job-1",
        "imageName": "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04",
        "gpuTypeId": H100,
        "gpuCount": 8,
        "cloudType": "SECURE",
        "containerDiskInGb": 50,
        "volumeInGb": 0,
        "startSsh": True,
        "supportPublicIp": True,
        "ports": "22/tcp",
        "env": [
            {"key": "GPUBROKER_INSTANCE_ID", "value": "job-1"},
            {"key": "PUBLIC_KEY", "value": "ssh-ed25519 AAAA"},
        ],
        "dataCenterId": "US-GA-2",
    }
    assert second.headers["authorization"] == f"Bearer {API_KEY}"
    assert "api_key" not in second.query  # the key never goes in the URL
    assert (instance.instance_id, instance.instance_type, instance.zone) == ("job-1", f"8x {H100}", "US-GA-2")
    assert instance.capacity_type is CapacityType.ON_DEMAND and instance.state is InstanceState.PENDING
    assert instance.price_per_hour == Decimal("21.52")


def test_spot_launch_bids_per_gpu(fake: FakeRunPod, provider: RunPodProvider) -> None:
    request = LaunchRequest(
        "job-2", f"8x {H100}", "global", CapacityType.SPOT, max_price_per_hour=Decimal("15.0050")
    )
    instance = provider.launch(request)
    (body,) = fake.calls_to("podRentInterruptable")
    assert body["variables"]["input"]["bidPerGpu"] == 1.875  # 15.005 / 8, rounded down: never over the cap
    assert "PodRentInterruptableInput!" in body["query"]
    assert instance.capacity_type is CapacityType.SPOT
    assert fake.pod_named("gpubroker-job-2")["podType"] == "INTERRUPTABLE"


def test_a_pod_that_exists_is_returned_without_a_mutation(fake: FakeRunPod, provider: RunPodProvider) -> None:
    request = LaunchRequest("job-3", f"1x {H100}", "global", CapacityType.ON_DEMAND)
    first = provider.launch(request)
    fake.boot("gpubroker-job-3")
    again = provider.launch(request)
    assert len(fake.calls_to("podFindAndDeployOnDemand")) == 1
    assert again.provider_instance_id == first.provider_instance_id
    assert again.state is InstanceState.RUNNING and again.public_ip == "213.173.108.12"
    assert again.launched_at is not None and again.launched_at.tzinfo is not None


@pytest.mark.parametrize(
    ("instance_type", "region", "capacity", "bid"),
    [
        ("H100", "global", CapacityType.ON_DEMAND, None),  # not '<count>x <gpuTypeId>'
        (f"8x {H100}", "us-east-1", CapacityType.ON_DEMAND, None),  # RunPod has one region
        (f"8x {H100}", "global", CapacityType.SPOT, None),  # a spot pod needs a bid
    ],
)
def test_bad_requests_are_refused_without_a_call(
    fake: FakeRunPod,
    provider: RunPodProvider,
    instance_type: str,
    region: str,
    capacity: CapacityType,
    bid: Decimal | None,
) -> None:
    with pytest.raises(InvalidRequest):
        provider.launch(LaunchRequest("job-4", instance_type, region, capacity, max_price_per_hour=bid))
    assert fake.requests == []


def test_stock_runs_out_as_insufficient_capacity(fake: FakeRunPod, provider: RunPodProvider) -> None:
    provider.launch(LaunchRequest("h200-a", "8x NVIDIA H200", "global", CapacityType.ON_DEMAND))
    with pytest.raises(InsufficientCapacity) as raised:
        provider.launch(LaunchRequest("h200-b", "8x NVIDIA H200", "global", CapacityType.ON_DEMAND))
    assert raised.value.message == CAPACITY_MESSAGE


# --- states -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("desired", "pod_type", "runtime", "state"),
    [
        ("CREATED", "RESERVED", None, InstanceState.PENDING),
        ("RUNNING", "RESERVED", None, InstanceState.PENDING),  # container not started yet
        ("RUNNING", "RESERVED", {"ports": []}, InstanceState.RUNNING),
        ("RESTARTING", "RESERVED", None, InstanceState.PENDING),
        ("PAUSED", "RESERVED", None, InstanceState.STOPPED),
        ("EXITED", "RESERVED", None, InstanceState.STOPPED),
        ("EXITED", "INTERRUPTABLE", None, InstanceState.PREEMPTED),  # we never stop pods ourselves
        ("DEAD", "RESERVED", None, InstanceState.FAILED),
        ("TERMINATED", "INTERRUPTABLE", None, InstanceState.TERMINATED),
        ("SOMETHING_NEW", "RESERVED", None, InstanceState.UNKNOWN),
    ],
)
def test_state_table(
    desired: str, pod_type: str, runtime: dict[str, Any] | None, state: InstanceState
) -> None:
    assert pod_state({"desiredStatus": desired, "podType": pod_type, "runtime": runtime}) is state


def test_state_table_covers_the_pod_status_enum() -> None:
    assert set(POD_STATES) == {"CREATED", "RUNNING", "RESTARTING", "EXITED", "PAUSED", "DEAD", "TERMINATED"}


def test_preempted_pod_keeps_runpods_reason(harness: RunPodHarness) -> None:
    request = harness.request("spot-1", CapacityType.SPOT)
    harness.provider.launch(request)
    harness.preempt(request)
    got = harness.provider.get_instance("spot-1", region="global")
    assert got is not None and got.state is InstanceState.PREEMPTED
    assert got.state_reason and got.state_reason.startswith("Stopped by Runpod")


def test_list_instances_returns_ours_only(fake: FakeRunPod, provider: RunPodProvider) -> None:
    provider.launch(LaunchRequest("mine-1", f"1x {H100}", "global", CapacityType.ON_DEMAND))
    fake._deploy({"name": "someone-elses-notebook", "gpuTypeId": H100, "gpuCount": 1}, interruptible=False)
    assert [i.instance_id for i in provider.list_instances()] == ["mine-1"]
    assert provider.list_instances(regions=["eu-west-1"]) == []


def test_terminate_when_the_pod_vanished_meanwhile_is_done(
    fake: FakeRunPod, provider: RunPodProvider
) -> None:
    provider.launch(LaunchRequest("gone-1", f"1x {H100}", "global", CapacityType.ON_DEMAND))
    fake.inject_field(["podTerminate"], lambda f: FakeResponse(200, error_body("pod not found", "X", f)))
    provider.terminate("gone-1", region="global")
    (body,) = fake.calls_to("podTerminate")
    assert body["variables"] == {"input": {"podId": fake.pod_named("gpubroker-gone-1")["id"]}}


# --- errors -----------------------------------------------------------------------------------
def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> FakeResponse:
    return FakeResponse(status, body, headers or {})


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (_answer(200, error_body(CAPACITY_MESSAGE, "INTERNAL_SERVER_ERROR", "f")), InsufficientCapacity),
        (_answer(200, error_body(NOT_ENOUGH_GPUS, "X")), InsufficientCapacity),
        (_answer(401, {"errors": [{"message": "Unauthorized"}]}), AuthError),
        (_answer(403, b"Forbidden"), AuthError),
        (_answer(200, error_body("Unauthorized", "INTERNAL_SERVER_ERROR", "f")), AuthError),  # read-only key
        (_answer(200, error_body("not allowed", "UNAUTHENTICATED")), AuthError),
        (_answer(200, error_body("pod not found", "INTERNAL_SERVER_ERROR", "f")), NotFound),
        (_answer(200, error_body("Your spend limit of $80/hr would be exceeded", "X")), QuotaExceeded),
        (_answer(400, error_body('Cannot query field "x".', "GRAPHQL_VALIDATION_FAILED")), InvalidRequest),
        (_answer(400, error_body('Variable "$input" got invalid value', "BAD_USER_INPUT")), InvalidRequest),
        (_answer(400, error_body("Syntax Error: Unexpected Name", "GRAPHQL_PARSE_FAILED")), InvalidRequest),
        (_answer(200, error_body(WENT_WRONG, "INTERNAL_SERVER_ERROR", "f")), Transient),
        (_answer(429, b"Too Many Requests"), Transient),
        (_answer(500, b"Internal Server Error"), Transient),
        (_answer(502, b"error code: 502"), Transient),
        (_answer(503, b"<html>Service Unavailable</html>"), Transient),
        (_answer(200, error_body("Some new refusal", "SOMETHING_ELSE", "f")), InvalidRequest),
        (_answer(200, {"data": None}), Transient),  # no data and no errors: malformed
    ],
)
def test_error_table(
    fake: FakeRunPod, provider: RunPodProvider, response: FakeResponse, kind: type[ProviderError]
) -> None:
    fake.inject_field(["podFindAndDeployOnDemand"], lambda f: response)
    with pytest.raises(kind) as raised:
        provider.launch(LaunchRequest("err-1", f"1x {H100}", "global", CapacityType.ON_DEMAND))
    assert type(raised.value) is kind and raised.value.provider == "runpod"
    assert fake.live_count() == 0


def test_throttling_keeps_retry_after(fake: FakeRunPod, provider: RunPodProvider) -> None:
    fake.inject_field(["gpuTypes"], lambda f: FakeResponse(429, b"slow down", {"Retry-After": "7"}))
    with pytest.raises(Transient) as raised:
        provider.list_offers()
    assert raised.value.retry_after == 7.0


def test_the_fake_refuses_what_runpod_refuses(fake: FakeRunPod, provider: RunPodProvider) -> None:
    # The fake checks documents against the schema, so a wrong field or input type fails here first.
    with pytest.raises(InvalidRequest, match="Cannot query field"):
        provider._graphql("query { myself { pods { idx } } }", {})
    with pytest.raises(InvalidRequest, match="expecting type"):
        provider._graphql(
            "mutation M($input: PodFilter!) { podTerminate(input: $input) }", {"input": {"podId": "x"}}
        )
    with pytest.raises(InvalidRequest, match="is not defined by type"):
        provider._graphql(
            "mutation M($input: PodTerminateInput!) { podTerminate(input: $input) }", {"input": {"id": "x"}}
        )


def test_connection_failure_is_transient(fake: FakeRunPod) -> None:
    adapter = make_provider(fake)
    fake.stop()
    with pytest.raises(Transient) as raised:
        adapter.list_offers()
    assert raised.value.code == "transport"


def test_credentials_never_appear_in_logs_errors_or_repr(
    fake: FakeRunPod, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "rpa_NOT_THE_RIGHT_KEY_0123456789abcdefghij"
    adapter = make_provider(fake, api_key=secret)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as raised:
        adapter.launch(LaunchRequest("auth-1", f"1x {H100}", "global", CapacityType.ON_DEMAND))
    status = adapter.check()
    assert status.configured and status.reachable and "credentials refused" in status.detail
    assert secret not in caplog.text and secret not in str(raised.value) and secret not in repr(adapter)
    assert secret not in status.detail
    assert caplog.records, "httpx logged the requests; the key must not be in them"


def test_check_reports_reachability(fake: FakeRunPod, provider: RunPodProvider) -> None:
    assert provider.check().reachable
    url = fake.base_url
    fake.stop()
    adapter = RunPodProvider(API_KEY, base_url=url)  # a new client: a kept-alive connection outlives stop()
    status = adapter.check()
    assert status.configured and not status.reachable


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    assert from_environment() is None
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_from_env")
    adapter = from_environment()
    assert isinstance(adapter, RunPodProvider) and adapter.name == "runpod"
    adapter.close()
