"""The report's pure parts: the local day's window, the math on hand-made cost lines, HTML and CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from broker.reports.export import to_json
from broker.reports.model import ReportInputs, UtilizationFigures, build_report, day_window
from broker.reports.render import render_csv, render_html
from broker.services.costs import CostLine

DAY = date(2026, 11, 23)


def line(
    usd: str,
    *,
    kind: str = "instance",
    gpu_hours: str = "8",
    used: str | None = None,
    project: str | None = "p1",
    workload: str | None = "w1",
    commitment: str | None = None,
    provider: str = "aws",
    region: str = "us-east-1",
    capacity: str = "on-demand",
    gpu: str = "H100",
    ondemand: str | None = None,
    price: str = "1",
) -> CostLine:
    return CostLine(
        kind=kind,
        org_id="org_1",
        project_id=project,
        workload_id=workload,
        instance_id=None,
        commitment_id=commitment,
        provider=provider,
        region=region,
        capacity_type=capacity,
        accelerator=gpu,
        instance_type=None,
        gpu_hours=Decimal(gpu_hours),
        used_gpu_hours=Decimal(used if used is not None else gpu_hours),
        usd=Decimal(usd),
        ondemand_usd=Decimal(ondemand) if ondemand is not None else None,
        price_per_gpu_hour=Decimal(price),
    )


def inputs(
    lines: list[CostLine], history: dict[date, list[CostLine]] | None = None, **kw: object
) -> ReportInputs:
    values: dict[str, object] = {
        "org_id": "org_1",
        "org_name": "Acme",
        "day": DAY,
        "timezone": "UTC",
        "lines": lines,
        "history": history or {},
        "utilization": None,
        "utilization_by_project": {},
        "project_names": {"p1": "training", "p2": "inference"},
        "workload_names": {},
        "commitment_names": {},
        "anomaly_pct": Decimal(25),
        "top_workloads": 10,
    }
    values.update(kw)
    return ReportInputs(**values)  # type: ignore[arg-type]


def test_the_day_is_the_local_calendar_day_across_dst_changes() -> None:
    start, end = day_window(date(2026, 3, 29), "Europe/Berlin")  # clocks go forward: 23 hours
    assert (start, end) == (datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC))
    start, end = day_window(date(2026, 10, 25), "Europe/Berlin")  # clocks go back: 25 hours
    assert end - start == timedelta(hours=25)
    start, end = day_window(date(2026, 11, 2), "America/New_York")
    assert (start, end) == (datetime(2026, 11, 2, 5, tzinfo=UTC), datetime(2026, 11, 3, 5, tzinfo=UTC))
    report = build_report(inputs([], timezone="Europe/Berlin", day=date(2026, 10, 25)))
    assert to_json(report)["window"]["hours"] == "25"


def test_amounts_are_summed_exactly_then_rounded_once() -> None:
    # Three thirds of a cent-and-a-bit: each rounds to $0.33, their exact sum is $1.00.
    third = str(Decimal(1) / 3)
    report = build_report(inputs([line(third, workload=f"w{i}") for i in range(3)]))
    assert report.totals.spend_usd == Decimal("1.00")
    assert [w.usd for w in report.top_workloads] == [Decimal("0.33")] * 3


def test_an_empty_day_has_zeros_and_no_anomalies() -> None:
    report = build_report(inputs([]))
    data = to_json(report)
    assert data["totals"]["spend_usd"] == "0.00"
    assert data["comparison"]["change_vs_previous_day_pct"] is None
    assert data["anomalies"] == [] and data["breakdowns"]["project"] == []
    html = render_html(report, datetime(2026, 11, 24, 1, tzinfo=UTC))
    assert "Nothing was spent." in html and "No workload ran on this day." in html


def test_anomaly_threshold_is_strictly_more_than_the_setting() -> None:
    before = {DAY - timedelta(days=1): [line("100")]}
    at_threshold = build_report(inputs([line("125")], before))
    assert at_threshold.anomalies == ()  # exactly +25% is not "more than 25%"
    above = build_report(inputs([line("125.01")], before))
    assert above.anomalies[0].dimension == "total"
    assert above.anomalies[0].change_pct == Decimal("25.0")  # shown rounded; the test is on exact values


def test_a_group_that_stopped_spending_is_listed_and_is_no_anomaly() -> None:
    before = {DAY - timedelta(days=1): [line("50", project="p2"), line("10")]}
    report = build_report(inputs([line("10")], before))
    projects = {r.label: (r.usd, r.change_pct) for r in report.breakdown("project").rows}
    assert projects == {
        "inference": (Decimal("0.00"), Decimal("-100.0")),
        "training": (Decimal("10.00"), Decimal("0.0")),
    }
    assert report.anomalies == ()


def test_seven_day_average_counts_missing_days_as_zero() -> None:
    history = {DAY - timedelta(days=n): [line("70")] for n in (1, 2)}
    report = build_report(inputs([line("20")], history))
    assert report.comparison.seven_day_avg_usd == Decimal("20.00")  # 140 / 7
    assert report.comparison.change_vs_seven_day_avg_pct == Decimal("0.0")
    assert [d.usd for d in report.daily_spend] == [Decimal(0)] * 5 + [Decimal("70.00")] * 2 + [
        Decimal("20.00")
    ]


def test_commitment_without_a_project_is_unassigned_and_its_idle_hours_are_waste() -> None:
    c = line(
        "48",
        kind="commitment",
        gpu_hours="24",
        used="6",
        project=None,
        workload=None,
        commitment="c1",
        price="2",
        ondemand="0",
        capacity="reserved",
    )
    report = build_report(inputs([c]))
    assert report.breakdown("project").rows[0].label == "Unassigned"
    assert report.totals.commitment_waste_usd == Decimal("36.00")  # (24 - 6) x $2
    assert report.totals.commitment_utilization_pct == Decimal("25.0")
    assert report.totals.savings_usd == Decimal("-48.00")  # on-demand 0 for the line, $48 paid
    assert report.totals.gpu_hours == Decimal("0.000")  # committed hours are not hours that ran


def test_user_names_are_escaped_in_html_and_defused_in_csv() -> None:
    evil = "<script>alert(1)</script>"
    report = build_report(
        inputs(
            [line("5", workload="w9")], workload_names={"w9": "=HYPERLINK(evil)"}, project_names={"p1": evil}
        )
    )
    html = render_html(report, datetime(2026, 11, 24, 1, tzinfo=UTC))
    assert "<script>" not in html and "&lt;script&gt;" in html
    rows = list(csv.reader(io.StringIO(render_csv(report))))
    names = [r[5] for r in rows if r[2] == "top workload"]
    assert names == ["'=HYPERLINK(evil)"]


def test_utilization_figures_are_carried_into_the_report() -> None:
    util = UtilizationFigures(Decimal("41.50"), samples=360, gpus=8, idle_sample_fraction=Decimal("0.1250"))
    data = to_json(build_report(inputs([line("1")], utilization=util)))
    assert data["totals"]["avg_gpu_util_pct"] == "41.50"
    assert data["utilization"] == {
        "avg_gpu_util_pct": "41.50",
        "samples": 360,
        "gpus": 8,
        "idle_sample_fraction": "0.1250",
    }
