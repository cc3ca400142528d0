"""The simulated cloud: a deterministic provider that replays real spot traces (in-memory, no network).

It is the default provider of ``gpubroker serve`` when no cloud credentials are configured, and
the fake behind core and scheduler tests. Time runs on an accelerated clock over the traces
(``speedup`` simulated seconds per wall second, looping at the end). In each traced zone:

* spot launches succeed only while the trace says enough GPUs are obtainable, minus what our
  own spot instances already hold; otherwise InsufficientCapacity;
* when the trace drops below what our spot instances hold, the newest are reclaimed: they get a
  preemption notice (``notice_seconds`` of simulated time: 30 GCP/Azure-like, 120 AWS-like) and
  then become PREEMPTED;
* on-demand capacity is plentiful (``on_demand_gpus`` per zone); reservations are configured;
* faults are injected on demand, seeded and reproducible: error rate, 429 throttling, timeouts
  (a launch that times out *did* happen, as with a real cloud), added latency, a whole-provider
  outage, and one-shot scripted errors.

Prices come from the trace metadata (GCP list prices fetched alongside the probes) or, for a
trace without prices, from the bundled price catalog; instance types are the trace's family
(``a3-highgpu-{1,2,4,8}g`` for the H100 traces).
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from broker.clock import Clock, utc_now
from broker.core.errors import (
    InsufficientCapacity,
    InvalidRequest,
    ProviderError,
    Transient,
)
from broker.core.ports import (
    Capabilities,
    Instance,
    InstanceState,
    LaunchIdempotency,
    LaunchRequest,
    ProviderStatus,
)
from broker.core.types import Availability, CapacityType, Offer
from pricing.bundled import bundled_snapshot
from providers.traces import SpotTrace, bundled_traces, load_traces

NAME = "sim"

# Instance families a trace's instance type belongs to: (type, GPUs). A trace probes one size;
# the family's other sizes draw on the same pool of GPUs in that zone.
INSTANCE_FAMILIES: dict[str, tuple[tuple[str, int], ...]] = {
    "a3-highgpu-1g": (("a3-highgpu-1g", 1), ("a3-highgpu-2g", 2), ("a3-highgpu-4g", 4), ("a3-highgpu-8g", 8)),
}


@dataclass(frozen=True, slots=True)
class SimFaults:
    """Faults injected into every call, drawn from a seeded RNG (so a run can be replayed)."""

    error_rate: float = 0.0  # 5xx-like Transient errors
    throttle_rate: float = 0.0  # 429-like Transient errors with retry_after
    timeout_rate: float = 0.0  # the call times out; a launch still happens
    latency_seconds: float = 0.0  # added to every call (wall time)
    outage: bool = False  # every call fails: the provider is down

    @classmethod
    def parse(cls, text: str) -> SimFaults:
        """``"error_rate=0.1,throttle_rate=0.05,latency=0.2,outage=1"`` (empty: no faults)."""
        values: dict[str, float | bool] = {}
        names = {"latency": "latency_seconds"}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, raw = part.partition("=")
            key = names.get(key.strip(), key.strip())
            if key not in cls.__dataclass_fields__:
                raise ValueError(f"unknown sim fault {key!r}; known: {', '.join(cls.__dataclass_fields__)}")
            if key == "outage":
                values[key] = raw.strip().lower() in ("1", "true", "yes", "on", "")
            else:
                value = float(raw)
                if value < 0 or (key.endswith("_rate") and value > 1):
                    raise ValueError(f"sim fault {key}={raw} is out of range")
                values[key] = value
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class SimReservation:
    """A reservation the simulated account holds: ``count`` instances of a type in a zone."""

    reservation_id: str
    zone: str
    instance_type: str
    count: int
    price_per_hour: Decimal = Decimal("0")


@dataclass
class _SimInstance:
    instance: Instance
    gpus: int
    launched_at: datetime  # simulated time
    reservation_id: str | None = None
    notice_at: datetime | None = None


@dataclass
class _Zone:
    trace: SpotTrace
    family: tuple[tuple[str, int], ...]
    last_tick_seen: int | None = None
    reserved_in_use: dict[str, int] = field(default_factory=dict)


class SimulatedCloud:
    """A provider over spot traces. Thread-safe; deterministic for a given seed and clock."""

    name = NAME

    def __init__(
        self,
        traces: Sequence[SpotTrace] | None = None,
        *,
        clock: Clock = utc_now,
        speedup: float = 60.0,
        notice_seconds: int = 30,
        on_demand_gpus: int = 64,
        reservations: Sequence[SimReservation] = (),
        faults: SimFaults | None = None,
        seed: int = 0,
        sleep: Callable[[float], None] = time.sleep,
        catalog: Sequence[Offer] = (),
    ) -> None:
        traces = list(traces) if traces is not None else bundled_traces()
        if not traces:
            raise ValueError("the simulated cloud needs at least one spot trace")
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        traces = [_priced_from_catalog(t, catalog) for t in traces]
        self._zones = {
            t.zone: _Zone(
                t, INSTANCE_FAMILIES.get(t.instance_type, ((t.instance_type, t.gpus_per_instance),))
            )
            for t in traces
        }
        self._clock = clock
        self._speedup = speedup
        self._wall_start = clock()
        self._sim_start = min(t.start_time for t in traces)
        self.notice_seconds = notice_seconds
        self.on_demand_gpus = on_demand_gpus
        self.reservations = {r.reservation_id: r for r in reservations}
        self.faults = faults or SimFaults()
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._lock = threading.RLock()
        self._instances: dict[str, _SimInstance] = {}
        self._ids = itertools.count(1)
        self._scripted: dict[str, list[ProviderError]] = {}
        self._lose_next_launch = 0
        self.calls: Counter[str] = Counter()  # call log, by operation
        self.capabilities = Capabilities(
            capacity_types=frozenset(CapacityType),
            reservations=True,
            interruption_notice_seconds=notice_seconds,
            availability_signal=True,
            live_prices=True,
            launch_idempotency=LaunchIdempotency.CLIENT_TOKEN,
            regions=tuple(sorted({t.region for t in traces})),
        )

    # --- the simulated clock -------------------------------------------------------------------
    def now(self) -> datetime:
        """Simulated time: the traces' start plus accelerated wall time since this cloud started."""
        return self._sim_start + (self._clock() - self._wall_start) * self._speedup

    # --- scripting (the sim is its own fake: tests and the operator use these levers) -----------
    def fail_next(self, operation: str, error: ProviderError) -> None:
        """The next call of ``operation`` (a method name) raises ``error``."""
        with self._lock:
            self._scripted.setdefault(operation, []).append(error)

    def lose_next_launch_response(self) -> None:
        """The next launch happens but its caller gets a timeout."""
        with self._lock:
            self._lose_next_launch += 1

    def reclaim(self, instance_id: str) -> None:
        """Preempt one spot instance now, as if the trace had dropped (with the usual notice)."""
        with self._lock:
            record = self._instances.get(instance_id)
            if record is None or record.instance.capacity_type is not CapacityType.SPOT:
                raise ValueError(f"{instance_id} is not a live spot instance of the simulated cloud")
            self._notify(record, self.now())
            self._settle_notices(self.now())

    # --- Provider ----------------------------------------------------------------------------
    def list_offers(self, *, regions: Sequence[str] | None = None) -> list[Offer]:
        with self._lock:
            self._enter("list_offers", None)
            now = self.now()
            self._advance(now)
            offers: list[Offer] = []
            for zone in self._zones.values():
                trace = zone.trace
                if regions is not None and trace.region not in regions:
                    continue
                free_od = self._free_gpus(zone, CapacityType.ON_DEMAND, now)
                free_spot = self._free_gpus(zone, CapacityType.SPOT, now)
                spot_per_gpu = trace.spot_price_per_gpu_at(trace.tick(now))
                for instance_type, gpus in zone.family:
                    for capacity, per_gpu, free in (
                        (CapacityType.ON_DEMAND, trace.on_demand_price_per_gpu, free_od),
                        (CapacityType.SPOT, spot_per_gpu, free_spot),
                    ):
                        if per_gpu is None:
                            continue
                        offers.append(self._offer(trace, instance_type, gpus, capacity, per_gpu, free))
            for reservation in self.reservations.values():
                trace = self._zones[reservation.zone].trace
                if regions is not None and trace.region not in regions:
                    continue
                gpus = dict(self._zones[reservation.zone].family).get(reservation.instance_type, 1)
                free = self._reservation_free(reservation)
                offers.append(
                    replace(
                        self._offer(
                            trace,
                            reservation.instance_type,
                            gpus,
                            CapacityType.RESERVED,
                            reservation.price_per_hour / gpus,
                            free * gpus,
                        ),
                        source=f"sim:reservation/{reservation.reservation_id}",
                    )
                )
            return offers

    def launch(self, request: LaunchRequest) -> Instance:
        with self._lock:
            self._enter("launch", request.region)
            now = self.now()
            self._advance(now)
            existing = self._instances.get(request.instance_id)
            if existing is not None and existing.instance.state not in (
                InstanceState.TERMINATED,
                InstanceState.PREEMPTED,
            ):
                return existing.instance  # idempotent: same instance id, same instance
            zone = self._pick_zone(request)
            gpus = self._gpus_of(zone, request.instance_type)
            self._check_capacity(zone, request, gpus, now)
            record = _SimInstance(
                instance=Instance(
                    provider=NAME,
                    instance_id=request.instance_id,
                    provider_instance_id=f"sim-{next(self._ids):06d}",
                    instance_type=request.instance_type,
                    region=zone.trace.region,
                    zone=zone.trace.zone,
                    capacity_type=request.capacity_type,
                    state=InstanceState.RUNNING,
                    launched_at=now,
                    price_per_hour=self._price(
                        zone, request.capacity_type, gpus, now, request.reservation_id
                    ),
                ),
                gpus=gpus,
                launched_at=now,
                reservation_id=request.reservation_id,
            )
            self._instances[request.instance_id] = record
            if request.reservation_id:
                zone.reserved_in_use[request.reservation_id] = (
                    zone.reserved_in_use.get(request.reservation_id, 0) + 1
                )
            if self._lose_next_launch or (
                self.faults.timeout_rate and self._rng.random() < self.faults.timeout_rate
            ):
                self._lose_next_launch = max(0, self._lose_next_launch - 1)
                raise Transient(
                    "launch timed out (the instance may exist)",
                    provider=NAME,
                    region=request.region,
                    code="timeout",
                )
            return record.instance

    def get_instance(self, instance_id: str, *, region: str) -> Instance | None:
        with self._lock:
            self._enter("get_instance", region)
            self._advance(self.now())
            record = self._instances.get(instance_id)
            return None if record is None or record.instance.region != region else record.instance

    def list_instances(self, *, regions: Sequence[str] | None = None) -> list[Instance]:
        with self._lock:
            self._enter("list_instances", None)
            self._advance(self.now())
            return [
                r.instance
                for r in self._instances.values()
                if regions is None or r.instance.region in regions
            ]

    def terminate(self, instance_id: str, *, region: str) -> None:
        with self._lock:
            self._enter("terminate", region)
            self._advance(self.now())
            record = self._instances.get(instance_id)
            if record is None or record.instance.state in (InstanceState.TERMINATED, InstanceState.PREEMPTED):
                return  # already gone: done
            self._end(record, InstanceState.TERMINATED, "terminated by gpubroker")

    def check(self) -> ProviderStatus:
        try:
            with self._lock:
                self._enter("check", None)
        except ProviderError as exc:
            return ProviderStatus(NAME, configured=True, reachable=False, detail=str(exc))
        return ProviderStatus(
            NAME,
            configured=True,
            reachable=True,
            detail=f"{len(self._zones)} traced zones, simulated time {self.now():%Y-%m-%d %H:%M}",
        )

    # --- internals -----------------------------------------------------------------------------
    def _enter(self, operation: str, region: str | None) -> None:
        """Faults first: a scripted error, an outage, then random errors and latency."""
        self.calls[operation] += 1
        scripted = self._scripted.get(operation)
        if scripted:
            error = scripted.pop(0)
            error.provider = error.provider or NAME
            raise error
        if self.faults.latency_seconds:
            self._sleep(self.faults.latency_seconds)
        if self.faults.outage:
            raise Transient("simulated provider outage", provider=NAME, region=region, code="outage")
        if self.faults.error_rate and self._rng.random() < self.faults.error_rate:
            raise Transient("simulated server error", provider=NAME, region=region, code="500")
        if self.faults.throttle_rate and self._rng.random() < self.faults.throttle_rate:
            raise Transient("simulated throttling", provider=NAME, region=region, code="429", retry_after=1.0)
        if (
            operation != "launch"
            and self.faults.timeout_rate
            and self._rng.random() < self.faults.timeout_rate
        ):
            raise Transient("simulated timeout", provider=NAME, region=region, code="timeout")

    def _offer(
        self,
        trace: SpotTrace,
        instance_type: str,
        gpus: int,
        capacity: CapacityType,
        per_gpu: Decimal,
        free_gpus: int,
    ) -> Offer:
        if free_gpus >= 2 * gpus:
            availability = Availability.AVAILABLE
        elif free_gpus >= gpus:
            availability = Availability.LIMITED
        else:
            availability = Availability.UNAVAILABLE
        return Offer(
            cloud=NAME,
            region=trace.region,
            zone=trace.zone,
            instance_type=instance_type,
            accelerator=trace.accelerator,
            accelerator_count=gpus,
            vcpus=None,
            memory_gib=None,
            capacity_type=capacity,
            price_per_hour=(per_gpu * gpus).quantize(Decimal("0.000001")),
            currency="USD",
            source=f"sim:{trace.source}",
            observed_at=self._clock(),
            availability=availability,
        )

    def _gpus_held(self, zone: str, capacity: CapacityType) -> int:
        return sum(
            r.gpus
            for r in self._instances.values()
            if r.instance.zone == zone
            and r.instance.capacity_type is capacity
            and r.instance.state is InstanceState.RUNNING
        )

    def _free_gpus(self, zone: _Zone, capacity: CapacityType, now: datetime) -> int:
        """GPUs a new spot or on-demand instance could get in ``zone`` now (negative: oversubscribed)."""
        if capacity is CapacityType.SPOT:
            return zone.trace.gpus_available(zone.trace.tick(now)) - self._gpus_held(
                zone.trace.zone, capacity
            )
        return self.on_demand_gpus - self._gpus_held(zone.trace.zone, capacity)

    def _reservation_free(self, reservation: SimReservation) -> int:
        """Instances still free in a reservation."""
        in_use = self._zones[reservation.zone].reserved_in_use.get(reservation.reservation_id, 0)
        return reservation.count - in_use

    def _pick_zone(self, request: LaunchRequest) -> _Zone:
        if request.zone is not None:
            zone = self._zones.get(request.zone)
            if zone is None or zone.trace.region != request.region:
                raise InvalidRequest(
                    f"unknown zone {request.zone!r} in {request.region}",
                    provider=NAME,
                    region=request.region,
                    code="unknown-zone",
                )
            return zone
        if request.reservation_id in self.reservations:
            return self._zones[self.reservations[request.reservation_id].zone]
        in_region = [z for z in self._zones.values() if z.trace.region == request.region]
        if not in_region:
            raise InvalidRequest(
                f"unknown region {request.region!r}",
                provider=NAME,
                region=request.region,
                code="unknown-region",
            )
        if request.capacity_type is not CapacityType.SPOT:
            return in_region[0]
        now = self.now()
        return max(in_region, key=lambda z: self._free_gpus(z, CapacityType.SPOT, now))

    def _gpus_of(self, zone: _Zone, instance_type: str) -> int:
        gpus = dict(zone.family).get(instance_type)
        if gpus is None:
            raise InvalidRequest(
                f"instance type {instance_type!r} is not offered in {zone.trace.zone}; "
                f"offered: {', '.join(t for t, _ in zone.family)}",
                provider=NAME,
                region=zone.trace.region,
                code="unknown-instance-type",
            )
        return gpus

    def _check_capacity(self, zone: _Zone, request: LaunchRequest, gpus: int, now: datetime) -> None:
        trace = zone.trace
        if request.capacity_type is not CapacityType.RESERVED:
            free = self._free_gpus(zone, request.capacity_type, now)
        else:
            reservation = self.reservations.get(request.reservation_id or "")
            if reservation is None or reservation.zone != trace.zone:
                raise InvalidRequest(
                    f"no reservation {request.reservation_id!r} in {trace.zone}",
                    provider=NAME,
                    region=trace.region,
                    code="unknown-reservation",
                )
            if reservation.instance_type != request.instance_type:
                raise InvalidRequest(
                    f"reservation {reservation.reservation_id} holds {reservation.instance_type}",
                    provider=NAME,
                    region=trace.region,
                    code="reservation-mismatch",
                )
            free = self._reservation_free(reservation) * gpus
        if free < gpus:
            raise InsufficientCapacity(
                f"no {request.capacity_type.value} capacity for {request.instance_type} in {trace.zone} "
                f"({max(free, 0)} GPUs free)",
                provider=NAME,
                region=trace.region,
                code="STOCKOUT",
            )

    def _price(
        self, zone: _Zone, capacity: CapacityType, gpus: int, now: datetime, reservation_id: str | None
    ) -> Decimal | None:
        if capacity is CapacityType.RESERVED:
            return self.reservations[reservation_id].price_per_hour if reservation_id else None
        trace = zone.trace
        per_gpu = (
            trace.spot_price_per_gpu_at(trace.tick(now))
            if capacity is CapacityType.SPOT
            else trace.on_demand_price_per_gpu
        )
        return None if per_gpu is None else (per_gpu * gpus).quantize(Decimal("0.000001"))

    def _advance(self, now: datetime) -> None:
        """Replay every tick since the last call: reclaim spot capacity the trace took away."""
        for zone in self._zones.values():
            trace = zone.trace
            current = trace.tick(now)
            start = current if zone.last_tick_seen is None else zone.last_tick_seen + 1
            steps = (current - start) % len(trace.values) + 1 if zone.last_tick_seen != current else 0
            for offset in range(min(steps, len(trace.values))):
                index = (start + offset) % len(trace.values)
                held = self._spot_records(trace.zone)
                excess = sum(r.gpus for r in held) - trace.gpus_available(index)
                for record in held:  # newest first: the last in is the first reclaimed
                    if excess <= 0:
                        break
                    tick_time = now - timedelta(
                        seconds=((current - index) % len(trace.values)) * trace.gap_seconds
                    )
                    self._notify(record, tick_time)
                    excess -= record.gpus
            zone.last_tick_seen = current
        self._settle_notices(now)

    def _spot_records(self, zone: str) -> list[_SimInstance]:
        held = [
            r
            for r in self._instances.values()
            if r.instance.zone == zone
            and r.instance.capacity_type is CapacityType.SPOT
            and r.instance.state is InstanceState.RUNNING
            and r.notice_at is None
        ]
        return sorted(held, key=lambda r: (r.launched_at, r.instance.provider_instance_id), reverse=True)

    def _notify(self, record: _SimInstance, at: datetime) -> None:
        if record.notice_at is None:
            record.notice_at = at
            record.instance = replace(record.instance, state_reason="preemption-notice")

    def _settle_notices(self, now: datetime) -> None:
        for record in self._instances.values():
            if (
                record.notice_at is not None
                and record.instance.state is InstanceState.RUNNING
                and now >= record.notice_at + timedelta(seconds=self.notice_seconds)
            ):
                self._end(record, InstanceState.PREEMPTED, "spot capacity reclaimed (trace)")

    def _end(self, record: _SimInstance, state: InstanceState, reason: str) -> None:
        record.instance = replace(record.instance, state=state, state_reason=reason)
        if record.reservation_id:
            zone = self._zones[record.instance.zone or ""]
            zone.reserved_in_use[record.reservation_id] -= 1


def _priced_from_catalog(trace: SpotTrace, catalog: Sequence[Offer]) -> SpotTrace:
    """Fill a trace's missing list prices from the catalog: the region's lowest price per GPU for
    its instance type (catalog zones are not always the trace's: AWS lists AZ ids, traces AZ names)."""
    if trace.on_demand_price_per_gpu is not None and trace.spot_price_per_gpu is not None:
        return trace
    matching = [
        o
        for o in catalog
        if o.cloud == trace.cloud and o.region == trace.region and o.instance_type == trace.instance_type
    ]

    def lowest(capacity: CapacityType) -> Decimal | None:
        prices = [o.price_per_gpu_hour for o in matching if o.capacity_type is capacity]
        return min(prices) if prices else None

    return replace(
        trace,
        on_demand_price_per_gpu=trace.on_demand_price_per_gpu or lowest(CapacityType.ON_DEMAND),
        spot_price_per_gpu=trace.spot_price_per_gpu or lowest(CapacityType.SPOT),
    )


def from_environment(environ: Mapping[str, str] | None = None) -> SimulatedCloud:
    """The simulated cloud configured from ``GPUBROKER_SIM_*`` variables (always available).

    GPUBROKER_SIM_TRACES (extra trace files/folders, ``:``-separated; the bundled GCP H100 traces
    otherwise), GPUBROKER_SIM_SPEEDUP (default 60), GPUBROKER_SIM_NOTICE_SECONDS (30),
    GPUBROKER_SIM_SEED (0), GPUBROKER_SIM_FAULTS (e.g. ``error_rate=0.1,latency=0.2,outage=1``).
    """
    env = os.environ if environ is None else environ
    paths = [Path(p) for p in env.get("GPUBROKER_SIM_TRACES", "").split(os.pathsep) if p]
    traces = load_traces(paths) if paths else None
    return SimulatedCloud(
        traces,
        # Traces from a path may carry no prices: the bundled catalog prices them.
        catalog=bundled_snapshot().offers if traces else (),
        speedup=float(env.get("GPUBROKER_SIM_SPEEDUP", "60")),
        notice_seconds=int(env.get("GPUBROKER_SIM_NOTICE_SECONDS", "30")),
        seed=int(env.get("GPUBROKER_SIM_SEED", "0")),
        faults=SimFaults.parse(env.get("GPUBROKER_SIM_FAULTS", "")),
    )
