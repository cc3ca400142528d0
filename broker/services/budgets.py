"""Projects and their limits: GPUs at once and dollars per month; usage and admission (does I/O).

A project's **GPUs in use** are the GPUs of its workloads that are not finished (every state but
SUCCEEDED, FAILED and CANCELLED: ``gpus_per_node × nodes``), so a workload counts from the moment
it is admitted, before any instance exists. Its **spend this month** is what its instances cost
in the current UTC calendar month up to now, by the same rules as ``GET /v1/costs``
(:func:`broker.services.costs.instance_spend`: per-second proration, spot price changes from
their time). Instances under a commitment add nothing while the commitment is in force: it is
paid for whether used or not, so their marginal spend is zero (its cost shows in the
commitment's own usage report); past its end they pay the on-demand price. An instance requested
but not launched yet counts too, at its launch price from its creation: admission stays
conservative while a launch is in flight. (Commitment charges are not part of a project's
budget.)

:func:`check_admission` is the one gate: it locks the project row (``SELECT ... FOR UPDATE``)
before it reads the usage, so two admissions racing for a project's last GPUs are serialized and
only one passes. The caller inserts its workload in the same transaction, after the check; the
lock is held until that transaction ends.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.core.lifecycle import TERMINAL
from broker.core.workload import Budget
from broker.db.fleet import InstanceRow, Project, WorkloadRow
from broker.services.commitments import hours
from broker.services.costs import instance_spend
from broker.services.tenancy import find_project, new_id

MAX_PROJECT_GPUS = 100_000
PROJECT_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
SPEND_QUANTUM = Decimal("0.000001")
_ZERO = Decimal(0)


class BudgetExceeded(Exception):
    """An admission a project's limit refuses; ``limit_kind`` is ``"gpus"`` or ``"usd"``."""

    def __init__(self, message: str, limit_kind: str) -> None:
        super().__init__(message)
        self.message = message
        self.limit_kind = limit_kind


class ProjectConflict(ValueError):
    """A project name already taken in the organization."""


class ProjectInvalid(ValueError):
    """A project name or limit that breaks a rule; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class ProjectNotFound(LookupError):
    """No such project in the caller's organization."""


@dataclass(frozen=True, slots=True)
class ProjectUsage:
    """What a project uses now: GPUs held by unfinished workloads, USD spent this UTC month."""

    gpus_in_use: int
    spent_usd_this_month: Decimal


def month_start(now: datetime) -> datetime:
    """Midnight UTC on the first day of ``now``'s UTC month."""
    utc = now.astimezone(UTC)
    return datetime(utc.year, utc.month, 1, tzinfo=UTC)


def gpus_in_use(session: Session, project_id: str) -> int:
    """GPUs of the project's workloads in a non-terminal state."""
    total = session.scalar(
        select(func.coalesce(func.sum(WorkloadRow.gpus_per_node * WorkloadRow.nodes), 0)).where(
            WorkloadRow.project_id == project_id,
            WorkloadRow.state.not_in([s.value for s in TERMINAL]),
        )
    )
    return int(total or 0)


def spent_this_month(session: Session, project_id: str, now: datetime) -> Decimal:
    """USD the project's instances cost this UTC month up to ``now`` (see the module docstring)."""
    start = month_start(now)
    spent = instance_spend(session, project_id=project_id, start=start, end=now)
    requested = session.execute(
        select(InstanceRow.price_per_hour, InstanceRow.created_at).where(
            InstanceRow.project_id == project_id,
            InstanceRow.launched_at.is_(None),
            InstanceRow.ended_at.is_(None),
            InstanceRow.commitment_id.is_(None),
            InstanceRow.created_at < now,
        )
    ).all()
    spent += sum((price * hours(now - max(created, start)) for price, created in requested), _ZERO)
    return spent.quantize(SPEND_QUANTUM, rounding=ROUND_HALF_EVEN)


def project_usage(session: Session, project_id: str, now: datetime) -> ProjectUsage:
    """The project's GPUs in use and spend this month (see the module docstring for the rules)."""
    return ProjectUsage(gpus_in_use(session, project_id), spent_this_month(session, project_id, now))


class ProjectLimits(Protocol):
    """What admission reads of a project: a ``Project`` row, or a plain SQL row with these columns."""

    @property
    def name(self) -> str: ...
    @property
    def max_gpus(self) -> int | None: ...
    @property
    def max_usd_per_month(self) -> Decimal | None: ...


def judge_admission(
    project: ProjectLimits, usage: ProjectUsage, gpus: int, worst_case_usd: Decimal | None
) -> None:
    """Raise :class:`BudgetExceeded` when admitting ``gpus`` more GPUs (and up to ``worst_case_usd``
    more spend) on top of ``usage`` would break one of ``project``'s limits (pure)."""
    if project.max_gpus is not None and usage.gpus_in_use + gpus > project.max_gpus:
        raise BudgetExceeded(
            f"project {project.name!r} allows {project.max_gpus} GPUs at once; "
            f"{usage.gpus_in_use} are in use and this needs {gpus} more",
            "gpus",
        )
    limit = project.max_usd_per_month
    if limit is not None:
        if usage.spent_usd_this_month >= limit:
            raise BudgetExceeded(
                f"project {project.name!r} has spent ${usage.spent_usd_this_month} of its "
                f"${limit} monthly budget",
                "usd",
            )
        if worst_case_usd is not None and usage.spent_usd_this_month + worst_case_usd > limit:
            raise BudgetExceeded(
                f"project {project.name!r} has ${limit - usage.spent_usd_this_month} left of its ${limit} "
                f"monthly budget; this may cost up to ${worst_case_usd}",
                "usd",
            )


def check_admission(
    session: Session, project: Project, gpus: int, worst_case_usd: Decimal | None, now: datetime
) -> ProjectUsage | None:
    """Admit ``gpus`` more GPUs (and at most ``worst_case_usd`` more spend) into ``project``, or raise
    :class:`BudgetExceeded`.

    Refused when GPUs in use + ``gpus`` > ``max_gpus``; when this month's spend has reached
    ``max_usd_per_month``; or when spend + ``worst_case_usd`` would pass it. With a limit set the
    project row is locked first (``FOR UPDATE``, its limits re-read), so concurrent admissions
    see each other's workloads: call this before inserting the workload, in the same transaction.
    Returns the usage the decision was made on, or None for a project without limits (nothing is
    counted then: on the submission path that is a third of the work)."""
    if project.max_gpus is None and project.max_usd_per_month is None:
        return None
    session.refresh(project, with_for_update=True)
    usage = project_usage(session, project.id, now)
    judge_admission(project, usage, gpus, worst_case_usd)
    return usage


def budget_for(session: Session, project: Project, now: datetime) -> Budget:
    """The project's limits and usage as the placement core's ``Budget`` (``project`` = its id)."""
    usage = project_usage(session, project.id, now)
    return Budget(
        project=project.id,
        max_gpus=project.max_gpus,
        gpus_in_use=usage.gpus_in_use,
        max_usd_per_month=project.max_usd_per_month,
        spent_usd_this_month=usage.spent_usd_this_month,
    )


# --- projects (admin) ------------------------------------------------------------------------------


def _check_limits(max_gpus: int | None, max_usd_per_month: Decimal | None) -> None:
    if max_gpus is not None and not 0 <= max_gpus <= MAX_PROJECT_GPUS:
        raise ProjectInvalid("max_gpus", f"max_gpus must be 0-{MAX_PROJECT_GPUS} or null")
    if max_usd_per_month is not None and (not max_usd_per_month.is_finite() or max_usd_per_month < 0):
        raise ProjectInvalid("max_usd_per_month", "max_usd_per_month must be a non-negative amount or null")


def list_projects(session: Session, org_id: str) -> list[Project]:
    return list(session.scalars(select(Project).where(Project.org_id == org_id).order_by(Project.name)))


def get_project(session: Session, org_id: str, name_or_id: str) -> Project:
    project = find_project(session, org_id, name_or_id)
    if project is None:
        raise ProjectNotFound(name_or_id)
    return project


def create_project(
    session: Session,
    org_id: str,
    name: str,
    now: datetime,
    *,
    max_gpus: int | None = None,
    max_usd_per_month: Decimal | None = None,
) -> Project:
    """A new project (:class:`ProjectConflict` when the organization has one of that name)."""
    if not PROJECT_NAME.fullmatch(name):
        raise ProjectInvalid("name", "a project name is 1-100 characters of A-Z a-z 0-9 . _ -")
    _check_limits(max_gpus, max_usd_per_month)
    if find_project(session, org_id, name) is not None:
        raise ProjectConflict(f"a project named {name!r} already exists")
    project = Project(
        id=new_id("prj"),
        org_id=org_id,
        name=name,
        max_gpus=max_gpus,
        max_usd_per_month=max_usd_per_month,
        created_at=now,
    )
    try:
        with session.begin_nested():  # a concurrent create of the same name: keep the transaction usable
            session.add(project)
    except IntegrityError as exc:
        raise ProjectConflict(f"a project named {name!r} already exists") from exc
    return project


class _Unchanged(enum.Enum):
    UNCHANGED = "unchanged"


UNCHANGED = _Unchanged.UNCHANGED


def update_project_limits(
    session: Session,
    org_id: str,
    name_or_id: str,
    *,
    max_gpus: int | _Unchanged | None = UNCHANGED,
    max_usd_per_month: Decimal | _Unchanged | None = UNCHANGED,
) -> Project:
    """Set (or clear, with None) a project's limits; a limit not passed stays as it is."""
    project = get_project(session, org_id, name_or_id)
    new_gpus = project.max_gpus if max_gpus is UNCHANGED else max_gpus
    new_usd = project.max_usd_per_month if max_usd_per_month is UNCHANGED else max_usd_per_month
    if new_gpus is not None and not isinstance(new_gpus, int):
        raise ProjectInvalid("max_gpus", "max_gpus must be an integer or null")
    if new_usd is not None and not isinstance(new_usd, Decimal):
        raise ProjectInvalid("max_usd_per_month", "max_usd_per_month must be an amount or null")
    _check_limits(new_gpus, new_usd)
    project.max_gpus = new_gpus
    project.max_usd_per_month = new_usd
    session.flush()
    return project


__all__ = [
    "MAX_PROJECT_GPUS",
    "UNCHANGED",
    "BudgetExceeded",
    "ProjectConflict",
    "ProjectInvalid",
    "ProjectNotFound",
    "ProjectUsage",
    "budget_for",
    "check_admission",
    "create_project",
    "get_project",
    "gpus_in_use",
    "judge_admission",
    "list_projects",
    "month_start",
    "project_usage",
    "spent_this_month",
    "update_project_limits",
]
