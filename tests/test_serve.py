"""`gpubroker serve` as a user runs it: a real process, embedded PostgreSQL, Ctrl-C, kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from broker.db.embedded import server_pid
from broker.db.schema import head_revision
from tests.served import GPUBROKER, Served, wait_gone


def test_serve_answers_then_ctrl_c_stops_it_and_its_postgres_and_restart_reuses_data(home: Path) -> None:
    served = Served(home)
    ready = served.wait_ready()
    assert ready.json()["schema_revision"] == head_revision()
    assert httpx.get(served.url + "/healthz").json()["status"] == "ok"
    assert httpx.get(served.url + "/docs").status_code == 200
    offers = served.get("/v1/offers", params={"gpu": "H100", "limit": 1000}).json()["offers"]
    assert {"aws", "gcp", "lambda", "runpod", "nebius"} <= {o["cloud"] for o in offers}
    pg_pid = server_pid(home / "pgdata")
    assert pg_pid is not None

    assert served.stop(signal.SIGINT) == 0
    assert wait_gone(pg_pid), "embedded PostgreSQL still running after Ctrl-C"
    assert "gpubroker stopped" in served.output()

    again = Served(home)
    again.wait_ready()
    snapshots = subprocess.run(
        [GPUBROKER, "catalog", "list"],
        env={**os.environ, "GPUBROKER_HOME": str(home)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert snapshots.count("bundled") == 1  # the data was reused, the catalog not loaded twice
    assert again.stop() == 0


def test_start_after_kill_9_of_serve_recovers_and_still_stops_cleanly(home: Path) -> None:
    first = Served(home)
    first.wait_ready()
    pg_pid = server_pid(home / "pgdata")
    first.stop(signal.SIGKILL)  # the postmaster survives its parent
    assert server_pid(home / "pgdata") == pg_pid

    second = Served(home)
    second.wait_ready()
    assert "Traceback" not in second.output()
    assert second.stop() == 0
    assert wait_gone(pg_pid), "a dead previous user kept the embedded PostgreSQL running"


def test_start_after_kill_9_of_serve_and_postgres_recovers(home: Path) -> None:
    first = Served(home)
    first.wait_ready()
    pg_pid = server_pid(home / "pgdata")
    assert pg_pid is not None
    first.stop(signal.SIGKILL)
    os.kill(pg_pid, signal.SIGKILL)
    assert wait_gone(pg_pid)
    assert (home / "pgdata" / "postmaster.pid").exists()  # stale

    second = Served(home)
    second.wait_ready()
    output = second.output()
    assert "not shut down cleanly" in output and "Traceback" not in output
    offers = second.get("/v1/offers", params={"gpu": "H100"}).json()["offers"]
    assert offers
    assert second.stop() == 0


def test_serve_with_database_url_never_starts_the_embedded_server(home: Path, database_url: str) -> None:
    served = Served(home, {"DATABASE_URL": database_url})
    served.wait_ready()
    assert not (home / "pgdata").exists()
    assert served.get("/v1/offers", params={"gpu": "H100", "limit": 1}).json()["count"] == 1
    assert served.stop() == 0


def test_sigterm_stops_serve_and_its_postgres_cleanly(home: Path) -> None:
    served = Served(home)
    served.wait_ready()
    pg_pid = server_pid(home / "pgdata")
    assert pg_pid is not None
    assert served.stop(signal.SIGTERM) == 0  # docker stop, systemd
    assert wait_gone(pg_pid), "embedded PostgreSQL still running after SIGTERM"
    assert "gpubroker stopped" in served.output()


def test_serve_without_credentials_runs_on_the_simulated_cloud(home: Path) -> None:
    served = Served(home, {"AWS_EC2_METADATA_DISABLED": "true", "NO_GCE_CHECK": "True"})
    served.wait_ready()
    assert "providers: sim (the simulated cloud" in served.output()
    # Prices are refreshed in the background, right after start-up.
    deadline = time.monotonic() + 30
    while True:
        sim = served.get("/v1/offers", params={"gpu": "H100", "cloud": "sim", "limit": 100}).json()
        if sim["count"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sim["count"] == 64  # 8 traced zones x 4 a3-highgpu sizes x (on-demand, spot)
    assert "prices from sim: 64 offers" in served.output()
    assert {o["availability"] for o in sim["offers"]} <= {"available", "limited", "unavailable"}
    providers = {p["name"]: p for p in served.get("/v1/providers").json()["providers"]}
    assert providers["sim"]["configured"] and providers["sim"]["reachable"]
    assert providers["sim"]["interruption_notice_seconds"] == 30
    assert served.stop() == 0
