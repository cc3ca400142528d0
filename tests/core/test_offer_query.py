"""Pure pricing core: filters say why, ranking is by $/GPU-hour, properties hold for any offers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.core.types import CapacityType, Offer
from pricing.core import OfferQuery, cheapest, format_age, price_age, rejection

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def offer(
    price: str = "10",
    count: int = 1,
    cloud: str = "aws",
    region: str = "us-east-1",
    capacity: CapacityType = CapacityType.ON_DEMAND,
    gpu: str = "H100",
    instance_type: str = "p5.4xlarge",
) -> Offer:
    return Offer(
        cloud=cloud,
        region=region,
        zone=None,
        instance_type=instance_type,
        accelerator=gpu,
        accelerator_count=count,
        vcpus=None,
        memory_gib=None,
        capacity_type=capacity,
        price_per_hour=Decimal(price),
        currency="USD",
        source="test",
        observed_at=T0,
    )


def test_cheapest_ranks_by_price_per_gpu_hour_not_per_instance() -> None:
    eight = offer("24", count=8, instance_type="p5.48xlarge")  # $3/GPU-h
    one = offer("4", count=1)  # $4/GPU-h
    assert cheapest([one, eight], OfferQuery()) == [eight, one]


def test_equal_price_prefers_on_demand_over_spot() -> None:
    spot = offer("2", capacity=CapacityType.SPOT)
    on_demand = offer("2", capacity=CapacityType.ON_DEMAND)
    assert cheapest([spot, on_demand], OfferQuery()) == [on_demand, spot]


@pytest.mark.parametrize(
    ("query", "candidate", "reason_part"),
    [
        (OfferQuery(gpu="h100"), offer(gpu="A100"), "accelerator A100 is not h100"),
        (OfferQuery(count=8), offer(count=1), "1 GPUs per instance, not 8"),
        (OfferQuery(clouds=frozenset({"gcp"})), offer(cloud="aws"), "cloud aws not among gcp"),
        (OfferQuery(region="us-west-2"), offer(region="us-east-1"), "region us-east-1 is not us-west-2"),
        (OfferQuery(capacity=CapacityType.SPOT), offer(), "capacity on-demand is not spot"),
        (OfferQuery(max_price_per_gpu_hour=Decimal("2.5")), offer("3"), "above the $2.5/GPU-h limit"),
    ],
)
def test_each_filter_names_its_reason(query: OfferQuery, candidate: Offer, reason_part: str) -> None:
    reason = rejection(candidate, query)
    assert reason is not None and reason_part in reason


def test_filters_are_case_insensitive_and_max_price_is_inclusive() -> None:
    o = offer("2.50", cloud="aws", region="us-east-1", gpu="H100")
    q = OfferQuery(
        gpu="h100", clouds=frozenset({"AWS"}), region="US-EAST-1", max_price_per_gpu_hour=Decimal("2.5")
    )
    assert rejection(o, q) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": 0},
        {"limit": 0},
        {"max_price_per_gpu_hour": Decimal("-1")},
        {"max_price_per_gpu_hour": Decimal("NaN")},
    ],
)
def test_query_rejects_absurd_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        OfferQuery(**kwargs)  # type: ignore[arg-type]


def test_offer_rejects_float_negative_price_and_naive_time() -> None:
    with pytest.raises(TypeError):
        offer_with(price_per_hour=1.5)
    with pytest.raises(ValueError):
        offer_with(price_per_hour=Decimal("-0.01"))
    with pytest.raises(ValueError):
        offer_with(observed_at=datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError):
        offer_with(accelerator_count=0)


def offer_with(**changes: object) -> Offer:
    base = offer()
    fields = {name: getattr(base, name) for name in Offer.__dataclass_fields__}
    fields.update(changes)
    return Offer(**fields)  # type: ignore[arg-type]


def test_price_age_and_format() -> None:
    assert price_age(T0, T0 + timedelta(hours=5)) == timedelta(hours=5)
    assert price_age(T0, T0 - timedelta(hours=1)) == timedelta(0)  # clock skew is not a future price
    assert [format_age(timedelta(seconds=s)) for s in (5, 600, 7200, 3 * 86400)] == ["5s", "10m", "2h", "3d"]


prices = st.decimals(min_value=Decimal("0"), max_value=Decimal("500"), places=5, allow_nan=False)
offers_strategy = st.lists(
    st.builds(
        lambda p, n, c, cap: offer(str(p), count=n, cloud=c, capacity=cap),
        prices,
        st.sampled_from([1, 2, 4, 8]),
        st.sampled_from(["aws", "gcp", "lambda", "runpod"]),
        st.sampled_from(list(CapacityType)),
    ),
    max_size=40,
)


@given(offers_strategy, st.one_of(st.none(), prices), st.one_of(st.none(), st.integers(1, 10)))
def test_cheapest_is_sorted_filtered_and_complete(
    offers: list[Offer], max_price: Decimal | None, limit: int | None
) -> None:
    query = OfferQuery(max_price_per_gpu_hour=max_price, limit=limit)
    result = cheapest(offers, query)
    per_gpu = [o.price_per_gpu_hour for o in result]
    assert per_gpu == sorted(per_gpu)
    assert all(max_price is None or p <= max_price for p in per_gpu)
    matching = [o for o in offers if rejection(o, query) is None]
    assert len(result) == (len(matching) if limit is None else min(limit, len(matching)))
    # No offer left out is cheaper than the dearest one returned.
    if result and limit is not None:
        left_out = [o for o in matching if o not in result]
        assert all(o.price_per_gpu_hour >= per_gpu[-1] for o in left_out)


@given(offers_strategy)
def test_cheapest_is_deterministic_whatever_the_input_order(offers: list[Offer]) -> None:
    assert cheapest(offers, OfferQuery()) == cheapest(list(reversed(offers)), OfferQuery())
