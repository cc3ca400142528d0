"""Benchmark: deadline-aware spot policies replayed on real traces, against the optimum (reads/writes files).

Run:  .venv/bin/python bench/bench_policies.py --out bench/out/policies [--quick] [--no-sweep]
      [--traces ../shared/data/spot-traces] [--processes 2] [--scenario skynomad-h100 ...]

Replays scenario 1 (SkyNomad H100 "Global Diverse (6)", with the deadline-ratio sweep unless
``--no-sweep``), scenario 2 (Can't Be Late, 2-week V100/K80 traces, 300 start times; 30 with
``--quick``) and scenario 3 (cross-cloud H100), then writes ``policies.md``, ``summary.csv``,
``comparison.csv``, ``runs.csv`` and ``policies.png`` under ``--out`` and prints the Markdown
tables plus wall-clock seconds per scenario. No thresholds: numbers only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from broker.simulation.scenarios import SCENARIO_NAMES
from broker.simulation.suite import run_suite
from broker.simulation.traces import TracesNotFound, traces_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/policies"))
    parser.add_argument("--traces", type=Path, default=None)
    parser.add_argument("--scenario", action="append", choices=SCENARIO_NAMES)
    parser.add_argument("--quick", action="store_true", help="30 Can't Be Late start times instead of 300")
    parser.add_argument("--no-sweep", action="store_true", help="only ratio 1.5 in scenarios 1 and 3")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    try:
        outcome = run_suite(
            args.scenario or SCENARIO_NAMES,
            traces_dir(args.traces),
            out=args.out,
            quick=args.quick,
            sweep=not args.no_sweep,
            processes=args.processes,
        )
    except TracesNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(outcome.markdown)
    print("| Scenario | Wall-clock (s) |\n|---|---:|")
    for name, seconds in outcome.seconds.items():
        print(f"| {name} | {seconds:.1f} |")
    print(f"| total (incl. loading and writing) | {time.perf_counter() - started:.1f} |")
    for path in outcome.files:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
