"""Bringing a database up to date before use: schema migrations, then the bundled prices (does I/O)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sqlalchemy import func, select

from broker.clock import utc_now
from broker.db import schema
from broker.db.engine import Database
from broker.db.fleet import Organization
from broker.db.locks import xact_lock
from broker.services.catalog import load_bundled_snapshot
from broker.services.tenancy import Role, create_api_key, create_org
from broker.settings import Settings

_log = logging.getLogger(__name__)


def prepare_database(database: Database, settings: Settings) -> None:
    """Apply schema migrations and, unless disabled, store the bundled price snapshot once.

    Serialised across processes by a session advisory lock: replicas starting together (docker
    compose) would otherwise race on the schema upgrade and the snapshot's unique hash."""
    with database.engine.connect() as lock:
        key = func.hashtext("gpubroker:prepare")
        lock.execute(select(func.pg_advisory_lock(key)))
        try:
            _prepare(database, settings)
        finally:
            lock.execute(select(func.pg_advisory_unlock(key)))
            lock.commit()


def _prepare(database: Database, settings: Settings) -> None:
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


BOOTSTRAP_ORG = "default"
BOOTSTRAP_KEY_FILE = "admin-key"


def ensure_bootstrap_key(database: Database, settings: Settings) -> Path | None:
    """On a database without organizations, create ``default`` and an admin key for it.

    The key goes to ``$GPUBROKER_HOME/admin-key`` (mode 0600) and nowhere else: not to the log,
    not to the terminal. Returns the file's path when a key was made, else None. Two processes
    starting at once cannot both make one: the organization's unique name decides.
    """
    with database.sessions.begin() as session:
        if session.scalar(select(Organization.id).limit(1)) is not None:
            return None
        xact_lock(session, "gpubroker:bootstrap")
        if session.scalar(select(Organization.id).limit(1)) is not None:
            return None
        org = create_org(session, BOOTSTRAP_ORG, utc_now())
        issued = create_api_key(session, org.id, "bootstrap admin", Role.ADMIN, utc_now())
        settings.home.mkdir(parents=True, exist_ok=True)
        path = settings.home / BOOTSTRAP_KEY_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(issued.secret + "\n")
    _log.info("created organization %s and a bootstrap admin key in %s", BOOTSTRAP_ORG, path)
    return path
