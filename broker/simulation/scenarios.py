"""The three benchmark scenarios: their traces, jobs, windows and prices (pure: no I/O).

1. ``skynomad-h100`` — SkyNomad's H100 "Global Diverse (6)" setup (andylizf/skynomad-artifact,
   ``scripts_multi/benchmark_components/scenario_config.py`` ``GLOBAL_DIVERSE_SCENARIO`` and
   ``configs/deadline_sensitivity.py``): six GCP zones, deadline 51.83 h (311 ticks of 10 min),
   job = deadline / ratio (published headline: ratio 1.5), restart overhead 0.2 h, 50 GB
   checkpoint, six back-to-back windows. Spot prices are the per-tick a3-highgpu-8g prices in the
   converted traces and on-demand the zone's list price in their metadata (SkyNomad's
   ``TraceEnv`` reads ``price_info.on_demand_price`` with no fallback). Egress follows
   SkyNomad's ``migration_model.get_transfer_cost_usd``: free within a region, otherwise its
   default $0.02/GB (GCP region names match none of its AWS-specific rules); cross-region
   transfer *time* is off, as in its sweeps (``COUNT_CROSS_REGION_MIGRATION_TIME`` False).
2. ``cant-be-late`` — Can't Be Late's single-region setup on the 2-week V100/K80 availability
   traces (8 instance × zone pairs): a 48 h job, job fraction (job / deadline) 0.60 … 0.95,
   changeover 0.2 h, 300 seeded random start times, and the simulator's constant prices
   (on-demand $3.06/h, spot $0.9731/h, for every instance type).
3. ``cross-cloud-h100`` — scenario 1's traces and windows, plus one on-demand-only venue: the
   cheapest 8×H100 on-demand offer of another cloud in the bundled price catalog. Moving the
   checkpoint there or back is priced at the source cloud's internet egress
   (``pricing.egress.egress_per_gb``). Single-cloud baselines keep to the GCP zones; the
   optimum (and any policy registered as cross-cloud) may use the extra venue.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from broker.core.deadline import Job, Venue
from broker.core.types import CapacityType, Offer
from broker.simulation.market import Market, TraceSeries, window
from pricing.egress import egress_per_gb

SKYNOMAD = "skynomad-h100"
CANT_BE_LATE = "cant-be-late"
CROSS_CLOUD = "cross-cloud-h100"
SCENARIO_NAMES = (SKYNOMAD, CANT_BE_LATE, CROSS_CLOUD)

SKYNOMAD_GROUP = "gcp/h100-skynomad-converted"
SKYNOMAD_ZONES = (
    "us-central1-a",
    "us-west1-a",
    "europe-west1-c",
    "europe-west3-c",
    "asia-southeast1-b",
    "asia-south2-b",
)
SKYNOMAD_FILES = tuple(f"{SKYNOMAD_GROUP}/{zone}_h100_full.json" for zone in SKYNOMAD_ZONES)
SKYNOMAD_DEADLINE_HOURS = 51.833333333333336  # 311 ticks; SkyNomad's value to the last bit
# SkyNomad starts window i at env_start_hours = i × deadline and indexes the trace at
# ceil(hours × 3600 / 600); for i = 5 the float product is 1555.0000000000002, so it starts at 1556.
SKYNOMAD_WINDOW_STARTS = (0, 311, 622, 933, 1244, 1556)
SKYNOMAD_RATIO = 1.5
# deadline_sensitivity.csv also has ratio 1.0, where job + one restart cannot fit the deadline.
SKYNOMAD_SWEEP_RATIOS = (1.05, 1.1, 1.15, 1.2, 1.3, 1.5, 2.0, 3.0)
SKYNOMAD_RESTART_HOURS = 0.2
SKYNOMAD_CHECKPOINT_GB = Decimal(50)
SKYNOMAD_CROSS_REGION_PER_GB = Decimal("0.02")

CBL_GROUP = "aws/v100-k80-1node-availability-2022-10-26"
CBL_FILES = tuple(
    f"{CBL_GROUP}/{zone}_{instance}.json"
    for zone in ("us-west-2a", "us-west-2b")
    for instance in ("p3.2xlarge", "p3.16xlarge", "p2.xlarge", "p2.8xlarge")
)
CBL_JOB_HOURS = 48.0
CBL_FRACTIONS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
CBL_RESTART_HOURS = 0.2
CBL_STARTS = 300
CBL_QUICK_STARTS = 30
CBL_SEED = 20240416  # NSDI'24 opening day: any fixed seed, written down
CBL_ON_DEMAND = Decimal("3.06")
CBL_SPOT = Decimal("0.9731")

# Policy sets per scenario ("ours" is added by the registry when it is registered).
SKYNOMAD_POLICIES = ("on_demand", "greedy_spot", "uniform_progress", "up_s", "optimum")
CBL_POLICIES = ("on_demand", "greedy_spot", "uniform_progress", "optimum")


@dataclass(frozen=True, slots=True)
class Case:
    """One replay: ``job`` over ``n_ticks`` ticks from ``start_tick`` of some of the scenario's series."""

    key: str
    group: str
    job: Job
    series: tuple[int, ...]
    start_tick: int
    n_ticks: int


@dataclass(frozen=True)
class Scenario:
    """A named set of cases over shared trace series, with the prices and egress to replay them."""

    name: str
    title: str
    series: tuple[TraceSeries, ...]
    cases: tuple[Case, ...]
    policies: tuple[str, ...]
    on_demand: Callable[[TraceSeries], Decimal | None]
    egress: Callable[[Venue, Venue], Decimal]
    constant_spot: Decimal | None = None
    extra_on_demand: tuple[tuple[Venue, Decimal], ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def market(self, case: Case) -> Market:
        chosen = [self.series[i] for i in case.series]
        venues = [s.venue for s in chosen] + [v for v, _ in self.extra_on_demand]
        return window(
            f"{self.name} {case.key}",
            chosen,
            start_tick=case.start_tick,
            n_ticks=case.n_ticks,
            on_demand_prices=[self.on_demand(s) for s in chosen],
            egress_per_gb=[[self.egress(a, b) for b in venues] for a in venues],
            constant_spot_prices=None if self.constant_spot is None else [self.constant_spot] * len(chosen),
            extra_on_demand=self.extra_on_demand,
        )

    @property
    def home_venues(self) -> int:
        """How many leading venues of each market belong to the scenario's own cloud."""
        return len(self.cases[0].series) if self.cases else 0


def _metadata_on_demand(series: TraceSeries) -> Decimal | None:
    return series.on_demand_price


def skynomad_egress(a: Venue, b: Venue) -> Decimal:
    """SkyNomad's $/GB between two zones: free in one region, $0.02 otherwise."""
    if (a.cloud, a.region) == (b.cloud, b.region):
        return Decimal(0)
    return SKYNOMAD_CROSS_REGION_PER_GB


def _cross_cloud_egress(a: Venue, b: Venue) -> Decimal:
    if a.cloud == b.cloud:
        return skynomad_egress(a, b)
    return egress_per_gb(a.cloud, a.region, b.cloud, b.region, a.zone, b.zone)


def _skynomad_cases(ratios: Sequence[float], n_series: int) -> tuple[Case, ...]:
    n_ticks = round(SKYNOMAD_DEADLINE_HOURS * 6)
    cases = []
    for ratio in ratios:
        job = Job(
            work_hours=SKYNOMAD_DEADLINE_HOURS / ratio,
            deadline_hours=SKYNOMAD_DEADLINE_HOURS,
            restart_overhead_hours=SKYNOMAD_RESTART_HOURS,
            checkpoint_gb=SKYNOMAD_CHECKPOINT_GB,
        )
        for w, start in enumerate(SKYNOMAD_WINDOW_STARTS):
            key, group = f"ratio {ratio:g} window {w}", f"ratio {ratio:g}"
            cases.append(Case(key, group, job, tuple(range(n_series)), start, n_ticks))
    return tuple(cases)


def skynomad_h100(series: Sequence[TraceSeries], *, sweep: bool = False) -> Scenario:
    """Scenario 1 (``series`` in ``SKYNOMAD_FILES`` order)."""
    _check_files(series, SKYNOMAD_FILES)
    ratios = SKYNOMAD_SWEEP_RATIOS if sweep else (SKYNOMAD_RATIO,)
    return Scenario(
        name=SKYNOMAD,
        title="SkyNomad H100 Global Diverse (6)",
        series=tuple(series),
        cases=_skynomad_cases(ratios, len(series)),
        policies=SKYNOMAD_POLICIES,
        on_demand=_metadata_on_demand,
        egress=skynomad_egress,
    )


def cheapest_foreign_on_demand(offers: Sequence[Offer], *, home_cloud: str = "gcp") -> Offer:
    """The cheapest on-demand 8×H100 instance of any cloud but ``home_cloud``."""
    pool = [
        o
        for o in offers
        if "h100" in o.accelerator.casefold()
        and o.accelerator_count == 8
        and o.capacity_type is CapacityType.ON_DEMAND
        and o.cloud.casefold() != home_cloud.casefold()
    ]
    if not pool:
        raise ValueError(f"the catalog has no on-demand 8×H100 offer outside {home_cloud}")
    return min(pool, key=lambda o: (o.price_per_hour, o.cloud, o.region, o.instance_type))


def cross_cloud_h100(series: Sequence[TraceSeries], offer: Offer, *, sweep: bool = False) -> Scenario:
    """Scenario 3: scenario 1 plus ``offer`` as an on-demand-only venue on another cloud."""
    _check_files(series, SKYNOMAD_FILES)
    if offer.accelerator_count != 8:
        raise ValueError("the fallback offer must be an 8-GPU instance, like a3-highgpu-8g")
    name = f"{offer.cloud}:{offer.region}"
    venue = Venue(name=name, cloud=offer.cloud, region=offer.region, zone=offer.zone)
    ratios = SKYNOMAD_SWEEP_RATIOS if sweep else (SKYNOMAD_RATIO,)
    return Scenario(
        name=CROSS_CLOUD,
        title="Cross-cloud H100 (SkyNomad traces + another cloud's on-demand)",
        series=tuple(series),
        cases=_skynomad_cases(ratios, len(series)),
        policies=SKYNOMAD_POLICIES,
        on_demand=_metadata_on_demand,
        egress=_cross_cloud_egress,
        extra_on_demand=((venue, offer.price_per_hour),),
        notes=(
            f"extra venue: {offer.cloud} {offer.region} {offer.instance_type} on-demand "
            f"${offer.price_per_hour}/h (bundled catalog, {offer.source})",
        ),
    )


def cant_be_late(
    series: Sequence[TraceSeries], *, starts: int = CBL_STARTS, seed: int = CBL_SEED
) -> Scenario:
    """Scenario 2 (``series`` in ``CBL_FILES`` order): every trace × job fraction × start time."""
    _check_files(series, CBL_FILES)
    tick_hours = series[0].gap_seconds / 3600.0
    longest = max(CBL_JOB_HOURS / f for f in CBL_FRACTIONS)
    span = math.ceil(longest / tick_hours - 1e-9)  # ticks the loosest deadline can use
    last_start = min(s.n_ticks for s in series) - span
    if last_start < 0:
        raise ValueError("the Can't Be Late traces are shorter than the loosest deadline")
    rng = random.Random(seed)
    start_ticks = [rng.randrange(0, last_start + 1) for _ in range(starts)]
    cases = []
    for i, s in enumerate(series):
        for fraction in CBL_FRACTIONS:
            job = Job(
                work_hours=CBL_JOB_HOURS,
                deadline_hours=CBL_JOB_HOURS / fraction,
                restart_overhead_hours=CBL_RESTART_HOURS,
            )
            for start in start_ticks:
                cases.append(
                    Case(
                        f"{s.zone} {s.instance_type} fraction {fraction:.2f} start {start}",
                        f"fraction {fraction:.2f}",
                        job,
                        (i,),
                        start,
                        span,
                    )
                )
    return Scenario(
        name=CANT_BE_LATE,
        title="Can't Be Late single region (2-week V100/K80 traces)",
        series=tuple(series),
        cases=tuple(cases),
        policies=CBL_POLICIES,
        on_demand=lambda _s: CBL_ON_DEMAND,
        egress=lambda _a, _b: Decimal(0),
        constant_spot=CBL_SPOT,
        notes=(f"{starts} start times drawn with random.Random({seed}), shared by every trace and fraction",),
    )


def _check_files(series: Sequence[TraceSeries], expected: Sequence[str]) -> None:
    names = tuple(s.name for s in series)
    if names != tuple(expected):
        raise ValueError(f"expected the series {list(expected)}, got {list(names)}")
