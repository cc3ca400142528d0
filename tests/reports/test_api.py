"""/v1/reports on a real database: list, JSON, HTML, CSV, errors and organization isolation."""

from __future__ import annotations

from datetime import date, timedelta

from fastapi.testclient import TestClient

from broker.db.engine import Database
from broker.reports.build import ReportOptions, build_and_store
from tests.api.conftest import Tenant
from tests.reports.fleet import AFTER, D, seed_fleet

OPTIONS = ReportOptions("UTC")


def store(database: Database, org_id: str, *days: date, fleet: bool = True) -> None:
    with database.sessions.begin() as session:
        if fleet:
            seed_fleet(session, org_id)
        for day in days:
            build_and_store(session, org_id, day, OPTIONS, AFTER)


def test_list_newest_first_with_headline_figures_and_pages(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    store(database, tenant.org_id, D, D - timedelta(days=1), D - timedelta(days=2))
    body = client.get("/v1/reports", headers=tenant.viewer).json()
    assert [r["day"] for r in body["items"]] == ["2026-11-23", "2026-11-22", "2026-11-21"]
    first = body["items"][0]
    assert (first["spend_usd"], first["gpu_hours"], first["savings_usd"]) == ("1020.00", "172.000", "-168.00")
    assert (first["change_vs_previous_day_pct"], first["anomalies"]) == ("22.6", 6)
    assert first["links"]["html_url"] == "/v1/reports/2026-11-23.html"
    assert body["next_cursor"] is None

    page = client.get("/v1/reports?limit=2", headers=tenant.viewer).json()
    assert [r["day"] for r in page["items"]] == ["2026-11-23", "2026-11-22"]
    rest = client.get(f"/v1/reports?limit=2&cursor={page['next_cursor']}", headers=tenant.viewer).json()
    assert [r["day"] for r in rest["items"]] == ["2026-11-21"] and rest["next_cursor"] is None

    ranged = client.get("/v1/reports?start=2026-11-22&end=2026-11-22", headers=tenant.viewer).json()
    assert [r["day"] for r in ranged["items"]] == ["2026-11-22"]


def test_one_report_as_json_html_and_csv(client: TestClient, database: Database, tenant: Tenant) -> None:
    store(database, tenant.org_id, D)
    response = client.get("/v1/reports/2026-11-23", headers=tenant.viewer)
    assert response.status_code == 200
    body = response.json()
    assert (body["org_id"], body["day"], body["timezone"]) == (tenant.org_id, "2026-11-23", "UTC")
    assert body["report"]["totals"]["spend_usd"] == "1020.00"
    assert body["delivery"] == {}

    html = client.get("/v1/reports/2026-11-23.html", headers=tenant.viewer)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "GPU cost report: acme" in html.text
    assert "http://" not in html.text and "https://" not in html.text

    csv = client.get("/v1/reports/2026-11-23.csv", headers=tenant.viewer)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.headers["content-disposition"] == 'attachment; filename="gpubroker-report-2026-11-23.csv"'
    assert csv.text.startswith("Report date,Time zone,Section")


def test_another_organizations_report_is_the_same_404_as_a_missing_one(
    client: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    store(database, other_tenant.org_id, D)
    for path in ("/v1/reports/2026-11-23", "/v1/reports/2026-11-23.html", "/v1/reports/2026-11-23.csv"):
        theirs = client.get(path, headers=tenant.viewer)
        missing = client.get(path.replace("2026-11-23", "2026-11-20"), headers=tenant.viewer)
        assert theirs.status_code == 404 == missing.status_code
        assert theirs.json()["type"] == missing.json()["type"] == "https://gpubroker.dev/problems/not-found"
        assert client.get(path, headers=other_tenant.viewer).status_code == 200
    assert client.get("/v1/reports", headers=tenant.viewer).json()["items"] == []


def test_bad_dates_and_ranges_are_422(client: TestClient, tenant: Tenant) -> None:
    for path in (
        "/v1/reports/2026-13-01",
        "/v1/reports/yesterday.html",
        "/v1/reports/2026-02-30.csv",
        "/v1/reports?start=2026-11-23&end=2026-11-01",
        "/v1/reports?cursor=not-a-day",
        "/v1/reports?limit=0",
    ):
        response = client.get(path, headers=tenant.viewer)
        assert response.status_code == 422, path
        assert response.json()["type"] == "https://gpubroker.dev/problems/validation-error"


def test_reports_need_a_key(client: TestClient) -> None:
    assert client.get("/v1/reports").status_code == 401
    assert client.get("/v1/reports/2026-11-23.html").status_code == 401
