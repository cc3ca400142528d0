"""The fleet: organizations, projects, API keys, workloads and their events, instances, the command
outbox, commitments, utilization samples, cost records and idempotent requests.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "organization",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organization")),
        sa.UniqueConstraint("name", name=op.f("uq_organization_name")),
    )
    op.create_table(
        "api_key",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("secret_sha256", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('viewer', 'operator', 'admin')", name=op.f("ck_api_key_role_known")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_api_key_org_id_organization"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
    )
    op.create_index(op.f("ix_api_key_org_id"), "api_key", ["org_id"], unique=False)
    op.create_table(
        "idempotent_request",
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("method_path", sa.Text(), nullable=False),
        sa.Column("request_sha256", sa.Text(), nullable=False),
        sa.Column("status_code", sa.SmallInteger(), nullable=False),
        sa.Column("response_body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organization.id"],
            name=op.f("fk_idempotent_request_org_id_organization"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("org_id", "key", name=op.f("pk_idempotent_request")),
    )
    op.create_table(
        "project",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("max_gpus", sa.Integer(), nullable=True),
        sa.Column("max_usd_per_month", sa.Numeric(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "max_gpus IS NULL OR max_gpus >= 0", name=op.f("ck_project_max_gpus_non_negative")
        ),
        sa.CheckConstraint(
            "max_usd_per_month IS NULL OR max_usd_per_month >= 0",
            name=op.f("ck_project_max_usd_non_negative"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_project_org_id_organization"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_project")),
        sa.UniqueConstraint("org_id", "name", name="uq_project_org_id_name"),
    )
    op.create_index(op.f("ix_project_org_id"), "project", ["org_id"], unique=False)
    op.create_table(
        "commitment",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("project_id", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("zone", sa.Text(), nullable=True),
        sa.Column("accelerator", sa.Text(), nullable=False),
        sa.Column("instance_type", sa.Text(), nullable=True),
        sa.Column("gpu_count", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("price_per_gpu_hour", sa.Numeric(), nullable=False),
        sa.Column("reservation_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "kind IN ('reserved-instance', 'capacity-block', 'savings-plan', 'neocloud-contract')",
            name=op.f("ck_commitment_kind_known"),
        ),
        sa.CheckConstraint("ends_at > starts_at", name=op.f("ck_commitment_ends_after_start")),
        sa.CheckConstraint("gpu_count > 0", name=op.f("ck_commitment_gpu_count_positive")),
        sa.CheckConstraint("price_per_gpu_hour >= 0", name=op.f("ck_commitment_price_non_negative")),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["organization.id"],
            name=op.f("fk_commitment_org_id_organization"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_commitment_project_id_project"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_commitment")),
    )
    op.create_index("ix_commitment_org", "commitment", ["org_id", "ends_at"], unique=False)
    op.create_table(
        "workload",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("project_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("state", sa.Text(), server_default="PENDING", nullable=False),
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("gpus_per_node", sa.Integer(), nullable=False),
        sa.Column("nodes", sa.Integer(), nullable=False),
        sa.Column(
            "labels",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("placement", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("wait_reason", sa.Text(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("generation", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "history",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('PENDING', 'PLACING', 'PROVISIONING', 'RUNNING', 'MIGRATING', "
            "'SUCCEEDED', 'FAILED', 'CANCELLED')",
            name=op.f("ck_workload_state_known"),
        ),
        sa.CheckConstraint("gpus_per_node > 0 AND nodes > 0", name=op.f("ck_workload_shape_positive")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_workload_org_id_organization"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_workload_project_id_project"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workload")),
    )
    op.create_index(
        "ix_workload_org_created",
        "workload",
        ["org_id", sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
        unique=False,
    )
    op.create_index(op.f("ix_workload_project_id"), "workload", ["project_id"], unique=False)
    op.create_index(
        "ix_workload_queue",
        "workload",
        ["state", "next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("state IN ('PENDING', 'PLACING')"),
    )
    op.create_table(
        "command",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("plan_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.SmallInteger(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("workload_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('launch', 'wait-for-checkpoint', 'cut-over', 'terminate')",
            name=op.f("ck_command_kind_known"),
        ),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'done', 'failed', 'cancelled')",
            name=op.f("ck_command_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["workload_id"], ["workload.id"], name=op.f("fk_command_workload_id_workload"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_command")),
        sa.UniqueConstraint("idempotency_key", name="uq_command_idempotency_key"),
    )
    op.create_index("ix_command_plan", "command", ["plan_id", "seq"], unique=False)
    op.create_index(
        "ix_command_ready",
        "command",
        ["not_before", "id"],
        unique=False,
        postgresql_where=sa.text("state IN ('pending', 'running')"),
    )
    op.create_table(
        "instance",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("project_id", sa.Text(), nullable=False),
        sa.Column("workload_id", sa.Text(), nullable=False),
        sa.Column("generation", sa.Integer(), server_default="0", nullable=False),
        sa.Column("node_index", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("provider_instance_id", sa.Text(), nullable=True),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("zone", sa.Text(), nullable=True),
        sa.Column("instance_type", sa.Text(), nullable=False),
        sa.Column("accelerator", sa.Text(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("capacity_type", sa.Text(), nullable=False),
        sa.Column("price_per_hour", sa.Numeric(), nullable=False),
        sa.Column("commitment_id", sa.Text(), nullable=True),
        sa.Column("reservation_id", sa.Text(), nullable=True),
        sa.Column("state", sa.Text(), server_default="requested", nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("notice_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("serving", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("launched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "capacity_type IN ('on-demand', 'spot', 'reserved')", name=op.f("ck_instance_capacity_type_known")
        ),
        sa.CheckConstraint(
            "state IN ('requested', 'pending', 'running', 'terminating', 'terminated', "
            "'preempted', 'failed', 'lost')",
            name=op.f("ck_instance_state_known"),
        ),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organization.id"], name=op.f("fk_instance_org_id_organization"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"], ["project.id"], name=op.f("fk_instance_project_id_project"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["workload_id"],
            ["workload.id"],
            name=op.f("fk_instance_workload_id_workload"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance")),
    )
    op.create_index(
        "ix_instance_org_created",
        "instance",
        ["org_id", sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
        unique=False,
    )
    op.create_index("ix_instance_provider_state", "instance", ["provider", "state"], unique=False)
    op.create_index("ix_instance_workload", "instance", ["workload_id"], unique=False)
    op.create_table(
        "workload_event",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("workload_id", sa.Text(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("from_state", sa.Text(), nullable=True),
        sa.Column("to_state", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "data",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["workload_id"],
            ["workload.id"],
            name=op.f("fk_workload_event_workload_id_workload"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workload_event")),
    )
    op.create_index("ix_workload_event_kind", "workload_event", ["kind"], unique=False)
    op.create_index("ix_workload_event_workload", "workload_event", ["workload_id", "id"], unique=False)
    op.create_table(
        "cost_record",
        sa.Column("instance_id", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("project_id", sa.Text(), nullable=False),
        sa.Column("workload_id", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("region", sa.Text(), nullable=False),
        sa.Column("capacity_type", sa.Text(), nullable=False),
        sa.Column("commitment_id", sa.Text(), nullable=True),
        sa.Column("gpu_hours", sa.Numeric(), nullable=False),
        sa.Column("usd", sa.Numeric(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instance.id"],
            name=op.f("fk_cost_record_instance_id_instance"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", "day", name=op.f("pk_cost_record")),
    )
    op.create_index("ix_cost_record_org_day", "cost_record", ["org_id", "day"], unique=False)
    op.create_table(
        "utilization_sample",
        sa.Column("instance_id", sa.Text(), nullable=False),
        sa.Column("gpu_index", sa.SmallInteger(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("org_id", sa.Text(), nullable=False),
        sa.Column("gpu_util_pct", sa.Numeric(), nullable=False),
        sa.Column("memory_used_mib", sa.Integer(), nullable=True),
        sa.Column("memory_total_mib", sa.Integer(), nullable=True),
        sa.Column("power_watts", sa.Numeric(), nullable=True),
        sa.CheckConstraint(
            "gpu_util_pct BETWEEN 0 AND 100", name=op.f("ck_utilization_sample_util_in_range")
        ),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instance.id"],
            name=op.f("fk_utilization_sample_instance_id_instance"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("instance_id", "gpu_index", "at", name=op.f("pk_utilization_sample")),
    )
    op.create_index("ix_utilization_sample_org_at", "utilization_sample", ["org_id", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_utilization_sample_org_at", table_name="utilization_sample")
    op.drop_table("utilization_sample")
    op.drop_index("ix_cost_record_org_day", table_name="cost_record")
    op.drop_table("cost_record")
    op.drop_index("ix_workload_event_kind", table_name="workload_event")
    op.drop_index("ix_workload_event_workload", table_name="workload_event")
    op.drop_table("workload_event")
    op.drop_index("ix_instance_workload", table_name="instance")
    op.drop_index("ix_instance_provider_state", table_name="instance")
    op.drop_index("ix_instance_org_created", table_name="instance")
    op.drop_table("instance")
    op.drop_index(
        "ix_command_ready", table_name="command", postgresql_where=sa.text("state IN ('pending', 'running')")
    )
    op.drop_index("ix_command_plan", table_name="command")
    op.drop_table("command")
    op.drop_index(
        "ix_workload_queue",
        table_name="workload",
        postgresql_where=sa.text("state IN ('PENDING', 'PLACING')"),
    )
    op.drop_index(op.f("ix_workload_project_id"), table_name="workload")
    op.drop_index("ix_workload_org_created", table_name="workload")
    op.drop_table("workload")
    op.drop_index("ix_commitment_org", table_name="commitment")
    op.drop_table("commitment")
    op.drop_index(op.f("ix_project_org_id"), table_name="project")
    op.drop_table("project")
    op.drop_table("idempotent_request")
    op.drop_index(op.f("ix_api_key_org_id"), table_name="api_key")
    op.drop_table("api_key")
    op.drop_table("organization")
