"""/v1/commitments on a real database: CRUD, validation, usage figures, tenant isolation, idempotency,
roles, and what the scheduler reads (active commitments, reservations)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from broker.core.workload import CommitmentKind
from broker.db.engine import Database
from broker.db.fleet import CommitmentRow
from broker.services.commitments import active_commitments, commitment_reservations
from tests.api.conftest import NOW, Tenant
from tests.fleet_rows import HOUR_AGO, add_instance_row, add_workload_row, ensure_project

START = datetime(2026, 11, 20, tzinfo=UTC)
END = datetime(2026, 12, 20, tzinfo=UTC)


def terms(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "p5 block",
        "provider": "aws",
        "region": "us-east-1",
        "zone": "us-east-1a",
        "accelerator": "H100",
        "instance_type": "p5.48xlarge",
        "gpu_count": 8,
        "starts_at": START.isoformat(),
        "ends_at": END.isoformat(),
        "price_per_gpu_hour": "2.50",
        "kind": "capacity-block",
        "reservation_id": "cr-0123",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def create(client: TestClient, tenant: Tenant, **changes: Any) -> dict[str, Any]:
    response = client.post("/v1/commitments", json=terms(**changes), headers=tenant.operator)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_get_list_patch_delete(client: TestClient, database: Database, tenant: Tenant) -> None:
    made = create(client, tenant, accelerator="H100-SXM")
    cid = made["id"]
    assert made == {
        "id": cid,
        "name": "p5 block",
        "project": None,
        "provider": "aws",
        "region": "us-east-1",
        "zone": "us-east-1a",
        "accelerator": "H100",  # canonical GPU model
        "instance_type": "p5.48xlarge",
        "gpu_count": 8,
        "kind": "capacity-block",
        "starts_at": "2026-11-20T00:00:00Z",
        "ends_at": "2026-12-20T00:00:00Z",
        "price_per_gpu_hour": "2.50",
        "total_usd": "14400.00",  # 8 GPUs x 720 h x 2.50
        "reservation_id": "cr-0123",
        "created_at": "2026-11-24T12:00:00Z",
        "updated_at": "2026-11-24T12:00:00Z",
    }
    assert client.get(f"/v1/commitments/{cid}", headers=tenant.viewer).json() == made
    assert client.get("/v1/commitments", headers=tenant.viewer).json() == {
        "items": [made],
        "next_cursor": None,
    }

    patched = client.patch(
        f"/v1/commitments/{cid}",
        json={"name": "renamed", "gpu_count": 16, "ends_at": "2026-12-10T00:00:00Z", "reservation_id": None},
        headers=tenant.operator,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["name"], body["gpu_count"], body["ends_at"], body["reservation_id"]) == (
        "renamed",
        16,
        "2026-12-10T00:00:00Z",
        None,
    )
    assert body["price_per_gpu_hour"] == "2.50"  # kept: the rate, not the total
    assert body["total_usd"] == "19200.00"  # 16 x 480 h x 2.50
    price = client.patch(f"/v1/commitments/{cid}", json={"price_per_gpu_hour": "3"}, headers=tenant.operator)
    assert price.json()["price_per_gpu_hour"] == "3"
    assert client.get(f"/v1/commitments/{cid}", headers=tenant.viewer).json()["name"] == "renamed"

    assert client.delete(f"/v1/commitments/{cid}", headers=tenant.operator).status_code == 204
    assert client.get(f"/v1/commitments/{cid}", headers=tenant.viewer).status_code == 404
    assert client.get("/v1/commitments", headers=tenant.viewer).json()["items"] == []
    assert (
        client.patch(f"/v1/commitments/{cid}", json={"name": "x"}, headers=tenant.operator).status_code == 404
    )
    assert client.delete(f"/v1/commitments/{cid}", headers=tenant.operator).status_code == 404
    assert client.get(f"/v1/commitments/{cid}/usage", headers=tenant.viewer).status_code == 404
    with database.sessions() as s:  # the history stays
        row = s.get(CommitmentRow, cid)
        assert row is not None and row.deleted_at == NOW and row.name == "renamed"


def test_a_project_is_resolved_by_name_or_id(client: TestClient, database: Database, tenant: Tenant) -> None:
    with database.sessions() as s:
        project_id = ensure_project(s, tenant.org_id)
    assert create(client, tenant, project="default")["project"] == "default"
    assert create(client, tenant, project=project_id)["project"] == "default"


def test_a_total_price_becomes_a_price_per_gpu_hour(client: TestClient, tenant: Tenant) -> None:
    ends = (START + timedelta(hours=100)).isoformat()
    made = create(client, tenant, price_per_gpu_hour=None, total_usd="1000", gpu_count=2, ends_at=ends)
    assert made["price_per_gpu_hour"] == "5.000000"  # 1000 / (2 GPUs x 100 h)
    # 100 / (3 x 24) = 1.3888...: quantized to the micro-dollar; the term's total rounds back to 100.
    ends = (START + timedelta(hours=24)).isoformat()
    made = create(client, tenant, price_per_gpu_hour=None, total_usd="100", gpu_count=3, ends_at=ends)
    assert made["price_per_gpu_hour"] == "1.388889"
    assert made["total_usd"] == "100.00"
    # A new total on PATCH is converted with the new GPU count.
    cid = made["id"]
    patched = client.patch(
        f"/v1/commitments/{cid}", json={"gpu_count": 6, "total_usd": "72"}, headers=tenant.operator
    )
    assert patched.json()["price_per_gpu_hour"] == "0.500000"  # 72 / (6 x 24)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"ends_at": "2026-11-19T00:00:00Z"}, "ends_at"),
        ({"ends_at": START.isoformat()}, "ends_at"),
        ({"ends_at": "2036-12-01T00:00:00Z"}, "ends_at"),
        ({"total_usd": "100"}, "price_per_gpu_hour"),
        ({"price_per_gpu_hour": None}, "price_per_gpu_hour"),
        ({"gpu_count": 0}, "gpu_count"),
        ({"gpu_count": 100_001}, "gpu_count"),
        ({"price_per_gpu_hour": "-1"}, "price_per_gpu_hour"),
        ({"price_per_gpu_hour": "NaN"}, "price_per_gpu_hour"),
        ({"colour": "blue"}, "colour"),
        ({"kind": "handshake"}, "kind"),
        ({"starts_at": "2026-11-20T00:00:00"}, "starts_at"),  # no time zone
        ({"project": "no-such-project"}, "project"),
        ({"provider": ""}, "provider"),
    ],
)
def test_invalid_commitments_are_422_naming_the_field(
    client: TestClient, tenant: Tenant, changes: dict[str, Any], field: str
) -> None:
    body = terms()
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not None}
    response = client.post("/v1/commitments", json=body, headers=tenant.operator)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in {e["field"] for e in response.json()["errors"]}
    assert client.get("/v1/commitments", headers=tenant.viewer).json()["items"] == []


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"ends_at": "2026-11-19T00:00:00Z"}, "ends_at"),
        ({"gpu_count": 0}, "gpu_count"),
        ({"gpu_count": None}, "gpu_count"),
        ({"price_per_gpu_hour": "1", "total_usd": "1"}, "price_per_gpu_hour"),
        ({"price_per_gpu_hour": "-0.01"}, "price_per_gpu_hour"),
        ({"starts_at": "2026-11-01T00:00:00Z"}, "starts_at"),  # not changeable
    ],
)
def test_invalid_patches_are_422_and_change_nothing(
    client: TestClient, tenant: Tenant, patch: dict[str, Any], field: str
) -> None:
    made = create(client, tenant)
    response = client.patch(f"/v1/commitments/{made['id']}", json=patch, headers=tenant.operator)
    assert response.status_code == 422, response.text
    assert field in {e["field"] for e in response.json()["errors"]}
    assert client.get(f"/v1/commitments/{made['id']}", headers=tenant.viewer).json() == made


def test_usage_of_one_day_matches_a_hand_computation(
    client: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    cid = create(client, tenant)["id"]
    other = create(client, tenant)["id"]
    with database.sessions.begin() as s:
        project = ensure_project(s, tenant.org_id)
        wl = add_workload_row(s, tenant.org_id, project)
        day = datetime(2026, 11, 22, tzinfo=UTC)
        # One 8-GPU instance ran 6 h of the day under the commitment ...
        add_instance_row(
            s,
            tenant.org_id,
            project,
            workload_id=wl,
            commitment_id=cid,
            state="terminated",
            launched_at=day + timedelta(hours=6),
            ended_at=day + timedelta(hours=12),
            created_at=HOUR_AGO,
        )
        # ... one ran under another commitment, one not under any, one never launched: none count.
        add_instance_row(
            s,
            tenant.org_id,
            project,
            workload_id=wl,
            state="running",
            commitment_id=other,
            launched_at=day,
            ended_at=day + timedelta(hours=20),
            created_at=HOUR_AGO,
        )
        add_instance_row(
            s,
            tenant.org_id,
            project,
            workload_id=wl,
            state="running",
            launched_at=day,
            ended_at=day + timedelta(hours=20),
            created_at=HOUR_AGO,
        )
        add_instance_row(
            s,
            tenant.org_id,
            project,
            workload_id=wl,
            commitment_id=cid,
            state="failed",
            launched_at=None,
            ended_at=day + timedelta(hours=1),
        )
    response = client.get(
        f"/v1/commitments/{cid}/usage",
        params={"start": "2026-11-22T00:00:00Z", "end": "2026-11-23T00:00:00Z"},
        headers=tenant.viewer,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    figures = {
        "committed_gpu_hours": "192.000000",
        "used_gpu_hours": "48.000000",
        "idle_gpu_hours": "144.000000",
        "utilization": "0.2500",
        "idle_waste_usd": "360.00",  # 144 idle GPU-hours x $2.50
    }
    assert body["days"] == [{"day": "2026-11-22", **figures}]
    assert body["totals"] == figures
    assert (body["start"], body["end"], body["gpu_count"], body["price_per_gpu_hour"]) == (
        "2026-11-22T00:00:00Z",
        "2026-11-23T00:00:00Z",
        8,
        "2.50",
    )
    # Another organization cannot read it, and gets the same 404 as for a missing one.
    theirs = client.get(f"/v1/commitments/{cid}/usage", headers=other_tenant.viewer)
    assert theirs.status_code == 404
    assert theirs.json()["type"] == "https://gpubroker.dev/problems/not-found"


def test_usage_defaults_to_the_term_so_far(client: TestClient, database: Database, tenant: Tenant) -> None:
    cid = create(client, tenant)["id"]
    with database.sessions.begin() as s:
        project = ensure_project(s, tenant.org_id)
        wl = add_workload_row(s, tenant.org_id, project)
        add_instance_row(
            s,
            tenant.org_id,
            project,
            workload_id=wl,
            commitment_id=cid,
            state="terminated",
            launched_at=datetime(2026, 11, 22, 6, tzinfo=UTC),
            ended_at=datetime(2026, 11, 22, 12, tzinfo=UTC),
            created_at=HOUR_AGO,
        )
        # Still running: 4 GPUs from 06:00 today until now (12:00).
        add_instance_row(
            s,
            tenant.org_id,
            project,
            workload_id=wl,
            commitment_id=cid,
            gpus=4,
            launched_at=datetime(2026, 11, 24, 6, tzinfo=UTC),
            created_at=HOUR_AGO,
        )
    body = client.get(f"/v1/commitments/{cid}/usage", headers=tenant.viewer).json()
    assert (body["start"], body["end"]) == ("2026-11-20T00:00:00Z", "2026-11-24T12:00:00Z")
    days = {
        d["day"]: (d["committed_gpu_hours"], d["used_gpu_hours"], d["idle_waste_usd"]) for d in body["days"]
    }
    assert days == {
        "2026-11-20": ("192.000000", "0.000000", "480.00"),
        "2026-11-21": ("192.000000", "0.000000", "480.00"),
        "2026-11-22": ("192.000000", "48.000000", "360.00"),
        "2026-11-23": ("192.000000", "0.000000", "480.00"),
        "2026-11-24": ("96.000000", "24.000000", "180.00"),  # half a day so far
    }
    # 8 GPUs x 108 h = 864 committed; 48 + 24 = 72 used; 792 idle x 2.50 = 1980.
    assert body["totals"] == {
        "committed_gpu_hours": "864.000000",
        "used_gpu_hours": "72.000000",
        "idle_gpu_hours": "792.000000",
        "utilization": "0.0833",
        "idle_waste_usd": "1980.00",
    }


def test_usage_of_a_commitment_not_started_is_empty(client: TestClient, tenant: Tenant) -> None:
    cid = create(client, tenant, starts_at="2027-01-01T00:00:00Z", ends_at="2027-02-01T00:00:00Z")["id"]
    body = client.get(f"/v1/commitments/{cid}/usage", headers=tenant.viewer).json()
    assert body["days"] == []
    assert body["totals"]["committed_gpu_hours"] == "0"
    assert body["totals"]["utilization"] is None


@pytest.mark.parametrize(
    "params",
    [
        {"start": "2026-11-23T00:00:00Z", "end": "2026-11-22T00:00:00Z"},
        {"start": "2025-01-01T00:00:00Z", "end": "2026-11-22T00:00:00Z"},  # over 400 days
        {"start": "2026-11-23T00:00:00"},  # no time zone
    ],
)
def test_bad_usage_windows_are_422(client: TestClient, tenant: Tenant, params: dict[str, str]) -> None:
    cid = create(client, tenant)["id"]
    assert client.get(f"/v1/commitments/{cid}/usage", params=params, headers=tenant.viewer).status_code == 422


def test_another_orgs_commitment_is_invisible_and_untouchable(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    made = create(client, tenant)
    cid = made["id"]
    for method, path, body in (
        ("GET", f"/v1/commitments/{cid}", None),
        ("PATCH", f"/v1/commitments/{cid}", {"name": "mine now"}),
        ("DELETE", f"/v1/commitments/{cid}", None),
        ("GET", f"/v1/commitments/{cid}/usage", None),
    ):
        theirs = client.request(method, path, json=body, headers=other_tenant.operator)
        missing = client.request(
            method, path.replace(cid, "cmt_0000000000000000"), json=body, headers=other_tenant.operator
        )
        assert theirs.status_code == missing.status_code == 404, (method, path)
        assert theirs.json()["type"] == missing.json()["type"]
    assert client.get("/v1/commitments", headers=other_tenant.viewer).json() == {
        "items": [],
        "next_cursor": None,
    }
    assert client.get(f"/v1/commitments/{cid}", headers=tenant.viewer).json() == made


def test_post_is_idempotent_with_a_key(client: TestClient, tenant: Tenant) -> None:
    headers = {**tenant.operator, "Idempotency-Key": "commit-1"}
    first = client.post("/v1/commitments", json=terms(), headers=headers)
    again = client.post("/v1/commitments", json=terms(), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(client.get("/v1/commitments", headers=tenant.viewer).json()["items"]) == 1
    other = client.post("/v1/commitments", json=terms(gpu_count=16), headers=headers)
    assert other.status_code == 409
    assert other.json()["type"].endswith("/idempotency-key-reused")
    assert len(client.get("/v1/commitments", headers=tenant.viewer).json()["items"]) == 1


def test_roles(client: TestClient, tenant: Tenant) -> None:
    assert client.post("/v1/commitments", json=terms(), headers=tenant.viewer).status_code == 403
    cid = create(client, tenant)["id"]
    assert (
        client.patch(f"/v1/commitments/{cid}", json={"name": "x"}, headers=tenant.viewer).status_code == 403
    )
    assert client.delete(f"/v1/commitments/{cid}", headers=tenant.viewer).status_code == 403
    assert client.get("/v1/commitments").status_code == 401
    assert client.get(f"/v1/commitments/{cid}", headers=tenant.viewer).status_code == 200
    assert client.post("/v1/commitments", json=terms(), headers=tenant.admin).status_code == 201


@pytest.fixture
def ticking(database: Database) -> Iterator[tuple[TestClient, list[datetime]]]:
    """A client whose clock the test moves (``clock[0]``)."""
    clock = [NOW]
    with TestClient(create_app(database, clock=lambda: clock[0])) as c:
        yield c, clock


def test_list_pages_newest_first_and_filters(
    ticking: tuple[TestClient, list[datetime]], tenant: Tenant
) -> None:
    client, clock = ticking
    ids = []
    for n, provider in enumerate(["aws", "gcp", "aws", "lambda", "aws"]):
        clock[0] = NOW + timedelta(minutes=n)
        ids.append(create(client, tenant, provider=provider, name=f"c{n}")["id"])
    # One that has ended by NOW and one that has not started: not active at NOW.
    clock[0] = NOW + timedelta(minutes=10)
    ended = create(client, tenant, starts_at="2026-01-01T00:00:00Z", ends_at="2026-02-01T00:00:00Z")["id"]
    clock[0] = NOW + timedelta(minutes=11)
    future = create(client, tenant, starts_at="2027-01-01T00:00:00Z", ends_at="2027-02-01T00:00:00Z")["id"]

    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/commitments", params=params, headers=tenant.viewer).json()
        assert len(page["items"]) <= 3
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [future, ended, *reversed(ids)]

    def listed(**params: str) -> list[str]:
        response = client.get("/v1/commitments", params=params, headers=tenant.viewer)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["items"]]

    assert listed(provider="gcp") == [ids[1]]
    assert listed(provider="AWS") == [future, ended, ids[4], ids[2], ids[0]]
    assert listed(active_at=NOW.isoformat()) == list(reversed(ids))
    assert listed(active_at="2026-01-15T00:00:00Z") == [ended]
    for bad in ({"limit": 0}, {"limit": 501}, {"cursor": "!!!"}, {"cursor": "eyJ4IjoxfQ"}):
        assert client.get("/v1/commitments", params=bad, headers=tenant.viewer).status_code == 422, bad


def test_active_commitments_and_reservations_for_the_scheduler(
    client: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    live = create(client, tenant, gpu_count=8)["id"]
    full = create(
        client,
        tenant,
        gpu_count=4,
        reservation_id=None,
        zone=None,
        instance_type=None,
        kind="reserved-instance",
    )["id"]
    deleted = create(client, tenant)["id"]
    client.delete(f"/v1/commitments/{deleted}", headers=tenant.operator)
    create(
        client,
        tenant,
        starts_at="2027-01-01T00:00:00Z",
        ends_at="2027-02-01T00:00:00Z",
        reservation_id="cr-future",
    )
    create(client, other_tenant, reservation_id="cr-theirs")
    with database.sessions.begin() as s:
        project = ensure_project(s, tenant.org_id)
        wl = add_workload_row(s, tenant.org_id, project)
        for state, gpus in (("requested", 1), ("pending", 1), ("running", 2), ("terminating", 1)):
            add_instance_row(
                s, tenant.org_id, project, workload_id=wl, commitment_id=live, state=state, gpus=gpus
            )
        for state in ("terminated", "preempted", "failed", "lost"):
            add_instance_row(
                s, tenant.org_id, project, workload_id=wl, commitment_id=live, state=state, gpus=8
            )
        # Over the count: capped.
        add_instance_row(s, tenant.org_id, project, workload_id=wl, commitment_id=full, gpus=8)
    with database.sessions() as s:
        active = {c.commitment_id: c for c in active_commitments(s, tenant.org_id, NOW)}
        reservations = commitment_reservations(s, tenant.org_id)
        assert active_commitments(s, tenant.org_id, END) == []  # ends_at is exclusive
    assert set(active) == {live, full}
    assert (active[live].gpus_in_use, active[live].gpus_free) == (5, 3)
    assert (active[full].gpus_in_use, active[full].gpus_free) == (4, 0)
    c = active[live]
    assert (c.cloud, c.region, c.zone, c.accelerator, c.instance_type, c.kind, c.price_per_gpu_hour) == (
        "aws",
        "us-east-1",
        "us-east-1a",
        "H100",
        "p5.48xlarge",
        CommitmentKind.CAPACITY_BLOCK,
        Decimal("2.50"),
    )
    assert active[full].zone is None and active[full].instance_type is None
    assert live in reservations and reservations[live] == "cr-0123"
    assert full not in reservations and deleted not in reservations
    assert "cr-theirs" not in reservations.values()
    assert "cr-future" in reservations.values()
    with database.sessions() as s:
        assert s.scalar(select(CommitmentRow.deleted_at).where(CommitmentRow.id == deleted)) == NOW


def test_pages_split_commitments_made_at_the_same_instant_by_id(client: TestClient, tenant: Tenant) -> None:
    ids = sorted((create(client, tenant)["id"] for _ in range(4)), reverse=True)
    seen, cursor = [], None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/commitments", params=params, headers=tenant.viewer).json()
        seen += [c["id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids
