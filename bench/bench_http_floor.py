"""Benchmark: the HTTP floor of this machine — a bare ASGI app on uvicorn that does nothing but answer
(no FastAPI, no middleware, no database), driven by the same load generator as ``bench_api.py``
(does I/O).

Run (from the repository root):

    .venv/bin/python bench/bench_http_floor.py --rate 1000 --duration 20

Whatever latency and CPU per request this shows, no API route can beat on the same machine: it is
the price of uvicorn (uvloop + httptools), the kernel's loopback and the load generator. Numbers
only, no thresholds.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loadgen

BODY = b'{"id":"wl_0000000000000000","state":"PENDING"}'


async def app(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """Answer every request 201 with a small JSON body, as a creation would."""
    if scope["type"] != "http":
        return
    while True:  # read the body, as a real route must
        message = await receive()  # type: ignore[operator]
        if not message.get("more_body"):
            break
    await send(  # type: ignore[operator]
        {"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": BODY})  # type: ignore[operator]


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run("bench_http_floor:app", host="127.0.0.1", port=port, log_level="warning", access_log=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="open-loop requests per second")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, __file__, "_serve", str(args.port)], cwd=str(Path(__file__).parent)
    )
    try:
        deadline = time.monotonic() + 30.0
        while True:  # wait until the server accepts connections
            try:
                socket.create_connection(("127.0.0.1", args.port), timeout=1.0).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the bare ASGI server did not start") from None
                time.sleep(0.1)
        target = loadgen.Target(
            "127.0.0.1", args.port, "POST", "/v1/workloads", body=b'{"gpus_per_node": 8}', expect=201
        )
        loadgen.run(target, mode="open", duration=args.warmup, rate=args.rate)
        proc = psutil.Process(server.pid)
        cpu0 = sum(proc.cpu_times()[:2])
        samples = loadgen.run(target, mode="open", duration=args.duration, rate=args.rate)
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        summary = loadgen.summarize(samples, "open", 201)
        answered = summary.ok or 1
        print(
            f"machine: {psutil.cpu_count()} CPUs; bare ASGI on uvicorn, "
            f"open loop {args.rate:g}/s x {args.duration:g} s"
        )
        lat = summary.latency_ms
        print(
            f"answered {summary.ok}/{summary.requests}, {summary.throughput_rps:.1f} req/s, "
            f"p50 {lat.get('p50')} ms, p95 {lat.get('p95')} ms, p99 {lat.get('p99')} ms"
        )
        print(f"server CPU per answered request: {cpu / answered * 1000:.3f} ms")
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_serve":
        serve(int(sys.argv[2]))
    else:
        main()
