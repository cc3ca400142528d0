"""A real ``gpubroker serve`` process for tests: start it, wait for it, talk to it, stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

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
