"""The provider registry: lazy adapters, clear reasons, and the simulated cloud as the fallback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from providers.registry import ADAPTERS, AdapterUnavailable, active, discover, load_module

CREDENTIAL_VARIABLES = (
    "LAMBDA_API_KEY",
    "RUNPOD_API_KEY",
    "SHADEFORM_API_KEY",
    "VAST_API_KEY",
    "AZURE_SUBSCRIPTION_ID",
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GPUBROKER_PROVIDERS",
    "GPUBROKER_SIM_FAULTS",
    "GPUBROKER_KUBE_PRICES",
)


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_GCE_CHECK", "True")


def test_with_no_credentials_the_simulated_cloud_is_used() -> None:
    entries = discover()
    assert [e.info.name for e in entries] == [a.name for a in ADAPTERS]
    assert [p.name for p in active(entries)] == ["sim"]
    for entry in entries:
        if entry.info.name != "sim":
            assert entry.problem  # each says why it is not used


def test_gpubroker_providers_selects_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUBROKER_PROVIDERS", "sim")
    entries = discover()
    assert [p.name for p in active(entries)] == ["sim"]
    assert all("not selected" in (e.problem or "") for e in entries if e.info.name != "sim")


def test_unknown_provider_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUBROKER_PROVIDERS", "sim,ibm")
    with pytest.raises(AdapterUnavailable, match="unknown providers"):
        discover()
    with pytest.raises(AdapterUnavailable, match="unknown provider"):
        load_module("ibm")


def test_a_misconfigured_simulator_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUBROKER_PROVIDERS", "sim")
    monkeypatch.setenv("GPUBROKER_SIM_FAULTS", "meteor=1")
    sim = next(e for e in discover() if e.info.name == "sim")
    assert not sim.configured and "misconfigured" in (sim.problem or "") and "meteor" in (sim.problem or "")


def test_a_configured_provider_replaces_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDA_API_KEY", "secret_test_key")
    entries = discover()
    assert [p.name for p in active(entries)] == ["lambda"]
    sim = next(e for e in entries if e.info.name == "sim")
    assert sim.problem == "a real provider is configured"


def test_unconfigured_sdk_adapters_are_not_even_imported() -> None:
    # A fresh interpreter: nothing imported yet. No signal means no import, no credential chain.
    code = (
        "import sys; from providers.registry import discover; discover(); "
        "heavy = ('providers.aws', 'providers.gcp', 'providers.azure', 'boto3'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES}
    env["HOME"] = "/nonexistent-home-for-test"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
