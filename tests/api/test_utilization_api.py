"""/v1/utilization: posting samples (dedupe, validation, tenancy) and summaries checked by hand."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from broker.db.engine import Database
from broker.db.fleet import InstanceRow, UtilizationSample
from broker.services.utilization import latest_utilization
from tests.api.conftest import NOW, Tenant
from tests.fleet_rows import add_running_instance


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
    inst = add_running_instance(database, tenant.org_id)
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
    inst = add_running_instance(database, tenant.org_id)
    response = post(client, tenant, sample(inst, util="10"), sample(inst, util="20"))
    assert response.json() == {"accepted": 1, "duplicates": 1}
    assert len(stored(database)) == 1


def test_a_full_batch_of_ten_thousand_samples_goes_in_one_post(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    inst = add_running_instance(database, tenant.org_id)
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
    inst = add_running_instance(database, tenant.org_id)
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
    theirs = add_running_instance(database, other_tenant.org_id)
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
    inst = add_running_instance(database, tenant.org_id)
    response = post(client, tenant, {**sample(inst), **change}, sample(inst, gpu_index=1))
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["type"].endswith("/validation-error")
    assert field in [e["field"] for e in body["errors"]]
    assert stored(database) == []  # all or nothing


def test_times_at_the_edges_of_the_window_are_accepted(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    inst = add_running_instance(database, tenant.org_id)
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
    inst = add_running_instance(database, tenant.org_id)
    empty = client.post("/v1/utilization", json={"samples": []}, headers=tenant.operator)
    assert empty.status_code == 422 and empty.json()["errors"][0]["field"] == "samples"
    extra = client.post(
        "/v1/utilization", json={"samples": [sample(inst)], "host": "gpu-1"}, headers=tenant.operator
    )
    assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "host"


def test_posting_needs_an_operator_key(client: TestClient, database: Database, tenant: Tenant) -> None:
    inst = add_running_instance(database, tenant.org_id)
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
    a = add_running_instance(
        database, tenant.org_id, provider="aws", region="us-east-1", capacity_type="on-demand"
    )
    b = add_running_instance(
        database,
        tenant.org_id,
        project="research",
        provider="gcp",
        region="us-central1",
        capacity_type="spot",
    )
    theirs = add_running_instance(database, other_tenant.org_id, provider="aws", region="us-east-1")
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
    a = add_running_instance(database, tenant.org_id)
    stale = add_running_instance(database, tenant.org_id)
    silent = add_running_instance(database, tenant.org_id)
    theirs = add_running_instance(database, other_tenant.org_id)
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


# --- GET /v1/utilization/instances (the heat map) ----------------------------------------------------


def history(client: TestClient, tenant: Tenant, **params: str) -> dict[str, Any]:
    response = client.get("/v1/utilization/instances", params=params, headers=tenant.viewer)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def cells(item: dict[str, Any]) -> list[tuple[Decimal | None, int]]:
    return [
        (None if b["gpu_util_pct"] is None else Decimal(b["gpu_util_pct"]), b["samples"])
        for b in item["buckets"]
    ]


def test_instance_history_buckets_the_last_hour_by_five_minutes(
    client: TestClient, tenant: Tenant, fleet: dict[str, str]
) -> None:
    body = history(client, tenant)
    assert datetime.fromisoformat(body["start"]) == NOW - timedelta(hours=1)
    assert datetime.fromisoformat(body["end"]) == NOW and body["bucket_seconds"] == 300
    items = {i["id"]: i for i in body["items"]}
    assert set(items) == {fleet["a"], fleet["b"]}  # never the other org's instance
    a, b = items[fleet["a"]], items[fleet["b"]]
    assert (a["provider"], a["region"], a["capacity_type"], a["gpus"]) == ("aws", "us-east-1", "on-demand", 8)
    assert Decimal(a["price_per_hour"]) == Decimal("98.32")
    starts = [datetime.fromisoformat(x["at"]) for x in a["buckets"]]
    assert starts == [NOW - timedelta(hours=1) + timedelta(minutes=5 * k) for k in range(12)]
    empty = (None, 0)
    # T1 = NOW-40 min starts bucket 4 exactly (a bucket includes its start); T2 = NOW-20 min is bucket 8
    expected_a = [empty] * 12
    expected_a[4] = (D("41.00"), 2)  # GPU 0 at 80 %, GPU 1 at 2 %
    expected_a[8] = (D("90.00"), 1)
    expected_b = [empty] * 12
    expected_b[4] = (D("0.00"), 1)
    expected_b[8] = (D("50.00"), 1)
    assert cells(a) == expected_a and cells(b) == expected_b


def test_instance_history_range_bucket_size_and_a_short_last_bucket(
    client: TestClient, tenant: Tenant, fleet: dict[str, str]
) -> None:
    hours = history(
        client,
        tenant,
        start=(NOW - timedelta(hours=3)).isoformat(),
        end=NOW.isoformat(),
        bucket_seconds="3600",
    )
    a = next(i for i in hours["items"] if i["id"] == fleet["a"])
    # the sample two hours ago opens the middle bucket; the last holds (80 + 2 + 90) / 3
    assert cells(a) == [(None, 0), (D("10.00"), 1), (D("57.33"), 3)]
    # 50 minutes in 20-minute buckets: 20 + 20 + 10; T1 falls in the first, T2 in the second
    short = history(client, tenant, start=(NOW - timedelta(minutes=50)).isoformat(), bucket_seconds="1200")
    b = next(i for i in short["items"] if i["id"] == fleet["b"])
    assert [datetime.fromisoformat(x["at"]) for x in b["buckets"]] == [
        NOW - timedelta(minutes=m) for m in (50, 30, 10)
    ]
    assert cells(b) == [(D("0.00"), 1), (D("50.00"), 1), (None, 0)]


def test_instance_history_pages_by_instance_id(
    client: TestClient, tenant: Tenant, fleet: dict[str, str]
) -> None:
    first = history(client, tenant, limit="1")
    assert len(first["items"]) == 1 and first["next_cursor"] == first["items"][0]["id"]
    second = history(client, tenant, limit="1", cursor=first["next_cursor"])
    assert second["next_cursor"] is None
    assert sorted([first["items"][0]["id"], second["items"][0]["id"]]) == sorted([fleet["a"], fleet["b"]])


@pytest.mark.parametrize(
    "params",
    [
        {"bucket_seconds": "10"},  # finer than the agent samples
        {"bucket_seconds": "100000"},
        {"start": (NOW - timedelta(days=2)).isoformat(), "bucket_seconds": "60"},  # 2,880 buckets
        {"start": NOW.isoformat(), "end": (NOW - timedelta(hours=1)).isoformat()},
        {"limit": "0"},
        {"limit": "501"},
    ],
)
def test_instance_history_rejects_absurd_queries(
    client: TestClient, tenant: Tenant, params: dict[str, str]
) -> None:
    response = client.get("/v1/utilization/instances", params=params, headers=tenant.viewer)
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/validation-error")


# --- GET /v1/utilization/idle ---------------------------------------------------------------------


@pytest.fixture
def idle_fleet(
    client: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> dict[str, str]:
    """Threshold 10 %, last 30 minutes (window: NOW-30 min exclusive .. NOW inclusive):

    quiet (2 GPUs): 70 % at -50 min, then 3 (-40), 4 (-25), 9.99 (-10, GPU 1), 2 (-1); 99 at +2 (future)
    never (4 GPUs): 1 % at -3 h, 0 % at -20 min: never busy in the 7-day lookback
    busy: 1 % at -15 min, exactly 10 % at -5 min (10 is not below 10)
    silent: 0 % at exactly -30 min, just outside the window
    stopped: idle samples, but no longer running; theirs: another org's idle instance."""
    ids = {
        "quiet": add_running_instance(database, tenant.org_id, gpus=2),
        "never": add_running_instance(database, tenant.org_id, gpus=4, provider="gcp", region="us-central1"),
        "busy": add_running_instance(database, tenant.org_id),
        "silent": add_running_instance(database, tenant.org_id),
        "stopped": add_running_instance(database, tenant.org_id),
        "theirs": add_running_instance(database, other_tenant.org_id),
    }
    m = lambda minutes: NOW + timedelta(minutes=minutes)  # noqa: E731
    ok = post(
        client,
        tenant,
        sample(ids["quiet"], 0, m(-50), "70"),
        sample(ids["quiet"], 0, m(-40), "3"),
        sample(ids["quiet"], 0, m(-25), "4"),
        sample(ids["quiet"], 1, m(-10), "9.99"),
        sample(ids["quiet"], 0, m(-1), "2"),
        sample(ids["quiet"], 0, m(2), "99"),
        sample(ids["never"], 0, m(-180), "1"),
        sample(ids["never"], 0, m(-20), "0"),
        sample(ids["busy"], 0, m(-15), "1"),
        sample(ids["busy"], 0, m(-5), "10"),
        sample(ids["silent"], 0, m(-30), "0"),
        sample(ids["stopped"], 0, m(-5), "0"),
    )
    assert ok.status_code == 202, ok.text
    theirs = client.post(
        "/v1/utilization",
        json={"samples": [sample(ids["theirs"], 0, m(-5), "0")]},
        headers=other_tenant.operator,
    )
    assert theirs.status_code == 202
    with database.sessions.begin() as session:
        stopped = session.get(InstanceRow, ids["stopped"])
        assert stopped is not None
        stopped.state = "terminated"
    return ids


def idle(client: TestClient, tenant: Tenant, **params: str) -> dict[str, Any]:
    response = client.get("/v1/utilization/idle", params=params, headers=tenant.viewer)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_idle_lists_instances_whose_every_recent_sample_is_below_the_threshold(
    client: TestClient, tenant: Tenant, idle_fleet: dict[str, str]
) -> None:
    body = idle(client, tenant)  # defaults: 10 %, 30 minutes
    assert Decimal(body["threshold_pct"]) == 10 and body["minutes"] == 30
    assert datetime.fromisoformat(body["at"]) == NOW
    assert datetime.fromisoformat(body["window_start"]) == NOW - timedelta(minutes=30)
    # idle longest first: "never" since its first sample three hours ago, "quiet" since after its 70 %
    assert [i["id"] for i in body["items"]] == [idle_fleet["never"], idle_fleet["quiet"]]
    never, quiet = body["items"]
    assert datetime.fromisoformat(never["idle_since"]) == NOW - timedelta(hours=3)
    assert datetime.fromisoformat(quiet["idle_since"]) == NOW - timedelta(minutes=40)
    assert (quiet["samples"], Decimal(quiet["max_gpu_util_pct"]), Decimal(quiet["avg_gpu_util_pct"])) == (
        3,
        D("9.99"),
        D("5.33"),  # (4 + 9.99 + 2) / 3; the future 99 % is not "in the last 30 minutes"
    )
    assert (never["provider"], never["gpus"], Decimal(never["price_per_hour"])) == ("gcp", 4, D("98.32"))
    assert body["idle_gpus"] == 6
    assert Decimal(body["idle_cost_per_hour"]) == D("196.64")  # 2 x 98.32
    assert body["busy_instances"] == 1  # "busy": its 10 % is not below 10 %
    assert [i["id"] for i in body["no_recent_samples"]] == [idle_fleet["silent"]]
    shown = str(body)
    assert idle_fleet["stopped"] not in shown and idle_fleet["theirs"] not in shown


def test_idle_follows_the_threshold_and_the_minutes(
    client: TestClient, tenant: Tenant, idle_fleet: dict[str, str]
) -> None:
    hour = idle(client, tenant, minutes="60")
    # quiet's 70 % at -50 min is now in the window; silent's 0 % at -30 min too
    assert [i["id"] for i in hour["items"]] == [idle_fleet["never"], idle_fleet["silent"]]
    assert datetime.fromisoformat(hour["items"][1]["idle_since"]) == NOW - timedelta(minutes=30)
    assert hour["busy_instances"] == 2 and hour["no_recent_samples"] == []
    strict = idle(client, tenant, threshold_pct="9.99")
    assert [i["id"] for i in strict["items"]] == [idle_fleet["never"]]  # 9.99 is not below 9.99
    loose = idle(client, tenant, threshold_pct="10.5")
    assert {i["id"] for i in loose["items"]} == {idle_fleet["never"], idle_fleet["quiet"], idle_fleet["busy"]}
    busy = next(i for i in loose["items"] if i["id"] == idle_fleet["busy"])
    assert datetime.fromisoformat(busy["idle_since"]) == NOW - timedelta(minutes=15)


def test_idle_is_per_org_and_needs_a_key(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, idle_fleet: dict[str, str]
) -> None:
    theirs = idle(client, other_tenant)
    assert [i["id"] for i in theirs["items"]] == [idle_fleet["theirs"]]
    assert theirs["idle_gpus"] == 8 and theirs["no_recent_samples"] == []
    assert client.get("/v1/utilization/idle").status_code == 401
    assert client.get("/v1/utilization/instances").status_code == 401


@pytest.mark.parametrize(
    "params",
    [
        {"threshold_pct": "0"},
        {"threshold_pct": "-5"},
        {"threshold_pct": "101"},
        {"threshold_pct": "lots"},
        {"minutes": "0"},
        {"minutes": "1441"},
    ],
)
def test_idle_rejects_absurd_queries(client: TestClient, tenant: Tenant, params: dict[str, str]) -> None:
    response = client.get("/v1/utilization/idle", params=params, headers=tenant.viewer)
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("/validation-error")
