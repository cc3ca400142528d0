"""Group-committed workload submissions on a real PostgreSQL: per-submission outcomes inside one
batch, limits that count the batch's own admissions, two writers racing for a project's last GPUs,
isolation of a row the database refuses, and 201-after-commit."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from broker.db.engine import Database
from broker.db.fleet import WorkloadEvent, WorkloadRow
from broker.services.budgets import BudgetExceeded, create_project
from broker.services.submissions import Submission, SubmissionWriter, Submitted, precheck, write_batch
from broker.services.tenancy import create_org
from broker.services.workloads import WorkloadError, WorkloadSpec

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _spec(project: str = "default", gpus: int = 8, **kw: object) -> WorkloadSpec:
    return WorkloadSpec(gpu_types=("H100",), gpus_per_node=gpus, project=project, **kw)  # type: ignore[arg-type]


def _org(database: Database, name: str = "acme", **limits: object) -> str:
    with database.sessions.begin() as session:
        org = create_org(session, name, NOW)
        create_project(session, org.id, "capped", NOW, **limits)  # type: ignore[arg-type]
        return org.id


def _count(database: Database, org_id: str, project_name: str | None = None) -> int:
    with database.sessions() as session:
        query = select(func.count()).select_from(WorkloadRow).where(WorkloadRow.org_id == org_id)
        return int(session.scalar(query) or 0)


def test_one_batch_gives_each_submission_its_own_outcome(database: Database) -> None:
    org = _org(database, max_gpus=16)
    other = _org(database, "other")
    subs = [
        Submission(org, _spec(), NOW),  # default project: no limits
        Submission(org, _spec("nope"), NOW),  # unknown project
        Submission(org, _spec("capped"), NOW),  # 8 of 16
        Submission(org, _spec("capped"), NOW),  # 16 of 16
        Submission(org, _spec("capped"), NOW),  # would be 24: refused
        Submission(other, _spec("capped", gpus=4), NOW),  # another org's project of the same name
    ]
    with database.sessions.begin() as session:
        outcomes = write_batch(session, subs)
    kinds = [type(o).__name__ for o in outcomes]
    assert kinds == ["Submitted", "WorkloadError", "Submitted", "Submitted", "BudgetExceeded", "Submitted"]
    assert isinstance(outcomes[1], WorkloadError) and outcomes[1].status == 404
    assert isinstance(outcomes[4], BudgetExceeded) and outcomes[4].limit_kind == "gpus"
    stored = [o for o in outcomes if isinstance(o, Submitted)]
    assert [s.project_name for s in stored] == ["default", "capped", "capped", "capped"]
    assert stored[3].row.org_id == other
    with database.sessions() as session:
        rows = session.scalars(select(WorkloadRow).order_by(WorkloadRow.created_at)).all()
        assert {r.id for r in rows} == {s.row.id for s in stored}
        assert all(r.state == "PENDING" and r.next_attempt_at == NOW for r in rows)
        events = session.scalars(select(WorkloadEvent)).all()
        assert sorted(e.workload_id for e in events) == sorted(s.row.id for s in stored)
        assert {(e.kind, e.to_state) for e in events} == {("submitted", "PENDING")}


def test_dollar_limit_counts_the_batch_worst_cases(database: Database) -> None:
    # $100/month; each submission may cost up to 8 GPUs x $1 x 5 h = $40: two fit, the third does not.
    org = _org(database, max_usd_per_month=Decimal(100))
    spec = _spec("capped", max_price_per_gpu_hour=Decimal(1), expected_hours=Decimal(5))
    with database.sessions.begin() as session:
        outcomes = write_batch(session, [Submission(org, spec, NOW) for _ in range(3)])
    assert [type(o).__name__ for o in outcomes] == ["Submitted", "Submitted", "BudgetExceeded"]
    assert isinstance(outcomes[2], BudgetExceeded) and outcomes[2].limit_kind == "usd"


def test_two_writers_racing_for_the_last_gpus_admit_exactly_the_limit(database: Database) -> None:
    org = _org(database, max_gpus=24)  # room for three 8-GPU workloads
    writers = [SubmissionWriter(database.sessions, max_batch=4) for _ in range(2)]
    futures = []
    lock = threading.Lock()

    def flood(writer: SubmissionWriter) -> None:
        for _ in range(10):
            future = writer.submit(Submission(org, _spec("capped"), NOW))
            with lock:
                futures.append(future)

    threads = [threading.Thread(target=flood, args=(w,)) for w in writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = [f.exception(timeout=30) or f.result() for f in futures]
    for writer in writers:
        writer.close()
    admitted = [o for o in outcomes if isinstance(o, Submitted)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceeded)]
    assert len(admitted) == 3 and len(refused) == 17
    assert _count(database, org) == 3


def test_a_row_the_database_refuses_fails_alone(database: Database) -> None:
    org = _org(database)
    writer = SubmissionWriter(database.sessions)
    bad = _spec(labels={"team": "nul\x00byte"})  # PostgreSQL text cannot hold NUL: the batch fails
    # Hold the first batch back until all four are queued: the bad one then shares a batch.
    gate = threading.Event()
    original = writer._write
    batches: list[int] = []

    def gated(batch: list) -> None:  # type: ignore[type-arg]
        batches.append(len(batch))
        gate.wait(10)
        original(batch)

    writer._write = gated  # type: ignore[method-assign]
    blocker = writer.submit(Submission(org, _spec(), NOW))
    futures = [writer.submit(Submission(org, s, NOW)) for s in (_spec(), bad, _spec(name="third"))]
    gate.set()
    blocker.result(timeout=30)
    results = [f.exception(timeout=30) for f in futures]
    writer.close()
    assert results[0] is None and results[2] is None
    assert results[1] is not None and not isinstance(results[1], (WorkloadError, BudgetExceeded))
    assert sum(batches) == 4 and len(batches) <= 2
    assert _count(database, org) == 3  # the blocker, the first and the third


def test_future_resolves_after_the_commit(database: Database) -> None:
    org = _org(database)
    writer = SubmissionWriter(database.sessions)
    try:
        submitted = writer.submit(Submission(org, _spec(), NOW)).result(timeout=30)
        with database.sessions() as session:  # another connection sees it at once
            assert session.get(WorkloadRow, submitted.row.id) is not None
    finally:
        writer.close()
    with pytest.raises(RuntimeError, match="closed"):
        writer.submit(Submission(org, _spec(), NOW))


def test_close_writes_what_is_queued(database: Database) -> None:
    org = _org(database)
    writer = SubmissionWriter(database.sessions, max_batch=2)
    futures = [writer.submit(Submission(org, _spec(), NOW)) for _ in range(7)]
    writer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    assert _count(database, org) == 7


def test_precheck_refuses_a_past_deadline_and_an_impossible_spec() -> None:
    with pytest.raises(WorkloadError, match="deadline"):
        precheck(_spec(deadline=NOW - timedelta(seconds=1)), NOW)
    precheck(_spec(deadline=NOW + timedelta(hours=1)), NOW)
