"""HTTP load generator for the API benchmarks: open-loop (fixed rate) and closed-loop runs over
keep-alive HTTP/1.1 connections, per-request latencies, percentiles (does network I/O).

Why a small raw-asyncio client and not httpx: on a 2-core machine the load generator shares the
CPUs with the API and PostgreSQL, and httpx costs several times more CPU per request than writing
a prepared request and reading one ``Content-Length`` response. Every request of a run is the same
bytes; only the timing differs.

Open loop: request ``i`` is due at ``start + i / rate`` whatever happened before (no coordinated
omission). Its latency runs from when it was *due*, so time spent waiting for a free connection
(the server falling behind) counts; ``service`` latency runs from when it was written. Closed loop:
``concurrency`` clients each send the next request as soon as the previous answer arrives.

Several processes (``processes``) split the rate (or the concurrency) between them; their clocks
agree because ``time.monotonic`` is system-wide on Linux.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from dataclasses import asdict, dataclass, field
from typing import Any

REQUEST_TIMEOUT = 10.0
IDLE_RECONNECT = 3.0  # uvicorn closes a keep-alive connection after 5 s idle: reconnect before that


@dataclass(frozen=True)
class Target:
    """One kind of request: where it goes, what it is, and the status that counts as success."""

    host: str
    port: int
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    expect: int = 200

    def wire(self) -> bytes:
        """The request as it goes on the wire (HTTP/1.1, keep-alive)."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass
class Samples:
    """Raw timings of one run (monotonic seconds); ``status`` 0 means no answer (error or timeout)."""

    due: list[float] = field(default_factory=list)
    sent: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the first few exception texts, for the report

    def add(self, due: float, sent: float, done: float, status: int) -> None:
        self.due.append(due)
        self.sent.append(sent)
        self.done.append(done)
        self.status.append(status)

    def extend(self, other: Samples) -> None:
        self.due += other.due
        self.sent += other.sent
        self.done += other.done
        self.status += other.status
        self.errors += other.errors[: max(0, 5 - len(self.errors))]


class Connection:
    """One keep-alive HTTP/1.1 connection that sends prepared requests and reads whole responses."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._last_used = time.monotonic()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(self, wire: bytes) -> tuple[int, bytes]:
        """Send ``wire`` and return (status, body). Raises on a broken connection."""
        if self._writer is None or time.monotonic() - self._last_used > IDLE_RECONNECT:
            self.close()
            await self.open()
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        writer.write(wire)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = None
            chunked = False
            keep_alive = True
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep_alive = False
            if chunked:
                body = await self._read_chunked(reader)
            elif length is not None:
                body = await reader.readexactly(length)
            else:
                body = await reader.read()
                keep_alive = False
        except BaseException:
            self.close()  # a half-read response leaves the connection unusable
            raise
        if keep_alive:
            self._last_used = time.monotonic()
        else:
            self.close()
        return status, body

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)


async def _open_pool(target: Target, size: int) -> asyncio.Queue[Connection]:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    connections = [Connection(target.host, target.port) for _ in range(size)]
    await asyncio.gather(*(c.open() for c in connections))
    for connection in connections:
        pool.put_nowait(connection)
    return pool


async def _one(
    target: Target, wire: bytes, pool: asyncio.Queue[Connection], due: float, samples: Samples
) -> None:
    connection = await pool.get()
    sent = time.monotonic()
    status = 0
    try:
        status, body = await asyncio.wait_for(connection.request(wire), REQUEST_TIMEOUT)
        if status != target.expect and len(samples.errors) < 5:
            samples.errors.append(f"HTTP {status}: {body[:300].decode(errors='replace')}")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
        connection.close()
        if len(samples.errors) < 5:
            samples.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        pool.put_nowait(connection)
    samples.add(due, sent, time.monotonic(), status)


async def open_loop(
    target: Target, rate: float, duration: float, connections: int, start_at: float, drain: float = 15.0
) -> Samples:
    """Send ``rate`` requests a second for ``duration`` seconds from ``start_at`` (monotonic)."""
    pool = await _open_pool(target, connections)
    wire = target.wire()
    samples = Samples()
    total = int(rate * duration)
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    i = 0
    while i < total:
        now = time.monotonic()
        while i < total and start_at + i / rate <= now:
            task = loop.create_task(_one(target, wire, pool, start_at + i / rate, samples))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if i < total:
            await asyncio.sleep(max(0.0, start_at + i / rate - time.monotonic()))
    if tasks:
        _done, late = await asyncio.wait(tasks, timeout=drain)
        for task in late:  # still waiting for a connection or an answer when the run ended
            task.cancel()
        unanswered = len(late)
        for _ in range(unanswered):
            now = time.monotonic()
            samples.add(now, now, now, 0)
        if unanswered:
            samples.errors.append(f"{unanswered} requests still unanswered {drain:.0f} s after the run")
    await _close_pool(pool)
    return samples


async def closed_loop(target: Target, concurrency: int, duration: float, start_at: float) -> Samples:
    """``concurrency`` clients, each sending its next request when the previous one is answered."""
    pool = await _open_pool(target, concurrency)
    wire = target.wire()
    samples = Samples()
    end = start_at + duration
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))

    async def client() -> None:
        while (now := time.monotonic()) < end:
            await _one(target, wire, pool, now, samples)

    await asyncio.gather(*(client() for _ in range(concurrency)))
    await _close_pool(pool)
    return samples


async def _close_pool(pool: asyncio.Queue[Connection]) -> None:
    while not pool.empty():
        pool.get_nowait().close()
    await asyncio.sleep(0)


def _run_in_process(job: dict[str, Any]) -> Samples:
    target = Target(**{**job["target"], "headers": tuple(map(tuple, job["target"]["headers"]))})
    if job["mode"] == "open":
        coro = open_loop(target, job["rate"], job["duration"], job["connections"], job["start_at"])
    else:
        coro = closed_loop(target, job["connections"], job["duration"], job["start_at"])
    return asyncio.run(coro)


def run(
    target: Target,
    *,
    mode: str,
    duration: float,
    rate: float = 0.0,
    connections: int = 64,
    processes: int = 1,
    lead: float = 0.5,
) -> Samples:
    """One run, split over ``processes`` (this process when 1). ``mode`` is "open" or "closed"."""
    if mode not in ("open", "closed"):
        raise ValueError("mode must be open or closed")
    if mode == "open" and rate <= 0:
        raise ValueError("an open-loop run needs a rate")
    start_at = time.monotonic() + lead + (0.5 if processes > 1 else 0.0)  # spawned processes start slowly
    jobs = [
        {
            "target": asdict(target),
            "mode": mode,
            "rate": rate / processes,
            "duration": duration,
            "connections": max(1, connections // processes),
            # offset each process by a fraction of the inter-arrival time so arrivals interleave
            "start_at": start_at + (p / rate if mode == "open" else 0.0),
        }
        for p in range(processes)
    ]
    if processes == 1:
        return _run_in_process(jobs[0])
    with multiprocessing.get_context("spawn").Pool(processes) as workers:
        parts = workers.map(_run_in_process, jobs)
    merged = Samples()
    for part in parts:
        merged.extend(part)
    return merged


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in [0, 1])."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(frozen=True)
class Summary:
    """What a run achieved: counts, throughput and latency percentiles in milliseconds."""

    mode: str
    requests: int
    ok: int
    errors: int
    statuses: dict[str, int]
    seconds: float
    throughput_rps: float
    latency_ms: dict[str, float]  # from when the request was due (open loop) or sent (closed loop)
    service_ms: dict[str, float]  # from when the request was written on a connection
    error_samples: list[str]


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(v * 1000 for v in values)
    if not ordered:
        return {}
    return {
        "p50": round(percentile(ordered, 0.50), 2),
        "p95": round(percentile(ordered, 0.95), 2),
        "p99": round(percentile(ordered, 0.99), 2),
        "max": round(ordered[-1], 2),
        "mean": round(sum(ordered) / len(ordered), 2),
    }


def summarize(samples: Samples, mode: str, expect: int) -> Summary:
    statuses: dict[str, int] = {}
    for status in samples.status:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    ok = statuses.get(str(expect), 0)
    good = [i for i, s in enumerate(samples.status) if s == expect]
    seconds = (max(samples.done) - min(samples.due)) if samples.done else 0.0
    return Summary(
        mode=mode,
        requests=len(samples.status),
        ok=ok,
        errors=len(samples.status) - ok,
        statuses=statuses,
        seconds=round(seconds, 3),
        throughput_rps=round(ok / seconds, 1) if seconds > 0 else 0.0,
        latency_ms=_stats([samples.done[i] - samples.due[i] for i in good]),
        service_ms=_stats([samples.done[i] - samples.sent[i] for i in good]),
        error_samples=samples.errors[:5],
    )


__all__ = ["Connection", "Samples", "Summary", "Target", "closed_loop", "open_loop", "run", "summarize"]
