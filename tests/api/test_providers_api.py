"""GET /v1/providers reports the server's providers and their breakers without calling them."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from broker.core.errors import Transient
from broker.db.engine import Database
from providers.registry import discover
from providers.resilience import ResiliencePolicy
from tests.api.conftest import make_tenant


def test_providers_shows_an_open_breaker(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUBROKER_PROVIDERS", "sim")
    monkeypatch.setenv("GPUBROKER_SIM_FAULTS", "outage=1")
    entries = discover(ResiliencePolicy(backoff_initial=0.001, backoff_max=0.002))  # no real waiting
    sim = next(e.provider for e in entries if e.provider is not None)
    for _ in range(2):  # 2 calls x 4 attempts: past the 5-failure threshold
        with pytest.raises(Transient):
            sim.list_offers()
    with TestClient(
        create_app(database, provider_entries=entries), headers=make_tenant(database, "acme").viewer
    ) as client:
        body = client.get("/v1/providers").json()
    reports = {p["name"]: p for p in body["providers"]}
    assert reports["aws"]["configured"] is False and "not selected" in reports["aws"]["detail"]
    report = reports["sim"]
    assert report["configured"] and report["breaker_state"] == "open"
    assert report["breakers"][0]["region"] == "*" and report["breakers"][0]["state"] == "open"
    assert report["breakers"][0]["consecutive_failures"] >= 5
    assert "outage" in report["last_error"]
    assert sorted(report["capacity_types"]) == ["on-demand", "reserved", "spot"]
    sim.close()
