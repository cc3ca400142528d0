"""/v1/costs on a real database against a fleet whose every figure is worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select

from broker.db.engine import Database
from broker.db.fleet import Project
from tests.api.conftest import NOW, Tenant
from tests.services.test_costs import add_commitment, add_prices, add_project, add_testcloud_instance, new_org

MIDNIGHT = datetime(2026, 11, 24, tzinfo=UTC)  # NOW is 12:00 on this day
H = timedelta(hours=1)


def _fleet(database: Database, tenant: Tenant) -> dict[str, str]:
    """The tenant's fleet (times relative to midnight before NOW, prices per instance-hour):

    * A, default project: on demand t8 at $30, yesterday 22:00 to 02:00 (today $60, month $120).
    * B, research: spot t8 at $16 from 08:00, running; its zone's spot price drops to $8 at 10:00
      (today 2 h x $16 + 2 h x $8 = $48); burns $8/h at NOW.
    * C, research's commitment: 16 GPUs at $2/GPU-hour from midnight for a month (today 16 x 12 h
      = 192 GPU-hours, $384); burns $32/h.
    * D, default project, 8 GPUs on C from 06:00, running: $0, 48 GPU-hours used, so C wastes
      (192 - 48) x $2 = $288.
    * on demand, t8 costs $40 in r1 (observed on the 1st): A $160, B $160, D $240.
    """
    with database.sessions.begin() as s:
        default = s.scalars(
            select(Project.id).where(Project.org_id == tenant.org_id, Project.name == "default")
        ).one()
        research = add_project(s, tenant.org_id, "research", max_usd_per_month="1000")
        add_prices(s, datetime(2026, 11, 1, tzinfo=UTC), [("r1", "", "t8", "H100", 8, "on-demand", "40")])
        a = add_testcloud_instance(
            s,
            tenant.org_id,
            default,
            launched_at=MIDNIGHT - 2 * H,
            ended_at=MIDNIGHT + 2 * H,
            price_per_hour="30",
        )
        b = add_testcloud_instance(
            s,
            tenant.org_id,
            research,
            launched_at=MIDNIGHT + 8 * H,
            price_per_hour="16",
            capacity_type="spot",
        )
        add_prices(s, MIDNIGHT + 10 * H, [("r1", "r1-a", "t8", "H100", 8, "spot", "8")])
        c = add_commitment(
            s, tenant.org_id, starts_at=MIDNIGHT, ends_at=MIDNIGHT + timedelta(days=30), project_id=research
        )
        d = add_testcloud_instance(
            s, tenant.org_id, default, launched_at=MIDNIGHT + 6 * H, commitment_id=c, capacity_type="reserved"
        )
        # Another organization's spend, which must never show.
        other_org, other_project = new_org(s, "stranger")
        add_testcloud_instance(s, other_org, other_project, launched_at=MIDNIGHT, price_per_hour="1000")
        add_commitment(s, other_org, starts_at=MIDNIGHT, ends_at=NOW)
    return {"default": default, "research": research, "a": a, "b": b, "c": c, "d": d}


def test_summary_of_a_hand_computed_fleet(client: TestClient, database: Database, tenant: Tenant) -> None:
    ids = _fleet(database, tenant)
    response = client.get("/v1/costs/summary", headers=tenant.viewer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["burn_rate_usd_per_hour"] == "40.0000"  # B $8 + C 16 x $2
    assert body["spend_today_usd"] == "492.00"  # A 60 + B 48 + C 384 + D 0
    assert body["spend_month_to_date_usd"] == "552.00"  # A 120 + B 48 + C 384
    assert body["savings_vs_on_demand_usd"] == "8.00"  # (160 + 160 + 240) - 552
    assert body["commitment_waste_usd"] == "288.00"
    assert body["budget_usd_per_month"] == "1000"
    assert body["projects"] == [
        {
            "project_id": ids["default"],
            "name": "default",
            "spend_today_usd": "60.00",
            "spend_month_to_date_usd": "120.00",
            "max_usd_per_month": None,
        },
        {
            "project_id": ids["research"],
            "name": "research",
            "spend_today_usd": "432.00",
            "spend_month_to_date_usd": "432.00",
            "max_usd_per_month": "1000",
        },
    ]


def test_summary_of_one_project_and_as_of_an_earlier_time(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    _fleet(database, tenant)
    body = client.get("/v1/costs/summary?project=research", headers=tenant.viewer).json()
    assert [p["name"] for p in body["projects"]] == ["research"]
    assert (body["burn_rate_usd_per_hour"], body["spend_today_usd"]) == ("40.0000", "432.00")
    # D (another project) still uses research's commitment: the waste is the same $288.
    assert body["commitment_waste_usd"] == "288.00"
    # At 01:00: only A ran since midnight ($30) and C charged 16 GPU-hours ($32); A burns $30/h.
    body = client.get(
        "/v1/costs/summary", params={"now": "2026-11-24T01:00:00Z"}, headers=tenant.viewer
    ).json()
    assert (body["spend_today_usd"], body["burn_rate_usd_per_hour"]) == ("62.00", "62.0000")
    assert body["spend_month_to_date_usd"] == "122.00"  # A 22:00-01:00 = $90, + C's $32


def test_costs_grouped_by_capacity_type_and_project(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    ids = _fleet(database, tenant)
    params = {"start": "2026-11-01T00:00:00Z", "end": "2026-11-25T00:00:00Z", "group_by": "capacity_type"}
    body = client.get("/v1/costs", params=params, headers=tenant.viewer).json()
    assert body["total_usd"] == "552.00" and body["total_savings_usd"] == "8.00"
    assert body["end"] == "2026-11-25T00:00:00Z"
    assert body["groups"] == [
        {
            "key": "reserved",
            "name": None,
            "gpu_hours": "48.000000",
            "usd": "384.00",
            "ondemand_usd": "240.00",
            "savings_usd": "-144.00",
            "commitment_waste_usd": "288.00",
        },
        {
            "key": "on-demand",
            "name": None,
            "gpu_hours": "32.000000",
            "usd": "120.00",
            "ondemand_usd": "160.00",
            "savings_usd": "40.00",
            "commitment_waste_usd": "0.00",
        },
        {
            "key": "spot",
            "name": None,
            "gpu_hours": "32.000000",
            "usd": "48.00",
            "ondemand_usd": "160.00",
            "savings_usd": "112.00",
            "commitment_waste_usd": "0.00",
        },
    ]
    body = client.get("/v1/costs", params={**params, "group_by": "project"}, headers=tenant.viewer).json()
    assert [(g["key"], g["name"], g["usd"]) for g in body["groups"]] == [
        (ids["research"], "research", "432.00"),
        (ids["default"], "default", "120.00"),
    ]
    body = client.get("/v1/costs", params={**params, "group_by": "workload"}, headers=tenant.viewer).json()
    assert len(body["groups"]) == 4  # A, B, D's workloads and the commitment's (no workload: key null)
    assert {g["key"] is None for g in body["groups"]} == {True, False}


def test_costs_default_to_this_month_and_stay_inside_the_tenant(
    client: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    _fleet(database, tenant)
    body = client.get("/v1/costs?group_by=provider", headers=tenant.viewer).json()
    assert body["start"] == "2026-11-01T00:00:00Z"
    assert [(g["key"], g["usd"]) for g in body["groups"]] == [("testcloud", "552.00")]
    other = client.get("/v1/costs/summary", headers=other_tenant.viewer).json()
    assert (other["spend_month_to_date_usd"], other["burn_rate_usd_per_hour"]) == ("0.00", "0.0000")
    assert client.get("/v1/costs?group_by=provider", headers=other_tenant.viewer).json()["groups"] == []
    response = client.get("/v1/costs/summary?project=research", headers=other_tenant.viewer)
    assert response.status_code == 404
    assert response.json()["type"].endswith("/not-found")


def test_bad_input_is_a_clear_problem(client: TestClient, tenant: Tenant) -> None:
    cases = [
        ("/v1/costs?start=2026-11-10T00:00:00Z&end=2026-11-09T00:00:00Z", "end"),
        ("/v1/costs?start=2024-01-01T00:00:00Z&end=2026-11-09T00:00:00Z", "end"),
        ("/v1/costs?group_by=colour", "group_by"),
        ("/v1/costs?start=2026-11-10T00:00:00", "start"),  # no time zone
        ("/v1/costs/summary?now=2026-11-25T00:00:00Z", "now"),  # the future
    ]
    for url, field in cases:
        response = client.get(url, headers=tenant.viewer)
        assert response.status_code == 422, url
        assert response.headers["content-type"].startswith("application/problem+json")
        body = response.json()
        assert body["type"].endswith("/validation-error")
        assert field in [e["field"] for e in body["errors"]], body
    assert client.get("/v1/costs/summary").status_code == 401
