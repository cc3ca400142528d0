"""Ranking once and filtering many times (the API's offer cache) answers exactly like ``cheapest``."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from broker.core.types import CapacityType, Offer
from pricing.core import OfferQuery, cheapest, cheapest_ranked, ranked
from tests.core.test_offer_query import offer

prices = st.decimals(min_value=Decimal("0"), max_value=Decimal("50"), places=2, allow_nan=False)
offers_strategy = st.lists(
    st.builds(
        lambda p, n, c, cap, gpu, region: offer(
            str(p), count=n, cloud=c, capacity=cap, gpu=gpu, region=region
        ),
        prices,
        st.sampled_from([1, 2, 8]),
        st.sampled_from(["aws", "gcp", "lambda"]),
        st.sampled_from(list(CapacityType)),
        st.sampled_from(["H100", "h100", "A100"]),
        st.sampled_from(["us-east-1", "eu-west-1"]),
    ),
    max_size=40,
)
queries = st.builds(
    OfferQuery,
    gpu=st.one_of(st.none(), st.sampled_from(["H100", "a100", "B200"])),
    count=st.one_of(st.none(), st.sampled_from([1, 8])),
    clouds=st.one_of(st.none(), st.sampled_from([frozenset({"aws"}), frozenset({"gcp", "lambda"})])),
    region=st.one_of(st.none(), st.just("US-EAST-1")),
    capacity=st.one_of(st.none(), st.sampled_from(list(CapacityType))),
    max_price_per_gpu_hour=st.one_of(st.none(), prices),
    limit=st.one_of(st.none(), st.integers(1, 10)),
)


@given(offers_strategy, queries)
def test_ranked_then_filtered_equals_cheapest(offers: list[Offer], query: OfferQuery) -> None:
    assert cheapest_ranked(ranked(offers), query) == cheapest(offers, query)


def test_walk_stops_at_the_first_offer_above_the_price_limit() -> None:
    cheap, dear = offer("1"), offer("5")
    order = ranked([dear, cheap])
    assert order == (cheap, dear)
    assert cheapest_ranked(order, OfferQuery(max_price_per_gpu_hour=Decimal("1"))) == [cheap]
    assert cheapest_ranked(order, OfferQuery(max_price_per_gpu_hour=Decimal("0.99"))) == []
    assert cheapest_ranked(order, OfferQuery(limit=1)) == [cheap]
