"""Run the real node agent on a real NVIDIA GPU and record what it posts (does I/O; needs a GPU).

This is the check the fake-NVML tests cannot make: ``gpubroker agent``'s own command (the same
``register`` the CLI uses, with the real ``pynvml`` and the real HTTP client) reads every GPU
on this machine and posts batches to a local receiver that answers like ``POST /v1/utilization``
(202 ``{"accepted", "duplicates"}``), after first answering one 503 and one 429 with
``Retry-After: 1`` so the agent's retries run for real. Half-way through, a matrix-multiply load
(PyTorch, when installed) drives the GPUs busy, so the readings must move. ``nvidia-smi`` is
sampled alongside for comparison.

    python3 bench/agent_on_gpu.py --out DIR [--rounds 16] [--interval 1]

Writes to DIR: ``batches.json`` (every posted body and the answer it got), ``nvidia_smi.csv``
and ``summary.json``. ``tests/agent/data/h100_agent_batches.json`` is such a recording, replayed
against the real API by ``tests/agent/test_recorded_gpu.py``. Needs only the standard library,
httpx, typer and nvidia-ml-py (plus torch for the load), so it runs on a bare GPU image.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import typer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.agent import register

KEY = "gpb_0123456789abcdef_agent-on-gpu-check"
INSTANCE_ID = "i_real_gpu"
SAMPLE_FIELDS = {
    "instance_id",
    "gpu_index",
    "at",
    "gpu_util_pct",
    "memory_used_mib",
    "memory_total_mib",
    "power_watts",
}
LOAD = """
import sys, time, torch
seconds = float(sys.argv[1])
n = torch.cuda.device_count()
mats = [(torch.randn(8192, 8192, device=f"cuda:{i}", dtype=torch.bfloat16),) * 2 for i in range(n)]
hold = [torch.empty(10 * 1024**3, dtype=torch.uint8, device=f"cuda:{i}") for i in range(n)]  # 10 GiB each
end = time.monotonic() + seconds
while time.monotonic() < end:
    for a, b in mats:
        a @ b
    torch.cuda.synchronize()
"""


class Receiver(BaseHTTPRequestHandler):
    """Answers like POST /v1/utilization: a 503, then a 429 (Retry-After: 1), then 202s."""

    posts: ClassVar[list[dict[str, Any]]] = []
    script: ClassVar[list[tuple[int, dict[str, str], dict[str, Any]]]] = [
        (503, {}, {"type": "about:blank", "title": "Service Unavailable", "status": 503}),
        (429, {"Retry-After": "1"}, {"type": "about:blank", "title": "Too Many Requests", "status": 429}),
    ]
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        problems = check(body)
        if self.path != "/v1/utilization" or self.headers.get("Authorization") != f"Bearer {KEY}":
            problems.append(f"wrong path or key: {self.path}")
        with self.lock:
            if problems:
                status, headers, answer = 422, {}, {"status": 422, "errors": problems}
            elif self.script:
                status, headers, answer = self.script.pop(0)
            else:
                status, headers, answer = 202, {}, {"accepted": len(body["samples"]), "duplicates": 0}
            self.posts.append({"at": time.time(), "status": status, "body": body})
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status < 400 else "application/problem+json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        return


def check(body: dict[str, Any]) -> list[str]:
    """What the API's schema would refuse in this body (the shape, not every bound)."""
    problems = []
    samples = body.get("samples")
    if not isinstance(samples, list) or not samples:
        return ["samples must be a non-empty list"]
    for n, s in enumerate(samples):
        if set(s) != SAMPLE_FIELDS:
            problems.append(f"sample {n} has fields {sorted(s)}")
        elif not 0 <= float(s["gpu_util_pct"]) <= 100:
            problems.append(f"sample {n} utilization {s['gpu_util_pct']}")
        elif s["memory_used_mib"] is not None and s["memory_used_mib"] > s["memory_total_mib"]:
            problems.append(f"sample {n} uses more memory than it has")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    smi_file = (args.out / "nvidia_smi.csv").open("w")
    smi = subprocess.Popen(
        [
            shutil.which("nvidia-smi") or "true",
            "--query-gpu=timestamp,index,name,utilization.gpu,memory.used,memory.total,power.draw",
            "--format=csv,noheader,nounits",
            "-lms",
            "1000",
        ],
        stdout=smi_file,
    )
    total = args.rounds * args.interval
    # The load starts a third of the way in and ends at two thirds: idle, busy, idle again.
    load = threading.Timer(
        total / 3,
        lambda: subprocess.run([sys.executable, "-c", LOAD, str(total / 3)], check=False),
    )
    load.start()

    app = typer.Typer()
    register(app)
    app.command("noop")(lambda: None)  # a group of two commands, so "agent" is named as on the CLI
    started = time.time()
    try:
        # Not standalone: click returns a typer.Exit's code instead of exiting.
        agent_exit = (
            app(
                [
                    "agent",
                    "--api",
                    url,
                    "--key",
                    KEY,
                    "--instance-id",
                    INSTANCE_ID,
                    "--interval",
                    str(args.interval),
                    "--rounds",
                    str(args.rounds),
                    "--log-level",
                    "info",
                ],
                standalone_mode=False,
            )
            or 0
        )
    except typer.Exit as stop:
        agent_exit = stop.exit_code
    elapsed = time.time() - started
    load.join()
    smi.terminate()
    smi.wait()
    smi_file.close()
    server.shutdown()

    posts = Receiver.posts
    (args.out / "batches.json").write_text(json.dumps(posts, indent=1))
    taken = [s for p in posts if p["status"] == 202 for s in p["body"]["samples"]]
    utils = [float(s["gpu_util_pct"]) for s in taken]
    summary = {
        "agent_exit": agent_exit,
        "seconds": round(elapsed, 2),
        "posts": [p["status"] for p in posts],
        "samples_taken": len(taken),
        "gpus": sorted({s["gpu_index"] for s in taken}),
        "util_min_max": [min(utils, default=None), max(utils, default=None)],
        "memory_total_mib": sorted({s["memory_total_mib"] for s in taken}),
        "memory_used_max_mib": max((s["memory_used_mib"] or 0 for s in taken), default=None),
        "power_watts_min_max": [
            min((float(s["power_watts"]) for s in taken if s["power_watts"]), default=None),
            max((float(s["power_watts"]) for s in taken if s["power_watts"]), default=None),
        ],
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return agent_exit


if __name__ == "__main__":
    raise SystemExit(main())
