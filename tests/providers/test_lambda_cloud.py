"""Lambda Cloud adapter against a faithful local fake of its REST API (no network)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import httpx
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
from providers.lambda_cloud import (
    ERROR_CODES,
    STATE_MAP,
    LambdaCloudProvider,
    error_from_response,
    from_environment,
    parse_instance_type,
)
from tests.providers.contract import ProviderContract
from tests.providers.fakes.lambda_cloud import API_KEY, SSH_KEY_NAME, FakeLambdaCloud

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LAUNCH = ("POST", "/instance-operations/launch")


@dataclass
class LambdaHarness:
    fake: FakeLambdaCloud
    provider: LambdaCloudProvider
    launch_errors: frozenset[str] = field(
        default=frozenset({"capacity", "quota", "auth", "invalid", "throttle", "server"})
    )

    def request(self, instance_id: str, capacity: CapacityType = CapacityType.ON_DEMAND) -> LaunchRequest:
        return LaunchRequest(instance_id, "gpu_8x_h100_sxm5", "us-east-1", capacity)

    def fail_next(self, operation: str, kind: str) -> None:
        method, path = {"launch": LAUNCH, "list_offers": ("GET", "/instance-types")}[operation]
        self.fake.fail_next(method, path, kind)

    def lose_next_launch_response(self) -> None:
        self.fake.lose_next_response(*LAUNCH)

    def preempt(self, request: LaunchRequest) -> None:
        raise AssertionError("Lambda sells no spot capacity; the contract must not ask to preempt")

    def live_instance_count(self) -> int:
        return self.fake.live_count()


@pytest.fixture
def fake() -> Iterator[FakeLambdaCloud]:
    server = FakeLambdaCloud()
    server.start()
    yield server
    server.stop()


def make_provider(fake: FakeLambdaCloud, api_key: str = API_KEY, **kwargs: object) -> LambdaCloudProvider:
    options: dict[str, object] = {"ssh_key_names": [SSH_KEY_NAME], "clock": lambda: NOW, "timeout": 5.0}
    options.update(kwargs)
    return LambdaCloudProvider(api_key, base_url=fake.base_url, **options)  # type: ignore[arg-type]


@pytest.fixture
def provider(fake: FakeLambdaCloud) -> Iterator[LambdaCloudProvider]:
    adapter = make_provider(fake)
    yield adapter
    adapter.close()


@pytest.fixture
def harness(fake: FakeLambdaCloud, provider: LambdaCloudProvider) -> LambdaHarness:
    return LambdaHarness(fake, provider)


class TestContract(ProviderContract):
    pass


# --- offers -----------------------------------------------------------------------------------
def test_offers_have_exact_prices_and_per_region_availability(provider: LambdaCloudProvider) -> None:
    offers = provider.list_offers()
    # 5 GPU types x the 4 regions that have capacity for some type
    assert len(offers) == 20
    by_key = {(o.instance_type, o.region): o for o in offers}
    h100 = by_key["gpu_8x_h100_sxm5", "us-east-1"]
    assert h100.price_per_hour == Decimal("23.92")
    assert h100.price_per_gpu_hour == Decimal("2.99")
    assert (h100.accelerator, h100.accelerator_count) == ("H100", 8)
    assert (h100.vcpus, h100.memory_gib) == (Decimal(208), Decimal(1800))
    assert h100.availability is Availability.AVAILABLE
    assert h100.capacity_type is CapacityType.ON_DEMAND
    assert (h100.cloud, h100.zone, h100.currency, h100.source) == (
        "lambda",
        None,
        "USD",
        "lambda:instance-types",
    )
    assert h100.observed_at == NOW
    assert by_key["gpu_8x_h100_sxm5", "us-south-1"].availability is Availability.UNAVAILABLE
    assert by_key["gpu_1x_a10", "us-west-1"].price_per_hour == Decimal("0.75")
    assert by_key["gpu_1x_gh200", "us-east-3"].availability is Availability.AVAILABLE
    assert by_key["gpu_1x_gh200", "us-east-1"].availability is Availability.UNAVAILABLE
    sold_out = [o for o in offers if o.instance_type == "gpu_8x_a100_80gb_sxm4"]
    assert {o.availability for o in sold_out} == {Availability.UNAVAILABLE}
    assert {o.accelerator for o in sold_out} == {"A100-80GB"}


def test_offers_for_asked_regions_only(provider: LambdaCloudProvider) -> None:
    offers = provider.list_offers(regions=["us-south-1"])
    assert {o.region for o in offers} == {"us-south-1"}
    assert {o.instance_type for o in offers if o.availability is Availability.AVAILABLE} == {
        "gpu_1x_h100_pcie",
        "gpu_1x_a10",
    }


def test_configured_regions_bound_the_offers(fake: FakeLambdaCloud) -> None:
    adapter = make_provider(fake, regions=["us-west-1"])
    assert {o.region for o in adapter.list_offers()} == {"us-west-1"}
    assert adapter.capabilities.regions == ("us-west-1",)


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("gpu_8x_h100_sxm5", ("H100", 8)),
        ("gpu_1x_h100_pcie", ("H100", 1)),
        ("gpu_8x_a100_80gb_sxm4", ("A100-80GB", 8)),
        ("gpu_1x_a100_sxm4", ("A100", 1)),
        ("gpu_1x_a100", ("A100", 1)),
        ("gpu_1x_gh200", ("GH200", 1)),
        ("gpu_8x_b200_sxm6", ("B200", 8)),
        ("gpu_4x_a6000", ("A6000", 4)),
        ("gpu_8x_v100", ("V100", 8)),
        ("cpu_4x_general", None),
        ("gpu_0x_a10", None),
    ],
)
def test_instance_type_names_parse_to_gpu_model_and_count(name: str, parsed: tuple[str, int] | None) -> None:
    assert parse_instance_type(name) == parsed


# --- launch -----------------------------------------------------------------------------------
def test_launch_sends_the_documented_body_and_looks_up_the_name_first(
    fake: FakeLambdaCloud, provider: LambdaCloudProvider
) -> None:
    request = LaunchRequest(
        "job-abc-1",
        "gpu_8x_h100_sxm5",
        "us-east-1",
        CapacityType.ON_DEMAND,
        labels={"team": "ml", "Bad Key": "x"},
    )
    instance = provider.launch(request)
    assert [r.method for r in fake.server.requests] == ["GET", "POST"]  # lookup, then launch
    (sent,) = fake.calls(*LAUNCH)
    assert sent.json() == {
        "region_name": "us-east-1",
        "instance_type_name": "gpu_8x_h100_sxm5",
        "ssh_key_names": [SSH_KEY_NAME],
        "name": "gpubroker-job-abc-1",
        "tags": [
            {"key": "gpubroker-managed", "value": "true"},
            {"key": "gpubroker-instance-id", "value": "job-abc-1"},
            {"key": "team", "value": "ml"},
        ],
    }
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert instance.state is InstanceState.PENDING
    assert instance.provider_instance_id in fake.instances
    assert instance.launched_at == NOW


def test_launch_maps_image_and_public_key(fake: FakeLambdaCloud, provider: LambdaCloudProvider) -> None:
    provider.launch(
        LaunchRequest(
            "job-img-1",
            "gpu_1x_a10",
            "us-west-1",
            CapacityType.ON_DEMAND,
            image="lambda-stack-24-04",
            ssh_public_key="ssh-ed25519 AAAAC3Nz user@host\n",
        )
    )
    provider.launch(
        LaunchRequest(
            "job-img-2",
            "gpu_1x_a10",
            "us-west-1",
            CapacityType.ON_DEMAND,
            image="0920582c7ff041399e34823a0be62549",
        )
    )
    first, second = (r.json() for r in fake.calls(*LAUNCH))
    assert first["image"] == {"family": "lambda-stack-24-04"}
    assert first["user_data"] == "#cloud-config\nssh_authorized_keys:\n  - ssh-ed25519 AAAAC3Nz user@host\n"
    assert second["image"] == {"id": "0920582c7ff041399e34823a0be62549"}


def test_relaunch_of_an_existing_name_makes_no_launch_call(
    fake: FakeLambdaCloud, provider: LambdaCloudProvider
) -> None:
    request = LaunchRequest("job-once-1", "gpu_1x_a10", "us-east-1", CapacityType.ON_DEMAND)
    first = provider.launch(request)
    fake.set_status(first.provider_instance_id, "active")
    again = provider.launch(request)
    assert again.provider_instance_id == first.provider_instance_id
    assert again.state is InstanceState.RUNNING
    assert len(fake.calls(*LAUNCH)) == 1


@pytest.mark.parametrize("capacity", [CapacityType.SPOT])
def test_spot_launch_is_refused_without_a_call(
    fake: FakeLambdaCloud, provider: LambdaCloudProvider, capacity: CapacityType
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        provider.launch(LaunchRequest("job-spot-1", "gpu_1x_a10", "us-east-1", capacity))
    assert raised.value.code == "unsupported-capacity-type"
    assert fake.server.requests == []


def test_launch_without_ssh_key_names_is_invalid(fake: FakeLambdaCloud) -> None:
    adapter = make_provider(fake, ssh_key_names=[])
    with pytest.raises(InvalidRequest):
        adapter.launch(LaunchRequest("job-nokey-1", "gpu_1x_a10", "us-east-1", CapacityType.ON_DEMAND))
    assert fake.server.requests == []


def test_launch_of_an_unknown_type_is_invalid_not_not_found(provider: LambdaCloudProvider) -> None:
    with pytest.raises(InvalidRequest) as raised:
        provider.launch(LaunchRequest("job-typo-1", "gpu_9x_h900", "us-east-1", CapacityType.ON_DEMAND))
    assert raised.value.code == "global/object-does-not-exist"


def test_launch_into_a_region_without_capacity(provider: LambdaCloudProvider) -> None:
    with pytest.raises(InsufficientCapacity) as raised:
        provider.launch(
            LaunchRequest("job-full-1", "gpu_8x_a100_80gb_sxm4", "us-east-1", CapacityType.ON_DEMAND)
        )
    assert raised.value.code == "instance-operations/launch/insufficient-capacity"
    assert raised.value.region == "us-east-1"


# --- instances --------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "state"), [*STATE_MAP.items(), ("something-new", InstanceState.UNKNOWN)])
def test_state_table(
    fake: FakeLambdaCloud, provider: LambdaCloudProvider, status: str, state: InstanceState
) -> None:
    launched = provider.launch(
        LaunchRequest("job-state-1", "gpu_1x_a10", "us-east-1", CapacityType.ON_DEMAND)
    )
    fake.set_status(launched.provider_instance_id, status)
    got = provider.get_instance("job-state-1", region="us-east-1")
    if status == "terminated":
        assert got is None  # terminated instances leave GET /instances
        return
    assert got is not None and got.state is state
    assert got.price_per_hour == Decimal("0.75")
    assert got.state_reason == (status if status in ("unhealthy", "preempted") else None)


def test_list_instances_returns_ours_only(fake: FakeLambdaCloud, provider: LambdaCloudProvider) -> None:
    mine = provider.launch(LaunchRequest("job-list-1", "gpu_1x_a10", "us-east-1", CapacityType.ON_DEMAND))
    fake.instances["foreign"] = {
        **fake.instances[mine.provider_instance_id],
        "id": "foreign",
        "name": "dev-box",
    }
    fake.instances["foreign"]["tags"] = []
    renamed = provider.launch(LaunchRequest("job-list-2", "gpu_1x_a10", "us-west-1", CapacityType.ON_DEMAND))
    fake.instances[renamed.provider_instance_id]["name"] = "renamed in the console"
    listed = provider.list_instances()
    assert sorted(i.instance_id for i in listed) == ["job-list-1", "job-list-2"]  # the tag still says whose
    assert [i.instance_id for i in provider.list_instances(regions=["us-west-1"])] == ["job-list-2"]


def test_terminate_posts_the_provider_id_once(fake: FakeLambdaCloud, provider: LambdaCloudProvider) -> None:
    launched = provider.launch(LaunchRequest("job-term-1", "gpu_1x_a10", "us-east-1", CapacityType.ON_DEMAND))
    provider.terminate("job-term-1", region="us-east-1")
    provider.terminate("job-term-1", region="us-east-1")
    calls = fake.calls("POST", "/instance-operations/terminate")
    assert [c.json() for c in calls] == [{"instance_ids": [launched.provider_instance_id]}]


# --- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (401, "global/invalid-api-key", AuthError),
        (403, "global/account-inactive", AuthError),
        (403, "global/invalid-address", AuthError),
        (400, "global/quota-exceeded", QuotaExceeded),
        (400, "instance-operations/launch/insufficient-capacity", InsufficientCapacity),
        (400, "global/invalid-parameters", InvalidRequest),
        (400, "instance-operations/launch/file-system-in-wrong-region", InvalidRequest),
        (400, "instance-operations/launch/file-systems-not-supported", InvalidRequest),
        (409, "global/duplicate", InvalidRequest),
        (404, "global/object-does-not-exist", NotFound),
        (500, "global/unknown", Transient),
        (503, "something/new", Transient),
        (400, "something/new", InvalidRequest),
        (403, None, AuthError),
    ],
)
def test_error_code_table(status: int, code: str | None, kind: type[ProviderError]) -> None:
    body = {"error": {"code": code, "message": "m", "suggestion": "s"}} if code else {}
    response = httpx.Response(status, json=body, request=httpx.Request("POST", "https://x/api/v1/y"))
    error = error_from_response(response, region="us-east-1")
    assert type(error) is kind
    assert error.provider == "lambda" and error.region == "us-east-1"
    if code:
        assert error.code == code and "m s" in error.message


def test_every_documented_code_is_in_the_table() -> None:
    documented = {
        "global/unknown",
        "global/invalid-api-key",
        "global/account-inactive",
        "global/invalid-address",
        "global/invalid-parameters",
        "global/object-does-not-exist",
        "global/quota-exceeded",
        "global/duplicate",
        "instance-operations/launch/insufficient-capacity",
        "instance-operations/launch/file-system-in-wrong-region",
        "instance-operations/launch/file-systems-not-supported",
    }
    assert documented <= set(ERROR_CODES)


def test_throttling_carries_retry_after(fake: FakeLambdaCloud, provider: LambdaCloudProvider) -> None:
    fake.fail_next("GET", "/instance-types", "throttle")
    with pytest.raises(Transient) as raised:
        provider.list_offers()
    assert raised.value.retry_after == 2.0
    assert raised.value.code == "429"


def test_connection_failure_is_transient(fake: FakeLambdaCloud) -> None:
    adapter = make_provider(fake)
    fake.stop()
    with pytest.raises(Transient) as raised:
        adapter.list_instances()
    assert raised.value.code == "transport"


def test_malformed_answer_is_transient(fake: FakeLambdaCloud, provider: LambdaCloudProvider) -> None:
    from tests.providers.fakes.http import FakeResponse

    fake.server.inject("GET", "/api/v1/instances", FakeResponse(200, b"<html>gateway</html>"))
    with pytest.raises(Transient):
        provider.list_instances()


def test_credentials_never_appear_in_logs_errors_or_repr(
    fake: FakeLambdaCloud, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = make_provider(fake)
    adapter.launch(LaunchRequest("job-log-1", "gpu_1x_a10", "us-east-1", CapacityType.ON_DEMAND))
    errors: list[ProviderError] = []
    for kind in ("auth", "server", "throttle"):
        fake.fail_next("GET", "/instances", kind)
        with pytest.raises(ProviderError) as raised:
            adapter.list_instances()
        errors.append(raised.value)
    fake.stop()
    with pytest.raises(Transient) as raised:
        make_provider(fake).list_instances()  # a fresh connection to a closed port
    errors.append(raised.value)
    text = caplog.text + "".join(f"{e!s}{e!r}" for e in errors) + repr(adapter)
    assert API_KEY not in text


def test_check_reports_configured_and_reachable(fake: FakeLambdaCloud, provider: LambdaCloudProvider) -> None:
    assert provider.check().configured and provider.check().reachable
    wrong = make_provider(fake, api_key="not-the-key")
    status = wrong.check()
    assert (status.configured, status.reachable) == (False, True)
    assert "not-the-key" not in status.detail
    fake.stop()
    down = make_provider(fake).check()  # a fresh connection to a closed port
    assert (down.configured, down.reachable) == (True, False)


def test_from_environment() -> None:
    assert from_environment({}) is None
    assert from_environment({"LAMBDA_API_KEY": "  "}) is None
    adapter = from_environment({"LAMBDA_API_KEY": "k", "GPUBROKER_LAMBDA_SSH_KEYS": "laptop, ci ,"})
    assert adapter is not None
    assert adapter._ssh_key_names == ("laptop", "ci")
    assert adapter.capabilities.capacity_types == frozenset({CapacityType.ON_DEMAND})
    assert not adapter.capabilities.spot and adapter.capabilities.availability_signal
    adapter.close()


def test_a_200_missing_documented_fields_is_transient(
    fake: FakeLambdaCloud, provider: LambdaCloudProvider
) -> None:
    del fake.catalog["gpu_1x_a10"]["instance_type"]["price_cents_per_hour"]
    with pytest.raises(Transient) as raised:
        provider.list_offers()
    assert raised.value.code == "bad-response"
