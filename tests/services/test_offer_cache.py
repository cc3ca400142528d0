"""The API's cache of current offers on a real database: same answers as reading the rows, and a
new snapshot is seen by the very next look-up (committed, uncommitted, rolled back, older)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session

from broker.core.types import CapacityType, Offer
from broker.db.engine import Database
from broker.db.prices import add_snapshot
from broker.services.offers import CurrentOfferCache, find_offers
from pricing.core import OfferQuery

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def priced(price: str, observed: datetime = NOW, gpu: str = "H100") -> Offer:
    return Offer(
        cloud="testcloud",
        region="r1",
        zone="r1-a",
        instance_type="gpu-8x",
        accelerator=gpu,
        accelerator_count=8,
        vcpus=Decimal("96"),
        memory_gib=Decimal("1152"),
        capacity_type=CapacityType.SPOT,
        price_per_hour=Decimal(price),
        currency="USD",
        source="test",
        observed_at=observed,
    )


def store(session: Session, offers: list[Offer], observed: datetime, tag: str) -> int:
    return add_snapshot(
        session,
        offers,
        source="test",
        source_name=tag,
        content_sha256=hashlib.sha256(tag.encode()).hexdigest(),
        observed_at=observed,
        clouds={"testcloud"},
    ).id


def prices_of_testcloud(session: Session, cache: CurrentOfferCache, query: OfferQuery) -> list[Decimal]:
    return [
        q.offer.price_per_hour
        for q in find_offers(session, query, NOW, cache=cache)
        if q.offer.cloud == "testcloud"
    ]


QUERIES = [
    OfferQuery(gpu="H100", limit=50),
    OfferQuery(gpu="h100", limit=1000),
    OfferQuery(gpu="H100", count=8, capacity=CapacityType.SPOT, max_price_per_gpu_hour=Decimal("3")),
    OfferQuery(gpu="A100", clouds=frozenset({"aws", "gcp"}), limit=20),
    OfferQuery(gpu="H100", region="US-EAST-1"),
    OfferQuery(max_price_per_gpu_hour=Decimal("0.5"), limit=1000),
    OfferQuery(limit=1000),
    OfferQuery(gpu="no-such-gpu"),
]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: repr(q)[:60])
def test_cached_answers_equal_reading_the_rows(session: Session, query: OfferQuery) -> None:
    cache = CurrentOfferCache()
    store(session, [priced("16"), priced("40", gpu="A100")], NOW, "equal")
    expected = find_offers(session, query, NOW + timedelta(hours=2))
    for _ in range(2):  # a miss, then a hit
        got = find_offers(session, query, NOW + timedelta(hours=2), cache=cache)
        assert [(q.offer.key, q.price_per_gpu_hour, q.price_age_seconds, q.stale) for q in got] == [
            (q.offer.key, q.price_per_gpu_hour, q.price_age_seconds, q.stale) for q in expected
        ]
    if query.gpu != "no-such-gpu":
        assert expected


def test_a_new_snapshot_is_seen_by_the_next_look_up_in_the_same_transaction(session: Session) -> None:
    cache = CurrentOfferCache()
    query = OfferQuery(gpu="H100", limit=1000)
    store(session, [priced("24")], NOW, "first")
    assert prices_of_testcloud(session, cache, query) == [Decimal("24")]
    store(session, [priced("8"), priced("32")], NOW + timedelta(minutes=1), "second")
    assert prices_of_testcloud(session, cache, query) == [Decimal("8"), Decimal("32")]
    first = find_offers(session, OfferQuery(gpu="H100", limit=1), NOW, cache=cache)[0]
    assert first.offer.cloud == "testcloud" and first.offer.price_per_hour == Decimal("8")


def test_an_older_snapshot_stored_later_does_not_replace_the_current_one(session: Session) -> None:
    cache = CurrentOfferCache()
    query = OfferQuery(gpu="H100", limit=1000)
    store(session, [priced("24")], NOW, "newer")
    assert prices_of_testcloud(session, cache, query) == [Decimal("24")]
    store(session, [priced("1", observed=NOW - timedelta(days=1))], NOW - timedelta(days=1), "older")
    assert prices_of_testcloud(session, cache, query) == [Decimal("24")]


def test_only_the_cloud_whose_snapshot_changed_is_decoded_again(session: Session) -> None:
    cache = CurrentOfferCache()
    query = OfferQuery(gpu="H100", limit=1000)
    store(session, [priced("24")], NOW, "one")
    before = {id(q.offer): q.offer for q in find_offers(session, query, NOW, cache=cache)}
    store(session, [priced("20")], NOW + timedelta(minutes=1), "two")
    after = find_offers(session, query, NOW, cache=cache)
    others = [q.offer for q in after if q.offer.cloud != "testcloud"]
    assert others and all(id(o) in before for o in others)  # the very objects decoded before
    assert [q.offer.price_per_hour for q in after if q.offer.cloud == "testcloud"] == [Decimal("20")]


def test_price_age_and_staleness_are_of_the_request_not_of_the_cache(session: Session) -> None:
    cache = CurrentOfferCache()
    store(session, [priced("24")], NOW, "age")
    query = OfferQuery(gpu="H100", clouds=frozenset({"testcloud"}))
    fresh = find_offers(session, query, NOW + timedelta(minutes=5), timedelta(hours=1), cache=cache)
    old = find_offers(session, query, NOW + timedelta(hours=3), timedelta(hours=1), cache=cache)
    assert [(q.price_age_seconds, q.stale) for q in fresh] == [(300, False)]
    assert [(q.price_age_seconds, q.stale) for q in old] == [(3 * 3600, True)]


def test_committed_elsewhere_is_seen_at_once_and_rolled_back_is_forgotten(database: Database) -> None:
    cache = CurrentOfferCache()
    query = OfferQuery(gpu="H100", clouds=frozenset({"testcloud"}))

    def prices() -> list[Decimal]:
        with database.sessions.begin() as s:
            return [q.offer.price_per_hour for q in find_offers(s, query, NOW, cache=cache)]

    assert prices() == []
    with database.sessions.begin() as s:
        store(s, [priced("24")], NOW, "committed")
    assert prices() == [Decimal("24")]
    with database.sessions() as s:  # a refresh that reads its own snapshot, then fails
        store(s, [priced("2")], NOW + timedelta(minutes=1), "rolled-back")
        assert [q.offer.price_per_hour for q in find_offers(s, query, NOW, cache=cache)] == [Decimal("2")]
        s.rollback()
    assert prices() == [Decimal("24")]
