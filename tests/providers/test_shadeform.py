"""Shadeform adapter against a faithful local fake of its REST API (no network)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

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
from providers.shadeform import (
    STATE_MAP,
    ShadeformProvider,
    accelerator_name,
    error_from_response,
    from_environment,
)
from tests.providers.contract import ProviderContract
from tests.providers.fakes.http import FakeResponse
from tests.providers.fakes.shadeform import API_KEY, FakeShadeform

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CREATE = ("POST", "/instances/create")
H100 = "hyperstack:H100_sxm5x8"
SPOT_TYPE = "excesssupply:A6000"


@dataclass
class ShadeformHarness:
    fake: FakeShadeform
    provider: ShadeformProvider
    # Shadeform documents no quota error, so "quota" is not scripted (see the adapter's docstring).
    launch_errors: frozenset[str] = field(
        default=frozenset({"capacity", "auth", "invalid", "throttle", "server"})
    )

    def request(self, instance_id: str, capacity: CapacityType = CapacityType.ON_DEMAND) -> LaunchRequest:
        if capacity is CapacityType.SPOT:
            return LaunchRequest(instance_id, SPOT_TYPE, "us-central-1", capacity)
        return LaunchRequest(instance_id, H100, "canada-1", capacity)

    def fail_next(self, operation: str, kind: str) -> None:
        method, path = {"launch": CREATE, "list_offers": ("GET", "/instances/types")}[operation]
        self.fake.fail_next(method, path, kind)

    def lose_next_launch_response(self) -> None:
        self.fake.lose_next_response(*CREATE)

    def preempt(self, request: LaunchRequest) -> None:
        self.fake.reclaim(self.fake.by_name(request.name)["id"])

    def live_instance_count(self) -> int:
        return self.fake.live_count()


@pytest.fixture
def fake() -> Iterator[FakeShadeform]:
    server = FakeShadeform()
    server.start()
    yield server
    server.stop()


def make_provider(fake: FakeShadeform, api_key: str = API_KEY, **kwargs: Any) -> ShadeformProvider:
    options: dict[str, Any] = {"clock": lambda: NOW, "timeout": 5.0, **kwargs}
    return ShadeformProvider(api_key, base_url=fake.base_url, **options)


@pytest.fixture
def provider(fake: FakeShadeform) -> Iterator[ShadeformProvider]:
    adapter = make_provider(fake)
    yield adapter
    adapter.close()


@pytest.fixture
def harness(fake: FakeShadeform, provider: ShadeformProvider) -> ShadeformHarness:
    return ShadeformHarness(fake, provider)


class TestContract(ProviderContract):
    pass


def on_demand(
    instance_id: str, instance_type: str = H100, region: str = "canada-1", **kw: Any
) -> LaunchRequest:
    return LaunchRequest(instance_id, instance_type, region, CapacityType.ON_DEMAND, **kw)


# --- offers -----------------------------------------------------------------------------------
def test_offers_per_cloud_type_region_and_rental_type(provider: ShadeformProvider) -> None:
    offers = provider.list_offers()
    by_key = {(o.instance_type, o.region, o.capacity_type): o for o in offers}
    assert len(offers) == 6
    h100 = by_key[H100, "canada-1", CapacityType.ON_DEMAND]
    assert h100.price_per_hour == Decimal("19.20")
    assert h100.price_per_gpu_hour == Decimal("2.40")
    assert (h100.accelerator, h100.accelerator_count) == ("H100", 8)
    assert (h100.vcpus, h100.memory_gib) == (Decimal(192), Decimal(1440))
    assert h100.availability is Availability.AVAILABLE
    assert (h100.cloud, h100.zone, h100.currency) == ("shadeform", None, "USD")
    assert (h100.source, h100.observed_at) == ("shadeform:instances-types", NOW)
    assert by_key[H100, "norway-1", CapacityType.ON_DEMAND].availability is Availability.UNAVAILABLE
    spot = by_key[SPOT_TYPE, "us-central-1", CapacityType.SPOT]
    assert (spot.price_per_hour, spot.availability) == (Decimal("0.30"), Availability.AVAILABLE)
    sold_out = by_key[SPOT_TYPE, "us-central-1", CapacityType.ON_DEMAND]
    assert (sold_out.price_per_hour, sold_out.availability) == (Decimal("0.49"), Availability.UNAVAILABLE)
    assert by_key[
        "massedcompute:A6000_plus", "us-central-1", CapacityType.ON_DEMAND
    ].price_per_hour == Decimal("0.57")
    assert by_key["datacrunch:A100_80G", "FIN-01", CapacityType.ON_DEMAND].accelerator == "A100-80GB"


def test_offers_for_asked_regions_only(fake: FakeShadeform, provider: ShadeformProvider) -> None:
    assert {o.region for o in provider.list_offers(regions=["us-central-1"])} == {"us-central-1"}
    (sent,) = fake.calls("GET", "/instances/types")
    assert sent.query == {}  # the whole catalog, availability filtered here, not by the API
    bounded = make_provider(fake, regions=["canada-1"])
    assert {o.instance_type for o in bounded.list_offers()} == {H100}


def test_types_without_rental_type_are_on_demand(fake: FakeShadeform, provider: ShadeformProvider) -> None:
    for entry in fake.catalog[0]["availability"]:
        del entry["rental_type"]  # responses written before spot existed
    offers = [o for o in provider.list_offers() if o.instance_type == H100]
    assert {o.capacity_type for o in offers} == {CapacityType.ON_DEMAND}


@pytest.mark.parametrize(
    ("config", "name"),
    [
        ({"gpu_type": "H100", "vram_per_gpu_in_gb": 80}, "H100"),
        ({"gpu_type": "A100_80G", "vram_per_gpu_in_gb": 80}, "A100-80GB"),
        ({"gpu_type": "A100_80G"}, "A100-80GB"),
        ({"gpu_type": "A100", "vram_per_gpu_in_gb": 40}, "A100"),
        ({"gpu_type": "A100", "vram_per_gpu_in_gb": 80}, "A100-80GB"),
        ({"gpu_type": "A6000", "vram_per_gpu_in_gb": 48}, "A6000"),
        ({"gpu_type": "H200", "vram_per_gpu_in_gb": 141}, "H200"),
        ({"gpu_type": "L40S"}, "L40S"),
        ({"gpu_type": "H100_NVL", "vram_per_gpu_in_gb": 94}, "H100"),
    ],
)
def test_gpu_names(config: dict[str, Any], name: str) -> None:
    assert accelerator_name(config) == name


# --- launch -----------------------------------------------------------------------------------
def test_launch_sends_the_documented_body_after_a_name_lookup(
    fake: FakeShadeform, provider: ShadeformProvider
) -> None:
    instance = provider.launch(on_demand("job-sf-1", labels={"team": "ml"}))
    assert [(r.method, r.path) for r in fake.server.requests] == [
        ("GET", "/v1/instances"),
        ("POST", "/v1/instances/create"),
    ]
    (sent,) = fake.calls(*CREATE)
    assert sent.json() == {
        "cloud": "hyperstack",
        "region": "canada-1",
        "shade_instance_type": "H100_sxm5x8",
        "shade_cloud": True,
        "name": "gpubroker-job-sf-1",
        "rental_type": "on_demand",
        "tags": ["gpubroker-managed=true", "gpubroker-instance-id=job-sf-1", "team=ml"],
    }
    assert sent.headers["x-api-key"] == API_KEY
    assert instance.provider_instance_id in fake.instances
    assert (instance.state, instance.capacity_type, instance.launched_at) == (
        InstanceState.PENDING,
        CapacityType.ON_DEMAND,
        NOW,
    )


def test_spot_launch_asks_for_the_spot_rental_type(fake: FakeShadeform, provider: ShadeformProvider) -> None:
    provider.launch(LaunchRequest("job-spot-1", SPOT_TYPE, "us-central-1", CapacityType.SPOT))
    (sent,) = fake.calls(*CREATE)
    assert sent.json()["rental_type"] == "spot" and sent.json()["shade_cloud"] is True
    got = provider.get_instance("job-spot-1", region="us-central-1")
    assert got is not None
    assert (got.capacity_type, got.price_per_hour) == (CapacityType.SPOT, Decimal("0.30"))


def test_os_and_ssh_key_are_passed(fake: FakeShadeform) -> None:
    adapter = make_provider(fake, ssh_key_id="78a0dd5a-dbb1-4568-b55c-5e7e0a8b0c40")
    adapter.launch(on_demand("job-os-1", image="ubuntu20.04_cuda12.0_shade_os"))
    (sent,) = fake.calls(*CREATE)
    assert sent.json()["os"] == "ubuntu20.04_cuda12.0_shade_os"
    assert sent.json()["ssh_key_id"] == "78a0dd5a-dbb1-4568-b55c-5e7e0a8b0c40"


def test_relaunch_of_an_existing_name_makes_no_create_call(
    fake: FakeShadeform, provider: ShadeformProvider
) -> None:
    first = provider.launch(on_demand("job-once-1"))
    fake.set_status(first.provider_instance_id, "active")
    again = provider.launch(on_demand("job-once-1"))
    assert (again.provider_instance_id, again.state) == (first.provider_instance_id, InstanceState.RUNNING)
    assert len(fake.calls(*CREATE)) == 1


@pytest.mark.parametrize(
    "request_",
    [
        LaunchRequest("job-bad-1", "H100_sxm5x8", "canada-1", CapacityType.ON_DEMAND),  # no cloud
        LaunchRequest("job-bad-2", H100, "canada-1", CapacityType.RESERVED, reservation_id="r-1"),
    ],
)
def test_unlaunchable_requests_make_no_calls(
    fake: FakeShadeform, provider: ShadeformProvider, request_: LaunchRequest
) -> None:
    with pytest.raises(InvalidRequest):
        provider.launch(request_)
    assert fake.server.requests == []


def test_spot_where_only_on_demand_is_sold_is_invalid(provider: ShadeformProvider) -> None:
    with pytest.raises(InvalidRequest):
        provider.launch(LaunchRequest("job-nospot-1", H100, "canada-1", CapacityType.SPOT))


def test_sold_out_type_is_insufficient_capacity(provider: ShadeformProvider) -> None:
    with pytest.raises(InsufficientCapacity) as raised:
        provider.launch(on_demand("job-full-1", region="norway-1"))
    assert (raised.value.code, raised.value.region) == ("out-of-capacity", "norway-1")


# --- instances --------------------------------------------------------------------------------
STATES = [(status, state, "") for status, state in STATE_MAP.items() if status != "deleted"] + [
    ("deleting", InstanceState.PREEMPTED, "preempted"),
    ("active", InstanceState.RUNNING, "downloading"),
    ("rebooting", InstanceState.UNKNOWN, ""),
]


@pytest.mark.parametrize(("status", "state", "details"), STATES)
def test_state_table(
    fake: FakeShadeform, provider: ShadeformProvider, status: str, state: InstanceState, details: str
) -> None:
    launched = provider.launch(on_demand("job-state-1"))
    fake.set_status(launched.provider_instance_id, status, details)
    got = provider.get_instance("job-state-1", region="canada-1")
    assert got is not None and got.state is state
    assert got.state_reason == (details or None)
    assert got.price_per_hour == Decimal("19.20")
    assert got.launched_at == datetime(2026, 11, 20, 12, 0, 0, 118626, tzinfo=UTC)
    assert got.instance_type == H100


def test_deleted_instances_are_gone(fake: FakeShadeform, provider: ShadeformProvider) -> None:
    provider.launch(on_demand("job-gone-1"))
    provider.terminate("job-gone-1", region="canada-1")
    got = provider.get_instance("job-gone-1", region="canada-1")
    assert got is not None and got.state is InstanceState.TERMINATED  # "deleting" is still listed
    fake.finish_deletes()
    assert provider.get_instance("job-gone-1", region="canada-1") is None
    provider.terminate("job-gone-1", region="canada-1")
    assert len(fake.calls("POST", r"/instances/[^/]+/delete")) == 1


def test_list_instances_returns_ours_only(fake: FakeShadeform, provider: ShadeformProvider) -> None:
    mine = provider.launch(on_demand("job-list-1"))
    fake.instances["foreign"] = {
        **fake.instances[mine.provider_instance_id],
        "id": "foreign",
        "name": "notebook",
    }
    fake.instances["foreign"]["tags"] = ["team=ml"]
    renamed = provider.launch(on_demand("job-list-2", "massedcompute:A6000_plus", "us-central-1"))
    fake.instances[renamed.provider_instance_id]["name"] = "renamed-in-the-console"
    assert sorted(i.instance_id for i in provider.list_instances()) == ["job-list-1", "job-list-2"]
    assert [i.instance_id for i in provider.list_instances(regions=["us-central-1"])] == ["job-list-2"]


# --- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "kind", "code"),
    [
        (401, {"message": "Invalid API key"}, AuthError, "401"),
        (403, {"message": "API key lacks required permissions"}, AuthError, "403"),
        (404, {"message": "instance not found"}, NotFound, "404"),
        (
            400,
            {"message": "The selected instance is out of capacity"},
            InsufficientCapacity,
            "out-of-capacity",
        ),
        (
            400,
            {"message": "Instance type is not currently available in canada-1"},
            InsufficientCapacity,
            None,
        ),
        (409, {"message": "no capacity for H100_sxm5x8"}, InsufficientCapacity, "out-of-capacity"),
        (
            400,
            {"message": "Insufficient funds: please top up your wallet"},
            QuotaExceeded,
            "insufficient-balance",
        ),
        (402, {"message": "Payment Required"}, QuotaExceeded, "402"),
        (400, {"message": "invalid region"}, InvalidRequest, "400"),
        (409, {"message": "conflict"}, InvalidRequest, "409"),
        (422, {"error": "shade_instance_type is required"}, InvalidRequest, "422"),
        (500, {"message": "Internal Server Error"}, Transient, "500"),
        (503, {"message": "capacity unavailable upstream"}, Transient, "503"),
        (429, {"message": "Too Many Requests"}, Transient, "429"),
    ],
)
def test_error_table(status: int, body: dict[str, str], kind: type[ProviderError], code: str | None) -> None:
    response = httpx.Response(
        status, json=body, request=httpx.Request("POST", "https://x/v1/instances/create")
    )
    error = error_from_response(response, region="canada-1")
    assert type(error) is kind
    assert error.provider == "shadeform" and error.region == "canada-1"
    if code:
        assert error.code == code


def test_not_found_on_create_is_an_invalid_request() -> None:
    response = httpx.Response(404, json={"message": "x"}, request=httpx.Request("POST", "https://x/v1/y"))
    assert type(error_from_response(response, launching=True)) is InvalidRequest


def test_throttling_carries_retry_after(fake: FakeShadeform, provider: ShadeformProvider) -> None:
    fake.fail_next("GET", "/instances/types", "throttle")
    with pytest.raises(Transient) as raised:
        provider.list_offers()
    assert raised.value.retry_after == 3.0


def test_transport_and_garbage_are_transient(fake: FakeShadeform, provider: ShadeformProvider) -> None:
    fake.server.inject("GET", "/v1/instances", FakeResponse(200, b"<html>502 Bad Gateway</html>"))
    with pytest.raises(Transient):
        provider.list_instances()
    fake.stop()
    with pytest.raises(Transient) as raised:
        make_provider(fake).list_instances()
    assert raised.value.code == "transport"


def test_credentials_never_appear_in_logs_errors_or_repr(
    fake: FakeShadeform, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapter = make_provider(fake)
    adapter.launch(on_demand("job-log-1"))
    errors: list[ProviderError] = []
    for kind in ("auth", "server", "throttle", "invalid"):
        fake.fail_next("POST", "/instances/create", kind)
        with pytest.raises(ProviderError) as raised:
            adapter.launch(on_demand(f"job-log-{kind}"))
        errors.append(raised.value)
    fake.stop()
    with pytest.raises(Transient) as down:
        make_provider(fake).list_instances()
    errors.append(down.value)
    text = caplog.text + "".join(f"{e!s}{e!r}" for e in errors) + repr(adapter)
    assert API_KEY not in text


def test_check(fake: FakeShadeform, provider: ShadeformProvider) -> None:
    ok = provider.check()
    assert (ok.configured, ok.reachable) == (True, True)
    wrong = make_provider(fake, api_key="wrong-key").check()
    assert (wrong.configured, wrong.reachable) == (False, True)
    fake.stop()
    down = make_provider(fake).check()
    assert (down.configured, down.reachable) == (True, False)


def test_from_environment() -> None:
    assert from_environment({}) is None
    adapter = from_environment({"SHADEFORM_API_KEY": "k", "GPUBROKER_SHADEFORM_SSH_KEY_ID": "key-1"})
    assert adapter is not None and adapter._ssh_key_id == "key-1"
    assert adapter.capabilities.spot and not adapter.capabilities.reservations
    assert adapter.capabilities.interruption_notice_seconds is None
    adapter.close()


def test_a_200_missing_documented_fields_is_transient(
    fake: FakeShadeform, provider: ShadeformProvider
) -> None:
    fake.server.inject(
        "GET", "/v1/instances", FakeResponse(200, {"instances": [{"name": "gpubroker-job-x-1"}]})
    )
    with pytest.raises(Transient) as raised:
        provider.list_instances()
    assert raised.value.code == "bad-response"
