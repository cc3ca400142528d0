"""Fixtures of the node agent's tests: a tenant and clients on the real API (a database), and the
agent's log level put back after each test."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from broker.db.engine import Database
from tests.api.conftest import NOW, Tenant, make_tenant


@pytest.fixture(autouse=True)
def _agent_log_level() -> Iterator[None]:
    """The command sets its logger's level; put it back so tests do not leak it into each other."""
    logger = logging.getLogger("broker.agent")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture
def tenant(database: Database) -> Tenant:
    return make_tenant(database, "acme")


@pytest.fixture
def api(database: Database) -> Iterator[Callable[[dict[str, str]], TestClient]]:
    """TestClients on the real API (clock fixed at NOW), one per set of auth headers."""
    clients: list[TestClient] = []

    def make(headers: dict[str, str]) -> TestClient:
        client = TestClient(create_app(database, clock=lambda: NOW), headers=headers)
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()
