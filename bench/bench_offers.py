"""Benchmark: start-up, catalog load and offer look-up latency of a real `gpubroker serve` (does I/O).

Run:  .venv/bin/python bench/bench_offers.py [--requests 300]
Prints a Markdown table; record results in docs/benchmarks.md. No thresholds: numbers only.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

GPUBROKER = str(Path(sys.executable).parent / "gpubroker")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit("serve did not become ready")


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "GPUBROKER_HOME": str(Path(tmp) / "home"), "GPUBROKER_LOG_LEVEL": "warning"}
        env.pop("DATABASE_URL", None)
        for label in ("first start (initdb, migrations, catalog load)", "second start (data reused)"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = subprocess.Popen(
                [GPUBROKER, "serve", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            rows.append((f"`serve` to ready, {label}", f"{wait_ready(url, proc):.2f} s"))
            if label.startswith("first"):
                with httpx.Client(base_url=url) as client:
                    for name, params in (
                        ("H100, all clouds, limit 50", {"gpu": "H100"}),
                        (
                            "H100 x8 spot, max $3/GPU-h",
                            {"gpu": "H100", "count": 8, "capacity": "spot", "max_price": 3},
                        ),
                        ("all GPUs, limit 1000", {"limit": 1000}),
                    ):
                        client.get("/v1/offers", params=params)  # warm
                        samples = []
                        for _ in range(args.requests):
                            t = time.perf_counter()
                            response = client.get("/v1/offers", params=params)
                            samples.append((time.perf_counter() - t) * 1000)
                            response.raise_for_status()
                        rows.append(
                            (
                                f"`GET /v1/offers` {name} (n={args.requests})",
                                f"p50 {statistics.median(samples):.1f} ms, "
                                f"p95 {percentile(samples, 0.95):.1f} ms",
                            )
                        )
            proc.send_signal(signal.SIGINT)
            t = time.perf_counter()
            proc.wait(timeout=60)
            rows.append(
                (
                    f"Ctrl-C to exit (incl. PostgreSQL stop), {label.split(' (')[0]}",
                    f"{time.perf_counter() - t:.2f} s",
                )
            )
        t = time.perf_counter()
        subprocess.run(
            [GPUBROKER, "offers", "--gpu", "H100", "--json"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        rows.append(
            (
                "`gpubroker offers --gpu H100` cold (starts and stops embedded PostgreSQL)",
                f"{time.perf_counter() - t:.2f} s",
            )
        )
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
