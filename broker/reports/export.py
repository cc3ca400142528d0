"""The cost report as JSON-ready data, stored in ``cost_report.data`` and served by the API (pure).

Decimals become strings (never floats), dates and times ISO 8601. ``version`` changes when a field
changes meaning, so readers of old rows can tell.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from broker.reports.model import Report

REPORT_VERSION = 1


def to_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data: Decimals as strings, dates and times in ISO 8601."""
    t, c = report.totals, report.comparison
    return {
        "version": REPORT_VERSION,
        "org": {"id": report.org_id, "name": report.org_name},
        "day": report.day.isoformat(),
        "timezone": report.timezone,
        "window": {
            "start": report.window_start.isoformat(),
            "end": report.window_end.isoformat(),
            "hours": _s(report.window_hours),
        },
        "currency": "USD",
        "totals": {
            "spend_usd": _s(t.spend_usd),
            "instance_spend_usd": _s(t.instance_spend_usd),
            "commitment_charge_usd": _s(t.commitment_charge_usd),
            "gpu_hours": _s(t.gpu_hours),
            "ondemand_equivalent_usd": _s(t.ondemand_equivalent_usd),
            "savings_usd": _s(t.savings_usd),
            "unpriced_spend_usd": _s(t.unpriced_spend_usd),
            "avg_gpu_util_pct": _s(report.utilization.avg_gpu_util_pct) if report.utilization else None,
            "committed_gpu_hours": _s(t.committed_gpu_hours),
            "committed_used_gpu_hours": _s(t.committed_used_gpu_hours),
            "commitment_utilization_pct": _s(t.commitment_utilization_pct),
            "commitment_waste_usd": _s(t.commitment_waste_usd),
        },
        "comparison": {
            "previous_day_usd": _s(c.previous_day_usd),
            "change_vs_previous_day_usd": _s(c.change_vs_previous_day_usd),
            "change_vs_previous_day_pct": _s(c.change_vs_previous_day_pct),
            "seven_day_avg_usd": _s(c.seven_day_avg_usd),
            "change_vs_seven_day_avg_usd": _s(c.change_vs_seven_day_avg_usd),
            "change_vs_seven_day_avg_pct": _s(c.change_vs_seven_day_avg_pct),
        },
        "daily_spend": [{"day": d.day.isoformat(), "usd": _s(d.usd)} for d in report.daily_spend],
        "breakdowns": {
            b.dimension: [
                {
                    "key": r.key,
                    "label": r.label,
                    "usd": _s(r.usd),
                    "gpu_hours": _s(r.gpu_hours),
                    "share_pct": _s(r.share_pct),
                    "previous_day_usd": _s(r.previous_day_usd),
                    "change_pct": _s(r.change_pct),
                    **({"avg_gpu_util_pct": _s(r.avg_gpu_util_pct)} if b.dimension == "project" else {}),
                }
                for r in b.rows
            ]
            for b in report.breakdowns
        },
        "commitments": [
            {
                "id": u.id,
                "name": u.name,
                "provider": u.provider,
                "region": u.region,
                "gpu_type": u.gpu_type,
                "committed_gpu_hours": _s(u.committed_gpu_hours),
                "used_gpu_hours": _s(u.used_gpu_hours),
                "utilization_pct": _s(u.utilization_pct),
                "price_per_gpu_hour": _s(u.price_per_gpu_hour),
                "charge_usd": _s(u.charge_usd),
                "waste_usd": _s(u.waste_usd),
            }
            for u in report.commitments
        ],
        "top_workloads": [
            {
                "id": w.id,
                "name": w.name,
                "project": w.project,
                "usd": _s(w.usd),
                "gpu_hours": _s(w.gpu_hours),
                "ondemand_usd": _s(w.ondemand_usd),
            }
            for w in report.top_workloads
        ],
        "utilization": (
            {
                "avg_gpu_util_pct": _s(report.utilization.avg_gpu_util_pct),
                "samples": report.utilization.samples,
                "gpus": report.utilization.gpus,
                "idle_sample_fraction": _s(report.utilization.idle_sample_fraction),
            }
            if report.utilization
            else None
        ),
        "anomalies": [
            {
                "dimension": a.dimension,
                "key": a.key,
                "label": a.label,
                "usd": _s(a.usd),
                "previous_day_usd": _s(a.previous_day_usd),
                "change_pct": _s(a.change_pct),
                "message": a.message,
            }
            for a in report.anomalies
        ],
        "anomaly_threshold_pct": _s(report.anomaly_pct),
    }


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


__all__ = ["REPORT_VERSION", "to_json"]
