"""Tests for pricing.skypilot: SkyPilot v8 vms.csv -> Offers.

The fixtures under fixtures/skypilot/<cloud>/vms.csv carry each cloud's real v8 header and rows
copied from skypilot-catalog (aws@00148f2a, gcp@006059e0, lambda@0f407038, runpod@01acdfd4,
azure from the coopslarhette fork@20291d7e). A few rows are adapted to exercise a rule, not
copied: the AWS g6f.large and Azure NV6ads_A10_v5 fractional rows, the Azure NC80adis row
priced 0.0 (SkyPilot's fillna(0)), RunPod 8x_H100-SXM (scaled from the real 1x row), the GCP
g2-standard host prices and the T4 GPU row. The GCP B200 row's prices are those the bundled
snapshot derived from the same catalog.
"""

from __future__ import annotations

import csv
import io
import pickle
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.core.types import CapacityType, Offer
from pricing.skypilot import (
    GCP_HOST_ACCELERATORS,
    KNOWN_COLUMNS,
    MAX_REPORTED_PROBLEMS,
    SUPPORTED_CLOUDS,
    CatalogFormatError,
    CatalogProblem,
    cloud_from_path,
    parse_vms_csv,
)

FIXTURES = Path(__file__).parent / "fixtures" / "skypilot"
OBSERVED = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SOURCE = "skypilot-catalog@test"
OD = CapacityType.ON_DEMAND
SPOT = CapacityType.SPOT

AWS_HEADER = ",".join(KNOWN_COLUMNS["aws"])
GCP_HEADER = ",".join(KNOWN_COLUMNS["gcp"])
# A real p5.48xlarge row (GpuInfo left empty; it is informational).
P5 = "p5.48xlarge,H100,8.0,192.0,2048.0,,55.04,19.253100,us-east-1,use1-az2,x86_64"
A3_HOST = "a3-highgpu-8g,208.0,1872.0,,,,us-central1,us-central1-a,9.46006,2.88933"
H100_GPU = ",,,H100,8,,us-central1,us-central1-a,33.60609,23.9408"


def fixture_text(cloud: str) -> str:
    return (FIXTURES / cloud / "vms.csv").read_text(encoding="utf-8")


def parse(text: str, cloud: str = "aws", source_name: str | None = None) -> list[Offer]:
    return parse_vms_csv(
        text,
        cloud=cloud,
        source_name=source_name or f"{cloud}/vms.csv",
        observed_at=OBSERVED,
        source=SOURCE,
    )


def failure(text: str, cloud: str = "aws") -> CatalogFormatError:
    with pytest.raises(CatalogFormatError) as info:
        parse(text, cloud)
    return info.value


def aws_csv(*rows: str) -> str:
    return "\n".join([AWS_HEADER, *rows]) + "\n"


def gcp_csv(*rows: str) -> str:
    return "\n".join([GCP_HEADER, *rows]) + "\n"


def aws_row(**fields: str) -> str:
    """The P5 row with some fields replaced, by column name."""
    values = dict(zip(KNOWN_COLUMNS["aws"], P5.split(","), strict=True))
    values.update(fields)
    return ",".join(values[c] for c in KNOWN_COLUMNS["aws"])


def prices(offers: list[Offer]) -> dict[tuple[str, str, str | None, CapacityType], Decimal]:
    table = {(o.instance_type, o.region, o.zone, o.capacity_type): o.price_per_hour for o in offers}
    assert len(table) == len(offers), "offer keys must be unique"
    return table


# --- the real files, cloud by cloud ------------------------------------------------------------


def test_supported_clouds_and_column_table_agree() -> None:
    assert SUPPORTED_CLOUDS == ("aws", "gcp", "azure", "lambda", "runpod")
    assert set(KNOWN_COLUMNS) == set(SUPPORTED_CLOUDS)


@pytest.mark.parametrize("cloud", SUPPORTED_CLOUDS)
def test_fixture_headers_are_the_known_columns_in_real_order(cloud: str) -> None:
    assert fixture_text(cloud).splitlines()[0].split(",") == list(KNOWN_COLUMNS[cloud])


def test_aws_offers() -> None:
    offers = parse(fixture_text("aws"), "aws")
    assert prices(offers) == {
        ("p4d.24xlarge", "us-east-1", "use1-az1", OD): Decimal("21.957642"),
        ("p4d.24xlarge", "us-east-1", "use1-az1", SPOT): Decimal("2.4655"),
        # No SpotPrice in ap-northeast-2: on-demand only.
        ("p5.48xlarge", "ap-northeast-2", "apne2-az1", OD): Decimal("75.9552"),
        ("p5.48xlarge", "us-east-1", "use1-atl2-az1", OD): Decimal("55.04"),
        ("p5.48xlarge", "us-east-1", "use1-atl2-az1", SPOT): Decimal("10.2397"),
        ("p5.48xlarge", "us-east-1", "use1-az2", OD): Decimal("55.04"),
        ("p5.48xlarge", "us-east-1", "use1-az2", SPOT): Decimal("19.2531"),
        ("p5.48xlarge", "us-east-1", "use1-az4", OD): Decimal("55.04"),
        ("p5.48xlarge", "us-east-1", "use1-az4", SPOT): Decimal("55.04"),
        ("p5.4xlarge", "us-east-1", "use1-az1", OD): Decimal("6.88"),
        # Empty Price but a SpotPrice: spot only. Both empty (use2-az2): nothing.
        ("p5e.48xlarge", "us-east-2", "use2-az1", SPOT): Decimal("62.9957"),
    }
    # CPU rows (a1/c3/r5ad) and the fractional g6f.large (0.125 of an L4) give no offers.
    assert {o.instance_type for o in offers} == {"p4d.24xlarge", "p5.48xlarge", "p5.4xlarge", "p5e.48xlarge"}


def test_aws_offer_fields_are_complete_and_exact() -> None:
    offers = parse(fixture_text("aws"), "aws")
    spot = next(o for o in offers if o.zone == "use1-az2" and o.capacity_type is SPOT)
    assert spot == Offer(
        cloud="aws",
        region="us-east-1",
        zone="use1-az2",
        instance_type="p5.48xlarge",
        accelerator="H100",
        accelerator_count=8,
        vcpus=Decimal("192.0"),
        memory_gib=Decimal("2048.0"),
        capacity_type=SPOT,
        price_per_hour=Decimal("19.2531"),
        currency="USD",
        source=SOURCE,
        observed_at=OBSERVED,
    )
    # Decimal straight from the text: the catalog's digits survive, no float went in between.
    assert str(spot.price_per_hour) == "19.253100"
    assert spot.price_per_gpu_hour == Decimal("19.2531") / 8


def test_gcp_combines_host_and_gpu_prices_like_skypilot() -> None:
    offers = parse(fixture_text("gcp"), "gcp")
    assert prices(offers) == {
        # a3-highgpu-8g host 9.46006/2.88933 + H100 x8 33.60609/23.9408 in us-central1-a.
        ("a3-highgpu-8g", "us-central1", "us-central1-a", OD): Decimal("43.06615"),
        ("a3-highgpu-8g", "us-central1", "us-central1-a", SPOT): Decimal("26.83013"),
        ("a3-highgpu-8g", "us-east4", "us-east4-a", OD): Decimal("87.83247"),
        ("a3-highgpu-8g", "us-east4", "us-east4-a", SPOT): Decimal("20.04446"),
        ("a3-highgpu-8g", "asia-east1", "asia-east1-c", OD): Decimal("101.70125"),
        ("a3-highgpu-8g", "asia-east1", "asia-east1-c", SPOT): Decimal("25.47229"),
        # The H200 GPU row has no SpotPrice: on-demand only.
        ("a3-ultragpu-8g", "asia-south2", "asia-south2-c", OD): Decimal("51.33527"),
        # a4 host rows are 0.0; the B200 GPU row supplies the price.
        ("a4-highgpu-8g", "us-central1", "us-central1-b", OD): Decimal("90.216"),
        ("a4-highgpu-8g", "us-central1", "us-central1-b", SPOT): Decimal("32.6064"),
        # L4 x1 fits several g2 hosts; each is its own offer.
        ("g2-standard-4", "us-central1", "us-central1-a", OD): Decimal("0.70682"),
        ("g2-standard-4", "us-central1", "us-central1-a", SPOT): Decimal("0.28156"),
        ("g2-standard-8", "us-central1", "us-central1-a", OD): Decimal("0.8536"),
        ("g2-standard-8", "us-central1", "us-central1-a", SPOT): Decimal("0.34002"),
    }


def test_gcp_offer_takes_host_shape_and_gpu_from_the_table() -> None:
    offer = next(o for o in parse(fixture_text("gcp"), "gcp") if o.instance_type == "a3-highgpu-8g")
    assert (offer.accelerator, offer.accelerator_count) == ("H100", 8)
    assert (offer.vcpus, offer.memory_gib) == (Decimal("208.0"), Decimal("1872.0"))
    assert offer.zone == "asia-east1-c"


def test_gcp_skips_what_has_no_complete_price() -> None:
    offers = parse(fixture_text("gcp"), "gcp")
    places = {(o.instance_type, o.zone) for o in offers}
    # Host without a GPU row in its zone (europe-west4-b; a4 in us-west3-b).
    assert ("a3-highgpu-8g", "europe-west4-b") not in places
    assert ("a4-highgpu-8g", "us-west3-b") not in places
    # Not a GPU machine type to SkyPilot (absent from _ACC_INSTANCE_TYPE_DICTS).
    assert "a3-edgegpu-8g" not in GCP_HOST_ACCELERATORS
    assert all(o.instance_type != "a3-edgegpu-8g" for o in offers)
    # GPU-only rows never become offers themselves; T4 (N1-attached), TPUs, CPU VMs are skipped.
    assert all(o.instance_type for o in offers)
    assert {o.accelerator for o in offers} == {"H100", "H200", "B200", "L4"}
    assert all(o.instance_type != "n1-standard-8" for o in offers)


def test_gcp_mega_gpu_name_is_canonical() -> None:
    text = gcp_csv(
        "a3-megagpu-8g,208.0,1872.0,,,,us-central1,us-central1-a,9.46006,2.88933",
        ",,,H100-MEGA,8,,us-central1,us-central1-a,82.75421,25.2808",
    )
    (od, spot) = parse(text, "gcp")
    assert (od.accelerator, od.price_per_hour, spot.price_per_hour) == (
        "H100",
        Decimal("92.21427"),
        Decimal("28.17013"),
    )


def test_azure_offers_and_nd96isr_count_fix() -> None:
    offers = parse(fixture_text("azure"), "azure")
    assert prices(offers) == {
        ("Standard_NC24ads_A100_v4", "eastus", None, OD): Decimal("3.673"),
        ("Standard_NC24ads_A100_v4", "eastus", None, SPOT): Decimal("0.444433"),
        ("Standard_NC40ads_H100_v5", "eastus", None, OD): Decimal("6.98"),
        ("Standard_NC40ads_H100_v5", "eastus", None, SPOT): Decimal("6.98"),
        ("Standard_NC6_Promo", "southcentralus", None, OD): Decimal("0.216"),
        ("Standard_ND96asr_v4", "eastus", None, OD): Decimal("27.197"),
        ("Standard_ND96asr_v4", "eastus", None, SPOT): Decimal("2.99167"),
        ("Standard_ND96isr_H100_v5", "eastus", None, OD): Decimal("98.32"),
        ("Standard_ND96isr_H100_v5", "eastus", None, SPOT): Decimal("98.32"),
        ("Standard_ND96isr_H100_v5", "westus", None, OD): Decimal("127.816"),
        ("Standard_ND96isr_H100_v5", "westus", None, SPOT): Decimal("127.816"),
    }
    nd96 = [o for o in offers if o.instance_type == "Standard_ND96isr_H100_v5"]
    assert {o.accelerator_count for o in nd96} == {8}  # the catalog says 12
    assert nd96[0].price_per_gpu_hour == Decimal("12.29")
    # Price 0.0 (NC80adis), empty prices (NV16as) and the 0.167-GPU NV6ads_A10_v5: no offers.


def test_lambda_offers_have_no_spot_and_no_zone() -> None:
    offers = parse(fixture_text("lambda"), "lambda")
    assert prices(offers) == {
        ("gpu_1x_h100_pcie", "us-east-1", None, OD): Decimal("3.29"),
        ("gpu_4x_a6000", "us-west-1", None, OD): Decimal("4.36"),
        ("gpu_8x_h100_sxm5", "us-east-1", None, OD): Decimal("31.92"),
        ("gpu_8x_h100_sxm5", "us-west-1", None, OD): Decimal("31.92"),
        ("gpu_8x_v100", "us-east-1", None, OD): Decimal("6.32"),
    }
    assert {(o.accelerator, o.accelerator_count) for o in offers} == {
        ("H100", 1),
        ("A6000", 4),
        ("H100", 8),
        ("V100", 8),
    }


def test_runpod_offers_use_canonical_names() -> None:
    offers = parse(fixture_text("runpod"), "runpod")
    assert len(offers) == 12
    names = {o.instance_type: (o.accelerator, o.accelerator_count) for o in offers}
    assert names == {
        "1x_A100-80GB_SECURE": ("A100-80GB", 1),
        "1x_H100-SXM_SECURE": ("H100", 1),
        "2x_H200-SXM_SECURE": ("H200", 2),
        "8x_H100-SXM_SECURE": ("H100", 8),
        "9x_H100-NVL_SECURE": ("H100", 9),
    }
    h100 = [o for o in offers if o.instance_type == "8x_H100-SXM_SECURE"]
    assert {(o.region, o.zone, o.capacity_type, o.price_per_hour) for o in h100} == {
        ("US", "US-TX-3", OD, Decimal("26.32")),
        ("US", "US-TX-3", SPOT, Decimal("26.32")),
    }


def test_columns_are_matched_by_name_not_position() -> None:
    rows = list(csv.reader(io.StringIO(fixture_text("aws"))))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([list(reversed(r)) for r in rows])
    assert parse(out.getvalue()) == parse(fixture_text("aws"))


def test_informational_columns_may_be_absent() -> None:
    columns = [c for c in KNOWN_COLUMNS["aws"] if c not in ("GpuInfo", "Arch")]
    text = ",".join(columns) + "\np5.48xlarge,H100,8.0,192.0,2048.0,55.04,19.2531,us-east-1,use1-az2\n"
    assert prices(parse(text)) == {
        ("p5.48xlarge", "us-east-1", "use1-az2", OD): Decimal("55.04"),
        ("p5.48xlarge", "us-east-1", "use1-az2", SPOT): Decimal("19.2531"),
    }


# --- encodings and edge files ------------------------------------------------------------------


@pytest.mark.parametrize("cloud", SUPPORTED_CLOUDS)
def test_bom_and_crlf_give_the_same_offers(cloud: str) -> None:
    text = fixture_text(cloud)
    windows = "\ufeff" + text.replace("\n", "\r\n")
    assert parse(windows, cloud) == parse(text, cloud)


def test_crlf_keeps_line_numbers() -> None:
    text = "\ufeff" + aws_csv(P5, aws_row(Price="oops")).replace("\n", "\r\n")
    assert failure(text).problems == [CatalogProblem(3, "Price", "not a number: 'oops'")]


@pytest.mark.parametrize("text", ["", "\ufeff", "\n\n", "  \r\n"])
def test_empty_file_is_a_problem(text: str) -> None:
    err = failure(text)
    assert err.problems == [CatalogProblem(None, None, "empty file: no header row")]
    assert str(err).startswith("aws/vms.csv: 1 problem")
    assert "aws/vms.csv: empty file: no header row" in str(err)


@pytest.mark.parametrize("text", [AWS_HEADER, AWS_HEADER + "\n", "\ufeff" + AWS_HEADER + "\r\n\r\n"])
def test_header_only_gives_no_offers(text: str) -> None:
    assert parse(text) == []


def test_multiline_quoted_field_keeps_physical_line_numbers() -> None:
    multiline = aws_row(GpuInfo='"first line\nsecond line"')
    err = failure(aws_csv(P5, multiline, aws_row(SpotPrice="-1")))
    # Header 1, P5 2, the quoted row spans 3-4, the bad row starts on 5.
    assert err.problems == [CatalogProblem(5, "SpotPrice", "negative price: -1")]


def test_malformed_quoting_is_a_problem() -> None:
    err = failure(aws_csv(P5, aws_row(GpuInfo='"open"junk')))
    assert [(p.line, p.field) for p in err.problems] == [(3, None)]
    assert "aws/vms.csv:3: malformed CSV" in str(err)


# --- problems ----------------------------------------------------------------------------------


def test_missing_required_column() -> None:
    columns = [c for c in KNOWN_COLUMNS["aws"] if c != "SpotPrice"]
    err = failure(",".join(columns) + "\n")
    assert err.problems == [CatalogProblem(1, "SpotPrice", "required column 'SpotPrice' is missing")]
    assert "aws/vms.csv:1: field SpotPrice: required column 'SpotPrice' is missing" in str(err)


def test_gcp_needs_availability_zone() -> None:
    columns = [c for c in KNOWN_COLUMNS["gcp"] if c != "AvailabilityZone"]
    err = failure(",".join(columns) + "\n", "gcp")
    assert [(p.line, p.field) for p in err.problems] == [(1, "AvailabilityZone")]


def test_unknown_column() -> None:
    err = failure(AWS_HEADER + ",Foo\n" + P5 + ",x\n")
    assert [(p.line, p.field) for p in err.problems] == [(1, "Foo")]
    assert "aws/vms.csv:1: field Foo: unknown column 'Foo'" in str(err)


def test_column_of_another_cloud_is_unknown() -> None:
    # Azure's Generation is not an AWS column.
    err = failure(AWS_HEADER + ",Generation\n")
    assert "unknown column 'Generation' for aws" in str(err)


def test_duplicate_column() -> None:
    err = failure(AWS_HEADER + ",Price\n")
    assert [(p.line, p.field, p.message) for p in err.problems] == [(1, "Price", "duplicate column 'Price'")]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("abc", "not a number: 'abc'"),
        ("$55.04", "not a number: '$55.04'"),
        ("1.2.3", "not a number: '1.2.3'"),
        ("1_000", "not a number: '1_000'"),
        ("NaN", "not a finite number: 'NaN'"),
        ("nan", "not a finite number: 'nan'"),
        ("inf", "not a finite number: 'inf'"),
        ("-Infinity", "not a finite number: '-Infinity'"),
        ("-55.04", "negative price: -55.04"),
        ("-0.000001", "negative price: -0.000001"),
    ],
)
@pytest.mark.parametrize("field", ["Price", "SpotPrice"])
def test_bad_price(field: str, raw: str, message: str) -> None:
    err = failure(aws_csv(P5, aws_row(**{field: raw})))
    assert err.problems == [CatalogProblem(3, field, message)]
    assert f"aws/vms.csv:3: field {field}: {message}" in str(err)


def test_negative_price_on_a_cpu_row_is_still_a_problem() -> None:
    cpu = "r5ad.large,,,2.0,16.0,,-0.131,0.043000,us-east-1,use1-az1,x86_64"
    assert failure(aws_csv(cpu)).problems == [CatalogProblem(2, "Price", "negative price: -0.131")]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("8.5", "not a whole number of accelerators: 8.5"),
        ("0", "must be a positive number of accelerators, got 0"),
        ("0.0", "must be a positive number of accelerators, got 0.0"),
        ("-8", "must be a positive number of accelerators, got -8"),
        ("eight", "not a number: 'eight'"),
        ("", "empty, but the row names an accelerator"),
    ],
)
def test_bad_accelerator_count(raw: str, message: str) -> None:
    err = failure(aws_csv(aws_row(AcceleratorCount=raw)))
    assert err.problems == [CatalogProblem(2, "AcceleratorCount", message)]
    assert f"aws/vms.csv:2: field AcceleratorCount: {message}" in str(err)


def test_accelerator_count_written_as_float_or_int() -> None:
    for raw in ("8.0", "8", "8.00"):
        assert {o.accelerator_count for o in parse(aws_csv(aws_row(AcceleratorCount=raw)))} == {8}


@pytest.mark.parametrize("field", ["vCPUs", "MemoryGiB"])
def test_bad_shape_numbers(field: str) -> None:
    err = failure(aws_csv(aws_row(**{field: "lots"})))
    assert err.problems == [CatalogProblem(2, field, "not a number: 'lots'")]


def test_empty_shape_numbers_are_none() -> None:
    (od, _spot) = parse(aws_csv(aws_row(vCPUs="", MemoryGiB="")))
    assert (od.vcpus, od.memory_gib) == (None, None)


def test_region_and_instance_type_are_required() -> None:
    err = failure(aws_csv(aws_row(Region=""), aws_row(InstanceType="")))
    assert [(p.line, p.field) for p in err.problems] == [(2, "Region"), (3, "InstanceType")]


def test_empty_zone_is_none() -> None:
    (od, _spot) = parse(aws_csv(aws_row(AvailabilityZone="")))
    assert od.zone is None


def test_wrong_number_of_fields() -> None:
    err = failure(aws_csv(P5, P5 + ",extra", "p5.48xlarge,H100"))
    assert err.problems == [
        CatalogProblem(3, None, "expected 11 fields (as in the header), found 12"),
        CatalogProblem(4, None, "expected 11 fields (as in the header), found 2"),
    ]
    assert "aws/vms.csv:3: expected 11 fields" in str(err)


def test_all_problems_are_reported_together_and_nothing_is_returned() -> None:
    text = aws_csv(
        P5,
        aws_row(Price="x"),
        aws_row(AvailabilityZone="use1-az4"),
        aws_row(AcceleratorCount="2.5", SpotPrice="-3"),
        "too,few",
    )
    err = failure(text)
    assert [(p.line, p.field) for p in err.problems] == [
        (3, "Price"),
        (5, "AcceleratorCount"),
        (5, "SpotPrice"),
        (6, None),
    ]
    message = str(err)
    assert message.startswith("aws/vms.csv: 4 problems")
    for where in ("aws/vms.csv:3: field Price", "aws/vms.csv:5: field AcceleratorCount", "aws/vms.csv:6: "):
        assert where in message


def test_problem_list_is_capped_in_the_message() -> None:
    bad = [aws_row(AvailabilityZone=f"z{i}", Price="bad") for i in range(MAX_REPORTED_PROBLEMS + 10)]
    err = failure(aws_csv(*bad))
    assert len(err.problems) == MAX_REPORTED_PROBLEMS + 10
    assert err.problems[-1].line == MAX_REPORTED_PROBLEMS + 11
    message = str(err)
    assert "... and 10 more problems" in message
    assert f"aws/vms.csv:{MAX_REPORTED_PROBLEMS + 1}: field Price" in message
    assert f"aws/vms.csv:{MAX_REPORTED_PROBLEMS + 2}:" not in message


def test_duplicate_rows_same_price_collapse_different_price_is_a_problem() -> None:
    assert len(parse(aws_csv(P5, P5))) == 2
    err = failure(aws_csv(P5, aws_row(Price="56.00")))
    assert [(p.line, p.field) for p in err.problems] == [(3, None)]
    assert "costs 56.00 here but 55.04 on line 2" in str(err)


def test_gcp_bad_gpu_row_is_reported() -> None:
    err = failure(gcp_csv(A3_HOST, ",,,H100,8,,us-central1,us-central1-a,-33.60609,23.9408"), "gcp")
    assert err.problems == [CatalogProblem(3, "Price", "negative price: -33.60609")]
    assert "gcp/vms.csv:3: field Price" in str(err)


def test_gcp_row_without_type_or_accelerator_is_a_problem() -> None:
    err = failure(gcp_csv(",,,,,,us-central1,us-central1-a,1.0,0.5"), "gcp")
    assert [(p.line, p.field) for p in err.problems] == [(2, "InstanceType")]


def test_gcp_vm_row_naming_an_accelerator() -> None:
    agreeing = "a3-highgpu-8g,208.0,1872.0,H100,8,,us-central1,us-central1-a,9.46006,2.88933"
    assert len(parse(gcp_csv(agreeing, H100_GPU), "gcp")) == 2
    disagreeing = "a3-highgpu-8g,208.0,1872.0,H100,4,,us-central1,us-central1-a,9.46006,2.88933"
    unknown = "n1-standard-8,8.0,30.0,T4,1,,us-central1,us-central1-a,0.37997,0.07998"
    err = failure(gcp_csv(disagreeing, unknown, H100_GPU), "gcp")
    assert [(p.line, p.field) for p in err.problems] == [(2, "AcceleratorName"), (3, "AcceleratorName")]


def test_gcp_gpu_rows_conflicting_in_one_zone() -> None:
    assert len(parse(gcp_csv(A3_HOST, H100_GPU, H100_GPU), "gcp")) == 2
    other = ",,,H100,8,,us-central1,us-central1-a,33.7,23.9408"
    err = failure(gcp_csv(A3_HOST, H100_GPU, other), "gcp")
    assert [(p.line, p.field) for p in err.problems] == [(4, None)]
    assert "priced differently on line 3" in str(err)


def test_gcp_zero_total_is_skipped_without_a_problem() -> None:
    text = gcp_csv(
        "a4-highgpu-8g,224.0,3968.0,,,,us-central1,us-central1-b,0.0,0.0",
        ",,,B200,8,,us-central1,us-central1-b,0,",
    )
    assert parse(text, "gcp") == []


def test_bad_arguments_are_value_errors_not_format_errors() -> None:
    with pytest.raises(ValueError, match="unsupported cloud 'oci'") as info:
        parse(AWS_HEADER, "oci")
    assert not isinstance(info.value, CatalogFormatError)
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_vms_csv(AWS_HEADER, cloud="aws", source_name="x", observed_at=datetime(2026, 1, 1), source="s")  # noqa: DTZ001


def test_catalog_format_error_is_a_value_error_and_pickles() -> None:
    err = failure(aws_csv(aws_row(Price="x")))
    assert isinstance(err, ValueError)
    assert err.source_name == "aws/vms.csv"
    again = pickle.loads(pickle.dumps(err))
    assert (again.source_name, again.problems, str(again)) == (err.source_name, err.problems, str(err))


# --- cloud_from_path ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "cloud"),
    [
        ("~/.sky/catalogs/v8/aws/vms.csv", "aws"),
        ("/home/u/.sky/catalogs/v8/gcp/vms.csv", "gcp"),
        ("catalogs/v8/azure/vms.csv", "azure"),
        ("lambda/vms.csv", "lambda"),
        ("C:\\Users\\u\\.sky\\catalogs\\v8\\runpod\\vms.csv", "runpod"),
        ("catalogs/v8/AWS/vms.csv", "aws"),
        ("catalogs/v8/oci/vms.csv", None),
        ("catalogs/v8/aws/images.csv", None),
        ("vms.csv", None),
        ("catalogs/v8/aws/", None),
        ("", None),
    ],
)
def test_cloud_from_path(path: str, cloud: str | None) -> None:
    assert cloud_from_path(path) == cloud


# --- properties --------------------------------------------------------------------------------

_PRICE_TEXT = st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,9})?", fullmatch=True)


@given(price=_PRICE_TEXT, spot=_PRICE_TEXT)
def test_price_text_round_trips_exactly(price: str, spot: str) -> None:
    offers = parse(aws_csv(aws_row(Price=price, SpotPrice=spot)))
    got = {o.capacity_type: o.price_per_hour for o in offers}
    expected = {c: Decimal(t) for c, t in ((OD, price), (SPOT, spot)) if Decimal(t) != 0}
    assert got == expected
    for capacity, value in got.items():
        # Same digits and exponent as the text, not merely an equal value.
        assert value.as_tuple() == Decimal(price if capacity is OD else spot).as_tuple()


@given(host=_PRICE_TEXT, gpu=_PRICE_TEXT)
def test_gcp_total_is_the_exact_decimal_sum(host: str, gpu: str) -> None:
    text = gcp_csv(
        f"a3-highgpu-8g,208.0,1872.0,,,,us-central1,us-central1-a,{host},",
        f",,,H100,8,,us-central1,us-central1-a,{gpu},",
    )
    total = Decimal(host) + Decimal(gpu)
    assert [o.price_per_hour for o in parse(text, "gcp")] == ([total] if total else [])
