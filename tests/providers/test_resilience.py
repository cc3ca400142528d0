"""The resilience layer, exercised on the simulated cloud with a fake monotonic clock."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from broker.core.errors import InsufficientCapacity, NotFound, ProviderUnavailable, Transient
from broker.core.ports import Instance, InstanceState, LaunchRequest
from broker.core.types import CapacityType
from providers.resilience import BreakerState, ResiliencePolicy, ResilientProvider
from providers.sim import SimFaults, SimulatedCloud
from providers.traces import SpotTrace


class FakeTime:
    """Monotonic time that only moves when the layer sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def trace() -> SpotTrace:
    return SpotTrace(
        cloud="gcp",
        region="us-central1",
        zone="us-central1-a",
        instance_type="a3-highgpu-1g",
        accelerator="H100",
        gpus_per_instance=1,
        instances_requested=16,
        gap_seconds=600,
        start_time=datetime(2025, 10, 4, tzinfo=UTC),
        values=(16,),
        spot_price_per_gpu=Decimal("2.4"),
        on_demand_price_per_gpu=Decimal("10.3"),
        tick_prices=None,
        source="trace:test",
    )


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def wrap(cloud: SimulatedCloud, fake_time: FakeTime, **policy: float) -> ResilientProvider:
    settings = {"rate_per_second": 1000.0, "burst": 1000, **policy}
    return ResilientProvider(
        cloud,
        ResiliencePolicy(**settings),
        monotonic=fake_time.monotonic,
        sleep=fake_time.sleep,  # type: ignore[arg-type]
    )


def request(instance_id: str = "job-one") -> LaunchRequest:
    return LaunchRequest(instance_id, "a3-highgpu-8g", "us-central1", CapacityType.ON_DEMAND)


def test_transient_errors_are_retried_with_growing_jittered_backoff(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()])
    provider = wrap(cloud, fake_time)
    cloud.fail_next("list_offers", Transient("500", code="500"))
    cloud.fail_next("list_offers", Transient("500", code="500"))
    assert provider.list_offers()
    assert cloud.calls["list_offers"] == 3
    assert len(fake_time.slept) == 2 and 0 < fake_time.slept[0] <= fake_time.slept[1] + 1
    assert provider.stats["list_offers"].outcomes == {"Transient": 2, "ok": 1}
    assert provider.breaker().state is BreakerState.CLOSED


def test_retry_after_is_honoured(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()])
    provider = wrap(cloud, fake_time)
    cloud.fail_next("list_offers", Transient("slow down", code="429", retry_after=7))
    provider.list_offers()
    assert fake_time.slept and fake_time.slept[0] >= 7


def test_answers_are_not_retried_and_do_not_trip_the_breaker(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()])
    provider = wrap(cloud, fake_time, breaker_threshold=2)
    for _ in range(3):
        cloud.fail_next("launch", InsufficientCapacity("STOCKOUT", code="STOCKOUT"))
        with pytest.raises(InsufficientCapacity):
            provider.launch(request())
    assert cloud.calls["launch"] == 3 and not fake_time.slept
    assert provider.breaker("us-central1").state is BreakerState.CLOSED


def test_gives_up_after_max_attempts(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()], faults=SimFaults(error_rate=1.0))
    provider = wrap(cloud, fake_time, max_attempts=3, breaker_threshold=100)
    with pytest.raises(Transient, match="simulated server error"):
        provider.list_offers()
    assert cloud.calls["list_offers"] == 3


def test_outage_opens_the_breaker_then_half_opens_after_cooldown(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()], faults=SimFaults(outage=True))
    provider = wrap(cloud, fake_time, max_attempts=3, breaker_threshold=5, breaker_cooldown=30)
    with pytest.raises(Transient):
        provider.list_offers()  # 3 failures
    with pytest.raises(ProviderUnavailable):
        provider.list_offers()  # 2 more failures open it; the 3rd attempt is refused
    assert cloud.calls["list_offers"] == 5
    breaker = provider.breaker()
    assert breaker.state is BreakerState.OPEN and "outage" in (breaker.last_error or "")
    with pytest.raises(ProviderUnavailable):
        provider.list_offers()
    assert cloud.calls["list_offers"] == 5  # refused without calling the provider

    fake_time.now += 31
    assert breaker.state is BreakerState.HALF_OPEN
    cloud.faults = SimFaults()  # the outage is over
    assert provider.list_offers()  # the trial call succeeds and closes the breaker
    assert breaker.state is BreakerState.CLOSED


def test_a_failed_half_open_trial_reopens_at_once(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()], faults=SimFaults(outage=True))
    provider = wrap(cloud, fake_time, max_attempts=1, breaker_threshold=2, breaker_cooldown=30)
    for _ in range(2):
        with pytest.raises(Transient):
            provider.list_offers()
    fake_time.now += 31
    with pytest.raises(Transient):
        provider.list_offers()  # the trial fails
    assert provider.breaker().state is BreakerState.OPEN


def test_breakers_are_per_region(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()])
    provider = wrap(cloud, fake_time, max_attempts=1, breaker_threshold=1)
    cloud.fail_next("terminate", Transient("500", code="500"))
    with pytest.raises(Transient):
        provider.terminate("job-one", region="us-central1")
    assert provider.breaker("us-central1").state is BreakerState.OPEN
    assert provider.breaker().state is BreakerState.CLOSED
    assert provider.list_offers()


class SlowFirstLaunch(SimulatedCloud):
    """The first launch request is slow on the wire: it lands 0.3 s late."""

    slow = True

    def launch(self, request: LaunchRequest) -> Instance:
        if self.slow:
            self.slow = False
            time.sleep(0.3)
        return super().launch(request)


def test_a_launch_retried_after_a_timeout_yields_one_instance() -> None:
    # The layer times the first attempt out and retries with the same instance id while the
    # first request is still on its way; when it lands it must find the instance, not make one.
    cloud = SlowFirstLaunch([trace()])
    provider = ResilientProvider(
        cloud, ResiliencePolicy(timeout_seconds=0.05, max_attempts=5, backoff_initial=0.01, backoff_max=0.05)
    )
    instance = provider.launch(request("slow-job"))
    assert provider.stats["launch"].outcomes["Transient"] == 1
    time.sleep(0.4)  # let the first, late request land
    running = [i for i in cloud.list_instances() if i.state is InstanceState.RUNNING]
    assert [i.provider_instance_id for i in running] == [instance.provider_instance_id]
    assert cloud.calls["launch"] == 2
    provider.close()


def test_the_token_bucket_spaces_out_a_burst(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()])
    provider = wrap(cloud, fake_time, rate_per_second=2.0, burst=2, rate_wait_max=5)
    for _ in range(4):
        provider.get_instance("job-one", region="us-central1")
    # Burst of 2, then one call per half second: the 3rd and 4th each wait 0.5 s.
    assert fake_time.slept == [0.5, 0.5]


def test_a_backlog_beyond_the_wait_limit_fails_fast_instead_of_stampeding(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()])
    provider = wrap(cloud, fake_time, rate_per_second=1.0, burst=1, rate_wait_max=0.5, max_attempts=1)
    provider.get_instance("job-one", region="us-central1")
    with pytest.raises(Transient, match="rate limit"):
        provider.get_instance("job-one", region="us-central1")
    assert cloud.calls["get_instance"] == 1


class BuggyAdapter(SimulatedCloud):
    def terminate(self, instance_id: str, *, region: str) -> None:
        raise KeyError("raw")  # an adapter bug: an unmapped exception


def test_an_unmapped_adapter_exception_is_contained(fake_time: FakeTime) -> None:
    provider = wrap(BuggyAdapter([trace()]), fake_time, max_attempts=1)
    with pytest.raises(Transient, match="unexpected KeyError") as raised:
        provider.terminate("job-one", region="us-central1")
    assert raised.value.code == "unmapped"


def test_not_found_passes_through(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()])
    cloud.fail_next("get_instance", NotFound("gone", code="404"))
    with pytest.raises(NotFound):
        wrap(cloud, fake_time).get_instance("job-one", region="us-central1")


def test_check_reports_an_open_breaker_without_raising(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()], faults=SimFaults(outage=True))
    provider = wrap(cloud, fake_time, max_attempts=1, breaker_threshold=1)
    with pytest.raises(Transient):
        provider.list_offers()
    status = provider.check()
    assert not status.reachable and "breaker open" in status.detail


def test_concurrent_calls_are_safe(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()])
    provider = ResilientProvider(cloud, ResiliencePolicy(rate_per_second=1000, burst=1000))
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            provider.launch(
                LaunchRequest(f"job-{n:03d}", "a3-highgpu-1g", "us-central1", CapacityType.ON_DEMAND)
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(cloud.list_instances()) == 12
    provider.close()


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter(fake_time: FakeTime) -> None:
    cloud = SimulatedCloud([trace()], faults=SimFaults(error_rate=1.0))
    provider = wrap(
        cloud, fake_time, max_attempts=5, backoff_initial=1.0, backoff_max=4.0, breaker_threshold=100
    )
    with pytest.raises(Transient):
        provider.list_offers()
    windows = [(1, 2), (2, 3), (4, 5), (4, 5)]  # 1, 2, 4, then capped at 4; jitter below 1
    assert len(fake_time.slept) == 4
    for slept, (low, high) in zip(fake_time.slept, windows, strict=True):
        assert low <= slept < high
