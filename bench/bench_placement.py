"""Benchmark: placement decisions per second and a 10,000-workload batch on a 10,000-offer catalog (no I/O).

Run:  .venv/bin/python bench/bench_placement.py [--offers 10000] [--decisions 50000] [--batch 10000]
      [--explains 200] [--seed 7] [--cpu N]

The catalog is synthetic but realistic: every row of the bundled price snapshot
(``pricing.bundled.bundled_snapshot()``), then copies of them in synthetic zones with prices
moved by up to ±15 % (fixed seed) until there are ``--offers`` offers; availability signals,
known capacity (0-8 instances, some unknown), observed spot preemption rates, commitments,
quotas and project budgets are drawn with the same seed. Workloads follow the catalog's own
mix of GPU types and sizes, with deadlines, price limits, cloud allow-lists and capacity
preferences on a share of them. ``--cpu N`` pins the process to one core first.

Measures, all on one core (CPython runs the decision in one thread): the snapshot build
(index), single decisions per second on the fast path (``place``) and on the explaining path
(``explain``, every offer and commitment judged and explained), and the wall time of one
``place_batch`` of ``--batch`` workloads against limited capacity. Rates are per CPU-second
of this process (what one core does; a busy machine inflates wall time, shown beside them).
The last row times ``sum(range(1000))`` so figures can be scaled between machines. Prints a
Markdown table; no thresholds, numbers only.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from broker.core.placement import PlacementSnapshot, explain, place, place_batch
from broker.core.types import Availability, CapacityType, Offer
from broker.core.workload import (
    Budget,
    CapacityPreference,
    Commitment,
    GangScope,
    PreemptionRate,
    Quota,
    Workload,
)
from pricing.bundled import bundled_snapshot

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
PROJECTS = ("research", "prod", "batch", "eval", "interns")
T = TypeVar("T")


def catalog(size: int, rng: random.Random) -> list[Offer]:
    """The bundled offers, then jittered copies in synthetic zones until ``size`` offers."""
    base = bundled_snapshot().offers
    offers: list[Offer] = []
    copy = 0
    while len(offers) < size:
        for offer in base:
            if len(offers) >= size:
                break
            if copy == 0:
                offers.append(offer)
                continue
            factor = Decimal(rng.randint(85, 115)) / 100
            offers.append(
                replace(
                    offer,
                    zone=f"{offer.zone or offer.region}-synth{copy}",
                    price_per_hour=(offer.price_per_hour * factor).quantize(Decimal("0.0001")),
                    observed_at=NOW - timedelta(minutes=rng.randint(0, 600)),
                    availability=rng.choice(
                        (Availability.AVAILABLE, Availability.AVAILABLE, Availability.LIMITED,
                         Availability.UNKNOWN, Availability.UNAVAILABLE)
                    ),
                )
            )
        copy += 1
    return offers


def snapshot(offers: list[Offer], rng: random.Random) -> PlacementSnapshot:
    available = {o.key: rng.choice((None, 0, 1, 2, 4, 8)) for o in offers}
    rates = {
        (o.cloud, o.region, o.instance_type): Decimal(rng.choice(("0.005", "0.02", "0.05", "0.1", "0.3")))
        for o in offers
        if o.capacity_type is CapacityType.SPOT and rng.random() < 0.5
    }
    hyperscalers = {"aws", "gcp", "azure"}
    places = sorted({(o.cloud, o.region, o.accelerator) for o in offers if o.cloud in hyperscalers})
    commitments = [
        Commitment(
            commitment_id=f"commit-{i}",
            cloud=cloud,
            region=region,
            accelerator=accelerator,
            gpu_count=rng.choice((8, 16, 32, 64)),
            starts_at=NOW - timedelta(days=30),
            ends_at=NOW + timedelta(days=rng.choice((1, 30, 300))),
            price_per_gpu_hour=Decimal("2.10"),
        )
        for i, (cloud, region, accelerator) in enumerate(rng.sample(places, 12))
    ]
    quotas = [Quota(cloud, max_gpus=rng.choice((512, 2048, 8192))) for cloud in ("aws", "gcp", "azure")]
    budgets = [
        Budget(p, max_gpus=rng.choice((4096, 16384, None)), max_usd_per_month=Decimal(5_000_000))
        for p in PROJECTS
    ]
    return PlacementSnapshot(
        now=NOW,
        offers=tuple(offers),
        available=available,
        commitments=tuple(commitments),
        quotas=tuple(quotas),
        budgets=tuple(budgets),
        preemption_rates=tuple(PreemptionRate(c, r, t, rate) for (c, r, t), rate in rates.items()),
        stale_after=timedelta(days=30),
    )


def workloads(count: int, offers: list[Offer], rng: random.Random, prefix: str = "w") -> list[Workload]:
    shapes = Counter((o.accelerator, o.accelerator_count) for o in offers)
    population, weights = zip(*shapes.most_common(40), strict=True)
    gpu_names = sorted({gpu for gpu, _ in population})
    result = []
    for i in range(count):
        gpu, per_node = rng.choices(population, weights)[0]
        hours = Decimal(rng.choice((1, 2, 4, 8, 12, 24, 72)))
        preference = rng.choices(
            (
                CapacityPreference.AUTO,
                CapacityPreference.ON_DEMAND,
                CapacityPreference.SPOT,
                CapacityPreference.RESERVED,
            ),
            (60, 20, 15, 5),
        )[0]
        interruptible = preference is CapacityPreference.SPOT or rng.random() < 0.8
        deadline = None
        if rng.random() < 0.3:
            deadline = NOW + timedelta(hours=float(hours) * rng.choice((1.2, 1.5, 2, 3)))
        second = (rng.choice(gpu_names),) if rng.random() < 0.3 else ()
        result.append(
            Workload(
                workload_id=f"{prefix}{i:05d}",
                gpu_types=(gpu, *(g for g in second if g != gpu)),
                gpus_per_node=per_node,
                nodes=rng.choices((1, 2, 4), (80, 15, 5))[0],
                gang=rng.choice((GangScope.NONE, GangScope.ZONE)),
                expected_hours=hours,
                restart_overhead_hours=Decimal(rng.choice(("0.1", "0.25", "0.5"))),
                checkpoint_interval_hours=rng.choice((None, Decimal("0.5"), Decimal(1), Decimal(2))),
                checkpoint_gb=Decimal(rng.choice((0, 50, 500))),
                capacity=preference,
                interruptible=interruptible,
                max_price_per_gpu_hour=rng.choice((None, None, Decimal(3), Decimal(6))),
                deadline=deadline,
                allowed_clouds=rng.choice((frozenset(), frozenset(), frozenset(), frozenset({"aws", "gcp"}))),
                project=rng.choice(PROJECTS),
            )
        )
    return result


def timed(run: Callable[[], T]) -> tuple[T, float, float]:
    """Run once after a collection; return the result, wall seconds and this process's CPU seconds."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def rate(label: str, calls: int, cpu: float, wall: float) -> tuple[str, str, str]:
    return (
        label,
        f"{calls / cpu:,.0f} /s CPU",
        f"{cpu / calls * 1e6:,.1f} µs CPU each; wall {calls / wall:,.0f} /s",
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--offers", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=50_000)
    parser.add_argument("--explains", type=int, default=200)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this core first")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    rng = random.Random(args.seed)
    offers = catalog(args.offers, rng)

    (snap,), build, _ = timed(lambda: (snapshot(offers, rng),))

    mix = workloads(1_000, offers, rng, prefix="single")
    for w in mix[:200]:  # warm up, and hold the two paths to the same answer on this catalog
        assert place(w, snap).placement == explain(w, snap).placement
    placed = 0

    def decide() -> None:
        nonlocal placed
        for i in range(args.decisions):
            placed += place(mix[i % len(mix)], snap).placement is not None

    def explain_some() -> None:
        for i in range(args.explains):
            explain(mix[i % len(mix)], snap)

    _, fast_wall, fast_cpu = timed(decide)
    _, slow_wall, slow_cpu = timed(explain_some)
    batch = workloads(args.batch, offers, rng, prefix="batch")
    runs = [timed(lambda: place_batch(batch, snap)) for _ in range(3)]
    result = runs[0][0]
    batch_wall = statistics.median(r[1] for r in runs)
    batch_cpu = statistics.median(r[2] for r in runs)
    _, calibration, _ = timed(lambda: [sum(range(1000)) for _ in range(10_000)])

    rows = [
        ("catalog", f"{len(offers):,} offers", f"{len(snap.commitments)} commitments"),
        ("snapshot build (index)", f"{build * 1e3:,.0f} ms", "once per round"),
        rate("place (fast path)", args.decisions, fast_cpu, fast_wall),
        ("  placed / waited", f"{placed:,} / {args.decisions - placed:,}", "over the 1,000-workload mix"),
        rate("explain (every offer judged)", args.explains, slow_cpu, slow_wall),
        (
            f"place_batch {args.batch:,} workloads",
            f"{batch_cpu * 1e3:,.0f} ms CPU (median of 3)",
            f"wall {batch_wall * 1e3:,.0f} ms; {len(result.placed):,} placed, {len(result.waiting):,} wait",
        ),
        ("calibration: sum(range(1000))", f"{calibration / 10_000 * 1e6:.1f} µs", "to compare machines"),
    ]
    where = f"Python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} cores visible)"
    print(f"{where}; one core")
    print()
    print("| measure | figure | note |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
