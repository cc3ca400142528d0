"""The broker's deadline policy replayed on random markets: it never misses a deadline it could meet."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.deadline import Job, Venue
from broker.core.slack_policy import SlackPricedPolicy
from broker.simulation.engine import replay
from broker.simulation.market import Market
from broker.simulation.optimum import optimal_run

TICK_SECONDS = 600


@st.composite
def markets(draw: st.DrawFn) -> tuple[Market, Job]:
    n = draw(st.integers(1, 3))
    ticks = draw(st.integers(12, 60))
    venues = tuple(Venue(f"v{i}", "gcp", f"region{i}", f"region{i}-a") for i in range(n))
    spot = tuple(Decimal(draw(st.integers(10, 40))) for _ in range(n))
    on_demand = tuple(Decimal(draw(st.integers(60, 100))) for _ in range(n))
    available = tuple(tuple(draw(st.lists(st.booleans(), min_size=n, max_size=n))) for _ in range(ticks))
    market = Market(
        label="random",
        venues=venues,
        tick_seconds=TICK_SECONDS,
        available=available,
        spot_price=(spot,) * ticks,
        on_demand_price=(on_demand,) * ticks,
        egress_per_gb=tuple(
            tuple(Decimal(0) if i == j else Decimal("0.02") for j in range(n)) for i in range(n)
        ),
        transfer_hours=((0.0,) * n,) * n,
    )
    deadline = ticks * TICK_SECONDS / 3600
    overhead = draw(st.sampled_from([0.0, 0.1, 0.2]))
    # The job fits on on-demand capacity from the start, with the restart overhead.
    work = draw(st.floats(0.5, deadline - overhead - 1 / 6))
    return market, Job(work, deadline, overhead, Decimal(50))


@settings(max_examples=150, deadline=None)
@given(markets())
def test_meets_every_deadline_that_on_demand_could_meet(case: tuple[Market, Job]) -> None:
    market, job = case
    result = replay(market, job, SlackPricedPolicy())
    assert result.deadline_met, result.choices


@settings(max_examples=40, deadline=None)
@given(markets())
def test_never_beats_the_offline_optimum_and_is_deterministic(case: tuple[Market, Job]) -> None:
    market, job = case
    first = replay(market, job, SlackPricedPolicy())
    again = replay(market, job, SlackPricedPolicy())
    assert first.choices == again.choices and first.cost == again.cost
    best = optimal_run(market, job).result
    assert best is not None
    assert best.cost <= first.cost
