"""The contract every provider adapter must pass, run against a faithful fake of *its* API.

An adapter's test module subclasses :class:`ProviderContract` and supplies a ``harness``
fixture: the real adapter wired to a fake of the provider's API (moto, a local fake REST
server, the simulated cloud) plus a few levers to script that fake. The levers speak the
provider's language — the fake answers with the provider's own error body — so the contract
checks the adapter's mapping, not a mock of our interface. (Libcloud's TestCaseMixin and
Karpenter's fake cloud provider are the model.)
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar, Protocol

import pytest

from broker.core.errors import (
    AuthError,
    InsufficientCapacity,
    InvalidRequest,
    ProviderError,
    QuotaExceeded,
    Transient,
)
from broker.core.ports import Capabilities, InstanceState, LaunchRequest, Provider
from broker.core.types import CapacityType

# Error kinds a harness can make its fake answer with, and the typed error each must become.
ERROR_KINDS: dict[str, type[ProviderError]] = {
    "capacity": InsufficientCapacity,
    "quota": QuotaExceeded,
    "auth": AuthError,
    "invalid": InvalidRequest,
    "throttle": Transient,  # 429 / RequestLimitExceeded
    "server": Transient,  # 5xx
}
# Every real API can say at least these; a harness that cannot script them is incomplete.
REQUIRED_LAUNCH_ERRORS = frozenset({"capacity", "auth", "invalid", "throttle", "server"})


class Harness(Protocol):
    """What an adapter's test module hands the contract."""

    provider: Provider
    launch_errors: frozenset[str]  # error kinds the fake can answer a launch with (see ERROR_KINDS)

    def request(self, instance_id: str, capacity: CapacityType = CapacityType.ON_DEMAND) -> LaunchRequest:
        """A launch request the fake can satisfy (a real instance type and region of that API)."""
        ...

    def fail_next(self, operation: str, kind: str) -> None:
        """Make the fake answer the next ``operation`` ("launch" | "list_offers") with ``kind``'s
        error, exactly as the provider's API would."""
        ...

    def lose_next_launch_response(self) -> None:
        """The fake creates the instance but the client never gets the answer (a timeout)."""
        ...

    def preempt(self, request: LaunchRequest) -> None:
        """The fake reclaims this spot instance and reports it the way the provider does."""
        ...

    def live_instance_count(self) -> int:
        """How many instances exist in the fake that are not terminated/deleted."""
        ...


class ProviderContract:
    """Subclass in a test module and provide a ``harness`` fixture."""

    # Override in subclasses whose API cannot do a thing (declared in capabilities, not skipped).
    spot_capacity: ClassVar[CapacityType] = CapacityType.SPOT

    def test_is_a_provider_with_capabilities_as_data(self, harness: Harness) -> None:
        provider = harness.provider
        assert isinstance(provider, Provider)
        assert isinstance(provider.capabilities, Capabilities)
        assert provider.capabilities.capacity_types <= frozenset(CapacityType)
        assert provider.name and provider.name == provider.name.lower()

    def test_list_offers_gives_priced_gpu_offers(self, harness: Harness) -> None:
        offers = harness.provider.list_offers()
        assert offers, "the fake API lists GPU capacity, so the adapter must return offers"
        for offer in offers:
            assert offer.cloud == harness.provider.name
            assert isinstance(offer.price_per_hour, Decimal) and offer.price_per_hour >= 0
            assert offer.accelerator_count > 0 and offer.accelerator
            assert offer.observed_at.tzinfo is not None
            assert offer.capacity_type in harness.provider.capabilities.capacity_types
            assert offer.source

    def test_launch_get_list_terminate(self, harness: Harness) -> None:
        request = harness.request("contract-basic")
        instance = harness.provider.launch(request)
        assert instance.instance_id == request.instance_id
        assert instance.provider == harness.provider.name
        assert instance.state in {InstanceState.PENDING, InstanceState.RUNNING}
        assert instance.capacity_type is request.capacity_type
        assert harness.live_instance_count() == 1

        got = harness.provider.get_instance(request.instance_id, region=request.region)
        assert got is not None and got.provider_instance_id == instance.provider_instance_id
        listed = harness.provider.list_instances()
        mine = [i.instance_id for i in listed if i.instance_id == request.instance_id]
        assert mine == [request.instance_id]

        harness.provider.terminate(request.instance_id, region=request.region)
        assert harness.live_instance_count() == 0
        after = harness.provider.get_instance(request.instance_id, region=request.region)
        assert after is None or after.state in {InstanceState.TERMINATED, InstanceState.STOPPING}

    def test_launch_twice_is_one_instance(self, harness: Harness) -> None:
        request = harness.request("contract-twice")
        first = harness.provider.launch(request)
        second = harness.provider.launch(request)
        assert second.provider_instance_id == first.provider_instance_id
        assert harness.live_instance_count() == 1

    def test_retry_after_a_lost_launch_response_never_makes_a_second_instance(self, harness: Harness) -> None:
        request = harness.request("contract-lost")
        harness.lose_next_launch_response()
        with pytest.raises(Transient):
            harness.provider.launch(request)
        retried = harness.provider.launch(request)
        assert retried.instance_id == request.instance_id
        assert harness.live_instance_count() == 1

    def test_terminate_is_idempotent(self, harness: Harness) -> None:
        request = harness.request("contract-term")
        harness.provider.launch(request)
        harness.provider.terminate(request.instance_id, region=request.region)
        harness.provider.terminate(request.instance_id, region=request.region)  # already gone: done
        harness.provider.terminate("contract-never-launched", region=request.region)
        assert harness.live_instance_count() == 0

    def test_unknown_instance_is_none(self, harness: Harness) -> None:
        region = harness.request("contract-none").region
        assert harness.provider.get_instance("contract-no-such", region=region) is None

    def test_harness_can_script_the_errors_every_api_has(self, harness: Harness) -> None:
        assert REQUIRED_LAUNCH_ERRORS <= harness.launch_errors <= set(ERROR_KINDS)

    @pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
    def test_launch_errors_are_typed(self, harness: Harness, kind: str) -> None:
        if kind not in harness.launch_errors:
            # Not a skip: the API has no such answer (declared by the harness, checked above).
            assert kind not in REQUIRED_LAUNCH_ERRORS
            return
        request = harness.request(f"contract-err-{kind}")
        harness.fail_next("launch", kind)
        with pytest.raises(ERROR_KINDS[kind]) as raised:
            harness.provider.launch(request)
        assert raised.value.provider == harness.provider.name
        assert harness.live_instance_count() == 0

    @pytest.mark.parametrize("kind", ["auth", "throttle", "server"])
    def test_list_offers_errors_are_typed(self, harness: Harness, kind: str) -> None:
        harness.fail_next("list_offers", kind)
        with pytest.raises(ERROR_KINDS[kind]):
            harness.provider.list_offers()

    def test_preemption_is_reported_as_preempted(self, harness: Harness) -> None:
        if not harness.provider.capabilities.spot:
            return  # the provider sells no interruptible capacity: nothing can be preempted
        request = harness.request("contract-spot", self.spot_capacity)
        instance = harness.provider.launch(request)
        assert instance.capacity_type is CapacityType.SPOT
        harness.preempt(request)
        got = harness.provider.get_instance(request.instance_id, region=request.region)
        assert got is not None and got.state is InstanceState.PREEMPTED
