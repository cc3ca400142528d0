"""The offline optimum: the cheapest schedule that meets the deadline, by dynamic programming (pure).

Like SkyNomad's ``multi_region_oracle_dp`` (``sky_spot/strategies/multi_region_oracle_dp.py``)
it searches over ticks × modes (idle at a venue, spot or on-demand in a venue, still paying
restart overhead or not) with full knowledge of future availability and prices, charging
restart/migration downtime and checkpoint egress. Unlike it, progress is not rounded to whole
ticks: it is counted exactly, in units of ``u`` = the greatest common divisor (in seconds) of
the tick, the restart overhead and the transfer times, so every schedule the replay engine can
express is in the search space and the result is a true lower bound for every policy that meets
the deadline. The search works on float prices (with ``numpy``); the schedule it finds is then
replayed through ``broker.simulation.engine`` and *that* ``Decimal`` cost is what is reported.

Several windows of the same venues and job are searched together (a leading batch axis), and
jobs that differ only in their deadline share one forward pass (a schedule's cost up to a tick
does not depend on the deadline): that is what makes 300 start times × 8 deadlines affordable.
Progress is only tracked inside a band per tick (at most a full tick's gain per tick so far, at
least what the remaining ticks could still finish), and back-pointers are int8 over that band.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from broker.core.deadline import IDLE, Choice, Job
from broker.core.types import CapacityType
from broker.simulation.engine import RunResult, Schedule, replay
from broker.simulation.market import Market

POLICY_NAME = "optimum"
CAPACITIES = (CapacityType.SPOT, CapacityType.ON_DEMAND)
_SPOT, _OD = 0, 1
INF = math.inf
# Backpointer arrays dominate memory: tick × state × window × progress bytes.
DEFAULT_MEMORY_BUDGET = 192 * 1024 * 1024
MAX_PROGRESS_UNITS = 50_000
MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class OptimalRun:
    """The optimum for one window: the plan, the search's float cost, and the replayed result."""

    plan: tuple[Choice, ...] | None
    search_cost: float
    result: RunResult | None


def _whole_seconds(hours: float, what: str) -> int:
    seconds = hours * 3600.0
    whole = round(seconds)
    if abs(seconds - whole) > 1e-6:
        raise ValueError(f"the optimum needs {what} in whole seconds, got {seconds} s")
    return whole


@dataclass(frozen=True, slots=True)
class _Candidate:
    """One way to reach a running state: from what, with how much overhead in the tick."""

    kind: str  # "cont" | "start" | "same" | "other"
    ref: int  # λ index for "cont", source venue for "other", unused otherwise
    overhead: int  # overhead units paid in this tick (decides the progress it gains)


class _Layout:
    """Units and the finite set of overhead-left values a running state can carry."""

    def __init__(self, market: Market, job: Job) -> None:
        gap_s = market.tick_seconds
        overhead_s = _whole_seconds(job.restart_overhead_hours, "the restart overhead")
        n = len(market.venues)
        transfer_s = [
            [_whole_seconds(market.transfer_hours[i][j], "transfer times") for j in range(n)]
            for i in range(n)
        ]
        unit = math.gcd(gap_s, overhead_s, *(x for row in transfer_s for x in row))
        self.unit = unit
        self.gap = gap_s // unit
        self.overhead = overhead_s // unit
        self.transfer = [[x // unit for x in row] for row in transfer_s]
        self.work = job.work_hours * 3600.0 / unit
        self.need = math.ceil(self.work - 1e-6)
        if self.need > MAX_PROGRESS_UNITS:
            raise ValueError(
                f"the optimum would track {self.need} progress units of {unit} s; give the restart "
                "overhead and transfer times in coarser whole seconds"
            )
        launches = {self.overhead} | {self.overhead + x for row in self.transfer for x in row}
        lams = {0}
        for launch in launches:
            left = launch - self.gap
            while left > 0:
                lams.add(left)
                left -= self.gap
        self.lams = sorted(lams)
        self.lam_index = {lam: i for i, lam in enumerate(self.lams)}

    def gain(self, overhead: int) -> int:
        return max(0, self.gap - overhead)

    def after(self, overhead: int) -> int:
        return self.lam_index[max(0, overhead - self.gap)]


def _candidates(layout: _Layout, n_venues: int) -> dict[tuple[int, int], list[_Candidate]]:
    """For each running state (venue, λ') the candidate sources, in a fixed order."""
    out: dict[tuple[int, int], list[_Candidate]] = {}
    for w in range(n_venues):
        for li in range(len(layout.lams)):
            out[(w, li)] = []
        for li, lam in enumerate(layout.lams):
            out[(w, layout.after(lam))].append(_Candidate("cont", li, lam))
        out[(w, layout.after(layout.overhead))].append(_Candidate("start", 0, layout.overhead))
        out[(w, layout.after(layout.overhead))].append(_Candidate("same", 0, layout.overhead))
        for v in range(n_venues):
            if v != w:
                launch = layout.overhead + layout.transfer[v][w]
                out[(w, layout.after(launch))].append(_Candidate("other", v, launch))
    return out


def _check_batch(markets: Sequence[Market]) -> None:
    first = markets[0]
    for m in markets[1:]:
        if (m.venues, m.tick_seconds, m.egress_per_gb, m.transfer_hours) != (
            first.venues,
            first.tick_seconds,
            first.egress_per_gb,
            first.transfer_hours,
        ):
            raise ValueError("windows searched together must share venues, tick, egress and transfer times")


def _price_tensor(markets: Sequence[Market], n_ticks: int) -> np.ndarray:
    """(tick, window, capacity, venue) float prices; inf where not sold or spot is unavailable."""
    n_venues = len(markets[0].venues)
    prices = np.full((n_ticks, len(markets), 2, n_venues), INF)
    for b, m in enumerate(markets):
        for t in range(n_ticks):
            for v in range(n_venues):
                spot = m.spot_price[t][v]
                if spot is not None and m.available[t][v]:
                    prices[t, b, _SPOT, v] = float(spot)
                od = m.on_demand_price[t][v]
                if od is not None:
                    prices[t, b, _OD, v] = float(od)
    return prices * (markets[0].tick_seconds / 3600.0)


def optimal_runs(markets: Sequence[Market], job: Job) -> list[OptimalRun]:
    """The optimum for each window (searched in batches that fit the memory budget)."""
    return optimal_runs_by_deadline(markets, [job])[0]


def optimal_run(market: Market, job: Job) -> OptimalRun:
    return optimal_runs([market], job)[0]


def optimal_runs_by_deadline(markets: Sequence[Market], jobs: Sequence[Job]) -> list[list[OptimalRun]]:
    """The optimum of every job on every window, ``[job][window]``.

    The jobs may differ in their deadline only: one forward pass over the loosest deadline
    serves them all, since a schedule's cost up to a tick does not depend on the deadline.
    """
    if not markets or not jobs:
        return [[] for _ in jobs]
    _check_batch(markets)
    base = jobs[0]
    for job in jobs[1:]:
        if (job.work_hours, job.restart_overhead_hours, job.checkpoint_gb) != (
            base.work_hours,
            base.restart_overhead_hours,
            base.checkpoint_gb,
        ):
            raise ValueError("jobs searched together may differ in their deadline only")
    layout = _Layout(markets[0], base)
    n_ticks = max(markets[0].ticks_for(job.deadline_hours) for job in jobs)
    n_venues = len(markets[0].venues)
    per_window = sum(
        n_venues * (3 * (s_hi - s_lo) + 2 * len(layout.lams) * max(0, hi - lo))
        for s_lo, s_hi, lo, hi in _bands(layout, n_ticks)
    )
    batch = max(1, min(MAX_BATCH, DEFAULT_MEMORY_BUDGET // max(1, per_window)))
    out: list[list[OptimalRun]] = [[] for _ in jobs]
    for i in range(0, len(markets), batch):
        chunk = markets[i : i + batch]
        found = _search(chunk, jobs, layout, n_ticks)
        for j, job in enumerate(jobs):
            for market, (plan, cost) in zip(chunk, found[j], strict=True):
                result = None if plan is None else replay(market, job, Schedule(POLICY_NAME, plan))
                out[j].append(OptimalRun(plan, cost, result))
    return out


def _bands(layout: _Layout, n_ticks: int) -> list[tuple[int, int, int, int]]:
    """Per tick: the progress range of the states it starts from, and of the states it produces.

    Progress at the end of tick ``t`` is at most a full tick's gain per tick so far, and at least
    what the ticks left could still finish; states outside the band are never worth keeping.
    """
    need, gap = layout.need, layout.gap
    out = []
    src_lo, src_hi = 0, 1
    for t in range(n_ticks):
        lo = max(0, need - (n_ticks - 1 - t) * gap, src_lo)
        hi = min(need, (t + 1) * gap + 1, src_hi + gap)
        hi = max(lo, hi)
        out.append((src_lo, src_hi, lo, hi))
        src_lo, src_hi = lo, hi
    return out


def _running_min(
    values: np.ndarray | None, arg: np.ndarray | None, candidate: np.ndarray, index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fold one more candidate into an element-wise (min, argmin); ties keep the earlier one."""
    if values is None or arg is None:
        return np.array(candidate, copy=True), np.zeros(candidate.shape, dtype=np.int8)
    better = np.less(candidate, values)
    np.copyto(values, candidate, where=better)
    np.copyto(arg, index, where=better)
    return values, arg


def _shifted(src: np.ndarray, gain: int, lo: int, hi: int) -> np.ndarray:
    """``src[:, k - gain]`` for ``k`` in ``[lo, hi)`` (inf where ``k - gain < 0``)."""
    a, b = lo - gain, hi - gain
    if a >= 0:
        return src[:, a:b]
    out = np.full((src.shape[0], hi - lo), INF)
    if b > 0:
        out[:, -a:] = src[:, :b]
    return out


def _cheapest_finish(
    src: np.ndarray, price: np.ndarray, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per window: the cheapest way to finish from progress ``[lo, hi)`` this tick, and its progress."""
    if lo >= hi:
        return None
    tail = src[:, lo:hi] + price
    at = np.argmin(tail, axis=1)
    return tail[np.arange(tail.shape[0]), at], lo + at


def _search(
    markets: Sequence[Market], jobs: Sequence[Job], layout: _Layout, n_ticks: int
) -> list[list[tuple[tuple[Choice, ...] | None, float]]]:
    # Floats here are a search heuristic's currency only: the plan is re-costed in Decimal.
    first = markets[0]
    n_batch, n_venues, n_lam, need = len(markets), len(first.venues), len(layout.lams), layout.need
    for m in markets:
        if m.n_ticks < n_ticks:
            raise ValueError(f"{m.label}: the deadline needs {n_ticks} ticks, the window has {m.n_ticks}")
    n_jobs = len(jobs)
    # Per job: ticks that end by its deadline, and the part of the next tick before it.
    full_ticks = [math.floor(job.deadline_hours / first.tick_hours + 1e-9) for job in jobs]
    slack_units = [
        (job.deadline_hours * 3600.0 - full * first.tick_seconds) / layout.unit
        for job, full in zip(jobs, full_ticks, strict=True)
    ]
    prices = _price_tensor(markets, n_ticks)
    egress = [
        [float(jobs[0].checkpoint_gb * first.egress_per_gb[v][w]) for w in range(n_venues)]
        for v in range(n_venues)
    ]
    candidates = _candidates(layout, n_venues)

    idle = np.full((n_venues, n_batch, need), INF)
    run = np.full((2, n_venues, n_lam, n_batch, need), INF)
    start = np.full((n_batch, need), INF)
    start[:, 0] = 0.0
    bands = _bands(layout, n_ticks)
    # Backpointers are kept for each tick's band only (offset by the band's low end).
    bp_idle: list[np.ndarray] = []
    bp_same: list[np.ndarray] = []
    bp_run: list[np.ndarray] = []
    best = np.full((n_jobs, n_batch), INF)
    fin = np.zeros((6, n_jobs, n_batch), dtype=np.int64)  # tick, capacity, venue, λ, candidate, k
    fin[0] = -1

    def record(j: int, where: tuple[int, ...], found: tuple[np.ndarray, np.ndarray] | None) -> None:
        if found is None:
            return
        val, k = found
        better = val < best[j]
        if np.any(better):
            best[j] = np.where(better, val, best[j])
            fin[:5, j, better] = np.array(where)[:, None]
            fin[5, j, better] = k[better]

    for t in range(n_ticks):
        # Jobs whose deadline is after this tick's end, and those whose deadline falls inside it.
        whole = [j for j in range(n_jobs) if t < full_ticks[j]]
        partial = [j for j in range(n_jobs) if t == full_ticks[j] and slack_units[j] > 1e-9]
        src_lo, src_hi, lo, hi = bands[t]
        tick_idle = np.zeros((n_venues, n_batch, src_hi - src_lo), dtype=np.int8)
        tick_same = np.zeros((2, n_venues, n_batch, src_hi - src_lo), dtype=np.int8)
        tick_run = np.zeros((2, n_venues, n_lam, n_batch, hi - lo), dtype=np.int8)
        bp_idle.append(tick_idle)
        bp_same.append(tick_same)
        bp_run.append(tick_run)
        anchor_all = np.full((n_venues, n_batch, need), INF)
        anchor_same = np.full((2, n_venues, n_batch, need), INF)
        for v in range(n_venues):
            members = [idle[v]] + [run[c, v, j] for c in range(2) for j in range(n_lam)]
            vals = arg = None
            for i, member in enumerate(members):
                vals, arg = _running_min(vals, arg, member[:, src_lo:src_hi], i)
            anchor_all[v, :, src_lo:src_hi] = vals
            tick_idle[v] = arg
            for c in range(2):
                vals = arg = None
                for i, member in enumerate([idle[v]] + [run[1 - c, v, j] for j in range(n_lam)]):
                    vals, arg = _running_min(vals, arg, member[:, src_lo:src_hi], i)
                anchor_same[c, v, :, src_lo:src_hi] = vals
                tick_same[c, v] = arg
        new_run = np.full(run.shape, INF)
        for c in range(2):
            for w in range(n_venues):
                price = prices[t, :, c, w][:, None]
                if np.all(np.isinf(price)):
                    continue
                for li in range(n_lam):
                    vals = arg = None
                    for ci, cand in enumerate(candidates[(w, li)]):
                        if cand.kind == "cont":
                            src = run[c, w, cand.ref]
                        elif cand.kind == "start":
                            src = start
                        elif cand.kind == "same":
                            src = anchor_same[c, w]
                        else:
                            src = anchor_all[cand.ref] + egress[cand.ref][w]
                        gain = layout.gain(cand.overhead)
                        where = (t, c, w, li, ci)
                        if gain > 0 and whole:
                            found = _cheapest_finish(src, price, max(need - gain, src_lo), min(need, src_hi))
                            for j in whole:
                                record(j, where, found)
                        for j in partial:
                            first_ok = math.ceil(layout.work - slack_units[j] + cand.overhead - 1e-9)
                            found = _cheapest_finish(src, price, max(first_ok, src_lo, 0), min(need, src_hi))
                            record(j, where, found)
                        if lo < hi:
                            vals, arg = _running_min(vals, arg, _shifted(src, gain, lo, hi), ci)
                    if vals is not None and arg is not None:
                        tick_run[c, w, li] = arg
                        new_run[c, w, li, :, lo:hi] = vals + price
        idle = anchor_all
        if lo < hi:
            # Idle states outside this tick's band cannot finish any more.
            idle[:, :, :lo] = INF
            idle[:, :, hi:] = INF
        run = new_run

    def plan(j: int, b: int) -> tuple[tuple[Choice, ...] | None, float]:
        if fin[0, j, b] < 0:
            return None, INF
        found = _backtrack(b, layout, candidates, bands, bp_idle, bp_same, bp_run, fin[:, j, b])
        return found, float(best[j, b])

    return [[plan(j, b) for b in range(n_batch)] for j in range(n_jobs)]


def _backtrack(
    b: int,
    layout: _Layout,
    candidates: dict[tuple[int, int], list[_Candidate]],
    bands: list[tuple[int, int, int, int]],
    bp_idle: list[np.ndarray],
    bp_same: list[np.ndarray],
    bp_run: list[np.ndarray],
    fin: np.ndarray,
) -> tuple[Choice, ...]:
    n_lam = len(layout.lams)
    t, c, w, li, ci, k = (int(x) for x in fin)  # k: progress before the finishing tick t
    plan: list[Choice] = [IDLE] * (t + 1)
    cand = candidates[(w, li)][ci]
    # (state kind, venue, capacity, λ index) at the end of tick t-1, progress k.
    while True:
        plan[t] = Choice(w, CAPACITIES[c])
        if cand.kind == "start":
            return tuple(plan)
        if cand.kind == "cont":
            state = ("run", w, c, cand.ref)
        elif cand.kind == "same":
            member = int(bp_same[t][c, w, b, k - bands[t][0]])
            state = ("idle", w, 0, 0) if member == 0 else ("run", w, 1 - c, member - 1)
        else:
            v = cand.ref
            member = int(bp_idle[t][v, b, k - bands[t][0]])
            state = ("idle", v, 0, 0) if member == 0 else ("run", v, *divmod(member - 1, n_lam))
        t -= 1
        # Walk back through idle ticks until a running state is reached.
        while state[0] == "idle":
            if t < 0:
                return tuple(plan)
            member = int(bp_idle[t][state[1], b, k - bands[t][0]])
            plan[t] = IDLE
            if member == 0:
                t -= 1
                continue
            state = ("run", state[1], *divmod(member - 1, n_lam))
            # The idle state at the end of tick t came from this running state at the end of t-1.
            t -= 1
        _, w, c, li = state
        if t < 0:
            raise AssertionError("backtracking reached a running state before tick 0")
        cand = candidates[(w, li)][int(bp_run[t][c, w, li, b, k - bands[t][2]])]
        k -= layout.gain(cand.overhead)
