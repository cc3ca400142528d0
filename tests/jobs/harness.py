"""A broker on a real database with the simulated cloud, driven one job at a time (no timers)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from api.app import create_app
from broker.db.engine import Database
from broker.jobs.scheduler import Scheduler
from broker.services.prices import refresh_prices
from broker.settings import Settings
from providers.sim import SimulatedCloud
from providers.traces import SpotTrace
from tests.api.conftest import Tenant, make_tenant
from tests.providers import sim_kit
from tests.providers.sim_kit import ManualClock

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def trace(
    values: list[int], zone: str = "us-central1-a", spot: str = "2.50", on_demand: str = "10.00"
) -> SpotTrace:
    """One zone of 1-GPU H100 spot capacity at round prices: ``values[i]`` GPUs in the i-th 10-minute tick."""
    return sim_kit.trace(list(values), zone, spot=spot, on_demand=on_demand)


class Broker:
    """API + scheduler + simulated cloud, sharing one manual clock (the sim runs at 1× on it)."""

    def __init__(self, database: Database, traces: list[SpotTrace] | None = None, **sim: Any) -> None:
        self.clock = ManualClock(T0)
        self.database = database
        self.sim = SimulatedCloud(
            traces or [trace([16] * 144), trace([16] * 144, zone="us-central1-b", spot="2.60")],
            clock=self.clock,
            speedup=1.0,
            **sim,
        )
        self.settings = Settings(launch_rate_per_second=1000, launch_burst=1000)
        self.scheduler = Scheduler(database, [self.sim], self.settings, clock=self.clock)
        self.app = create_app(database, clock=self.clock)
        self.app.state.providers = []
        self.client = TestClient(self.app)
        self.tenant: Tenant = make_tenant(database, "acme")
        self.refresh_prices()

    def refresh_prices(self) -> None:
        with self.database.sessions.begin() as session:
            outcome = refresh_prices(session, self.sim, self.clock())
        assert outcome.ok, outcome

    def submit(self, **body: Any) -> dict[str, Any]:
        payload = {"gpu_types": ["H100"], "gpus_per_node": 1, "expected_hours": "4", **body}
        response = self.client.post("/v1/workloads", json=payload, headers=self.tenant.operator)
        assert response.status_code == 201, response.text
        return response.json()

    def workload(self, workload_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/workloads/{workload_id}", headers=self.tenant.viewer)
        assert response.status_code == 200, response.text
        return response.json()

    def events(self, workload_id: str) -> list[dict[str, Any]]:
        response = self.client.get(f"/v1/workloads/{workload_id}/events", headers=self.tenant.viewer)
        assert response.status_code == 200, response.text
        return response.json()["items"]

    def settle(self, rounds: int = 5) -> None:
        """Place and execute until nothing is left to do (or ``rounds`` pass)."""
        for _ in range(rounds):
            placed = self.scheduler.run_place()
            executed = self.scheduler.run_execute()
            if not placed.claimed and not executed:
                return

    def close(self) -> None:
        self.client.close()


def timers_of_an_hour(settings: Settings) -> Settings:
    """``settings`` with every job's timer at an hour: in a test with a live scheduler, only a
    wake-up (a ``NOTIFY``) can make a job run again."""
    hour = 3600.0
    return settings.model_copy(
        update={
            "place_interval_seconds": hour,
            "execute_interval_seconds": hour,
            "reconcile_interval_seconds": hour,
            "migrate_interval_seconds": hour,
            "rollup_interval_seconds": hour,
        }
    )


def wait_for(condition: Callable[[], bool], patience: float = 30.0) -> None:
    """Poll ``condition`` (a bound on a hang, not a speed assertion)."""
    give_up = time.monotonic() + patience
    while not condition():
        assert time.monotonic() < give_up, "the condition never came true"
        time.sleep(0.05)
