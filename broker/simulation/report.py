"""Renders simulation results as Markdown and CSV and plots them to PNG (writes files).

``matplotlib`` is imported only by ``write_plot`` (Agg backend), so tables work without it.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

from broker.simulation.metrics import Comparison, GapRatio, PolicySummary, summarize
from broker.simulation.runner import RunRecord
from broker.simulation.scenarios import Scenario

ALL_GROUPS = "all"


def _money(value: Decimal | float) -> str:
    return f"{float(value):,.2f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f}%"


def overall(records: Sequence[RunRecord]) -> list[PolicySummary]:
    """Summaries over every case of each scenario (groups merged)."""
    return summarize(replace(r, group=ALL_GROUPS) for r in records)


def summary_table(summaries: Sequence[PolicySummary]) -> str:
    lines = [
        "| Policy | Runs | Mean cost ($) | Deadlines met | Spot h | On-demand h | Migrations "
        "| Gap to optimum |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.label} | {s.runs} | {_money(s.mean_cost)} | {s.deadlines_met}/{s.runs} "
            f"| {s.mean_spot_hours:.2f} | {s.mean_on_demand_hours:.2f} | {s.mean_migrations:.2f} "
            f"| {_pct(s.gap_to_optimum)} |"
        )
    return "\n".join(lines)


def group_pivot(summaries: Sequence[PolicySummary], scenario: str) -> str:
    """Mean cost (gap to optimum) per group × policy."""
    rows = [s for s in summaries if s.scenario == scenario]
    groups = list(dict.fromkeys(s.group for s in rows))
    policies = list(dict.fromkeys(s.policy for s in rows))
    labels = {s.policy: s.label for s in rows}
    cell = {(s.group, s.policy): s for s in rows}
    lines = ["| Group | " + " | ".join(labels[p] for p in policies) + " |", "|---|" + "---:|" * len(policies)]
    for g in groups:
        cells = []
        for p in policies:
            s = cell.get((g, p))
            cells.append("" if s is None else f"{_money(s.mean_cost)} ({_pct(s.gap_to_optimum)})")
        lines.append(f"| {g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(rows: Sequence[Comparison]) -> str:
    lines = [
        "| Group | Policy | Published ($) | Reproduced ($) | Δ | Reproduced, SkyNomad's billing ($) | Δ "
        "| Runs matched | Within 5%? |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for c in rows:
        matched = f"{c.matched_runs}/{c.compared_runs}" if c.compared_runs else "—"
        lines.append(
            f"| {c.group} | {c.label} | {_money(c.published)} | {_money(c.reproduced)} | {_pct(c.delta)} "
            f"| {_money(c.reproduced_convention)} | {_pct(c.delta_convention)} | {matched} "
            f"| {'yes' if c.within_tolerance else 'NO'} |"
        )
    return "\n".join(lines)


def gap_ratio_table(rows: Sequence[GapRatio]) -> str:
    lines = ["| Group | Greedy gap | UP gap | Greedy gap / UP gap |", "|---|---:|---:|---:|"]
    for g in rows:
        lines.append(f"| {g.group} | {_pct(g.greedy_gap)} | {_pct(g.up_gap)} | {g.ratio:.2f}× |")
    return "\n".join(lines)


def markdown(
    scenarios: Sequence[Scenario],
    records: Sequence[RunRecord],
    comparisons: Sequence[Comparison],
    gap_rows: Sequence[GapRatio],
) -> str:
    by_group = summarize(records)
    totals = overall(records)
    parts = ["# Deadline-aware spot policies: trace replay"]
    for sc in scenarios:
        parts.append(f"## {sc.title} (`{sc.name}`)")
        parts.extend(f"_{n}_" for n in sc.notes)
        groups = list(dict.fromkeys(s.group for s in by_group if s.scenario == sc.name))
        if len(groups) == 1:
            parts.append(f"**{groups[0]}**, {len([c for c in sc.cases])} cases")
            parts.append(summary_table([s for s in by_group if s.scenario == sc.name]))
        else:
            parts.append(f"**All groups**, {len(sc.cases)} cases")
            parts.append(summary_table([s for s in totals if s.scenario == sc.name]))
            parts.append("Mean cost per group (gap to optimum):")
            parts.append(group_pivot(by_group, sc.name))
        mine = [c for c in comparisons if c.scenario == sc.name]
        if mine:
            parts.append("### Against SkyNomad's published figures")
            parts.append(comparison_table(mine))
        gaps = [g for g in gap_rows if any(s.scenario == sc.name and s.group == g.group for s in by_group)]
        if gaps:
            parts.append("### Can't Be Late's claim: UP closes greedy's gap to the optimum by ~2×")
            parts.append(gap_ratio_table(gaps))
    return "\n\n".join(parts) + "\n"


def write_csv(path: Path, summaries: Sequence[PolicySummary]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "scenario", "group", "policy", "label", "runs", "deadlines_met", "mean_cost_usd",
                "mean_cost_final_tick_excluded_usd", "mean_egress_usd", "mean_spot_hours",
                "mean_on_demand_hours", "mean_migrations", "mean_preemptions", "gap_to_optimum",
            ]
        )
        for s in summaries:
            w.writerow(
                [
                    s.scenario, s.group, s.policy, s.label, s.runs, s.deadlines_met, f"{s.mean_cost:.6f}",
                    f"{s.mean_cost_final_tick_excluded:.6f}", f"{s.mean_egress:.6f}",
                    f"{s.mean_spot_hours:.4f}", f"{s.mean_on_demand_hours:.4f}", f"{s.mean_migrations:.4f}",
                    f"{s.mean_preemptions:.4f}",
                    "" if s.gap_to_optimum is None else f"{s.gap_to_optimum:.6f}",
                ]
            )


def write_comparison_csv(path: Path, rows: Sequence[Comparison]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "scenario", "group", "policy", "published_usd", "reproduced_usd", "delta",
                "reproduced_final_tick_excluded_usd", "delta_final_tick_excluded", "within_tolerance",
                "matched_runs", "compared_runs", "max_run_delta_usd", "note",
            ]
        )
        for c in rows:
            w.writerow(
                [
                    c.scenario, c.group, c.policy, f"{c.published:.6f}", f"{c.reproduced:.6f}",
                    f"{c.delta:.6f}",
                    f"{c.reproduced_convention:.6f}", f"{c.delta_convention:.6f}", c.within_tolerance,
                    c.matched_runs, c.compared_runs, f"{c.max_run_delta:.6f}", c.note,
                ]
            )


def write_runs_csv(path: Path, records: Sequence[RunRecord]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "scenario", "case", "group", "policy", "venue", "cost_usd", "cost_final_tick_excluded_usd",
                "egress_usd", "deadline_met", "spot_hours", "on_demand_hours", "migrations", "preemptions",
            ]
        )
        for r in records:
            w.writerow(
                [
                    r.scenario, r.case, r.group, r.policy, r.venue or "", f"{r.cost:.6f}",
                    f"{r.cost_final_tick_excluded:.6f}", f"{r.egress_cost:.6f}", r.deadline_met,
                    f"{r.spot_hours:.4f}", f"{r.on_demand_hours:.4f}", r.migrations, r.preemptions,
                ]
            )


PLOT_MISSING = "policies.png not written: matplotlib is not installed (pip install 'gpubroker[plot]')"


def plot_available() -> bool:
    """Whether matplotlib can be imported (it is the optional ``plot`` extra)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def write_plot(
    path: Path,
    scenarios: Sequence[Scenario],
    summaries: Sequence[PolicySummary],
    comparisons: Sequence[Comparison],
) -> None:
    """One panel per scenario: mean cost per policy (bars for one group, lines across groups)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.5 * len(scenarios), 4.8), squeeze=False)
    for ax, sc in zip(axes[0], scenarios, strict=True):
        rows = [s for s in summaries if s.scenario == sc.name]
        groups = list(dict.fromkeys(s.group for s in rows))
        policies = list(dict.fromkeys(s.policy for s in rows))
        labels = {s.policy: s.label for s in rows}
        cell = {(s.group, s.policy): float(s.mean_cost) for s in rows}
        if len(groups) == 1:
            values = [cell.get((groups[0], p), 0.0) for p in policies]
            ax.bar(range(len(policies)), values, color="#4C72B0")
            ax.set_xticks(range(len(policies)), [labels[p] for p in policies], rotation=25, ha="right")
            for c in comparisons:
                if c.scenario == sc.name and c.group == groups[0] and c.policy in policies:
                    x = policies.index(c.policy)
                    ax.plot([x - 0.4, x + 0.4], [c.published, c.published], color="#C44E52", linewidth=2)
            ax.set_title(f"{sc.title}\n{groups[0]} (red: published)", fontsize=10)
        else:
            xs = list(range(len(groups)))
            for p in policies:
                ax.plot(xs, [cell.get((g, p), float("nan")) for g in groups], marker="o", label=labels[p])
            marks = [(groups.index(c.group), c.published) for c in comparisons if c.scenario == sc.name]
            if marks:
                ax.scatter(*zip(*marks, strict=True), marker="x", color="black", zorder=3, label="published")
            ax.set_xticks(xs, [g.split()[-1] for g in groups])
            ax.set_xlabel(groups[0].rsplit(" ", 1)[0])
            ax.legend(fontsize=8)
            ax.set_yscale("log" if sc.name != "cant-be-late" else "linear")
            ax.set_title(sc.title, fontsize=10)
        ax.set_ylabel("mean cost per job ($)")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
