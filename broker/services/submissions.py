"""Group commit for workload submissions: many concurrent requests, one transaction (does I/O).

A submission costs a handful of SQL round trips and a commit (an fsync); done one request at a time
that caps creation at a few hundred per second per core. :class:`SubmissionWriter` queues
submissions from any number of request handlers and writes whatever is waiting as one batch: one
query for the projects, one locked read per project with limits, one multi-row insert for the
workloads and one for their events, one ``pg_notify``, one commit. Under light load a batch is one
submission, so latency stays that of a single insert; under heavy load batches grow and the cost per
submission falls.

Every rule of :func:`broker.services.workloads.submit` holds per submission: the project must exist
in the caller's organization; a project with limits is locked (``FOR UPDATE``) before its usage is
read, and the batch's own earlier admissions count against it, so neither concurrent batches nor
submissions inside one batch can pass a limit together. A refusal fails only its own submission. If
the batch transaction itself fails, each submission is retried alone through ``submit`` so one bad
row cannot fail the others. A submission's future resolves only after the commit: a 201 is never
sent for a workload that is not stored.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, insert, text
from sqlalchemy.orm import Session, sessionmaker

from broker.core.lifecycle import WorkloadState
from broker.db.fleet import Project, WorkloadEvent, WorkloadRow
from broker.services.budgets import BudgetExceeded, ProjectUsage, judge_admission, project_usage
from broker.services.lifecycle import Topic, wake
from broker.services.tenancy import new_id
from broker.services.workloads import WorkloadError, WorkloadSpec, spec_to_json, submit, to_core

_log = logging.getLogger(__name__)

MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class Submission:
    """One request to store a workload for ``org_id``; ``spec`` is already parsed."""

    org_id: str
    spec: WorkloadSpec
    now: datetime


@dataclass(frozen=True, slots=True)
class Submitted:
    """A stored workload, as the API shows it right after creation."""

    row: WorkloadRow
    project_name: str


@dataclass(slots=True)
class _Pending:
    submission: Submission
    future: Future[Submitted] = field(default_factory=Future)


def precheck(spec: WorkloadSpec, now: datetime) -> None:
    """The checks that need no database (pure): raise :class:`WorkloadError` 422 early, before queueing."""
    if spec.deadline is not None and spec.deadline <= now:
        raise WorkloadError(422, "validation-error", "deadline: must be in the future")
    try:
        to_core("wl_check", "project", spec)
    except ValueError as exc:
        raise WorkloadError(422, "validation-error", str(exc)) from None


# Plain SQL built once (rows, not ORM objects): on a batch of one, building and loading through
# the ORM cost more than the round trip itself.
_PROJECTS = text(
    "SELECT id, org_id, name, max_gpus, max_usd_per_month FROM project"
    " WHERE org_id = ANY(:orgs) AND (id = ANY(:refs) OR name = ANY(:refs))"
)
_LOCK_PROJECTS = text(
    "SELECT id, org_id, name, max_gpus, max_usd_per_month FROM project"
    " WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"
)


def _find_projects(session: Session, submissions: Sequence[Submission]) -> dict[tuple[str, str], Row[Any]]:
    """Projects by (org id, name or id as submitted), in one query."""
    rows = session.execute(
        _PROJECTS,
        {"orgs": list({s.org_id for s in submissions}), "refs": list({s.spec.project for s in submissions})},
    ).all()
    found: dict[tuple[str, str], Row[Any]] = {}
    for project in rows:
        found.setdefault((project.org_id, project.name), project)
        found[(project.org_id, project.id)] = project  # an id wins over a name that looks like one
    return found


def write_batch(session: Session, submissions: Sequence[Submission]) -> list[Submitted | Exception]:
    """Store every admissible submission in the caller's transaction; one outcome per submission,
    in order: the stored workload, or the :class:`WorkloadError` / :class:`BudgetExceeded` refusing it."""
    projects = _find_projects(session, submissions)
    limited = sorted(
        {p.id for p in projects.values() if p.max_gpus is not None or p.max_usd_per_month is not None}
    )
    usage: dict[str, ProjectUsage] = {}
    if limited:
        # Lock in id order (no deadlock between batches), re-reading the limits under the lock.
        for project in session.execute(_LOCK_PROJECTS, {"ids": limited}).all():
            usage[project.id] = project_usage(session, project.id, submissions[0].now)
            for key, seen in list(projects.items()):
                if seen.id == project.id:
                    projects[key] = project
    outcomes: list[Submitted | Exception] = []
    workloads: list[dict[str, object]] = []
    events: list[dict[str, object]] = []
    for sub in submissions:
        project = projects.get((sub.org_id, sub.spec.project))
        if project is None:
            outcomes.append(WorkloadError(404, "not-found", f"no project {sub.spec.project!r}"))
            continue
        if project.id in usage:
            before = usage[project.id]
            worst = sub.spec.worst_case_usd()
            try:
                judge_admission(project, before, sub.spec.total_gpus, worst)
            except BudgetExceeded as exc:
                outcomes.append(exc)
                continue
            usage[project.id] = ProjectUsage(  # later submissions in the batch see this one
                before.gpus_in_use + sub.spec.total_gpus,
                before.spent_usd_this_month + (worst or Decimal(0)),
            )
        values: dict[str, object] = {
            "id": new_id("wl"),
            "org_id": sub.org_id,
            "project_id": project.id,
            "name": sub.spec.name,
            "state": WorkloadState.PENDING.value,
            "spec": spec_to_json(sub.spec),
            "gpus_per_node": sub.spec.gpus_per_node,
            "nodes": sub.spec.nodes,
            "labels": dict(sub.spec.labels),
            "placement": None,
            "wait_reason": None,
            "failure_reason": None,
            "generation": 0,
            "attempts": 0,
            "history": {},
            "next_attempt_at": sub.now,
            "created_at": sub.now,
            "updated_at": sub.now,
            "state_changed_at": sub.now,
        }
        workloads.append(values)
        events.append(
            {
                "workload_id": values["id"],
                "org_id": sub.org_id,
                "at": sub.now,
                "kind": "submitted",
                "from_state": None,
                "to_state": WorkloadState.PENDING.value,
                "message": "workload submitted",
                "data": {},
            }
        )
        outcomes.append(Submitted(WorkloadRow(**values), project.name))
    if workloads:
        # Core inserts (executemany, batched into multi-row VALUES): the ORM's bulk path costs
        # more than the statement itself at this size.
        session.execute(insert(WorkloadRow.__table__), workloads)
        session.execute(insert(WorkloadEvent.__table__), events)
        wake(session, Topic.PLACE)
    return outcomes


class SubmissionWriter:
    """A thread that writes queued submissions in batches (group commit); see the module docstring.

    ``submit`` may be called from any thread and returns a future. The thread starts on the first
    submission and stops on :meth:`close`, after writing what is queued."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        max_batch: int = MAX_BATCH,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, submission: Submission) -> Future[Submitted]:
        pending = _Pending(submission)
        with self._lock:
            if self._closed:
                raise RuntimeError("the submission writer is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="submission-writer", daemon=True)
                self._thread.start()
            self._queue.put(pending)
        return pending.future

    def close(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[_Pending]) -> None:
        try:
            with self._sessions.begin() as session:
                outcomes = write_batch(session, [p.submission for p in batch])
        except Exception:  # isolate: retry each submission alone
            _log.exception("batch of %d submissions failed; retrying them one by one", len(batch))
            for pending in batch:
                self._write_alone(pending)
            return
        if self._on_batch is not None:
            self._on_batch(len(batch))
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    def _write_alone(self, pending: _Pending) -> None:
        sub = pending.submission
        try:
            with self._sessions.begin() as session:
                row = submit(session, sub.org_id, sub.spec, sub.now)
                name = session.get(Project, row.project_id)
                outcome = Submitted(row, name.name if name is not None else sub.spec.project)
        except Exception as exc:  # the request handler maps it to a response
            pending.future.set_exception(exc)
        else:
            pending.future.set_result(outcome)


__all__ = ["MAX_BATCH", "Submission", "SubmissionWriter", "Submitted", "precheck", "write_batch"]
