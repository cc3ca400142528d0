"""The HTTP API on a real database: health, readiness, /v1/offers, problem+json errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from broker.core.types import CapacityType, Offer
from broker.db.engine import Database
from broker.db.prices import add_snapshot
from broker.db.schema import head_revision
from tests.api.conftest import make_tenant

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def client(database: Database) -> Iterator[TestClient]:
    app = create_app(database, clock=lambda: NOW)
    with TestClient(app, headers=make_tenant(database, "acme").viewer) as c:
        yield c


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "database": None, "schema_revision": None}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok" and ready.json()["schema_revision"] == head_revision()


def test_readyz_is_503_when_schema_is_behind(client: TestClient, database: Database) -> None:
    with database.engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "gpubroker db upgrade" in response.json()["detail"]


def test_h100_offers_are_real_cheapest_first_and_money_is_a_string(client: TestClient) -> None:
    response = client.get("/v1/offers", params={"gpu": "H100", "limit": 1000})
    assert response.status_code == 200
    body = response.json()
    offers = body["offers"]
    assert body["count"] == len(offers) > 100
    assert {"aws", "gcp", "lambda", "runpod", "nebius", "azure"} <= {o["cloud"] for o in offers}
    per_gpu = [Decimal(o["price_per_gpu_hour"]) for o in offers]
    assert per_gpu == sorted(per_gpu)
    first = offers[0]
    assert set(first) == {
        "cloud",
        "region",
        "zone",
        "instance_type",
        "accelerator",
        "accelerator_count",
        "vcpus",
        "memory_gib",
        "capacity_type",
        "price_per_hour",
        "price_per_gpu_hour",
        "currency",
        "source",
        "observed_at",
        "price_age_seconds",
        "stale",
        "availability",
    }
    assert isinstance(first["price_per_hour"], str)
    assert Decimal(first["price_per_hour"]) / first["accelerator_count"] == Decimal(
        first["price_per_gpu_hour"]
    )
    # The bundled snapshot was observed 2026-11-23T00:00Z; NOW is 36 hours later.
    assert first["price_age_seconds"] == 36 * 3600
    assert first["stale"] is True  # older than the default hour: shown as the last known price
    assert first["availability"] == "unknown"  # a catalog price says nothing about capacity
    assert first["source"].startswith("bundled:skypilot-catalog")


def test_filters(client: TestClient) -> None:
    params = {
        "gpu": "h100",
        "count": 8,
        "cloud": ["aws,gcp"],
        "capacity": "spot",
        "max_price": "4",
        "limit": 500,
    }
    offers = client.get("/v1/offers", params=params).json()["offers"]
    assert offers
    assert all(o["cloud"] in {"aws", "gcp"} for o in offers)
    assert all(o["accelerator_count"] == 8 and o["capacity_type"] == "spot" for o in offers)
    assert all(Decimal(o["price_per_gpu_hour"]) <= 4 for o in offers)
    regional = client.get("/v1/offers", params={"gpu": "H100", "region": "us-central1"}).json()["offers"]
    assert regional and {o["region"] for o in regional} == {"us-central1"}
    assert len(client.get("/v1/offers", params={"gpu": "H100", "limit": 3}).json()["offers"]) == 3


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"count": 0}, "count"),
        ({"count": 10000}, "count"),
        ({"max_price": "-1"}, "max_price"),
        ({"max_price": "cheap"}, "max_price"),
        ({"capacity": "preemptible"}, "capacity"),
        ({"limit": 0}, "limit"),
    ],
)
def test_bad_query_is_422_problem_naming_the_field(
    client: TestClient, params: dict[str, object], field: str
) -> None:
    response = client.get("/v1/offers", params=params)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/validation-error")
    assert [e["field"] for e in problem["errors"]] == [field]


def test_unknown_path_is_problem_json(client: TestClient) -> None:
    response = client.get("/v1/nope")
    assert response.status_code == 404
    assert response.json()["type"].endswith("/not-found")


def test_openapi_documents_offers(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/offers" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_openapi_still_documents_the_offer_list_shape(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ok = spec["paths"]["/v1/offers"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/OfferList"}


def test_a_price_refresh_is_in_the_very_next_answer(client: TestClient, database: Database) -> None:
    """The app caches decoded offers; a snapshot committed by anyone (another replica's refresh)
    must show in the next response, not after some expiry."""
    before = client.get("/v1/offers", params={"gpu": "H100", "limit": 1}).json()["offers"][0]
    assert before["cloud"] != "testcloud"
    cheapest = Offer(
        cloud="testcloud",
        region="r1",
        zone=None,
        instance_type="gpu-8x",
        accelerator="H100",
        accelerator_count=8,
        vcpus=None,
        memory_gib=None,
        capacity_type=CapacityType.SPOT,
        price_per_hour=Decimal("0.08"),
        currency="USD",
        source="test",
        observed_at=NOW,
    )
    with database.sessions.begin() as session:
        add_snapshot(
            session,
            [cheapest],
            source="test",
            source_name="refresh",
            content_sha256="f" * 64,
            observed_at=NOW,
            clouds={"testcloud"},
        )
    after = client.get("/v1/offers", params={"gpu": "H100", "limit": 1})
    assert after.headers["content-type"] == "application/json"
    first = after.json()["offers"][0]
    assert (first["cloud"], first["price_per_gpu_hour"], first["price_age_seconds"]) == (
        "testcloud",
        "0.01",
        0,
    )
