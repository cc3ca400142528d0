"""The reconciler on a real database and the simulated cloud: preemptions and losses are marked in
bulk and queued; the migrate job decides them after the reconcile committed, woken by NOTIFY."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import func, select

from broker.core.ports import Instance, InstanceState
from broker.db.engine import Database
from broker.db.fleet import CommandRow, InstanceRow, WorkloadEvent, WorkloadRow
from broker.jobs.scheduler import Scheduler
from broker.services.lifecycle import WAKE_CHANNEL, Topic
from broker.services.migration_queue import handle_losses, record_losses
from broker.services.migrations import MigrationContext
from broker.services.reconciler import reconcile_provider
from tests.jobs.harness import Broker, timers_of_an_hour, wait_for


@pytest.fixture
def broker(database: Database) -> Iterator[Broker]:
    b = Broker(database)
    yield b
    b.close()


def running_spot_workloads(broker: Broker, count: int) -> list[str]:
    ids = [broker.submit(capacity="spot")["id"] for _ in range(count)]
    broker.settle()
    assert [broker.workload(i)["state"] for i in ids] == ["RUNNING"] * count
    return ids


def listed(broker: Broker, state: InstanceState, only: set[str] | None = None) -> list[Instance]:
    """The sim's listing, with ``only`` (default: every instance) shown in ``state``."""
    return [
        dataclasses.replace(i, state=state) if only is None or i.instance_id in only else i
        for i in broker.sim.list_instances()
    ]


def reconcile(broker: Broker, inventory: list[Instance]) -> dict[str, int]:
    report = reconcile_provider(broker.database, broker.sim, broker.clock, ["sim"], inventory=inventory)
    assert report.skipped is None
    return report.actions


def instance_of(database: Database, workload_id: str) -> InstanceRow:
    """The workload's first instance (generation 0)."""
    with database.sessions() as session:
        mine = select(InstanceRow).where(InstanceRow.workload_id == workload_id, InstanceRow.generation == 0)
        return session.scalars(mine).one()


def event_kinds(database: Database, workload_id: str) -> list[str]:
    with database.sessions() as session:
        return list(
            session.scalars(
                select(WorkloadEvent.kind)
                .where(WorkloadEvent.workload_id == workload_id)
                .order_by(WorkloadEvent.id)
            )
        )


@pytest.fixture
def wake_ups(database: Database) -> Iterator[psycopg.Connection]:
    url = database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"LISTEN {WAKE_CHANNEL}")
        yield conn


def test_preemptions_are_marked_in_the_reconcile_and_decided_by_the_migrate_job(
    broker: Broker, wake_ups: psycopg.Connection
) -> None:
    ids = running_spot_workloads(broker, 3)
    preempted = {instance_of(broker.database, w).id for w in ids[:2]}
    assert reconcile(broker, listed(broker, InstanceState.PREEMPTED, preempted)) == {"preempted": 2}
    # Marked and recorded in the reconcile's transaction ...
    for workload_id in ids[:2]:
        row = instance_of(broker.database, workload_id)
        assert (row.state, row.state_reason, row.ended_at) == ("preempted", "preempted", broker.clock())
        assert event_kinds(broker.database, workload_id)[-1] == "preempted"
    untouched = instance_of(broker.database, ids[2])
    assert untouched.state == "running" and "preempted" not in event_kinds(broker.database, ids[2])
    # ... the decision is queued: still RUNNING, with lost_at, and the migrate job was woken.
    with broker.database.sessions() as session:
        rows = {r.id: r for r in session.scalars(select(WorkloadRow).where(WorkloadRow.id.in_(ids)))}
    assert {w: rows[w].state for w in ids} == dict.fromkeys(ids, "RUNNING")
    assert all(rows[w].history["lost_at"] == broker.clock().isoformat() for w in ids[:2])
    assert "lost_at" not in rows[ids[2]].history
    assert Topic.MIGRATE in [n.payload for n in wake_ups.notifies(timeout=1.0, stop_after=1)]

    assert broker.scheduler.run_losses() == 2
    for workload_id in ids[:2]:
        assert broker.workload(workload_id)["state"] == "MIGRATING"
        assert "migration-planned" in event_kinds(broker.database, workload_id)
    assert broker.workload(ids[2])["state"] == "RUNNING"
    with broker.database.sessions() as session:
        launches = session.scalars(
            select(CommandRow.workload_id).where(CommandRow.kind == "launch", CommandRow.state == "pending")
        ).all()
    assert sorted(launches) == sorted(ids[:2])
    assert broker.scheduler.run_losses() == 0  # handled once

    broker.settle()  # the replacements launch and cut over
    for workload_id in ids[:2]:
        current = broker.workload(workload_id)
        assert current["state"] == "RUNNING" and current["generation"] == 1, current


def test_a_second_reconcile_of_the_same_preemption_changes_nothing(broker: Broker) -> None:
    (workload_id,) = running_spot_workloads(broker, 1)
    instance_id = instance_of(broker.database, workload_id).id
    inventory = listed(broker, InstanceState.PREEMPTED, {instance_id})
    assert reconcile(broker, inventory) == {"preempted": 1}
    assert reconcile(broker, inventory) == {}
    assert event_kinds(broker.database, workload_id).count("preempted") == 1


def test_a_lost_instance_is_queued_like_a_preemption(broker: Broker) -> None:
    (workload_id,) = running_spot_workloads(broker, 1)
    broker.clock.advance(minutes=5)  # past the reconciler's grace for instances missing from a listing
    assert reconcile(broker, []) == {"lost": 1}
    row = instance_of(broker.database, workload_id)
    assert (row.state, row.state_reason) == ("lost", "lost")
    assert broker.workload(workload_id)["state"] == "RUNNING"
    assert broker.scheduler.run_rebalance() == 0  # the migrate job handles the queue first
    assert broker.workload(workload_id)["state"] in ("MIGRATING", "PENDING")
    assert "preempted" in event_kinds(broker.database, workload_id)


def test_an_instance_that_was_not_serving_is_recorded_but_not_queued(broker: Broker) -> None:
    (workload_id,) = running_spot_workloads(broker, 1)
    instance_id = instance_of(broker.database, workload_id).id
    now = broker.clock()
    with broker.database.sessions.begin() as session:
        session.execute(
            InstanceRow.__table__.update().where(InstanceRow.id == instance_id).values(serving=False)
        )
        assert record_losses(session, {instance_id: "preempted"}, now, now) == 0
        assert record_losses(session, {instance_id: "preempted"}, now, now) == 0  # already ended
        assert handle_losses(session, MigrationContext(["sim"], now)) == 0
        events = session.scalar(
            select(func.count()).where(
                WorkloadEvent.workload_id == workload_id, WorkloadEvent.kind == "preempted"
            )
        )
    assert events == 1
    assert instance_of(broker.database, workload_id).state == "preempted"
    assert broker.workload(workload_id)["state"] == "RUNNING"


def test_the_migrate_job_skips_workloads_another_scheduler_holds(broker: Broker) -> None:
    (workload_id,) = running_spot_workloads(broker, 1)
    instance_id = instance_of(broker.database, workload_id).id
    assert reconcile(broker, listed(broker, InstanceState.PREEMPTED, {instance_id})) == {"preempted": 1}
    with broker.database.sessions.begin() as holder:
        holder.execute(select(WorkloadRow.id).where(WorkloadRow.id == workload_id).with_for_update())
        assert broker.scheduler.run_losses() == 0
    broker.clock.advance(seconds=1)
    assert broker.scheduler.run_losses() == 1
    assert broker.workload(workload_id)["state"] == "MIGRATING"


def test_a_notice_found_by_the_reconcile_is_still_decided_at_once(broker: Broker) -> None:
    (workload_id,) = running_spot_workloads(broker, 1)
    instance_id = instance_of(broker.database, workload_id).id
    noticed = [
        dataclasses.replace(i, state_reason="preemption-notice") if i.instance_id == instance_id else i
        for i in broker.sim.list_instances()
    ]
    assert reconcile(broker, noticed) == {"notice": 1}
    assert broker.workload(workload_id)["state"] == "MIGRATING"
    assert instance_of(broker.database, workload_id).notice_at == broker.clock()


def test_the_notify_wakes_the_migrate_job_of_a_running_scheduler(broker: Broker) -> None:
    """Event-driven, not timer-driven: every timer is an hour, so only the reconcile's NOTIFY can
    make the migrate job run again and move the workload."""
    (workload_id,) = running_spot_workloads(broker, 1)
    settings = timers_of_an_hour(broker.settings)
    scheduler = Scheduler(broker.database, [broker.sim], settings, clock=broker.clock)
    scheduler.start()
    try:
        wait_for(lambda: scheduler.stats.runs.get(Topic.MIGRATE, 0) >= 1)  # the run at start
        instance_id = instance_of(broker.database, workload_id).id
        assert reconcile(broker, listed(broker, InstanceState.PREEMPTED, {instance_id})) == {"preempted": 1}
        wait_for(lambda: "migration-planned" in event_kinds(broker.database, workload_id))
        wait_for(lambda: scheduler.stats.runs[Topic.MIGRATE] >= 2)  # planned by a second run
    finally:
        scheduler.stop()
