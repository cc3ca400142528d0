"""API test fixtures: an app on a fresh database, and tenants with a key of each role."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from broker.db.engine import Database
from broker.services.tenancy import Role, create_api_key, create_org

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Tenant:
    """An organization and one key per role; ``headers(role)`` authenticates a request."""

    org_id: str
    keys: dict[Role, str]

    def headers(self, role: Role = Role.OPERATOR) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}

    @property
    def viewer(self) -> dict[str, str]:
        return self.headers(Role.VIEWER)

    @property
    def operator(self) -> dict[str, str]:
        return self.headers(Role.OPERATOR)

    @property
    def admin(self) -> dict[str, str]:
        return self.headers(Role.ADMIN)


def make_tenant(database: Database, name: str) -> Tenant:
    with database.sessions.begin() as session:
        org = create_org(session, name, NOW)
        keys = {role: create_api_key(session, org.id, f"{role}-key", role, NOW).secret for role in Role}
    return Tenant(org.id, keys)


@pytest.fixture
def tenant(database: Database) -> Tenant:
    return make_tenant(database, "acme")


@pytest.fixture
def other_tenant(database: Database) -> Tenant:
    return make_tenant(database, "globex")


@pytest.fixture
def client(database: Database) -> Iterator[TestClient]:
    """An API client (no key: pass ``headers=tenant.viewer`` etc.), clock fixed at ``NOW``."""
    with TestClient(create_app(database, clock=lambda: NOW)) as c:
        yield c
