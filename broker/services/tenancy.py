"""Organizations, projects and API keys: create them, and authenticate a key (does I/O).

A key is ``gpb_<id>_<secret>``. Only the SHA-256 of the secret is stored (the secret is 32
random bytes, so a fast hash is the right one: there is nothing to brute-force), and the full
key is returned once, by :func:`create_api_key`. Lookups go by the id, then the hash is compared
in constant time.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.db.fleet import ApiKey, Organization, Project

KEY_PREFIX = "gpb_"
DEFAULT_PROJECT = "default"


class Role(enum.StrEnum):
    """What a key may do: viewers read; operators also create, change and cancel; admins also
    manage projects, limits and keys."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def covers(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key and the one organization it may see."""

    key_id: str
    org_id: str
    role: Role


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: ``secret`` is the whole key, shown this once and never stored."""

    key_id: str
    org_id: str
    name: str
    role: Role
    secret: str
    created_at: datetime


class TenancyError(ValueError):
    """A tenancy request that cannot be carried out (duplicate name, unknown org, ...)."""


def new_id(prefix: str) -> str:
    """A random id with a readable prefix: ``wl_3f9c...`` (16 hex digits: 64 bits)."""
    return f"{prefix}_{secrets.token_hex(8)}"


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_org(session: Session, name: str, now: datetime) -> Organization:
    """A new organization with its ``default`` project."""
    name = name.strip()
    if not name or len(name) > 100:
        raise TenancyError("an organization name must be 1-100 characters")
    if session.scalar(select(Organization.id).where(Organization.name == name)) is not None:
        raise TenancyError(f"an organization named {name!r} already exists")
    org = Organization(id=new_id("org"), name=name, created_at=now)
    session.add(org)
    session.flush()
    session.add(Project(id=new_id("prj"), org_id=org.id, name=DEFAULT_PROJECT, created_at=now))
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent create with the same name
        raise TenancyError(f"an organization named {name!r} already exists") from exc
    return org


def find_org(session: Session, name_or_id: str) -> Organization | None:
    return session.scalar(
        select(Organization).where((Organization.id == name_or_id) | (Organization.name == name_or_id))
    )


def create_api_key(session: Session, org_id: str, name: str, role: Role, now: datetime) -> IssuedKey:
    if session.get(Organization, org_id) is None:
        raise TenancyError(f"no organization {org_id!r}")
    name = name.strip()
    if not name or len(name) > 100:
        raise TenancyError("a key name must be 1-100 characters")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    session.add(
        ApiKey(
            id=key_id,
            org_id=org_id,
            name=name,
            role=role.value,
            secret_sha256=_sha256(secret),
            created_at=now,
        )
    )
    session.flush()
    return IssuedKey(key_id, org_id, name, role, f"{KEY_PREFIX}{key_id}_{secret}", now)


def parse_key(presented: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` from a presented key, or None when it is not shaped like one of ours."""
    if not presented.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = presented[len(KEY_PREFIX) :].partition("_")
    if not sep or len(key_id) != 16 or not secret or len(secret) > 128:
        return None
    return key_id, secret


def authenticate(session: Session, presented: str) -> Principal | None:
    """The principal a key belongs to, or None for an unknown, malformed or revoked key."""
    parsed = parse_key(presented)
    if parsed is None:
        return None
    key_id, secret = parsed
    row = session.execute(
        select(ApiKey.org_id, ApiKey.role, ApiKey.secret_sha256, ApiKey.revoked_at).where(ApiKey.id == key_id)
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.secret_sha256, _sha256(secret)):
        return None
    return Principal(key_id=key_id, org_id=row.org_id, role=Role(row.role))


def revoke_api_key(session: Session, org_id: str, key_id: str, now: datetime) -> bool:
    """Revoke a key of ``org_id``; False when it has no such key (another org's is the same as none)."""
    row = session.get(ApiKey, key_id)
    if row is None or row.org_id != org_id:
        return False
    if row.revoked_at is None:
        row.revoked_at = now
    return True


def list_api_keys(session: Session, org_id: str) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).where(ApiKey.org_id == org_id).order_by(ApiKey.created_at)))


def find_project(session: Session, org_id: str, name_or_id: str) -> Project | None:
    """A project of ``org_id`` by name or id (never another organization's)."""
    return session.scalar(
        select(Project).where(
            Project.org_id == org_id, (Project.id == name_or_id) | (Project.name == name_or_id)
        )
    )


__all__ = [
    "DEFAULT_PROJECT",
    "KEY_PREFIX",
    "IssuedKey",
    "Principal",
    "Role",
    "TenancyError",
    "authenticate",
    "create_api_key",
    "create_org",
    "find_org",
    "find_project",
    "list_api_keys",
    "new_id",
    "parse_key",
    "revoke_api_key",
]
