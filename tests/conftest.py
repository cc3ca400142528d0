"""Test fixtures: one real embedded PostgreSQL per test session; each test isolated.

* ``session``: a SQLAlchemy session in a transaction that is rolled back after the test.
* ``database``: a database of its own, cloned from a migrated template (for the API and CLI,
  whose code commits).
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from broker.db import schema
from broker.db.embedded import EmbeddedPostgres, server_pid
from broker.db.engine import Database, make_engine
from broker.services.catalog import load_bundled_snapshot

# No test may reach a cloud metadata endpoint (169.254.169.254): credential chains that fall back
# to it are told not to, for this process and the gpubroker processes the tests start.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["NO_GCE_CHECK"] = "True"

TEMPLATE = "gpubroker_template"
_counter = itertools.count()


def _url(admin_url: str, database: str) -> str:
    """Swap the database name in an embedded-server URL (``...@/postgres?host=...``)."""
    head, _, query = admin_url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{database}?{query}"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "pgdata", database="gpubroker_test")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def template_url(pg_server: EmbeddedPostgres) -> str:
    """A database migrated to head with the bundled price snapshot loaded."""
    admin = pg_server.admin_url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    url = _url(admin, TEMPLATE).replace("postgresql://", "postgresql+psycopg://", 1)
    engine = make_engine(url)
    schema.upgrade(engine)
    with sessionmaker(engine).begin() as session:
        load_bundled_snapshot(session)
    engine.dispose()
    return url


def _clone(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(TEMPLATE))
        )
    return _url(admin_url, name).replace("postgresql://", "postgresql+psycopg://", 1)


def _drop(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def shared_engine(pg_server: EmbeddedPostgres, template_url: str) -> Iterator[Engine]:
    """An engine on a clone of the template shared by the rolled-back ``session`` tests.

    (The template itself must stay free of connections, or it cannot be cloned.)"""
    engine = make_engine(_clone(pg_server.admin_url(), "gpubroker_shared"))
    yield engine
    engine.dispose()


@pytest.fixture
def session(shared_engine: Engine) -> Iterator[Session]:
    """A session whose every change (commits included) is rolled back after the test."""
    with shared_engine.connect() as conn:
        outer = conn.begin()
        s = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield s
        finally:
            s.close()
            outer.rollback()


@pytest.fixture
def database_url(pg_server: EmbeddedPostgres, template_url: str) -> Iterator[str]:
    """The URL of a fresh database cloned from the template, dropped after the test."""
    name = f"gpubroker_t{os.getpid()}_{next(_counter)}"
    yield _clone(pg_server.admin_url(), name)
    _drop(pg_server.admin_url(), name)


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    engine = make_engine(database_url)
    yield Database(engine=engine, sessions=sessionmaker(engine, expire_on_commit=False), embedded=None)
    engine.dispose()


@pytest.fixture
def empty_database_url(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A fresh, empty database (no schema), dropped after the test."""
    name = f"gpubroker_e{os.getpid()}_{next(_counter)}"
    admin = pg_server.admin_url()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _url(admin, name).replace("postgresql://", "postgresql+psycopg://", 1)
    _drop(admin, name)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "home"
    pgdata = tmp_path / "home" / "pgdata"
    pid = server_pid(pgdata) if pgdata.exists() else None
    if pid is not None:  # never leave a server behind, whatever the test did
        os.kill(pid, signal.SIGTERM)
