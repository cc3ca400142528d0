"""Price snapshots in PostgreSQL: versioned, NUMERIC-exact, current per cloud by observed_at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.core.types import CapacityType, Offer
from broker.db.models import OfferPrice
from broker.db.prices import add_snapshot, current_offers, list_snapshots
from broker.services.catalog import load_bundled_snapshot

T0 = datetime(2027, 1, 1, tzinfo=UTC)


def offer(
    price: str, cloud: str = "testcloud", instance_type: str = "gpu-8x", observed: datetime = T0
) -> Offer:
    return Offer(
        cloud=cloud,
        region="r1",
        zone="r1-a",
        instance_type=instance_type,
        accelerator="H100",
        accelerator_count=8,
        vcpus=Decimal("96"),
        memory_gib=Decimal("1152.5"),
        capacity_type=CapacityType.SPOT,
        price_per_hour=Decimal(price),
        currency="USD",
        source="test",
        observed_at=observed,
    )


def store(session: Session, offers: list[Offer], sha: str, observed: datetime, clouds: set[str]) -> int:
    return add_snapshot(
        session,
        offers,
        source="test",
        source_name="t",
        content_sha256=sha,
        observed_at=observed,
        clouds=clouds,
    ).id


def test_money_round_trips_exactly_as_numeric(session: Session) -> None:
    store(session, [offer("12.3456789012345678")], "a" * 64, T0, {"testcloud"})
    got = current_offers(session, accelerator="h100")
    mine = [o for o in got if o.cloud == "testcloud"]
    assert [o.price_per_hour for o in mine] == [Decimal("12.3456789012345678")]
    column_type = session.execute(
        text(
            "SELECT data_type FROM information_schema.columns WHERE table_name='offer_price' "
            "AND column_name='price_per_hour'"
        )
    ).scalar_one()
    assert column_type == "numeric"


def test_newer_snapshot_replaces_a_clouds_prices_and_keeps_history(session: Session) -> None:
    store(session, [offer("10"), offer("11", instance_type="gone-later")], "b" * 64, T0, {"testcloud"})
    store(
        session,
        [offer("9", observed=T0 + timedelta(days=1))],
        "c" * 64,
        T0 + timedelta(days=1),
        {"testcloud"},
    )
    mine = [o for o in current_offers(session) if o.cloud == "testcloud"]
    assert [(o.instance_type, o.price_per_hour) for o in mine] == [("gpu-8x", Decimal("9"))]
    history = session.scalars(
        select(OfferPrice.price_per_hour)
        .where(OfferPrice.cloud == "testcloud")
        .order_by(OfferPrice.observed_at, OfferPrice.id)
    ).all()
    assert history == [Decimal("10"), Decimal("11"), Decimal("9")]


def test_an_older_snapshot_loaded_later_does_not_hide_fresher_prices(session: Session) -> None:
    store(
        session,
        [offer("9", observed=T0 + timedelta(days=1))],
        "d" * 64,
        T0 + timedelta(days=1),
        {"testcloud"},
    )
    store(session, [offer("10")], "e" * 64, T0, {"testcloud"})
    assert [o.price_per_hour for o in current_offers(session) if o.cloud == "testcloud"] == [Decimal("9")]


def test_snapshot_for_one_cloud_leaves_other_clouds_current(session: Session) -> None:
    before = {o.cloud for o in current_offers(session)}
    store(session, [offer("1")], "f" * 64, T0, {"testcloud"})
    assert {o.cloud for o in current_offers(session)} == before | {"testcloud"}


def test_same_content_is_stored_once(session: Session) -> None:
    first = load_bundled_snapshot(session)
    again = load_bundled_snapshot(session)
    assert again.id == first.id and again.created is False
    assert [s.id for s in list_snapshots(session)].count(first.id) == 1


def test_offers_outside_the_covered_clouds_are_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="does not cover"):
        store(session, [offer("1", cloud="other")], "g" * 64, T0, {"testcloud"})


def test_database_refuses_negative_price_even_if_code_did_not(session: Session) -> None:
    snapshot_id = store(session, [], "h" * 64, T0, {"testcloud"})
    with pytest.raises(IntegrityError):
        session.execute(
            text(
                "INSERT INTO offer_price (snapshot_id, cloud, region, zone, instance_type, accelerator, "
                "accelerator_count, capacity_type, price_per_hour, currency, source, observed_at) VALUES "
                "(:s, 'x', 'r', '', 'i', 'H100', 1, 'spot', -1, 'USD', 't', now())"
            ),
            {"s": snapshot_id},
        )
        session.flush()
