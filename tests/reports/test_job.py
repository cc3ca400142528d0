"""The nightly job: once per organization and day across replicas, delivery failures recorded, the
due day in the configured time zone; and ``gpubroker report`` on the command line."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from typer.testing import CliRunner

from broker.cli import app
from broker.db.engine import Database
from broker.db.fleet import CostReport
from broker.db.locks import try_xact_lock
from broker.reports.job import LOCK_PREFIX, latest_due_day, run_nightly_reports
from broker.services.tenancy import create_org
from broker.settings import Settings
from tests.reports.conftest import Webhook
from tests.reports.fleet import AFTER, D, seed_fleet
from tests.services.test_costs import DAY


def seeded_org(database: Database, name: str = "acme-nightly") -> str:
    with database.sessions.begin() as session:
        org = create_org(session, name, DAY - timedelta(days=60))
        seed_fleet(session, org.id)
        return org.id


def reports(database: Database) -> list[tuple[str, str]]:
    with database.sessions.begin() as session:
        return [(r.org_id, r.data["totals"]["spend_usd"]) for r in session.scalars(select(CostReport))]


def test_latest_due_day_follows_report_time_in_its_time_zone() -> None:
    berlin = Settings(report_time="01:00", report_timezone="Europe/Berlin")
    # 23:30 UTC on the 23rd is 00:30 on the 24th in Berlin: before 01:00, so the 22nd is the newest due.
    assert latest_due_day(datetime(2026, 11, 23, 23, 30, tzinfo=UTC), berlin).isoformat() == "2026-11-22"
    assert latest_due_day(datetime(2026, 11, 24, 0, 0, tzinfo=UTC), berlin).isoformat() == "2026-11-23"
    assert latest_due_day(AFTER, Settings(report_timezone="UTC")) == D  # noon on the 24th


def test_one_run_builds_every_org_then_later_runs_skip_them(database: Database) -> None:
    org = seeded_org(database)
    with database.sessions.begin() as session:  # created after the day ended: nothing to report
        late = create_org(session, "newcomer", datetime(2026, 11, 24, 9, tzinfo=UTC)).id
    settings = Settings(report_timezone="UTC")
    first = run_nightly_reports(database, AFTER, settings, day=D)
    assert list(first.built) == [org] and first.failed == {}
    assert late not in first.skipped and late not in first.built
    again = run_nightly_reports(database, AFTER + timedelta(hours=1), settings, day=D)
    assert again.built == {} and again.skipped == [org]
    forced = run_nightly_reports(database, AFTER + timedelta(hours=2), settings, day=D, force=True)
    assert list(forced.built) == [org]
    assert reports(database) == [(org, "1020.00")]


def test_two_replicas_at_once_make_one_report_and_one_delivery(
    database: Database, webhook: tuple[str, Webhook]
) -> None:
    org = seeded_org(database)
    url, hook = webhook
    settings = Settings(report_timezone="UTC", report_webhook_url=url)
    start = threading.Barrier(2)
    runs = []

    def replica() -> None:
        start.wait()
        runs.append(run_nightly_reports(database, AFTER, settings, day=D))

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r.built) for r in runs) == [0, 1]
    assert sum(r.skipped.count(org) for r in runs) == 1
    assert reports(database) == [(org, "1020.00")]
    assert len(hook.bodies) == 1


def test_a_replica_holding_the_lock_makes_the_other_skip(database: Database) -> None:
    org = seeded_org(database)
    with database.sessions.begin() as holder:
        assert try_xact_lock(holder, f"{LOCK_PREFIX}:{org}:{D.isoformat()}")
        run = run_nightly_reports(database, AFTER, Settings(report_timezone="UTC"), day=D)
        assert run.skipped == [org] and run.built == {}
    with database.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(CostReport)) == 0


def test_a_webhook_that_always_fails_is_recorded_and_the_job_succeeds(
    database: Database, webhook: tuple[str, Webhook]
) -> None:
    org = seeded_org(database)
    url, hook = webhook
    hook.script = [500]
    waits: list[float] = []
    settings = Settings(report_timezone="UTC", report_webhook_url=url)
    run = run_nightly_reports(database, AFTER, settings, day=D, sleep=waits.append)
    assert list(run.built) == [org] and run.failed == {}
    assert run.delivery[org]["webhook"]["status"] == "failed"
    assert len(hook.bodies) == 4 and waits == [2.0, 4.0, 8.0]
    with database.sessions.begin() as session:
        delivery = session.scalars(select(CostReport.delivery)).one()
    assert delivery["webhook"]["status"] == "failed" and delivery["webhook"]["attempts"] == 4
    assert "secret-token" not in str(delivery)


def test_cli_report_builds_stores_and_writes_html_and_csv(
    database: Database, database_url: str, tmp_path: Path
) -> None:
    org = seeded_org(database, "acme cli")
    env = {
        "DATABASE_URL": database_url,
        "GPUBROKER_HOME": str(tmp_path / "home"),
        "GPUBROKER_REPORT_TIMEZONE": "UTC",
    }
    result = CliRunner().invoke(
        app, ["report", "--date", "2026-11-23", "--org", "acme cli", "--out", str(tmp_path / "out")], env=env
    )
    assert result.exit_code == 0, result.output
    html = tmp_path / "out" / "report-acme_cli-2026-11-23.html"
    csv = tmp_path / "out" / "report-acme_cli-2026-11-23.csv"
    assert f"wrote {html}" in result.output and f"wrote {csv}" in result.output
    assert "acme cli 2026-11-23: 1020.00 USD spent" in result.output
    assert "$1,020.00" in html.read_text() and csv.read_text().startswith("Report date,")
    assert reports(database) == [(org, "1020.00")]


def test_cli_report_refuses_a_bad_date_and_an_unknown_org(database_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": database_url, "GPUBROKER_HOME": str(tmp_path / "home")}
    runner = CliRunner()
    bad = runner.invoke(app, ["report", "--date", "23/11/2026"], env=env)
    assert bad.exit_code == 2 and "is not a date" in bad.output
    unknown = runner.invoke(app, ["report", "--date", "2026-11-23", "--org", "nope"], env=env)
    assert unknown.exit_code == 1 and "no organization 'nope'" in unknown.output


def test_the_scheduler_runs_the_report_job_at_report_time_in_report_timezone(database: Database) -> None:
    from broker.jobs.scheduler import Scheduler

    settings = Settings(report_time="02:30", report_timezone="Asia/Tokyo")
    scheduler = Scheduler(database, [], settings, clock=lambda: AFTER)
    scheduler.start()
    try:
        job = scheduler._scheduler.get_job("reports")  # type: ignore[union-attr]
        fields = {f.name: str(f) for f in job.trigger.fields}
        assert (fields["hour"], fields["minute"], str(job.trigger.timezone)) == ("2", "30", "Asia/Tokyo")
    finally:
        scheduler.stop()
    assert scheduler.run_reports().day == D  # the injected clock decides the day
