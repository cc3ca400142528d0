"""Egress price table: paths, list prices, continents of real region names, and totality."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.bundled import bundled_snapshot
from pricing.egress import (
    ASIA,
    EUROPE,
    NORTH_AMERICA,
    OCEANIA,
    SOUTH_AMERICA,
    UNKNOWN_CLOUD_EGRESS_PER_GB,
    EgressPath,
    continent_of,
    egress_path,
    egress_per_gb,
)

D = Decimal


@pytest.mark.parametrize(
    ("src", "dst", "zones", "path", "price"),
    [
        (("aws", "us-east-1"), ("aws", "us-east-1"), ("use1-az1", "use1-az1"), EgressPath.SAME_ZONE, "0"),
        (("aws", "us-east-1"), ("aws", "us-east-1"), ("use1-az1", "use1-az2"), EgressPath.CROSS_ZONE, "0.02"),
        (("aws", "us-east-1"), ("aws", "us-east-1"), (None, None), EgressPath.CROSS_ZONE, "0.02"),
        (("aws", "us-east-1"), ("aws", "us-west-2"), (None, None), EgressPath.CROSS_REGION, "0.02"),
        (("aws", "ap-northeast-1"), ("aws", "us-west-2"), (None, None), EgressPath.CROSS_CONTINENT, "0.09"),
        (("aws", "us-east-1"), ("gcp", "us-central1"), (None, None), EgressPath.CROSS_CLOUD, "0.09"),
        (("aws", "sa-east-1"), ("lambda", "us-east-1"), (None, None), EgressPath.CROSS_CLOUD, "0.15"),
        (("gcp", "us-central1"), ("gcp", "us-central1"), ("us-central1-a", "us-central1-b"),
         EgressPath.CROSS_ZONE, "0.01"),
        (("gcp", "us-central1"), ("gcp", "us-east4"), (None, None), EgressPath.CROSS_REGION, "0.02"),
        (("gcp", "asia-east1"), ("gcp", "asia-south1"), (None, None), EgressPath.CROSS_REGION, "0.05"),
        (("gcp", "europe-west4"), ("gcp", "us-central1"), (None, None), EgressPath.CROSS_CONTINENT, "0.08"),
        (("gcp", "us-central1"), ("aws", "us-east-1"), (None, None), EgressPath.CROSS_CLOUD, "0.12"),
        (("gcp", "us-west1"), ("lambda", "australia-east-1"), (None, None), EgressPath.CROSS_CLOUD, "0.19"),
        (("azure", "eastus"), ("azure", "eastus"), ("1", "2"), EgressPath.CROSS_ZONE, "0"),
        (("azure", "eastus"), ("azure", "westus2"), (None, None), EgressPath.CROSS_REGION, "0.02"),
        (("azure", "eastus"), ("azure", "westeurope"), (None, None), EgressPath.CROSS_CONTINENT, "0.05"),
        (("azure", "eastus"), ("aws", "us-east-1"), (None, None), EgressPath.CROSS_CLOUD, "0.087"),
        (("lambda", "us-east-1"), ("aws", "us-east-1"), (None, None), EgressPath.CROSS_CLOUD, "0"),
        (("runpod", "US"), ("gcp", "us-central1"), (None, None), EgressPath.CROSS_CLOUD, "0"),
        (("shadeform", "us-east"), ("aws", "us-east-1"), (None, None), EgressPath.CROSS_CLOUD, "0"),
        (("vast", "US"), ("vast", "DE"), (None, None), EgressPath.CROSS_CONTINENT, "0.02"),
    ],
)
def test_list_prices_by_path(
    src: tuple[str, str],
    dst: tuple[str, str],
    zones: tuple[str | None, str | None],
    path: EgressPath,
    price: str,
) -> None:
    assert egress_path(*src, *dst, *zones) is path
    assert egress_per_gb(*src, *dst, *zones) == D(price)


def test_names_are_compared_case_insensitively() -> None:
    assert egress_per_gb("AWS", "US-EAST-1", "aws", "us-east-1", "USE1-AZ1", "use1-az1") == 0


def test_unknown_regions_and_clouds_get_the_conservative_default() -> None:
    # A region we cannot place is priced at the cloud's highest inter-region figure.
    assert egress_per_gb("aws", "moon-base-1", "aws", "us-east-1") == D("0.147")
    assert egress_per_gb("somecloud", "r1", "somecloud", "r2") == UNKNOWN_CLOUD_EGRESS_PER_GB
    assert egress_per_gb("somecloud", "r1", "aws", "us-east-1") == UNKNOWN_CLOUD_EGRESS_PER_GB
    assert egress_per_gb("somecloud", "r1", "somecloud", "r1", "z", "z") == 0


@pytest.mark.parametrize(
    ("cloud", "region", "continent"),
    [
        ("aws", "ap-southeast-2", OCEANIA),
        ("aws", "ap-southeast-1", ASIA),
        ("aws", "sa-east-1", SOUTH_AMERICA),
        ("gcp", "northamerica-northeast1", NORTH_AMERICA),
        ("azure", "westeurope", EUROPE),
        ("azure", "southcentralus", NORTH_AMERICA),
        ("azure", "australiaeast", OCEANIA),
        ("oci", "ap-sydney-1", OCEANIA),
        ("runpod", "CA", NORTH_AMERICA),
        ("vast", "JP", ASIA),
        ("fluidstack", "NORTH_DAKOTA_USA", NORTH_AMERICA),
        ("cudo", "no-kristiansand-1", EUROPE),
        ("paperspace", "East Coast (NY2)", None),
    ],
)
def test_continent_of_real_region_names(cloud: str, region: str, continent: str | None) -> None:
    assert continent_of(cloud, region) == continent


def test_every_hyperscaler_region_in_the_bundled_catalog_is_on_a_known_continent() -> None:
    hyperscalers = {"aws", "gcp", "azure", "oci"}
    regions = {(o.cloud, o.region) for o in bundled_snapshot().offers if o.cloud in hyperscalers}
    assert regions
    assert sorted(r for r in regions if continent_of(*r) is None) == []


names = st.text(max_size=20)


@settings(max_examples=300, deadline=None)
@given(names, names, names, names, st.none() | names, st.none() | names)
def test_egress_is_total_and_never_negative(
    src_cloud: str,
    src_region: str,
    dst_cloud: str,
    dst_region: str,
    src_zone: str | None,
    dst_zone: str | None,
) -> None:
    price = egress_per_gb(src_cloud, src_region, dst_cloud, dst_region, src_zone, dst_zone)
    assert isinstance(price, Decimal) and price.is_finite() and price >= 0
    path = egress_path(src_cloud, src_region, dst_cloud, dst_region, src_zone, dst_zone)
    assert (price == 0) or path is not EgressPath.SAME_ZONE
