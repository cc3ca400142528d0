"""Reads SkyNomad's published results for the H100 "Global Diverse (6)" setup (does I/O: reads CSV).

Two files of ``published-results/skynomad/`` (Apache-2.0, andylizf/skynomad-artifact):

* ``paper_figs__values__deadline_sensitivity.values.csv`` — the means plotted in Fig. 9a, per
  strategy label and deadline ratio;
* ``research__data__deadline_sensitivity.csv`` — one row per strategy × window (× region for
  the single-region UP). Its ``rc_cr_threshold`` rows at ratio 1.5 hold one duplicate cell and
  one row that is really the 36-run mean; the first row of each (region, window) is kept, and
  those reproduce the figure's mean exactly.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

FIGURE_FILE = "published-results/skynomad/paper_figs__values__deadline_sensitivity.values.csv"
RUNS_FILE = "published-results/skynomad/research__data__deadline_sensitivity.csv"
SCENARIO_NAME = "Global Diverse (6)"

# SkyNomad's names → ours ("skynomad" is their own policy: the reference for "ours").
FIGURE_LABELS = {"Optimal": "optimum", "UP": "uniform_progress", "UP(S)": "up_s", "SkyNomad": "skynomad"}
STRATEGIES = {
    "multi_region_oracle_dp": "optimum",
    "rc_cr_threshold": "uniform_progress",
    "multi_region_rc_cr_threshold_eager_failover": "up_s",
    "unified_cost_model_risk": "skynomad",
}


@dataclass(frozen=True)
class PublishedFigure:
    """A published mean and the runs behind it, keyed by (window index, zone or ``None``)."""

    policy: str
    ratio: float
    mean: float
    count: int
    runs: dict[tuple[int, str | None], float] = field(default_factory=dict)


def _ratio_key(ratio: float) -> float:
    return round(ratio, 6)


def load_skynomad(traces: Path) -> dict[tuple[float, str], PublishedFigure]:
    """Published figures by (deadline ratio, our policy name); empty if the files are absent."""
    figure_path, runs_path = traces / FIGURE_FILE, traces / RUNS_FILE
    if not figure_path.is_file():
        return {}
    runs: dict[tuple[float, str], dict[tuple[int, str | None], float]] = {}
    if runs_path.is_file():
        with runs_path.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                policy = STRATEGIES.get(row["strategy"])
                if policy is None or row["scenario_name"] != SCENARIO_NAME:
                    continue
                zone = row["region"].split("_")[0] or None
                key = (int(row["window_index"]), zone)
                runs.setdefault((_ratio_key(float(row["deadline_ratio"])), policy), {}).setdefault(
                    key, float(row["cost"])
                )
    out = {}
    with figure_path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            policy = FIGURE_LABELS.get(row["strategy"])
            if policy is None:
                continue
            ratio = _ratio_key(float(row["deadline_ratio"]))
            out[(ratio, policy)] = PublishedFigure(
                policy=policy,
                ratio=ratio,
                mean=float(row["mean"]),
                count=int(row["count"]),
                runs=runs.get((ratio, policy), {}),
            )
    return out
