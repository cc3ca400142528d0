"""Scenario construction, the runner and the report on synthetic traces (no shared data needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from broker.core.types import CapacityType, Offer
from broker.simulation import report
from broker.simulation.market import TraceSeries, window
from broker.simulation.metrics import compare_published, summarize
from broker.simulation.published import PublishedFigure
from broker.simulation.runner import load_scenarios, run_scenario
from broker.simulation.scenarios import (
    CBL_FILES,
    CBL_FRACTIONS,
    SKYNOMAD_FILES,
    SKYNOMAD_ZONES,
    cant_be_late,
    cheapest_foreign_on_demand,
    cross_cloud_h100,
    skynomad_h100,
)
from broker.simulation.traces import TracesNotFound, load_series

PRICES = ["18.9", "18.9", "16.2", "17.4", "19.2", "69.6"]
SPOT = {z: Decimal(p) for z, p in zip(SKYNOMAD_ZONES, PRICES, strict=True)}
ON_DEMAND = Decimal("82.5")


def write_skynomad_like(root: Path, *, ticks: int = 1900) -> None:
    """Six always-available zones with constant prices, in the shared folder's layout and schema."""
    for zone, path in zip(SKYNOMAD_ZONES, SKYNOMAD_FILES, strict=True):
        doc = {
            "metadata": {
                "gap_seconds": 600,
                "cloud": "gcp",
                "region": zone.rsplit("-", 1)[0],
                "zone": zone,
                "instance_type": "a3-highgpu-8g",
                "spot_price_a3_highgpu_8g_usd_hr": float(SPOT[zone]),
                "on_demand_price_a3_highgpu_8g_usd_hr": float(ON_DEMAND),
            },
            "data": [1] * ticks,
            "prices": [float(SPOT[zone])] * ticks,
        }
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(json.dumps(doc), encoding="utf-8")


def ticks(n: int, price: Decimal) -> Decimal:
    """The cost of ``n`` 10-minute ticks at ``price`` $/h."""
    return Decimal(n * 600) * price / 3600


def close(a: Decimal, b: Decimal) -> bool:
    return abs(a - b) < Decimal("1e-9")


def _series(name: str, zone: str, ticks: int, *, cloud: str = "aws") -> TraceSeries:
    return TraceSeries(name, cloud, zone[:-1], zone, "p3.2xlarge", 600, tuple([True] * ticks))


def test_traces_are_read_exactly_and_a_missing_folder_is_named(tmp_path: Path) -> None:
    write_skynomad_like(tmp_path, ticks=10)
    s = load_series(tmp_path, SKYNOMAD_FILES[2])
    assert s.zone == "europe-west1-c" and s.region == "europe-west1" and s.gap_seconds == 600
    assert s.spot_prices == (Decimal("16.2"),) * 10 and s.on_demand_price == ON_DEMAND
    missing = tmp_path / "nowhere"
    with pytest.raises(TracesNotFound, match=str(missing)):
        load_series(missing, SKYNOMAD_FILES[0])


def test_scenario_one_on_always_available_zones_costs_what_arithmetic_says(tmp_path: Path) -> None:
    write_skynomad_like(tmp_path)
    (scenario,) = load_scenarios(["skynomad-h100"], tmp_path)
    assert [c.start_tick for c in scenario.cases] == [0, 311, 622, 933, 1244, 1556]
    records = run_scenario(scenario, processes=1)
    by_policy = {s.policy: s for s in summarize(records)}
    # Work 34.56 h + 0.2 h restart = 208.5 ticks: 209 ticks billed. The optimum and UP(S) run
    # in the cheapest zone; UP runs each zone on its own; on-demand pays list price.
    assert close(by_policy["optimum"].mean_cost, ticks(209, SPOT["europe-west1-c"]))
    assert close(by_policy["up_s"].mean_cost, ticks(209, SPOT["europe-west1-c"]))
    assert close(by_policy["uniform_progress"].mean_cost, ticks(209, sum(SPOT.values()) / 6))
    assert close(by_policy["on_demand"].mean_cost, ticks(209, ON_DEMAND))
    assert all(s.deadlines_met == s.runs for s in by_policy.values())
    assert by_policy["optimum"].gap_to_optimum == 0
    # SkyNomad's convention leaves the completing tick out of multi-region costs only.
    assert close(by_policy["up_s"].mean_cost_final_tick_excluded, ticks(208, SPOT["europe-west1-c"]))
    up = by_policy["uniform_progress"]
    assert up.mean_cost_final_tick_excluded == up.mean_cost


def test_the_comparison_flags_figures_more_than_five_percent_off(tmp_path: Path) -> None:
    write_skynomad_like(tmp_path)
    records = run_scenario(load_scenarios(["skynomad-h100"], tmp_path)[0], ["optimum"])
    mine = summarize(records)[0]
    close = {(1.5, "optimum"): PublishedFigure("optimum", 1.5, float(mine.mean_cost) * 1.02, 6)}
    far = {(1.5, "optimum"): PublishedFigure("optimum", 1.5, float(mine.mean_cost) * 1.2, 6)}
    (ok,) = compare_published(summarize(records), records, close, scenario="skynomad-h100")
    (off,) = compare_published(summarize(records), records, far, scenario="skynomad-h100")
    assert ok.within_tolerance and not off.within_tolerance
    assert off.delta == pytest.approx(1 / 1.2 - 1)
    assert "NO" in report.comparison_table([off])


def test_cant_be_late_draws_seeded_start_times_that_fit_the_loosest_deadline() -> None:
    series = [_series(name, name.split("/")[-1].split("_")[0], 600) for name in CBL_FILES]
    a = cant_be_late(series, starts=5, seed=7)
    b = cant_be_late(series, starts=5, seed=7)
    assert [c.start_tick for c in a.cases] == [c.start_tick for c in b.cases]
    assert len(a.cases) == len(CBL_FILES) * len(CBL_FRACTIONS) * 5
    assert all(c.n_ticks == 480 and c.start_tick + 480 <= 600 for c in a.cases)  # 48 h / 0.6 = 80 h
    assert {c.job.deadline_hours for c in a.cases} == {48 / f for f in CBL_FRACTIONS}
    m = a.market(a.cases[0])
    assert m.spot_price[0] == (Decimal("0.9731"),) and m.on_demand_price[0] == (Decimal("3.06"),)


def test_scenarios_refuse_the_wrong_trace_files() -> None:
    with pytest.raises(ValueError, match="expected the series"):
        skynomad_h100([_series("x.json", "us-east-1a", 10)])


def _offer(cloud: str, price: str, gpus: int = 8, capacity: CapacityType = CapacityType.ON_DEMAND) -> Offer:
    return Offer(
        cloud=cloud, region="r1", zone=None, instance_type=f"{cloud}-8x", accelerator="H100",
        accelerator_count=gpus, vcpus=None, memory_gib=None, capacity_type=capacity,
        price_per_hour=Decimal(price), currency="USD", source="test",
        observed_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


def test_cross_cloud_adds_the_cheapest_foreign_eight_gpu_on_demand_offer(tmp_path: Path) -> None:
    offers = [
        _offer("gcp", "10"),
        _offer("lambda", "20"),
        _offer("cudo", "15"),
        _offer("vast", "5", gpus=1),
        _offer("aws", "3", capacity=CapacityType.SPOT),
    ]
    chosen = cheapest_foreign_on_demand(offers)
    assert chosen.cloud == "cudo"
    write_skynomad_like(tmp_path, ticks=1900)
    series = [load_series(tmp_path, f) for f in SKYNOMAD_FILES]
    scenario = cross_cloud_h100(series, chosen)
    m = scenario.market(scenario.cases[0])
    assert len(m.venues) == 7 and m.venues[6].cloud == "cudo"
    assert m.spot_price[0][6] is None and not m.available[0][6]
    assert m.on_demand_price[0][6] == Decimal("15")
    assert m.egress_per_gb[0][6] > 0 and m.egress_per_gb[6][0] > 0
    records = run_scenario(scenario, ["up_s", "optimum"], processes=1)
    by_policy = {s.policy: s for s in summarize(records)}
    # $15/h on-demand elsewhere beats $16.2/h spot: only the cross-cloud optimum can take it.
    assert close(by_policy["optimum"].mean_cost, ticks(209, Decimal(15)))
    assert close(by_policy["up_s"].mean_cost, ticks(209, SPOT["europe-west1-c"]))


def test_windows_must_fit_inside_the_traces() -> None:
    s = _series("a.json", "us-east-1a", 10)
    with pytest.raises(ValueError, match="window needs 12"):
        window(
            "w", [s], start_tick=2, n_ticks=10, on_demand_prices=[Decimal(1)],
            egress_per_gb=[[Decimal(0)]], constant_spot_prices=[Decimal(1)],
        )


def test_report_writes_markdown_csv_and_a_png(tmp_path: Path) -> None:
    write_skynomad_like(tmp_path)
    scenarios = load_scenarios(["skynomad-h100"], tmp_path)
    records = run_scenario(scenarios[0], ["on_demand", "optimum"])
    summaries = summarize(records)
    md = report.markdown(scenarios, records, [], [])
    assert "| Optimal (offline DP) | 6 |" in md and "SkyNomad H100" in md
    report.write_csv(tmp_path / "s.csv", summaries)
    header, *rows = (tmp_path / "s.csv").read_text().splitlines()
    assert header.startswith("scenario,group,policy") and len(rows) == 2
    report.write_plot(tmp_path / "p.png", scenarios, summaries, [])
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
