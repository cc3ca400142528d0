"""/v1/workloads: validation, tenant isolation, idempotency, pagination, roles, limits, lifecycle."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from broker.db.engine import Database
from broker.db.fleet import WorkloadEvent, WorkloadRow
from tests.api.conftest import NOW, Tenant

BODY: dict[str, Any] = {"gpu_types": ["H100"], "gpus_per_node": 8, "expected_hours": "4", "capacity": "spot"}


def create(client: TestClient, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/workloads", json={**BODY, **extra}, headers=tenant.operator)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_returns_the_workload_and_records_an_event(
    client: TestClient, tenant: Tenant, database: Database
) -> None:
    body = create(client, tenant, name="llama-ft", labels={"team": "research"}, max_price_per_gpu_hour="3.10")
    assert body["state"] == "PENDING" and body["project"] == "default"
    assert body["max_price_per_gpu_hour"] == "3.10"  # money is a string, exact
    assert body["labels"] == {"team": "research"}
    with database.sessions() as session:
        events = session.scalars(select(WorkloadEvent).where(WorkloadEvent.workload_id == body["id"])).all()
    assert [(e.kind, e.to_state) for e in events] == [("submitted", "PENDING")]
    got = client.get(f"/v1/workloads/{body['id']}", headers=tenant.viewer)
    assert got.status_code == 200 and got.json() == body


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"gpus_per_node": 0}, "gpus_per_node"),
        ({"gpus_per_node": 10_000}, "gpus_per_node"),
        ({"nodes": 0}, "nodes"),
        ({"max_price_per_gpu_hour": "-1"}, "max_price_per_gpu_hour"),
        ({"max_price_per_gpu_hour": "NaN"}, "max_price_per_gpu_hour"),
        ({"expected_hours": "0"}, "expected_hours"),
        ({"gpu_types": []}, "gpu_types"),
        ({"capacity": "cheap"}, "capacity"),
        ({"colour": "blue"}, "colour"),
        ({"deadline": "2026-12-01T00:00:00"}, "deadline"),
        ({"run": {"kind": "container"}}, "run"),
        ({"labels": {"bad key!": "x"}}, "labels"),
    ],
)
def test_absurd_values_are_422_naming_the_field(
    client: TestClient, tenant: Tenant, change: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/workloads", json={**BODY, **change}, headers=tenant.operator)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["type"].endswith("/validation-error")
    assert any(e["field"].startswith(field) for e in problem["errors"]), problem


def test_deadline_in_the_past_is_422(client: TestClient, tenant: Tenant) -> None:
    past = (NOW - timedelta(hours=1)).isoformat()
    response = client.post("/v1/workloads", json={**BODY, "deadline": past}, headers=tenant.operator)
    assert response.status_code == 422
    assert "deadline" in response.json()["detail"]


def test_spot_for_a_non_interruptible_workload_is_422(client: TestClient, tenant: Tenant) -> None:
    response = client.post("/v1/workloads", json={**BODY, "interruptible": False}, headers=tenant.operator)
    assert response.status_code == 422
    assert "interruptible" in response.json()["detail"]


def test_every_endpoint_needs_a_key_and_the_right_role(client: TestClient, tenant: Tenant) -> None:
    assert client.get("/v1/workloads").status_code == 401
    assert client.get("/v1/offers").status_code == 401
    bad = client.get("/v1/workloads", headers={"Authorization": "Bearer gpb_0123456789abcdef_nope"})
    assert bad.status_code == 401 and bad.json()["type"].endswith("/unauthorized")
    forbidden = client.post("/v1/workloads", json=BODY, headers=tenant.viewer)
    assert forbidden.status_code == 403 and forbidden.json()["type"].endswith("/forbidden")
    assert client.get("/healthz").status_code == 200  # the probes stay open


def test_another_orgs_workload_is_a_404_exactly_like_a_missing_one(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = create(client, other_tenant)
    missing = client.get("/v1/workloads/wl_0000000000000000", headers=tenant.admin)
    foreign = client.get(f"/v1/workloads/{theirs['id']}", headers=tenant.admin)
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json()["type"] == missing.json()["type"]
    for path in ("events", "explain"):
        assert client.get(f"/v1/workloads/{theirs['id']}/{path}", headers=tenant.admin).status_code == 404
    cancel = client.post(f"/v1/workloads/{theirs['id']}/cancel", headers=tenant.admin)
    assert cancel.status_code == 404
    assert client.get("/v1/workloads", headers=tenant.admin).json()["items"] == []
    still = client.get(f"/v1/workloads/{theirs['id']}", headers=other_tenant.viewer).json()
    assert still["state"] == "PENDING"  # untouched


def test_idempotency_key_replays_and_rejects_a_different_body(
    client: TestClient, tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    headers = {**tenant.operator, "Idempotency-Key": "req-42"}
    first = client.post("/v1/workloads", json=BODY, headers=headers)
    again = client.post("/v1/workloads", json=dict(reversed(list(BODY.items()))), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = client.post("/v1/workloads", json={**BODY, "nodes": 2}, headers=headers)
    assert other.status_code == 409 and other.json()["type"].endswith("/idempotency-key-reused")
    with database.sessions() as session:
        assert len(session.scalars(select(WorkloadRow)).all()) == 1
    # The same key in another organization is another request: a new workload, not a replay.
    theirs = client.post(
        "/v1/workloads", json=BODY, headers={**other_tenant.operator, "Idempotency-Key": "req-42"}
    )
    assert theirs.status_code == 201 and "Idempotent-Replayed" not in theirs.headers
    assert theirs.json()["id"] != first.json()["id"]


def test_cursor_pagination_walks_every_workload_once(client: TestClient, tenant: Tenant) -> None:
    made = {create(client, tenant, name=f"w{i}")["id"] for i in range(7)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/workloads", params=params, headers=tenant.viewer).json()
        seen += [w["id"] for w in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and set(seen) == made
    garbage = client.get("/v1/workloads", params={"cursor": "!!!"}, headers=tenant.viewer)
    assert garbage.status_code == 422


def test_filters_by_state_label_and_project(client: TestClient, tenant: Tenant) -> None:
    a = create(client, tenant, labels={"team": "a"})
    create(client, tenant, labels={"team": "b"})
    client.post(f"/v1/workloads/{a['id']}/cancel", headers=tenant.operator)
    cancelled = client.get("/v1/workloads", params={"state": "CANCELLED"}, headers=tenant.viewer).json()
    assert [w["id"] for w in cancelled["items"]] == [a["id"]]
    team_a = client.get("/v1/workloads", params={"label": "team=a"}, headers=tenant.viewer).json()
    assert [w["id"] for w in team_a["items"]] == [a["id"]]
    missing = client.get("/v1/workloads", params={"project": "nope"}, headers=tenant.viewer)
    assert missing.status_code == 404


def test_cancel_twice_is_a_409_and_the_trail_shows_one_cancellation(
    client: TestClient, tenant: Tenant
) -> None:
    w = create(client, tenant)
    assert (
        client.post(f"/v1/workloads/{w['id']}/cancel", headers=tenant.operator).json()["state"] == "CANCELLED"
    )
    again = client.post(f"/v1/workloads/{w['id']}/cancel", headers=tenant.operator)
    assert again.status_code == 409 and again.json()["type"].endswith("/invalid-state")
    events = client.get(f"/v1/workloads/{w['id']}/events", headers=tenant.viewer).json()["items"]
    assert [(e["from_state"], e["to_state"]) for e in events if e["kind"] == "transition"] == [
        ("PENDING", "CANCELLED")
    ]


def test_finish_needs_a_running_workload(client: TestClient, tenant: Tenant) -> None:
    w = create(client, tenant)
    response = client.post(
        f"/v1/workloads/{w['id']}/finish", json={"outcome": "succeeded"}, headers=tenant.operator
    )
    assert response.status_code == 409


def test_a_project_gpu_limit_refuses_a_workload_that_would_exceed_it(
    client: TestClient, tenant: Tenant
) -> None:
    limit = client.patch("/v1/projects/default", json={"max_gpus": 12}, headers=tenant.admin)
    assert limit.status_code == 200, limit.text
    create(client, tenant)  # 8 GPUs
    refused = client.post("/v1/workloads", json=BODY, headers=tenant.operator)  # 8 more
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/gpus-limit-exceeded")
    assert "12" in refused.json()["detail"]


def test_a_project_dollar_limit_refuses_a_workload_whose_cap_could_exceed_it(
    client: TestClient, tenant: Tenant
) -> None:
    client.patch("/v1/projects/default", json={"max_usd_per_month": "100"}, headers=tenant.admin)
    # 8 GPUs x 4 h x $3.50 = $112 at the cap: could exceed $100.
    refused = client.post(
        "/v1/workloads", json={**BODY, "max_price_per_gpu_hour": "3.50"}, headers=tenant.operator
    )
    assert refused.status_code == 409 and refused.json()["type"].endswith("/usd-limit-exceeded")
    assert create(client, tenant, max_price_per_gpu_hour="3.00")["state"] == "PENDING"  # $96 fits


def test_openapi_documents_the_workload_routes(client: TestClient, tenant: Tenant) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/workloads" in spec["paths"] and "/v1/workloads/{workload_id}/explain" in spec["paths"]
