"""Runs scenarios × policies and loads what they need (does I/O: reads traces and the catalog).

``load_scenarios`` reads the trace files (and the bundled price catalog for the cross-cloud
scenario); ``run_scenario`` replays every case with every policy, searching the optimum for
cases that share venues and job together, optionally on a process pool. Results come back as
flat ``RunRecord`` rows (no per-tick history), which is all the metrics and reports need.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

from broker.simulation.engine import RunResult, replay
from broker.simulation.optimum import optimal_runs_by_deadline
from broker.simulation.registry import OPTIMUM, policies_for, registry
from broker.simulation.scenarios import (
    CANT_BE_LATE,
    CBL_FILES,
    CBL_QUICK_STARTS,
    CBL_STARTS,
    CROSS_CLOUD,
    SCENARIO_NAMES,
    SKYNOMAD,
    SKYNOMAD_FILES,
    Case,
    Scenario,
    cant_be_late,
    cheapest_foreign_on_demand,
    cross_cloud_h100,
    skynomad_h100,
)
from broker.simulation.traces import load_series, require_dir


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One policy on one case (and one venue, for single-venue policies).

    ``cost_final_tick_excluded`` is the cost as SkyNomad's multi-region sweeps report it (the
    tick in which the job completes left out); for single-venue runs it equals ``cost``, as in
    SkyNomad's single-region path.
    """

    scenario: str
    case: str
    group: str
    policy: str
    venue: str | None
    cost: Decimal
    cost_final_tick_excluded: Decimal
    egress_cost: Decimal
    deadline_met: bool
    spot_hours: float
    on_demand_hours: float
    migrations: int
    preemptions: int


def load_scenarios(
    names: Iterable[str], traces: Path, *, quick: bool = False, sweep: bool = False
) -> list[Scenario]:
    """Build the named scenarios from the trace folder (``quick``: fewer Can't Be Late starts)."""
    require_dir(traces)
    out = []
    for name in names:
        if name == SKYNOMAD:
            out.append(skynomad_h100([load_series(traces, f) for f in SKYNOMAD_FILES], sweep=sweep))
        elif name == CANT_BE_LATE:
            starts = CBL_QUICK_STARTS if quick else CBL_STARTS
            out.append(cant_be_late([load_series(traces, f) for f in CBL_FILES], starts=starts))
        elif name == CROSS_CLOUD:
            from pricing.bundled import bundled_snapshot

            offer = cheapest_foreign_on_demand(bundled_snapshot().offers)
            out.append(cross_cloud_h100([load_series(traces, f) for f in SKYNOMAD_FILES], offer, sweep=sweep))
        else:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIO_NAMES)}")
    return out


def _record(
    scenario: Scenario, case: Case, policy: str, result: RunResult, venue: str | None, *, multi: bool
) -> RunRecord:
    return RunRecord(
        scenario=scenario.name,
        case=case.key,
        group=case.group,
        policy=policy,
        venue=venue,
        cost=result.cost,
        cost_final_tick_excluded=result.cost - result.final_tick_cost if multi else result.cost,
        egress_cost=result.egress_cost,
        deadline_met=result.deadline_met,
        spot_hours=result.spot_hours,
        on_demand_hours=result.on_demand_hours,
        migrations=result.migrations,
        preemptions=result.preemptions,
    )


def _optimum(scenario: Scenario, cases: Sequence[Case]) -> list[RunResult]:
    """The optimum of each case; windows and deadlines shared by several cases are searched once."""
    windows = list(dict.fromkeys((c.start_tick, c.n_ticks) for c in cases))
    jobs = list(dict.fromkeys(c.job for c in cases))
    markets = [scenario.market(replace(cases[0], start_tick=s, n_ticks=n)) for s, n in windows]
    found = optimal_runs_by_deadline(markets, jobs)
    out = []
    for case in cases:
        run = found[jobs.index(case.job)][windows.index((case.start_tick, case.n_ticks))]
        if run.result is None:
            raise ValueError(f"{scenario.name} {case.key}: no schedule meets the deadline")
        out.append(run.result)
    return out


def run_cases(scenario: Scenario, case_indices: Sequence[int], policies: Sequence[str]) -> list[RunRecord]:
    """Replay the given cases (which must share venues and differ at most in window and deadline)."""
    specs = registry()
    cases = [scenario.cases[i] for i in case_indices]
    markets = [scenario.market(c) for c in cases]
    home = tuple(range(scenario.home_venues))
    records: list[RunRecord] = []
    for name in policies:
        spec = specs[name]
        if spec.factory is None:
            if cases:
                for case, result in zip(cases, _optimum(scenario, cases), strict=True):
                    records.append(_record(scenario, case, name, result, None, multi=True))
            continue
        factory = spec.factory
        for case, market in zip(cases, markets, strict=True):
            mine = market if spec.cross_cloud or len(home) == len(market.venues) else market.subset(home)
            if spec.single_venue:
                for v in range(len(mine.venues)):
                    result = replay(mine.only(v), case.job, factory())
                    records.append(_record(scenario, case, name, result, mine.venues[v].name, multi=False))
            else:
                result = replay(mine, case.job, factory())
                records.append(_record(scenario, case, name, result, None, multi=True))
    return records


def _batches(scenario: Scenario) -> list[list[int]]:
    """Case indices grouped so that each group can be searched for the optimum together."""
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, case in enumerate(scenario.cases):
        job = case.job
        key = (case.series, job.work_hours, job.restart_overhead_hours, job.checkpoint_gb)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


_WORKER: tuple[Scenario, tuple[str, ...]] | None = None


def _init_worker(scenario: Scenario, policies: tuple[str, ...]) -> None:
    global _WORKER
    _WORKER = (scenario, policies)


def _work(indices: list[int]) -> list[RunRecord]:
    assert _WORKER is not None
    scenario, policies = _WORKER
    return run_cases(scenario, indices, policies)


def run_scenario(
    scenario: Scenario, policies: Sequence[str] | None = None, *, processes: int = 1
) -> list[RunRecord]:
    """Every case of ``scenario`` with every policy (default: the scenario's set plus extras)."""
    names = policies_for(scenario.policies, tuple(policies) if policies is not None else None)
    batches = _batches(scenario)
    if processes <= 1 or len(batches) <= 1:
        return [r for batch in batches for r in run_cases(scenario, batch, names)]
    # fork: workers inherit the scenario (its traces) instead of unpickling a copy each.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=_init_worker, initargs=(scenario, names)
    ) as pool:
        return [r for chunk in pool.map(_work, batches) for r in chunk]


__all__ = ["OPTIMUM", "RunRecord", "load_scenarios", "run_cases", "run_scenario"]
