"""The bundled price snapshot parses into real offers from every cloud in the shared data."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources

import pytest

from broker.core.types import CapacityType
from pricing.skypilot import CatalogFormatError
from pricing.snapshot import parse_offers_csv

T0 = datetime(2026, 11, 23, tzinfo=UTC)
HEADER = (
    "cloud,instance_type,accelerator,accelerator_count,vcpus,memory_gib,region,zone,"
    "price_ondemand_usd_hr,price_spot_usd_hr\r\n"
)
SOURCES = {"aws": "aws-src", "azure": "az-src", "vast": "vast-src", "gcp": "gcp-src"}


def bundled() -> tuple[str, dict[str, str]]:
    data = resources.files("pricing") / "data"
    meta = json.loads((data / "offers.meta.json").read_text())
    return (data / "offers.csv").read_text(encoding="utf-8"), meta["sources"]


def test_bundled_snapshot_has_h100_from_every_cloud_that_lists_it() -> None:
    text, sources = bundled()
    offers = parse_offers_csv(text, source_name="offers.csv", observed_at=T0, sources=sources)
    h100_clouds = {o.cloud for o in offers if o.accelerator == "H100"}
    assert h100_clouds == {
        "aws",
        "gcp",
        "lambda",
        "runpod",
        "nebius",
        "azure",
        "oci",
        "cudo",
        "vast",
        "fluidstack",
        "paperspace",
        "do",
    }
    assert {o.cloud for o in offers} == set(sources)
    assert all(isinstance(o.price_per_hour, Decimal) for o in offers)
    assert all(o.source == sources[o.cloud] for o in offers)


def test_bundled_snapshot_counts_match_the_source_table() -> None:
    text, sources = bundled()
    offers = parse_offers_csv(text, source_name="offers.csv", observed_at=T0, sources=sources)
    rows = text.splitlines()[1:]
    priced_rows = [r for r in rows if r.split(",")[1]]  # GCP GPU-only rows (no instance type) are skipped
    on_demand = [r for r in priced_rows if r.split(",")[8]]
    spot = [r for r in priced_rows if r.split(",")[9]]
    kinds = Counter(o.capacity_type for o in offers)
    assert kinds[CapacityType.ON_DEMAND] == len(on_demand)
    assert kinds[CapacityType.SPOT] == len(spot)


def test_row_semantics() -> None:
    text = HEADER + (
        "aws,p5.48xlarge,H100,8,192,2048,us-east-1,use1-az4,98.32,35.1234\r\n"
        "azure,Standard_ND96isr_H100_v5,H100,12,96,1900,eastus,,98.32,\r\n"
        "vast,8x-H100_SXM-32-65536,H100-SXM,8,32,64,US,Texas,17.00,\r\n"
        "gcp,,T4,1,,,us-central1,us-central1-a,0.35,0.14\r\n"
        "azure,Standard_NV4as_v4,Radeon MI25,1,4,14,westus,,,\r\n"
    )
    offers = parse_offers_csv(text, source_name="t.csv", observed_at=T0, sources=SOURCES)
    by = {(o.cloud, o.capacity_type): o for o in offers}
    assert len(offers) == 4  # aws on-demand + spot, azure on-demand, vast on-demand
    assert by["aws", CapacityType.SPOT].price_per_hour == Decimal("35.1234")
    assert by["aws", CapacityType.ON_DEMAND].price_per_gpu_hour == Decimal("12.29")
    assert by["aws", CapacityType.ON_DEMAND].zone == "use1-az4"
    assert (
        by["azure", CapacityType.ON_DEMAND].accelerator_count == 8
    )  # Azure documents 8, the catalog says 12
    assert by["azure", CapacityType.ON_DEMAND].zone is None
    vast = by["vast", CapacityType.ON_DEMAND]
    assert vast.accelerator == "H100" and vast.vcpus is None and vast.memory_gib is None


@pytest.mark.parametrize(
    ("row", "line_field"),
    [
        ("aws,p5.48xlarge,H100,8,192,2048,us-east-1,use1-az4,-1,\r\n", ":2: field price_ondemand_usd_hr"),
        ("aws,p5.48xlarge,H100,8,192,2048,us-east-1,use1-az4,98.32,cheap\r\n", ":2: field price_spot_usd_hr"),
        ("aws,p5.48xlarge,H100,eight,192,2048,us-east-1,use1-az4,98.32,\r\n", ":2: field accelerator_count"),
        ("aws,p5.48xlarge,H100,8,192,2048,us-east-1\r\n", ":2:"),
        ("nowhere,x,H100,8,192,2048,r,z,1,\r\n", ":2: field cloud"),
        ("aws,p5.48xlarge,H100,8,192,2048,,use1-az4,98.32,\r\n", ":2: field region"),
    ],
)
def test_bad_rows_name_file_line_and_field(row: str, line_field: str) -> None:
    with pytest.raises(CatalogFormatError) as err:
        parse_offers_csv(HEADER + row, source_name="bad.csv", observed_at=T0, sources=SOURCES)
    assert f"bad.csv{line_field}" in str(err.value)


def test_header_problems_and_all_problems_reported_together() -> None:
    with pytest.raises(CatalogFormatError) as err:
        parse_offers_csv(
            "cloud,instance_type,price\r\n", source_name="h.csv", observed_at=T0, sources=SOURCES
        )
    assert "accelerator_count" in str(err.value) and "unknown column" in str(err.value)
    bad = HEADER + "aws,p5,H100,8,1,1,r,z,-1,\r\n" + "aws,p5,H100,8,1,1,r,z,x,\r\n"
    with pytest.raises(CatalogFormatError) as err:
        parse_offers_csv(bad, source_name="two.csv", observed_at=T0, sources=SOURCES)
    assert "two.csv:2:" in str(err.value) and "two.csv:3:" in str(err.value)
