"""GET /v1/offers/history on a real database: every stored snapshot's price of one offer, oldest first."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from broker.core.types import Availability, CapacityType, Offer
from broker.db.engine import Database
from broker.db.models import OfferPrice
from broker.db.prices import add_snapshot, current_offers
from tests.api.conftest import NOW, Tenant


def offer(price: str, observed: datetime, **changes: Any) -> Offer:
    base = Offer(
        cloud="testcloud",
        region="r1",
        zone="r1-a",
        instance_type="gpu-8x",
        accelerator="H100",
        accelerator_count=8,
        vcpus=Decimal("96"),
        memory_gib=Decimal("1152"),
        capacity_type=CapacityType.SPOT,
        price_per_hour=Decimal(price),
        currency="USD",
        source="test",
        observed_at=observed,
        availability=Availability.LIMITED,
    )
    return replace(base, **changes)


def store(database: Database, offers: list[Offer], tag: str, observed: datetime) -> int:
    with database.sessions.begin() as s:
        return add_snapshot(
            s,
            offers,
            source="test",
            source_name=tag,
            content_sha256=tag * 64,
            observed_at=observed,
            clouds={o.cloud for o in offers},
        ).id


def history(client: TestClient, tenant: Tenant, **params: Any) -> Any:
    query = {"cloud": "testcloud", "instance_type": "gpu-8x", "capacity": "spot", **params}
    response = client.get("/v1/offers/history", params=query, headers=tenant.viewer)
    assert response.status_code == 200, response.text
    return response.json()


def test_history_has_every_snapshots_price_oldest_first(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    t1, t2, t3 = NOW - timedelta(days=3), NOW - timedelta(days=2), NOW - timedelta(days=1)
    first = store(database, [offer("10", t1), offer("30", t1, capacity_type=CapacityType.ON_DEMAND)], "a", t1)
    # The newer snapshot holds the offer in two zones and another instance type: only the key's rows.
    second = store(
        database,
        [offer("9", t2), offer("9.5", t2, zone="r1-b"), offer("50", t2, instance_type="gpu-1x")],
        "b",
        t2,
    )
    third = store(database, [offer("8.8", t3, region="r2", zone="r2-a")], "c", t3)
    body = history(client, tenant)
    assert body["count"] == len(body["points"]) == 4
    assert [
        (p["observed_at"], p["region"], p["zone"], p["price_per_hour"], p["snapshot_id"])
        for p in body["points"]
    ] == [
        ("2026-11-21T12:00:00Z", "r1", "r1-a", "10", first),
        ("2026-11-22T12:00:00Z", "r1", "r1-a", "9", second),
        ("2026-11-22T12:00:00Z", "r1", "r1-b", "9.5", second),
        ("2026-11-23T12:00:00Z", "r2", "r2-a", "8.8", third),
    ]
    assert body["points"][0] == {
        "observed_at": "2026-11-21T12:00:00Z",
        "region": "r1",
        "zone": "r1-a",
        "price_per_hour": "10",
        "price_per_gpu_hour": "1.25",
        "currency": "USD",
        "source": "test",
        "snapshot_id": first,
        "availability": "limited",
    }
    one_zone = history(client, tenant, region="r1", zone="r1-a")
    assert [(p["price_per_hour"], p["price_per_gpu_hour"]) for p in one_zone["points"]] == [
        ("10", "1.25"),
        ("9", "1.125"),
    ]
    assert (one_zone["region"], one_zone["zone"]) == ("r1", "r1-a")
    on_demand = history(client, tenant, capacity="on-demand")
    assert [p["price_per_hour"] for p in on_demand["points"]] == ["30"]
    assert [p["price_per_hour"] for p in history(client, tenant, limit=2)["points"]] == ["10", "9"]
    window = history(client, tenant, start=t2.isoformat(), end=t3.isoformat())
    assert [p["price_per_hour"] for p in window["points"]] == ["9", "9.5"]  # end is exclusive
    assert (window["start"], window["end"]) == ("2026-11-22T12:00:00Z", "2026-11-23T12:00:00Z")


def test_the_default_window_is_the_last_30_days(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    old = NOW - timedelta(days=31)
    store(database, [offer("12", old)], "a", old)
    store(database, [offer("11", NOW - timedelta(days=29))], "b", NOW - timedelta(days=29))
    body = history(client, tenant)
    assert (body["start"], body["end"]) == ("2026-10-25T12:00:00Z", "2026-11-24T12:00:00Z")
    assert [p["price_per_hour"] for p in body["points"]] == ["11"]
    since = history(client, tenant, start=(old - timedelta(seconds=1)).isoformat())
    assert [p["price_per_hour"] for p in since["points"]] == ["12", "11"]


def test_a_bundled_offer_gains_a_point_when_a_second_snapshot_is_imported(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    with database.sessions() as s:
        bundled = next(o for o in current_offers(s, accelerator="H100") if o.cloud == "aws")
        same_offer = (
            OfferPrice.cloud == "aws",
            OfferPrice.instance_type == bundled.instance_type,
            OfferPrice.region == bundled.region,
            OfferPrice.zone == (bundled.zone or ""),
            OfferPrice.capacity_type == bundled.capacity_type.value,
        )
        stored_ids = s.scalars(select(OfferPrice.snapshot_id).where(*same_offer)).all()
    assert len(stored_ids) == 1
    later = max(bundled.observed_at, NOW - timedelta(days=1)) + timedelta(hours=1)
    new_price = bundled.price_per_hour + Decimal("1.5")
    fresh = store(database, [replace(bundled, price_per_hour=new_price, observed_at=later)], "f", later)
    params = {
        "cloud": "aws",
        "instance_type": bundled.instance_type,
        "capacity": bundled.capacity_type.value,
        "region": bundled.region,
        "start": bundled.observed_at.isoformat(),
        "end": (later + timedelta(seconds=1)).isoformat(),
    }
    if bundled.zone:
        params["zone"] = bundled.zone
    response = client.get("/v1/offers/history", params=params, headers=tenant.viewer)
    assert response.status_code == 200, response.text
    points = response.json()["points"]
    assert len(points) > 1
    assert [Decimal(p["price_per_hour"]) for p in points] == [bundled.price_per_hour, new_price]
    assert [p["snapshot_id"] for p in points] == [stored_ids[0], fresh]
    assert Decimal(points[-1]["price_per_gpu_hour"]) == new_price / bundled.accelerator_count
    with database.sessions() as s:  # the first price was kept, not overwritten
        kept = s.scalar(
            select(OfferPrice.price_per_hour).where(*same_offer, OfferPrice.snapshot_id == stored_ids[0])
        )
    assert kept == bundled.price_per_hour


def test_bad_requests(client: TestClient, tenant: Tenant) -> None:
    ok = {"cloud": "testcloud", "instance_type": "gpu-8x", "capacity": "spot"}
    for params in (
        {"cloud": "testcloud", "instance_type": "gpu-8x"},  # capacity is required
        {**ok, "capacity": "cheap"},
        {**ok, "limit": 0},
        {**ok, "limit": 5001},
        {**ok, "start": "2026-11-20T00:00:00Z", "end": "2026-11-19T00:00:00Z"},
        {**ok, "start": "2026-11-20T00:00:00"},  # no time zone
    ):
        assert client.get("/v1/offers/history", params=params, headers=tenant.viewer).status_code == 422, (
            params
        )
    assert client.get("/v1/offers/history", params=ok).status_code == 401
    assert history(client, tenant, instance_type="nothing-like-it")["points"] == []
