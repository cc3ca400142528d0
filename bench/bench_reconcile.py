"""Benchmark: one reconciliation of a provider with 10,000 instances against PostgreSQL — load, pure
diff, apply — all in sync, 1% preempted, 1% orphans (does I/O).

Run (from the repository root):

    .venv/bin/python bench/bench_reconcile.py --instances 10000 --runs 5

Set-up: an embedded PostgreSQL in a temporary directory (or ``--database-url``), schema migrations
and the bundled prices, the simulated cloud's offers (migration decisions for preempted workloads
look for replacements among them), one organization. Before every run (not timed) the fleet tables
are emptied and refilled in bulk with ``INSERT ... SELECT generate_series``: ``N`` RUNNING workloads
of one 8-GPU spot node each, their ``N`` running, serving instances on the simulated cloud spread
over its zones, and the ``N`` done launch commands that made them; then ``ANALYZE``. The provider's
inventory is built as a list of ``broker.core.ports.Instance`` and handed to
``broker.services.reconciler.reconcile_provider(..., inventory=...)``, so the provider's own listing
speed is not part of the number; the provider object is an in-memory ``providers.sim.SimulatedCloud``
(its ``terminate`` is what orphans without a row get).

Scenarios:

* ``sync``: every row has its instance, running: nothing to do.
* ``preempted``: every 100th instance is listed PREEMPTED: the reconciler marks them in bulk and
  queues their workloads for the migrate job; that job's run (``handle_losses``: engine decision,
  replacement launch plan) is timed separately, after the reconcile has committed.
* ``orphans``: 1% orphans: half are listed instances we have no row for (terminated at the provider),
  half belong to CANCELLED workloads whose instance rows are still running (a terminate is queued).

Reported per scenario, over ``--runs`` runs: ``seconds_in_database`` of the reconciler's report (lock,
load, diff, apply, commit), the whole ``reconcile_provider`` call, the queued migrations it left for
the migrate job (count and seconds), and, separately, ``load_known`` and the pure
``broker.core.reconcile.diff`` alone. Numbers only, no thresholds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, run from anywhere

from broker.clock import utc_now
from broker.core.ports import Instance, InstanceState
from broker.core.reconcile import diff
from broker.core.types import CapacityType
from broker.db.engine import Database, make_engine
from broker.services.migration_queue import handle_all_losses
from broker.services.migrations import MigrationContext
from broker.services.reconciler import DEFAULT_GRACE, ReconcileReport, load_known, reconcile_provider
from broker.settings import Settings
from providers.sim import SimulatedCloud

SCENARIOS = ("sync", "preempted", "orphans")
PROVIDER = "sim"
AGE = timedelta(hours=1)  # how long ago the fleet was launched (past the reconciler's grace)


@dataclass(frozen=True)
class Slot:
    """Where one instance runs: a simulated-cloud spot offer for 8 H100s."""

    region: str
    zone: str
    instance_type: str
    price_per_hour: str


@dataclass(frozen=True)
class Fleet:
    org_id: str
    project_id: str
    slots: tuple[Slot, ...]


def instance_id(i: int) -> str:
    return f"in_bench_{i:08d}"


def workload_id(i: int) -> str:
    return f"wl_bench_{i:08d}"


def prepare(database: Database, cloud: SimulatedCloud) -> Fleet:
    """Schema, prices (bundled and the simulated cloud's), and the organization that owns the fleet."""
    from broker.bootstrap import prepare_database
    from broker.services.prices import refresh_prices
    from broker.services.tenancy import create_org, find_project

    prepare_database(database, Settings(load_bundled_catalog=True))
    now = utc_now()
    with database.sessions.begin() as session:
        refresh_prices(session, cloud, now)
        org = create_org(session, f"bench-reconcile-{os.getpid()}-{time.time_ns()}", now)
        project = find_project(session, org.id, "default")
        assert project is not None
    slots = tuple(
        Slot(o.region, o.zone or o.region, o.instance_type, str(o.price_per_hour))
        for o in cloud.list_offers()
        if o.capacity_type is CapacityType.SPOT and o.accelerator_count == 8 and o.zone
    )
    if not slots:
        raise SystemExit("the simulated cloud offers no 8-GPU spot instance")
    return Fleet(org.id, project.id, slots)


_WORKLOADS = """
INSERT INTO workload (id, org_id, project_id, state, spec, gpus_per_node, nodes, labels, placement,
                      generation, attempts, history, created_at, updated_at, state_changed_at)
SELECT 'wl_bench_' || lpad(g::text, 8, '0'), :org, :project,
       CASE WHEN g % 100 = 50 AND CAST(:final AS boolean) THEN 'CANCELLED' ELSE 'RUNNING' END,
       CAST(:spec AS jsonb), 8, 1, '{"team": "research"}'::jsonb,
       jsonb_build_object(
           'cloud', 'sim', 'region', (CAST(:regions AS text[]))[1 + g % :k],
           'zone', (CAST(:zones AS text[]))[1 + g % :k],
           'instance_type', (CAST(:types AS text[]))[1 + g % :k], 'accelerator', 'H100',
           'capacity_type', 'spot', 'price_per_hour', (CAST(:prices AS text[]))[1 + g % :k],
           'commitment_id', NULL, 'label', 'sim/' || (CAST(:zones AS text[]))[1 + g % :k],
           'started_at', CAST(:then_iso AS text)),
       0, 0, '{}'::jsonb, :then, :then, :then
FROM generate_series(1, :n) AS g
"""
_INSTANCES = """
INSERT INTO instance (id, org_id, project_id, workload_id, generation, node_index, provider,
                      provider_instance_id, region, zone, instance_type, accelerator, gpus, capacity_type,
                      price_per_hour, state, serving, launched_at, created_at, updated_at)
SELECT 'in_bench_' || lpad(g::text, 8, '0'), :org, :project, 'wl_bench_' || lpad(g::text, 8, '0'), 0, 0,
       'sim', 'sim-' || g, (CAST(:regions AS text[]))[1 + g % :k], (CAST(:zones AS text[]))[1 + g % :k],
       (CAST(:types AS text[]))[1 + g % :k], 'H100', 8, 'spot',
       CAST((CAST(:prices AS text[]))[1 + g % :k] AS numeric), 'running', true, :then, :then, :then
FROM generate_series(1, :n) AS g
"""
_COMMANDS = """
INSERT INTO command (idempotency_key, plan_id, seq, org_id, workload_id, kind, provider, payload, state,
                     attempts, not_before, created_at, updated_at)
SELECT 'in_bench_' || lpad(g::text, 8, '0'), 'place-' || g, 0, :org, 'wl_bench_' || lpad(g::text, 8, '0'),
       'launch', 'sim', '{}'::jsonb, 'done', 1, :then, :then, :then
FROM generate_series(1, :n) AS g
"""
SPEC = {
    "gpu_types": ["H100"],
    "gpus_per_node": 8,
    "nodes": 1,
    "name": None,
    "project": "default",
    "gang": "none",
    "capacity": "spot",
    "max_price_per_gpu_hour": None,
    "deadline": None,
    "expected_hours": "24",
    "checkpoint_gb": "0",
    "restart_overhead_hours": "0",
    "checkpoint_interval_hours": None,
    "interruptible": True,
    "allowed_clouds": [],
    "denied_clouds": [],
    "allowed_regions": [],
    "denied_regions": [],
    "labels": {"team": "research"},
    "run": {"kind": "capacity", "image": None, "command": [], "env": {}},
}


def seed_fleet(database: Database, fleet: Fleet, n: int, now: datetime, *, final_workloads: bool) -> float:
    """Empty the fleet tables and insert ``n`` workloads, instances and launch commands; returns seconds.

    With ``final_workloads`` every 100th workload (``i % 100 == 50``) is CANCELLED while its instance
    row still says running: the reconciler must terminate those instances."""
    started = time.perf_counter()
    then = now - AGE
    params = {
        "org": fleet.org_id,
        "project": fleet.project_id,
        "n": n,
        "k": len(fleet.slots),
        "regions": [s.region for s in fleet.slots],
        "zones": [s.zone for s in fleet.slots],
        "types": [s.instance_type for s in fleet.slots],
        "prices": [s.price_per_hour for s in fleet.slots],
        "spec": json.dumps(SPEC),
        "then": then,
        "then_iso": then.isoformat(),
        "final": final_workloads,
    }
    with database.sessions.begin() as session:
        session.execute(text("TRUNCATE workload, instance, command, workload_event CASCADE"))
        session.execute(text(_WORKLOADS), params)
        session.execute(text(_INSTANCES), params)
        session.execute(text(_COMMANDS), params)
    # Fresh statistics, as autovacuum would have them on a fleet this size (ANALYZE outside a transaction).
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE workload, instance, command, workload_event"))
    return time.perf_counter() - started


def inventory(fleet: Fleet, n: int, scenario: str, now: datetime) -> list[Instance]:
    """What the provider lists for ``scenario`` (see the module docstring)."""
    then = now - AGE
    listed = []
    for i in range(1, n + 1):
        slot = fleet.slots[i % len(fleet.slots)]
        preempted = scenario == "preempted" and i % 100 == 0
        listed.append(
            Instance(
                provider=PROVIDER,
                instance_id=instance_id(i),
                provider_instance_id=f"sim-{i}",
                instance_type=slot.instance_type,
                region=slot.region,
                zone=slot.zone,
                capacity_type=CapacityType.SPOT,
                state=InstanceState.PREEMPTED if preempted else InstanceState.RUNNING,
                launched_at=then,
                state_reason="Server.SpotInstanceTermination" if preempted else None,
            )
        )
    if scenario == "orphans":
        for j in range(n // 200):  # the other half of the 1% are the CANCELLED workloads' instances
            slot = fleet.slots[j % len(fleet.slots)]
            listed.append(
                Instance(
                    provider=PROVIDER,
                    instance_id=f"in_orphan_{j:08d}",
                    provider_instance_id=f"sim-orphan-{j}",
                    instance_type=slot.instance_type,
                    region=slot.region,
                    zone=slot.zone,
                    capacity_type=CapacityType.SPOT,
                    state=InstanceState.RUNNING,
                    launched_at=then,
                )
            )
    return listed


def expected_actions(n: int, scenario: str) -> dict[str, int]:
    """The report's ``actions`` a correct reconciliation of ``scenario`` produces."""
    if scenario == "preempted":
        return {"preempted": n // 100}
    if scenario == "orphans":
        return {"terminate-orphan": n // 200 + len([i for i in range(1, n + 1) if i % 100 == 50])}
    return {}


@dataclass
class Run:
    scenario: str
    seconds_in_database: float
    seconds_total: float
    seconds_load_known: float
    seconds_diff: float
    seconds_seed: float
    report: ReconcileReport
    migrations_queued: int = 0
    seconds_migrate: float = 0.0


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def migrate_queued(database: Database, now: datetime) -> int:
    """What the scheduler's migrate job does after a reconcile queued preemptions: decide for every
    queued workload (in small batches, one transaction each); returns how many were handled."""
    return handle_all_losses(database, MigrationContext(providers=[PROVIDER], now=now))


def run_once(database: Database, cloud: SimulatedCloud, fleet: Fleet, n: int, scenario: str) -> Run:
    """Seed, then time one reconciliation of ``scenario``; then time load_known and diff on their own."""
    now = utc_now()
    seeded = seed_fleet(database, fleet, n, now, final_workloads=scenario == "orphans")
    listed = inventory(fleet, n, scenario, now)
    report, total = _timed(
        lambda: reconcile_provider(database, cloud, lambda: now, [PROVIDER], inventory=listed)
    )
    queued, migrated = _timed(lambda: migrate_queued(database, now))
    # The pieces on their own, on a fresh copy of the same fleet (the run above changed it).
    seed_fleet(database, fleet, n, now, final_workloads=scenario == "orphans")
    with database.sessions.begin() as session:
        known, loaded = _timed(lambda: load_known(session, PROVIDER))
    _steps, diffed = _timed(lambda: diff(known, listed, now, DEFAULT_GRACE))
    return Run(scenario, report.seconds_in_database, total, loaded, diffed, seeded, report, queued, migrated)


@contextmanager
def open_database(url: str | None, tmp: Path) -> Iterator[Database]:
    """The database to run on: ``url``, or a new embedded PostgreSQL under ``tmp``."""
    embedded = None
    if url is None:
        from broker.db.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres(tmp / "pgdata", database="gpubroker_bench")
        url = embedded.start()
    engine = make_engine(url)
    try:
        yield Database(engine, sessionmaker(engine, expire_on_commit=False), None)
    finally:
        engine.dispose()
        if embedded is not None:
            embedded.stop()


def _p50(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def summarize(runs: list[Run], n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario in dict.fromkeys(r.scenario for r in runs):
        mine = [r for r in runs if r.scenario == scenario]
        last = mine[-1].report
        out[scenario] = {
            "runs": len(mine),
            "instances listed": last.listed,
            "rows known": last.known,
            "actions": last.actions,
            "expected actions": expected_actions(n, scenario),
            "orphans terminated at the provider": len(last.orphans_terminated),
            "skipped": last.skipped,
            "seconds_in_database p50": _p50([r.seconds_in_database for r in mine]),
            "seconds_in_database min/max": [
                round(min(r.seconds_in_database for r in mine), 4),
                round(max(r.seconds_in_database for r in mine), 4),
            ],
            "total seconds p50": _p50([r.seconds_total for r in mine]),
            "migrations queued": mine[-1].migrations_queued,
            "migrate job seconds p50 (after the reconcile)": _p50([r.seconds_migrate for r in mine]),
            "load_known seconds p50": _p50([r.seconds_load_known for r in mine]),
            "diff seconds p50": _p50([r.seconds_diff for r in mine]),
            "seed seconds p50 (not timed in the above)": _p50([r.seconds_seed for r in mine]),
        }
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"machine: {results['machine']}; {results['instances']} instances, "
        f"{results['runs']} runs per scenario",
        "",
        "| scenario | actions | in database p50 (min-max) s | total p50 s | load_known p50 s | diff p50 s |"
        " queued migrations | migrate job p50 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario, s in results["scenarios"].items():
        low, high = s["seconds_in_database min/max"]
        actions = ", ".join(f"{k} {v}" for k, v in s["actions"].items()) or "none"
        lines.append(
            f"| {scenario} | {actions} | {s['seconds_in_database p50']} ({low}-{high}) | "
            f"{s['total seconds p50']} | {s['load_known seconds p50']} | {s['diff seconds p50']} | "
            f"{s['migrations queued']} | {s['migrate job seconds p50 (after the reconcile)']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--database-url", default=None, help="use this database instead of an embedded one")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    # One warning line per orphan terminated at the provider, every run: keep the report readable.
    logging.getLogger("broker.services.reconciler").setLevel(logging.ERROR)
    cloud = SimulatedCloud()
    runs: list[Run] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp,
        open_database(args.database_url, Path(tmp)) as database,
    ):
        fleet = prepare(database, cloud)
        for scenario in scenarios:
            for _ in range(args.runs):
                runs.append(run_once(database, cloud, fleet, args.instances, scenario))
    results = {
        "machine": f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end, "
        f"Python {sys.version.split()[0]}",
        "instances": args.instances,
        "runs": args.runs,
        "scenarios": summarize(runs, args.instances),
    }
    print(json.dumps(results, indent=2) if args.json else markdown(results))
    return results


if __name__ == "__main__":
    main()
