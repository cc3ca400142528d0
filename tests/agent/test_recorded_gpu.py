"""What the agent posted from a real H100 (tests/agent/data, recorded by bench/agent_on_gpu.py) is
taken by the real API, duplicates and all, and the fleet summary reports exactly its numbers."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from broker.db.engine import Database
from tests.api.conftest import NOW, Tenant
from tests.fleet_rows import add_running_instance

RECORDING = json.loads((Path(__file__).parent / "data" / "h100_agent_batches.json").read_text())


def shifted_posts(instance_id: str) -> list[dict[str, Any]]:
    """The recorded bodies, in the order they were sent, moved so the last reading is a minute before NOW."""
    last = max(datetime.fromisoformat(s["at"]) for p in RECORDING["posts"] for s in p["body"]["samples"])
    shift = NOW - timedelta(minutes=1) - last
    return [
        {
            "samples": [
                s | {"instance_id": instance_id, "at": (datetime.fromisoformat(s["at"]) + shift).isoformat()}
                for s in p["body"]["samples"]
            ]
        }
        for p in RECORDING["posts"]
    ]


def readings() -> list[dict[str, Any]]:
    """Each distinct reading once (a body the receiver refused was sent again, with newer readings)."""
    seen = {(s["gpu_index"], s["at"]): s for p in RECORDING["posts"] for s in p["body"]["samples"]}
    return list(seen.values())


@pytest.fixture
def client(
    database: Database, tenant: Tenant, api: Callable[[dict[str, str]], TestClient]
) -> tuple[TestClient, TestClient, str]:
    """An operator's and a viewer's client, and a running one-GPU instance to post for."""
    return api(tenant.operator), api(tenant.viewer), add_running_instance(database, tenant.org_id, gpus=1)


def test_the_recording_is_a_real_h100_going_idle_busy_idle() -> None:
    assert RECORDING["recorded"]["gpu"] == "NVIDIA H100 80GB HBM3"
    assert [p["status"] for p in RECORDING["posts"][:3]] == [503, 429, 202]  # the retries ran for real
    got = readings()
    assert len(got) == 24 and {s["memory_total_mib"] for s in got} == {81_559}
    utils = [Decimal(s["gpu_util_pct"]) for s in got]
    assert utils[0] == 0 and max(utils) >= 90 and utils[-1] < max(utils)
    # Memory used as nvidia-smi shows it (v2: the driver's 480 MiB reserve is not "used"), to the MiB.
    smi = [int(line.split(",")[4]) for line in RECORDING["recorded"]["nvidia_smi"]]
    assert all(abs(s["memory_used_mib"] - m) <= 1 for s, m in zip(got, smi, strict=False))
    assert got[0]["memory_used_mib"] == 0


def test_the_api_takes_every_recorded_post_and_counts_the_resent_readings_as_duplicates(
    client: tuple[TestClient, TestClient, str],
) -> None:
    operator, _, instance = client
    answers = [operator.post("/v1/utilization", json=body) for body in shifted_posts(instance)]
    assert {a.status_code for a in answers} == {202}
    sent = sum(len(p["body"]["samples"]) for p in RECORDING["posts"])
    assert sum(a.json()["accepted"] for a in answers) == len(readings()) == 24
    assert sum(a.json()["duplicates"] for a in answers) == sent - 24


def test_the_fleet_summary_is_the_recordings_arithmetic(client: tuple[TestClient, TestClient, str]) -> None:
    operator, viewer, instance = client
    for body in shifted_posts(instance):
        operator.post("/v1/utilization", json=body)
    got = readings()
    [group] = viewer.get("/v1/utilization/summary", params={"group_by": "org"}).json()["groups"]
    assert (group["instances"], group["gpus"], group["samples"]) == (1, 1, 24)

    utils = sorted(Decimal(s["gpu_util_pct"]) for s in got)
    mean = sum(utils) / len(utils)
    assert abs(Decimal(group["avg_gpu_util_pct"]) - mean) < Decimal("0.01")
    assert Decimal(group["p95_gpu_util_pct"]) == utils[-(-95 * len(utils) // 100) - 1]  # nearest rank
    memory = sum(Decimal(s["memory_used_mib"]) / s["memory_total_mib"] * 100 for s in got) / len(got)
    assert abs(Decimal(group["avg_memory_used_pct"]) - memory) < Decimal("0.01")
    power = sum(Decimal(s["power_watts"]) for s in got) / len(got)
    assert abs(Decimal(group["avg_power_watts"]) - power) < Decimal("0.01")

    [series] = viewer.get("/v1/utilization/instances", params={"bucket_seconds": 300}).json()["items"]
    assert series["id"] == instance
    assert max(Decimal(b["gpu_util_pct"]) for b in series["buckets"] if b["gpu_util_pct"] is not None) > 0
