"""The ``gpubroker`` command line: serve, offers, db, catalog (does I/O; thin over services)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from broker import agent
from broker.clock import utc_now
from broker.db.embedded import EmbeddedPostgresError
from broker.logs import configure_logging
from broker.settings import Settings

if TYPE_CHECKING:
    from broker.db.engine import Database
    from broker.jobs.scheduler import Scheduler
    from providers.registry import ProviderEntry
    from providers.resilience import ResilientProvider

app = typer.Typer(
    help="gpubroker: find GPU capacity across clouds, place workloads on it, keep them running cheaply.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)
catalog_app = typer.Typer(help="The GPU price catalog: import prices, list snapshots.", no_args_is_help=True)
providers_app = typer.Typer(
    help="Cloud providers: which are configured, reachable, and healthy.", no_args_is_help=True
)
admin_app = typer.Typer(
    help="Bootstrap tenants: organizations and API keys (talks to the database directly).",
    no_args_is_help=True,
)
app.add_typer(admin_app, name="admin")
agent.register(app)
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")
app.add_typer(providers_app, name="providers")

_out = Console()
_err = Console(stderr=True)


class CapacityChoice(StrEnum):
    on_demand = "on-demand"
    spot = "spot"
    reserved = "reserved"


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors():
            _err.print(f"[red]error:[/red] configuration {'.'.join(map(str, err['loc']))}: {err['msg']}")
        raise typer.Exit(2) from None


def _fail(message: str, code: int = 1) -> typer.Exit:
    _err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


@contextmanager
def _database(settings: Settings, *, prepare: bool = True) -> Iterator[Database]:
    """Open the configured database for one command; by default bring its schema and prices up to date.

    A failure to start the embedded PostgreSQL becomes a clear error and exit code 1."""
    from broker.bootstrap import prepare_database
    from broker.db.engine import open_database

    try:
        with open_database(settings) as database:
            if prepare:
                prepare_database(database, settings)
            yield database
    except EmbeddedPostgresError as exc:
        raise _fail(str(exc)) from None


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default: GPUBROKER_HOST or 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on [default: GPUBROKER_PORT or 8000]")
    ] = None,
) -> None:
    """Run the API server (and, unless GPUBROKER_SCHEDULER=false, the scheduler): start the database
    (embedded unless DATABASE_URL is set), apply schema migrations, load the price catalog, and
    serve /healthz, /readyz, /metrics, /docs and /v1 until Ctrl-C."""
    import uvicorn

    from api.app import create_app

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    entries, providers = _providers(settings)
    with _database(settings) as database, _broker(settings, database, providers) as scheduler:
        listen_host, listen_port = host or settings.host, port or settings.port
        _err.print(
            f"gpubroker listening on http://{listen_host}:{listen_port} (Ctrl-C stops)", highlight=False
        )
        with suppress(_StopServing):
            _serve_until_signalled(
                uvicorn,
                create_app(
                    database,
                    provider_entries=entries,
                    refresher=scheduler.refresher if scheduler else None,
                    stale_after=timedelta(seconds=settings.price_stale_after_seconds),
                    wake=scheduler.wake if scheduler else None,
                    settings=settings,
                ),
                host=listen_host,
                port=listen_port,
                log_level=settings.log_level.lower(),
                log_config=None,  # uvicorn's loggers go through our (JSON) handler
                access_log=False,
            )
    _err.print("gpubroker stopped", highlight=False)


@app.command("scheduler")
def scheduler_command() -> None:
    """Run only the scheduler (placement, launches, reconciliation, migration, accounting, prices)
    until Ctrl-C: for deployments that run API replicas with GPUBROKER_SCHEDULER=false."""
    settings = _settings().model_copy(update={"scheduler": True})
    configure_logging(settings.log_level, settings.log_format)
    _entries, providers = _providers(settings)
    stopped = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        stopped.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _database(settings) as database, _broker(settings, database, providers):
            _err.print("gpubroker scheduler running (Ctrl-C stops)", highlight=False)
            stopped.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _err.print("gpubroker scheduler stopped", highlight=False)


def _providers(settings: Settings) -> tuple[list[ProviderEntry], list[ResilientProvider]]:
    from providers.registry import AdapterUnavailable, active, discover

    # The simulated cloud keeps its inventory next to the database, so a restarted (or killed)
    # gpubroker finds the instances it launched, as it would on a real cloud.
    os.environ.setdefault("GPUBROKER_SIM_STATE", str(settings.home / "sim-cloud.json"))
    try:
        entries = discover()
    except AdapterUnavailable as exc:
        raise _fail(str(exc), code=2) from None
    return entries, active(entries)


@contextmanager
def _broker(
    settings: Settings, database: Database, providers: list[ResilientProvider]
) -> Iterator[Scheduler | None]:
    """Print where things are, make the first admin key, and run the scheduler (when enabled)."""
    from broker.bootstrap import ensure_bootstrap_key
    from broker.jobs.price_refresh import PriceRefresher
    from broker.jobs.scheduler import Scheduler

    where = f"embedded PostgreSQL in {settings.pgdata}" if database.embedded else database.url
    _err.print(f"database: {where}", highlight=False)
    names = ", ".join(p.name for p in providers)
    note = " (the simulated cloud: no cloud credentials are configured)" if names == "sim" else ""
    _err.print(f"providers: {names}{note}", highlight=False)
    key_file = ensure_bootstrap_key(database, settings)
    if key_file is not None:
        _err.print(
            f"first start: an admin API key for organization 'default' is in {key_file} (shown nowhere else)",
            highlight=False,
        )
    scheduler = None
    if settings.scheduler:
        # Prices refresh as a scheduler job: its first round runs at once, in the background.
        refresher = PriceRefresher(database, providers)
        scheduler = Scheduler(database, providers, settings, refresher=refresher)
        scheduler.start()
    try:
        yield scheduler
    finally:
        if scheduler is not None:
            scheduler.stop()
        for provider in providers:
            provider.close()


class _StopServing(Exception):
    """SIGINT or SIGTERM arrived: unwind, so the database and the embedded server are stopped."""


def _serve_until_signalled(uvicorn: ModuleType, app: object, **options: object) -> None:
    """Run uvicorn until SIGINT/SIGTERM, then return through our cleanup.

    uvicorn shuts down gracefully on either signal and then re-raises it with the handlers it
    found; with the default SIGTERM handler that kills the process before the embedded
    PostgreSQL is stopped (``docker stop``, systemd). Our handlers unwind the stack instead."""

    def stop(signum: int, _frame: object) -> None:
        raise _StopServing(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.run(app, **options)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _parse_max_price(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        price = Decimal(value.lstrip("$"))
    except InvalidOperation:
        raise typer.BadParameter(
            f"{value!r} is not an amount in $ per GPU-hour", param_hint="--max-price"
        ) from None
    if not price.is_finite() or price < 0:
        raise typer.BadParameter("must be a non-negative amount in $ per GPU-hour", param_hint="--max-price")
    return price


@app.command()
def offers(
    gpu: Annotated[str | None, typer.Option(help="GPU model, e.g. H100, A100-80GB, B200")] = None,
    count: Annotated[int | None, typer.Option(min=1, max=64, help="GPUs per instance, e.g. 8")] = None,
    cloud: Annotated[
        list[str] | None, typer.Option(help="Only this cloud (repeatable): aws, gcp, lambda, ...")
    ] = None,
    region: Annotated[str | None, typer.Option(help="Only this region, e.g. us-east-1")] = None,
    capacity: Annotated[CapacityChoice | None, typer.Option(help="Only this capacity type")] = None,
    max_price: Annotated[str | None, typer.Option(help="Max $ per GPU-hour, e.g. 2.50")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="Show at most this many offers")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (stable field names) instead of a table")
    ] = False,
) -> None:
    """List the cheapest current offers, per GPU-hour, with each price's age."""
    from api.schemas import OfferOut
    from broker.core.types import CapacityType
    from broker.services.offers import find_offers
    from pricing.core import OfferQuery, format_age

    query = OfferQuery(
        gpu=gpu,
        count=count,
        clouds=frozenset(c.lower() for part in cloud for c in part.split(",") if c) if cloud else None,
        region=region,
        capacity=CapacityType(capacity.value) if capacity else None,
        max_price_per_gpu_hour=_parse_max_price(max_price),
        limit=limit,
    )
    settings = _settings()
    with _database(settings) as database, database.sessions() as session:
        quotes = find_offers(session, query, utc_now(), timedelta(seconds=settings.price_stale_after_seconds))
    if as_json:
        payload = [OfferOut.from_quote(q).model_dump(mode="json") for q in quotes]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    if not quotes:
        _err.print("no offers match; try fewer filters (gpubroker offers --help)", highlight=False)
        raise typer.Exit(1)
    table = Table(title=f"Cheapest offers{f' for {gpu}' if gpu else ''}, per GPU-hour", title_justify="left")
    for name, justify in [
        ("CLOUD", "left"),
        ("REGION", "left"),
        ("ZONE", "left"),
        ("INSTANCE TYPE", "left"),
        ("GPUS", "right"),
        ("CAPACITY", "left"),
        ("$/HOUR", "right"),
        ("$/GPU-HOUR", "right"),
        ("PRICE AGE", "right"),
    ]:
        table.add_column(name, justify=justify, no_wrap=name != "INSTANCE TYPE")  # type: ignore[arg-type]
    for q in quotes:
        o = q.offer
        table.add_row(
            o.cloud,
            o.region,
            o.zone or "-",
            o.instance_type,
            f"{o.accelerator_count}x {o.accelerator}",
            o.capacity_type.value,
            f"{o.price_per_hour:.2f}",
            f"{q.price_per_gpu_hour:.3f}",
            format_age(timedelta(seconds=q.price_age_seconds)),
        )
    Console(width=max(_out.width, 140)).print(table)


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply database schema migrations up to REVISION (default: the newest)."""
    from broker.db import schema

    with _database(_settings(), prepare=False) as database:
        schema.upgrade(database.engine, revision)
        _out.print(f"database schema at {schema.current_revision(database.engine)}", highlight=False)


@db_app.command("current")
def db_current() -> None:
    """Show the database's schema revision and the newest one gpubroker ships."""
    from broker.db import schema

    with _database(_settings(), prepare=False) as database:
        current = schema.current_revision(database.engine)
    head = schema.head_revision()
    state = "up to date" if current == head else "behind: run `gpubroker db upgrade`"
    _out.print(f"current: {current or '(empty database)'}\nhead:    {head}\n{state}", highlight=False)


@catalog_app.command("import")
def catalog_import(
    path: Annotated[
        Path, typer.Argument(help="A SkyPilot catalog file, e.g. ~/.sky/catalogs/v8/aws/vms.csv")
    ],
    cloud: Annotated[
        str | None,
        typer.Option(help="The file's cloud (aws, gcp, azure, lambda, runpod); default: from the path"),
    ] = None,
    observed_at: Annotated[
        datetime | None,
        typer.Option(help="When the prices were observed (ISO 8601) [default: the file's mtime]"),
    ] = None,
) -> None:
    """Import a SkyPilot catalog vms.csv as a new price snapshot (all or nothing)."""
    from broker.services.catalog import CatalogImportError, import_skypilot_catalog
    from pricing.rows import CatalogFormatError

    if observed_at is not None and observed_at.tzinfo is None:
        raise typer.BadParameter("give a timezone, e.g. 2026-11-23T10:00:00Z", param_hint="--observed-at")
    try:
        with _database(_settings()) as database, database.sessions.begin() as session:
            record = import_skypilot_catalog(session, path.expanduser(), cloud=cloud, observed_at=observed_at)
    except (CatalogImportError, CatalogFormatError) as exc:
        raise _fail(f"{exc}\nnothing was imported", code=2) from None
    if record.created:
        _out.print(
            f"imported {record.offer_count} offers for {', '.join(record.clouds)} as snapshot {record.id} "
            f"(observed {record.observed_at.isoformat()})",
            highlight=False,
        )
    else:
        _out.print(f"already imported as snapshot {record.id}; nothing changed", highlight=False)


@catalog_app.command("list")
def catalog_list() -> None:
    """List stored price snapshots, newest first."""
    from broker.db.prices import list_snapshots

    with _database(_settings()) as database, database.sessions() as session:
        snapshots = list_snapshots(session)
    table = Table()
    for name in ("ID", "SOURCE", "CLOUDS", "OFFERS", "OBSERVED", "IMPORTED"):
        table.add_column(name)
    for s in snapshots:
        table.add_row(
            str(s.id),
            s.source,
            ", ".join(s.clouds),
            str(s.offer_count),
            s.observed_at.isoformat(timespec="minutes"),
            s.imported_at.isoformat(timespec="minutes"),
        )
    Console(width=max(_out.width, 120)).print(table)


# A probe fails fast: a provider that fails its health check and every retry of its offers
# opens its breaker, and the table says so.
PROBE_POLICY = {
    "max_attempts": 3,
    "breaker_threshold": 3,
    "backoff_initial": 0.2,
    "backoff_max": 1.0,
    "timeout_seconds": 20.0,
}


@providers_app.command("check")
def providers_check(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Probe every provider: configured? reachable? how many H100 offers? last error, breaker state."""
    from dataclasses import asdict

    from broker.services.providers import probe
    from providers.registry import AdapterUnavailable, discover
    from providers.resilience import ResiliencePolicy

    try:
        entries = discover(policy=ResiliencePolicy(**PROBE_POLICY))  # type: ignore[arg-type]
    except AdapterUnavailable as exc:
        raise _fail(str(exc), code=2) from None
    reports = [probe(entry) for entry in entries]
    for entry in entries:
        if entry.provider is not None:
            entry.provider.close()
    if as_json:
        payload = [{**asdict(r), "breaker_state": r.breaker_state} for r in reports]
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    table = Table(title="Providers", title_justify="left")
    for name in ("PROVIDER", "CONFIGURED", "REACHABLE", "H100 OFFERS", "BREAKER", "LAST ERROR / NOTE"):
        table.add_column(name, overflow="fold")
    for r in reports:
        reachable = "-" if r.reachable is None else ("yes" if r.reachable else "[red]no[/red]")
        breaker = "[red]open[/red]" if r.breaker_state == "open" else r.breaker_state
        table.add_row(
            r.name,
            "yes" if r.configured else "no",
            reachable,
            "-" if r.h100_offers is None else str(r.h100_offers),
            breaker,
            r.last_error or r.detail,
        )
    Console(width=max(_out.width, 140)).print(table)


class SimulateScenario(StrEnum):
    skynomad_h100 = "skynomad-h100"
    cant_be_late = "cant-be-late"
    cross_cloud_h100 = "cross-cloud-h100"
    all = "all"


class RoleChoice(StrEnum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"


@admin_app.command("create-org")
def admin_create_org(
    name: Annotated[str, typer.Argument(help="Organization name, unique")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create an organization (with its `default` project)."""
    from broker.services.tenancy import TenancyError, create_org

    with _database(_settings()) as database:
        try:
            with database.sessions.begin() as session:
                org = create_org(session, name, utc_now())
                org_id = org.id
        except TenancyError as exc:
            raise _fail(str(exc)) from None
    if json_output:
        _out.print_json(json.dumps({"id": org_id, "name": name.strip()}))
    else:
        _out.print(f"organization {name.strip()} created: {org_id}", highlight=False)


@admin_app.command("create-key")
def admin_create_key(
    org: Annotated[str, typer.Option("--org", help="Organization name or id")],
    name: Annotated[str, typer.Option("--name", help="What the key is for")] = "bootstrap",
    role: Annotated[RoleChoice, typer.Option("--role", help="viewer, operator or admin")] = RoleChoice.admin,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create an API key and print it once: only its hash is stored."""
    from broker.services.tenancy import Role, TenancyError, create_api_key, find_org

    with _database(_settings()) as database:
        try:
            with database.sessions.begin() as session:
                found = find_org(session, org)
                if found is None:
                    raise TenancyError(
                        f"no organization {org!r} (create it with `gpubroker admin create-org`)"
                    )
                issued = create_api_key(session, found.id, name, Role(role.value), utc_now())
        except TenancyError as exc:
            raise _fail(str(exc)) from None
    if json_output:
        _out.print_json(
            json.dumps(
                {"id": issued.key_id, "org_id": issued.org_id, "role": issued.role, "key": issued.secret}
            )
        )
    else:
        _out.print(issued.secret, highlight=False, soft_wrap=True)
        _err.print(
            f"{issued.role} key {issued.key_id} for {issued.org_id}: shown once, store it now",
            highlight=False,
        )


@app.command()
def simulate(
    scenario: Annotated[
        SimulateScenario, typer.Option(help="Which benchmark scenario to replay")
    ] = SimulateScenario.all,
    traces: Annotated[
        Path | None,
        typer.Option(help="Spot-traces folder [default: $GPUBROKER_TRACES, else ../shared/data/spot-traces]"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Write policies.md, summary.csv, comparison.csv, runs.csv and policies.png here"),
    ] = None,
    policies: Annotated[
        str | None,
        typer.Option(help="Comma-separated policies (default: each scenario's set), e.g. up_s,optimum"),
    ] = None,
    quick: Annotated[bool, typer.Option(help="30 instead of 300 Can't Be Late start times")] = False,
    sweep: Annotated[bool, typer.Option(help="Also sweep SkyNomad's deadline ratios 1.05-3.0")] = False,
    processes: Annotated[int, typer.Option(min=1, max=64, help="Worker processes")] = 2,
) -> None:
    """Replay spot traces against deadline policies and compare with published results."""
    from broker.simulation.scenarios import SCENARIO_NAMES
    from broker.simulation.suite import run_suite
    from broker.simulation.traces import TracesNotFound, traces_dir

    names = SCENARIO_NAMES if scenario is SimulateScenario.all else (scenario.value,)
    chosen = tuple(p.strip() for p in policies.split(",") if p.strip()) if policies else None
    try:
        outcome = run_suite(
            names,
            traces_dir(traces),
            out=out,
            policies=chosen,
            quick=quick,
            sweep=sweep,
            processes=processes,
            plot=out is not None,
        )
    except TracesNotFound as exc:
        raise _fail(str(exc)) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    sys.stdout.write(outcome.markdown)
    for name, seconds in outcome.seconds.items():
        _err.print(f"{name}: {seconds:.1f} s", highlight=False)
    for path in outcome.files:
        _err.print(f"wrote {path}", highlight=False)
    for note in outcome.notes:
        _err.print(note, highlight=False, markup=False)
    if any(not c.within_tolerance for c in outcome.comparisons if c.policy != "ours"):
        _err.print("some reproduced baselines are more than 5% off the published figures", highlight=False)


@app.command()
def report(
    day: Annotated[
        str, typer.Option("--date", help="The day to report, YYYY-MM-DD (in GPUBROKER_REPORT_TIMEZONE)")
    ],
    org: Annotated[
        str | None, typer.Option("--org", help="Organization name or id [default: every one]")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for report-<org>-<date>.html and .csv")] = Path(),
    deliver: Annotated[
        bool, typer.Option("--deliver", help="Also mail / post it, when delivery is set up")
    ] = False,
) -> None:
    """Build (or rebuild) one day's cost report, store it, and write it as HTML and CSV."""
    from datetime import date as date_type

    from broker.reports.build import UnknownOrganization, find_org_id
    from broker.reports.job import run_nightly_reports

    try:
        wanted = date_type.fromisoformat(day)
    except ValueError:
        raise _fail(f"--date {day!r} is not a date (YYYY-MM-DD)", code=2) from None
    settings = _settings()
    with _database(settings) as database:
        org_ids = None
        if org is not None:
            try:
                with database.sessions.begin() as session:
                    org_ids = [find_org_id(session, org)]
            except UnknownOrganization as exc:
                raise _fail(str(exc)) from None
        # One organization's failure (a day that has not started yet, say) is in run.failed.
        run = run_nightly_reports(
            database,
            utc_now(),
            settings,
            day=wanted,
            org_ids=org_ids,
            force=True,
            send=deliver,
            clock=utc_now,  # each organization's delivery claim is stamped when it is built
        )
    out.mkdir(parents=True, exist_ok=True)
    for org_id, stored in run.built.items():
        name = stored.report.org_name
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or org_id
        for suffix, text in (("html", stored.html), ("csv", stored.csv)):
            path = out / f"report-{safe}-{wanted.isoformat()}.{suffix}"
            path.write_text(text, encoding="utf-8")
            _err.print(f"wrote {path}", highlight=False, soft_wrap=True)
        _out.print(
            f"{name} {wanted.isoformat()}: {stored.data['totals']['spend_usd']} USD spent", highlight=False
        )
        for channel, outcome in run.delivery.get(org_id, {}).items():
            _err.print(f"{channel}: {outcome['status']}", highlight=False)
    for org_id, error in run.failed.items():
        _err.print(f"[red]error:[/red] {org_id}: {error}", highlight=False)
    if run.failed:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    app()
