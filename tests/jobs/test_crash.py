"""Crash safety: ``kill -9`` of ``gpubroker serve`` while it launches, restart, then the provider's
inventory and the database agree — no orphaned instance, no duplicate, no lost workload.

A real ``gpubroker serve`` process (API + scheduler) on the embedded PostgreSQL and the simulated
cloud, whose inventory lives in a file beside the database (as a real cloud's outlives us). Each
simulated call takes 0.15 s and launches ramp at 4/s, so the kill lands while launches are in
flight: some committed as intent and not yet called, some called and not yet recorded.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import psycopg

from broker.core.ports import InstanceState
from broker.db.embedded import EmbeddedPostgres
from providers.sim import SimulatedCloud
from tests.served import Served

WORKLOADS = 12
ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "NO_GCE_CHECK": "True",
    "GPUBROKER_PROVIDERS": "sim",
    "GPUBROKER_SIM_FAULTS": "latency=0.15",
    "GPUBROKER_SIM_SPEEDUP": "1",
    "GPUBROKER_LAUNCH_RATE_PER_SECOND": "4",
    "GPUBROKER_LAUNCH_BURST": "1",
    "GPUBROKER_COMMAND_LEASE_SECONDS": "3",
    "GPUBROKER_PLACE_INTERVAL_SECONDS": "0.5",
    "GPUBROKER_EXECUTE_INTERVAL_SECONDS": "0.2",
    "GPUBROKER_RECONCILE_INTERVAL_SECONDS": "1",
    "GPUBROKER_LOG_LEVEL": "info",
}


def sim_inventory(home: Path) -> list:
    cloud = SimulatedCloud(state_path=home / "sim-cloud.json", speedup=1.0)
    return [i for i in cloud.list_instances() if i.state in (InstanceState.RUNNING, InstanceState.PENDING)]


def wait_for(predicate, timeout: float, what: str, served: Served) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}:\n{served.output()[-5000:]}")


def instance_rows(home: Path) -> list[tuple[str, str, str]]:
    server = EmbeddedPostgres(home / "pgdata")
    url = server.start().replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(url) as conn:
            return conn.execute("SELECT id, workload_id, state FROM instance").fetchall()
    finally:
        server.stop()


def test_kill_9_during_launches_then_restart_converges(home: Path) -> None:
    env = {**ENV, "GPUBROKER_SIM_STATE": str(home / "sim-cloud.json")}
    first = Served(home, env)
    first.wait_ready()
    body = {"gpu_types": ["H100"], "gpus_per_node": 1, "capacity": "on-demand", "expected_hours": "2"}
    ids = []
    for i in range(WORKLOADS):
        response = httpx.post(
            first.url + "/v1/workloads", json={**body, "name": f"w{i}"}, headers=first.headers
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    wait_for(lambda: len(sim_inventory(home)) >= 3, 60, "the first launches", first)
    launched_before_kill = len(sim_inventory(home))
    first.stop(signal.SIGKILL)
    assert launched_before_kill < WORKLOADS, "the kill came too late to be mid-launch"

    second = Served(home, env)
    second.wait_ready()

    def all_running() -> bool:
        items = httpx.get(second.url + "/v1/workloads", params={"limit": 100}, headers=second.headers).json()[
            "items"
        ]
        return len(items) == WORKLOADS and all(w["state"] == "RUNNING" for w in items)

    wait_for(all_running, 120, "every workload RUNNING after the restart", second)
    time.sleep(2)  # one more reconcile round: nothing may change any more
    assert all_running()
    live = sim_inventory(home)
    rows = instance_rows(home)
    running_rows = {r[0]: r[1] for r in rows if r[2] == "running"}
    # No orphan: every live instance at the provider is a running row; no ghost: and vice versa.
    assert {i.instance_id for i in live} == set(running_rows), (live, rows)
    # No duplicate and no lost workload: exactly one live instance per workload.
    per_workload = sorted(running_rows.values())
    assert per_workload == sorted(ids)
    assert second.stop() == 0
    assert "Traceback" not in second.output()
