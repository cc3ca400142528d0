"""The dashboard in a real browser (Chromium via Playwright): sign in, every page shows the API's numbers,
tenants never see each other, pages update without a reload, empty states, keyboard. Screenshots of
every page go to test-artifacts/screenshots/."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from broker.db.engine import Database
from broker.reports.build import ReportOptions, build_and_store
from broker.services.tenancy import Role
from tests.api.conftest import make_tenant
from tests.web.conftest import Dashboard, drawn, screenshot, sign_in
from tests.web.fleet import Fleet, add_placed_instance, add_running_workload


def usd(value: str | Decimal, places: int = 2) -> str:
    """A dollar amount as the pages show it: rounded half up, thousands separated."""
    quantum = Decimal(1).scaleb(-places)
    text = f"{Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP):,}"
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


def rows(page: Any, testid: str) -> list[list[str]]:
    """The cells of a table as the user sees them: a hidden table must be an empty one."""
    table = page.locator(f"[data-testid={testid}]")
    cells: list[list[str]] = table.locator("tbody tr").evaluate_all(
        "trs => trs.map((tr) => Array.from(tr.cells, (td) => td.textContent.trim()))"
    )
    assert table.is_visible() or not cells, f"table {testid} is hidden but has {len(cells)} rows"
    return cells


def text(page: Any, testid: str) -> str:
    return page.locator(f"[data-testid={testid}]").inner_text().strip()


def test_a_wrong_key_is_refused_and_a_right_one_keeps_a_secure_cookie(
    page: Any, fleet: Fleet, browser_errors: list[str]
) -> None:
    page.goto("/fleet")
    page.wait_for_url("**/login?next=%2Ffleet")
    page.fill("#api_key", "gpb_0123456789abcdef_wrong")
    page.click("button[type=submit]")
    assert "unknown or revoked" in text(page, "login-error")
    assert page.context.cookies() == []
    assert browser_errors == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]
    browser_errors.clear()
    screenshot(page, "login-refused")

    sign_in(page, fleet.acme.keys[Role.VIEWER])
    (session,) = page.context.cookies()
    # Chromium keeps a Secure cookie over plain http only for loopback (a secure context): check it does.
    assert session["name"] == "gpubroker_session"
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # invisible to scripts
    page.click("text=Sign out")
    page.wait_for_url("**/login")
    assert page.context.cookies() == []


def test_fleet_shows_the_apis_numbers_and_no_other_tenants(
    page: Any, dashboard: Dashboard, fleet: Fleet
) -> None:
    key = fleet.acme.keys[Role.VIEWER]
    sign_in(page, key)
    drawn(page)
    running = dashboard.api("/v1/instances", key, state="running", limit=500)["items"]
    assert len(running) == 4
    assert text(page, "gpus-running") == str(sum(i["gpus"] for i in running))
    assert text(page, "instances-running") == str(len(running))
    hour = dashboard.api("/v1/utilization/summary", key, group_by="org")["groups"][0]
    assert (
        text(page, "util-hour")
        == f"{Decimal(hour['avg_gpu_util_pct']).quantize(Decimal('0.1'), ROUND_HALF_UP)} %"
    )

    places: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for i in running:
        places[(i["provider"], i["region"], i["capacity_type"])][0] += 1
        places[(i["provider"], i["region"], i["capacity_type"])][1] += i["gpus"]
    shown = {(r[0], r[1], r[2]): [int(r[3]), int(r[4])] for r in rows(page, "by-place")}
    assert shown == dict(places)

    # Idle GPUs come from the server's rule (every sample in the last 30 minutes below 10 %).
    idle = dashboard.api("/v1/utilization/idle", key, threshold_pct="10", minutes="30")
    assert {i["id"] for i in idle["items"]} == {fleet.running["train-b"], fleet.running["batch"]}
    idle_rows = rows(page, "idle")
    assert [r[0] for r in idle_rows[:-1]] == [i["id"] for i in idle["items"]]
    for shown_row, i in zip(idle_rows, idle["items"], strict=False):
        assert shown_row[3:] == [
            str(i["gpus"]),
            f"{Decimal(i['max_gpu_util_pct']).quantize(Decimal('0.1'), ROUND_HALF_UP)} %",
            datetime.fromisoformat(i["idle_since"]).strftime("%Y-%m-%d %H:%M:%S UTC"),
            usd(i["price_per_hour"]),
        ]
    assert idle_rows[-1][-1] == usd(idle["idle_cost_per_hour"]) == usd("48.2641")  # 31.4641 + 16.80
    assert text(page, "idle-gpus") == str(idle["idle_gpus"]) == "16"
    assert "30 minutes" in text(page, "idle-rule") and "below 10.00 %" in text(page, "idle-rule")
    assert not page.locator("[data-testid=idle-silent]").is_visible()
    page.wait_for_selector("#util-chart .main-svg")  # plotly (served from the wheel) drew the chart
    page.wait_for_selector("#heatmap .main-svg")
    # The heat map is the server's 5-minute buckets: same rows, same columns, same values.
    heat = dashboard.api("/v1/utilization/instances", key, bucket_seconds="300", limit="500")["items"]
    drawn_heat = page.evaluate(
        "() => { const t = document.getElementById('heatmap').data[0];"
        " return { y: t.y, z: t.z, x: t.x.map((d) => new Date(d).toISOString()) }; }"
    )
    assert drawn_heat["y"] == [f"{i['id']} · {i['provider']}/{i['region']}" for i in heat]
    assert drawn_heat["z"] == [
        [None if b["gpu_util_pct"] is None else float(b["gpu_util_pct"]) for b in i["buckets"]] for i in heat
    ]
    # JavaScript dates keep milliseconds: compare the bucket starts at that precision
    starts = [datetime.fromisoformat(b["at"]) for b in heat[0]["buckets"]]
    starts = [t.replace(microsecond=t.microsecond // 1000 * 1000) for t in starts]
    assert [datetime.fromisoformat(x.replace("Z", "+00:00")) for x in drawn_heat["x"]] == starts
    assert len(starts) == 12 and drawn_heat["z"][0][-1] is not None  # the seeded samples fill the hour

    body = page.inner_text("body")
    assert "lambda" not in body and fleet.running["globex"] not in body
    screenshot(page, "fleet")


def test_the_idle_threshold_is_the_users(page: Any, fleet: Fleet) -> None:
    sign_in(page, fleet.acme.keys[Role.VIEWER])
    drawn(page)
    page.fill("#idle-threshold", "50")
    page.press("#idle-threshold", "Enter")
    page.wait_for_function("() => document.querySelectorAll('[data-testid=idle] tbody tr').length === 4")
    assert {r[0] for r in rows(page, "idle")[:-1]} == {
        fleet.running[n] for n in ("train-b", "batch", "serve")
    }


def test_a_slow_timed_refresh_never_overwrites_the_users_newer_threshold(page: Any, fleet: Fleet) -> None:
    sign_in(page, fleet.acme.keys[Role.VIEWER])
    drawn(page)
    held: list[Any] = []

    def hold_the_first(route: Any) -> None:
        if held:
            route.continue_()
        else:
            held.append(route)

    # Every idle rule the page shows from now on, in order.
    page.evaluate(
        """() => {
          const rule = document.querySelector("[data-testid=idle-rule]");
          window.shownRules = [];
          const record = () => window.shownRules.push(rule.textContent);
          new MutationObserver(record).observe(rule, { childList: true });
        }"""
    )
    # Hold the next timed refresh's idle query (the default 10 %) in flight, as a slow network would.
    page.route("**/v1/utilization/idle?threshold_pct=10*", hold_the_first)
    while not held:
        page.wait_for_timeout(50)
    page.fill("#idle-threshold", "50")
    page.press("#idle-threshold", "Enter")  # asked while that render is still waiting
    before = int(page.evaluate("Number(document.body.dataset.refreshes)"))
    # Time for a render running beside the held one to draw first, which is how the stale rule came back.
    # This pause cannot make the test fail wrongly; on a very slow machine it may just not show the race.
    page.wait_for_timeout(500)
    held[0].continue_()
    # The held render finishes first, then exactly the render the user asked for, with 50 %.
    page.wait_for_function("(n) => Number(document.body.dataset.refreshes) >= n", arg=before + 2)
    assert "below 50.00 %" in text(page, "idle-rule")
    shown = ["50.00" if "below 50.00 %" in r else "10.00" for r in page.evaluate("() => window.shownRules")]
    assert "10.00" not in shown[shown.index("50.00") :], f"the stale rule came back: {shown}"
    assert {r[0] for r in rows(page, "idle")[:-1]} == {
        fleet.running[n] for n in ("train-b", "batch", "serve")
    }


def test_the_fleet_updates_without_a_reload(
    page: Any, database: Database, fleet: Fleet, now: datetime
) -> None:
    sign_in(page, fleet.acme.keys[Role.VIEWER])
    drawn(page)
    assert text(page, "gpus-running") == "32"
    page.evaluate("() => { window.sameDocument = true; }")
    with database.sessions.begin() as s:
        wid = add_running_workload(s, fleet.acme.org_id, "late-arrival", now)
        add_placed_instance(
            s,
            fleet.acme.org_id,
            wid,
            now,
            provider="gcp",
            region="europe-west4",
            capacity_type="spot",
            price_per_hour="25.00",
            gpus=4,
        )
    page.wait_for_function("() => document.querySelector('[data-testid=gpus-running]').textContent === '36'")
    assert page.evaluate("() => window.sameDocument") is True  # the same document: no reload happened
    assert ["gcp", "europe-west4", "spot", "1", "4"] in rows(page, "by-place")


def test_cost_page_matches_the_cost_api(page: Any, dashboard: Dashboard, fleet: Fleet) -> None:
    key = fleet.acme.keys[Role.VIEWER]
    sign_in(page, key, "/cost")
    drawn(page)
    summary = dashboard.api("/v1/costs/summary", key)
    assert text(page, "burn-rate") == usd(summary["burn_rate_usd_per_hour"]) + " /h"
    assert text(page, "spend-today") == usd(summary["spend_today_usd"])
    assert text(page, "spend-mtd") == usd(summary["spend_month_to_date_usd"])
    assert text(page, "savings") == usd(summary["savings_vs_on_demand_usd"])
    assert text(page, "waste") == usd(summary["commitment_waste_usd"])
    shown = {r[0]: r[1:3] for r in rows(page, "projects")}
    for p in summary["projects"]:
        name = p["name"] or "(commitments for no project)"
        assert shown[name] == [usd(p["spend_today_usd"]), usd(p["spend_month_to_date_usd"])]
    assert len(shown) == len(summary["projects"])
    screenshot(page, "cost")


def test_commitments_page_matches_usage(page: Any, dashboard: Dashboard, fleet: Fleet) -> None:
    key = fleet.acme.keys[Role.VIEWER]
    sign_in(page, key, "/commitments")
    drawn(page)
    usage = dashboard.api(f"/v1/commitments/{fleet.commitment_id}/usage", key)["totals"]
    (row,) = rows(page, "commitments")
    assert row[0] == "aws-west-reserved"
    assert row[5] == f"{Decimal(usage['committed_gpu_hours']).quantize(Decimal('0.01'), ROUND_HALF_UP):,}"
    assert row[6] == f"{Decimal(usage['used_gpu_hours']).quantize(Decimal('0.01'), ROUND_HALF_UP):,}"
    assert row[8] == usd(usage["idle_waste_usd"])
    assert text(page, "waste-total") == usd(usage["idle_waste_usd"])
    assert Decimal(usage["idle_waste_usd"]) > 0  # 16 GPUs committed for two days, 8 used for two hours
    screenshot(page, "commitments")


def test_workloads_list_and_one_workloads_story(page: Any, dashboard: Dashboard, fleet: Fleet) -> None:
    key = fleet.acme.keys[Role.VIEWER]
    sign_in(page, key, "/workloads")
    drawn(page)
    listed = dashboard.api("/v1/workloads", key)["items"]
    shown = {r[0]: r for r in rows(page, "workloads")}
    assert set(shown) == {w["name"] for w in listed}
    train = next(w for w in listed if w["name"] == "train-7b")
    assert shown["train-7b"][2:7] == ["RUNNING", "1 × 8", "aws", "us-east-1", "spot"]
    start = min(w["created_at"] for w in listed)
    costs = {
        g["key"]: g["usd"]
        for g in dashboard.api("/v1/costs", key, group_by="workload", start=start)["groups"]
    }
    assert shown["train-7b"][8] == usd(costs.get(train["id"], "0"))
    assert "globex-secret-job" not in page.inner_text("body")
    screenshot(page, "workloads")

    page.click("text=train-7b")
    page.wait_for_url(f"**/workloads/{train['id']}")
    drawn(page)
    assert text(page, "state") == "RUNNING"
    assert text(page, "placement").startswith("aws / us-east-1a · spot")
    kinds = page.locator("[data-testid=events] li").evaluate_all("items => items.map(i => i.dataset.kind)")
    events = dashboard.api(f"/v1/workloads/{train['id']}/events", key)["items"]
    assert kinds == [e["kind"] for e in events]
    assert page.locator("[data-testid=events] li.preemption").count() == 1
    assert page.locator("[data-testid=events] li.migration").count() == 1
    explanation = dashboard.api(f"/v1/workloads/{train['id']}/explain", key, limit=10)
    assert len(rows(page, "scored")) == len(explanation["scored"])
    assert page.locator("[data-testid=cancel]").count() == 0  # a viewer key: no operator controls
    screenshot(page, "workload")


def test_another_orgs_workload_is_not_found(page: Any, fleet: Fleet, browser_errors: list[str]) -> None:
    sign_in(page, fleet.globex.keys[Role.ADMIN], f"/workloads/{fleet.workloads['train']}")
    drawn(page)
    assert page.locator("[data-testid=workload-missing]").is_visible()
    assert "train-7b" not in page.inner_text("body")
    assert set(browser_errors) == {
        "Failed to load resource: the server responded with a status of 404 (Not Found)"
    }
    browser_errors.clear()


def test_offers_page_lists_the_cheapest_per_place_and_draws_history(
    page: Any, dashboard: Dashboard, fleet: Fleet
) -> None:
    key = fleet.acme.keys[Role.VIEWER]
    sign_in(page, key, "/offers")
    drawn(page)
    offers = dashboard.api("/v1/offers", key, gpu="H100", limit=1000)["offers"]
    cheapest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for o in offers:
        cheapest.setdefault((o["cloud"], o["region"], o["capacity_type"]), o)
    shown = rows(page, "offers")
    assert len(shown) == len(cheapest) > 0
    for r in shown:
        o = cheapest[(r[0], r[1], r[2])]
        assert r[3] == o["instance_type"]
        assert r[5] == usd(o["price_per_gpu_hour"], 4)
    page.locator("[data-testid=offers] tbody tr").first.get_by_role("button", name="history").click()
    page.wait_for_selector("#history-chart .main-svg")
    assert "stored price" in text(page, "history-title")
    screenshot(page, "offers")


def test_reports_page_without_reports_says_how_one_is_made(page: Any, fleet: Fleet) -> None:
    sign_in(page, fleet.acme.keys[Role.VIEWER], "/reports")
    drawn(page)
    # No report has been generated for this fresh organization: the page says what happens next.
    assert page.locator("[data-testid=reports-empty]").is_visible()
    assert "GPUBROKER_REPORT_TIME" in text(page, "reports-empty")
    assert "gpubroker report --date" in text(page, "reports-empty")
    assert not page.locator("[data-testid=reports]").is_visible()
    screenshot(page, "reports-empty")


def test_reports_page_lists_the_apis_figures_and_opens_a_report(
    page: Any,
    dashboard: Dashboard,
    database: Database,
    fleet: Fleet,
    now: datetime,
    browser_errors: list[str],
) -> None:
    today = now.astimezone(UTC).date()
    with database.sessions.begin() as session:  # what the nightly job does, for yesterday and today so far
        for day in (today - timedelta(days=1), today):
            build_and_store(session, fleet.acme.org_id, day, ReportOptions(timezone="UTC"), now)
    key = fleet.acme.keys[Role.VIEWER]
    sign_in(page, key, "/reports")
    drawn(page)
    listed = dashboard.api("/v1/reports", key)["items"]
    assert [r["day"] for r in listed] == [today.isoformat(), (today - timedelta(days=1)).isoformat()]
    assert Decimal(listed[0]["spend_usd"]) > 0  # the seeded fleet has run for two hours
    shown = rows(page, "reports")
    assert len(shown) == len(listed)
    for row, r in zip(shown, listed, strict=True):
        change = r["change_vs_previous_day_pct"]
        assert row == [
            r["day"],
            usd(r["spend_usd"]),
            f"{Decimal(r['gpu_hours']).quantize(Decimal('0.001'), ROUND_HALF_UP):,}",
            usd(r["savings_usd"]),  # "-$1.23" when negative, as the page writes it
            usd(r["commitment_waste_usd"]),
            "–" if change is None else f"{'+' if Decimal(change) > 0 else ''}{Decimal(change):.1f} %",
            str(r["anomalies"]),
            "HTML · CSV",
        ]
    assert (
        page.locator("[data-testid=report-csv]").first.get_attribute("href") == listed[0]["links"]["csv_url"]
    )
    screenshot(page, "reports")
    assert browser_errors == []
    # The report page is self-contained, down to its icon (a data: URL): it loads nothing else.
    page.locator("[data-testid=report-html]").first.click()  # an API GET: the session cookie signs it
    page.wait_for_url(f"**{listed[0]['links']['html_url']}")
    assert page.locator("h1").inner_text().startswith("GPU cost report:")
    assert today.isoformat() in page.inner_text("body")
    assert browser_errors == []


def test_empty_states_say_what_to_do_next(page: Any, database: Database) -> None:
    empty = make_tenant(database, "newcomer")
    sign_in(page, empty.keys[Role.VIEWER])
    drawn(page)
    assert page.locator("[data-testid=fleet-empty]").is_visible()
    assert "POST /v1/workloads" in text(page, "fleet-empty")
    assert text(page, "gpus-running") == "0"
    screenshot(page, "fleet-empty")
    for path, testid in (("/workloads", "workloads-empty"), ("/commitments", "commitments-empty")):
        page.goto(path)
        drawn(page)
        assert page.locator(f"[data-testid={testid}]").is_visible(), path
    screenshot(page, "commitments-empty")


def test_keyboard_skip_link_and_focus(page: Any, fleet: Fleet) -> None:
    sign_in(page, fleet.acme.keys[Role.VIEWER])
    drawn(page)
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # focus is visible
    page.keyboard.press("Enter")
    assert page.evaluate("() => document.activeElement.id") == "main"
    page.goto("/fleet")
    for _ in range(3):  # the skip link, then the navigation: Fleet, Cost
        page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.getAttribute('href')") == "/cost"
    page.keyboard.press("Enter")
    page.wait_for_url("**/cost")
    drawn(page)


def test_readable_at_laptop_size(page: Any, fleet: Fleet) -> None:
    sign_in(page, fleet.acme.keys[Role.VIEWER])
    drawn(page)
    # Nothing wider than the 1366-pixel viewport: no sideways scrolling on a laptop.
    for path in ("/fleet", "/cost", "/commitments", "/workloads", "/offers"):
        page.goto(path)
        drawn(page)
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 1366, path
