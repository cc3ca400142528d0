"""Opening the database: DATABASE_URL when set, else the embedded PostgreSQL (does I/O).

No engine is created at import time; callers open one with :func:`open_database` and close
it when done, which also releases the embedded server.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from broker.db.embedded import EmbeddedPostgres
from broker.settings import Settings, sqlalchemy_url

_log = logging.getLogger(__name__)


@dataclass
class Database:
    """An open database: its engine, a session factory, and whether it is the embedded server."""

    engine: Engine
    sessions: sessionmaker[Session]
    embedded: EmbeddedPostgres | None

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def ping(self) -> None:
        """Raise if the database does not answer."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))


def make_engine(url: str) -> Engine:
    """The one engine factory: psycopg 3, pre-ping so a restarted server is survived."""
    return create_engine(sqlalchemy_url(url), pool_pre_ping=True, future=True)


@contextmanager
def open_database(settings: Settings) -> Iterator[Database]:
    """Open the configured database; start (and later stop) the embedded one when no URL is set."""
    embedded: EmbeddedPostgres | None = None
    if settings.database_url:
        url = settings.database_url
    else:
        embedded = EmbeddedPostgres(settings.pgdata)
        url = embedded.start()
        if embedded.recovered:
            _log.warning("recovered the embedded PostgreSQL after an unclean shutdown")
    engine = make_engine(url)
    try:
        yield Database(
            engine=engine, sessions=sessionmaker(engine, expire_on_commit=False), embedded=embedded
        )
    finally:
        engine.dispose()
        if embedded is not None:
            embedded.stop()
