"""Smoke tests of the API and reconcile benchmarks: tiny runs that must produce sane, consistent
numbers (no errors, counts that match the database). No thresholds on time."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from broker.core.reconcile import diff
from broker.db.engine import Database
from broker.db.fleet import CommandRow, InstanceRow, WorkloadRow
from broker.services.reconciler import DEFAULT_GRACE, load_known, reconcile_provider

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_api
import bench_reconcile
import loadgen

# --- the load generator, against a scripted local HTTP server ----------------------------------


class ScriptedServer:
    """A tiny HTTP/1.1 server on a thread: every Nth response closes the connection, some are chunked.

    It stands in for the network peer, so the load generator's counting can be checked exactly."""

    def __init__(self, close_every: int = 7, chunk_every: int = 5) -> None:
        self.close_every = close_every
        self.chunk_every = chunk_every
        self.requests = 0
        self.bodies: list[bytes] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.bodies.append(await reader.readexactly(length))
                self.requests += 1
                body = b'{"ok": true}'
                close = self.requests % self.close_every == 0
                if self.requests % self.chunk_every == 0:
                    payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
                    headers = b"Transfer-Encoding: chunked\r\n"
                else:
                    payload = body
                    headers = b"Content-Length: %d\r\n" % len(body)
                if close:
                    headers += b"Connection: close\r\n"
                writer.write(b"HTTP/1.1 201 Created\r\n" + headers + b"\r\n" + payload)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        self._ready.wait(10)
        return self

    async def _shutdown(self) -> None:
        self._server.close()
        handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def test_open_loop_sends_rate_times_duration_requests_and_counts_every_answer() -> None:
    with ScriptedServer() as server:
        target = loadgen.Target("127.0.0.1", server.port, "POST", "/v1/x", body=b'{"a": 1}', expect=201)
        samples = loadgen.run(target, mode="open", rate=200, duration=0.5, connections=4, lead=0.1)
    summary = loadgen.summarize(samples, "open", 201)
    assert summary.requests == 100 == server.requests
    assert summary.ok == 100 and summary.errors == 0, summary.error_samples
    assert server.bodies == [b'{"a": 1}'] * 100  # Content-Length framing kept every body whole
    # every request was due on the 5 ms grid, and none was answered before it was due
    assert sorted(round((d - min(samples.due)) * 200) for d in samples.due) == list(range(100))
    assert all(
        done >= sent >= due for due, sent, done in zip(samples.due, samples.sent, samples.done, strict=True)
    )
    lat = summary.latency_ms
    assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def test_closed_loop_keeps_going_across_closed_connections_and_chunked_answers() -> None:
    with ScriptedServer(close_every=3, chunk_every=2) as server:
        target = loadgen.Target("127.0.0.1", server.port, "GET", "/v1/y", expect=201)
        samples = loadgen.run(target, mode="closed", duration=0.3, connections=3, lead=0.05)
    summary = loadgen.summarize(samples, "closed", 201)
    assert summary.requests == server.requests > 3
    assert summary.errors == 0, summary.error_samples


def test_a_wrong_status_is_an_error_with_its_body_kept() -> None:
    with ScriptedServer() as server:
        target = loadgen.Target("127.0.0.1", server.port, "GET", "/", expect=200)  # the server says 201
        samples = loadgen.run(target, mode="open", rate=100, duration=0.1, connections=2, lead=0.05)
    summary = loadgen.summarize(samples, "open", 200)
    assert summary.ok == 0 and summary.errors == summary.requests == 10
    assert summary.statuses == {"201": 10}
    assert summary.error_samples[0].startswith('HTTP 201: {"ok": true}')


def test_nearest_rank_percentiles() -> None:
    ordered = [float(v) for v in range(1, 101)]
    assert loadgen.percentile(ordered, 0.50) == 50.0
    assert loadgen.percentile(ordered, 0.99) == 99.0
    assert loadgen.percentile(ordered, 1.0) == 100.0
    assert loadgen.percentile([7.0], 0.99) == 7.0


# --- the API benchmark, end to end on a tiny run -------------------------------------------------


def test_api_benchmark_tiny_run_creates_exactly_what_it_counts(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    results = bench_api.main(
        [
            "--database-url",
            database_url,
            "--rate",
            "50",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--closed-duration",
            "0.5",
            "--concurrency",
            "2",
            "--connections",
            "4",
            "--profile",
            "4",
            "--json",
        ]
    )
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(results))
    for scenario, expected_status in (("create", "201"), ("offers", "200")):
        opened, closed = results["scenarios"][scenario]
        assert opened["summary"]["requests"] == 50, scenario
        for phase in (opened, closed):
            summary = phase["summary"]
            assert summary["errors"] == 0, (scenario, summary["error_samples"])
            assert summary["statuses"] == {expected_status: summary["requests"]}
            assert summary["throughput_rps"] > 0
            lat = summary["latency_ms"]
            assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
            assert phase["cpu"]["api cpu ms/request"] > 0
    created = results["checks"]["create: successful responses, warm-up included"]
    assert created == 50 + results["scenarios"]["create"][1]["summary"]["ok"]
    assert results["checks"]["create: workloads stored"] == created
    profile = results["profile"]
    assert profile["POST /v1/workloads handler"]["iterations"] == 4
    assert "submit" in profile["POST /v1/workloads handler"]["top by cumulative time"]
    assert "find_offers" in profile["GET /v1/offers handler"]["top by cumulative time"]


# --- the reconcile benchmark -------------------------------------------------------------------


@pytest.fixture
def fleet(database: Database) -> Iterator[bench_reconcile.Fleet]:
    yield bench_reconcile.prepare(database, bench_reconcile.SimulatedCloud())


def _count(database: Database, query: object) -> int:
    with database.sessions() as session:
        return int(session.scalar(query) or 0)  # type: ignore[call-overload]


def test_seeded_fleet_matches_its_inventory_exactly(database: Database, fleet: bench_reconcile.Fleet) -> None:
    now = bench_reconcile.utc_now()
    bench_reconcile.seed_fleet(database, fleet, 100, now, final_workloads=False)
    assert (
        _count(database, select(func.count()).select_from(WorkloadRow).where(WorkloadRow.state == "RUNNING"))
        == 100
    )
    assert _count(database, select(func.count()).select_from(InstanceRow).where(InstanceRow.serving)) == 100
    assert (
        _count(database, select(func.count()).select_from(CommandRow).where(CommandRow.state == "done"))
        == 100
    )
    with database.sessions() as session:
        known = load_known(session, bench_reconcile.PROVIDER)
    listed = bench_reconcile.inventory(fleet, 100, "sync", now)
    assert set(known) == {i.instance_id for i in listed}
    assert diff(known, listed, now, DEFAULT_GRACE) == []
    # seeding again replaces the fleet rather than adding to it
    bench_reconcile.seed_fleet(database, fleet, 100, now, final_workloads=True)
    assert _count(database, select(func.count()).select_from(WorkloadRow)) == 100
    assert _count(database, select(func.count()).where(WorkloadRow.state == "CANCELLED")) == 1


def test_preempted_scenario_really_preempts_and_plans_replacements(
    database: Database, fleet: bench_reconcile.Fleet
) -> None:
    now = bench_reconcile.utc_now()
    cloud = bench_reconcile.SimulatedCloud()
    bench_reconcile.seed_fleet(database, fleet, 200, now, final_workloads=False)
    listed = bench_reconcile.inventory(fleet, 200, "preempted", now)
    report = reconcile_provider(database, cloud, lambda: now, ["sim"], inventory=listed)
    assert report.actions == {"preempted": 2} == bench_reconcile.expected_actions(200, "preempted")
    assert report.seconds_in_database > 0
    # The reconcile only marks and queues; the migrate job decides, after it committed.
    running = select(func.count()).select_from(WorkloadRow).where(WorkloadRow.state == "RUNNING")
    assert _count(database, running) == 200
    assert bench_reconcile.migrate_queued(database, now) == 2
    preempted = select(InstanceRow.id).where(InstanceRow.state == "preempted")
    with database.sessions() as session:
        assert sorted(session.scalars(preempted)) == [
            bench_reconcile.instance_id(100),
            bench_reconcile.instance_id(200),
        ]
        moved = dict(
            session.execute(
                select(WorkloadRow.id, WorkloadRow.state).where(WorkloadRow.state != "RUNNING")
            ).all()
        )
        launches = session.scalars(
            select(CommandRow.workload_id).where(CommandRow.kind == "launch", CommandRow.state == "pending")
        ).all()
    # each lost its only node to a preemption: the migration service plans a move to a new offer
    ids = [bench_reconcile.workload_id(100), bench_reconcile.workload_id(200)]
    assert moved == dict.fromkeys(ids, "MIGRATING")
    assert sorted(launches) == ids


def test_reconcile_benchmark_tiny_run_reports_the_expected_actions(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    results = bench_reconcile.main(
        ["--database-url", database_url, "--instances", "200", "--runs", "2", "--json"]
    )
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(results))
    scenarios = results["scenarios"]
    assert set(scenarios) == {"sync", "preempted", "orphans"}
    for name, s in scenarios.items():
        assert s["runs"] == 2
        assert s["skipped"] is None
        assert s["rows known"] == 200
        assert s["actions"] == s["expected actions"], name
        assert s["total seconds p50"] >= s["seconds_in_database p50"] > 0
        assert s["load_known seconds p50"] > 0 and s["diff seconds p50"] > 0
    assert scenarios["sync"]["actions"] == {}
    assert scenarios["preempted"]["actions"] == {"preempted": 2}
    assert scenarios["orphans"]["actions"] == {"terminate-orphan": 3}
    assert scenarios["orphans"]["instances listed"] == 201
    assert scenarios["orphans"]["orphans terminated at the provider"] == 1


def test_http_floor_benchmark_answers_every_request() -> None:
    """The bare-ASGI floor benchmark runs end to end and reports every request answered."""
    import subprocess

    from tests.served import free_port

    script = Path(__file__).resolve().parents[2] / "bench" / "bench_http_floor.py"
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--rate",
            "50",
            "--duration",
            "1",
            "--warmup",
            "0.5",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "answered 50/50" in result.stdout
    assert "server CPU per answered request" in result.stdout
