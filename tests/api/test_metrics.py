"""GET /metrics: HTTP counters by route template, fleet figures from the database, provider breakers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import make_url
from sqlalchemy.orm import sessionmaker

from api.app import create_app
from api.middleware import install
from broker.core.errors import Transient
from broker.db.engine import Database, make_engine
from broker.db.fleet import InstanceRow, WorkloadEvent, WorkloadRow
from broker.services.tenancy import find_project
from broker.settings import Settings
from providers.registry import ProviderEntry, discover
from providers.resilience import ResiliencePolicy
from tests.api.conftest import NOW, Tenant


class Monotonic:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def metrics_app(
    database: Database, clock: Monotonic, entries: list[ProviderEntry] | None = None, *, burst: int = 1000
) -> FastAPI:
    app = create_app(database, clock=lambda: NOW, provider_entries=entries or [])

    @app.get("/test/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    install(app, Settings(rate_limit_per_second=1.0, rate_limit_burst=burst), monotonic=clock)
    return app


@pytest.fixture
def clock() -> Monotonic:
    return Monotonic()


@pytest.fixture
def client(database: Database, clock: Monotonic) -> Iterator[TestClient]:
    with TestClient(metrics_app(database, clock)) as c:
        yield c


def test_requests_are_counted_by_route_template_never_by_raw_path(client: TestClient) -> None:
    for thing in ("th_aaa111", "th_bbb222"):
        assert client.get(f"/test/things/{thing}").status_code == 200
    assert client.get("/no/such/page/th_ccc333").status_code == 404
    assert client.get("/openapi.json").status_code == 200  # a plain Starlette route, not FastAPI's
    response = client.get("/metrics")
    assert "th_aaa111" not in response.text and "th_ccc333" not in response.text
    samples = scrape(client)
    route = "/test/things/{thing_id}"
    assert value(samples, "gpubroker_http_requests_total", method="GET", route=route, status="200") == 2
    assert value(samples, "gpubroker_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert (
        value(samples, "gpubroker_http_requests_total", method="GET", route="/openapi.json", status="200")
        == 1
    )
    assert value(samples, "gpubroker_http_request_duration_seconds_count", method="GET", route=route) == 2
    # The first scrape was answered before the second one counted it.
    assert value(samples, "gpubroker_http_requests_total", method="GET", route="/metrics", status="200") == 1


def test_odd_methods_and_refusals_keep_labels_bounded(database: Database, clock: Monotonic) -> None:
    with TestClient(metrics_app(database, clock, burst=1)) as client:
        client.get("/test/things/th_1")
        client.get("/test/things/th_2")  # over the burst: refused before routing, still labelled
        clock.now += 10
        client.request("BREW", "/test/things/th_3")
        samples = scrape(client)
    route = "/test/things/{thing_id}"
    assert value(samples, "gpubroker_http_requests_total", method="GET", route=route, status="429") == 1
    assert value(samples, "gpubroker_http_requests_total", method="other", route=route, status="405") == 1


def test_routes_of_included_routers_are_labelled_with_their_full_template(
    database: Database, clock: Monotonic
) -> None:
    app = create_app(database, clock=lambda: NOW)
    inner = APIRouter(prefix="/inner")

    @inner.get("/things/{thing_id}")
    def thing(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app.include_router(inner, prefix="/v9")  # a prefix the route itself does not know
    install(app, Settings(rate_limit_per_second=1.0, rate_limit_burst=2), monotonic=clock)
    with TestClient(app) as client:
        assert client.get("/v9/inner/things/th_1").status_code == 200
        assert client.get("/v1/projects/default").status_code == 401  # an app route, without a key
        assert client.get("/v1/projects/default").status_code == 429  # refused before routing
        samples = scrape(client)
    total = "gpubroker_http_requests_total"
    assert value(samples, total, method="GET", route="/v9/inner/things/{thing_id}", status="200") == 1
    assert value(samples, total, method="GET", route="/v1/projects/{project}", status="401") == 1
    assert value(samples, total, method="GET", route="/v1/projects/{project}", status="429") == 1


def _seed(database: Database, tenant: Tenant) -> None:
    """Four workloads, three instances (two running), and events of each counted kind."""
    with database.sessions.begin() as session:
        project = find_project(session, tenant.org_id, "default")
        assert project is not None
        for n, state in enumerate(("PENDING", "PENDING", "RUNNING", "FAILED")):
            session.add(
                WorkloadRow(
                    id=f"wl_{n}",
                    org_id=tenant.org_id,
                    project_id=project.id,
                    state=state,
                    spec={},
                    gpus_per_node=8,
                    nodes=1,
                    created_at=NOW,
                    updated_at=NOW,
                    state_changed_at=NOW,
                )
            )
        session.flush()
        for n, (state, price) in enumerate((("running", "98.32"), ("running", "2.49"), ("terminated", "50"))):
            session.add(
                InstanceRow(
                    id=f"in_{n}",
                    org_id=tenant.org_id,
                    project_id=project.id,
                    workload_id="wl_2",
                    provider="sim",
                    region="sim-east-1",
                    instance_type="p5.48xlarge",
                    accelerator="H100",
                    gpus=8,
                    capacity_type="on-demand",
                    price_per_hour=Decimal(price),
                    state=state,
                    created_at=NOW,
                    updated_at=NOW,
                )
            )
        kinds = ["placed"] * 3 + ["launched"] * 2 + ["preempted", "migration-planned", "state-changed"]
        for n, kind in enumerate(kinds):
            session.add(
                WorkloadEvent(
                    workload_id="wl_2", org_id=tenant.org_id, at=NOW + timedelta(seconds=n), kind=kind
                )
            )


def test_fleet_figures_come_from_the_database(client: TestClient, database: Database, tenant: Tenant) -> None:
    _seed(database, tenant)
    samples = scrape(client)
    assert value(samples, "gpubroker_database_up") == 1
    assert value(samples, "gpubroker_placements_total") == 3
    assert value(samples, "gpubroker_launches_total") == 2
    assert value(samples, "gpubroker_preemptions_total") == 1
    assert value(samples, "gpubroker_migrations_total") == 1
    assert value(samples, "gpubroker_workloads", state="PENDING") == 2
    assert value(samples, "gpubroker_workloads", state="RUNNING") == 1
    assert value(samples, "gpubroker_workloads", state="FAILED") == 1
    assert value(samples, "gpubroker_workloads", state="CANCELLED") == 0  # every state, always
    assert value(samples, "gpubroker_instances", state="running") == 2
    assert value(samples, "gpubroker_instances", state="terminated") == 1
    assert value(samples, "gpubroker_instances", state="lost") == 0
    assert value(samples, "gpubroker_spend_usd_per_hour") == pytest.approx(100.81)  # running only


def test_fleet_figures_are_cached_for_five_seconds(
    client: TestClient, database: Database, tenant: Tenant, clock: Monotonic
) -> None:
    _seed(database, tenant)
    assert value(scrape(client), "gpubroker_placements_total") == 3
    with database.sessions.begin() as session:
        session.add(WorkloadEvent(workload_id="wl_1", org_id=tenant.org_id, at=NOW, kind="placed"))
    clock.now += 4.9
    assert value(scrape(client), "gpubroker_placements_total") == 3  # cached
    clock.now += 0.1
    assert value(scrape(client), "gpubroker_placements_total") == 4


def test_a_scrape_answers_when_the_database_does_not(database_url: str, clock: Monotonic) -> None:
    gone = make_url(database_url).set(database="gpubroker_no_such_database")
    engine = make_engine(gone.render_as_string(hide_password=False))
    down = Database(engine=engine, sessions=sessionmaker(engine), embedded=None)
    try:
        with TestClient(metrics_app(down, clock)) as client:
            assert client.get("/test/things/th_1").status_code == 200
            samples = scrape(client)
    finally:
        engine.dispose()
    assert value(samples, "gpubroker_database_up") == 0
    route = "/test/things/{thing_id}"
    assert value(samples, "gpubroker_http_requests_total", method="GET", route=route, status="200") == 1
    assert not any(name.startswith(("gpubroker_workloads", "gpubroker_placements")) for name, _ in samples)


def test_provider_breakers_are_exposed_per_provider(
    database: Database, clock: Monotonic, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GPUBROKER_PROVIDERS", "sim")
    monkeypatch.setenv("GPUBROKER_SIM_FAULTS", "outage=1")
    entries = discover(ResiliencePolicy(backoff_initial=0.001, backoff_max=0.002))  # no real waiting
    sim = next(e.provider for e in entries if e.provider is not None)
    try:
        with TestClient(metrics_app(database, clock, entries)) as client:
            assert value(scrape(client), "gpubroker_provider_breaker_open", provider="sim") == 0
            for _ in range(2):  # 2 calls x 4 attempts: past the 5-failure threshold
                with pytest.raises(Transient):
                    sim.list_offers()
            samples = scrape(client)  # not cached: breakers are read from memory on every scrape
    finally:
        sim.close()
    assert value(samples, "gpubroker_provider_breaker_open", provider="sim") == 1
    assert value(samples, "gpubroker_provider_breaker_open", provider="aws") is None  # not configured


def test_metrics_work_on_an_app_without_the_middleware(database: Database) -> None:
    with TestClient(create_app(database, clock=lambda: NOW)) as client:
        samples = scrape(client)
    assert value(samples, "gpubroker_database_up") == 1
    assert value(samples, "gpubroker_workloads", state="PENDING") == 0
