"""/v1/instances on a real database: fields, filters, keyset pages, utilization, tenant isolation."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import get_args

from fastapi.testclient import TestClient

from api.routes.instances import InstanceState
from broker.db.engine import Database
from broker.db.fleet import INSTANCE_STATES, UtilizationSample
from tests.api.conftest import NOW, Tenant
from tests.fleet_rows import add_instance_row, add_workload_row, ensure_project


def _fleet(database: Database, tenant: Tenant) -> dict[str, str]:
    """Three instances of one workload and one of another, created a minute apart."""
    org = tenant.org_id
    with database.sessions.begin() as s:
        project = ensure_project(s, org)
        w1 = add_workload_row(s, org, project)
        w2 = add_workload_row(s, org, project)
        base = NOW - timedelta(hours=2)
        return {
            "a": add_instance_row(
                s,
                org,
                project,
                workload_id=w1,
                created_at=base,
                launched_at=base,
                state="terminated",
                ended_at=base + timedelta(minutes=30),
            ),
            "b": add_instance_row(
                s,
                org,
                project,
                workload_id=w1,
                created_at=base + timedelta(minutes=1),
                launched_at=base,
                capacity_type="spot",
                price_per_hour="3.25",
            ),
            "c": add_instance_row(
                s,
                org,
                project,
                workload_id=w1,
                created_at=base + timedelta(minutes=2),
                provider="gcp",
                state="pending",
            ),
            "d": add_instance_row(s, org, project, workload_id=w2, created_at=base + timedelta(minutes=3)),
            "w1": w1,
            "w2": w2,
        }


def test_the_state_filter_accepts_exactly_the_stored_states() -> None:
    assert set(get_args(InstanceState)) == set(INSTANCE_STATES)


def test_get_one_has_every_field_and_money_is_a_string(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    ids = _fleet(database, tenant)
    response = client.get(f"/v1/instances/{ids['b']}", headers=tenant.viewer)
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": ids["b"],
        "workload_id": ids["w1"],
        "project": "default",
        "provider": "aws",
        "provider_instance_id": f"prov-{ids['b']}",
        "region": "us-east-1",
        "zone": "us-east-1a",
        "instance_type": "p5.48xlarge",
        "accelerator": "H100",
        "gpus": 8,
        "capacity_type": "spot",
        "price_per_hour": "3.25",
        "commitment_id": None,
        "state": "running",
        "state_reason": None,
        "notice_at": None,
        "launched_at": "2026-11-24T10:00:00Z",
        "ended_at": None,
        "created_at": "2026-11-24T10:01:00Z",
        "current_gpu_util_pct": None,
    }


def test_list_is_newest_first_and_filters(client: TestClient, database: Database, tenant: Tenant) -> None:
    ids = _fleet(database, tenant)

    def listed(**params: str) -> list[str]:
        response = client.get("/v1/instances", params=params, headers=tenant.viewer)
        assert response.status_code == 200, response.text
        return [i["id"] for i in response.json()["items"]]

    assert listed() == [ids["d"], ids["c"], ids["b"], ids["a"]]
    assert listed(workload_id=ids["w1"]) == [ids["c"], ids["b"], ids["a"]]
    assert listed(state="running") == [ids["d"], ids["b"]]
    assert listed(provider="gcp") == [ids["c"]]
    assert listed(capacity_type="spot") == [ids["b"]]
    assert listed(workload_id=ids["w1"], state="running") == [ids["b"]]
    assert listed(state="preempted") == []


def test_cursor_pages_cover_everything_once(client: TestClient, database: Database, tenant: Tenant) -> None:
    ids = _fleet(database, tenant)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, str | int] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/v1/instances", params=params, headers=tenant.viewer).json()
        seen += [i["id"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 2
    assert seen == [ids["d"], ids["c"], ids["b"], ids["a"]]


def test_bad_filters_and_cursor_are_422(client: TestClient, tenant: Tenant) -> None:
    for params in ({"state": "exploded"}, {"capacity_type": "free"}, {"limit": 0}, {"limit": 501}):
        response = client.get("/v1/instances", params=params, headers=tenant.viewer)
        assert response.status_code == 422, params
    response = client.get("/v1/instances", params={"cursor": "not-a-cursor"}, headers=tenant.viewer)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "cursor"


def test_current_utilization_is_the_mean_at_the_latest_fresh_sample(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    ids = _fleet(database, tenant)
    with database.sessions.begin() as s:
        for gpu, (old, new) in enumerate([(90, 10), (90, 20), (90, 30), (90, 40)]):
            for at, pct in ((NOW - timedelta(minutes=5), old), (NOW - timedelta(minutes=2), new)):
                s.add(
                    UtilizationSample(
                        instance_id=ids["b"],
                        gpu_index=gpu,
                        at=at,
                        org_id=tenant.org_id,
                        gpu_util_pct=Decimal(pct),
                    )
                )
        # Only a sample older than ten minutes: no current figure.
        s.add(
            UtilizationSample(
                instance_id=ids["d"],
                gpu_index=0,
                at=NOW - timedelta(minutes=11),
                org_id=tenant.org_id,
                gpu_util_pct=Decimal(77),
            )
        )
    body = client.get("/v1/instances", headers=tenant.viewer).json()
    util = {i["id"]: i["current_gpu_util_pct"] for i in body["items"]}
    assert util == {ids["a"]: None, ids["b"]: "25.0", ids["c"]: None, ids["d"]: None}
    assert (
        client.get(f"/v1/instances/{ids['b']}", headers=tenant.viewer).json()["current_gpu_util_pct"]
        == "25.0"
    )


def test_another_orgs_instances_are_invisible(
    client: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    ids = _fleet(database, tenant)
    theirs = client.get(f"/v1/instances/{ids['b']}", headers=other_tenant.viewer)
    missing = client.get("/v1/instances/i_nonexistent", headers=other_tenant.viewer)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["type"] == missing.json()["type"] == "https://gpubroker.dev/problems/not-found"
    assert client.get("/v1/instances", headers=other_tenant.viewer).json() == {
        "items": [],
        "next_cursor": None,
    }
    assert len(client.get("/v1/instances", headers=tenant.viewer).json()["items"]) == 4


def test_instances_need_a_key(client: TestClient) -> None:
    assert client.get("/v1/instances").status_code == 401
