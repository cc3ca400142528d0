"""Benchmark: the per-call overhead of the resilience layer, on the simulated cloud (no network).

Run:  .venv/bin/python bench/bench_resilience.py [--calls 2000]
Prints a Markdown table; record results in docs/benchmarks.md. No thresholds: numbers only.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from providers.resilience import ResiliencePolicy, ResilientProvider
from providers.sim import SimulatedCloud


def timed(call: Callable[[], object], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    cloud = SimulatedCloud()
    wrapped = ResilientProvider(cloud, ResiliencePolicy(rate_per_second=1e9, burst=10**9))
    rows = []
    for name, call in (
        (
            "get_instance (tiny call), bare adapter",
            lambda: cloud.get_instance("bench-none", region="us-central1"),
        ),
        (
            "get_instance (tiny call), through the layer",
            lambda: wrapped.get_instance("bench-none", region="us-central1"),
        ),
        ("list_offers (64 offers), bare adapter", cloud.list_offers),
        ("list_offers (64 offers), through the layer", wrapped.list_offers),
    ):
        timed(call, 50)  # warm
        samples = timed(call, args.calls)
        ordered = sorted(samples)
        rows.append((name, statistics.median(samples), ordered[int(0.99 * len(ordered))]))
    wrapped.close()
    print("| call | p50 (µs) | p99 (µs) |\n|---|---|---|")
    for name, p50, p99 in rows:
        print(f"| {name} | {p50:.0f} | {p99:.0f} |")


if __name__ == "__main__":
    main()
