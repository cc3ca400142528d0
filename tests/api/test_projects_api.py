"""/v1/projects and /v1/api-keys on a real database: limits, usage, roles, tenant isolation, revocation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from broker.db.engine import Database
from broker.db.fleet import ApiKey
from tests.api.conftest import NOW, Tenant
from tests.fleet_rows import HOUR_AGO, add_instance_row, add_workload_row, ensure_project


def test_an_org_starts_with_its_default_project_and_no_usage(client: TestClient, tenant: Tenant) -> None:
    body = client.get("/v1/projects", headers=tenant.viewer).json()
    assert [(p["name"], p["max_gpus"], p["max_usd_per_month"], p["usage"]) for p in body["items"]] == [
        ("default", None, None, {"gpus_in_use": 0, "spent_usd_this_month": "0.000000"})
    ]


def test_create_get_patch_a_project(client: TestClient, tenant: Tenant) -> None:
    made = client.post(
        "/v1/projects",
        json={"name": "ml-team_1.x", "max_gpus": 64, "max_usd_per_month": "50000"},
        headers=tenant.admin,
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert (body["name"], body["max_gpus"], body["max_usd_per_month"]) == ("ml-team_1.x", 64, "50000")
    assert body["id"].startswith("prj_")
    by_name = client.get("/v1/projects/ml-team_1.x", headers=tenant.viewer)
    by_id = client.get(f"/v1/projects/{body['id']}", headers=tenant.viewer)
    assert by_name.json() == by_id.json() == body

    patched = client.patch("/v1/projects/ml-team_1.x", json={"max_gpus": 8}, headers=tenant.admin)
    assert patched.status_code == 200
    assert (patched.json()["max_gpus"], patched.json()["max_usd_per_month"]) == (8, "50000")  # the other kept
    cleared = client.patch("/v1/projects/ml-team_1.x", json={"max_usd_per_month": None}, headers=tenant.admin)
    assert (cleared.json()["max_gpus"], cleared.json()["max_usd_per_month"]) == (8, None)
    assert client.get(f"/v1/projects/{body['id']}", headers=tenant.viewer).json()["max_gpus"] == 8
    names = [p["name"] for p in client.get("/v1/projects", headers=tenant.viewer).json()["items"]]
    assert names == ["default", "ml-team_1.x"]


def test_a_duplicate_name_is_409(client: TestClient, tenant: Tenant, other_tenant: Tenant) -> None:
    assert client.post("/v1/projects", json={"name": "default"}, headers=tenant.admin).status_code == 409
    assert client.post("/v1/projects", json={"name": "research"}, headers=tenant.admin).status_code == 201
    again = client.post("/v1/projects", json={"name": "research"}, headers=tenant.admin)
    assert again.status_code == 409
    assert again.json()["type"] == "https://gpubroker.dev/problems/conflict"
    # Names are per organization.
    assert (
        client.post("/v1/projects", json={"name": "research"}, headers=other_tenant.admin).status_code == 201
    )


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "has space"},
        {"name": "x" * 101},
        {"name": "ünïcode"},
        {"name": "ok", "max_gpus": -1},
        {"name": "ok", "max_gpus": 100_001},
        {"name": "ok", "max_usd_per_month": "-5"},
        {"name": "ok", "colour": "blue"},
    ],
)
def test_invalid_projects_are_422(client: TestClient, tenant: Tenant, body: dict[str, Any]) -> None:
    response = client.post("/v1/projects", json=body, headers=tenant.admin)
    assert response.status_code == 422, response.text
    assert len(client.get("/v1/projects", headers=tenant.viewer).json()["items"]) == 1


@pytest.mark.parametrize("patch", [{"max_gpus": -1}, {"max_usd_per_month": "-0.01"}, {"name": "renamed"}])
def test_invalid_limits_are_422(client: TestClient, tenant: Tenant, patch: dict[str, Any]) -> None:
    assert client.patch("/v1/projects/default", json=patch, headers=tenant.admin).status_code == 422
    assert client.get("/v1/projects/default", headers=tenant.viewer).json()["max_gpus"] is None


def test_usage_counts_unfinished_workloads_and_spend_outside_commitments(
    client: TestClient, database: Database, tenant: Tenant
) -> None:
    month = datetime(2026, 11, 1, tzinfo=UTC)
    with database.sessions.begin() as s:
        project = ensure_project(s, tenant.org_id)
        running = add_workload_row(s, tenant.org_id, project, state="RUNNING", gpus_per_node=4, nodes=2)
        add_workload_row(s, tenant.org_id, project, state="PENDING", gpus_per_node=1)
        add_workload_row(s, tenant.org_id, project, state="SUCCEEDED", gpus_per_node=8)
        # $10/h since 22:00 on Oct 31: only Nov 1 00:00 to now (23.5 days = 564 h) is this month's.
        add_instance_row(
            s,
            tenant.org_id,
            project,
            workload_id=running,
            price_per_hour="10",
            launched_at=month - timedelta(hours=2),
            created_at=month - timedelta(hours=2),
        )
        # Under a commitment: prepaid, adds nothing.
        add_instance_row(
            s,
            tenant.org_id,
            project,
            workload_id=running,
            price_per_hour="99",
            commitment_id="cmt_x",
            launched_at=month,
            created_at=HOUR_AGO,
        )
    body = client.get("/v1/projects/default", headers=tenant.viewer).json()
    assert body["usage"] == {"gpus_in_use": 9, "spent_usd_this_month": "5640.000000"}


def test_only_admins_manage_projects(client: TestClient, tenant: Tenant) -> None:
    assert client.post("/v1/projects", json={"name": "x"}, headers=tenant.operator).status_code == 403
    assert client.post("/v1/projects", json={"name": "x"}, headers=tenant.viewer).status_code == 403
    assert (
        client.patch("/v1/projects/default", json={"max_gpus": 1}, headers=tenant.operator).status_code == 403
    )
    assert client.get("/v1/projects", headers=tenant.viewer).status_code == 200
    assert client.get("/v1/projects").status_code == 401
    names = [p["name"] for p in client.get("/v1/projects", headers=tenant.viewer).json()["items"]]
    assert names == ["default"]


def test_another_orgs_project_is_invisible(client: TestClient, tenant: Tenant, other_tenant: Tenant) -> None:
    made = client.post("/v1/projects", json={"name": "secret-lab"}, headers=tenant.admin).json()
    for ident in (made["id"], "secret-lab"):
        assert client.get(f"/v1/projects/{ident}", headers=other_tenant.viewer).status_code == 404
        patch = client.patch(f"/v1/projects/{ident}", json={"max_gpus": 0}, headers=other_tenant.admin)
        assert patch.status_code == 404
    names = [p["name"] for p in client.get("/v1/projects", headers=other_tenant.viewer).json()["items"]]
    assert names == ["default"]
    assert client.get(f"/v1/projects/{made['id']}", headers=tenant.viewer).json()["max_gpus"] is None


def test_project_post_is_idempotent(client: TestClient, tenant: Tenant) -> None:
    headers = {**tenant.admin, "Idempotency-Key": "prj-1"}
    first = client.post("/v1/projects", json={"name": "vision"}, headers=headers)
    again = client.post("/v1/projects", json={"name": "vision"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert client.post("/v1/projects", json={"name": "audio"}, headers=headers).status_code == 409
    names = [p["name"] for p in client.get("/v1/projects", headers=tenant.viewer).json()["items"]]
    assert names == ["default", "vision"]


# --- API keys ---------------------------------------------------------------------------------------


def test_issue_list_and_revoke_a_key(client: TestClient, database: Database, tenant: Tenant) -> None:
    issued = client.post("/v1/api-keys", json={"name": "ci", "role": "operator"}, headers=tenant.admin)
    assert issued.status_code == 201, issued.text
    body = issued.json()
    key = body["key"]
    assert key.startswith("gpb_") and (body["name"], body["role"], body["revoked_at"]) == (
        "ci",
        "operator",
        None,
    )
    new_key = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/projects", headers=new_key).status_code == 200  # works (and is now cached)
    assert client.post("/v1/projects", json={"name": "x"}, headers=new_key).status_code == 403  # an operator

    listing = client.get("/v1/api-keys", headers=tenant.admin)
    assert listing.status_code == 200
    keys = listing.json()["items"]
    assert {k["name"] for k in keys} == {"viewer-key", "operator-key", "admin-key", "ci"}
    with database.sessions() as s:
        digest = s.scalar(select(ApiKey.secret_sha256).where(ApiKey.id == body["id"]))
    secret = key.rsplit("_", 1)[1]
    assert secret not in listing.text and digest not in listing.text
    assert all(set(k) == {"id", "name", "role", "created_at", "revoked_at"} for k in keys)

    assert client.delete(f"/v1/api-keys/{body['id']}", headers=tenant.admin).status_code == 204
    revoked = client.get("/v1/projects", headers=new_key)
    assert revoked.status_code == 401  # at once, though it was cached
    listed = {k["id"]: k for k in client.get("/v1/api-keys", headers=tenant.admin).json()["items"]}
    assert listed[body["id"]]["revoked_at"] == NOW.isoformat().replace("+00:00", "Z")
    assert client.get("/v1/projects", headers=tenant.viewer).status_code == 200  # other keys still work


def test_key_validation_and_roles(client: TestClient, tenant: Tenant) -> None:
    for body in (
        {"name": "x", "role": "owner"},
        {"name": "", "role": "viewer"},
        {"name": "   ", "role": "viewer"},
        {"name": "x", "role": "viewer", "scope": "all"},
        {"role": "viewer"},
    ):
        assert client.post("/v1/api-keys", json=body, headers=tenant.admin).status_code == 422, body
    ok = {"name": "x", "role": "viewer"}
    assert client.post("/v1/api-keys", json=ok, headers=tenant.operator).status_code == 403
    assert client.get("/v1/api-keys", headers=tenant.operator).status_code == 403
    key_id = client.get("/v1/api-keys", headers=tenant.admin).json()["items"][0]["id"]
    assert client.delete(f"/v1/api-keys/{key_id}", headers=tenant.operator).status_code == 403
    assert client.delete("/v1/api-keys/0000000000000000", headers=tenant.admin).status_code == 404


def test_another_orgs_key_cannot_be_seen_or_revoked(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = client.get("/v1/api-keys", headers=other_tenant.admin).json()["items"]
    mine = client.get("/v1/api-keys", headers=tenant.admin).json()["items"]
    assert not {k["id"] for k in theirs} & {k["id"] for k in mine}
    response = client.delete(f"/v1/api-keys/{theirs[0]['id']}", headers=tenant.admin)
    assert response.status_code == 404
    assert response.json()["type"] == "https://gpubroker.dev/problems/not-found"
    assert client.get("/v1/projects", headers=other_tenant.viewer).status_code == 200
    still = client.get("/v1/api-keys", headers=other_tenant.admin).json()["items"]
    assert all(k["revoked_at"] is None for k in still)
