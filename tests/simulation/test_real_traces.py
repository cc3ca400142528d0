"""Scenario 1 on the real shared traces, checked against SkyNomad's published figures.

The traces live outside the repository (``../shared/data/spot-traces``); without them this
module is skipped, with the reason. Everything else in ``tests/simulation`` runs on
hand-made or synthetic traces and never skips.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from broker.simulation.metrics import compare_published, summarize
from broker.simulation.published import load_skynomad
from broker.simulation.runner import load_scenarios, run_scenario

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "spot-traces"

pytestmark = pytest.mark.skipif(
    not (SHARED / "gcp" / "h100-skynomad-converted").is_dir(),
    reason=f"the shared spot traces are not in this checkout ({SHARED}); they are not part of the repo",
)


def test_scenario_one_reproduces_skynomads_published_baselines() -> None:
    (scenario,) = load_scenarios(["skynomad-h100"], SHARED)
    records = run_scenario(scenario, processes=1)
    summaries = summarize(records)
    published = load_skynomad(SHARED)
    rows = {c.policy: c for c in compare_published(summaries, records, published, scenario=scenario.name)}
    assert set(rows) == {"optimum", "uniform_progress", "up_s", "ours"}
    assert all(rows[p].within_tolerance for p in ("optimum", "uniform_progress", "up_s"))
    # Ours is compared with published SkyNomad: a regression guard that it stays cheaper.
    assert rows["ours"].reproduced_convention < Decimal(str(rows["ours"].published))
    # Single-region UP is billed alike by both simulators: all 36 runs match to the cent.
    assert rows["uniform_progress"].matched_runs == rows["uniform_progress"].compared_runs == 36
    # UP(S) matches every window once the completing tick is left out, as SkyNomad reports it.
    assert rows["up_s"].matched_runs == 6
    assert abs(rows["up_s"].delta_convention) < 1e-6
    # Our optimum is exact, SkyNomad's rounds restarts up to whole ticks: never dearer than theirs.
    assert rows["optimum"].delta_convention <= 1e-9
    assert all(r.deadline_met for r in records)
    optimum = {r.case: r.cost for r in records if r.policy == "optimum"}
    for r in records:
        assert optimum[r.case] <= r.cost, (r.policy, r.case, r.venue)
