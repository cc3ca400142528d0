"""The command executor: carries out the outbox through the provider adapters (does I/O).

Each round: claim ready commands (``FOR UPDATE SKIP LOCKED``; a command is ready when every
earlier step of its plan is done), mark them running with a lease and **commit** — then call the
providers, outside any transaction — then record each result in its own transaction. A process
killed mid-call leaves a running command whose lease expires; the next executor repeats the call,
which is idempotent (launch by our instance id, terminate until NotFound), so nothing is made
twice and nothing is lost.

Launches per provider pass a token bucket (``launch_rate_per_second``, ``launch_burst``): after a
restart with a backlog they ramp up at that rate instead of hitting the provider all at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from broker.clock import Clock, utc_now
from broker.core.errors import InvalidRequest, NotFound, ProviderError, Transient
from broker.core.lifecycle import WorkloadState
from broker.core.ports import Instance, InstanceState, LaunchRequest, Provider
from broker.core.types import CapacityType
from broker.db.engine import Database
from broker.db.fleet import CommandRow, InstanceRow, WorkloadRow
from broker.services.lifecycle import Topic, record_event, transition, wake
from broker.services.migrations import replan_after_refusal
from broker.services.workloads import enqueue_terminate
from providers.resilience import TokenBucket

_log = logging.getLogger(__name__)

LEASE = timedelta(minutes=2)
MAX_TRANSIENT_ATTEMPTS = 12
WAIT_POLL = timedelta(seconds=2)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one provider call produced: an instance, an error, or (for non-provider steps) nothing."""

    command_id: int
    instance: Instance | None = None
    error: ProviderError | None = None
    done: bool = True  # False: not yet (a wait that goes on)


def _ready(now: datetime) -> Any:
    earlier = aliased(CommandRow)
    blocked = exists().where(
        earlier.plan_id == CommandRow.plan_id,
        earlier.seq < CommandRow.seq,
        earlier.state != "done",
    )
    return and_(
        or_(
            and_(CommandRow.state == "pending", CommandRow.not_before <= now),
            and_(CommandRow.state == "running", CommandRow.lease_until < now),
        ),
        ~blocked,
    )


class Executor:
    """Runs outbox commands against ``providers`` (by name)."""

    def __init__(
        self,
        database: Database,
        providers: Mapping[str, Provider],
        *,
        clock: Clock = utc_now,
        launch_rate_per_second: float = 2.0,
        launch_burst: int = 5,
        workers: int = 8,
        lease: timedelta = LEASE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.providers = dict(providers)
        self.clock = clock
        self.buckets = {
            name: TokenBucket(launch_rate_per_second, launch_burst, monotonic, time.sleep)
            for name in self.providers
        }
        self.workers = workers
        self.lease = lease
        self.on_result: Callable[[str, CommandRow], None] | None = None  # for metrics and tests

    # --- one round ------------------------------------------------------------------------------
    def run_once(self, limit: int = 64) -> int:
        """Claim, execute and record one batch; returns how many commands were claimed."""
        claimed = self._claim(limit)
        if not claimed:
            return 0
        if len(claimed) == 1 or self.workers <= 1:
            outcomes = [self._execute(c) for c in claimed]
        else:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(claimed))) as pool:
                outcomes = list(pool.map(self._execute, claimed))
        for command, outcome in zip(claimed, outcomes, strict=True):
            try:
                with self.database.sessions.begin() as session:
                    self._record(session, command["id"], outcome)
            except Exception:  # the lease expires and another round retries the (idempotent) call
                _log.exception("recording the result of command %s failed", command["id"])
        return len(claimed)

    def _claim(self, limit: int) -> list[dict[str, Any]]:
        now = self.clock()
        claimed: list[dict[str, Any]] = []
        with self.database.sessions.begin() as session:
            rows = session.scalars(
                select(CommandRow)
                .where(_ready(now))
                .order_by(CommandRow.id)
                .with_for_update(skip_locked=True)
                .limit(limit)
            ).all()
            for row in rows:
                if row.kind == "launch" and row.state == "pending":
                    bucket = self.buckets.get(row.provider or "")
                    if bucket is not None and not bucket.try_take():
                        continue  # ramp: this launch waits for a later round
                row.state = "running"
                row.attempts = row.attempts + 1
                row.lease_until = now + self.lease
                row.updated_at = now
                claimed.append(
                    {
                        "id": row.id,
                        "kind": row.kind,
                        "provider": row.provider,
                        "payload": dict(row.payload),
                        "workload_id": row.workload_id,
                        "created_at": row.created_at,
                    }
                )
        return claimed

    # --- the calls (no transaction open) -----------------------------------------------------
    def _execute(self, command: dict[str, Any]) -> Outcome:
        kind = command["kind"]
        try:
            if kind == "launch":
                return Outcome(command["id"], instance=self._launch(command))
            if kind == "terminate":
                self._terminate(command)
                return Outcome(command["id"])
            if kind == "wait-for-checkpoint":
                return Outcome(command["id"], done=self._checkpoint_written(command))
            return Outcome(command["id"])  # cut-over: a database step, done in _record
        except ProviderError as exc:
            return Outcome(command["id"], error=exc)
        except Exception as exc:  # an adapter bug must not kill the executor; treat it as transient
            _log.exception("command %s (%s) raised", command["id"], kind)
            return Outcome(command["id"], error=Transient(f"unexpected error: {exc}"))

    def _provider(self, name: str | None) -> Provider:
        provider = self.providers.get(name or "")
        if provider is None:
            raise InvalidRequest(
                f"provider {name!r} is not configured in this scheduler", provider=name or ""
            )
        return provider

    def _launch(self, command: dict[str, Any]) -> Instance:
        payload = command["payload"]
        provider = self._provider(command["provider"])
        cap = payload.get("max_price_per_hour")
        request = LaunchRequest(
            instance_id=payload["instance_id"],
            instance_type=payload["instance_type"],
            region=payload["region"],
            zone=payload.get("zone"),
            capacity_type=CapacityType(payload["capacity_type"]),
            reservation_id=payload.get("reservation_id"),
            max_price_per_hour=Decimal(cap) if cap else None,
            image=payload.get("image"),
            labels=payload.get("labels") or {},
        )
        return provider.launch(request)

    def _terminate(self, command: dict[str, Any]) -> None:
        payload = command["payload"]
        try:
            self._provider(command["provider"]).terminate(payload["instance_id"], region=payload["region"])
        except NotFound:
            return  # gone already: that is what we wanted

    def _checkpoint_written(self, command: dict[str, Any]) -> bool:
        payload = command["payload"]
        started = command["created_at"]
        if self.clock() >= started + timedelta(seconds=int(payload.get("timeout_seconds", 0))):
            return True
        with self.database.sessions() as session:
            history = session.scalar(
                select(WorkloadRow.history).where(WorkloadRow.id == command["workload_id"])
            )
        written = (history or {}).get("last_checkpoint_at")
        return written is not None and datetime.fromisoformat(written) >= started

    # --- recording -------------------------------------------------------------------------------
    def _record(self, session: Session, command_id: int, outcome: Outcome) -> None:
        now = self.clock()
        command = session.get(CommandRow, command_id, with_for_update=True)
        if command is None or command.state != "running":
            return  # cancelled meanwhile (the workload was cancelled): leave it
        if outcome.error is not None:
            self._failed(session, command, outcome.error, now)
        elif not outcome.done:
            command.state = "pending"
            command.not_before = now + WAIT_POLL
            command.lease_until = None
            command.updated_at = now
            return
        else:
            command.state = "done"
            command.lease_until = None
            command.last_error = None
            command.updated_at = now
            if command.kind == "launch" and outcome.instance is not None:
                launched(session, command, outcome.instance, now)
            elif command.kind == "terminate":
                terminated(session, command.payload["instance_id"], now, "terminated by gpubroker")
            elif command.kind == "cut-over":
                cut_over(session, command, now)
        if self.on_result is not None:
            self.on_result(command.kind, command)

    def _failed(self, session: Session, command: CommandRow, error: ProviderError, now: datetime) -> None:
        command.last_error = str(error)[:2000]
        command.updated_at = now
        command.lease_until = None
        if error.retryable and command.attempts < MAX_TRANSIENT_ATTEMPTS:
            delay = getattr(error, "retry_after", None) or min(60.0, 2.0**command.attempts)
            command.state = "pending"
            command.not_before = now + timedelta(seconds=delay)
            return
        command.state = "failed"
        if command.kind == "launch":
            launch_refused(session, command, error, now, self.providers)
        elif command.kind == "terminate":
            # A terminate we cannot do is an operator's problem (credentials, say): say so loudly.
            record_event(
                session,
                command.workload_id,
                command.org_id,
                now,
                "terminate-failed",
                f"could not terminate {command.payload['instance_id']}: {error}",
            )


def launched(session: Session, command: CommandRow, instance: Instance, now: datetime) -> None:
    """A launch succeeded: record the instance; a workload whose plan is fully up starts RUNNING."""
    row = session.get(InstanceRow, command.payload["instance_id"], with_for_update=True)
    if row is None:
        return
    if row.state in ("requested", "pending"):
        row.state = "running" if instance.state is InstanceState.RUNNING else "pending"
        row.provider_instance_id = instance.provider_instance_id
        row.zone = instance.zone or row.zone
        row.launched_at = instance.launched_at or now
        if instance.price_per_hour is not None and row.commitment_id is None:
            row.price_per_hour = instance.price_per_hour
        row.updated_at = now
        record_event(
            session,
            row.workload_id,
            row.org_id,
            now,
            "launched",
            f"{row.id} on {row.provider}/{row.zone or row.region} ({instance.provider_instance_id})",
            data={"instance_id": row.id},
        )
    workload = session.get(WorkloadRow, row.workload_id, with_for_update=True)
    if workload is None:
        return
    if WorkloadState(workload.state).terminal:
        _stop_unwanted(session, workload, row, now)
        return
    if workload.state == "PROVISIONING" and _plan_launched(session, command.plan_id):
        session.execute(
            update(InstanceRow)
            .where(InstanceRow.workload_id == workload.id, InstanceRow.generation == workload.generation)
            .values(serving=True)
        )
        transition(session, workload, WorkloadState.PROVISIONING, WorkloadState.RUNNING, now, "running")


def _plan_launched(session: Session, plan_id: str) -> bool:
    pending = session.scalar(
        select(CommandRow.id)
        .where(CommandRow.plan_id == plan_id, CommandRow.kind == "launch", CommandRow.state != "done")
        .limit(1)
    )
    return pending is None


def _stop_unwanted(session: Session, workload: WorkloadRow, row: InstanceRow, now: datetime) -> None:
    if enqueue_terminate(session, workload, row, f"stop-{row.id}", 0, now):
        wake(session, Topic.EXECUTE)


def terminated(session: Session, instance_id: str, now: datetime, reason: str) -> None:
    row = session.get(InstanceRow, instance_id, with_for_update=True)
    if row is None or row.state in ("terminated", "preempted", "failed", "lost"):
        return
    row.state = "terminated"
    row.serving = False
    row.ended_at = now
    row.state_reason = reason
    row.updated_at = now


def launch_refused(
    session: Session, command: CommandRow, error: ProviderError, now: datetime, providers: Collection[str]
) -> None:
    """A launch failed for good: the instance is failed, the rest of its plan is dropped, and the
    workload goes back to placement with that offer backed off (or, mid-migration, is re-planned)."""
    instance = session.get(InstanceRow, command.payload["instance_id"], with_for_update=True)
    if instance is not None and instance.state in ("requested", "pending"):
        instance.state = "failed"
        instance.state_reason = str(error)[:500]
        instance.ended_at = now
        instance.updated_at = now
    workload = session.get(WorkloadRow, command.workload_id, with_for_update=True)
    if workload is None:
        return
    session.execute(
        update(CommandRow)
        .where(CommandRow.plan_id == command.plan_id, CommandRow.state == "pending")
        .values(state="cancelled", updated_at=now, last_error="an earlier step of the plan failed")
    )
    record_event(
        session,
        workload.id,
        workload.org_id,
        now,
        "launch-refused",
        f"{command.provider}/{command.payload.get('zone') or command.payload['region']} "
        f"{command.payload['instance_type']}: {error}",
        data={"error": type(error).__name__, "instance_id": command.payload["instance_id"]},
    )
    # The plan's other nodes: a gang is all or nothing.
    siblings = session.scalars(
        select(InstanceRow).where(
            InstanceRow.workload_id == workload.id,
            InstanceRow.id.startswith(command.plan_id + "-", autoescape=True),
            InstanceRow.id != command.payload["instance_id"],
            InstanceRow.state.in_(("requested", "pending", "running")),
        )
    ).all()
    for sibling in siblings:
        if sibling.state == "requested":
            sibling.state = "failed"
            sibling.state_reason = "another node of its gang could not launch"
            sibling.ended_at = now
        else:
            enqueue_terminate(session, workload, sibling, f"stop-{command.plan_id}", 0, now)
    key = [
        command.provider,
        command.payload["region"],
        command.payload.get("zone") or "",
        command.payload["instance_type"],
        instance.capacity_type if instance is not None else command.payload["capacity_type"],
    ]
    history = dict(workload.history)
    history["refusals"] = [*history.get("refusals", [])[-19:], {"key": key, "at": now.isoformat()}]
    workload.history = history
    state = WorkloadState(workload.state)
    if state is WorkloadState.PROVISIONING:
        transition(
            session,
            workload,
            state,
            WorkloadState.PENDING,
            now,
            "launch refused: placing again elsewhere",
            next_attempt_at=now,
            placement=None,
        )
        wake(session, Topic.PLACE)
    elif state is WorkloadState.MIGRATING:
        replan_after_refusal(session, workload, command, now, providers)
    wake(session, Topic.EXECUTE)


def cut_over(session: Session, command: CommandRow, now: datetime) -> None:
    """Point the workload at its new instances: they serve, the old ones stop serving; RUNNING again."""
    workload = session.get(WorkloadRow, command.workload_id, with_for_update=True)
    if workload is None or workload.state != "MIGRATING":
        return
    generation = int(command.payload["generation"])
    session.execute(
        update(InstanceRow)
        .where(InstanceRow.workload_id == workload.id)
        .values(serving=InstanceRow.generation == generation)
    )
    placement = dict(command.payload.get("placement") or {})
    placement["started_at"] = now.isoformat()
    history = dict(workload.history)
    history.pop("reclaim_at", None)
    history.pop("lost_at", None)
    workload.history = history
    transition(
        session,
        workload,
        WorkloadState.MIGRATING,
        WorkloadState.RUNNING,
        now,
        f"cut over to {placement.get('label', 'the new instances')}",
        placement=placement,
    )
    record_event(session, workload.id, workload.org_id, now, "migrated", placement.get("label", ""))


__all__ = [
    "LEASE",
    "Executor",
    "Outcome",
    "TokenBucket",
    "cut_over",
    "launch_refused",
    "launched",
    "terminated",
]
