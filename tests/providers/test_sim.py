"""The simulated cloud: passes the provider contract and replays the real GCP H100 traces faithfully."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from broker.core.errors import (
    AuthError,
    InsufficientCapacity,
    InvalidRequest,
    QuotaExceeded,
    Transient,
)
from broker.core.ports import InstanceState, LaunchRequest
from broker.core.types import Availability, CapacityType
from providers.sim import SimFaults, SimReservation, SimulatedCloud, from_environment
from providers.traces import bundled_traces
from tests.providers.contract import ProviderContract
from tests.providers.sim_kit import ManualClock, trace


class SimHarness:
    def __init__(self) -> None:
        self.clock = ManualClock()
        # speedup 1 and an always-available trace: the contract drives time itself.
        self.provider = SimulatedCloud([trace([16] * 10)], clock=self.clock, speedup=1, notice_seconds=30)
        self.launch_errors = frozenset({"capacity", "quota", "auth", "invalid", "throttle", "server"})

    def request(self, instance_id: str, capacity: CapacityType = CapacityType.ON_DEMAND) -> LaunchRequest:
        return LaunchRequest(instance_id, "a3-highgpu-8g", "us-central1", capacity, zone="us-central1-a")

    def fail_next(self, operation: str, kind: str) -> None:
        errors = {
            "capacity": InsufficientCapacity("STOCKOUT", code="STOCKOUT"),
            "quota": QuotaExceeded("GPUS_ALL_REGIONS quota", code="QUOTA_EXCEEDED"),
            "auth": AuthError("bad credentials", code="401"),
            "invalid": InvalidRequest("bad machine type", code="400"),
            "throttle": Transient("rate limited", code="429", retry_after=1),
            "server": Transient("internal error", code="500"),
        }
        self.provider.fail_next(operation, errors[kind])

    def lose_next_launch_response(self) -> None:
        self.provider.lose_next_launch_response()

    def preempt(self, request: LaunchRequest) -> None:
        self.provider.reclaim(request.instance_id)
        self.clock.advance(seconds=31)  # past the 30 s notice

    def live_instance_count(self) -> int:
        return sum(1 for i in self.provider.list_instances() if i.state is InstanceState.RUNNING)


@pytest.fixture
def harness() -> SimHarness:
    return SimHarness()


class TestContract(ProviderContract):
    pass


def test_offers_come_from_the_real_traces_and_their_prices() -> None:
    cloud = SimulatedCloud(clock=ManualClock(), speedup=60)
    offers = cloud.list_offers()
    zones = {t.zone for t in bundled_traces()}
    assert {o.zone for o in offers} == zones and len(zones) == 8
    assert {o.instance_type for o in offers} == {
        "a3-highgpu-1g",
        "a3-highgpu-2g",
        "a3-highgpu-4g",
        "a3-highgpu-8g",
    }
    eight = {(o.zone, o.capacity_type): o for o in offers if o.instance_type == "a3-highgpu-8g"}
    # SkyNomad's GCP price pull for us-central1: a3-highgpu-8g spot $18.979008/h, on-demand $82.52543396/h.
    assert eight["us-central1-a", CapacityType.SPOT].price_per_hour == Decimal("18.979008")
    assert eight["us-central1-a", CapacityType.ON_DEMAND].price_per_hour == Decimal("82.525434")
    assert all(o.accelerator == "H100" and o.cloud == "sim" for o in offers)


def test_spot_availability_and_launches_follow_the_trace() -> None:
    clock = ManualClock()
    cloud = SimulatedCloud([trace([16, 0, 3])], clock=clock, speedup=1)
    spot = LaunchRequest("job-one", "a3-highgpu-8g", "us-central1", CapacityType.SPOT)
    assert cloud.launch(spot).state is InstanceState.RUNNING  # tick 0: 16 GPUs
    clock.advance(seconds=600)  # tick 1: 0 GPUs obtainable
    with pytest.raises(InsufficientCapacity):
        cloud.launch(LaunchRequest("job-two", "a3-highgpu-1g", "us-central1", CapacityType.SPOT))
    offer = next(o for o in cloud.list_offers() if o.capacity_type is CapacityType.SPOT)
    assert offer.availability is Availability.UNAVAILABLE
    on_demand = cloud.launch(
        LaunchRequest("job-three", "a3-highgpu-8g", "us-central1", CapacityType.ON_DEMAND)
    )
    assert on_demand.state is InstanceState.RUNNING  # on-demand does not depend on the spot trace


def test_capacity_drop_preempts_the_newest_spot_instance_after_the_notice() -> None:
    clock = ManualClock()
    cloud = SimulatedCloud([trace([16, 8])], clock=clock, speedup=1, notice_seconds=120)
    cloud.launch(LaunchRequest("old-job", "a3-highgpu-8g", "us-central1", CapacityType.SPOT))
    clock.advance(seconds=1)
    cloud.launch(LaunchRequest("new-job", "a3-highgpu-8g", "us-central1", CapacityType.SPOT))
    clock.advance(seconds=600)  # tick 1: 8 GPUs left, we hold 16
    noticed = cloud.get_instance("new-job", region="us-central1")
    assert noticed is not None and noticed.state is InstanceState.RUNNING
    assert noticed.state_reason == "preemption-notice"
    clock.advance(seconds=120)
    gone = cloud.get_instance("new-job", region="us-central1")
    kept = cloud.get_instance("old-job", region="us-central1")
    assert gone is not None and gone.state is InstanceState.PREEMPTED
    assert kept is not None and kept.state is InstanceState.RUNNING


def test_a_dip_between_two_calls_is_not_missed() -> None:
    clock = ManualClock()
    cloud = SimulatedCloud([trace([16, 16, 0, 16, 16])], clock=clock, speedup=1, notice_seconds=0)
    cloud.launch(LaunchRequest("spot-job", "a3-highgpu-1g", "us-central1", CapacityType.SPOT))
    clock.advance(seconds=4 * 600)  # the trace went to 0 at tick 2 and came back
    got = cloud.get_instance("spot-job", region="us-central1")
    assert got is not None and got.state is InstanceState.PREEMPTED


def test_the_accelerated_clock_replays_days_in_minutes() -> None:
    clock = ManualClock()
    cloud = SimulatedCloud([trace([16] * 10)], clock=clock, speedup=60)
    start = cloud.now()
    clock.advance(minutes=10)
    assert cloud.now() - start == timedelta(hours=10)


def test_reservations_are_offered_and_launched_into() -> None:
    cloud = SimulatedCloud(
        [trace([16])],
        clock=ManualClock(),
        speedup=1,
        reservations=[SimReservation("res-1", "us-central1-a", "a3-highgpu-8g", 1, Decimal("30"))],
    )
    reserved = [o for o in cloud.list_offers() if o.capacity_type is CapacityType.RESERVED]
    assert [(o.instance_type, o.price_per_hour, o.availability) for o in reserved] == [
        ("a3-highgpu-8g", Decimal("30.000000"), Availability.LIMITED)
    ]
    request = LaunchRequest(
        "res-job", "a3-highgpu-8g", "us-central1", CapacityType.RESERVED, reservation_id="res-1"
    )
    assert cloud.launch(request).price_per_hour == Decimal("30")
    with pytest.raises(InsufficientCapacity):
        cloud.launch(
            LaunchRequest(
                "res-job-2", "a3-highgpu-8g", "us-central1", CapacityType.RESERVED, reservation_id="res-1"
            )
        )
    cloud.terminate("res-job", region="us-central1")
    cloud.launch(
        LaunchRequest(
            "res-job-3", "a3-highgpu-8g", "us-central1", CapacityType.RESERVED, reservation_id="res-1"
        )
    )


def test_faults_are_seeded_and_reproducible() -> None:
    def outcomes(seed: int) -> list[str]:
        cloud = SimulatedCloud(
            [trace([16])], clock=ManualClock(), faults=SimFaults(error_rate=0.3, throttle_rate=0.2), seed=seed
        )
        result = []
        for _ in range(40):
            try:
                cloud.list_offers()
                result.append("ok")
            except Transient as exc:
                result.append(exc.code or "?")
        return result

    first = outcomes(7)
    assert first == outcomes(7)
    assert {"ok", "500", "429"} <= set(first)
    assert first != outcomes(8)


def test_outage_fails_every_call_and_check_reports_it() -> None:
    cloud = SimulatedCloud([trace([16])], clock=ManualClock(), faults=SimFaults(outage=True))
    with pytest.raises(Transient, match="outage"):
        cloud.list_offers()
    status = cloud.check()
    assert status.configured and not status.reachable and "outage" in status.detail


def test_latency_is_injected_through_the_sleep_function() -> None:
    slept: list[float] = []
    cloud = SimulatedCloud(
        [trace([16])], clock=ManualClock(), faults=SimFaults(latency_seconds=0.25), sleep=slept.append
    )
    cloud.list_offers()
    assert slept == [0.25]


def test_timeout_fault_on_launch_still_creates_the_instance() -> None:
    cloud = SimulatedCloud([trace([16])], clock=ManualClock(), faults=SimFaults(timeout_rate=1.0))
    request = LaunchRequest("timed-out", "a3-highgpu-1g", "us-central1", CapacityType.ON_DEMAND)
    with pytest.raises(Transient):
        cloud.launch(request)
    cloud.faults = SimFaults()  # the fault passes
    assert cloud.get_instance("timed-out", region="us-central1") is not None
    assert len(cloud.list_instances()) == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", SimFaults()),
        ("error_rate=0.1,latency=0.2", SimFaults(error_rate=0.1, latency_seconds=0.2)),
        ("outage=1", SimFaults(outage=True)),
        ("throttle_rate=0.5, timeout_rate=0.01", SimFaults(throttle_rate=0.5, timeout_rate=0.01)),
    ],
)
def test_fault_spec_parsing(text: str, expected: SimFaults) -> None:
    assert SimFaults.parse(text) == expected


@pytest.mark.parametrize("text", ["error_rate=2", "latency=-1", "meteor=1", "error_rate=abc"])
def test_bad_fault_spec_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        SimFaults.parse(text)


def test_from_environment_reads_its_knobs() -> None:
    cloud = from_environment(
        {
            "GPUBROKER_SIM_SPEEDUP": "120",
            "GPUBROKER_SIM_NOTICE_SECONDS": "120",
            "GPUBROKER_SIM_FAULTS": "outage=1",
        }
    )
    assert cloud.capabilities.interruption_notice_seconds == 120 and cloud.faults.outage


def test_unknown_instance_type_and_zone_are_invalid_requests() -> None:
    cloud = SimulatedCloud([trace([16])], clock=ManualClock())
    with pytest.raises(InvalidRequest, match="offered: a3-highgpu-1g"):
        cloud.launch(LaunchRequest("bad-type", "p5.48xlarge", "us-central1", CapacityType.ON_DEMAND))
    with pytest.raises(InvalidRequest, match="unknown region"):
        cloud.launch(LaunchRequest("bad-region", "a3-highgpu-1g", "mars-north1", CapacityType.ON_DEMAND))


def test_a_trace_without_prices_is_priced_from_the_bundled_catalog(tmp_path: Path) -> None:
    # An AWS V100 trace in the shared data's schema, without prices (as the Can't Be Late traces are).
    document = {
        "metadata": {
            "cloud": "aws",
            "region": "us-west-2",
            "zone": "us-west-2a",
            "instance_type": "p3.2xlarge",
            "accelerator": "V100",
            "accelerators_per_instance": 1,
            "instances_requested": 1,
            "gap_seconds": 600,
            "start_time": "2022-10-26T22:05:00+00:00",
        },
        "data": [1, 1, 0, None, 1],
    }
    (tmp_path / "us-west-2a_p3.2xlarge.json").write_text(json.dumps(document))
    cloud = from_environment({"GPUBROKER_SIM_TRACES": str(tmp_path)})
    offers = {o.capacity_type: o for o in cloud.list_offers()}
    # Bundled catalog, p3.2xlarge in us-west-2: on-demand $3.06/h; the cheapest spot AZ $0.5349/h.
    assert offers[CapacityType.ON_DEMAND].price_per_hour == Decimal("3.060000")
    assert offers[CapacityType.SPOT].price_per_hour == Decimal("0.534900")
    assert offers[CapacityType.SPOT].accelerator == "V100" and offers[CapacityType.SPOT].zone == "us-west-2a"
