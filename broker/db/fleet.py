"""ORM models of the fleet: tenants, workloads, instances, the command outbox, commitments,
utilization and cost records (declarations only, no I/O).

Every tenant-owned row carries ``org_id`` and every query a route runs filters on it: that one
column is what keeps an API key inside its organization. Money is NUMERIC; times are
``timestamptz``; states are text guarded by CHECK constraints that list the enum's values.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from broker.db.models import CAPACITY_TYPES, Base

ROLES = ("viewer", "operator", "admin")
WORKLOAD_STATES = (
    "PENDING",
    "PLACING",
    "PROVISIONING",
    "RUNNING",
    "MIGRATING",
    "SUCCEEDED",
    "FAILED",
    "CANCELLED",
)
INSTANCE_STATES = (
    "requested",  # the launch intent is committed; the provider may or may not have it yet
    "pending",
    "running",
    "terminating",
    "terminated",
    "preempted",
    "failed",
    "lost",  # the provider no longer lists it and we did not end it
)
COMMAND_KINDS = ("launch", "wait-for-checkpoint", "cut-over", "terminate")
COMMAND_STATES = ("pending", "running", "done", "failed", "cancelled")
COMMITMENT_KINDS = ("reserved-instance", "capacity-block", "savings-plan", "neocloud-contract")


def _in(values: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


class Organization(Base):
    """A tenant. API keys, projects and everything they own belong to exactly one."""

    __tablename__ = "organization"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Project(Base):
    """A team's slice of an organization, with its limits: GPUs at once and dollars per month."""

    __tablename__ = "project"
    __table_args__ = (
        UniqueConstraint("org_id", "name", name="uq_project_org_id_name"),
        CheckConstraint("max_gpus IS NULL OR max_gpus >= 0", name="max_gpus_non_negative"),
        CheckConstraint("max_usd_per_month IS NULL OR max_usd_per_month >= 0", name="max_usd_non_negative"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    org_id: Mapped[str] = mapped_column(Text, ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(Text)
    max_gpus: Mapped[int | None] = mapped_column(Integer)
    max_usd_per_month: Mapped[Decimal | None] = mapped_column(Numeric)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ApiKey(Base):
    """An API key: only a SHA-256 of its secret is stored; the secret is shown once, at creation."""

    __tablename__ = "api_key"
    __table_args__ = (CheckConstraint(f"role IN {_in(ROLES)}", name="role_known"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    org_id: Mapped[str] = mapped_column(Text, ForeignKey("organization.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(Text)
    secret_sha256: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WorkloadRow(Base):
    """A provisioning request and where it stands. ``spec`` keeps the request as submitted."""

    __tablename__ = "workload"
    __table_args__ = (
        CheckConstraint(f"state IN {_in(WORKLOAD_STATES)}", name="state_known"),
        CheckConstraint("gpus_per_node > 0 AND nodes > 0", name="shape_positive"),
        Index("ix_workload_org_created", "org_id", text("created_at DESC"), text("id DESC")),
        # The scheduler's queue: only workloads that need it are in this index.
        Index(
            "ix_workload_queue",
            "state",
            "next_attempt_at",
            postgresql_where=text("state IN ('PENDING', 'PLACING')"),
        ),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    org_id: Mapped[str] = mapped_column(Text, ForeignKey("organization.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(Text, ForeignKey("project.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, server_default="PENDING")
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    gpus_per_node: Mapped[int] = mapped_column(Integer)
    nodes: Mapped[int] = mapped_column(Integer)
    labels: Mapped[dict[str, str]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSONB)  # where it runs (or is going)
    wait_reason: Mapped[str | None] = mapped_column(Text)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    generation: Mapped[int] = mapped_column(Integer, server_default="0")  # committed migration plans
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")  # placements tried in a row
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    history: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    state_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WorkloadEvent(Base):
    """The audit trail: one row per state transition and per notable thing that happened."""

    __tablename__ = "workload_event"
    __table_args__ = (
        Index("ix_workload_event_workload", "workload_id", "id"),
        Index("ix_workload_event_kind", "kind"),  # /metrics counts placements, launches, ... by kind
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    workload_id: Mapped[str] = mapped_column(Text, ForeignKey("workload.id", ondelete="CASCADE"))
    org_id: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(Text)
    from_state: Mapped[str | None] = mapped_column(Text)
    to_state: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text, server_default="")
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class InstanceRow(Base):
    """One instance we asked a provider for. Its id is ours (the launch command's key) and is the
    provider-side idempotency key, so the row can exist before the provider call."""

    __tablename__ = "instance"
    __table_args__ = (
        CheckConstraint(f"state IN {_in(INSTANCE_STATES)}", name="state_known"),
        CheckConstraint(f"capacity_type IN {CAPACITY_TYPES!r}", name="capacity_type_known"),
        Index("ix_instance_provider_state", "provider", "state"),
        Index("ix_instance_org_created", "org_id", text("created_at DESC"), text("id DESC")),
        Index("ix_instance_workload", "workload_id"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    org_id: Mapped[str] = mapped_column(Text, ForeignKey("organization.id", ondelete="CASCADE"))
    project_id: Mapped[str] = mapped_column(Text, ForeignKey("project.id", ondelete="CASCADE"))
    workload_id: Mapped[str] = mapped_column(Text, ForeignKey("workload.id", ondelete="CASCADE"))
    generation: Mapped[int] = mapped_column(Integer, server_default="0")
    node_index: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    provider: Mapped[str] = mapped_column(Text)
    provider_instance_id: Mapped[str | None] = mapped_column(Text)
    region: Mapped[str] = mapped_column(Text)
    zone: Mapped[str | None] = mapped_column(Text)
    instance_type: Mapped[str] = mapped_column(Text)
    accelerator: Mapped[str] = mapped_column(Text)
    gpus: Mapped[int] = mapped_column(Integer)
    capacity_type: Mapped[str] = mapped_column(Text)
    price_per_hour: Mapped[Decimal] = mapped_column(Numeric)
    commitment_id: Mapped[str | None] = mapped_column(Text)
    reservation_id: Mapped[str | None] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, server_default="requested")
    state_reason: Mapped[str | None] = mapped_column(Text)
    notice_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    serving: Mapped[bool] = mapped_column(Boolean, server_default="false")  # the workload runs here
    launched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CommandRow(Base):
    """The command outbox: what the scheduler decided and an executor must do, in ``plan`` order.

    A command is claimed with ``FOR UPDATE SKIP LOCKED``; ``lease_until`` lets another replica
    take over one whose executor died mid-call (the call is idempotent by ``idempotency_key``).
    """

    __tablename__ = "command"
    __table_args__ = (
        CheckConstraint(f"kind IN {_in(COMMAND_KINDS)}", name="kind_known"),
        CheckConstraint(f"state IN {_in(COMMAND_STATES)}", name="state_known"),
        UniqueConstraint("idempotency_key", name="uq_command_idempotency_key"),
        Index(
            "ix_command_ready",
            "not_before",
            "id",
            postgresql_where=text("state IN ('pending', 'running')"),
        ),
        Index("ix_command_plan", "plan_id", "seq"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(Text)
    plan_id: Mapped[str] = mapped_column(Text)
    seq: Mapped[int] = mapped_column(SmallInteger)
    org_id: Mapped[str] = mapped_column(Text)
    workload_id: Mapped[str] = mapped_column(Text, ForeignKey("workload.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(Text, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CommitmentRow(Base):
    """A reserved-capacity contract the organization has paid for (or will pay for regardless)."""

    __tablename__ = "commitment"
    __table_args__ = (
        CheckConstraint(f"kind IN {_in(COMMITMENT_KINDS)}", name="kind_known"),
        CheckConstraint("gpu_count > 0", name="gpu_count_positive"),
        CheckConstraint("price_per_gpu_hour >= 0", name="price_non_negative"),
        CheckConstraint("ends_at > starts_at", name="ends_after_start"),
        Index("ix_commitment_org", "org_id", "ends_at"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    org_id: Mapped[str] = mapped_column(Text, ForeignKey("organization.id", ondelete="CASCADE"))
    project_id: Mapped[str | None] = mapped_column(Text, ForeignKey("project.id", ondelete="SET NULL"))
    name: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(Text)
    region: Mapped[str] = mapped_column(Text)
    zone: Mapped[str | None] = mapped_column(Text)
    accelerator: Mapped[str] = mapped_column(Text)
    instance_type: Mapped[str | None] = mapped_column(Text)
    gpu_count: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(Text)
    starts_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    ends_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    price_per_gpu_hour: Mapped[Decimal] = mapped_column(Numeric)
    reservation_id: Mapped[str | None] = mapped_column(Text)  # the provider's id to launch into
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UtilizationSample(Base):
    """One GPU's reading at one instant, as the node agent posted it (a repost is ignored)."""

    __tablename__ = "utilization_sample"
    __table_args__ = (
        CheckConstraint("gpu_util_pct BETWEEN 0 AND 100", name="util_in_range"),
        Index("ix_utilization_sample_org_at", "org_id", "at"),
    )

    instance_id: Mapped[str] = mapped_column(
        Text, ForeignKey("instance.id", ondelete="CASCADE"), primary_key=True
    )
    gpu_index: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    org_id: Mapped[str] = mapped_column(Text)
    gpu_util_pct: Mapped[Decimal] = mapped_column(Numeric)
    memory_used_mib: Mapped[int | None] = mapped_column(Integer)
    memory_total_mib: Mapped[int | None] = mapped_column(Integer)
    power_watts: Mapped[Decimal | None] = mapped_column(Numeric)


class CostRecord(Base):
    """What one instance cost on one UTC day: rolled up from its run interval, recomputed idempotently."""

    __tablename__ = "cost_record"
    __table_args__ = (Index("ix_cost_record_org_day", "org_id", "day"),)

    instance_id: Mapped[str] = mapped_column(
        Text, ForeignKey("instance.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    org_id: Mapped[str] = mapped_column(Text)
    project_id: Mapped[str] = mapped_column(Text)
    workload_id: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(Text)
    region: Mapped[str] = mapped_column(Text)
    capacity_type: Mapped[str] = mapped_column(Text)
    commitment_id: Mapped[str | None] = mapped_column(Text)
    accelerator: Mapped[str | None] = mapped_column(Text)
    instance_type: Mapped[str | None] = mapped_column(Text)
    gpu_hours: Mapped[Decimal] = mapped_column(Numeric)
    usd: Mapped[Decimal] = mapped_column(Numeric)
    ondemand_usd: Mapped[Decimal | None] = mapped_column(Numeric)  # the on-demand counterfactual
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CostReport(Base):
    """One organization's nightly cost report for one day (in ``timezone``): numbers, HTML and CSV."""

    __tablename__ = "cost_report"

    org_id: Mapped[str] = mapped_column(
        Text, ForeignKey("organization.id", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    timezone: Mapped[str] = mapped_column(Text)
    generated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    html: Mapped[str] = mapped_column(Text)
    csv: Mapped[str] = mapped_column(Text)
    delivery: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class IdempotentRequest(Base):
    """A POST made with an ``Idempotency-Key``: the request's fingerprint and the response given."""

    __tablename__ = "idempotent_request"

    org_id: Mapped[str] = mapped_column(
        Text, ForeignKey("organization.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    method_path: Mapped[str] = mapped_column(Text)
    request_sha256: Mapped[str] = mapped_column(Text)
    status_code: Mapped[int] = mapped_column(SmallInteger)
    response_body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


__all__ = [
    "COMMAND_KINDS",
    "COMMAND_STATES",
    "COMMITMENT_KINDS",
    "INSTANCE_STATES",
    "ROLES",
    "WORKLOAD_STATES",
    "ApiKey",
    "CommandRow",
    "CommitmentRow",
    "CostRecord",
    "CostReport",
    "IdempotentRequest",
    "InstanceRow",
    "Organization",
    "Project",
    "UtilizationSample",
    "WorkloadEvent",
    "WorkloadRow",
]
