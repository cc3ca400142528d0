"""The stored report's numbers against the hand-computed fleet of ``tests/reports/fleet.py``."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from broker.db.fleet import CostReport
from broker.reports.build import ReportOptions, build_and_store, find_org_id
from broker.services.tenancy import create_org
from tests.reports.fleet import AFTER, MIDNIGHT, D, seed_fleet
from tests.services.test_costs import DAY

OPTIONS = ReportOptions(timezone="UTC", anomaly_pct=Decimal(25), top_workloads=3)


@pytest.fixture
def fleet_org(session: Session) -> str:
    org = create_org(session, "acme-reports", DAY - timedelta(days=60))
    seed_fleet(session, org.id)
    return org.id


def test_the_days_numbers_match_the_hand_computed_fleet(session: Session, fleet_org: str) -> None:
    data = build_and_store(session, fleet_org, D, OPTIONS, AFTER).data
    assert data["day"] == "2026-11-23" and data["timezone"] == "UTC" and data["currency"] == "USD"
    assert data["window"] == {
        "start": "2026-11-23T00:00:00+00:00",
        "end": "2026-11-24T00:00:00+00:00",
        "hours": "24",
    }
    assert data["totals"] == {
        "spend_usd": "1020.00",  # 192 + 48 + 0 + 12 + 768
        "instance_spend_usd": "252.00",
        "commitment_charge_usd": "768.00",  # 16 GPUs x 24 h x $2
        "gpu_hours": "172.000",  # 48 + 24 + 96 + 4
        "ondemand_equivalent_usd": "840.00",  # 240 + 120 + 480
        "savings_usd": "-168.00",  # 840 - (192 + 48 + 0 + 768)
        "unpriced_spend_usd": "12.00",  # I4: no on-demand price on othercloud
        "avg_gpu_util_pct": "70.00",  # (50 + 70 + 90) / 3
        "committed_gpu_hours": "384.000",
        "committed_used_gpu_hours": "96.000",
        "commitment_utilization_pct": "25.0",
        "commitment_waste_usd": "576.00",  # (384 - 96) x $2
    }
    # Day before: 768 + 64 = 832; change 188 = 22.596% (under the 25% threshold).
    # 7-day average: (0 + 0 + 4 x 768 + 832) / 7 = 557.714...; 1020 - that = 462.29 = +82.9%.
    assert data["comparison"] == {
        "previous_day_usd": "832.00",
        "change_vs_previous_day_usd": "188.00",
        "change_vs_previous_day_pct": "22.6",
        "seven_day_avg_usd": "557.71",
        "change_vs_seven_day_avg_usd": "462.29",
        "change_vs_seven_day_avg_pct": "82.9",
    }
    assert [(d["day"], d["usd"]) for d in data["daily_spend"]] == [
        ("2026-11-16", "0.00"),
        ("2026-11-17", "0.00"),
        ("2026-11-18", "768.00"),
        ("2026-11-19", "768.00"),
        ("2026-11-20", "768.00"),
        ("2026-11-21", "768.00"),
        ("2026-11-22", "832.00"),
        ("2026-11-23", "1020.00"),
    ]


def rows(data: dict, dimension: str) -> list[tuple[str, str, str, str, str | None]]:
    return [
        (r["label"], r["usd"], r["gpu_hours"], r["previous_day_usd"], r["change_pct"])
        for r in data["breakdowns"][dimension]
    ]


def test_breakdowns_by_project_cloud_region_capacity_and_gpu(session: Session, fleet_org: str) -> None:
    data = build_and_store(session, fleet_org, D, OPTIONS, AFTER).data
    # research: I2 48 + I3 0 + C1 768 = 816 (day before: C1 768, +6.25% rounds half-even to 6.2);
    # default: I1 192 + I4 12 = 204 (day before: I1 64, +218.75% -> 218.8).
    assert rows(data, "project") == [
        ("research", "816.00", "120.000", "768.00", "6.2"),
        ("default", "204.00", "52.000", "64.00", "218.8"),
    ]
    assert [r["share_pct"] for r in data["breakdowns"]["project"]] == ["80.0", "20.0"]
    assert [r["avg_gpu_util_pct"] for r in data["breakdowns"]["project"]] == ["90.00", "60.00"]
    assert rows(data, "cloud") == [
        ("testcloud", "1008.00", "168.000", "832.00", "21.2"),
        ("othercloud", "12.00", "4.000", "0.00", None),
    ]
    assert rows(data, "region") == [
        ("r1 (testcloud)", "1008.00", "168.000", "832.00", "21.2"),
        ("r9 (othercloud)", "12.00", "4.000", "0.00", None),
    ]
    assert rows(data, "capacity_type") == [
        ("Reserved", "768.00", "96.000", "768.00", "0.0"),
        ("On-demand", "204.00", "52.000", "64.00", "218.8"),
        ("Spot", "48.00", "24.000", "0.00", None),
    ]
    assert rows(data, "gpu_type") == [
        ("H100", "1008.00", "168.000", "832.00", "21.2"),
        ("A100", "12.00", "4.000", "0.00", None),
    ]


def test_commitments_top_workloads_and_anomalies(session: Session, fleet_org: str) -> None:
    data = build_and_store(session, fleet_org, D, OPTIONS, AFTER).data
    [c1] = data["commitments"]
    assert {k: c1[k] for k in ("committed_gpu_hours", "used_gpu_hours", "utilization_pct", "charge_usd")} == {
        "committed_gpu_hours": "384.000",
        "used_gpu_hours": "96.000",
        "utilization_pct": "25.0",
        "charge_usd": "768.00",
    }
    assert c1["waste_usd"] == "576.00"
    # By cost: I1 $192, I2 $48, I4 $12 (I3 ran on the commitment: $0), top 3.
    assert [(w["name"], w["project"], w["usd"], w["ondemand_usd"]) for w in data["top_workloads"]] == [
        ("job-i1", "default", "192.00", "240.00"),
        ("job-i2", "research", "48.00", "120.00"),
        ("job-i4", "default", "12.00", None),
    ]
    # Total +22.6% is under 25%: no total anomaly. Groups up more than 25%, or new, biggest rise first.
    assert [(a["dimension"], a["label"], a["change_pct"]) for a in data["anomalies"]] == [
        ("capacity_type", "On-demand", "218.8"),
        ("project", "default", "218.8"),
        ("capacity_type", "Spot", None),
        ("cloud", "othercloud", None),
        ("gpu_type", "A100", None),
        ("region", "r9 (othercloud)", None),
    ]


def test_a_lower_threshold_flags_the_total(session: Session, fleet_org: str) -> None:
    data = build_and_store(session, fleet_org, D, ReportOptions("UTC", Decimal(20), 10), AFTER).data
    assert data["anomalies"][0]["dimension"] == "total"
    assert (
        data["anomalies"][0]["message"] == "Total spend: $1,020.00 against $832.00 the day before (up 22.6%)"
    )
    assert len(data["top_workloads"]) == 4


def test_rebuilding_a_past_day_gives_identical_numbers_and_replaces_the_row(
    session: Session, fleet_org: str
) -> None:
    first = build_and_store(session, fleet_org, D, OPTIONS, AFTER)
    later = AFTER + timedelta(days=3)
    second = build_and_store(session, fleet_org, D, OPTIONS, later)
    assert second.data == first.data
    assert second.csv == first.csv
    stored = session.scalars(select(CostReport).where(CostReport.org_id == fleet_org)).all()
    assert len(stored) == 1
    assert stored[0].generated_at == later and stored[0].data == first.data


def test_a_report_on_a_day_not_over_counts_only_until_now(session: Session, fleet_org: str) -> None:
    # At 12:00 on D: I1 6 h $192, I2 2 h $32, I3 $0, I4 not started, C1 12 h x 16 x $2 = $384.
    data = build_and_store(session, fleet_org, D, OPTIONS, MIDNIGHT + 12 * timedelta(hours=1)).data
    assert data["totals"]["spend_usd"] == "608.00"


def test_a_day_in_another_time_zone_is_its_local_calendar_day(session: Session, fleet_org: str) -> None:
    # 2026-11-23 in Asia/Tokyo (UTC+9) is 15:00 on the 22nd to 15:00 on the 23rd (UTC): all 8 h of
    # I1 ($256), I2's 3 h ($48), I3 ($0), not I4 (20:00 on the 23rd), C1 24 h ($768): $1,072.
    data = build_and_store(session, fleet_org, D, ReportOptions("Asia/Tokyo", Decimal(25), 10), AFTER).data
    assert data["window"]["start"] == "2026-11-22T15:00:00+00:00"
    assert data["totals"]["spend_usd"] == "1072.00"


def test_html_is_self_contained_and_readable(session: Session, fleet_org: str) -> None:
    html = build_and_store(session, fleet_org, D, OPTIONS, AFTER).html
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(script|img|iframe)\b", html)
    # One link: the icon, inline, so a browser does not fetch /favicon.ico either.
    assert re.findall(r"<link\b[^>]*>", html) == ['<link rel="icon" href="data:,">']
    assert "GPU cost report: acme-reports" in html and "Monday 23 November 2026" in html
    assert "$1,020.00" in html and "-$168.00" in html and "$576.00" in html
    assert html.count("<svg") == 6  # the daily trend and one chart per breakdown


def test_csv_opens_as_one_table(session: Session, fleet_org: str) -> None:
    text = build_and_store(session, fleet_org, D, OPTIONS, AFTER).csv
    table = list(csv.DictReader(io.StringIO(text)))
    assert {len(r) for r in table} == {18}
    total = table[0]
    assert (total["Section"], total["Spend (USD)"], total["Savings (USD)"]) == ("total", "1020.00", "-168.00")
    projects = {r["Name"]: r["Spend (USD)"] for r in table if r["Group"] == "project"}
    assert projects == {"research": "816.00", "default": "204.00"}


def test_find_org_by_name_or_id(session: Session, fleet_org: str) -> None:
    assert find_org_id(session, "acme-reports") == fleet_org == find_org_id(session, fleet_org)
    with pytest.raises(LookupError, match="no organization"):
        find_org_id(session, "nope")
