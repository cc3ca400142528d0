"""Bringing a database up to date before use: schema migrations, then the bundled prices (does I/O)."""

from __future__ import annotations

import logging

from broker.db import schema
from broker.db.engine import Database
from broker.services.catalog import load_bundled_snapshot
from broker.settings import Settings

_log = logging.getLogger(__name__)


def prepare_database(database: Database, settings: Settings) -> None:
    """Apply schema migrations and, unless disabled, store the bundled price snapshot once."""
    before = schema.current_revision(database.engine)
    schema.upgrade(database.engine)
    after = schema.current_revision(database.engine)
    if after != before:
        _log.info("database schema upgraded from %s to %s", before or "(empty)", after)
    if settings.load_bundled_catalog:
        with database.sessions.begin() as session:
            record = load_bundled_snapshot(session)
        if record.created:
            _log.info("loaded bundled price snapshot %s (%d offers)", record.id, record.offer_count)
