"""Project usage, admission against limits and the placement Budget, on a real PostgreSQL, including two
admissions racing for a project's last GPUs."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from broker.core.workload import Budget
from broker.db.engine import Database
from broker.db.fleet import Project, WorkloadRow
from broker.services.budgets import (
    BudgetExceeded,
    ProjectUsage,
    budget_for,
    check_admission,
    create_project,
    project_usage,
)
from broker.services.tenancy import create_org
from tests.fleet_rows import HOUR_AGO, add_instance_row, add_workload_row, ensure_project

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MONTH = datetime(2026, 11, 1, tzinfo=UTC)


def _project(session: Session, name: str = "acme") -> Project:
    org = create_org(session, name, NOW)
    return session.get(Project, ensure_project(session, org.id))  # type: ignore[return-value]


def _fill(session: Session, project: Project) -> None:
    """Workloads holding 9 GPUs, and instances that cost $5656 this month (see each line)."""
    org = project.org_id
    for state, gpus in (
        ("PENDING", 1),
        ("PLACING", 2),
        ("PROVISIONING", 2),
        ("RUNNING", 3),
        ("MIGRATING", 1),
        ("SUCCEEDED", 100),
        ("FAILED", 100),
        ("CANCELLED", 100),
    ):
        add_workload_row(session, org, project.id, state=state, gpus_per_node=gpus)
    wl = add_workload_row(session, org, project.id, state="SUCCEEDED")
    # $10/h since Oct 31 22:00, still running: Nov 1 00:00 to now is 23.5 days = 564 h -> $5640.
    add_instance_row(
        session,
        org,
        project.id,
        workload_id=wl,
        price_per_hour="10",
        launched_at=MONTH - timedelta(hours=2),
        created_at=HOUR_AGO,
    )
    # $2/h for 6 h on Nov 10 -> $12.
    add_instance_row(
        session,
        org,
        project.id,
        workload_id=wl,
        price_per_hour="2",
        state="terminated",
        launched_at=MONTH + timedelta(days=9),
        ended_at=MONTH + timedelta(days=9, hours=6),
        created_at=HOUR_AGO,
    )
    # Ended last month -> $0.
    add_instance_row(
        session,
        org,
        project.id,
        workload_id=wl,
        price_per_hour="4",
        state="terminated",
        launched_at=MONTH - timedelta(days=3),
        ended_at=MONTH - timedelta(days=1),
        created_at=HOUR_AGO,
    )
    # Under a commitment: prepaid -> $0.
    add_instance_row(
        session,
        org,
        project.id,
        workload_id=wl,
        price_per_hour="99",
        commitment_id="cmt_prepaid",
        launched_at=MONTH,
        created_at=HOUR_AGO,
    )
    # Requested 30 min ago, not launched yet: counts from its creation -> 0.5 h x $8 = $4.
    add_instance_row(
        session,
        org,
        project.id,
        workload_id=wl,
        price_per_hour="8",
        state="requested",
        created_at=NOW - timedelta(minutes=30),
    )


def test_usage_counts_unfinished_workloads_and_spend_outside_commitments(session: Session) -> None:
    project = _project(session)
    _fill(session, project)
    other = _project(session, "globex")
    add_workload_row(session, other.org_id, other.id, gpus_per_node=64)
    add_instance_row(
        session,
        other.org_id,
        other.id,
        workload_id=add_workload_row(session, other.org_id, other.id),
        price_per_hour="1000",
        launched_at=MONTH,
        created_at=HOUR_AGO,
    )
    assert project_usage(session, project.id, NOW) == ProjectUsage(9, Decimal("5656"))


def test_spend_restarts_with_the_utc_month(session: Session) -> None:
    project = _project(session)
    _fill(session, project)
    december = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    # Only the still-running $10/h instance and the requested $8/h one run into December: 0.5 h each.
    assert project_usage(session, project.id, december).spent_usd_this_month == Decimal("9")
    # A time zone other than UTC does not move the month boundary.
    same_instant = december.astimezone(ZoneInfo("America/New_York"))
    assert project_usage(session, project.id, same_instant).spent_usd_this_month == Decimal("9")


def test_an_unlimited_project_admits_anything(session: Session) -> None:
    project = _project(session)
    _fill(session, project)
    # Admitted without counting anything: usage is only read when there is a limit to hold it to.
    assert check_admission(session, project, 100_000, Decimal("1e9"), NOW) is None


def test_the_gpu_limit(session: Session) -> None:
    project = _project(session)
    _fill(session, project)
    project.max_gpus = 16
    session.flush()
    check_admission(session, project, 7, None, NOW)  # 9 + 7 = 16: exactly at the limit
    with pytest.raises(BudgetExceeded) as refused:
        check_admission(session, project, 8, None, NOW)
    assert refused.value.limit_kind == "gpus"
    assert "16" in refused.value.message and "9" in refused.value.message


def test_the_monthly_dollar_limit(session: Session) -> None:
    project = _project(session)
    _fill(session, project)
    project.max_usd_per_month = Decimal("6000")
    session.flush()
    check_admission(session, project, 8, None, NOW)  # no estimate: only the spend so far counts
    check_admission(session, project, 8, Decimal("344"), NOW)  # 5656 + 344 = 6000: at the limit
    with pytest.raises(BudgetExceeded) as refused:
        check_admission(session, project, 8, Decimal("344.01"), NOW)
    assert refused.value.limit_kind == "usd"
    project.max_usd_per_month = Decimal("5656")  # reached: even a free admission is refused
    session.flush()
    with pytest.raises(BudgetExceeded) as spent:
        check_admission(session, project, 1, Decimal("0"), NOW)
    assert spent.value.limit_kind == "usd"
    with pytest.raises(BudgetExceeded):
        check_admission(session, project, 1, None, NOW)


def test_budget_for_the_placement_snapshot(session: Session) -> None:
    project = create_project(
        session, _project(session).org_id, "ml", NOW, max_gpus=32, max_usd_per_month=Decimal("10000")
    )
    _fill(session, project)
    budget = budget_for(session, project, NOW)
    assert budget == Budget(
        project=project.id,
        max_gpus=32,
        gpus_in_use=9,
        max_usd_per_month=Decimal("10000"),
        spent_usd_this_month=Decimal("5656"),
    )
    assert budget.usd_left == Decimal("4344")


def _waiting_on_a_lock(database: Database) -> bool:
    with database.engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)


def test_two_admissions_racing_for_the_last_gpus_only_one_passes(database: Database) -> None:
    with database.sessions.begin() as s:
        project_id = _project(s).id
        s.get(Project, project_id).max_gpus = 8  # type: ignore[union-attr]
    outcome: dict[str, object] = {}

    def admit_second() -> None:
        with database.sessions.begin() as s:
            project = s.get(Project, project_id)
            assert project is not None
            try:
                check_admission(s, project, 6, None, NOW)
                add_workload_row(s, project.org_id, project.id, gpus_per_node=6)
                outcome["second"] = "admitted"
            except BudgetExceeded as exc:
                outcome["second"] = exc.limit_kind

    first = database.sessions()
    try:
        with first.begin():
            project = first.get(Project, project_id)
            assert project is not None
            check_admission(first, project, 6, None, NOW)  # passes and holds the project row
            add_workload_row(first, project.org_id, project.id, gpus_per_node=6)
            second = threading.Thread(target=admit_second)
            second.start()
            # The second admission must queue behind the first's lock, not read around it.
            saw_wait = False
            for _ in range(2000):
                if _waiting_on_a_lock(database):
                    saw_wait = True
                    break
                if not second.is_alive():
                    break
                time.sleep(0.005)
            assert saw_wait, f"the second admission did not wait for the first: {outcome}"
        # The first commits here; the second now sees its 6 GPUs.
        second.join(timeout=60)
        assert not second.is_alive()
    finally:
        first.close()
    assert outcome == {"second": "gpus"}
    with database.sessions() as s:
        assert (
            s.scalar(
                select(func.count()).select_from(WorkloadRow).where(WorkloadRow.project_id == project_id)
            )
            == 1
        )
        assert project_usage(s, project_id, NOW).gpus_in_use == 6
