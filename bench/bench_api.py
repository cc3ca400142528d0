"""Benchmark: sustained `POST /v1/workloads` and `GET /v1/offers` against the real API in its own
uvicorn process on PostgreSQL, open-loop and closed-loop, with CPU per request (does I/O).

Run (from the repository root):

    .venv/bin/python bench/bench_api.py --scenario create --rate 1000 --duration 30
    .venv/bin/python bench/bench_api.py --scenario offers --rate 200 --duration 30

Set-up: an embedded PostgreSQL in a temporary directory (or ``--database-url``), schema migrations
and the bundled prices (``broker.bootstrap.prepare_database``), the simulated cloud's offers stored
once (what the scheduler's price refresh would have stored), one organization with an operator and
a viewer key. The server is ``api.app.create_app`` as ``gpubroker serve`` builds it, run by uvicorn
in a separate process (``--workers`` processes), with the scheduler off (``--scheduler`` runs
``gpubroker scheduler`` beside it, as docker-compose.yml does). The per-key rate limit is raised out
of the way: this measures the service, not the limiter.

Each scenario: a warm-up at the target rate (not counted), an open-loop run (a request due every
1/rate s, latency counted from when it was due), then a closed-loop run (``--concurrency`` clients
back to back: the maximum throughput). CPU seconds of the API process(es), PostgreSQL and the load
generator are read from /proc (psutil) around each measured run and reported per answered request.
``--profile N`` also runs each handler N times in this process under cProfile (no HTTP, one
thread) and prints where its time goes. Numbers only, no thresholds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil
from fastapi import FastAPI
from sqlalchemy import Engine, event, func, select
from sqlalchemy.orm import sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parent))  # loadgen, when imported from elsewhere
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # the repository, run from anywhere

import loadgen

from broker.clock import utc_now
from broker.db.engine import Database, make_engine
from broker.settings import Settings

GPUBROKER = str(Path(sys.executable).parent / "gpubroker")
WORKLOAD = {
    "gpu_types": ["H100"],
    "gpus_per_node": 8,
    "nodes": 1,
    "capacity": "spot",
    "expected_hours": 4,
    "labels": {"team": "research", "run": "bench-api"},
}
OFFERS_PATH = "/v1/offers?gpu=H100&limit=50"


# --- the server process ----------------------------------------------------------------------


def make_app() -> FastAPI:
    """The uvicorn factory each server worker calls: the app as `gpubroker serve` builds it."""
    from api.app import create_app
    from broker.logs import configure_logging
    from providers.registry import discover

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.database_url is None:
        raise SystemExit("the benchmark server needs DATABASE_URL")
    engine = make_engine(settings.database_url)
    database = Database(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False), embedded=None)
    return create_app(
        database,
        provider_entries=discover(),
        stale_after=timedelta(seconds=settings.price_stale_after_seconds),
        settings=settings,
    )


def serve_forever(port: int, workers: int) -> None:
    """Run the API like `gpubroker serve` does (uvicorn's defaults, no access log), on ``port``."""
    import uvicorn

    uvicorn.run(
        "bench_api:make_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )


# --- set-up ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tenant:
    org_id: str
    operator_key: str
    viewer_key: str


def seed(database: Database) -> Tenant:
    """Schema, bundled prices, the simulated cloud's offers, and one organization with two keys."""
    from broker.bootstrap import prepare_database
    from broker.services.prices import refresh_prices
    from broker.services.tenancy import Role, create_api_key, create_org
    from providers.sim import SimulatedCloud

    prepare_database(database, Settings(load_bundled_catalog=True))
    now = utc_now()
    with database.sessions.begin() as session:
        refresh_prices(session, SimulatedCloud(), now)
        org = create_org(session, f"bench-{os.getpid()}-{time.time_ns()}", now)
        operator = create_api_key(session, org.id, "bench operator", Role.OPERATOR, now)
        viewer = create_api_key(session, org.id, "bench viewer", Role.VIEWER, now)
    return Tenant(org.id, operator.secret, viewer.secret)


@contextmanager
def open_database(url: str | None, tmp: Path) -> Iterator[tuple[str, Database, Path | None]]:
    """The database to run on: ``url``, or a new embedded PostgreSQL under ``tmp``."""
    embedded = None
    if url is None:
        from broker.db.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(tmp / "pgdata", database="gpubroker_bench")
        url = embedded.start()
    engine = make_engine(url)
    try:
        yield (
            url,
            Database(engine, sessionmaker(engine, expire_on_commit=False), None),
            (embedded.pgdata if embedded else None),
        )
    finally:
        engine.dispose()
        if embedded is not None:
            embedded.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(url: str, tmp: Path, log_level: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "GPUBROKER_HOME": str(tmp / "home"),
        "GPUBROKER_SIM_STATE": str(tmp / "sim-cloud.json"),
        "GPUBROKER_SCHEDULER": "false",
        "GPUBROKER_LOAD_BUNDLED_CATALOG": "false",
        "GPUBROKER_LOG_LEVEL": log_level,
        "GPUBROKER_RATE_LIMIT_PER_SECOND": "1000000",
        "GPUBROKER_RATE_LIMIT_BURST": "1000000",
    }
    env.pop("GPUBROKER_DATABASE_URL", None)
    return env


@contextmanager
def running_server(
    url: str, tmp: Path, *, workers: int, scheduler: bool, log_level: str
) -> Iterator[tuple[str, list[psutil.Process]]]:
    """Start the API (and optionally `gpubroker scheduler`); yield its base URL and processes."""
    port = free_port()
    env = server_env(url, tmp, log_level)
    log = (tmp / "server.log").open("ab")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "_serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=log,
            stderr=log,
        )
    ]
    if scheduler:
        procs.append(subprocess.Popen([GPUBROKER, "scheduler"], env=env, stdout=log, stderr=log))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if procs[0].poll() is not None:
                raise SystemExit(f"the API exited with {procs[0].returncode}; see {tmp / 'server.log'}")
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the API did not become ready")
            time.sleep(0.1)
        yield base, [psutil.Process(p.pid) for p in procs]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


# --- CPU accounting --------------------------------------------------------------------------


def _tree_cpu(procs: list[psutil.Process]) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for root in procs:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in family:
            try:
                times = proc.cpu_times()
                seconds[proc.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                continue
    return seconds


def _postgres(pgdata: Path | None) -> list[psutil.Process]:
    if pgdata is None:
        return []
    found = []
    for proc in psutil.process_iter(attrs=("name",)):
        try:
            if (proc.info["name"] or "").startswith("postgres") and Path(proc.cwd()).resolve() == pgdata:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


@dataclass
class CpuMeter:
    """CPU seconds spent by the API, the scheduler (when run), PostgreSQL, this load generator and the
    whole machine."""

    server: list[psutil.Process]
    pgdata: Path | None
    scheduler: list[psutil.Process] = field(default_factory=list)

    def read(self) -> dict[str, Any]:
        me = psutil.Process().cpu_times()
        machine = psutil.cpu_times()
        return {
            "api": _tree_cpu(self.server),
            "scheduler": _tree_cpu(self.scheduler),
            "postgres": _tree_cpu(_postgres(self.pgdata)),
            "loadgen": me.user + me.system + me.children_user + me.children_system,
            "busy": machine.user + machine.system + machine.nice + machine.irq + machine.softirq,
            "wall": time.monotonic(),
        }

    @staticmethod
    def delta(before: dict[str, Any], after: dict[str, Any], requests: int) -> dict[str, float]:
        def grown(key: str) -> float:
            return sum(v - before[key].get(pid, 0.0) for pid, v in after[key].items())

        seconds = {
            "api": grown("api"),
            "scheduler": grown("scheduler"),
            "postgres": grown("postgres"),
            "loadgen": after["loadgen"] - before["loadgen"],
            "machine": after["busy"] - before["busy"],
        }
        seconds["other processes"] = max(
            0.0,
            seconds["machine"]
            - seconds["api"]
            - seconds["scheduler"]
            - seconds["postgres"]
            - seconds["loadgen"],
        )
        wall = after["wall"] - before["wall"]
        out = {f"{k} cpu ms/request": round(1000 * v / max(requests, 1), 3) for k, v in seconds.items()}
        out.update({f"{k} cores busy": round(v / wall, 2) for k, v in seconds.items()})
        return out


# --- the runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    name: str
    mode: str
    summary: loadgen.Summary
    cpu: dict[str, float]


DEFAULT_RATES = {"create": 1000.0, "offers": 200.0, "healthz": 500.0}


def _target(base: str, scenario: str, tenant: Tenant) -> loadgen.Target:
    host, port = base.removeprefix("http://").split(":")
    if scenario == "healthz":  # the floor: HTTP, the edge middleware and routing, no database
        return loadgen.Target(host, int(port), "GET", "/healthz", expect=200)
    if scenario == "create":
        return loadgen.Target(
            host,
            int(port),
            "POST",
            "/v1/workloads",
            headers=(
                ("Authorization", f"Bearer {tenant.operator_key}"),
                ("Content-Type", "application/json"),
            ),
            body=json.dumps(WORKLOAD).encode(),
            expect=201,
        )
    return loadgen.Target(
        host,
        int(port),
        "GET",
        OFFERS_PATH,
        headers=(("Authorization", f"Bearer {tenant.viewer_key}"),),
        expect=200,
    )


def run_scenario(
    base: str, scenario: str, tenant: Tenant, meter: CpuMeter, args: argparse.Namespace, rate: float
) -> tuple[list[Phase], int]:
    """Warm-up, open loop, closed loop; returns the measured phases and the successes of all three."""
    target = _target(base, scenario, tenant)
    phases = []
    succeeded = 0
    if args.warmup > 0:
        warm = loadgen.run(target, mode="open", rate=rate, duration=args.warmup, connections=args.connections)
        succeeded += loadgen.summarize(warm, "open", target.expect).ok
    plan = [("open", args.duration), ("closed", args.closed_duration)]
    for mode, duration in plan:
        if duration <= 0:
            continue
        before = meter.read()
        samples = loadgen.run(
            target,
            mode=mode,
            rate=rate,
            duration=duration,
            connections=args.connections if mode == "open" else args.concurrency,
            processes=args.loadgen_procs,
        )
        after = meter.read()
        summary = loadgen.summarize(samples, mode, target.expect)
        label = (
            f"open loop {rate:g}/s for {duration:g} s"
            if mode == "open"
            else (f"closed loop, {args.concurrency} clients for {duration:g} s")
        )
        answered = summary.requests - summary.statuses.get("0", 0)
        phases.append(Phase(label, mode, summary, CpuMeter.delta(before, after, answered)))
        succeeded += summary.ok
    return phases, succeeded


def count_workloads(database: Database, org_id: str) -> int:
    from broker.db.fleet import WorkloadRow

    with database.sessions() as session:
        return int(session.scalar(select(func.count()).where(WorkloadRow.org_id == org_id)) or 0)


# --- in-process handler profile --------------------------------------------------------------

_CATEGORIES = (
    ("sqlalchemy", "/sqlalchemy/"),
    ("psycopg", "/psycopg"),
    ("pydantic", "/pydantic"),
    ("fastapi/starlette", "/fastapi/"),
    ("fastapi/starlette", "/starlette/"),
    ("gpubroker (api, broker, pricing)", "/api/"),
    ("gpubroker (api, broker, pricing)", "/broker/"),
    ("gpubroker (api, broker, pricing)", "/pricing/"),
    ("json", "/json/"),
)


def _category(filename: str) -> str:
    for name, marker in _CATEGORIES:
        if marker in filename:
            return name
    return "builtins (C: json, hashing, ...)" if filename == "~" else "other stdlib"


def profile_handler(
    call: Callable[[], object], iterations: int, engine: Engine | None = None, top: int = 15
) -> dict[str, Any]:
    """Time ``call`` (wall and CPU, and each SQL statement's round trip), then profile its CPU time:
    top functions and CPU by library (cProfile on ``time.thread_time``: waiting for PostgreSQL is
    not counted; the profiler itself makes everything about 3 times slower, evenly)."""
    for _ in range(min(50, iterations)):
        call()
    statements: dict[str, list[float]] = {}
    started: list[float] = []

    def before(*_args: object) -> None:
        started.append(time.perf_counter())

    def after(_conn: object, _cursor: object, statement: str, *_rest: object) -> None:
        entry = statements.setdefault(" ".join(statement.split())[:100], [0, 0.0])
        entry[0] += 1
        entry[1] += time.perf_counter() - started.pop()

    if engine is not None:
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    for _ in range(iterations):
        call()
    wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
    if engine is not None:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    for _ in range(iterations):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    by_category: dict[str, float] = {}
    total = 0.0
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_category[_category(filename)] = by_category.get(_category(filename), 0.0) + tottime
        total += tottime
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    cumulative = io.StringIO()
    pstats.Stats(profiler, stream=cumulative).sort_stats("cumulative").print_stats(top + 15)
    return {
        "iterations": iterations,
        "wall ms/call": round(1000 * wall / iterations, 3),
        "cpu ms/call": round(1000 * cpu / iterations, 3),
        "sql round trips per call (count, wall ms)": {
            sql: [round(n / iterations, 2), round(1000 * t / iterations, 3)]
            for sql, (n, t) in sorted(statements.items(), key=lambda kv: -kv[1][1])
        },
        "share of CPU by library": {
            k: f"{100 * v / total:.1f}%" for k, v in sorted(by_category.items(), key=lambda kv: -kv[1])
        },
        "top by own time": text.getvalue(),
        "top by cumulative time": cumulative.getvalue(),
    }


def profile_handlers(database: Database, tenant: Tenant, iterations: int) -> dict[str, Any]:
    """cProfile each route function in this process: the auth dependency (cached key), body or query
    parsing, the transaction, the service call and rendering the JSON response (no HTTP, no uvicorn,
    no thread pool: the difference to the server's CPU per request is that stack)."""
    from starlette.requests import Request

    from api.app import create_app
    from api.auth import current_principal
    from api.routes.offers import list_offers
    from api.routes.workloads import WorkloadIn, create_workload

    app = create_app(database, settings=Settings(rate_limit_per_second=1e6, rate_limit_burst=1_000_000))
    body = json.dumps(WORKLOAD).encode()

    def request(path: str, key: str) -> Request:
        return Request(
            {
                "type": "http",
                "method": "POST" if path == "/v1/workloads" else "GET",
                "path": path,
                "query_string": b"",
                "headers": [(b"authorization", f"Bearer {key}".encode())],
                "app": app,
            }
        )

    loop = asyncio.new_event_loop()  # the create handler and the auth dependency are coroutines

    def create() -> object:
        req = request("/v1/workloads", tenant.operator_key)
        principal = loop.run_until_complete(current_principal(req))
        parsed = WorkloadIn.model_validate_json(body)
        return loop.run_until_complete(create_workload(parsed, req, principal, utc_now()))

    def offers() -> object:
        req = request("/v1/offers", tenant.viewer_key)
        loop.run_until_complete(current_principal(req))
        with database.sessions.begin() as session:
            result = list_offers(
                req,
                session,
                utc_now(),
                gpu="H100",
                count=None,
                cloud=None,
                region=None,
                capacity=None,
                max_price=None,
                limit=50,
            )
        return result.body  # the route renders its JSON itself

    return {
        "POST /v1/workloads handler": profile_handler(create, iterations, database.engine),
        "GET /v1/offers handler": profile_handler(offers, max(1, iterations // 4), database.engine),
    }


# --- report ----------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"machine: {results['machine']}",
        f"server: {results['server']}",
        "",
        "| run | requests | errors | throughput (req/s) | p50 ms | p95 ms | p99 ms | max ms |"
        " API cpu ms/req | scheduler cpu ms/req | PostgreSQL cpu ms/req | load gen cpu ms/req |"
        " other processes cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario, phases in results["scenarios"].items():
        for phase in phases:
            s, c, lat = phase["summary"], phase["cpu"], phase["summary"]["latency_ms"]
            lines.append(
                f"| {scenario}: {phase['name']} | {s['requests']} | {s['errors']} | {s['throughput_rps']} | "
                f"{lat.get('p50')} | {lat.get('p95')} | {lat.get('p99')} | {lat.get('max')} | "
                f"{c['api cpu ms/request']} | {c['scheduler cpu ms/request']} | "
                f"{c['postgres cpu ms/request']} | "
                f"{c['loadgen cpu ms/request']} | "
                f"{c['other processes cores busy']} |"
            )
            for sample in s["error_samples"]:
                lines.append(f"|   error sample: {sample[:150]} |")
    for key, value in results.get("checks", {}).items():
        lines.append(f"\n{key}: {value}")
    for name, prof in results.get("profile", {}).items():
        lines += [
            "",
            f"## {name}: {prof['wall ms/call']} ms wall, {prof['cpu ms/call']} ms CPU per call "
            f"(n={prof['iterations']}, one thread, no HTTP)",
            "",
            "CPU by library: " + ", ".join(f"{k} {v}" for k, v in prof["share of CPU by library"].items()),
            "",
            "SQL round trips per call (count, wall ms):",
            *(
                f"- {n} x {ms} ms: `{sql}`"
                for sql, (n, ms) in prof["sql round trips per call (count, wall ms)"].items()
            ),
            "",
            "```",
            prof["top by own time"].strip(),
            "```",
            "```",
            prof["top by cumulative time"].strip(),
            "```",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scenario",
        choices=(*DEFAULT_RATES, "all"),
        default="all",
        help="all: create, then offers; healthz: the HTTP floor (no database)",
    )
    parser.add_argument(
        "--rate", type=float, default=None, help="open-loop rate [create 1000/s, offers 200/s, healthz 500/s]"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="open-loop seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds at the rate before measuring")
    parser.add_argument("--closed-duration", type=float, default=15.0, help="closed-loop seconds (0: skip)")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop clients")
    parser.add_argument("--connections", type=int, default=64, help="open-loop keep-alive connections")
    parser.add_argument("--loadgen-procs", type=int, default=1, help="load generator processes")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--scheduler", action="store_true", help="also run `gpubroker scheduler`")
    parser.add_argument("--log-level", default="info", help="the API's log level (serve's default: info)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile each handler N times")
    parser.add_argument("--database-url", default=None, help="use this database instead of an embedded one")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    scenarios = ("create", "offers") if args.scenario == "all" else (args.scenario,)
    results: dict[str, Any] = {
        "machine": f"{psutil.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start, "
        f"Python {sys.version.split()[0]}",
        "server": f"uvicorn, {args.workers} worker(s), scheduler {'on' if args.scheduler else 'off'}, "
        f"log level {args.log_level}, load generator processes {args.loadgen_procs}",
        "scenarios": {},
        "checks": {},
    }
    with (
        tempfile.TemporaryDirectory(prefix="bench-api-") as tmp_name,
        open_database(args.database_url, Path(tmp_name)) as (url, database, pgdata),
    ):
        tenant = seed(database)
        with running_server(
            url, Path(tmp_name), workers=args.workers, scheduler=args.scheduler, log_level=args.log_level
        ) as (base, procs):
            meter = CpuMeter(procs[:1], pgdata, procs[1:])
            for scenario in scenarios:
                rate = args.rate or DEFAULT_RATES[scenario]
                phases, succeeded = run_scenario(base, scenario, tenant, meter, args, rate)
                results["scenarios"][scenario] = [asdict(p) for p in phases]
                results["checks"][f"{scenario}: successful responses, warm-up included"] = succeeded
        if "create" in scenarios:
            # more than the successes when the client gave up on requests the server still finished
            results["checks"]["create: workloads stored"] = count_workloads(database, tenant.org_id)
        if args.profile:
            results["profile"] = profile_handlers(database, tenant, args.profile)
    print(json.dumps(results, indent=2) if args.json else markdown(results))
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve_args = argparse.ArgumentParser()
        serve_args.add_argument("--port", type=int, required=True)
        serve_args.add_argument("--workers", type=int, default=1)
        parsed = serve_args.parse_args(sys.argv[2:])
        serve_forever(parsed.port, parsed.workers)
    else:
        main()
