"""The cost report as JSON-ready data, stored in ``cost_report.data`` and served by the API, and
back (pure).

Decimals become strings (never floats), dates and times ISO 8601. ``version`` changes when a field
changes meaning, so readers of old rows can tell. :func:`from_json` reads a stored report back, so
a delivery resumed after a crash sends the report as it was stored, not a rebuilt one.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from broker.reports.model import (
    BREAKDOWN_TITLES,
    Anomaly,
    Breakdown,
    CommitmentUse,
    Comparison,
    DaySpend,
    Report,
    SpendRow,
    Totals,
    UtilizationFigures,
    WorkloadSpend,
)

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


def from_json(data: dict[str, Any]) -> Report:
    """The report :func:`to_json` made ``data`` from (``from_json(to_json(r)) == r``).

    Raises ``ValueError`` for another ``version`` and ``KeyError`` for a field that is missing."""
    if data.get("version") != REPORT_VERSION:
        raise ValueError(f"cost report data version {data.get('version')!r} is not {REPORT_VERSION}")
    t, c, u = data["totals"], data["comparison"], data["utilization"]
    return Report(
        org_id=data["org"]["id"],
        org_name=data["org"]["name"],
        day=date.fromisoformat(data["day"]),
        timezone=data["timezone"],
        window_start=datetime.fromisoformat(data["window"]["start"]),
        window_end=datetime.fromisoformat(data["window"]["end"]),
        totals=Totals(
            spend_usd=_d(t["spend_usd"]),
            instance_spend_usd=_d(t["instance_spend_usd"]),
            commitment_charge_usd=_d(t["commitment_charge_usd"]),
            gpu_hours=_d(t["gpu_hours"]),
            ondemand_equivalent_usd=_d(t["ondemand_equivalent_usd"]),
            savings_usd=_d(t["savings_usd"]),
            unpriced_spend_usd=_d(t["unpriced_spend_usd"]),
            committed_gpu_hours=_d(t["committed_gpu_hours"]),
            committed_used_gpu_hours=_d(t["committed_used_gpu_hours"]),
            commitment_utilization_pct=_od(t["commitment_utilization_pct"]),
            commitment_waste_usd=_d(t["commitment_waste_usd"]),
        ),
        comparison=Comparison(
            previous_day_usd=_d(c["previous_day_usd"]),
            change_vs_previous_day_usd=_d(c["change_vs_previous_day_usd"]),
            change_vs_previous_day_pct=_od(c["change_vs_previous_day_pct"]),
            seven_day_avg_usd=_d(c["seven_day_avg_usd"]),
            change_vs_seven_day_avg_usd=_d(c["change_vs_seven_day_avg_usd"]),
            change_vs_seven_day_avg_pct=_od(c["change_vs_seven_day_avg_pct"]),
        ),
        daily_spend=tuple(DaySpend(date.fromisoformat(d["day"]), _d(d["usd"])) for d in data["daily_spend"]),
        breakdowns=tuple(
            Breakdown(
                dimension,
                BREAKDOWN_TITLES.get(dimension, dimension),
                tuple(
                    SpendRow(
                        key=r["key"],
                        label=r["label"],
                        usd=_d(r["usd"]),
                        gpu_hours=_d(r["gpu_hours"]),
                        share_pct=_od(r["share_pct"]),
                        previous_day_usd=_d(r["previous_day_usd"]),
                        change_pct=_od(r["change_pct"]),
                        avg_gpu_util_pct=_od(r.get("avg_gpu_util_pct")),
                    )
                    for r in rows
                ),
            )
            for dimension, rows in data["breakdowns"].items()
        ),
        commitments=tuple(
            CommitmentUse(
                id=m["id"],
                name=m["name"],
                provider=m["provider"],
                region=m["region"],
                gpu_type=m["gpu_type"],
                committed_gpu_hours=_d(m["committed_gpu_hours"]),
                used_gpu_hours=_d(m["used_gpu_hours"]),
                utilization_pct=_od(m["utilization_pct"]),
                price_per_gpu_hour=_d(m["price_per_gpu_hour"]),
                charge_usd=_d(m["charge_usd"]),
                waste_usd=_d(m["waste_usd"]),
            )
            for m in data["commitments"]
        ),
        top_workloads=tuple(
            WorkloadSpend(
                id=w["id"],
                name=w["name"],
                project=w["project"],
                usd=_d(w["usd"]),
                gpu_hours=_d(w["gpu_hours"]),
                ondemand_usd=_od(w["ondemand_usd"]),
            )
            for w in data["top_workloads"]
        ),
        utilization=(
            UtilizationFigures(
                avg_gpu_util_pct=_d(u["avg_gpu_util_pct"]),
                samples=u["samples"],
                gpus=u["gpus"],
                idle_sample_fraction=_d(u["idle_sample_fraction"]),
            )
            if u is not None
            else None
        ),
        anomalies=tuple(
            Anomaly(
                dimension=a["dimension"],
                key=a["key"],
                label=a["label"],
                usd=_d(a["usd"]),
                previous_day_usd=_d(a["previous_day_usd"]),
                change_pct=_od(a["change_pct"]),
                message=a["message"],
            )
            for a in data["anomalies"]
        ),
        anomaly_pct=_d(data["anomaly_threshold_pct"]),
    )


def _d(value: str) -> Decimal:
    return Decimal(value)


def _od(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


__all__ = ["REPORT_VERSION", "from_json", "to_json"]
