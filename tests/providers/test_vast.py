"""Vast.ai adapter against a local fake of its REST API (search, rent, v1 instance pages, destroy)."""

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
from providers.vast import (
    ACTUAL_STATUS,
    ERROR_CODES,
    VastProvider,
    accelerator_name,
    from_environment,
    instance_state,
)
from tests.providers.contract import ProviderContract
from tests.providers.fakes.http import FakeResponse
from tests.providers.fakes.vast import API_KEY as KEY
from tests.providers.fakes.vast import ASK, BUNDLES, INSTANCE, INSTANCES_V1, FakeVast, refusal

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
H100_US = "8x H100 SXM #21474836"


@dataclass
class VastHarness:
    fake: FakeVast
    provider: VastProvider
    launch_errors: frozenset[str] = field(
        default=frozenset({"capacity", "quota", "auth", "invalid", "throttle", "server"})
    )

    def request(self, instance_id: str, capacity: CapacityType = CapacityType.ON_DEMAND) -> LaunchRequest:
        bid = Decimal("11.50") if capacity is CapacityType.SPOT else None
        return LaunchRequest(instance_id, H100_US, "US", capacity, max_price_per_hour=bid)

    def fail_next(self, operation: str, kind: str) -> None:
        method, path = {"launch": ("PUT", ASK), "list_offers": ("POST", BUNDLES)}[operation]
        self.fake.fail_next(method, path, kind)

    def lose_next_launch_response(self) -> None:
        self.fake.lose_response("PUT", ASK)

    def preempt(self, request: LaunchRequest) -> None:
        self.fake.preempt(request.name)

    def live_instance_count(self) -> int:
        return self.fake.live_count()


@pytest.fixture
def fake() -> Iterator[FakeVast]:
    server = FakeVast()
    server.start()
    yield server
    server.stop()


def make_provider(fake: FakeVast, api_key: str = KEY, **kwargs: Any) -> VastProvider:
    options: dict[str, Any] = {"clock": lambda: NOW, "timeout": 5.0} | kwargs
    return VastProvider(api_key, base_url=fake.base_url, **options)


@pytest.fixture
def provider(fake: FakeVast) -> Iterator[VastProvider]:
    adapter = make_provider(fake)
    yield adapter
    adapter.close()


@pytest.fixture
def harness(fake: FakeVast, provider: VastProvider) -> VastHarness:
    return VastHarness(fake, provider)


class TestContract(ProviderContract):
    pass


def od(instance_id: str, instance_type: str = H100_US) -> LaunchRequest:
    return LaunchRequest(instance_id, instance_type, "US", CapacityType.ON_DEMAND)


# --- offers -----------------------------------------------------------------------------------
def test_offers_name_the_machine_and_carry_exact_prices(provider: VastProvider) -> None:
    offers = {(o.instance_type, o.capacity_type): o for o in provider.list_offers()}
    h100 = offers[(H100_US, CapacityType.ON_DEMAND)]
    assert (h100.cloud, h100.region, h100.zone) == ("vast", "US", None)
    assert (h100.accelerator, h100.accelerator_count) == ("H100", 8)
    assert h100.price_per_hour == Decimal("17.61")  # dph_total with 50 GB allocated storage
    assert (h100.vcpus, h100.memory_gib) == (Decimal("96.0"), Decimal("1007.73"))
    assert (h100.availability, h100.observed_at, h100.source) == (Availability.AVAILABLE, NOW, "vast:bundles")
    assert offers[(H100_US, CapacityType.SPOT)].price_per_hour == Decimal("11.20")  # min_bid
    assert offers[("1x H100 PCIE #21475002", CapacityType.ON_DEMAND)].accelerator == "H100"
    assert offers[("2x H100 NVL #21475117", CapacityType.ON_DEMAND)].region == "SE"
    assert ("2x H100 NVL #21475117", CapacityType.SPOT) not in offers  # takes no bids
    assert offers[("8x H200 #21475230", CapacityType.ON_DEMAND)].accelerator == "H200"
    assert not any("RTX 4090" in key[0] for key in offers)  # not among the configured GPU names


def test_search_bodies_are_the_documented_query(fake: FakeVast, provider: VastProvider) -> None:
    provider.list_offers()
    on_demand, bid = (r.json() for r in fake.calls("POST", BUNDLES))
    assert on_demand == {
        "gpu_name": {"in": ["H100 SXM", "H100 PCIE", "H100 NVL", "H200", "B200"]},
        "verified": {"eq": True},
        "external": {"eq": False},
        "rentable": {"eq": True},
        "rented": {"eq": False},
        "type": "on-demand",
        "order": [["dph_total", "asc"]],
        "limit": 64,
        "allocated_storage": 50,
    }
    assert (bid["type"], bid["order"]) == ("bid", [["min_bid", "asc"]])
    assert fake.calls("POST", BUNDLES)[0].headers["authorization"] == f"Bearer {KEY}"


def test_regions_are_country_codes(fake: FakeVast) -> None:
    adapter = make_provider(fake, regions=["CA"])
    offers = adapter.list_offers()
    assert {o.region for o in offers} == {"CA"} and offers
    assert fake.calls("POST", BUNDLES)[0].json()["geolocation"] == {"in": ["CA"]}
    assert adapter.capabilities.regions == ("CA",)
    assert {o.region for o in adapter.list_offers(regions=["NO"])} == {"NO"}


def test_a_taken_ask_is_not_offered(fake: FakeVast, provider: VastProvider) -> None:
    provider.launch(od("job-1"))
    assert not any(o.instance_type == H100_US for o in provider.list_offers())


@pytest.mark.parametrize(
    ("gpu_name", "gpu_ram_mb", "canonical"),
    [
        ("H100 SXM", 81559, "H100"),
        ("H100 PCIE", 81559, "H100"),
        ("H100 NVL", 95830, "H100"),
        ("H200", 143771, "H200"),
        ("A100 SXM4", 81920, "A100-80GB"),
        ("A100 PCIE", 40960, "A100"),
        ("RTX 4090", 24564, "RTX4090"),
    ],
)
def test_accelerator_names_match_the_catalogs(gpu_name: str, gpu_ram_mb: int, canonical: str) -> None:
    assert accelerator_name(gpu_name, gpu_ram_mb) == canonical


# --- launch -----------------------------------------------------------------------------------
def test_launch_rents_the_ask_after_a_label_lookup(fake: FakeVast, provider: VastProvider) -> None:
    instance = provider.launch(od("job-2"))
    assert [(r.method, r.path) for r in fake.requests] == [
        ("GET", INSTANCES_V1),
        ("PUT", "/api/v0/asks/21474836/"),
    ]
    assert fake.requests[0].query == {
        "select_filters": ["{}"],
        "order_by": ['[{"col": "id", "dir": "asc"}]'],
        "limit": ["25"],
    }
    assert fake.requests[1].json() == {
        "client_id": "me",
        "image": "vastai/base-image:cuda-12.4.1-auto",
        "disk": 50,
        "label": "gpubroker-job-2",
        "runtype": "ssh_direct",
        "env": {"GPUBROKER_INSTANCE_ID": "job-2"},
        "cancel_unavail": True,
    }
    row = fake.row("gpubroker-job-2")
    assert instance.provider_instance_id == str(row["id"])
    assert (instance.instance_type, instance.region, instance.state) == (
        "8x H100 SXM",
        "US",
        InstanceState.PENDING,
    )
    got = provider.get_instance("job-2", region="US")
    assert got is not None and got.instance_type == instance.instance_type and got.launched_at is not None


def test_interruptible_launch_sends_the_bid(fake: FakeVast, provider: VastProvider) -> None:
    request = LaunchRequest("job-3", H100_US, "US", CapacityType.SPOT, max_price_per_hour=Decimal("11.75"))
    instance = provider.launch(request)
    assert fake.calls("PUT", ASK)[0].json()["price"] == 11.75
    assert instance.capacity_type is CapacityType.SPOT and instance.price_per_hour == Decimal("11.75")
    got = provider.get_instance("job-3", region="US")
    assert (
        got is not None and got.capacity_type is CapacityType.SPOT and got.price_per_hour == Decimal("11.75")
    )


def test_an_existing_label_is_returned_without_renting(fake: FakeVast, provider: VastProvider) -> None:
    first = provider.launch(od("job-4"))
    fake.boot("gpubroker-job-4")
    again = provider.launch(od("job-4"))
    assert len(fake.calls("PUT", ASK)) == 1 and again.provider_instance_id == first.provider_instance_id
    assert again.state is InstanceState.RUNNING and again.public_ip == "104.86.17.8"
    assert again.state_reason == "success, running vastai/base-image"


@pytest.mark.parametrize(
    ("instance_type", "capacity", "bid"),
    [
        ("8x H100 SXM", CapacityType.ON_DEMAND, None),  # no ask id: which machine?
        (H100_US, CapacityType.SPOT, None),  # an interruptible rent needs a bid
    ],
)
def test_bad_requests_are_refused_without_a_call(
    fake: FakeVast, provider: VastProvider, instance_type: str, capacity: CapacityType, bid: Decimal | None
) -> None:
    with pytest.raises(InvalidRequest):
        provider.launch(LaunchRequest("job-5", instance_type, "US", capacity, max_price_per_hour=bid))
    assert fake.requests == []


def test_an_ask_rented_by_someone_else_is_insufficient_capacity(
    fake: FakeVast, provider: VastProvider
) -> None:
    fake.asks[21474836]["rented"] = True
    with pytest.raises(InsufficientCapacity) as raised:
        provider.launch(od("job-6"))
    assert raised.value.code == "no_such_ask"


def test_listing_follows_next_token_across_pages(fake: FakeVast, provider: VastProvider) -> None:
    fake.add_foreign(60)
    provider.launch(od("late-1"))
    pages = len(fake.calls("GET", INSTANCES_V1))
    assert provider.get_instance("late-1", region="US") is not None
    tokens = [r.query.get("after_token") for r in fake.calls("GET", INSTANCES_V1)[pages:]]
    assert tokens == [None, ["tok-28817374"], ["tok-28817399"]]  # 61 rows: 25 + 25 + 11
    assert [i.instance_id for i in provider.list_instances()] == ["late-1"]


def test_a_repeated_page_token_is_transient_not_a_loop(fake: FakeVast, provider: VastProvider) -> None:
    looping = FakeResponse(200, {"instances": [], "next_token": "same"})
    fake.inject("GET", INSTANCES_V1, looping, times=5)
    with pytest.raises(Transient):
        provider.list_instances()


def test_terminate_destroys_by_contract_id_and_404_is_done(fake: FakeVast, provider: VastProvider) -> None:
    instance = provider.launch(od("job-7"))
    fake.inject("DELETE", INSTANCE, FakeResponse(404, refusal("no_such_instance", "Instance 1 not found.")))
    provider.terminate("job-7", region="US")
    (call,) = fake.calls("DELETE", INSTANCE)
    assert call.path == f"/api/v0/instances/{instance.provider_instance_id}/"
    provider.terminate("job-7", region="US")  # really gone now
    assert fake.live_count() == 0


# --- states -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("actual", "intended", "contract", "is_bid", "state"),
    [
        (None, "running", "running", False, InstanceState.PENDING),
        ("created", "running", "running", False, InstanceState.PENDING),
        ("scheduling", "running", "stopped", False, InstanceState.PENDING),
        ("loading", "running", "running", False, InstanceState.PENDING),
        ("running", "running", "running", False, InstanceState.RUNNING),
        ("rebooting", "running", "running", False, InstanceState.PENDING),
        ("running", "stopped", "running", False, InstanceState.STOPPING),
        ("stopped", "stopped", "stopped", False, InstanceState.STOPPED),
        ("stopped", "stopped", "stopped", True, InstanceState.STOPPED),  # stopped by us, not outbid
        ("frozen", "frozen", "running", False, InstanceState.STOPPED),
        ("exited", "running", "running", False, InstanceState.FAILED),
        ("unknown", "running", "running", False, InstanceState.UNKNOWN),
        ("offline", "running", "running", True, InstanceState.UNKNOWN),
        ("stopped", "running", "stopped", True, InstanceState.PREEMPTED),  # outbid
        ("scheduling", "running", "stopped", True, InstanceState.PREEMPTED),  # outbid, waiting to resume
        ("stopped", "running", "unloaded", True, InstanceState.TERMINATED),
        ("something_new", "running", "running", False, InstanceState.UNKNOWN),
    ],
)
def test_state_table(
    actual: str | None, intended: str, contract: str, is_bid: bool, state: InstanceState
) -> None:
    row = {"actual_status": actual, "intended_status": intended, "cur_state": contract, "is_bid": is_bid}
    assert instance_state(row) is state


def test_state_table_covers_the_documented_actual_statuses() -> None:
    documented = {
        None,
        "loading",
        "running",
        "stopped",
        "frozen",
        "exited",
        "rebooting",
        "unknown",
        "offline",
    }
    assert documented <= set(ACTUAL_STATUS)


def test_outbid_instance_is_preempted_with_vasts_reason(harness: VastHarness) -> None:
    request = harness.request("spot-1", CapacityType.SPOT)
    harness.provider.launch(request)
    harness.preempt(request)
    got = harness.provider.get_instance("spot-1", region="US")
    assert got is not None and got.state is InstanceState.PREEMPTED
    assert got.state_reason == "Instance stopped: outbid"


# --- errors -----------------------------------------------------------------------------------
TOO_FREQUENT = b"API requests too frequent: endpoint threshold=2.5"
NOT_AVAILABLE = "error 404/3603: no_such_ask  Instance type by id 21474836 is not available."


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (410, refusal("no_such_ask", ask_id=21474836), InsufficientCapacity),
        (404, refusal("no_such_ask", ask_id=21474836), InsufficientCapacity),
        (400, refusal("invalid_args", NOT_AVAILABLE, ask_id=21474836), InsufficientCapacity),
        (400, refusal("insufficient_credit", "no credit"), QuotaExceeded),
        (402, {"msg": "payment required"}, QuotaExceeded),
        (400, refusal("invalid_args", "invalid disk size"), InvalidRequest),
        (400, {"message": "something odd"}, InvalidRequest),
        (401, refusal("unauthorized", "Invalid or missing API key"), AuthError),
        (403, {"error": "forbidden", "msg": "key lacks instance_write"}, AuthError),
        (404, refusal("no_such_instance", "Instance 9 not found."), NotFound),
        (429, TOO_FREQUENT, Transient),
        (429, refusal("search_quota_exceeded", "daily search quota"), Transient),
        (500, refusal("server_error", "oops"), Transient),
        (502, b"<html>502 Bad Gateway</html>", Transient),
        (200, {"success": False, "error": "invalid_args", "msg": "bad label"}, InvalidRequest),
        (200, {"success": True}, Transient),  # no new_contract: we cannot tell what happened
    ],
)
def test_error_table(
    fake: FakeVast, provider: VastProvider, status: int, body: Any, kind: type[ProviderError]
) -> None:
    fake.inject("PUT", ASK, FakeResponse(status, body))
    with pytest.raises(kind) as raised:
        provider.launch(od("err-1"))
    assert type(raised.value) is kind and raised.value.provider == "vast"


def test_every_documented_code_is_in_the_table() -> None:
    assert {"no_such_ask", "insufficient_credit", "invalid_args", "no_such_instance"} <= set(ERROR_CODES)


def test_throttling_keeps_retry_after_when_vast_sends_one(fake: FakeVast, provider: VastProvider) -> None:
    body = refusal("search_quota_exceeded", "daily search row quota")
    fake.inject("POST", BUNDLES, FakeResponse(429, body, {"Retry-After": "3600"}))
    with pytest.raises(Transient) as raised:
        provider.list_offers()
    assert raised.value.retry_after == 3600.0 and raised.value.code == "search_quota_exceeded"


def test_the_deprecated_v0_list_is_not_used(fake: FakeVast, provider: VastProvider) -> None:
    provider.list_instances()
    assert fake.calls("GET", "/api/v0/instances/") == []


def test_connection_failure_is_transient(fake: FakeVast) -> None:
    adapter = make_provider(fake)
    fake.stop()
    with pytest.raises(Transient) as raised:
        adapter.list_offers()
    assert raised.value.code == "transport"


def test_credentials_never_appear_in_logs_errors_or_repr(
    fake: FakeVast, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    adapter = make_provider(fake, api_key=secret)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as raised:
        adapter.launch(od("auth-1"))
    status = adapter.check()
    assert status.configured and status.reachable and "credentials refused" in status.detail
    assert secret not in caplog.text and secret not in str(raised.value) and secret not in repr(adapter)
    assert all(secret not in str(r.query) for r in fake.requests)  # never as ?api_key=
    assert caplog.records


def test_check_reports_reachability(fake: FakeVast, provider: VastProvider) -> None:
    assert provider.check().reachable
    assert fake.calls("GET", "/api/v0/users/current/")
    url = fake.base_url
    fake.stop()
    adapter = VastProvider(KEY, base_url=url)  # a new client: a kept-alive connection outlives stop()
    status = adapter.check()
    assert status.configured and not status.reachable


def test_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAST_API_KEY", raising=False)
    assert from_environment() is None
    monkeypatch.setenv("VAST_API_KEY", "abc123")
    adapter = from_environment()
    assert isinstance(adapter, VastProvider) and adapter.name == "vast"
    adapter.close()
