"""The GCP adapter against a fake Compute Engine + Billing Catalog REST API on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials, Credentials
from google.oauth2.credentials import Credentials as OAuthCredentials

from broker.core.errors import (
    AuthError,
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
    QuotaExceeded,
    Transient,
)
from broker.core.ports import InstanceState, LaunchRequest
from broker.core.types import Availability, CapacityType
from providers import gcp
from providers.gcp import ERROR_CODES, INSTANCE_STATES, GcpProvider, error_for_code
from tests.providers.contract import ERROR_KINDS, ProviderContract
from tests.providers.fakes.gcp import (
    INSTANCES_PATH,
    MACHINE_TYPES_AGG_PATH,
    SKUS_PATH,
    FakeGce,
    error_body,
)
from tests.providers.fakes.http import FakeResponse

ZONE = "us-central1-a"
ZONES = ("us-central1-a", "us-central1-b", "us-east4-a", "europe-west1-c")

# The HTTP answers each error kind gets, as Compute Engine writes them.
HTTP_ERRORS = {
    "auth": FakeResponse(
        403,
        error_body(
            403,
            "forbidden",
            "Required 'compute.instances.create' permission for "
            "'projects/gpubroker-test/zones/us-central1-a/instances/x'",
        ),
    ),
    "invalid": FakeResponse(
        400, error_body(400, "invalid", "Invalid value for field 'resource.machineType'")
    ),
    "throttle": FakeResponse(
        429,
        error_body(
            429,
            "rateLimitExceeded",
            "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of "
            "service 'compute.googleapis.com' for consumer 'project_number:1234'.",
            "RESOURCE_EXHAUSTED",
        ),
    ),
    "server": FakeResponse(
        503, error_body(503, "backendError", "Internal error. Please try again.", "UNAVAILABLE")
    ),
}


@dataclass
class Clock:
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 24, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now


@dataclass
class GcpHarness:
    provider: GcpProvider
    fake: FakeGce
    clock: Clock
    launch_errors: frozenset[str] = frozenset(ERROR_KINDS)

    def request(self, instance_id: str, capacity: CapacityType = CapacityType.ON_DEMAND) -> LaunchRequest:
        reservation = "h100-res" if capacity is CapacityType.RESERVED else None
        return LaunchRequest(
            instance_id, "a3-highgpu-8g", "us-central1", capacity, zone=ZONE, reservation_id=reservation
        )

    def fail_next(self, operation: str, kind: str) -> None:
        if operation == "launch" and kind == "capacity":
            self.fake.fail_insert_with(
                "ZONE_RESOURCE_POOL_EXHAUSTED",
                f"The zone 'projects/gpubroker-test/zones/{ZONE}' does not have enough resources "
                "available to fulfill the request.  Try a different zone, or try again later.",
                503,
                "SERVICE UNAVAILABLE",
            )
        elif operation == "launch" and kind == "quota":
            self.fake.fail_insert_with(
                "QUOTA_EXCEEDED",
                "Quota 'NVIDIA_H100_GPUS' exceeded.  Limit: 0.0 in region us-central1.",
                403,
                "FORBIDDEN",
            )
        else:
            path = INSTANCES_PATH if operation == "launch" else MACHINE_TYPES_AGG_PATH
            self.fake.server.inject("POST" if operation == "launch" else "GET", path, HTTP_ERRORS[kind])

    def lose_next_launch_response(self) -> None:
        self.fake.server.lose_response("POST", INSTANCES_PATH)

    def preempt(self, request: LaunchRequest) -> None:
        self.fake.preempt(request.zone or ZONE, request.name)

    def live_instance_count(self) -> int:
        return self.fake.live_count()


def make_provider(
    fake: FakeGce, clock: Clock, credentials: Credentials | None = None, **kwargs: Any
) -> GcpProvider:
    return GcpProvider(
        project=fake.project,
        credentials=credentials or AnonymousCredentials(),
        zones=ZONES,
        api_endpoint=fake.server.base_url,
        billing_endpoint=fake.server.base_url,
        clock=clock,
        timeout=5.0,
        **kwargs,
    )


@pytest.fixture
def fake() -> Iterator[FakeGce]:
    server = FakeGce()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def harness(fake: FakeGce) -> GcpHarness:
    clock = Clock()
    return GcpHarness(make_provider(fake, clock), fake, clock)


class TestContract(ProviderContract):
    pass


# --- offers and prices ---------------------------------------------------------------------------
def offer_map(harness: GcpHarness) -> dict[tuple[str, str, CapacityType], object]:
    return {(o.zone, o.instance_type, o.capacity_type): o for o in harness.provider.list_offers()}


def test_a3_highgpu_8g_is_priced_as_cores_ram_gpus_and_bundled_local_ssd(harness: GcpHarness) -> None:
    offers = offer_map(harness)
    on_demand = offers[(ZONE, "a3-highgpu-8g", CapacityType.ON_DEMAND)]
    # 208 vCPU x 0.02181159 + 1872 GiB x 0.0027162 + 8 x 9.796550569 + 6000 GiB x 0.08/730
    expected = (
        Decimal("208") * Decimal("0.02181159")
        + Decimal("1872") * Decimal("0.0027162")
        + 8 * Decimal("9.796550569")
        + 6000 * Decimal("0.08") / 730
    ).quantize(Decimal("0.000001"))
    assert on_demand.price_per_hour == expected == Decimal("88.651476")
    assert (on_demand.accelerator, on_demand.accelerator_count) == ("H100", 8)
    assert (on_demand.vcpus, on_demand.memory_gib, on_demand.region) == (
        Decimal(208),
        Decimal(1872),
        "us-central1",
    )
    assert on_demand.source == "gcp:billing-catalog" and on_demand.availability is Availability.UNKNOWN
    assert on_demand.observed_at == harness.clock.now
    spot = offers[(ZONE, "a3-highgpu-8g", CapacityType.SPOT)]
    expected_spot = (
        208 * Decimal("0.006543477")
        + 1872 * Decimal("0.00081486")
        + 8 * Decimal("2.253206")
        + 6000 * Decimal("0.048") / 730
    ).quantize(Decimal("0.000001"))
    assert spot.price_per_hour == expected_spot


def test_region_specific_sku_beats_the_multi_region_one(harness: GcpHarness) -> None:
    offers = offer_map(harness)
    virginia = offers[("us-east4-a", "a3-highgpu-8g", CapacityType.ON_DEMAND)].price_per_hour
    iowa = offers[(ZONE, "a3-highgpu-8g", CapacityType.ON_DEMAND)].price_per_hour
    assert virginia - iowa == (8 * (Decimal("10.005") - Decimal("9.796550569"))).quantize(Decimal("0.000001"))


def test_gpu_names_are_canonical_and_on_demand_only_where_gcp_sells_it(harness: GcpHarness) -> None:
    offers = offer_map(harness)
    assert (
        offers[(ZONE, "a3-megagpu-8g", CapacityType.ON_DEMAND)].accelerator == "H100"
    )  # "H100 80GB Plus GPU"
    assert offers[(ZONE, "a2-highgpu-1g", CapacityType.ON_DEMAND)].accelerator == "A100"
    assert offers[("europe-west1-c", "a2-highgpu-1g", CapacityType.ON_DEMAND)].price_per_hour == Decimal(
        "4.043064"
    )
    assert (ZONE, "a3-highgpu-1g", CapacityType.ON_DEMAND) not in offers  # Spot / Flex-start only
    assert offers[(ZONE, "a3-highgpu-1g", CapacityType.SPOT)].accelerator_count == 1
    ultra = offers[("us-east4-a", "a3-ultragpu-8g", CapacityType.SPOT)]
    assert (ultra.accelerator, ultra.accelerator_count) == ("H200", 8)
    assert all(o.zone in ZONES for o in offers.values() if o.capacity_type is not CapacityType.RESERVED)
    assert not [o for o in offers.values() if o.instance_type.startswith("n2-")]


def test_reservations_are_reserved_offers_with_availability(harness: GcpHarness) -> None:
    harness.fake.reservations[ZONE].append(harness.fake.reservation("full-res", "a3-highgpu-8g", 1, in_use=1))
    harness.fake.reservations["us-east4-a"] = [harness.fake.reservation("cpu-res", "n2-standard-8", 4)]
    reserved = {
        o.source: o for o in harness.provider.list_offers() if o.capacity_type is CapacityType.RESERVED
    }
    assert set(reserved) == {"gcp:reservation/h100-res", "gcp:reservation/full-res"}
    assert reserved["gcp:reservation/h100-res"].availability is Availability.AVAILABLE
    assert reserved["gcp:reservation/full-res"].availability is Availability.UNAVAILABLE
    on_demand = offer_map(harness)[(ZONE, "a3-highgpu-8g", CapacityType.ON_DEMAND)]
    assert reserved["gcp:reservation/h100-res"].price_per_hour == on_demand.price_per_hour


def test_offers_filter_by_region_and_the_requests_are_filtered_and_paged(harness: GcpHarness) -> None:
    offers = harness.provider.list_offers(regions=["europe-west1"])
    assert {o.zone for o in offers} == {"europe-west1-c"}
    machine_calls = harness.fake.server.calls("GET", MACHINE_TYPES_AGG_PATH)
    assert len(machine_calls) == 3  # 5 zones, 2 per page
    assert machine_calls[0].query["filter"][0].startswith('name eq "(a3-highgpu-1g|')
    sku_calls = harness.fake.server.calls("GET", SKUS_PATH)
    assert len(sku_calls) == -(-len(harness.fake.skus) // 4) and sku_calls[0].query["pageSize"] == ["5000"]
    assert sku_calls[0].path == "/v1/services/6F81-5844-456A/skus"


def test_the_price_book_is_read_once_per_ttl(harness: GcpHarness) -> None:
    harness.provider.list_offers()
    harness.provider.list_offers()
    calls = len(harness.fake.server.calls("GET", SKUS_PATH))
    harness.clock.now += timedelta(hours=7)
    offers = harness.provider.list_offers()
    assert len(harness.fake.server.calls("GET", SKUS_PATH)) == 2 * calls
    assert {o.observed_at for o in offers} == {harness.clock.now}


def test_catalog_errors_are_typed(harness: GcpHarness) -> None:
    harness.fake.server.inject(
        "GET",
        SKUS_PATH,
        FakeResponse(
            403,
            {
                "error": {
                    "code": 403,
                    "message": "Cloud Billing API has not been used in project 1234 before or it is "
                    "disabled.",
                    "status": "PERMISSION_DENIED",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "SERVICE_DISABLED",
                            "domain": "googleapis.com",
                        }
                    ],
                }
            },
        ),
    )
    with pytest.raises(AuthError) as raised:
        harness.provider.list_offers()
    assert raised.value.code == "SERVICE_DISABLED"


# --- launch request shapes -----------------------------------------------------------------------
def sent_insert(harness: GcpHarness) -> tuple[dict, dict[str, list[str]]]:
    call = harness.fake.server.calls("POST", INSTANCES_PATH)[-1]
    return call.json(), call.query


def test_on_demand_launch_sends_name_labels_request_id_and_gpu_scheduling(harness: GcpHarness) -> None:
    request = LaunchRequest(
        "job-1",
        "a3-highgpu-8g",
        "us-central1",
        CapacityType.ON_DEMAND,
        zone=ZONE,
        labels={"team": "ml"},
        ssh_public_key="ssh-ed25519 AAAA me",
    )
    instance = harness.provider.launch(request)
    assert (instance.state, instance.instance_id, instance.public_ip) == (
        InstanceState.RUNNING,
        "job-1",
        "34.121.7.20",
    )
    body, query = sent_insert(harness)
    assert body["name"] == "gpubroker-job-1"
    assert body["machineType"] == f"zones/{ZONE}/machineTypes/a3-highgpu-8g"
    assert body["labels"] == {"team": "ml", "gpubroker-managed": "true", "gpubroker-instance-id": "job-1"}
    assert body["scheduling"] == {
        "provisioningModel": "STANDARD",
        "onHostMaintenance": "TERMINATE",
        "automaticRestart": True,
    }
    assert body["reservationAffinity"] == {"consumeReservationType": "NO_RESERVATION"}
    assert body["networkInterfaces"][0]["nicType"] == "GVNIC"
    disk = body["disks"][0]
    assert disk["boot"] and disk["autoDelete"]
    assert disk["initializeParams"]["diskType"] == f"zones/{ZONE}/diskTypes/pd-balanced"
    assert disk["initializeParams"]["sourceImage"] == "projects/debian-cloud/global/images/family/debian-12"
    assert body["metadata"]["items"] == [{"key": "ssh-keys", "value": "gpubroker:ssh-ed25519 AAAA me"}]
    assert len(query["requestId"][0]) == 36
    assert len(harness.fake.server.calls("POST", r".*/operations/[^/]+/wait")) == 1


def test_spot_launch_asks_for_spot_with_delete_on_preemption(harness: GcpHarness) -> None:
    instance = harness.provider.launch(harness.request("spot-1", CapacityType.SPOT))
    assert instance.capacity_type is CapacityType.SPOT
    body, _ = sent_insert(harness)
    assert body["scheduling"] == {
        "provisioningModel": "SPOT",
        "instanceTerminationAction": "DELETE",
        "onHostMaintenance": "TERMINATE",
        "automaticRestart": False,
    }


def test_reserved_launch_targets_the_reservation_by_name(harness: GcpHarness) -> None:
    instance = harness.provider.launch(harness.request("res-1", CapacityType.RESERVED))
    assert instance.capacity_type is CapacityType.RESERVED
    body, _ = sent_insert(harness)
    assert body["reservationAffinity"] == {
        "consumeReservationType": "SPECIFIC_RESERVATION",
        "key": "compute.googleapis.com/reservation-name",
        "values": ["h100-res"],
    }


def test_request_id_is_stable_within_a_window_and_changes_after(harness: GcpHarness) -> None:
    request = harness.request("rid-1")
    harness.fake.fail_insert_with("ZONE_RESOURCE_POOL_EXHAUSTED", "no room", 503, "SERVICE UNAVAILABLE")
    with pytest.raises(InsufficientCapacity):
        harness.provider.launch(request)
    with pytest.raises(InsufficientCapacity):  # same requestId: GCE replays the failed Operation
        harness.provider.launch(request)
    first, second = (c.query["requestId"][0] for c in harness.fake.server.calls("POST", INSTANCES_PATH))
    assert first == second
    harness.clock.now += timedelta(minutes=10)
    assert harness.provider.launch(request).state is InstanceState.RUNNING  # a fresh attempt
    assert harness.fake.server.calls("POST", INSTANCES_PATH)[-1].query["requestId"][0] != first


def test_launch_of_an_existing_name_returns_it(harness: GcpHarness) -> None:
    request = harness.request("dup-1")
    first = harness.provider.launch(request)
    harness.clock.now += timedelta(hours=1)  # new requestId: the name alone keeps it one instance
    again = harness.provider.launch(request)
    assert again.provider_instance_id == first.provider_instance_id
    assert harness.fake.live_count() == 1


def test_an_operation_still_running_after_the_wait_is_pending(harness: GcpHarness) -> None:
    harness.fake.hold_operations = True
    instance = harness.provider.launch(harness.request("slow-1"))
    assert instance.state is InstanceState.PENDING and instance.provider_instance_id


# HTTP answers to an insert, as Compute Engine words them -> the error the adapter must raise.
HTTP_ERROR_TABLE = [
    (400, "invalid", "Invalid value for field 'resource.labels'", InvalidRequest),
    (401, "required", "Request is missing required authentication credential.", AuthError),
    (403, "forbidden", "Required 'compute.instances.create' permission", AuthError),
    (403, "accessNotConfigured", "Compute Engine API has not been used in project 1234", AuthError),
    (403, "quotaExceeded", "Quota 'GPUS_ALL_REGIONS' exceeded.  Limit: 0.0 globally.", QuotaExceeded),
    (403, "rateLimitExceeded", "Rate Limit Exceeded", Transient),  # throttling, though a 403
    (404, "notFound", "The resource 'projects/p/global/images/family/nope' was not found", InvalidRequest),
    (409, "resourceInUseByAnotherResource", "The reservation is in use", InvalidRequest),
    (429, "rateLimitExceeded", "Quota exceeded for quota metric 'Queries'", Transient),
    (500, "internalError", "Internal Error", Transient),
    (503, "backendError", "Internal error. Please try again.", Transient),
]


@pytest.mark.parametrize(("status", "reason", "message", "expected"), HTTP_ERROR_TABLE)
def test_http_errors_on_insert_are_typed(
    harness: GcpHarness, status: int, reason: str, message: str, expected: type
) -> None:
    harness.fake.server.inject(
        "POST", INSTANCES_PATH, FakeResponse(status, error_body(status, reason, message))
    )
    with pytest.raises(expected) as raised:
        harness.provider.launch(harness.request("http-err"))
    assert raised.value.provider == "gcp" and raised.value.region == "us-central1"
    if status != 401:  # on 401 google-auth refreshes the token first; anonymous credentials cannot
        assert raised.value.code == reason and message in str(raised.value)


def test_retry_after_is_read_when_sent(harness: GcpHarness) -> None:
    body = error_body(403, "rateLimitExceeded", "Rate Limit Exceeded")
    harness.fake.server.inject("POST", INSTANCES_PATH, FakeResponse(403, body, headers={"Retry-After": "7"}))
    with pytest.raises(Transient) as raised:
        harness.provider.launch(harness.request("rate-1"))
    assert raised.value.retry_after == 7.0


def test_a_non_json_gateway_error_is_transient(harness: GcpHarness) -> None:
    html = FakeResponse(502, b"<html><body>502 Bad Gateway</body></html>", {"Content-Type": "text/html"})
    harness.fake.server.inject("GET", MACHINE_TYPES_AGG_PATH, html)
    with pytest.raises(Transient):
        harness.provider.list_offers()


def test_an_operation_error_the_table_does_not_know_falls_back_to_its_http_status(
    harness: GcpHarness,
) -> None:
    harness.fake.fail_insert_with("SOMETHING_NEW", "a new kind of failure", 503, "SERVICE UNAVAILABLE")
    with pytest.raises(Transient) as raised:
        harness.provider.launch(harness.request("new-err"))
    assert raised.value.code == "SOMETHING_NEW"
    assert harness.fake.live_count() == 0


def test_an_unknown_machine_type_is_invalid(harness: GcpHarness) -> None:
    request = LaunchRequest("bad-1", "a3-nosuch-8g", "us-central1", CapacityType.ON_DEMAND, zone=ZONE)
    with pytest.raises(InvalidRequest) as raised:
        harness.provider.launch(request)
    assert "does not exist in zone" in str(raised.value)


def test_connection_refused_is_transient(fake: FakeGce) -> None:
    provider = GcpProvider(
        project="p",
        credentials=AnonymousCredentials(),
        zones=ZONES,
        api_endpoint="http://127.0.0.1:9",
        billing_endpoint="http://127.0.0.1:9",
        timeout=2,
    )
    with pytest.raises(Transient) as raised:
        provider.get_instance("job-1", region="us-central1")
    assert raised.value.code == "transport"
    status = provider.check()
    assert (status.configured, status.reachable) == (True, False)


# --- state, preemption, termination --------------------------------------------------------------
@pytest.mark.parametrize("status", sorted(INSTANCE_STATES))
def test_every_gce_status_maps(harness: GcpHarness, status: str) -> None:
    request = harness.request("state-1")
    harness.provider.launch(request)
    harness.fake.instances[(ZONE, request.name)]["status"] = status
    got = harness.provider.get_instance("state-1", region="us-central1")
    assert got is not None and got.state is INSTANCE_STATES[status]


def test_gce_terminated_is_stopped_not_gone(harness: GcpHarness) -> None:
    assert INSTANCE_STATES["TERMINATED"] is InstanceState.STOPPED
    assert INSTANCE_STATES["RUNNING"] is InstanceState.RUNNING


def test_spot_stopped_on_preemption_is_preempted_and_found_by_the_documented_filter(fake: FakeGce) -> None:
    provider = make_provider(fake, Clock(), spot_termination_action="STOP")
    request = LaunchRequest("stop-1", "a3-highgpu-8g", "us-central1", CapacityType.SPOT, zone=ZONE)
    provider.launch(request)
    assert (
        fake.server.calls("POST", INSTANCES_PATH)[-1].json()["scheduling"]["instanceTerminationAction"]
        == "STOP"
    )
    fake.preempt(ZONE, request.name)
    got = provider.get_instance("stop-1", region="us-central1")
    assert got is not None and (got.state, got.state_reason) == (
        InstanceState.PREEMPTED,
        "compute.instances.preempted",
    )
    listed = provider.list_instances()
    assert [i.state for i in listed] == [InstanceState.PREEMPTED]
    query = fake.server.calls("GET", r".*/zones/us-central1-a/operations")[-1].query["filter"][0]
    assert query == (
        'operationType="compute.instances.preempted" AND targetLink="https://www.googleapis.com/'
        'compute/v1/projects/gpubroker-test/zones/us-central1-a/instances/gpubroker-stop-1"'
    )


def test_a_stopped_on_demand_vm_is_not_preempted(harness: GcpHarness) -> None:
    request = harness.request("od-stop")
    harness.provider.launch(request)
    harness.fake.instances[(ZONE, request.name)]["status"] = "TERMINATED"
    got = harness.provider.get_instance("od-stop", region="us-central1")
    assert got is not None and got.state is InstanceState.STOPPED
    assert not harness.fake.server.calls("GET", r".*/operations")


def test_terminate_deletes_by_name_and_waits(harness: GcpHarness) -> None:
    request = harness.request("del-1")
    harness.provider.launch(request)
    harness.provider.terminate("del-1", region="us-central1")
    deletes = harness.fake.server.calls("DELETE", INSTANCES_PATH + "/gpubroker-del-1")
    assert len(deletes) == 1 and deletes[0].query["requestId"]
    assert harness.provider.get_instance("del-1", region="us-central1") is None


def test_list_instances_uses_our_label_and_region(harness: GcpHarness) -> None:
    harness.provider.launch(harness.request("lst-1"))
    harness.provider.launch(LaunchRequest("lst-2", "a3-highgpu-8g", "us-east4", CapacityType.ON_DEMAND))
    assert {i.instance_id for i in harness.provider.list_instances()} == {"lst-1", "lst-2"}
    assert [i.zone for i in harness.provider.list_instances(regions=["us-east4"])] == ["us-east4-a"]
    call = harness.fake.server.calls("GET", r".*/aggregated/instances")[-1]
    assert call.query["filter"] == ['labels.gpubroker-managed = "true"']


# --- error table ---------------------------------------------------------------------------------
@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_every_documented_code_maps_to_its_type(code: str) -> None:
    error = error_for_code(code, "message", region="us-central1")
    assert type(error) is ERROR_CODES[code] and error.code == code and error.provider == "gcp"


def test_the_error_table_says_what_matters() -> None:
    assert ERROR_CODES["ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"] is InsufficientCapacity
    assert ERROR_CODES["QUOTA_EXCEEDED"] is ERROR_CODES["quotaExceeded"] is QuotaExceeded
    assert ERROR_CODES["rateLimitExceeded"] is Transient
    assert ERROR_CODES["notFound"] is NotFound
    assert type(error_for_code("RESOURCE_NOT_FOUND", "m", region=None, launching=True)) is InvalidRequest


# --- configuration and secrets -------------------------------------------------------------------
def test_check_reports_status(harness: GcpHarness) -> None:
    assert harness.provider.check().reachable
    harness.fake.server.inject("GET", INSTANCES_PATH, HTTP_ERRORS["auth"])
    status = harness.provider.check()
    assert (status.configured, status.reachable) == (False, True)


def test_credentials_never_reach_logs_errors_or_repr(fake: FakeGce, caplog: pytest.LogCaptureFixture) -> None:
    secret = "ya29.a0-SECRET-TOKEN-never-print"
    credentials = OAuthCredentials(token=secret, expiry=datetime(2099, 1, 1))  # noqa: DTZ001 - google-auth wants naive UTC
    provider = make_provider(fake, Clock(), credentials=credentials)
    caplog.set_level(logging.DEBUG)
    provider.list_offers()
    assert fake.server.requests[-1].headers["authorization"] == f"Bearer {secret}"
    fake.server.inject("POST", INSTANCES_PATH, HTTP_ERRORS["auth"])
    with pytest.raises(AuthError) as raised:
        provider.launch(LaunchRequest("sec-1", "a3-highgpu-8g", "us-central1", CapacityType.ON_DEMAND))
    assert secret not in str(raised.value) and secret not in repr(provider)
    assert secret not in caplog.text


def test_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in ("GPUBROKER_GCP_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS", "GPUBROKER_GCP_ZONES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    assert gcp.from_environment() is None  # nothing configured: the metadata server is not probed
    monkeypatch.setenv("GPUBROKER_GCP_PROJECT", "my-project")
    monkeypatch.setenv("GPUBROKER_GCP_ZONES", "us-east4-a, us-central1-b")
    monkeypatch.setattr(gcp.google.auth, "default", lambda scopes: (AnonymousCredentials(), "other-project"))
    provider = gcp.from_environment()
    assert provider is not None and provider.project == "my-project"
    assert provider.zones == ("us-east4-a", "us-central1-b")
    assert provider.capabilities.regions == ("us-east4", "us-central1")
