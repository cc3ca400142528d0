"""The benchmark suite behind ``gpubroker simulate`` and ``bench/bench_policies.py`` (does I/O).

Loads the scenarios, runs them, compares with the published figures and writes
``policies.md``, ``summary.csv``, ``comparison.csv``, ``runs.csv`` and ``policies.png``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from broker.simulation import report
from broker.simulation.metrics import Comparison, GapRatio, compare_published, gap_ratios, summarize
from broker.simulation.published import load_skynomad
from broker.simulation.runner import RunRecord, load_scenarios, run_scenario
from broker.simulation.scenarios import CANT_BE_LATE, SKYNOMAD, Scenario


@dataclass
class SuiteOutcome:
    scenarios: list[Scenario]
    records: list[RunRecord]
    comparisons: list[Comparison]
    gap_ratios: list[GapRatio]
    markdown: str
    seconds: dict[str, float] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_suite(
    names: Sequence[str],
    traces: Path,
    *,
    out: Path | None = None,
    policies: Sequence[str] | None = None,
    quick: bool = False,
    sweep: bool = False,
    processes: int = 1,
    plot: bool = True,
) -> SuiteOutcome:
    scenarios = load_scenarios(names, traces, quick=quick, sweep=sweep)
    records: list[RunRecord] = []
    seconds: dict[str, float] = {}
    for sc in scenarios:
        started = time.perf_counter()
        records.extend(run_scenario(sc, policies, processes=processes))
        seconds[sc.name] = time.perf_counter() - started
    summaries = summarize(records)
    comparisons = compare_published(summaries, records, load_skynomad(traces), scenario=SKYNOMAD)
    gaps = gap_ratios(summaries, scenario=CANT_BE_LATE)
    md = report.markdown(scenarios, records, comparisons, gaps)
    outcome = SuiteOutcome(scenarios, records, comparisons, gaps, md, seconds)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        files = {
            "policies.md": lambda p: p.write_text(md, encoding="utf-8"),
            "summary.csv": lambda p: report.write_csv(p, summaries + report.overall(records)),
            "comparison.csv": lambda p: report.write_comparison_csv(p, comparisons),
            "runs.csv": lambda p: report.write_runs_csv(p, records),
        }
        for name, write in files.items():
            write(out / name)
            outcome.files.append(out / name)
        if plot and not report.plot_available():
            outcome.notes.append(report.PLOT_MISSING)
        elif plot:
            png = out / "policies.png"
            report.write_plot(png, scenarios, summaries, comparisons)
            outcome.files.append(png)
    return outcome
