"""The AWS adapter against moto's EC2 plus the fake's Price List, spot prices and reservations (offline)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import boto3
import pytest
from botocore import exceptions as sdk
from moto import mock_aws

from broker.core.errors import (
    AuthError,
    InsufficientCapacity,
    InvalidRequest,
    NotFound,
    ProviderError,
    Transient,
)
from broker.core.ports import InstanceState, LaunchRequest
from broker.core.types import Availability, CapacityType
from providers import aws_pricing
from providers.aws import (
    DEFAULT_IMAGE,
    ERROR_CODES,
    STATE_MAP,
    AwsProvider,
    client_token,
    error_type,
    from_environment,
    instance_state,
    translate,
)
from tests.providers.contract import ERROR_KINDS, ProviderContract
from tests.providers.fakes.aws import (
    ACCESS_KEY_ID,
    NOW,
    SECRET_ACCESS_KEY,
    SESSION_TOKEN,
    AwsFake,
    CapacityReservation,
    pricing_product,
)

REGIONS = ("us-east-1", "us-west-2")
EC2_URL = "https://ec2.us-east-1.amazonaws.com/"
P5_PRICE = Decimal("55.04")  # p5.48xlarge on demand, us-east-1, after the June 2025 cut


def _req(
    instance_id: str, capacity: CapacityType = CapacityType.ON_DEMAND, **fields: object
) -> LaunchRequest:
    """A p5.48xlarge request in us-east-1 unless told otherwise."""
    base: dict = {"instance_type": "p5.48xlarge", "region": "us-east-1", **fields}
    return LaunchRequest(instance_id=instance_id, capacity_type=capacity, **base)


@dataclass
class Clock:
    now: datetime = NOW

    def __call__(self):
        return self.now


@dataclass
class AwsHarness:
    provider: AwsProvider
    fake: AwsFake
    launch_errors: frozenset[str] = field(default_factory=lambda: frozenset(ERROR_KINDS))

    def request(self, instance_id: str, capacity: CapacityType = CapacityType.ON_DEMAND) -> LaunchRequest:
        return _req(instance_id, capacity, zone="us-east-1a")

    def fail_next(self, operation: str, kind: str) -> None:
        # list_offers starts with DescribeInstanceTypeOfferings; launch's first write is RunInstances.
        target = {"launch": "RunInstances", "list_offers": "DescribeInstanceTypeOfferings"}[operation]
        self.fake.fail_next_kind(target, kind)

    def lose_next_launch_response(self) -> None:
        self.fake.lose_next("RunInstances")

    def preempt(self, request: LaunchRequest) -> None:
        self.fake.preempt(request.region, request.instance_id)

    def live_instance_count(self) -> int:
        return self.fake.live_instance_count()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsFake]:
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # ~0.3 s per region; moto checks no AMI
    with mock_aws():
        yield AwsFake()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider(fake: AwsFake, clock: Clock) -> AwsProvider:
    return AwsProvider(session=fake.session(), regions=REGIONS, clock=clock)


@pytest.fixture
def harness(provider: AwsProvider, fake: AwsFake) -> AwsHarness:
    return AwsHarness(provider, fake)


class TestContract(ProviderContract):
    pass


# --- offers -------------------------------------------------------------------------------


def _offer(offers, zone, itype, capacity):
    found = [o for o in offers if (o.zone, o.instance_type, o.capacity_type) == (zone, itype, capacity)]
    assert len(found) == 1, (zone, itype, capacity, found)
    return found[0]


def test_offers_parse_catalogue_prices_and_spot_history(provider: AwsProvider) -> None:
    offers = provider.list_offers()

    p5 = _offer(offers, "us-east-1a", "p5.48xlarge", CapacityType.ON_DEMAND)
    assert p5.price_per_hour == Decimal("55.04")
    assert (p5.cloud, p5.region, p5.accelerator, p5.accelerator_count) == ("aws", "us-east-1", "H100", 8)
    assert (p5.vcpus, p5.memory_gib) == (Decimal(192), Decimal(2048))
    assert p5.source == "aws:pricing-api" and p5.observed_at == NOW and p5.currency == "USD"
    assert p5.availability is Availability.UNKNOWN
    assert p5.price_per_gpu_hour == Decimal("6.88")
    # On-demand offers in every zone that offers the type (moto: us-east-1a..f), none elsewhere.
    on_demand = {(o.zone, o.instance_type) for o in offers if o.capacity_type is CapacityType.ON_DEMAND}
    assert {z for z, t in on_demand if t == "p5.48xlarge" and z.startswith("us-east-1")} == {
        f"us-east-1{z}" for z in "abcdef"
    }

    # The newest Linux/UNIX point per zone is the price; older points and Windows prices are not.
    assert _offer(offers, "us-east-1a", "p5.48xlarge", CapacityType.SPOT).price_per_hour == Decimal("29.9813")
    assert _offer(offers, "us-east-1b", "p5.48xlarge", CapacityType.SPOT).price_per_hour == Decimal("34.5579")
    assert _offer(offers, "us-west-2b", "p5.48xlarge", CapacityType.SPOT).price_per_hour == Decimal("26.8702")
    assert _offer(offers, "us-east-1a", "p5.48xlarge", CapacityType.SPOT).source == "aws:spot-price-history"
    spot = {(o.zone, o.instance_type) for o in offers if o.capacity_type is CapacityType.SPOT}
    assert ("us-east-1d", "p5.48xlarge") not in spot  # no price history there: no spot offer

    p4d = _offer(offers, "us-east-1a", "p4d.24xlarge", CapacityType.ON_DEMAND)
    assert (p4d.accelerator, p4d.price_per_hour, p4d.memory_gib) == ("A100", Decimal("21.957642"), 1152)
    assert _offer(offers, "us-east-1a", "p5en.48xlarge", CapacityType.ON_DEMAND).accelerator == "H200"
    # Offered types without a catalogue price (p4de, p5e, p6 in the fake) give no on-demand offer.
    assert not [o for o in offers if o.instance_type == "p6-b200.48xlarge"]
    assert {o.region for o in offers} == set(REGIONS)
    assert all(o.capacity_type is not CapacityType.RESERVED for o in offers)


def test_a100_80gb_is_named_apart() -> None:
    raw = {
        "InstanceType": "p4de.24xlarge",
        "VCpuInfo": {"DefaultVCpus": 96},
        "MemoryInfo": {"SizeInMiB": 1179648},
        "SupportedUsageClasses": ["on-demand", "spot", "capacity-block"],
        "GpuInfo": {
            "Gpus": [
                {"Name": "A100", "Manufacturer": "NVIDIA", "Count": 8, "MemoryInfo": {"SizeInMiB": 81920}}
            ]
        },
    }
    spec = aws_pricing.parse_gpu_spec(raw)
    assert spec is not None and (spec.accelerator, spec.accelerator_count) == ("A100-80GB", 8)
    assert aws_pricing.parse_gpu_spec({"InstanceType": "m7i.large", "VCpuInfo": {"DefaultVCpus": 2}}) is None


def test_pricing_request_has_the_exact_filters(provider: AwsProvider, fake: AwsFake) -> None:
    provider.list_offers(regions=["us-east-1"])
    calls = [c for c in fake.calls_to("GetProducts") if c.params["Filters"][0]["Value"] == "p5.48xlarge"]
    assert len(calls) == 1
    call = calls[0]
    assert call.region == "us-east-1" and call.service == "pricing"
    assert call.params["ServiceCode"] == "AmazonEC2" and call.params["FormatVersion"] == "aws_v1"
    assert call.params["Filters"] == [
        {"Type": "TERM_MATCH", "Field": "instanceType", "Value": "p5.48xlarge"},
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": "us-east-1"},
        {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
        {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
        {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
        {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
    ]


def test_spot_and_offering_requests_on_the_wire(provider: AwsProvider, fake: AwsFake) -> None:
    provider.list_offers(regions=["us-east-1"])
    (offerings,) = fake.calls_to("DescribeInstanceTypeOfferings")
    assert offerings.params["LocationType"] == "availability-zone"
    assert offerings.params["Filter.1.Name"] == "instance-type"
    assert offerings.params["Filter.1.Value.4"] == "p5.48xlarge"
    (spot,) = fake.calls_to("DescribeSpotPriceHistory")
    assert spot.params["ProductDescription.1"] == "Linux/UNIX"
    assert spot.params["StartTime"] == "2026-11-24T12:00:00Z"
    assert "p5.48xlarge" in {v for k, v in spot.params.items() if k.startswith("InstanceType.")}


def test_every_page_is_read(provider: AwsProvider, fake: AwsFake) -> None:
    fake.page_size = 1
    # A placeholder product priced 0 comes first; the real price is on the next page.
    fake.products.insert(0, pricing_product("p5.48xlarge", "us-east-1", "0.0000000000"))
    offers = provider.list_offers(regions=["us-east-1"])
    assert _offer(offers, "us-east-1a", "p5.48xlarge", CapacityType.ON_DEMAND).price_per_hour == P5_PRICE
    assert _offer(offers, "us-east-1a", "p5.48xlarge", CapacityType.SPOT).price_per_hour == Decimal("29.9813")
    assert len(fake.calls_to("DescribeSpotPriceHistory")) > 3
    assert fake.calls_to("DescribeSpotPriceHistory")[1].params["NextToken"] == "1"
    p5_calls = [c for c in fake.calls_to("GetProducts") if c.params["Filters"][0]["Value"] == "p5.48xlarge"]
    assert len(p5_calls) == 2


def test_catalogue_prices_are_cached_for_an_hour(provider: AwsProvider, fake: AwsFake, clock: Clock) -> None:
    provider.list_offers(regions=["us-east-1"])
    first = len(fake.calls_to("GetProducts"))
    assert first > 0
    clock.now = NOW + timedelta(minutes=59)
    provider.list_offers(regions=["us-east-1"])
    assert len(fake.calls_to("GetProducts")) == first  # spot prices are re-read, catalogue prices not
    assert len(fake.calls_to("DescribeSpotPriceHistory")) == 2
    clock.now = NOW + timedelta(hours=1)
    provider.list_offers(regions=["us-east-1"])
    assert len(fake.calls_to("GetProducts")) == 2 * first


def test_capacity_reservations_are_reserved_offers(provider: AwsProvider, fake: AwsFake) -> None:
    fake.reservations["us-east-1"] += [
        CapacityReservation("cr-0a1b2c3d4e5f60718", "p5.48xlarge", "us-east-1a", total=4, available=1),
        CapacityReservation("cr-0a1b2c3d4e5f60719", "p5.48xlarge", "us-east-1a", total=2, available=2),
        CapacityReservation("cr-0b1b", "p5.48xlarge", "us-east-1b", 2, 0, reservation_type="capacity-block"),
        CapacityReservation("cr-0c1b", "p5.48xlarge", "us-east-1c", 2, 2, state="expired"),
        CapacityReservation("cr-0d1b", "p5.48xlarge", "us-east-1d", 2, 2, platform="Windows"),
    ]
    offers = provider.list_offers(regions=["us-east-1"])
    reserved = [o for o in offers if o.capacity_type is CapacityType.RESERVED]
    assert {o.zone: o.availability for o in reserved} == {
        "us-east-1a": Availability.AVAILABLE,
        "us-east-1b": Availability.UNAVAILABLE,
    }
    assert all(o.price_per_hour == Decimal(0) and o.source == "aws:capacity-reservations" for o in reserved)
    (call,) = fake.calls_to("DescribeCapacityReservations")
    assert (call.params["Filter.1.Name"], call.params["Filter.1.Value.1"]) == ("state", "active")
    assert call.params["Filter.2.Name"] == "instance-type"


def test_missing_reservation_permission_still_lists_offers(provider, fake, caplog) -> None:
    fake.fail_next_kind("DescribeCapacityReservations", "auth")
    offers = provider.list_offers(regions=["us-east-1"])
    assert offers and not [o for o in offers if o.capacity_type is CapacityType.RESERVED]
    assert "UnauthorizedOperation" in caplog.text


@pytest.mark.parametrize("kind", ["auth", "throttle", "server", "invalid"])
def test_price_list_errors_are_typed(provider: AwsProvider, fake: AwsFake, kind: str) -> None:
    fake.fail_next_kind("GetProducts", kind)
    expected = {"auth": AuthError, "throttle": Transient, "server": Transient}.get(kind, InvalidRequest)
    with pytest.raises(expected) as raised:
        provider.list_offers(regions=["us-east-1"])
    assert raised.value.provider == "aws" and raised.value.code


# --- launch -------------------------------------------------------------------------------


def _tags(params: dict[str, str], spec: int = 1) -> dict[str, str]:
    prefix = f"TagSpecification.{spec}.Tag."
    keys = {k[len(prefix) :].split(".")[0] for k in params if k.startswith(prefix)}
    return {params[f"{prefix}{n}.Key"]: params[f"{prefix}{n}.Value"] for n in keys}


def test_launch_sends_token_tags_and_placement(provider: AwsProvider, fake: AwsFake) -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample user@host"
    request = _req("job-7-train", zone="us-east-1c", labels={"team": "ml"}, ssh_public_key=key)
    instance = provider.launch(request)
    (lookup,) = fake.calls_to("DescribeInstances")
    lookup_filter = (lookup.params["Filter.1.Name"], lookup.params["Filter.1.Value.1"])
    assert lookup_filter == ("tag:gpubroker-instance-id", "job-7-train")
    (run,) = fake.calls_to("RunInstances")
    params = run.params
    assert params["ClientToken"] == "gpubroker-job-7-train"
    assert (params["MinCount"], params["MaxCount"], params["InstanceType"]) == ("1", "1", "p5.48xlarge")
    assert params["ImageId"] == DEFAULT_IMAGE
    assert params["Placement.AvailabilityZone"] == "us-east-1c"
    assert [params[f"TagSpecification.{n}.ResourceType"] for n in (1, 2)] == ["instance", "volume"]
    assert _tags(params) == {
        "Name": "gpubroker-job-7-train",
        "gpubroker-managed": "true",
        "gpubroker-instance-id": "job-7-train",
        "team": "ml",
    }
    assert not [k for k in params if k.startswith(("InstanceMarketOptions", "CapacityReservation"))]
    assert "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample" in base64.b64decode(params["UserData"]).decode()
    assert (instance.instance_id, instance.zone, instance.capacity_type.value) == (
        "job-7-train", "us-east-1c", "on-demand")  # fmt: skip
    assert instance.provider_instance_id.startswith("i-") and instance.launched_at is not None


def test_spot_launch_sends_market_options(provider: AwsProvider, fake: AwsFake) -> None:
    request = _req("spot-1", CapacityType.SPOT, max_price_per_hour=Decimal("30.50"))
    instance = provider.launch(request)
    params = fake.calls_to("RunInstances")[0].params
    assert params["InstanceMarketOptions.MarketType"] == "spot"
    assert params["InstanceMarketOptions.SpotOptions.SpotInstanceType"] == "one-time"
    assert params["InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"] == "terminate"
    assert params["InstanceMarketOptions.SpotOptions.MaxPrice"] == "30.50"
    assert "Placement.AvailabilityZone" not in params
    assert instance.capacity_type is CapacityType.SPOT


def test_client_token_fits_ec2s_limit() -> None:
    longest = "a" + "b" * 40 + "c"
    assert len(client_token(longest)) <= 64 and client_token(longest).isascii()
    assert client_token("abcd") == client_token("abcd")


@pytest.mark.parametrize("block", [False, True])
def test_reserved_launch_targets_the_reservation(provider: AwsProvider, fake: AwsFake, block: bool) -> None:
    rid = "cr-0f1e2d3c4b5a69788"
    kind = "capacity-block" if block else "default"
    fake.reservations["us-east-1"].append(CapacityReservation(rid, "p5.48xlarge", "us-east-1b", 1, 1, kind))
    request = _req("resv-1", CapacityType.RESERVED, reservation_id=rid)
    instance = provider.launch(request)
    params = fake.calls_to("RunInstances")[0].params
    assert params["CapacityReservationSpecification.CapacityReservationTarget.CapacityReservationId"] == rid
    assert params["Placement.AvailabilityZone"] == "us-east-1b"  # the reservation's zone
    assert params.get("InstanceMarketOptions.MarketType") == ("capacity-block" if block else None)
    assert instance.capacity_type is CapacityType.RESERVED
    assert fake.reservations["us-east-1"][0].available == 0
    got = provider.get_instance("resv-1", region="us-east-1")
    assert got is not None and got.capacity_type is CapacityType.RESERVED

    with pytest.raises(InsufficientCapacity) as full:
        provider.launch(_req("resv-2", CapacityType.RESERVED, reservation_id=rid))
    assert full.value.code == "ReservationCapacityExceeded"


def test_reserved_launch_into_unknown_reservation_is_invalid(provider: AwsProvider, fake: AwsFake) -> None:
    with pytest.raises(InvalidRequest) as raised:
        provider.launch(_req("resv-3", CapacityType.RESERVED, reservation_id="cr-0000000000000000a"))
    assert raised.value.code == "InvalidCapacityReservationId.NotFound"
    assert not fake.calls_to("RunInstances")


def test_one_attempt_per_call(provider: AwsProvider, fake: AwsFake, harness: AwsHarness) -> None:
    fake.fail_next_kind("RunInstances", "throttle")
    with pytest.raises(Transient):
        provider.launch(harness.request("once-only"))
    assert len(fake.calls_to("RunInstances")) == 1  # botocore did not retry behind our back

    fake.lose_next("RunInstances")
    with pytest.raises(Transient) as raised:
        provider.launch(harness.request("lost-once"))
    assert raised.value.code == "ReadTimeoutError"
    assert len(fake.calls_to("RunInstances")) == 2 and fake.live_instance_count() == 1


def test_moto_ignores_client_token_so_the_tag_lookup_carries_the_contract(fake) -> None:
    # Real EC2 returns the first instance for a repeated ClientToken; moto makes a second one.
    # The adapter's look-up by tag (before RunInstances) is what keeps the lost-response retry single.
    ec2 = fake.session().client("ec2", region_name="us-east-1")
    for _ in range(2):
        ec2.run_instances(
            ImageId="ami-1", InstanceType="p5.48xlarge", MinCount=1, MaxCount=1, ClientToken="t"
        )
    assert fake.live_instance_count() == 2


def test_launch_returns_the_existing_instance_without_a_second_run(provider, fake, harness) -> None:
    first = provider.launch(harness.request("again-1"))
    second = provider.launch(harness.request("again-1"))
    assert second.provider_instance_id == first.provider_instance_id
    assert len(fake.calls_to("RunInstances")) == 1


# --- instances, states, preemption ----------------------------------------------------------


def test_list_instances_finds_only_ours_across_regions(provider, fake, harness) -> None:
    provider.launch(harness.request("east-one"))
    provider.launch(_req("west-one", CapacityType.SPOT, region="us-west-2"))
    provider.launch(harness.request("gone-one"))
    provider.terminate("gone-one", region="us-east-1")
    stranger = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")
    tags = [{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "not-ours"}]}]
    stranger.run_instances(
        ImageId="ami-1", InstanceType="p5.48xlarge", MinCount=1, MaxCount=1, TagSpecifications=tags
    )
    listed = {i.instance_id: i for i in provider.list_instances()}
    assert set(listed) == {"east-one", "west-one", "gone-one"}
    assert listed["west-one"].region == "us-west-2" and listed["west-one"].capacity_type is CapacityType.SPOT
    assert listed["gone-one"].state is InstanceState.TERMINATED
    assert listed["gone-one"].state_reason == "Client.UserInitiatedShutdown"
    calls = fake.calls_to("DescribeInstances")[-2:]
    assert {(c.params["Filter.1.Name"], c.params["Filter.1.Value.1"]) for c in calls} == {
        ("tag:gpubroker-managed", "true")
    }
    provider.terminate("not-ours", region="us-east-1")
    assert fake.live_instance_count() == 3  # east-one, west-one and the stranger


def test_terminate_treats_not_found_as_done(provider, fake, harness) -> None:
    provider.launch(harness.request("vanishing"))
    message = "The instance ID 'i-0123456789abcdef0' does not exist"
    fake.fail_next("TerminateInstances", "InvalidInstanceID.NotFound", 400, message)
    provider.terminate("vanishing", region="us-east-1")  # no error
    (call,) = fake.calls_to("TerminateInstances")
    assert call.params["InstanceId.1"].startswith("i-")


def test_spot_interruption_notice_then_preemption(provider, fake, harness) -> None:
    request = harness.request("noticed", CapacityType.SPOT)
    provider.launch(request)
    running = provider.get_instance("noticed", region="us-east-1")
    assert running is not None and running.state is InstanceState.RUNNING and running.state_reason is None
    fake.notice("us-east-1", "noticed")
    marked = provider.get_instance("noticed", region="us-east-1")
    assert marked is not None and marked.state is InstanceState.RUNNING
    assert marked.state_reason == "marked-for-termination"
    fake.preempt("us-east-1", "noticed")
    gone = provider.get_instance("noticed", region="us-east-1")
    assert gone is not None and gone.state is InstanceState.PREEMPTED
    assert gone.state_reason == "Server.SpotInstanceTermination"
    listed = [i.state for i in provider.list_instances() if i.instance_id == "noticed"]
    assert listed == [InstanceState.PREEMPTED]


def test_spot_status_failure_keeps_the_instance(provider, fake, harness) -> None:
    provider.launch(harness.request("unnoticed", CapacityType.SPOT))
    fake.fail_next_kind("DescribeSpotInstanceRequests", "throttle")
    got = provider.get_instance("unnoticed", region="us-east-1")
    assert got is not None and got.state is InstanceState.RUNNING and got.state_reason is None


@pytest.mark.parametrize(
    ("name", "reason", "expected"),
    [(name, None, state) for name, state in STATE_MAP.items()]
    + [
        ("terminated", "Server.SpotInstanceTermination", InstanceState.PREEMPTED),
        ("shutting-down", "Server.SpotInstanceTermination", InstanceState.PREEMPTED),
        ("stopped", "Server.SpotInstanceShutdown", InstanceState.PREEMPTED),
        ("running", "Server.SpotInstanceTermination", InstanceState.RUNNING),
        ("terminated", "Client.UserInitiatedShutdown", InstanceState.TERMINATED),
        ("terminated", "Client.InstanceInitiatedShutdown", InstanceState.TERMINATED),
        ("terminated", "Server.InsufficientInstanceCapacity", InstanceState.FAILED),
        ("terminated", "Server.InternalError", InstanceState.FAILED),
        ("terminated", "Client.VolumeLimitExceeded", InstanceState.FAILED),
        ("stopped", "Client.UserInitiatedShutdown", InstanceState.STOPPED),
        ("rebooting", None, InstanceState.UNKNOWN),
    ],
)
def test_state_table(name: str, reason: str | None, expected: InstanceState) -> None:
    raw = {"State": {"Code": 0, "Name": name}, "StateReason": {"Code": reason or "", "Message": ""}}
    assert instance_state(raw) is expected


def test_state_table_covers_every_ec2_state() -> None:
    assert set(STATE_MAP) == {"pending", "running", "shutting-down", "terminated", "stopping", "stopped"}


# --- errors -------------------------------------------------------------------------------


def _status(kind: type[ProviderError], code: str) -> int:
    if kind is Transient:
        return 503 if "Limit" in code or "Throttl" in code or "Unavailable" in code else 500
    if code.startswith("Insufficient"):
        return 500
    return {AuthError: 403 if code == "UnauthorizedOperation" else 401}.get(kind, 400)


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_every_documented_code_maps_to_its_type(provider, fake, harness, code) -> None:
    kind = ERROR_CODES[code]
    fake.fail_next("RunInstances", code, _status(kind, code), f"{code} happened")
    with pytest.raises(kind) as raised:
        provider.launch(harness.request("err-table"))
    assert type(raised.value) is kind
    assert (raised.value.provider, raised.value.region, raised.value.code) == ("aws", "us-east-1", code)
    assert f"{code} happened" in str(raised.value)


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("InvalidAMIID.NotFound", 400, InvalidRequest),
        ("InvalidAMIID.Malformed", 400, InvalidRequest),
        ("InvalidSubnetID.NotFound", 400, InvalidRequest),
        ("Client.InvalidInstanceID.NotFound", 400, NotFound),
        ("Server.InsufficientInstanceCapacity", 500, InsufficientCapacity),
        ("SomethingNew", 503, Transient),
        ("SomethingNew", 500, Transient),
        ("SomethingNew", 429, Transient),
        ("SomethingNew", 403, AuthError),
        ("SomethingNew", 404, NotFound),
        ("SomethingNew", 400, InvalidRequest),
        (None, None, Transient),
    ],
)
def test_code_families_and_status_fallback(code, status, expected) -> None:
    assert error_type(code, status) is expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (sdk.ReadTimeoutError(endpoint_url=EC2_URL), Transient),
        (sdk.ConnectTimeoutError(endpoint_url=EC2_URL), Transient),
        (sdk.EndpointConnectionError(endpoint_url=EC2_URL), Transient),
        (sdk.ConnectionClosedError(endpoint_url=EC2_URL), Transient),
        (sdk.NoCredentialsError(), AuthError),
        (sdk.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), AuthError),
        (sdk.ParamValidationError(report="Invalid type for parameter MinCount"), InvalidRequest),
        (RuntimeError("boom"), Transient),
    ],
)
def test_sdk_exceptions_are_typed(exc: Exception, expected: type[ProviderError]) -> None:
    error = translate(exc, region="us-east-1", operation="RunInstances")
    assert type(error) is expected and error.provider == "aws" and error.region == "us-east-1"


def test_a_lost_describe_is_transient(provider: AwsProvider, fake: AwsFake) -> None:
    fake.lose_next("DescribeInstances")
    with pytest.raises(Transient):
        provider.get_instance("whatever", region="us-east-1")


def test_credentials_never_in_errors_or_our_logs(provider, fake, harness, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    message = f"AWS was not able to validate the provided access credentials ({ACCESS_KEY_ID})"
    fake.fail_next("RunInstances", "AuthFailure", 401, message)
    with pytest.raises(AuthError) as raised:
        provider.launch(harness.request("secretive"))
    text = f"{raised.value} {raised.value!r} {raised.value.message} {provider!r}"
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN):
        assert secret not in text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("providers")]
    assert ours, "the adapter logs failed calls at debug level"
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN):
        assert not [m for m in ours if secret in m]
    # botocore never logs the secret key (its DEBUG request log does show the key id and token).
    assert not [r for r in caplog.records if SECRET_ACCESS_KEY in r.getMessage()]


# --- check and configuration ----------------------------------------------------------------


def test_check_reports_reachable(provider: AwsProvider) -> None:
    status = provider.check()
    assert (status.provider, status.configured, status.reachable) == ("aws", True, True)
    assert "us-east-1" in status.detail


def test_check_never_raises(provider: AwsProvider, fake: AwsFake) -> None:
    fake.fail_next("DescribeAvailabilityZones", "AuthFailure", 401, "AWS was not able to validate")
    refused = provider.check()
    assert refused.configured and "AuthFailure" in refused.detail
    fake.lose_next("DescribeAvailabilityZones")
    down = provider.check()
    assert down.configured and not down.reachable


def test_capabilities_say_what_ec2_offers(provider: AwsProvider) -> None:
    caps = provider.capabilities
    assert caps.capacity_types == frozenset(CapacityType) and caps.reservations and caps.spot
    assert caps.interruption_notice_seconds == 120 and caps.live_prices
    assert caps.regions == REGIONS and caps.launch_idempotency.value == "client-token"


@pytest.fixture
def no_ambient_aws(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    ambient = """AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE AWS_DEFAULT_PROFILE
        AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_WEB_IDENTITY_TOKEN_FILE
        AWS_ROLE_ARN"""
    for name in ambient.split():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-role probe of 169.254.169.254


def test_from_environment_without_credentials_is_none(no_ambient_aws: None) -> None:
    assert from_environment() is None
    assert from_environment({"GPUBROKER_AWS_REGIONS": "us-west-2"}) is None
    with pytest.raises(AuthError):  # configured, but wrongly: the registry reports it as such
        from_environment({"AWS_PROFILE": "no-such-profile"})


def test_from_environment_reads_the_default_chain(no_ambient_aws, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("GPUBROKER_AWS_REGIONS", "us-west-2, eu-north-1")
    provider = from_environment()
    assert provider is not None and provider.capabilities.regions == ("us-west-2", "eu-north-1")
    assert SECRET_ACCESS_KEY not in repr(provider) and ACCESS_KEY_ID not in repr(provider)
    default = from_environment({"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": "x"})
    assert default is not None and default.capabilities.regions == ("us-east-1", "us-east-2", "us-west-2")


def test_configured_image_network_and_key(fake: AwsFake, clock: Clock) -> None:
    images, subnets = {"us-east-1": "ami-0123456789abcdef0"}, {"us-east-1a": "subnet-1a"}
    provider = AwsProvider(session=fake.session(), regions=REGIONS, clock=clock, images=images,
                           subnet_ids=subnets, security_group_ids=["sg-0123"], key_name="ops")  # fmt: skip
    with pytest.raises(InvalidRequest):  # moto knows neither the subnet nor the group: EC2's answer
        provider.launch(_req("conf-1", zone="us-east-1a"))
    params = fake.calls_to("RunInstances")[0].params
    sent = [params[k] for k in ("ImageId", "SubnetId", "SecurityGroupId.1", "KeyName")]
    assert sent == ["ami-0123456789abcdef0", "subnet-1a", "sg-0123", "ops"]
