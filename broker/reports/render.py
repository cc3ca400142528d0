"""The cost report as a self-contained HTML page with inline SVG charts, and as CSV (pure, no I/O).

The HTML loads nothing: no script, no font, no image, no stylesheet from anywhere. Charts are
SVG drawn here, so the page reads the same offline, in a mail client and in an archive years
later. Every text that comes from users (project, workload, commitment names) is escaped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from html import escape
from zoneinfo import ZoneInfo

from broker.reports.model import Breakdown, Report

CHART_WIDTH = 640
BAR_HEIGHT = 20
BAR_GAP = 6
LABEL_WIDTH = 200
CHART_ROWS = 10  # a breakdown chart shows the 10 largest groups and sums the rest as "Others"
ACCENT = "#2b6cb0"
MUTED = "#a0aec0"
WARN = "#c05621"


# --- number formats -----------------------------------------------------------------------------


def money(value: Decimal | None) -> str:
    """``$1,234.56``; negative as ``-$12.30``; None as an en dash."""
    if value is None:
        return "–"
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.2f}"


def hours(value: Decimal | None) -> str:
    return "–" if value is None else f"{value:,.1f}"


def pct(value: Decimal | None, *, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+,.1f}%" if signed else f"{value:,.1f}%"


def long_date(report: Report) -> str:
    d = report.day
    return f"{d:%A} {d.day} {d:%B %Y}"


# --- HTML ---------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1a202c;
max-width:960px;margin:2em auto;padding:0 1em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #e2e8f0}
.sub{color:#4a5568;margin-top:0}
table{border-collapse:collapse;width:100%;margin:.6em 0;font-size:.95em}
th,td{padding:.35em .6em;border-bottom:1px solid #edf2f7;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tfoot td{font-weight:600;border-top:2px solid #cbd5e0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:.8em}
.card{border:1px solid #e2e8f0;border-radius:6px;padding:.7em .9em}
.card .v{font-size:1.45em;font-weight:600;font-variant-numeric:tabular-nums}
.card .k{color:#4a5568;font-size:.9em}
.up{color:#c05621}.down{color:#2f855a}
.anomaly{background:#fffaf0;border-left:4px solid #c05621;padding:.5em .8em;margin:.4em 0}
.note{color:#4a5568;font-size:.9em}
svg text{font-family:inherit;font-size:12px;fill:#2d3748}
"""


def render_html(report: Report, generated_at: datetime) -> str:
    """The report as one HTML document, readable by someone who has never seen gpubroker."""
    tz = ZoneInfo(report.timezone)
    start = report.window_start.astimezone(tz)
    end = report.window_end.astimezone(tz)
    t, c = report.totals, report.comparison
    title = f"GPU cost report: {report.org_name}, {long_date(report)}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>GPU cost report: {escape(report.org_name)}</h1>",
        f'<p class="sub"><strong>{escape(long_date(report))}</strong>, from '
        f"{escape(start.strftime('%Y-%m-%d %H:%M'))} to {escape(end.strftime('%Y-%m-%d %H:%M'))} "
        f"({escape(report.timezone)} time, {hours(report.window_hours)} hours). "
        "All amounts are in US dollars.</p>",
        '<section><h2>Summary</h2><div class="cards">',
        _card(
            "Total spend",
            money(t.spend_usd),
            f"{money(t.instance_spend_usd)} instances, {money(t.commitment_charge_usd)} commitments",
        ),
        _card(
            "Change against the day before",
            _signed_money(c.change_vs_previous_day_usd),
            f"{pct(c.change_vs_previous_day_pct, signed=True)} (day before: {money(c.previous_day_usd)})",
        ),
        _card(
            "Change against the 7-day average",
            _signed_money(c.change_vs_seven_day_avg_usd),
            f"{pct(c.change_vs_seven_day_avg_pct, signed=True)} "
            f"(average: {money(c.seven_day_avg_usd)} a day)",
        ),
        _card("GPU-hours used", hours(t.gpu_hours), "one GPU running for one hour is one GPU-hour"),
        _card(
            "Average GPU utilization",
            pct(report.utilization.avg_gpu_util_pct) if report.utilization else "no data",
            (
                f"{report.utilization.gpus} GPUs reported {report.utilization.samples:,} samples"
                if report.utilization
                else "no node agent reported utilization"
            ),
        ),
        _card(
            "Savings against on-demand",
            money(t.savings_usd),
            f"on-demand would have cost {money(t.ondemand_equivalent_usd)}",
        ),
        _card(
            "Commitment utilization",
            pct(t.commitment_utilization_pct) if t.commitment_utilization_pct is not None else "none",
            f"{hours(t.committed_used_gpu_hours)} of {hours(t.committed_gpu_hours)} committed GPU-hours used",
        ),
        _card("Idle commitment waste", money(t.commitment_waste_usd), "paid-for GPU-hours nobody used"),
        "</div></section>",
        _anomalies_html(report),
        "<section><h2>Daily spend</h2>",
        _trend_chart(report),
        "</section>",
    ]
    for breakdown in report.breakdowns:
        parts.append(_breakdown_html(breakdown, report))
    parts.append(_commitments_html(report))
    parts.append(_workloads_html(report))
    parts.append(_notes_html(report, generated_at))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _card(label: str, value: str, detail: str) -> str:
    return (
        f'<div class="card"><div class="k">{escape(label)}</div><div class="v">{escape(value)}</div>'
        f'<div class="note">{escape(detail)}</div></div>'
    )


def _signed_money(value: Decimal) -> str:
    return ("+" if value > 0 else "") + money(value)


def _anomalies_html(report: Report) -> str:
    head = f"<section><h2>Anomalies (spend up more than {pct(report.anomaly_pct)} on the day before)</h2>"
    if not report.anomalies:
        none = "None: no spend rose by more than that, and nothing new started costing money."
        return f"{head}<p>{none}</p></section>"
    items = "".join(f'<div class="anomaly">{escape(a.message)}</div>' for a in report.anomalies)
    return head + items + "</section>"


def _trend_chart(report: Report) -> str:
    days = report.daily_spend
    top = max((d.usd for d in days), default=Decimal(0))
    width, height, pad_top, pad_bottom = CHART_WIDTH, 200, 22, 36
    slot = Decimal(width) / len(days)
    bar = slot * Decimal("0.6")
    usable = Decimal(height - pad_top - pad_bottom)
    desc = "; ".join(f"{d.day.isoformat()}: {money(d.usd)}" for d in days)
    out = [
        f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>Spend per day, the 7 days before and the report day. {escape(desc)}</title>",
    ]
    for i, d in enumerate(days):
        h = (d.usd / top * usable) if top > 0 else Decimal(0)
        x = slot * i + (slot - bar) / 2
        y = Decimal(pad_top) + usable - h
        color = ACCENT if i == len(days) - 1 else MUTED
        cx = slot * i + slot / 2
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{color}"/>')
        out.append(f'<text x="{cx:.1f}" y="{y - 4:.1f}" text-anchor="middle">{escape(money(d.usd))}</text>')
        out.append(
            f'<text x="{cx:.1f}" y="{height - 20}" text-anchor="middle">{escape(d.day.strftime("%a"))}</text>'
        )
        out.append(f'<text x="{cx:.1f}" y="{height - 6}" text-anchor="middle">{d.day.day} {d.day:%b}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(items: Sequence[tuple[str, Decimal]], title: str) -> str:
    """A horizontal bar chart as inline SVG: one labelled bar per ``(label, dollars)``."""
    if not items:
        return ""
    top = max((v for _, v in items), default=Decimal(0))
    bar_area = CHART_WIDTH - LABEL_WIDTH - 90
    height = len(items) * (BAR_HEIGHT + BAR_GAP) + BAR_GAP
    desc = "; ".join(f"{label}: {money(v)}" for label, v in items)
    out = [
        f'<svg role="img" width="{CHART_WIDTH}" height="{height}" viewBox="0 0 {CHART_WIDTH} {height}">',
        f"<title>{escape(title)}. {escape(desc)}</title>",
    ]
    for i, (label, value) in enumerate(items):
        y = BAR_GAP + i * (BAR_HEIGHT + BAR_GAP)
        w = (value / top * bar_area) if top > 0 and value > 0 else Decimal(0)
        text_y = y + BAR_HEIGHT - 6
        shown = label if len(label) <= 28 else label[:27] + "…"
        out.append(f'<text x="{LABEL_WIDTH - 8}" y="{text_y}" text-anchor="end">{escape(shown)}</text>')
        out.append(f'<rect x="{LABEL_WIDTH}" y="{y}" width="{w:.1f}" height="{BAR_HEIGHT}" fill="{ACCENT}"/>')
        out.append(f'<text x="{LABEL_WIDTH + w + Decimal(6):.1f}" y="{text_y}">{escape(money(value))}</text>')
    out.append("</svg>")
    return "".join(out)


def _chart_items(breakdown: Breakdown) -> list[tuple[str, Decimal]]:
    rows = [r for r in breakdown.rows if r.usd > 0]
    items = [(r.label, r.usd) for r in rows[:CHART_ROWS]]
    rest = sum((r.usd for r in rows[CHART_ROWS:]), Decimal(0))
    if rest > 0:
        items.append((f"Others ({len(rows) - CHART_ROWS})", rest))
    return items


def _breakdown_html(breakdown: Breakdown, report: Report) -> str:
    is_project = breakdown.dimension == "project"
    head = (
        "<tr><th>Name</th><th class='n'>Spend</th><th class='n'>Share</th><th class='n'>GPU-hours</th>"
        "<th class='n'>Day before</th><th class='n'>Change</th>"
        + ("<th class='n'>Avg GPU utilization</th>" if is_project else "")
        + "</tr>"
    )
    body = []
    for r in breakdown.rows:
        body.append(
            f"<tr><td>{escape(r.label)}</td><td class='n'>{money(r.usd)}</td>"
            f"<td class='n'>{pct(r.share_pct)}</td>"
            f"<td class='n'>{hours(r.gpu_hours)}</td><td class='n'>{money(r.previous_day_usd)}</td>"
            f"<td class='n'>{_change_cell(r.change_pct)}</td>"
            + (f"<td class='n'>{pct(r.avg_gpu_util_pct)}</td>" if is_project else "")
            + "</tr>"
        )
    if not body:
        return f"<section><h2>{escape(breakdown.title)}</h2><p>Nothing was spent.</p></section>"
    t = report.totals
    foot = (
        f"<tfoot><tr><td>Total</td><td class='n'>{money(t.spend_usd)}</td><td class='n'>100.0%</td>"
        f"<td class='n'>{hours(t.gpu_hours)}</td>"
        f"<td class='n'>{money(report.comparison.previous_day_usd)}</td>"
        f"<td class='n'>{_change_cell(report.comparison.change_vs_previous_day_pct)}</td>"
        + ("<td></td>" if is_project else "")
        + "</tr></tfoot>"
    )
    chart = bar_chart(_chart_items(breakdown), breakdown.title)
    return (
        f"<section><h2>{escape(breakdown.title)}</h2>{chart}"
        f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody>{foot}</table></section>"
    )


def _change_cell(value: Decimal | None) -> str:
    if value is None:
        return "new"  # nothing was spent the day before
    css = "up" if value > 0 else "down" if value < 0 else ""
    return f"<span class='{css}'>{pct(value, signed=True)}</span>"


def _commitments_html(report: Report) -> str:
    head = "<section><h2>Commitments (reserved capacity)</h2>"
    if not report.commitments:
        return head + "<p>No commitment was active on this day.</p></section>"
    rows = "".join(
        f"<tr><td>{escape(u.name)}</td><td>{escape(u.provider)} {escape(u.region)}</td>"
        f"<td>{escape(u.gpu_type)}</td>"
        f"<td class='n'>{hours(u.committed_gpu_hours)}</td><td class='n'>{hours(u.used_gpu_hours)}</td>"
        f"<td class='n'>{pct(u.utilization_pct)}</td><td class='n'>{money(u.price_per_gpu_hour)}</td>"
        f"<td class='n'>{money(u.charge_usd)}</td><td class='n'>{money(u.waste_usd)}</td></tr>"
        for u in report.commitments
    )
    t = report.totals
    return (
        head + "<table><thead><tr><th>Commitment</th><th>Where</th><th>GPU</th>"
        "<th class='n'>Committed GPU-hours</th><th class='n'>Used</th><th class='n'>Utilization</th>"
        "<th class='n'>Price per GPU-hour</th><th class='n'>Charge</th>"
        "<th class='n'>Idle waste</th></tr></thead>"
        f"<tbody>{rows}</tbody><tfoot><tr><td>Total</td><td></td><td></td>"
        f"<td class='n'>{hours(t.committed_gpu_hours)}</td>"
        f"<td class='n'>{hours(t.committed_used_gpu_hours)}</td>"
        f"<td class='n'>{pct(t.commitment_utilization_pct)}</td><td></td>"
        f"<td class='n'>{money(t.commitment_charge_usd)}</td>"
        f"<td class='n'>{money(t.commitment_waste_usd)}</td>"
        "</tr></tfoot></table></section>"
    )


def _workloads_html(report: Report) -> str:
    head = f"<section><h2>Top {len(report.top_workloads) or ''} workloads by cost</h2>"
    if not report.top_workloads:
        return "<section><h2>Top workloads by cost</h2><p>No workload ran on this day.</p></section>"
    rows = "".join(
        f"<tr><td>{escape(w.name)}</td><td>{escape(w.project)}</td><td class='n'>{money(w.usd)}</td>"
        f"<td class='n'>{hours(w.gpu_hours)}</td><td class='n'>{money(w.ondemand_usd)}</td></tr>"
        for w in report.top_workloads
    )
    return (
        head + "<table><thead><tr><th>Workload</th><th>Project</th><th class='n'>Spend</th>"
        "<th class='n'>GPU-hours</th><th class='n'>On-demand equivalent</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


def _notes_html(report: Report, generated_at: datetime) -> str:
    t = report.totals
    made = generated_at.astimezone(ZoneInfo(report.timezone)).isoformat(timespec="seconds")
    unpriced = (
        f" {money(t.unpriced_spend_usd)} of spend has no known on-demand price and is left out of the "
        "savings."
        if t.unpriced_spend_usd
        else ""
    )
    return (
        "<section><h2>How to read this report</h2><ul class='note'>"
        "<li><strong>Spend</strong> is what the day cost: instances billed per second at the price "
        "they were bought at (spot price changes apply from the moment they took effect), plus each "
        "commitment's charge for the day, whether its GPUs were used or not. Instances running on a "
        "commitment cost nothing extra.</li>"
        "<li><strong>Savings against on-demand</strong> is what the same GPU-hours would have cost at "
        f"on-demand prices, minus what was paid.{escape(unpriced)}</li>"
        "<li><strong>Idle commitment waste</strong> is committed GPU-hours nobody used, at the commitment's "
        "price.</li>"
        "<li><strong>Anomalies</strong> list every total or group whose spend rose more than "
        f"{pct(report.anomaly_pct)} on the day before, or that cost nothing the day before.</li>"
        "<li>Amounts are rounded to the cent once, from exact figures, so rows may differ from the total by "
        "a cent.</li>"
        f"</ul><p class='note'>Generated {escape(made)}"
        f" by gpubroker for organization {escape(report.org_id)}. Re-running the report for this date gives "
        "the same numbers.</p></section>"
    )


# --- CSV ----------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "Report date",
    "Time zone",
    "Section",
    "Group",
    "Key",
    "Name",
    "Spend (USD)",
    "GPU-hours",
    "Share of spend (%)",
    "Compared with (USD)",
    "Change (%)",
    "On-demand equivalent (USD)",
    "Savings (USD)",
    "Committed GPU-hours",
    "Used GPU-hours",
    "Utilization (%)",
    "Idle waste (USD)",
    "Avg GPU utilization (%)",
)


def render_csv(report: Report) -> str:
    """One table a spreadsheet opens as is: one row per figure group, blank where it does not apply.

    "Compared with" is the day before, except on the ``vs 7-day average`` total row."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    t, c = report.totals, report.comparison
    util = report.utilization.avg_gpu_util_pct if report.utilization else None

    def row(section: str, group: str, key: str, name: str, **values: Decimal | None) -> None:
        cells = [report.day.isoformat(), report.timezone, section, group, _text(key), _text(name)]
        for column in CSV_COLUMNS[6:]:
            value = values.get(_field(column))
            cells.append("" if value is None else str(value))
        writer.writerow(cells)

    row(
        "total",
        "vs day before",
        "",
        "Total",
        spend=t.spend_usd,
        gpu_hours=t.gpu_hours,
        compared=c.previous_day_usd,
        change=c.change_vs_previous_day_pct,
        ondemand=t.ondemand_equivalent_usd,
        savings=t.savings_usd,
        committed=t.committed_gpu_hours,
        used=t.committed_used_gpu_hours,
        utilization=t.commitment_utilization_pct,
        waste=t.commitment_waste_usd,
        gpu_util=util,
    )
    row(
        "total",
        "vs 7-day average",
        "",
        "Total",
        spend=t.spend_usd,
        compared=c.seven_day_avg_usd,
        change=c.change_vs_seven_day_avg_pct,
    )
    for d in report.daily_spend:
        row("daily spend", "day", d.day.isoformat(), d.day.strftime("%A"), spend=d.usd)
    for b in report.breakdowns:
        for r in b.rows:
            row(
                "breakdown",
                b.dimension,
                r.key,
                r.label,
                spend=r.usd,
                gpu_hours=r.gpu_hours,
                share=r.share_pct,
                compared=r.previous_day_usd,
                change=r.change_pct,
                gpu_util=r.avg_gpu_util_pct,
            )
    for u in report.commitments:
        row(
            "commitment",
            f"{u.provider} {u.region} {u.gpu_type}",
            u.id,
            u.name,
            spend=u.charge_usd,
            committed=u.committed_gpu_hours,
            used=u.used_gpu_hours,
            utilization=u.utilization_pct,
            waste=u.waste_usd,
        )
    for w in report.top_workloads:
        row(
            "top workload",
            w.project,
            w.id,
            w.name,
            spend=w.usd,
            gpu_hours=w.gpu_hours,
            ondemand=w.ondemand_usd,
        )
    for a in report.anomalies:
        row(
            "anomaly",
            a.dimension,
            a.key,
            a.label,
            spend=a.usd,
            compared=a.previous_day_usd,
            change=a.change_pct,
        )
    return buf.getvalue()


_FIELDS = {
    "Spend (USD)": "spend",
    "GPU-hours": "gpu_hours",
    "Share of spend (%)": "share",
    "Compared with (USD)": "compared",
    "Change (%)": "change",
    "On-demand equivalent (USD)": "ondemand",
    "Savings (USD)": "savings",
    "Committed GPU-hours": "committed",
    "Used GPU-hours": "used",
    "Utilization (%)": "utilization",
    "Idle waste (USD)": "waste",
    "Avg GPU utilization (%)": "gpu_util",
}


def _field(column: str) -> str:
    return _FIELDS[column]


def _text(value: str) -> str:
    """A user-chosen name a spreadsheet must not run as a formula (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


__all__ = ["CSV_COLUMNS", "bar_chart", "hours", "money", "pct", "render_csv", "render_html"]
