"""The offline optimum: exact on tiny markets, and never beaten by any policy that meets the deadline."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.deadline import IDLE, Choice, Job, Venue
from broker.simulation.baselines import GreedySpot, OnDemandOnly, UniformProgress, UniformProgressFailover
from broker.simulation.engine import RunResult, Schedule, replay
from broker.simulation.market import Market
from broker.simulation.optimum import optimal_run, optimal_runs, optimal_runs_by_deadline
from tests.simulation.helpers import job, market

TICK_SECONDS = 600


def _brute_force(m: Market, j: Job) -> Decimal | None:
    """The cheapest deadline-meeting schedule by trying every choice sequence."""
    options = [IDLE]
    for v in range(len(m.venues)):
        options += [Choice.spot(v), Choice.on_demand(v)]
    best = None
    for plan in itertools.product(options, repeat=m.ticks_for(j.deadline_hours)):
        result = replay(m, j, Schedule("brute", plan))
        if result.deadline_met and (best is None or result.cost < best):
            best = result.cost
    return best


TINY = [
    # (availability, spot, on-demand, job: work, deadline, overhead minutes, checkpoint GB, transfer s)
    (["10110", "01101"], ["3.6", "1.8"], ["7.2", "9.0"], (24, 50, 2, "10", 0)),
    (["1001", "0110"], ["1.2", "2.4"], ["6.0", "4.8"], (18, 40, 12, "5", 120)),
    (["11011"], ["3.6"], ["7.2"], (30, 45, 12, "0", 0)),
    (["00100", "10001"], ["2.4", "3.0"], ["7.2", "7.2"], (20, 50, 5, "100", 60)),
    (["1110"], ["3.6"], ["7.2"], (25, 40, 0, "0", 0)),
]


@pytest.mark.parametrize(("available", "spot", "on_demand", "spec"), TINY)
def test_the_optimum_matches_exhaustive_search(
    available: list[str], spot: list[str], on_demand: list[str], spec: tuple[int, int, int, str, int]
) -> None:
    work, deadline, overhead, checkpoint, transfer = spec
    m = market(available, spot=spot, on_demand=on_demand, egress="0.07", transfer_seconds=transfer)
    j = job(work, deadline, overhead, checkpoint_gb=checkpoint)
    run = optimal_run(m, j)
    expected = _brute_force(m, j)
    assert expected is not None and run.result is not None
    assert run.result.cost == expected
    assert run.result.deadline_met
    assert run.search_cost == pytest.approx(float(expected), abs=1e-9)


def test_an_impossible_job_has_no_optimal_schedule() -> None:
    # 35 min of work + 12 min overhead cannot fit 40 minutes, even on-demand.
    run = optimal_run(market(["1111"]), job(35, 40, 12))
    assert run.plan is None and run.result is None


def test_deadlines_searched_together_match_deadlines_searched_apart() -> None:
    windows = [
        market(["1011011010", "0110110111"], spot=["2.4", "3.0"]),
        market(["1111000011", "0000111100"]),
    ]
    jobs = [job(30, d, 12, checkpoint_gb="20") for d in (60, 75, 100)]
    together = optimal_runs_by_deadline(windows, jobs)
    for j, runs in zip(jobs, together, strict=True):
        apart = optimal_runs(windows, j)
        assert [r.result.cost for r in runs] == [r.result.cost for r in apart]  # type: ignore[union-attr]


def test_overheads_must_be_whole_seconds() -> None:
    with pytest.raises(ValueError, match="whole seconds"):
        optimal_run(market(["11"]), Job(0.1, 0.3, 0.00001))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Market, Job]:
    n = draw(st.integers(1, 3))
    ticks = draw(st.integers(3, 14))
    regions = [f"r{draw(st.integers(0, 1))}" for _ in range(n)]
    venues = tuple(Venue(f"v{i}", "gcp", regions[i], f"{regions[i]}-{i}") for i in range(n))
    rows = [tuple(draw(st.booleans()) for _ in range(n)) for _ in range(ticks)]
    price = st.sampled_from(["1.2", "2.4", "3.0"])
    spot = [tuple(Decimal(draw(price)) for _ in range(n)) for _ in range(ticks)]
    on_demand = tuple(Decimal(draw(st.sampled_from(["6.0", "7.2"]))) for _ in range(n))
    egress = Decimal(draw(st.sampled_from(["0", "0.02", "0.2"])))
    transfer = draw(st.sampled_from([0, 60, 300])) / 3600
    m = Market(
        label="random",
        venues=venues,
        tick_seconds=TICK_SECONDS,
        available=tuple(rows),
        spot_price=tuple(spot),
        on_demand_price=tuple(on_demand for _ in range(ticks)),
        egress_per_gb=tuple(tuple(Decimal(0) if i == k else egress for k in range(n)) for i in range(n)),
        transfer_hours=tuple(tuple(0.0 if i == k else transfer for k in range(n)) for i in range(n)),
    )
    deadline_min = ticks * 10 - draw(st.sampled_from([0, 0, 4]))
    overhead_min = draw(st.sampled_from([0, 2, 5, 12]))
    work_min = draw(st.integers(1, deadline_min - overhead_min))
    return m, job(work_min, deadline_min, overhead_min, checkpoint_gb=draw(st.sampled_from(["0", "50"])))


def _baselines(m: Market, j: Job) -> list[RunResult]:
    runs = [replay(m, j, OnDemandOnly()), replay(m, j, UniformProgressFailover())]
    for v in range(len(m.venues)):
        runs.append(replay(m.only(v), j, GreedySpot()))
        runs.append(replay(m.only(v), j, UniformProgress()))
    return runs


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_no_policy_that_meets_the_deadline_beats_the_optimum(case: tuple[Market, Job]) -> None:
    m, j = case
    run = optimal_run(m, j)
    # Work + one overhead fits the deadline and on-demand is always for sale: always feasible.
    assert run.result is not None and run.result.deadline_met
    assert run.search_cost == pytest.approx(float(run.result.cost), abs=1e-9)
    for other in _baselines(m, j):
        if other.deadline_met:
            assert run.result.cost <= other.cost, other.policy
