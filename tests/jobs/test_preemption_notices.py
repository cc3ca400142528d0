"""POST /v1/instances/{id}/preemption-notice on the real API, database and simulated cloud: who may
post it, what it records, that it is idempotent, and that the migrate job (not the request) turns it
into a migration plan, woken by NOTIFY."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from broker.db.engine import Database
from broker.db.fleet import CommandRow, InstanceRow, WorkloadEvent, WorkloadRow
from broker.jobs.scheduler import Scheduler
from broker.services.lifecycle import WAKE_CHANNEL, Topic
from broker.services.tenancy import Role
from tests.api.conftest import make_tenant
from tests.jobs.harness import Broker, timers_of_an_hour, wait_for


@pytest.fixture
def broker(database: Database) -> Iterator[Broker]:
    b = Broker(database)
    yield b
    b.close()


@pytest.fixture
def wake_ups(database: Database) -> Iterator[psycopg.Connection]:
    url = database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {WAKE_CHANNEL}")
        yield conn


def running_spot(broker: Broker) -> tuple[str, str]:
    """A RUNNING spot workload and the id of the instance serving it."""
    workload_id = broker.submit(capacity="spot")["id"]
    broker.settle()
    assert broker.workload(workload_id)["state"] == "RUNNING"
    response = broker.client.get(
        "/v1/instances", params={"workload_id": workload_id}, headers=broker.tenant.viewer
    )
    (instance,) = response.json()["items"]
    return workload_id, instance["id"]


def notice(broker: Broker, instance_id: str, headers: dict[str, str] | None = None, **body: Any) -> Any:
    payload = {
        "at": broker.clock().isoformat(),
        "reclaim_at": (broker.clock() + timedelta(minutes=2)).isoformat(),
        "source": "aws",
        **body,
    }
    return broker.client.post(
        f"/v1/instances/{instance_id}/preemption-notice",
        json=payload,
        headers=broker.tenant.operator if headers is None else headers,
    )


def instance_row(database: Database, instance_id: str) -> InstanceRow:
    with database.sessions() as session:
        row = session.get(InstanceRow, instance_id)
        assert row is not None
        return row


def workload_row(database: Database, workload_id: str) -> WorkloadRow:
    with database.sessions() as session:
        row = session.get(WorkloadRow, workload_id)
        assert row is not None
        return row


def notice_events(database: Database, workload_id: str) -> list[WorkloadEvent]:
    with database.sessions() as session:
        return list(
            session.scalars(
                select(WorkloadEvent)
                .where(WorkloadEvent.workload_id == workload_id, WorkloadEvent.kind == "preemption-notice")
                .order_by(WorkloadEvent.id)
            )
        )


def launches(database: Database, workload_id: str) -> list[CommandRow]:
    with database.sessions() as session:
        return list(
            session.scalars(
                select(CommandRow).where(CommandRow.workload_id == workload_id, CommandRow.kind == "launch")
            )
        )


# --- the route -------------------------------------------------------------------------------------


def test_a_notice_is_recorded_in_the_request_and_decided_only_by_the_migrate_job(
    broker: Broker, wake_ups: psycopg.Connection
) -> None:
    workload_id, instance_id = running_spot(broker)
    launched = len(launches(broker.database, workload_id))
    reclaim = broker.clock() + timedelta(seconds=90)
    response = notice(broker, instance_id, reclaim_at=reclaim.isoformat())
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["recorded"] is True and body["workload_id"] == workload_id
    assert datetime.fromisoformat(body["reclaim_at"]) == reclaim
    # Recorded in the request's transaction ...
    row = instance_row(broker.database, instance_id)
    assert row.notice_at == broker.clock() and row.state == "running"
    assert row.state_reason == "preemption notice (aws)"
    (event,) = notice_events(broker.database, workload_id)
    assert event.data["instance_id"] == instance_id and event.data["source"] == "aws"
    assert datetime.fromisoformat(event.data["reclaim_at"]) == reclaim
    assert Topic.MIGRATE in [n.payload for n in wake_ups.notifies(timeout=1.0, stop_after=1)]
    # ... but not decided there: still RUNNING, no plan, not marked decided.
    assert broker.workload(workload_id)["state"] == "RUNNING"
    assert len(launches(broker.database, workload_id)) == launched
    assert "reclaim_at" not in workload_row(broker.database, workload_id).history

    assert broker.scheduler.run_losses() == 1
    current = broker.workload(workload_id)
    assert current["state"] == "MIGRATING", current
    assert datetime.fromisoformat(workload_row(broker.database, workload_id).history["reclaim_at"]) == reclaim
    planned = [e for e in broker.events(workload_id) if e["kind"] == "migration-planned"]
    assert len(planned) == 1 and planned[0]["data"]["trigger"] == "preemption-notice"
    assert len(launches(broker.database, workload_id)) == launched + 1
    assert broker.scheduler.run_losses() == 0  # decided once

    broker.settle()  # the replacement launches; the cut-over waits for a checkpoint until the reclaim
    broker.clock.advance(seconds=91)
    broker.settle()
    current = broker.workload(workload_id)
    assert current["state"] == "RUNNING" and current["generation"] == 1, current
    assert current["placement"] is not None


def test_a_second_notice_is_a_no_op_202_that_says_so(broker: Broker) -> None:
    workload_id, instance_id = running_spot(broker)
    assert notice(broker, instance_id).json()["recorded"] is True
    first_at = broker.clock()
    broker.clock.advance(seconds=5)
    again = notice(broker, instance_id, source="gcp")
    assert again.status_code == 202
    body = again.json()
    assert body["recorded"] is False and "already recorded" in body["detail"]
    assert datetime.fromisoformat(body["notice_at"]) == first_at
    assert instance_row(broker.database, instance_id).notice_at == first_at
    shown = broker.client.get(f"/v1/instances/{instance_id}", headers=broker.tenant.viewer).json()
    assert datetime.fromisoformat(shown["notice_at"]) == first_at  # the API shows the first notice
    assert len(notice_events(broker.database, workload_id)) == 1
    assert broker.scheduler.run_losses() == 1  # one decision for the two posts
    assert broker.scheduler.run_losses() == 0
    assert notice(broker, instance_id).json()["recorded"] is False  # after the decision too


def test_a_notice_for_an_instance_already_gone_records_nothing(broker: Broker) -> None:
    workload_id, instance_id = running_spot(broker)
    with broker.database.sessions.begin() as session:
        session.execute(
            InstanceRow.__table__.update().where(InstanceRow.id == instance_id).values(state="terminated")
        )
    response = notice(broker, instance_id)
    assert response.status_code == 202
    assert response.json()["recorded"] is False and "already terminated" in response.json()["detail"]
    assert instance_row(broker.database, instance_id).notice_at is None
    assert notice_events(broker.database, workload_id) == []


def test_only_operators_of_the_instances_organization_may_post(broker: Broker, database: Database) -> None:
    _, instance_id = running_spot(broker)
    assert notice(broker, instance_id, headers={}).status_code == 401
    viewer = notice(broker, instance_id, headers=broker.tenant.viewer)
    assert viewer.status_code == 403 and "operator" in viewer.json()["detail"]

    other = make_tenant(database, "globex")
    theirs = notice(broker, instance_id, headers=other.headers(Role.OPERATOR))
    missing = notice(broker, "in_does_not_exist", headers=other.headers(Role.OPERATOR))
    assert theirs.status_code == missing.status_code == 404
    assert theirs.headers["content-type"] == "application/problem+json"
    assert theirs.json()["type"] == missing.json()["type"] == "https://gpubroker.dev/problems/not-found"
    assert theirs.json()["detail"] == f"no instance {instance_id!r}"
    assert instance_row(database, instance_id).notice_at is None

    assert notice(broker, instance_id, headers=broker.tenant.admin).status_code == 202  # admin covers it
    assert instance_row(database, instance_id).notice_at == broker.clock()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"at": "2026-11-24T12:00:00"}, "at"),  # no zone
        ({"at": "yesterday"}, "at"),
        ({"source": "AWS!"}, "source"),
        ({"source": ""}, "source"),
        ({"extra": 1}, "extra"),
        ({"reclaim_at": "2026-11-24T12:02:00"}, "reclaim_at"),  # no zone
    ],
)
def test_a_malformed_body_is_a_422_naming_the_field(
    broker: Broker, change: dict[str, Any], field: str
) -> None:
    _, instance_id = running_spot(broker)
    response = notice(broker, instance_id, **change)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [e["field"] for e in response.json()["errors"]]
    assert instance_row(broker.database, instance_id).notice_at is None


@pytest.mark.parametrize(
    ("at", "reclaim", "field"),
    [
        (timedelta(minutes=6), timedelta(minutes=8), "at"),  # from the future
        (timedelta(hours=-2), None, "at"),  # long ago
        (timedelta(0), timedelta(hours=2), "reclaim_at"),  # no cloud warns hours ahead
        (timedelta(0), timedelta(minutes=-10), "reclaim_at"),  # reclaimed well before it was seen
    ],
)
def test_times_out_of_bounds_are_a_422_naming_the_field(
    broker: Broker, at: timedelta, reclaim: timedelta | None, field: str
) -> None:
    _, instance_id = running_spot(broker)
    seen = broker.clock() + at
    response = notice(
        broker,
        instance_id,
        at=seen.isoformat(),
        reclaim_at=(seen + reclaim).isoformat() if reclaim is not None else None,
    )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert response.json()["detail"].startswith(f"{field}: ")
    assert instance_row(broker.database, instance_id).notice_at is None


def test_a_notice_without_a_reclaim_time_is_decided_as_reclaimed_at_once(broker: Broker) -> None:
    workload_id, instance_id = running_spot(broker)
    response = notice(broker, instance_id, reclaim_at=None, source="azure")
    assert response.status_code == 202 and response.json()["reclaim_at"] is None
    assert broker.scheduler.run_losses() == 1
    assert broker.workload(workload_id)["state"] == "MIGRATING"
    history = workload_row(broker.database, workload_id).history
    assert datetime.fromisoformat(history["reclaim_at"]) == broker.clock()


def test_the_in_process_scheduler_is_woken_after_a_recorded_notice(broker: Broker) -> None:
    woken: list[str] = []
    with TestClient(create_app(broker.database, clock=broker.clock, wake=woken.append)) as client:
        _, instance_id = running_spot(broker)
        body = {"at": broker.clock().isoformat(), "source": "gcp"}
        url = f"/v1/instances/{instance_id}/preemption-notice"
        assert client.post(url, json=body, headers=broker.tenant.operator).status_code == 202
        assert woken == [Topic.MIGRATE]
        assert client.post(url, json=body, headers=broker.tenant.operator).status_code == 202
        assert woken == [Topic.MIGRATE]  # a repeat wakes nobody


# --- the decision ----------------------------------------------------------------------------------


def test_a_notice_on_a_migrating_workload_is_decided_after_a_refused_move_returns_it(
    broker: Broker,
) -> None:
    """The queue is the rows: a notice that lands while the workload is MIGRATING waits, and is
    decided once the workload is RUNNING on the noticed instance again."""
    workload_id, instance_id = running_spot(broker)
    with broker.database.sessions.begin() as session:
        session.execute(
            WorkloadRow.__table__.update().where(WorkloadRow.id == workload_id).values(state="MIGRATING")
        )
    assert notice(broker, instance_id).json()["recorded"] is True
    assert broker.scheduler.run_losses() == 0  # not RUNNING: the move in flight handles it
    with broker.database.sessions.begin() as session:
        session.execute(
            WorkloadRow.__table__.update().where(WorkloadRow.id == workload_id).values(state="RUNNING")
        )
    assert broker.scheduler.run_losses() == 1
    assert broker.workload(workload_id)["state"] == "MIGRATING"


def test_the_notify_reaches_a_running_scheduler_whose_timers_are_an_hour(broker: Broker) -> None:
    """Event-driven: every timer is an hour, so only the request's NOTIFY can make the migrate job
    plan the move."""
    workload_id, instance_id = running_spot(broker)
    settings = timers_of_an_hour(broker.settings)
    scheduler = Scheduler(broker.database, [broker.sim], settings, clock=broker.clock)
    scheduler.start()
    try:
        wait_for(lambda: scheduler.stats.runs.get(Topic.MIGRATE, 0) >= 1)  # the run at start
        assert notice(broker, instance_id).status_code == 202
        wait_for(lambda: any(e["kind"] == "migration-planned" for e in broker.events(workload_id)))
        assert scheduler.stats.runs[Topic.MIGRATE] >= 2
    finally:
        scheduler.stop()


def test_a_decided_notice_is_not_decided_again_when_the_workload_is_running_again(broker: Broker) -> None:
    """``reclaim_at`` in the history marks the notice decided: a workload back in RUNNING on the same
    instance (a refused replacement launch, replanned by the executor) leaves the queue alone."""
    workload_id, instance_id = running_spot(broker)
    assert notice(broker, instance_id).json()["recorded"] is True
    assert broker.scheduler.run_losses() == 1
    with broker.database.sessions.begin() as session:
        session.execute(
            WorkloadRow.__table__.update().where(WorkloadRow.id == workload_id).values(state="RUNNING")
        )
    assert broker.scheduler.run_losses() == 0
    planned = [e for e in broker.events(workload_id) if e["kind"] == "migration-planned"]
    assert len(planned) == 1
