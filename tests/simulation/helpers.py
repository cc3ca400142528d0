"""Tiny hand-made markets for the simulator tests (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from broker.core.deadline import Choice, Job, Observation, Venue
from broker.simulation.market import Market

TICK = 600  # seconds: 1/6 h, so $3.60/h is $0.60 a tick


def market(
    available: Sequence[str],
    *,
    spot: Sequence[str] | None = None,
    on_demand: Sequence[str] | None = None,
    egress: str = "0.05",
    transfer_seconds: int = 0,
    regions: Sequence[str] | None = None,
) -> Market:
    """One venue per string in ``available`` ("1" = a spot launch succeeds that tick)."""
    n = len(available)
    ticks = len(available[0])
    regions = regions if regions is not None else [f"region{i}" for i in range(n)]
    venues = tuple(Venue(f"v{i}", "gcp", regions[i], f"{regions[i]}-a") for i in range(n))
    spot_prices = tuple(Decimal(p) for p in (spot or ["3.6"] * n))
    od_prices = tuple(Decimal(p) for p in (on_demand or ["7.2"] * n))
    return Market(
        label="test",
        venues=venues,
        tick_seconds=TICK,
        available=tuple(tuple(available[i][t] == "1" for i in range(n)) for t in range(ticks)),
        spot_price=tuple(spot_prices for _ in range(ticks)),
        on_demand_price=tuple(od_prices for _ in range(ticks)),
        egress_per_gb=tuple(
            tuple(Decimal(0) if i == j else Decimal(egress) for j in range(n)) for i in range(n)
        ),
        transfer_hours=tuple(
            tuple(0.0 if i == j else transfer_seconds / 3600 for j in range(n)) for i in range(n)
        ),
    )


def job(work_min: int, deadline_min: int, overhead_min: int = 0, checkpoint_gb: str = "0") -> Job:
    return Job(work_min / 60, deadline_min / 60, overhead_min / 60, Decimal(checkpoint_gb))


class Scripted:
    """A policy that answers from a per-tick list and records what it saw."""

    name = "scripted"

    def __init__(self, plan: Sequence[Choice]) -> None:
        self.plan = list(plan)
        self.seen: list[Observation] = []

    def reset(self, venues: tuple[Venue, ...], job: Job) -> None:
        self.seen = []

    def decide(self, obs: Observation) -> Choice:
        self.seen.append(obs)
        return self.plan[obs.tick] if obs.tick < len(self.plan) else self.plan[-1]


class SpotWhenUp:
    """Spot in venue 0 whenever it is available, idle otherwise (no deadline guard)."""

    name = "spot_when_up"

    def reset(self, venues: tuple[Venue, ...], job: Job) -> None:
        return None

    def decide(self, obs: Observation) -> Choice:
        from broker.core.deadline import IDLE

        return Choice.spot(0) if obs.spot_available[0] else IDLE
