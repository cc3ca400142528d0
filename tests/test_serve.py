"""`gpubroker serve` as a user runs it: a real process, embedded PostgreSQL, Ctrl-C, kill -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from broker.db.embedded import server_pid
from broker.db.schema import head_revision

GPUBROKER = str(Path(sys.executable).parent / "gpubroker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, home: Path, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GPUBROKER_DATABASE_URL")}
        env.update({"GPUBROKER_HOME": str(home), "GPUBROKER_PORT": str(self.port)}, **(extra_env or {}))
        self.log = home.parent / f"serve-{self.port}.log"
        self.log_file = self.log.open("w")
        self.proc = subprocess.Popen(
            [GPUBROKER, "serve"], env=env, stdout=self.log_file, stderr=subprocess.STDOUT
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                response = httpx.get(self.url + "/readyz", timeout=2)
                if response.status_code == 200:
                    return response
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"serve not ready in {timeout}s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=30)
        self.log_file.close()
        return code

    @property
    def headers(self) -> dict[str, str]:
        """The bootstrap admin key, which the first start wrote to $GPUBROKER_HOME/admin-key."""
        return {"Authorization": "Bearer " + (self.home / "admin-key").read_text().strip()}

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers, **kwargs)  # type: ignore[arg-type]

    def output(self) -> str:
        if not self.log_file.closed:
            self.log_file.flush()
        return self.log.read_text()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "home"
    pgdata = tmp_path / "home" / "pgdata"
    pid = server_pid(pgdata) if pgdata.exists() else None
    if pid is not None:  # never leave a server behind, whatever the test did
        os.kill(pid, signal.SIGTERM)


def wait_gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/status").exists() and "zombie" in Path(f"/proc/{pid}/status").read_text():
            return True
        time.sleep(0.1)
    return False


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
