"""Azure adapter against local fakes of ARM (Compute) and the Retail Prices API (no network)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.mgmt.compute import ComputeManagementClient

from broker.core.errors import (
    AuthError,
    InsufficientCapacity,
    InvalidRequest,
    ProviderError,
    QuotaExceeded,
    Transient,
)
from broker.core.ports import InstanceState, LaunchRequest
from broker.core.types import Availability, CapacityType
from providers.azure import DEFAULT_REGIONS, ERROR_CODES, AzureProvider, from_environment, vm_state
from providers.azure_pricing import GPU_SIZES, gpu_model, prices_from_items
from tests.providers.contract import ProviderContract
from tests.providers.fakes.azure import (
    ERRORS,
    PRICES_PATH,
    RESOURCE_GROUP,
    SKUS_API_VERSION,
    SKUS_PATH,
    SUBSCRIPTION,
    TOKEN,
    VM_PATH,
    VMS_API_VERSION,
    FakeAzure,
    FakeRetailPrices,
    FakeVM,
    arm_error,
)
from tests.providers.fakes.http import FakeResponse

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTests gpubroker@test"
SUBNET = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/"
    "gpu-eastus/subnets/gpus"
)
H100 = "Standard_ND96isr_H100_v5"
EAST_GPU_SIZES = {H100, "Standard_NC40ads_H100_v5", "Standard_ND96amsr_A100_v4"}
SPOT_CAP = {"maxPrice": -1}  # pay up to the on-demand price


class FakeCredential:
    """A TokenCredential whose token the fake ARM accepts."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.scopes: tuple[str, ...] = ()

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes = scopes
        if self.fail:
            raise ClientAuthenticationError("AADSTS7000215: Invalid client secret provided: s3cr3t-value")
        return AccessToken(TOKEN, int(time.time()) + 3600)


@pytest.fixture
def fake() -> Iterator[FakeAzure]:
    arm = FakeAzure()
    arm.start()
    yield arm
    arm.stop()


@pytest.fixture
def prices() -> Iterator[FakeRetailPrices]:
    retail = FakeRetailPrices()
    retail.start()
    yield retail
    retail.stop()


def make_provider(fake: FakeAzure, prices: FakeRetailPrices, **kwargs: Any) -> AzureProvider:
    options: dict[str, Any] = {
        "regions": ("eastus", "westus3"),
        "subnet_ids": {"eastus": SUBNET},
        "base_url": fake.server.base_url,
        "prices_base_url": prices.server.base_url,
        "clock": lambda: NOW,
        "timeout": 5.0,
        "allow_insecure_http": True,
    }
    options.update(kwargs)
    credential = options.pop("credential", FakeCredential())
    return AzureProvider(credential, SUBSCRIPTION, RESOURCE_GROUP, **options)


@dataclass
class AzureHarness:
    fake: FakeAzure
    prices: FakeRetailPrices
    provider: AzureProvider
    launch_errors: frozenset[str] = field(default=frozenset(ERRORS))

    def request(self, instance_id: str, capacity: CapacityType = CapacityType.ON_DEMAND) -> LaunchRequest:
        reservation = "gpubroker-h100" if capacity is CapacityType.RESERVED else None
        return LaunchRequest(
            instance_id,
            H100,
            "eastus",
            capacity,
            zone="eastus-1",
            reservation_id=reservation,
            ssh_public_key=SSH_KEY,
        )

    def fail_next(self, operation: str, kind: str) -> None:
        method, path = {"launch": ("PUT", VM_PATH), "list_offers": ("GET", SKUS_PATH)}[operation]
        self.fake.fail_next(method, path, kind)

    def lose_next_launch_response(self) -> None:
        self.fake.server.lose_response("PUT", VM_PATH)

    def preempt(self, request: LaunchRequest) -> None:
        self.fake.evict(request.name)

    def live_instance_count(self) -> int:
        return self.fake.live_count()


@pytest.fixture
def harness(fake: FakeAzure, prices: FakeRetailPrices) -> AzureHarness:
    return AzureHarness(fake, prices, make_provider(fake, prices))


class TestContract(ProviderContract):
    pass


def put_bodies(fake: FakeAzure) -> list[dict[str, Any]]:
    return [call.json() for call in fake.server.calls("PUT", VM_PATH)]


# --- offers -----------------------------------------------------------------------------------------
def test_offers_are_parsed_from_skus_and_retail_prices(harness: AzureHarness) -> None:
    offers = harness.provider.list_offers()
    by_key = {(o.region, o.zone, o.instance_type, o.capacity_type): o for o in offers}
    od = by_key[("eastus", "eastus-1", H100, CapacityType.ON_DEMAND)]
    assert od.price_per_hour == Decimal("98.32")  # the 2024 price, not the superseded 101.5
    assert (od.accelerator, od.accelerator_count, od.vcpus, od.memory_gib) == ("H100", 8, 96, 1900)
    assert od.availability is Availability.UNKNOWN and od.observed_at == NOW
    assert od.source == "azure:retail-prices-api" and od.currency == "USD" and od.cloud == "azure"
    assert by_key[("eastus", "eastus-3", H100, CapacityType.SPOT)].price_per_hour == Decimal("29.496")
    reserved = by_key[("eastus", "eastus-2", H100, CapacityType.RESERVED)]
    assert reserved.price_per_hour == Decimal("61.941553")  # 542608 / 8760, to the micro-dollar
    assert reserved.source == "azure:retail-prices-api:reservation-1-year"
    # NC H100 v5 is H100 NVL, one GPU, and this size is not Spot-capable (LowPriorityCapable False)
    nc = [o for o in offers if o.instance_type == "Standard_NC40ads_H100_v5"]
    assert {o.accelerator for o in nc} == {"H100"} and {o.accelerator_count for o in nc} == {1}
    assert CapacityType.SPOT not in {o.capacity_type for o in nc}
    # Zone restriction: zone 2 only; Location restriction: the whole region
    a100 = {o.zone: o.availability for o in offers if o.instance_type == "Standard_ND96amsr_A100_v4"}
    unknown, unavailable = Availability.UNKNOWN, Availability.UNAVAILABLE
    assert a100 == {"eastus-1": unknown, "eastus-2": unavailable, "eastus-3": unknown}
    west = [o for o in offers if o.instance_type == "Standard_NC24ads_A100_v4"]
    assert west and all(o.zone is None and o.availability is Availability.UNAVAILABLE for o in west)
    assert {o.accelerator for o in west} == {"A100-80GB"}
    # disks, a CPU size and a sliced graphics GPU are not offers
    assert {o.instance_type for o in offers} == {*EAST_GPU_SIZES, "Standard_NC24ads_A100_v4"}


def test_offer_requests_are_the_documented_ones(harness: AzureHarness) -> None:
    harness.provider.list_offers(regions=["westus3"])
    (skus,) = harness.fake.server.calls("GET", SKUS_PATH)
    assert skus.query["api-version"] == [SKUS_API_VERSION]
    assert skus.query["$filter"] == ["location eq 'westus3'"]
    assert skus.headers["authorization"] == f"Bearer {TOKEN}"
    price_filters = [c.query["$filter"][0] for c in harness.prices.server.calls("GET", PRICES_PATH)]
    assert price_filters == [
        f"serviceName eq 'Virtual Machines' and armRegionName eq 'westus3' and armSkuName eq '{size}'"
        for size in (H100, "Standard_NC24ads_A100_v4")
    ]
    assert all("authorization" not in c.headers for c in harness.prices.server.requests)  # public API


def test_retail_prices_query_and_paging(fake: FakeAzure) -> None:
    retail = FakeRetailPrices(page_size=3)
    retail.start()
    try:
        provider = make_provider(fake, retail, regions=("westus3",))
        offers = provider.list_offers()
        calls = retail.server.calls("GET", PRICES_PATH)
    finally:
        retail.stop()
    first = calls[0].query["$filter"][0]
    assert (
        first
        == f"serviceName eq 'Virtual Machines' and armRegionName eq 'westus3' and armSkuName eq '{H100}'"
    )
    assert [c.query.get("$skip", ["0"])[0] for c in calls[:3]] == ["0", "3", "6"]  # 8 items, pages of 3
    spot = [o for o in offers if o.instance_type == H100 and o.capacity_type is CapacityType.SPOT]
    assert {o.price_per_hour for o in spot} == {Decimal("24.58")}


def test_sku_paging_follows_next_link(prices: FakeRetailPrices) -> None:
    arm = FakeAzure(page_size=2)
    arm.start()
    try:
        offers = make_provider(arm, prices, regions=("eastus",)).list_offers()
        pages = arm.server.calls("GET", SKUS_PATH)
    finally:
        arm.stop()
    assert len(pages) == 3 and pages[1].query["$skiptoken"] == ["2"]
    assert {o.instance_type for o in offers} == EAST_GPU_SIZES


def test_three_year_reservations(fake: FakeAzure, prices: FakeRetailPrices) -> None:
    provider = make_provider(fake, prices, regions=("eastus",), reservation_term="3 Years")
    reserved = [o for o in provider.list_offers() if o.capacity_type is CapacityType.RESERVED]
    h100 = {o.price_per_hour for o in reserved if o.instance_type == H100}
    assert h100 == {(Decimal("1110906.0") / 26280).quantize(Decimal("0.000001"))}


def test_prices_pick_linux_and_ignore_other_rows() -> None:
    def row(price: str, **kw: Any) -> dict[str, Any]:
        base = {"currencyCode": "USD", "unitOfMeasure": "1 Hour", "productName": "Virtual Machines X Series"}
        return {**base, "type": "Consumption", "meterName": "X", "retailPrice": Decimal(price), **kw}

    items = [
        row("2.5"),
        row("3", productName="Virtual Machines X Series Windows"),
        row("0.1", meterName="X Low Priority"),
        row("1", type="DevTestConsumption"),
        row("9", isPrimaryMeterRegion=False),
        row("0.75", skuName="X Spot"),
        row("0", type="Reservation", reservationTerm="1 Year", unitPrice=Decimal(8760)),
        row("0", type="Reservation", reservationTerm="5 Years", unitPrice=Decimal(1)),
    ]
    prices = prices_from_items(items)
    expected = (Decimal("2.5"), Decimal("0.75"), {"1 Year": Decimal("1.000000")})
    assert (prices.on_demand, prices.spot, dict(prices.reserved)) == expected


@pytest.mark.parametrize(
    ("size", "model"),
    [
        (H100, "H100"),
        ("Standard_ND96isr_H200_v5", "H200"),
        ("Standard_NC80adis_H100_v5", "H100"),
        ("Standard_NCC40ads_H100_v5", "H100"),
        ("Standard_ND96asr_v4", "A100"),
        ("Standard_ND96amsr_A100_v4", "A100-80GB"),
        ("Standard_NC96ads_A100_v4", "A100-80GB"),
        ("Standard_ND96isr_MI300X_v5", "MI300X"),
        ("Standard_NC64as_T4_v3", "T4"),
        ("Standard_NC24s_v3", "V100"),
        ("Standard_NC24rs_v3", "V100"),
        ("Standard_ND40rs_v2", "V100"),
        ("Standard_NV36ads_A10_v5", None),
        ("Standard_D4s_v5", None),
    ],
)
def test_gpu_size_table(size: str, model: str | None) -> None:
    assert gpu_model(size) == model
    assert len(GPU_SIZES) >= 10


def test_retail_prices_errors_are_typed(fake: FakeAzure, prices: FakeRetailPrices) -> None:
    prices.server.inject("GET", PRICES_PATH, FakeResponse(429, {"Error": "throttled"}, {"Retry-After": "4"}))
    with pytest.raises(Transient) as raised:
        make_provider(fake, prices).list_offers()
    assert raised.value.retry_after == 4 and raised.value.provider == "azure"
    prices.server.inject(
        "GET", PRICES_PATH, FakeResponse(200, {"Items": [], "NextPageLink": "https://evil.example/x"})
    )
    with pytest.raises(Transient):
        make_provider(fake, prices).list_offers()


# --- launch -----------------------------------------------------------------------------------------
def test_launch_sends_the_documented_vm_body(harness: AzureHarness) -> None:
    request = replace(harness.request("req-shape"), labels={"team": "ml"})
    instance = harness.provider.launch(request)
    assert instance.state is InstanceState.PENDING  # the 201 says Creating: we do not wait
    assert instance.zone == "eastus-1" and instance.capacity_type is CapacityType.ON_DEMAND
    assert instance.provider_instance_id.endswith("/virtualMachines/gpubroker-req-shape")
    calls = [c for c in harness.fake.server.requests if "virtualMachines/gpubroker-req-shape" in c.path]
    assert [c.method for c in calls] == ["GET", "PUT"]  # look up first, then create
    assert calls[1].query["api-version"] == [VMS_API_VERSION]
    (body,) = put_bodies(harness.fake)
    props = body["properties"]
    assert body["location"] == "eastus" and body["zones"] == ["1"]
    assert body["tags"] == {"team": "ml", "gpubroker-managed": "true", "gpubroker-instance-id": "req-shape"}
    assert props["hardwareProfile"] == {"vmSize": H100}
    assert props["storageProfile"]["imageReference"] == {
        "publisher": "microsoft-dsvm",
        "offer": "ubuntu-hpc",
        "sku": "2204",
        "version": "latest",
    }
    assert props["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    linux = props["osProfile"]["linuxConfiguration"]
    assert linux["disablePasswordAuthentication"] is True
    assert linux["ssh"]["publicKeys"] == [
        {"path": "/home/azureuser/.ssh/authorized_keys", "keyData": SSH_KEY}
    ]
    nic = props["networkProfile"]["networkInterfaceConfigurations"][0]
    assert props["networkProfile"]["networkApiVersion"] == "2022-11-01"
    assert nic["name"] == "gpubroker-req-shape-nic" and nic["properties"]["deleteOption"] == "Delete"
    ip = nic["properties"]["ipConfigurations"][0]["properties"]
    assert ip["subnet"] == {"id": SUBNET}
    assert ip["publicIPAddressConfiguration"]["properties"]["deleteOption"] == "Delete"
    assert "priority" not in props and "billingProfile" not in props


def test_spot_launch_sets_priority_eviction_and_max_price(harness: AzureHarness) -> None:
    instance = harness.provider.launch(harness.request("spot-default", CapacityType.SPOT))
    harness.provider.launch(
        replace(harness.request("spot-capped", CapacityType.SPOT), max_price_per_hour=Decimal(30))
    )
    first, second = (b["properties"] for b in put_bodies(harness.fake))
    assert (first["priority"], first["evictionPolicy"], first["billingProfile"]) == (
        "Spot",
        "Deallocate",
        SPOT_CAP,
    )
    assert second["billingProfile"] == {"maxPrice": 30}
    assert instance.capacity_type is CapacityType.SPOT


def test_reserved_launch_targets_the_capacity_reservation_group(harness: AzureHarness) -> None:
    instance = harness.provider.launch(harness.request("reserved-one", CapacityType.RESERVED))
    (body,) = put_bodies(harness.fake)
    group = body["properties"]["capacityReservation"]["capacityReservationGroup"]["id"]
    assert (
        group == f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/providers/"
        "Microsoft.Compute/capacityReservationGroups/gpubroker-h100"
    )
    assert instance.capacity_type is CapacityType.RESERVED and "priority" not in body["properties"]


def test_images_and_missing_key(harness: AzureHarness) -> None:
    gallery = (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/img/providers/Microsoft.Compute/galleries/g/images/i"
    )
    for image, expected in [
        (
            "Canonical:ubuntu-24_04-lts:server:latest",
            {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"},
        ),
        (gallery, {"id": gallery}),
    ]:
        request = replace(harness.request("img-ok"), image=image)
        assert harness.provider.vm_body(request)["properties"]["storageProfile"]["imageReference"] == expected
    bad = replace(harness.request("img-bad"), image="ubuntu")
    keyless = replace(harness.request("no-key"), ssh_public_key=None)
    for request in (bad, keyless):
        with pytest.raises(InvalidRequest):
            harness.provider.launch(request)
    assert not harness.fake.server.requests  # refused before any call


def test_relaunch_returns_the_existing_vm_without_a_second_put(harness: AzureHarness) -> None:
    request = harness.request("relaunch")
    first = harness.provider.launch(request)
    again = harness.provider.launch(request)
    assert again.provider_instance_id == first.provider_instance_id and again.state is InstanceState.RUNNING
    assert len(harness.fake.server.calls("PUT", VM_PATH)) == 1


def test_the_fake_lro_satisfies_the_sdk_poller(harness: AzureHarness) -> None:
    # The adapter does not wait (polling=False); this keeps the fake's LRO honest for the SDK's ARMPolling.
    client = ComputeManagementClient(FakeCredential(), SUBSCRIPTION, base_url=harness.fake.server.base_url)
    body = harness.provider.vm_body(harness.request("lro-wait"))
    poller = client.virtual_machines.begin_create_or_update(
        RESOURCE_GROUP, "gpubroker-lro-wait", body, polling_interval=0, enforce_https=False
    )
    vm = poller.result(timeout=10)
    assert vm.provisioning_state == "Succeeded" and harness.fake.server.calls("GET", r".*/operations/[^/]+")
    client.close()


def test_allocation_failure_after_the_put_shows_as_failed(harness: AzureHarness) -> None:
    request = harness.request("alloc-fail")
    harness.provider.launch(request)
    harness.fake.fail_provisioning(
        request.name,
        "AllocationFailed",
        "Allocation failed. We do not have sufficient capacity for the requested VM size in this region.",
    )
    got = harness.provider.get_instance("alloc-fail", region="eastus")
    assert got is not None and got.state is InstanceState.FAILED
    assert got.state_reason is not None and got.state_reason.startswith(
        "AllocationFailed: Allocation failed."
    )


def test_eviction_with_delete_policy_leaves_nothing_to_see(fake: FakeAzure, prices: FakeRetailPrices) -> None:
    provider = make_provider(fake, prices, spot_eviction_policy="Delete")
    request = AzureHarness(fake, prices, provider).request("evict-delete", CapacityType.SPOT)
    provider.launch(request)
    assert put_bodies(fake)[0]["properties"]["evictionPolicy"] == "Delete"
    fake.evict(request.name)
    assert provider.get_instance("evict-delete", region="eastus") is None  # documented limit


def test_preempted_instance_says_why(harness: AzureHarness) -> None:
    request = harness.request("evict-why", CapacityType.SPOT)
    harness.provider.launch(request)
    harness.fake.evict(request.name)
    got = harness.provider.get_instance("evict-why", region="eastus")
    assert (
        got is not None
        and got.state_reason == "Spot eviction (PowerState/deallocated, eviction policy Deallocate)"
    )


def test_terminate_sends_delete_and_deleting_is_stopping(harness: AzureHarness) -> None:
    harness.provider.launch(harness.request("term-shape"))
    harness.fake.auto_complete = False
    harness.provider.terminate("term-shape", region="eastus")
    (delete,) = harness.fake.server.calls("DELETE", VM_PATH)
    assert delete.path.endswith("/gpubroker-term-shape") and delete.query["api-version"] == [VMS_API_VERSION]
    got = harness.provider.get_instance("term-shape", region="eastus")
    assert got is not None and got.state is InstanceState.STOPPING


def test_list_instances_finds_ours_by_tag_or_name_only(harness: AzureHarness) -> None:
    harness.provider.launch(harness.request("listed-one"))
    foreign = {"id": "/x/theirs", "name": "theirs", "location": "eastus", "tags": {}, "properties": {}}
    harness.fake.vms["theirs"] = FakeVM(foreign, "Succeeded", "running")
    listed = harness.provider.list_instances()
    assert [(i.instance_id, i.state) for i in listed] == [("listed-one", InstanceState.RUNNING)]
    assert harness.provider.list_instances(regions=["westus3"]) == []


# --- tables -----------------------------------------------------------------------------------------
STATE_CASES = [
    ("Creating", None, False, InstanceState.PENDING),
    ("Succeeded", "starting", False, InstanceState.PENDING),
    ("Succeeded", "running", False, InstanceState.RUNNING),
    ("Succeeded", "running", True, InstanceState.RUNNING),
    ("Updating", "running", False, InstanceState.RUNNING),
    ("Succeeded", "stopping", False, InstanceState.STOPPING),
    ("Succeeded", "stopped", True, InstanceState.STOPPED),
    ("Succeeded", "deallocated", False, InstanceState.STOPPED),
    ("Succeeded", "deallocating", False, InstanceState.STOPPING),
    ("Succeeded", "deallocated", True, InstanceState.PREEMPTED),
    ("Succeeded", "deallocating", True, InstanceState.PREEMPTED),
    ("Failed", None, False, InstanceState.FAILED),
    ("Failed", "running", False, InstanceState.RUNNING),
    ("Deleting", "running", True, InstanceState.STOPPING),
    ("Succeeded", "unknown", False, InstanceState.UNKNOWN),
    ("Succeeded", None, False, InstanceState.RUNNING),
    ("Weird", None, False, InstanceState.UNKNOWN),
]


@pytest.mark.parametrize(("provisioning", "power", "spot", "expected"), STATE_CASES)
def test_state_table(provisioning: str, power: str | None, spot: bool, expected: InstanceState) -> None:
    assert vm_state(provisioning, power, spot=spot) is expected


ERROR_CASES: list[tuple[int, str, str, type[ProviderError]]] = [
    (409, "SkuNotAvailable", "The requested VM size is currently not available", InsufficientCapacity),
    (409, "AllocationFailed", "Allocation failed.", InsufficientCapacity),
    (409, "ZonalAllocationFailed", "Allocation failed in zone 1.", InsufficientCapacity),
    (
        409,
        "OverconstrainedAllocationRequest",
        "VM(s) with these constraints cannot fit",
        InsufficientCapacity,
    ),
    (409, "OverconstrainedZonalAllocationRequest", "Allocation failed.", InsufficientCapacity),
    (409, "OperationNotAllowed", "... exceeding approved Total Regional Cores quota.", QuotaExceeded),
    (409, "OperationNotAllowed", "... exceeding approved LowPriorityCores quota.", QuotaExceeded),
    (409, "OperationNotAllowed", "Operation 'start' is not allowed: VM marked for deletion.", InvalidRequest),
    (400, "QuotaExceeded", "Operation results in exceeding quota limits of Core.", QuotaExceeded),
    (403, "AuthorizationFailed", "does not have authorization", AuthError),
    (403, "LinkedAuthorizationFailed", "does not have permission on the linked scope", AuthError),
    (401, "InvalidAuthenticationToken", "The access token is invalid.", AuthError),
    (401, "ExpiredAuthenticationToken", "The access token expiry UTC time is earlier than now.", AuthError),
    (401, "AuthenticationFailed", "Authentication failed.", AuthError),
    (400, "InvalidParameter", "The value of parameter vmSize is invalid.", InvalidRequest),
    (400, "BadRequest", "Bad request.", InvalidRequest),
    (400, "InvalidTemplate", "Deployment template validation failed.", InvalidRequest),
    (400, "InvalidResourceReference", "Resource .../subnets/default was not found.", InvalidRequest),
    (404, "PlatformImageNotFound", "The platform image 'a:b:c:latest' is not available.", InvalidRequest),
    (404, "ResourceGroupNotFound", "Resource group 'gpubroker-test' could not be found.", InvalidRequest),
    (429, "TooManyRequests", "Too many requests.", Transient),
    (429, "SubscriptionRequestsThrottled", "Number of write requests for subscription exceeded.", Transient),
    (409, "AnotherOperationInProgress", "Another operation on this resource is in progress.", Transient),
    (500, "InternalServerError", "An unexpected error occurred.", Transient),
    (500, "InternalExecutionError", "An internal execution error occurred.", Transient),
    (503, "ServiceUnavailable", "The service is unavailable.", Transient),
    (504, "GatewayTimeout", "The gateway did not receive a response in time.", Transient),
    (502, "SomethingNew", "An unmapped 5xx.", Transient),
    (409, "SomethingElse", "An unmapped 4xx.", InvalidRequest),
]
# Codes in the table whose mapping is plain (no message rule): not each worth a request round trip.
UNTESTED_OK = {"InvalidAuthenticationTokenTenant", "SubscriptionNotFound", "InvalidTemplateDeployment",
               "InvalidRequestContent", "InvalidResourceName", "PropertyChangeNotAllowed", "ImageNotFound",
               "LocationNotAvailableForResourceType", "MissingSubscriptionRegistration", "OperationPreempted",
               "RetryableError", "ServerTimeout", "ResourceNotFound", "NotFound"}  # fmt: skip


@pytest.mark.parametrize(("status", "code", "message", "expected"), ERROR_CASES, ids=lambda v: str(v)[:40])
def test_error_code_table(
    harness: AzureHarness, status: int, code: str, message: str, expected: type[ProviderError]
) -> None:
    harness.fake.server.inject("PUT", VM_PATH, arm_error(status, code, message, Retry_After="5"))
    with pytest.raises(expected) as raised:
        harness.provider.launch(harness.request("err-table"))
    assert type(raised.value) is expected and raised.value.code == code and raised.value.region == "eastus"
    if expected is Transient:
        assert raised.value.retry_after == 5


def test_every_table_code_is_tested() -> None:
    assert set(ERROR_CODES) - {code for _, code, _, _ in ERROR_CASES} <= UNTESTED_OK


def test_throttle_is_transient_with_retry_after(harness: AzureHarness) -> None:
    harness.fail_next("launch", "throttle")
    with pytest.raises(Transient) as raised:
        harness.provider.launch(harness.request("throttled"))
    assert raised.value.retry_after == 17 and raised.value.code == "OperationNotAllowed"


def test_resource_group_missing_is_not_an_absent_instance(harness: AzureHarness) -> None:
    harness.fake.server.inject(
        "GET",
        VM_PATH,
        arm_error(404, "ResourceGroupNotFound", "Resource group 'gpubroker-test' could not be found."),
    )
    with pytest.raises(InvalidRequest):
        harness.provider.get_instance("anything", region="eastus")


def test_terminate_404_is_done(harness: AzureHarness) -> None:
    harness.fake.server.inject("DELETE", VM_PATH, harness.fake._not_found("gpubroker-gone"))
    harness.provider.terminate("gone", region="eastus")


@pytest.mark.parametrize(
    ("status", "content_type"), [(200, "application/json"), (200, "text/plain"), (502, "text/html")]
)
def test_unreadable_answers_are_transient(harness: AzureHarness, status: int, content_type: str) -> None:
    harness.fake.server.inject(
        "GET", VM_PATH, FakeResponse(status, b"<html>oops</html>", {"Content-Type": content_type})
    )
    with pytest.raises(Transient):
        harness.provider.get_instance("garbage", region="eastus")


def test_connection_errors_are_transient(fake: FakeAzure, prices: FakeRetailPrices) -> None:
    provider = make_provider(fake, prices)
    fake.stop()
    with pytest.raises(Transient) as raised:
        provider.get_instance("nobody-home", region="eastus")
    assert raised.value.code == "transport"


# --- credentials, check, environment -----------------------------------------------------------------
def test_token_never_logged_or_in_errors(harness: AzureHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    harness.provider.launch(harness.request("logs-one"))
    harness.fail_next("launch", "auth")
    with pytest.raises(AuthError) as raised:
        harness.provider.launch(harness.request("logs-two"))
    assert TOKEN not in caplog.text and TOKEN not in str(raised.value) and TOKEN not in repr(harness.provider)
    assert "fake-s3cret" not in caplog.text


def test_credential_failure_is_auth_error_without_its_secret(
    fake: FakeAzure, prices: FakeRetailPrices
) -> None:
    provider = make_provider(fake, prices, credential=FakeCredential(fail=True))
    with pytest.raises(AuthError) as raised:
        provider.get_instance("cred-fail", region="eastus")
    assert "s3cr3t" not in str(raised.value) and raised.value.code == "credential"
    status = provider.check()
    assert (status.configured, status.reachable) == (False, True)


def test_credential_scope_is_arm(harness: AzureHarness) -> None:
    credential = FakeCredential()
    provider = make_provider(harness.fake, harness.prices, credential=credential)
    provider.get_instance("scope-check", region="eastus")
    assert credential.scopes == ("https://management.azure.com/.default",)


def test_check(harness: AzureHarness) -> None:
    assert harness.provider.check().reachable and harness.provider.check().configured
    harness.fake.server.inject("GET", r".*/virtualMachines", ERRORS["auth"])
    assert harness.provider.check().configured is False
    harness.fake.server.inject("GET", r".*/virtualMachines", ERRORS["server"])
    assert harness.provider.check().reachable is False


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    assert from_environment() is None
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION)
    monkeypatch.setenv("GPUBROKER_AZURE_RESOURCE_GROUP", "rg-gpu")
    monkeypatch.setenv("GPUBROKER_AZURE_REGIONS", "eastus, westus3")
    monkeypatch.setenv("GPUBROKER_AZURE_SUBNET_IDS", f"eastus={SUBNET}")
    provider = from_environment()
    assert provider is not None and provider.capabilities.regions == ("eastus", "westus3")
    assert provider.subnet_id("eastus") == SUBNET
    assert provider.subnet_id("westus3").endswith(
        "/resourceGroups/rg-gpu/providers/Microsoft.Network/virtualNetworks/gpubroker-westus3/subnets/default"
    )
    monkeypatch.delenv("GPUBROKER_AZURE_REGIONS")
    default = from_environment()
    assert default is not None and default.capabilities.regions == DEFAULT_REGIONS


def test_capabilities(harness: AzureHarness) -> None:
    caps = harness.provider.capabilities
    assert caps.spot and caps.reservations and caps.interruption_notice_seconds == 30 and caps.live_prices
    assert caps.availability_signal is False
