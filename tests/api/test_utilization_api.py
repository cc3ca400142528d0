"""/v1/utilization: posting samples (dedupe, validation, tenancy) and summaries checked by hand."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from broker.db.engine import Database
from broker.db.fleet import InstanceRow, Project, UtilizationSample, WorkloadRow
from broker.services.tenancy import find_project, new_id
from broker.services.utilization import latest_utilization
from tests.api.conftest import NOW, Tenant


def add_instance(
    database: Database,
    org_id: str,
    *,
    project: str = "default",
    provider: str = "aws",
    region: str = "us-east-1",
    capacity_type: str = "on-demand",
    gpus: int = 8,
) -> str:
    """A running instance of ``org_id`` (with the workload it serves) in ``project`` (made if new)."""
    with database.sessions.begin() as session:
        prj = find_project(session, org_id, project)
        if prj is None:
            prj = Project(id=new_id("prj"), org_id=org_id, name=project, created_at=NOW)
            session.add(prj)
            session.flush()
        workload_id = new_id("wl")
        session.add(
            WorkloadRow(
                id=workload_id,
                org_id=org_id,
                project_id=prj.id,
                state="RUNNING",
                spec={"gpu": "H100", "count": gpus},
                gpus_per_node=gpus,
                nodes=1,
                created_at=NOW,
                updated_at=NOW,
                state_changed_at=NOW,
            )
        )
        session.flush()
        instance_id = new_id("in")
        session.add(
            InstanceRow(
                id=instance_id,
                org_id=org_id,
                project_id=prj.id,
                workload_id=workload_id,
                provider=provider,
                region=region,
                instance_type="p5.48xlarge",
                accelerator="H100",
                gpus=gpus,
                capacity_type=capacity_type,
                price_per_hour=Decimal("98.32"),
                state="running",
                created_at=NOW,
                updated_at=NOW,
            )
        )
    return instance_id


def sample(
    instance_id: str,
    gpu_index: int = 0,
    at: datetime = NOW - timedelta(minutes=1),
    util: str | int = "50",
    used: int | None = 40_000,
    total: int | None = 80_000,
    power: str | None = "350.5",
) -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "gpu_index": gpu_index,
        "at": at.isoformat(),
        "gpu_util_pct": util,
        "memory_used_mib": used,
        "memory_total_mib": total,
        "power_watts": power,
    }


def post(client: TestClient, tenant: Tenant, *samples: dict[str, Any]) -> Any:
    return client.post("/v1/utilization", json={"samples": list(samples)}, headers=tenant.operator)


def stored(database: Database) -> list[UtilizationSample]:
    with database.sessions() as session:
        return list(
            session.scalars(
                select(UtilizationSample).order_by(
                    UtilizationSample.instance_id, UtilizationSample.gpu_index, UtilizationSample.at
                )
            )
        )


# --- POST /v1/utilization ------------------------------------------------------------------------


def test_post_stores_samples_and_a_repost_counts_duplicates(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    inst = add_instance(database, tenant.org_id)
    batch = [sample(inst, 0, util="87.5"), sample(inst, 1, util="3", power=None)]
    first = post(client, tenant, *batch)
    assert first.status_code == 202
    assert first.json() == {"accepted": 2, "duplicates": 0}
    again = post(client, tenant, *batch, sample(inst, 0, at=NOW - timedelta(seconds=30)))
    assert again.status_code == 202
    assert again.json() == {"accepted": 1, "duplicates": 2}
    rows = stored(database)
    assert [(r.gpu_index, r.gpu_util_pct, r.power_watts) for r in rows] == [
        (0, Decimal("87.5"), Decimal("350.5")),
        (0, Decimal("50"), Decimal("350.5")),
        (1, Decimal("3"), None),
    ]
    assert {r.org_id for r in rows} == {tenant.org_id}
    assert rows[0].memory_used_mib == 40_000 and rows[0].memory_total_mib == 80_000


def test_duplicates_inside_one_batch_are_stored_once(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    inst = add_instance(database, tenant.org_id)
    response = post(client, tenant, sample(inst, util="10"), sample(inst, util="20"))
    assert response.json() == {"accepted": 1, "duplicates": 1}
    assert len(stored(database)) == 1


def test_a_full_batch_of_ten_thousand_samples_goes_in_one_post(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    inst = add_instance(database, tenant.org_id)
    samples = [
        sample(inst, gpu_index=i % 8, at=NOW - timedelta(seconds=10 * (i // 8) + 1), util=str(i % 101))
        for i in range(10_000)
    ]
    response = post(client, tenant, *samples)
    assert response.status_code == 202 and response.json() == {"accepted": 10_000, "duplicates": 0}
    with database.sessions() as session:
        count, total_util = session.execute(
            select(func.count(), func.sum(UtilizationSample.gpu_util_pct))
        ).one()
    assert count == 10_000 and total_util == sum(i % 101 for i in range(10_000))
    too_many = post(client, tenant, *samples, sample(inst, gpu_index=9))
    assert too_many.status_code == 422


def test_unknown_instance_is_a_404_naming_it_and_stores_nothing(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    inst = add_instance(database, tenant.org_id)
    response = post(client, tenant, sample(inst), sample("in_nope"), sample("in_gone"))
    assert response.status_code == 404
    body = response.json()
    assert body["type"].endswith("/not-found")
    assert body["instance_ids"] == ["in_gone", "in_nope"]
    assert "in_nope" in body["detail"] and "in_gone" in body["detail"] and inst not in body["detail"]
    assert stored(database) == []


def test_another_orgs_instance_is_the_same_404(
    client: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = add_instance(database, other_tenant.org_id)
    response = post(client, tenant, sample(theirs))
    assert response.status_code == 404
    assert response.json()["instance_ids"] == [theirs]
    missing = post(client, tenant, sample("in_0000000000000000")).json()
    assert set(missing) == set(response.json())  # indistinguishable from a missing one
    assert missing["type"] == response.json()["type"] and missing["title"] == response.json()["title"]
    assert stored(database) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"gpu_util_pct": "150"}, "samples.0.gpu_util_pct"),
        ({"gpu_util_pct": "-1"}, "samples.0.gpu_util_pct"),
        ({"gpu_index": 64}, "samples.0.gpu_index"),
        ({"power_watts": "5000.5"}, "samples.0.power_watts"),
        ({"memory_used_mib": -1}, "samples.0.memory_used_mib"),
        ({"memory_used_mib": 90_000}, "samples.0"),  # more used than there is
        ({"colour": "blue"}, "samples.0.colour"),
        ({"at": "2026-11-24T11:59:00"}, "samples.0.at"),  # no timezone
        ({"at": (NOW + timedelta(minutes=6)).isoformat()}, "samples.0.at"),
        ({"at": (NOW - timedelta(days=31)).isoformat()}, "samples.0.at"),
    ],
)
def test_invalid_samples_are_422_naming_the_field(
    client: TestClient, database: Database, tenant: Tenant, change: dict[str, Any], field: str
) -> None:
    inst = add_instance(database, tenant.org_id)
    response = post(client, tenant, {**sample(inst), **change}, sample(inst, gpu_index=1))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["type"].endswith("/validation-error")
    assert field in [e["field"] for e in body["errors"]]
    assert stored(database) == []  # all or nothing


def test_times_at_the_edges_of_the_window_are_accepted(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    inst = add_instance(database, tenant.org_id)
    response = post(
        client,
        tenant,
        sample(inst, at=NOW + timedelta(minutes=5)),
        sample(inst, at=NOW - timedelta(days=30) + timedelta(seconds=1)),
    )
    assert response.json() == {"accepted": 2, "duplicates": 0}


def test_an_empty_batch_and_an_unknown_top_level_field_are_422(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    inst = add_instance(database, tenant.org_id)
    empty = client.post("/v1/utilization", json={"samples": []}, headers=tenant.operator)
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "samples"
    extra = client.post(
        "/v1/utilization", json={"samples": [sample(inst)], "host": "gpu-1"}, headers=tenant.operator
    )
    assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "host"


def test_posting_needs_an_operator_key(client: TestClient, database: Database, tenant: Tenant) -> None:
    inst = add_instance(database, tenant.org_id)
    body = {"samples": [sample(inst)]}
    assert client.post("/v1/utilization", json=body).status_code == 401
    forbidden = client.post("/v1/utilization", json=body, headers=tenant.viewer)
    assert forbidden.status_code == 403 and forbidden.json()["type"].endswith("/forbidden")
    assert client.post("/v1/utilization", json=body, headers=tenant.admin).status_code == 202
    assert len(stored(database)) == 1


# --- GET /v1/utilization/summary -------------------------------------------------------------------

T1, T2 = NOW - timedelta(minutes=40), NOW - timedelta(minutes=20)


@pytest.fixture
def fleet(client: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant) -> dict[str, str]:
    """Two of the tenant's instances in two projects and clouds, and one of another org's.

    a (default, aws us-east-1 on-demand, 2 GPUs) | b (research, gcp us-central1 spot, 1 GPU)
    a/0 @T1: 80%, 40000/80000 MiB (50%), 500 W    b/0 @T1:  0%,     0/80000 (0%),  60 W
    a/1 @T1:  2%,  8000/80000 MiB (10%), 100 W    b/0 @T2: 50%, 20000/80000 (25%), power n/a
    a/0 @T2: 90%, 60000/80000 MiB (75%), 600 W
    plus a/0 two hours ago (outside the default hour)."""
    a = add_instance(database, tenant.org_id, provider="aws", region="us-east-1", capacity_type="on-demand")
    b = add_instance(
        database,
        tenant.org_id,
        project="research",
        provider="gcp",
        region="us-central1",
        capacity_type="spot",
    )
    theirs = add_instance(database, other_tenant.org_id, provider="aws", region="us-east-1")
    ok = post(
        client,
        tenant,
        sample(a, 0, T1, "80", 40_000, 80_000, "500"),
        sample(a, 1, T1, "2", 8_000, 80_000, "100"),
        sample(a, 0, T2, "90", 60_000, 80_000, "600"),
        sample(b, 0, T1, "0", 0, 80_000, "60"),
        sample(b, 0, T2, "50", 20_000, 80_000, None),
        sample(a, 0, NOW - timedelta(hours=2), "10", 0, 80_000, "50"),
    )
    assert ok.status_code == 202
    theirs_ok = client.post(
        "/v1/utilization",
        json={"samples": [sample(theirs, 0, T1, "100", 80_000, 80_000, "700")]},
        headers=other_tenant.operator,
    )
    assert theirs_ok.status_code == 202
    return {"a": a, "b": b, "theirs": theirs}


def summary(client: TestClient, tenant: Tenant, **params: str) -> dict[str, Any]:
    response = client.get("/v1/utilization/summary", params=params, headers=tenant.viewer)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def numbers(group: dict[str, Any]) -> tuple[Any, ...]:
    def dec(v: str | None) -> Decimal | None:
        return None if v is None else Decimal(v)

    return (
        group["instances"],
        group["gpus"],
        group["samples"],
        dec(group["avg_gpu_util_pct"]),
        dec(group["p95_gpu_util_pct"]),
        dec(group["avg_memory_used_pct"]),
        dec(group["avg_power_watts"]),
        dec(group["idle_gpu_fraction"]),
    )


D = Decimal
DEFAULT_NUMBERS = (1, 2, 3, D("57.33"), D("90"), D("45"), D("400"), D("0.3333"))  # (80+2+90)/3 ...
RESEARCH_NUMBERS = (1, 1, 2, D("25"), D("50"), D("12.5"), D("60"), D("0.5"))  # power: 60 only


def test_summary_by_org_over_the_default_hour(
    client: TestClient, tenant: Tenant, fleet: dict[str, str]
) -> None:
    body = summary(client, tenant)
    assert body["group_by"] == "org" and body["project"] is None
    assert datetime.fromisoformat(body["end"]) == NOW
    assert datetime.fromisoformat(body["start"]) == NOW - timedelta(hours=1)
    [group] = body["groups"]
    assert group["key"] == tenant.org_id
    # util (80+2+90+0+50)/5; memory (50+10+75+0+25)/5; power (500+100+600+60)/4; idle 2 of 5
    assert numbers(group) == (2, 3, 5, D("44.4"), D("90"), D("32"), D("315"), D("0.4"))


@pytest.mark.parametrize(
    ("group_by", "expected"),
    [
        ("project", {"default": DEFAULT_NUMBERS, "research": RESEARCH_NUMBERS}),
        ("cloud", {"aws": DEFAULT_NUMBERS, "gcp": RESEARCH_NUMBERS}),
        ("region", {"us-east-1": DEFAULT_NUMBERS, "us-central1": RESEARCH_NUMBERS}),
        ("capacity_type", {"on-demand": DEFAULT_NUMBERS, "spot": RESEARCH_NUMBERS}),
    ],
)
def test_summary_groups_match_hand_computed_numbers(
    client: TestClient,
    tenant: Tenant,
    fleet: dict[str, str],
    group_by: str,
    expected: dict[str, tuple[Any, ...]],
) -> None:
    groups = summary(client, tenant, group_by=group_by)["groups"]
    assert {g["key"]: numbers(g) for g in groups} == expected
    assert [g["key"] for g in groups] == sorted(expected)  # ordered by key
    if group_by == "region":
        assert {g["key"]: g["cloud"] for g in groups} == {"us-east-1": "aws", "us-central1": "gcp"}
    if group_by == "project":
        assert all(g["project_id"].startswith("prj_") for g in groups)


def test_summary_range_and_project_filter(client: TestClient, tenant: Tenant, fleet: dict[str, str]) -> None:
    three_hours = {"start": (NOW - timedelta(hours=3)).isoformat(), "end": NOW.isoformat()}
    body = summary(client, tenant, group_by="project", project="default", **three_hours)
    assert body["project"] == "default"
    [group] = body["groups"]
    # the sample from two hours ago is now in: util (80+2+90+10)/4, memory (50+10+75+0)/4
    assert group["key"] == "default"
    assert numbers(group) == (1, 2, 4, D("45.5"), D("90"), D("33.75"), D("312.5"), D("0.25"))
    # end is exclusive: a window ending at T1 leaves T1's samples out
    before = summary(client, tenant, start=(T1 - timedelta(minutes=5)).isoformat(), end=T1.isoformat())
    assert before["groups"] == []
    by_id = summary(client, tenant, project=group["project_id"], group_by="cloud")
    assert [g["key"] for g in by_id["groups"]] == ["aws"]


def test_summary_shows_only_the_callers_org(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, fleet: dict[str, str]
) -> None:
    theirs = summary(client, other_tenant, group_by="cloud")["groups"]
    assert [(g["key"], g["instances"], g["samples"], g["avg_gpu_util_pct"]) for g in theirs] == [
        ("aws", 1, 1, "100.00")
    ]
    ours = {g["key"]: g["samples"] for g in summary(client, tenant, group_by="cloud")["groups"]}
    assert ours == {"aws": 3, "gcp": 2}  # the other org's aws sample is not counted
    research = client.get(
        "/v1/utilization/summary", params={"project": "research"}, headers=other_tenant.viewer
    )
    assert research.status_code == 404 and research.json()["type"].endswith("/not-found")


@pytest.mark.parametrize(
    "params",
    [
        {"start": NOW.isoformat(), "end": (NOW - timedelta(hours=1)).isoformat()},  # end before start
        {"start": NOW.isoformat(), "end": NOW.isoformat()},  # empty
        {"start": (NOW - timedelta(days=94)).isoformat(), "end": NOW.isoformat()},  # too long
        {"start": "2026-11-24T10:00:00"},  # no timezone
        {"group_by": "zone"},
    ],
)
def test_summary_rejects_bad_queries(client: TestClient, tenant: Tenant, params: dict[str, str]) -> None:
    response = client.get("/v1/utilization/summary", params=params, headers=tenant.viewer)
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/validation-error")


def test_summary_unknown_project_is_404_and_needs_a_key(client: TestClient, tenant: Tenant) -> None:
    response = client.get("/v1/utilization/summary", params={"project": "nope"}, headers=tenant.viewer)
    assert response.status_code == 404 and "nope" in response.json()["detail"]
    assert client.get("/v1/utilization/summary").status_code == 401


def test_summary_accepts_a_93_day_span(client: TestClient, tenant: Tenant, fleet: dict[str, str]) -> None:
    body = summary(client, tenant, start=(NOW - timedelta(days=93)).isoformat(), end=NOW.isoformat())
    assert body["groups"][0]["samples"] == 6


# --- latest_utilization -------------------------------------------------------------------------


def test_latest_utilization_averages_each_gpus_newest_sample_in_the_last_ten_minutes(
    client: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    a = add_instance(database, tenant.org_id)
    stale = add_instance(database, tenant.org_id)
    silent = add_instance(database, tenant.org_id)
    theirs = add_instance(database, other_tenant.org_id)
    post(
        client,
        tenant,
        sample(a, 0, NOW - timedelta(minutes=5), "10"),
        sample(a, 0, NOW - timedelta(minutes=1), "40"),  # GPU 0's newest
        sample(a, 1, NOW - timedelta(minutes=2), "81"),  # GPU 1's newest
        sample(stale, 0, NOW - timedelta(minutes=11), "99"),  # too old
    )
    client.post(
        "/v1/utilization",
        json={"samples": [sample(theirs, 0, NOW - timedelta(minutes=1), "70")]},
        headers=other_tenant.operator,
    )
    with database.sessions() as session:
        latest = latest_utilization(session, tenant.org_id, [a, stale, silent, theirs], now=NOW)
        assert latest_utilization(session, tenant.org_id, [], now=NOW) == {}
    assert latest == {a: Decimal("60.50")}  # (40 + 81) / 2
