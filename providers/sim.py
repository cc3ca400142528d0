"""The simulated cloud: a provider replaying real spot traces (in memory or in a state file; no network).

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

Like a real cloud, it can outlive the process that talks to it: with a ``state_path`` its
instances, id counter, clock and replay position live in one JSON file. Every call that can change
them takes an inter-process lock (``flock`` on ``<state>.lock``), reloads the file when another
process changed it, and replaces it atomically before returning, so a ``kill -9`` of the caller
leaves the old or the new state and a launch that returned is on disk. Several processes (or
objects) on one file see one cloud. Without a state path everything stays in memory, as fast as
ever (the reconciler benchmark runs 10,000 instances that way). The fault levers (scripted errors,
lost responses, the call log) belong to one object, not to the cloud.

It also pushes what it does on its own: ``subscribe`` to :class:`SimEvent` (preemption notices
and preemptions, from the traces or ``reclaim``) and ``start_ticker`` to advance the clock in the
background and deliver them, the way a real cloud's metadata service tells the node agent.

Prices come from the trace metadata (GCP list prices fetched alongside the probes) or, for a
trace without prices, from the bundled price catalog; instance types are the trace's family
(``a3-highgpu-{1,2,4,8}g`` for the H100 traces).
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import os
import random
import re
import tempfile
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

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
_log = logging.getLogger(__name__)

# Instance families a trace's instance type belongs to: (type, GPUs). A trace probes one size;
# the family's other sizes draw on the same pool of GPUs in that zone.
INSTANCE_FAMILIES: dict[str, tuple[tuple[str, int], ...]] = {
    "a3-highgpu-1g": (("a3-highgpu-1g", 1), ("a3-highgpu-2g", 2), ("a3-highgpu-4g", 4), ("a3-highgpu-8g", 8)),
}

PREEMPTION_NOTICE = "preemption-notice"
PREEMPTED = "preempted"
SimEventKind = Literal["preemption-notice", "preempted"]
_GONE = (InstanceState.TERMINATED, InstanceState.PREEMPTED)
_NO_TIME = timedelta(0)


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


@dataclass(frozen=True, slots=True)
class SimEvent:
    """Something the simulated cloud did to an instance on its own, pushed to subscribers."""

    kind: SimEventKind  # "preemption-notice" | "preempted"
    instance: Instance  # as it was at that moment
    at: datetime  # simulated time it happened


class SimStateError(ProviderError):
    """The state file cannot be used (unreadable, not JSON, damaged); the message names the file.

    Not retryable and never papered over: starting empty would orphan every instance in it."""


@dataclass
class _SimInstance:
    instance: Instance
    gpus: int
    launched_at: datetime  # simulated time
    reservation_id: str | None = None
    notice_at: datetime | None = None
    ended_at: datetime | None = None  # simulated time it was terminated or preempted


@dataclass
class _Zone:
    trace: SpotTrace
    family: tuple[tuple[str, int], ...]
    last_tick_seen: int | None = None
    reserved_in_use: dict[str, int] = field(default_factory=dict)


class SimulatedCloud:
    """A provider over spot traces. Thread-safe; deterministic for a given seed and clock.

    With ``state_path`` the cloud lives in that JSON file and is shared by every object (in any
    process) opened on it; without, it lives in this object only."""

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
        state_path: Path | None = None,
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
        # (wall time, simulated time) at one instant; one tuple so a reload swaps both at once.
        self._anchor = (clock(), min(t.start_time for t in traces))
        self.notice_seconds = notice_seconds
        self.on_demand_gpus = on_demand_gpus
        self.reservations = {r.reservation_id: r for r in reservations}
        self.faults = faults or SimFaults()
        self._rng = random.Random(seed)
        self._sleep = sleep
        self._lock = threading.RLock()
        self._instances: dict[str, _SimInstance] = {}
        self._next_id = 1
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
        # Events: queued under the lock only while someone listens, delivered outside it.
        self._subscribers: dict[int, Callable[[SimEvent], None]] = {}
        self._subscriber_keys = itertools.count()
        self._pending: list[SimEvent] = []
        self._delivering = threading.RLock()  # one delivery at a time keeps the order
        self._wake = threading.Event()  # set when events are queued: the ticker delivers at once
        self._ticker: threading.Thread | None = None
        self._ticker_stop = threading.Event()
        # Persistence.
        self._dirty = False  # state changed since the last save (only read with a state file)
        self._generation: int | None = None  # the file's generation this object last loaded or wrote
        self._other_ticks: dict[str, int] = {}  # replay positions of zones another config traces
        self._store = _StateFile(Path(state_path)) if state_path is not None else None
        if self._store is not None:
            self._open_state(self._store)

    @property
    def state_path(self) -> Path | None:
        """The JSON file this cloud lives in (None: in memory only)."""
        return self._store.path if self._store is not None else None

    # --- the simulated clock -------------------------------------------------------------------
    def now(self) -> datetime:
        """Simulated time: accelerated wall time since the anchor (this cloud's start, or the last
        save of its state file); never earlier than the anchor, even when the wall clock steps back."""
        return self._simulated_at(self._clock())

    def _simulated_at(self, wall: datetime) -> datetime:
        anchor_wall, anchor_simulated = self._anchor
        elapsed = wall - anchor_wall
        return anchor_simulated + elapsed * self._speedup if elapsed > _NO_TIME else anchor_simulated

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
        """Preempt one spot instance now, as if the trace had dropped (with the usual notice).

        The notice event reaches subscribers on the running ticker at once (it is woken)."""
        with self._lock, self._synced():
            record = self._instances.get(instance_id)
            if (
                record is None
                or record.instance.capacity_type is not CapacityType.SPOT
                or record.instance.state is not InstanceState.RUNNING
            ):
                raise ValueError(f"{instance_id} is not a live spot instance of the simulated cloud")
            now = self.now()
            self._notify(record, now)
            self._settle_notices(now)

    # --- events --------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[SimEvent], None]) -> Callable[[], None]:
        """Call ``callback`` with every preemption notice and preemption from now on; returns the
        unsubscribe function. Callbacks run on the delivering thread (the ticker, or whoever calls
        ``tick``/``deliver_events``), outside the cloud's lock, one event at a time."""
        with self._lock:
            key = next(self._subscriber_keys)
            self._subscribers[key] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(key, None)

        return unsubscribe

    def deliver_events(self) -> int:
        """Deliver the queued events to the current subscribers (in simulated-time order); returns
        how many. A callback that raises is logged and the others still get the event."""
        with self._delivering:
            with self._lock:
                events, self._pending = self._pending, []
                callbacks = list(self._subscribers.values())
            events.sort(key=lambda event: event.at)  # stable: a notice stays before its preemption
            for event in events:
                for callback in callbacks:
                    try:
                        callback(event)
                    except Exception:
                        _log.exception(
                            "a simulated-cloud event subscriber failed on %s of %s",
                            event.kind,
                            event.instance.instance_id,
                        )
        return len(events)

    def tick(self) -> int:
        """Advance the simulated clock now (reclaiming what the traces took away, saved to the state
        file), then deliver the queued events; returns how many were delivered."""
        with self._lock, self._synced():
            self._advance(self.now())
        return self.deliver_events()

    def start_ticker(self, interval_seconds: float = 0.2) -> None:
        """Tick every ``interval_seconds`` on a daemon thread (at once on start), and deliver
        events queued by any other call as soon as they are queued. No-op while one runs."""
        if interval_seconds <= 0:
            raise ValueError("interval_seconds must be positive")
        with self._lock:
            if self._ticker is not None and self._ticker.is_alive():
                return
            stop = threading.Event()
            self._ticker_stop = stop
            self._ticker = threading.Thread(
                target=self._run_ticker, args=(interval_seconds, stop), name="sim-cloud-ticker", daemon=True
            )
            self._ticker.start()

    def stop_ticker(self) -> None:
        """Stop the ticker and wait for it (events still queued stay queued for ``deliver_events``)."""
        with self._lock:
            thread, self._ticker = self._ticker, None
            self._ticker_stop.set()
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def close(self) -> None:
        """Stop the ticker and let go of the state file's lock file (the state stays on disk)."""
        self.stop_ticker()
        with self._lock:
            if self._store is not None:
                self._store.close()

    def _run_ticker(self, interval: float, stop: threading.Event) -> None:
        deadline = time.monotonic()  # the first tick at once
        while True:
            self._wake.wait(max(0.0, deadline - time.monotonic()))
            # Cleared before delivering: an event queued from here on sets it again, none is missed.
            self._wake.clear()
            if stop.is_set():
                return
            try:
                if time.monotonic() >= deadline:
                    deadline = time.monotonic() + interval
                    self.tick()
                else:
                    self.deliver_events()
            except Exception:
                _log.exception("the simulated cloud's ticker failed; it keeps ticking")

    # --- Provider ----------------------------------------------------------------------------
    def list_offers(self, *, regions: Sequence[str] | None = None) -> list[Offer]:
        with self._lock:
            self._enter("list_offers", None)
            with self._synced():
                now = self.now()
                self._advance(now)
                return self._offers(now, regions)

    def launch(self, request: LaunchRequest) -> Instance:
        with self._lock:
            self._enter("launch", request.region)
            with self._synced():  # saved on the way out, the lost-response timeout included
                return self._launch(request)

    def get_instance(self, instance_id: str, *, region: str) -> Instance | None:
        with self._lock:
            self._enter("get_instance", region)
            with self._synced():
                self._advance(self.now())
                record = self._instances.get(instance_id)
                return None if record is None or record.instance.region != region else record.instance

    def list_instances(self, *, regions: Sequence[str] | None = None) -> list[Instance]:
        with self._lock:
            self._enter("list_instances", None)
            with self._synced():
                self._advance(self.now())
                return [
                    r.instance
                    for r in self._instances.values()
                    if regions is None or r.instance.region in regions
                ]

    def terminate(self, instance_id: str, *, region: str) -> None:
        with self._lock:
            self._enter("terminate", region)
            with self._synced():
                now = self.now()
                self._advance(now)
                record = self._instances.get(instance_id)
                if record is None or record.instance.state in _GONE:
                    return  # already gone: done
                self._end(record, InstanceState.TERMINATED, "terminated by gpubroker", now)

    def check(self) -> ProviderStatus:
        try:
            with self._lock:
                self._enter("check", None)
                with self._synced():  # with a state file: is it readable?
                    pass
        except ProviderError as exc:
            return ProviderStatus(NAME, configured=True, reachable=False, detail=str(exc))
        where = f", state in {self._store.path}" if self._store is not None else ""
        return ProviderStatus(
            NAME,
            configured=True,
            reachable=True,
            detail=f"{len(self._zones)} traced zones, simulated time {self.now():%Y-%m-%d %H:%M}{where}",
        )

    # --- internals -----------------------------------------------------------------------------
    def _offers(self, now: datetime, regions: Sequence[str] | None) -> list[Offer]:
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

    def _launch(self, request: LaunchRequest) -> Instance:
        now = self.now()
        self._advance(now)
        existing = self._instances.get(request.instance_id)
        if existing is not None and existing.instance.state not in _GONE:
            return existing.instance  # idempotent: same instance id, same instance
        zone = self._pick_zone(request)
        gpus = self._gpus_of(zone, request.instance_type)
        self._check_capacity(zone, request, gpus, now)
        record = _SimInstance(
            instance=Instance(
                provider=NAME,
                instance_id=request.instance_id,
                provider_instance_id=f"sim-{self._next_id:06d}",
                instance_type=request.instance_type,
                region=zone.trace.region,
                zone=zone.trace.zone,
                capacity_type=request.capacity_type,
                state=InstanceState.RUNNING,
                launched_at=now,
                price_per_hour=self._price(zone, request.capacity_type, gpus, now, request.reservation_id),
            ),
            gpus=gpus,
            launched_at=now,
            reservation_id=request.reservation_id,
        )
        self._next_id += 1
        self._instances[request.instance_id] = record
        self._dirty = True
        if request.reservation_id:
            in_use = zone.reserved_in_use.get(request.reservation_id, 0)
            zone.reserved_in_use[request.reservation_id] = in_use + 1
        timed_out = self.faults.timeout_rate and self._rng.random() < self.faults.timeout_rate
        if self._lose_next_launch or timed_out:
            self._lose_next_launch = max(0, self._lose_next_launch - 1)
            raise Transient(
                "launch timed out (the instance may exist)",
                provider=NAME,
                region=request.region,
                code="timeout",
            )
        return record.instance

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
            if zone.last_tick_seen != current:
                zone.last_tick_seen = current
                self._dirty = True
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
            record.instance = replace(record.instance, state_reason=PREEMPTION_NOTICE)
            self._dirty = True
            if self._subscribers:
                self._queue(SimEvent(PREEMPTION_NOTICE, record.instance, at))

    def _settle_notices(self, now: datetime) -> None:
        notice = timedelta(seconds=self.notice_seconds)
        for record in self._instances.values():
            if (
                record.notice_at is not None
                and record.instance.state is InstanceState.RUNNING
                and now >= record.notice_at + notice
            ):
                reclaimed_at = record.notice_at + notice
                self._end(record, InstanceState.PREEMPTED, "spot capacity reclaimed (trace)", reclaimed_at)

    def _end(self, record: _SimInstance, state: InstanceState, reason: str, at: datetime) -> None:
        record.instance = replace(record.instance, state=state, state_reason=reason)
        record.ended_at = at
        self._dirty = True
        if record.reservation_id:
            zone = self._zones.get(record.instance.zone or "")
            if zone is not None:
                zone.reserved_in_use[record.reservation_id] -= 1
        if state is InstanceState.PREEMPTED and self._subscribers:
            self._queue(SimEvent(PREEMPTED, record.instance, at))

    def _queue(self, event: SimEvent) -> None:
        self._pending.append(event)
        self._wake.set()

    # --- persistence -----------------------------------------------------------------------------
    @contextmanager
    def _synced(self) -> Iterator[None]:
        """Around a call that may change the cloud (the caller holds ``self._lock``): with a state
        file, hold its lock, load what other processes saved, and save the change before returning,
        even when the call raises (a launch that timed out did happen)."""
        store = self._store
        if store is None:
            yield
            return
        with store.locked():
            self._dirty = False
            queued = len(self._pending)
            self._load_if_changed(store)
            try:
                yield
            finally:
                if self._dirty:
                    try:
                        self._save(store)
                    except BaseException:
                        # Memory now holds a change the file does not: reload at the next call, and
                        # take back the events of the change (they happen again when it is redone).
                        self._generation = None
                        del self._pending[queued:]
                        raise

    def _open_state(self, store: _StateFile) -> None:
        with self._lock, store.locked():
            store.remove_leftovers()
            try:
                document = store.read()
            except FileNotFoundError:
                self._save(store)  # a new cloud: its clock starts now
                return
            self._apply(document, store, announce=False)

    def _load_if_changed(self, store: _StateFile) -> None:
        try:
            document = store.read(unless_generation=self._generation)
        except FileNotFoundError:
            # Deleted under us: this object still knows the cloud, so the file comes back.
            self._dirty = True
            return
        if document is not None:
            self._apply(document, store, announce=True)

    def _apply(self, document: Mapping[str, Any], store: _StateFile, *, announce: bool) -> None:
        """Adopt a loaded state; with ``announce``, queue events for notices and preemptions that
        another process made since this object last looked."""
        try:
            generation = int(document["generation"])
            next_id = int(document["next_id"])
            anchor = (_parse_time(document["clock"]["wall"]), _parse_time(document["clock"]["simulated"]))
            ticks = {str(zone): int(tick) for zone, tick in document["ticks"].items()}
            records = {r.instance.instance_id: r for r in map(_decode_instance, document["instances"])}
        except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
            raise store.damaged(f"{type(exc).__name__}: {exc}") from exc
        if announce and self._subscribers:
            for event in _changes(self._instances, records, self.notice_seconds):
                self._queue(event)
        self._instances = records
        self._next_id = next_id
        self._anchor = anchor
        self._generation = generation
        for name, zone in self._zones.items():
            zone.last_tick_seen = ticks.pop(name, None)
            zone.reserved_in_use = {}
        self._other_ticks = ticks
        for record in records.values():
            zone = self._zones.get(record.instance.zone or "")
            if record.reservation_id and zone is not None and record.instance.state not in _GONE:
                in_use = zone.reserved_in_use.get(record.reservation_id, 0)
                zone.reserved_in_use[record.reservation_id] = in_use + 1

    def _save(self, store: _StateFile) -> None:
        wall = self._clock()
        anchor = (wall, self._simulated_at(wall))  # re-anchored: a later reader continues from here
        generation = (self._generation or 0) + 1
        ticks = dict(self._other_ticks)
        ticks.update({n: z.last_tick_seen for n, z in self._zones.items() if z.last_tick_seen is not None})
        document = {  # "format" and "generation" first: a reader checks them without parsing the rest
            "format": _STATE_FORMAT,
            "generation": generation,
            "next_id": self._next_id,
            "clock": {"wall": anchor[0].isoformat(), "simulated": anchor[1].isoformat()},
            "ticks": ticks,
            "instances": [_encode_instance(r) for r in self._instances.values()],
        }
        try:
            store.write(document)
        except OSError as exc:
            raise Transient(
                f"the simulated cloud could not save its state to {store.path}: {exc}",
                provider=NAME,
                code="state-io",
            ) from exc
        self._anchor = anchor
        self._generation = generation
        self._dirty = False


_STATE_FORMAT = 1
_STATE_HEAD = re.compile(rb'\{"format":1,"generation":(\d+),')


class _StateFile:
    """The cloud's state on disk: one compact JSON document, replaced atomically (temporary file in
    the same folder, fsync, rename, fsync of the folder), guarded by ``flock`` on ``<name>.lock``."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd: int | None = None
        self._lock_pid = 0
        self._closer: weakref.finalize | None = None  # closes the lock file when this is collected

    @contextmanager
    def locked(self) -> Iterator[None]:
        # Opened once and kept, per process: flock belongs to the open file, which a fork shares,
        # so a forked child opens its own or parent and child would both "hold" the lock.
        if self._lock_fd is None or self._lock_pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._lock_pid = os.getpid()
            self._closer = weakref.finalize(self, os.close, self._lock_fd)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._closer is not None and self._lock_pid == os.getpid():
            self._closer()
        self._lock_fd = self._closer = None

    def read(self, *, unless_generation: int | None = None) -> dict[str, Any] | None:
        """The document, or None when its generation is ``unless_generation`` (read from its first
        bytes only). Raises FileNotFoundError when there is no file, SimStateError when it is bad."""
        try:
            with open(self.path, "rb") as file:
                head = file.read(64)
                match = _STATE_HEAD.match(head)
                if match is not None and unless_generation is not None and int(match[1]) == unless_generation:
                    return None
                data = head + file.read()
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self.damaged(f"cannot read it: {exc}") from exc
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise self.damaged(f"not JSON: {exc}") from exc
        if not isinstance(document, dict) or document.get("format") != _STATE_FORMAT:
            raise self.damaged(f"not a format-{_STATE_FORMAT} simulated-cloud state")
        return document

    def write(self, document: Mapping[str, Any]) -> None:
        text = json.dumps(document, separators=(",", ":"))
        fd, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with suppress(OSError):
                os.unlink(temporary)
            raise
        folder = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)  # the rename itself survives a power cut
        finally:
            os.close(folder)

    def remove_leftovers(self) -> None:
        """Temporary files of a writer killed mid-write (only called with the lock held)."""
        prefix = f".{self.path.name}."
        for leftover in self.path.parent.iterdir():
            if leftover.name.startswith(prefix) and leftover.name.endswith(".tmp"):
                with suppress(OSError):
                    leftover.unlink()

    def damaged(self, problem: str) -> SimStateError:
        return SimStateError(
            f"the simulated cloud's state file {self.path} cannot be used ({problem}); repair it, or "
            "delete it to start an empty cloud (its instances are then forgotten)",
            provider=NAME,
            code="state-file",
        )


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no time zone")
    return moment


def _parse_optional_time(text: str | None) -> datetime | None:
    return None if text is None else _parse_time(text)


def _encode_instance(record: _SimInstance) -> dict[str, Any]:
    instance = record.instance
    row = {
        "instance_id": instance.instance_id,
        "provider_instance_id": instance.provider_instance_id,
        "instance_type": instance.instance_type,
        "region": instance.region,
        "zone": instance.zone,
        "capacity_type": instance.capacity_type.value,
        "state": instance.state.value,
        "launched_at": _iso(instance.launched_at),
        "state_reason": instance.state_reason,
        "price_per_hour": None if instance.price_per_hour is None else str(instance.price_per_hour),
        "public_ip": instance.public_ip,
        "gpus": record.gpus,
        "sim_launched_at": _iso(record.launched_at),
        "reservation_id": record.reservation_id,
        "notice_at": _iso(record.notice_at),
        "ended_at": _iso(record.ended_at),
    }
    return {key: value for key, value in row.items() if value is not None}  # compact: absent is None


def _decode_instance(row: Mapping[str, Any]) -> _SimInstance:
    price = row.get("price_per_hour")
    return _SimInstance(
        instance=Instance(
            provider=NAME,
            instance_id=str(row["instance_id"]),
            provider_instance_id=str(row["provider_instance_id"]),
            instance_type=str(row["instance_type"]),
            region=str(row["region"]),
            zone=row.get("zone"),
            capacity_type=CapacityType(row["capacity_type"]),
            state=InstanceState(row["state"]),
            launched_at=_parse_optional_time(row.get("launched_at")),
            state_reason=row.get("state_reason"),
            price_per_hour=None if price is None else Decimal(price),
            public_ip=row.get("public_ip"),
        ),
        gpus=int(row["gpus"]),
        launched_at=_parse_time(row["sim_launched_at"]),
        reservation_id=row.get("reservation_id"),
        notice_at=_parse_optional_time(row.get("notice_at")),
        ended_at=_parse_optional_time(row.get("ended_at")),
    )


def _changes(
    before: Mapping[str, _SimInstance], after: Mapping[str, _SimInstance], notice_seconds: int
) -> list[SimEvent]:
    """The events another process's changes amount to: notices and preemptions in ``after`` that
    ``before`` did not have (an instance id launched again is a new instance)."""
    events: list[SimEvent] = []
    for instance_id, record in after.items():
        old = before.get(instance_id)
        if old is not None and old.instance.provider_instance_id != record.instance.provider_instance_id:
            old = None
        if record.notice_at is not None and (old is None or old.notice_at is None):
            # As it was at the notice: still running, with the notice as its reason.
            noticed = replace(record.instance, state=InstanceState.RUNNING, state_reason=PREEMPTION_NOTICE)
            events.append(SimEvent(PREEMPTION_NOTICE, noticed, record.notice_at))
        if record.instance.state is InstanceState.PREEMPTED and (
            old is None or old.instance.state is not InstanceState.PREEMPTED
        ):
            noticed_at = record.notice_at or record.launched_at
            at = record.ended_at or noticed_at + timedelta(seconds=notice_seconds)
            events.append(SimEvent(PREEMPTED, record.instance, at))
    return events


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
    GPUBROKER_SIM_SEED (0), GPUBROKER_SIM_FAULTS (e.g. ``error_rate=0.1,latency=0.2,outage=1``),
    GPUBROKER_SIM_STATE (a JSON file the cloud lives in, so its instances outlive this process and
    are shared with every process that names the same file; unset: in memory only). A damaged
    state file raises SimStateError naming it.
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
        state_path=Path(env["GPUBROKER_SIM_STATE"]) if env.get("GPUBROKER_SIM_STATE") else None,
    )
