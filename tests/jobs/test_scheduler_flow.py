"""The whole path through the API alone: submit → placed → launched on the simulated cloud →
preempted → migrated, with events and an explanation (real database, real scheduler jobs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from broker.core.ports import InstanceState
from broker.db.engine import Database
from tests.jobs.harness import Broker


@pytest.fixture
def broker(database: Database) -> Iterator[Broker]:
    b = Broker(database)
    yield b
    b.close()


def test_submit_place_launch_run(broker: Broker) -> None:
    workload = broker.submit(name="train-1", capacity="spot")
    assert workload["state"] == "PENDING"
    broker.settle()
    current = broker.workload(workload["id"])
    assert current["state"] == "RUNNING", current
    assert current["placement"]["cloud"] == "sim"
    assert current["placement"]["capacity_type"] == "spot"
    assert current["placement"]["zone"] == "us-central1-a"  # the cheaper spot zone
    live = [i for i in broker.sim.list_instances() if i.state is InstanceState.RUNNING]
    assert len(live) == 1
    kinds = [e["kind"] for e in broker.events(workload["id"])]
    assert kinds[:2] == ["submitted", "transition"]
    assert "placed" in kinds and "launched" in kinds
    states = [e["to_state"] for e in broker.events(workload["id"]) if e["kind"] == "transition"]
    assert states == ["PLACING", "PROVISIONING", "RUNNING"]


def test_preemption_notice_migrates_the_workload(broker: Broker) -> None:
    workload = broker.submit(capacity="spot")
    broker.settle()
    first = next(i for i in broker.sim.list_instances() if i.state is InstanceState.RUNNING)
    broker.sim.reclaim(first.instance_id)
    reports = broker.scheduler.run_reconcile()
    assert reports[0].actions.get("notice") == 1, reports
    current = broker.workload(workload["id"])
    assert current["state"] == "MIGRATING", current
    broker.settle()
    broker.clock.advance(seconds=31)  # the notice runs out: the old instance is reclaimed
    broker.scheduler.run_reconcile()
    broker.settle()
    current = broker.workload(workload["id"])
    assert current["state"] == "RUNNING", current
    assert current["generation"] == 1
    live = [i for i in broker.sim.list_instances() if i.state is InstanceState.RUNNING]
    assert len(live) == 1 and live[0].instance_id != first.instance_id
    kinds = [e["kind"] for e in broker.events(workload["id"])]
    assert "preemption-notice" in kinds and "migration-planned" in kinds and "migrated" in kinds


def test_cancel_terminates_instances(broker: Broker) -> None:
    workload = broker.submit()
    broker.settle()
    response = broker.client.post(f"/v1/workloads/{workload['id']}/cancel", headers=broker.tenant.operator)
    assert response.status_code == 200 and response.json()["state"] == "CANCELLED"
    broker.settle()
    assert all(i.state is InstanceState.TERMINATED for i in broker.sim.list_instances())


def test_explain_names_the_chosen_offer_and_rejections(broker: Broker) -> None:
    workload = broker.submit(capacity="spot", max_price_per_gpu_hour="2.55")
    broker.app.state.providers = []
    response = broker.client.get(f"/v1/workloads/{workload['id']}/explain", headers=broker.tenant.viewer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decision"] == "place"
    assert body["chosen"]["zone"] == "us-central1-a"
    assert body["rejections_by_filter"]  # the 2.60 zone and on-demand are over the cap or not spot
    reasons = " ".join(r["reason"] for r in body["rejected"])
    assert "2.55" in reasons or "spot" in reasons
