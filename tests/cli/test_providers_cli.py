"""`gpubroker providers check` on the simulated cloud: healthy, and under an outage."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from broker.cli import app

runner = CliRunner()
BASE = {"GPUBROKER_PROVIDERS": "sim", "AWS_EC2_METADATA_DISABLED": "true", "NO_GCE_CHECK": "True"}


def test_check_lists_every_provider_and_counts_h100_offers() -> None:
    result = runner.invoke(app, ["providers", "check", "--json"], env=BASE)
    assert result.exit_code == 0, result.output
    reports = {r["name"]: r for r in json.loads(result.output)}
    assert set(reports) == {
        "aws",
        "gcp",
        "azure",
        "lambda",
        "runpod",
        "shadeform",
        "vast",
        "kubernetes",
        "sim",
    }
    sim = reports["sim"]
    assert sim["configured"] and sim["reachable"] and sim["h100_offers"] == 64
    assert sim["breaker_state"] == "closed"
    assert not reports["aws"]["configured"] and reports["aws"]["detail"]


def test_an_outage_opens_the_breaker_and_check_shows_it() -> None:
    result = runner.invoke(
        app, ["providers", "check", "--json"], env={**BASE, "GPUBROKER_SIM_FAULTS": "outage=1"}
    )
    assert result.exit_code == 0, result.output
    sim = next(r for r in json.loads(result.output) if r["name"] == "sim")
    assert sim["reachable"] is False and sim["h100_offers"] is None
    assert sim["breaker_state"] == "open"
    assert "outage" in sim["last_error"]
    table = runner.invoke(
        app, ["providers", "check"], env={**BASE, "GPUBROKER_SIM_FAULTS": "outage=1"}
    ).output
    assert "open" in table and "outage" in table
