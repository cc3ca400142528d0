"""Alembic schema migrations: upgrade from empty, downgrade, and agree with the ORM models."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from broker.db import (
    fleet,  # noqa: F401  (the fleet tables)
    schema,
)
from broker.db.engine import make_engine
from broker.db.models import Base


def test_upgrade_from_empty_then_downgrade_and_again(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    try:
        assert schema.current_revision(engine) is None
        schema.upgrade(engine)
        assert schema.current_revision(engine) == schema.head_revision()
        assert {"price_snapshot", "price_snapshot_cloud", "offer_price"} <= set(
            inspect(engine).get_table_names()
        )
        schema.upgrade(engine)  # idempotent
        with engine.begin() as conn:
            command.downgrade(schema.alembic_config(conn), "base")
        assert "offer_price" not in inspect(engine).get_table_names()
        schema.upgrade(engine)
        assert schema.current_revision(engine) == schema.head_revision()
    finally:
        engine.dispose()


def test_models_and_migrations_agree(shared_engine) -> None:
    with shared_engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diffs == []
