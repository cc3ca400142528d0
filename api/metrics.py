"""Prometheus metrics of one API app: HTTP counters and latencies, and fleet figures read at scrape
time (does I/O: a few counting queries, at most once per ``DB_CACHE_SECONDS``).

Each app has its own ``CollectorRegistry`` (``app.state.metrics``), so apps in one process (tests)
never share series. Route labels are path templates (``/v1/workloads/{workload_id}``), never raw
paths, and methods outside the HTTP verbs we serve are ``other``: the number of series is bounded
whatever clients send.

The fleet figures (placements, workloads by state, spend rate...) come from the database and are
the same on every replica: aggregate them with ``max``, not ``sum``. If the database does not
answer, a scrape still succeeds, with ``gpubroker_database_up 0`` and without the fleet figures.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import Connection, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from broker.db.fleet import INSTANCE_STATES, WORKLOAD_STATES, InstanceRow, WorkloadEvent, WorkloadRow
from broker.services.providers import describe
from providers.registry import ProviderEntry

_log = logging.getLogger(__name__)

DB_CACHE_SECONDS = 5.0
ROUTE_UNMATCHED = "unmatched"  # the route label of a request no route matched (404)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# workload_event kinds counted as fleet counters: (kind, metric name, help).
EVENT_COUNTERS = (
    ("placed", "gpubroker_placements", "Placements decided (workload events of kind placed)."),
    ("launched", "gpubroker_launches", "Instances launched (workload events of kind launched)."),
    ("preempted", "gpubroker_preemptions", "Preemptions seen (workload events of kind preempted)."),
    (
        "migration-planned",
        "gpubroker_migrations",
        "Workload migrations planned (workload events of kind migration-planned).",
    ),
)


class HttpMetrics:
    """Request counts by method, route and status; latency by method and route."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "gpubroker_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "gpubroker_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # labels() takes a lock and builds a key on every call: keep the children we have used.
        self._counts: dict[tuple[str, str, int], Any] = {}
        self._latencies: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in METHODS:
            method = "other"
        count = self._counts.get((method, route, status))
        if count is None:
            count = self._counts[(method, route, status)] = self.requests.labels(method, route, str(status))
        count.inc()
        latency = self._latencies.get((method, route))
        if latency is None:
            latency = self._latencies[(method, route)] = self.duration.labels(method, route)
        latency.observe(seconds)


@dataclass(frozen=True, slots=True)
class FleetCounts:
    """What the fleet gauges show, as read from the database in one go."""

    events: Mapping[str, int]
    workloads: Mapping[str, int]
    instances: Mapping[str, int]
    spend_usd_per_hour: Decimal


def read_fleet_counts(connection: Connection) -> FleetCounts:
    """Count events by kind, workloads and instances by state, and sum the running instances' prices."""
    connection.execute(text("SET LOCAL statement_timeout = 2000"))  # a slow scrape must not pile up
    kinds = [kind for kind, _, _ in EVENT_COUNTERS]
    events = connection.execute(
        select(WorkloadEvent.kind, func.count())
        .where(WorkloadEvent.kind.in_(kinds))
        .group_by(WorkloadEvent.kind)
    ).all()
    workloads = connection.execute(select(WorkloadRow.state, func.count()).group_by(WorkloadRow.state)).all()
    instances = connection.execute(select(InstanceRow.state, func.count()).group_by(InstanceRow.state)).all()
    spend = connection.execute(
        select(func.coalesce(func.sum(InstanceRow.price_per_hour), 0)).where(InstanceRow.state == "running")
    ).scalar_one()
    return FleetCounts(
        events={kind: n for kind, n in events},
        workloads={state: n for state, n in workloads},
        instances={state: n for state, n in instances},
        spend_usd_per_hour=Decimal(spend),
    )


def _breaker_open(entry: ProviderEntry) -> bool:
    """Open or half-open: the breaker tripped and no call has succeeded since."""
    return describe(entry).breaker_state in ("open", "half-open")


class FleetCollector:
    """Scrape-time figures: the database's fleet counts (cached) and the providers' breakers."""

    def __init__(
        self,
        app: FastAPI,
        monotonic: Callable[[], float] = time.monotonic,
        cache_seconds: float = DB_CACHE_SECONDS,
    ) -> None:
        self._app = app
        self.monotonic = monotonic
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._expires = float("-inf")
        self._counts: FleetCounts | None = None
        self._up = True

    def _fleet_counts(self) -> FleetCounts | None:
        """The cached counts, refreshed when older than the cache period; None if the database is down."""
        with self._lock:  # concurrent scrapes wait for one query instead of each running it
            now = self.monotonic()
            if now < self._expires:
                return self._counts
            try:
                with self._app.state.database.engine.connect() as connection:
                    self._counts = read_fleet_counts(connection)
                if not self._up:
                    _log.info("metrics: the database answers again")
                self._up = True
            except SQLAlchemyError as exc:
                if self._up:  # once per outage, not once per scrape
                    _log.warning("metrics: the database does not answer: %s", str(exc).splitlines()[0])
                self._counts, self._up = None, False
            self._expires = now + self._cache_seconds
            return self._counts

    def describe(self) -> Iterable[Metric]:
        """The families this collector yields (without querying anything)."""
        return list(self._families(FleetCounts({}, {}, {}, Decimal(0)), []))

    def collect(self) -> Iterable[Metric]:
        entries: list[ProviderEntry] = list(getattr(self._app.state, "providers", []))
        return list(self._families(self._fleet_counts(), entries))

    def _families(self, counts: FleetCounts | None, entries: list[ProviderEntry]) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "gpubroker_database_up",
            "1 when the last read of the fleet figures from the database succeeded.",
            value=0 if counts is None else 1,
        )
        breakers = GaugeMetricFamily(
            "gpubroker_provider_breaker_open",
            "1 while a provider's circuit breaker (any region) is open or half-open.",
            labels=["provider"],
        )
        for entry in entries:
            if entry.provider is not None:
                breakers.add_metric([entry.info.name], 1 if _breaker_open(entry) else 0)
        yield breakers
        if counts is None:
            return
        for kind, name, doc in EVENT_COUNTERS:
            yield CounterMetricFamily(name, doc, value=counts.events.get(kind, 0))
        workloads = GaugeMetricFamily("gpubroker_workloads", "Workloads by state.", labels=["state"])
        for state in WORKLOAD_STATES:
            workloads.add_metric([state], counts.workloads.get(state, 0))
        yield workloads
        instances = GaugeMetricFamily("gpubroker_instances", "Instances by state.", labels=["state"])
        for state in INSTANCE_STATES:
            instances.add_metric([state], counts.instances.get(state, 0))
        yield instances
        yield GaugeMetricFamily(
            "gpubroker_spend_usd_per_hour",
            "What the running instances cost per hour, in US dollars.",
            value=float(counts.spend_usd_per_hour),  # Decimal to float only here, at the exposition edge
        )


@dataclass(frozen=True, slots=True)
class ApiMetrics:
    """One app's registry and its HTTP metrics."""

    registry: CollectorRegistry
    http: HttpMetrics
    fleet: FleetCollector


_install_lock = threading.Lock()


def metrics_of(app: FastAPI) -> ApiMetrics:
    """``app``'s metrics (``app.state.metrics``), made on first use."""
    with _install_lock:
        existing: ApiMetrics | None = getattr(app.state, "metrics", None)
        if existing is not None:
            return existing
        registry = CollectorRegistry()
        fleet = FleetCollector(app)
        registry.register(fleet)
        metrics = ApiMetrics(registry, HttpMetrics(registry), fleet)
        app.state.metrics = metrics
        return metrics


def install(app: FastAPI, monotonic: Callable[[], float] = time.monotonic) -> ApiMetrics:
    """Give ``app`` its metrics, the fleet cache timed by ``monotonic`` (again: keeps the counters)."""
    metrics = metrics_of(app)
    metrics.fleet.monotonic = monotonic
    return metrics


__all__ = [
    "DB_CACHE_SECONDS",
    "ROUTE_UNMATCHED",
    "ApiMetrics",
    "FleetCollector",
    "FleetCounts",
    "HttpMetrics",
    "install",
    "metrics_of",
    "read_fleet_counts",
]
