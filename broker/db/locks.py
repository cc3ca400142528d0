"""Advisory locks: how one gpubroker process among several takes a job for a transaction (does I/O)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session


def try_xact_lock(session: Session, name: str) -> bool:
    """Take the transaction-scoped advisory lock ``name`` if no other session holds it (never waits)."""
    return bool(session.scalar(select(func.pg_try_advisory_xact_lock(func.hashtext(name)))))


def xact_lock(session: Session, name: str) -> None:
    """Take the transaction-scoped advisory lock ``name``, waiting for it."""
    session.execute(select(func.pg_advisory_xact_lock(func.hashtext(name))))


__all__ = ["try_xact_lock", "xact_lock"]
