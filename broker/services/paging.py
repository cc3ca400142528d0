"""Keyset pagination shared by every list endpoint: newest first by ``(created_at, id)``, with an
opaque cursor (no I/O; builds SQL expressions only)."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, tuple_

T = TypeVar("T")


class InvalidCursor(ValueError):
    """A ``cursor`` that is not one this server handed out."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, newest first; ``next_cursor`` fetches the next one (None: this was the last)."""

    items: list[T]
    next_cursor: str | None


def encode_cursor(created_at: datetime, ident: str) -> str:
    raw = json.dumps([created_at.isoformat(), ident], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The ``(created_at, id)`` a cursor points after; :class:`InvalidCursor` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, ident = json.loads(raw)
        at = datetime.fromisoformat(created)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursor("the cursor is not valid; pass next_cursor from the previous page") from exc
    if not isinstance(ident, str) or at.tzinfo is None:
        raise InvalidCursor("the cursor is not valid; pass next_cursor from the previous page")
    return at, ident


def after_cursor(created_at: Any, ident: Any, cursor: str | None) -> ColumnElement[bool] | None:
    """The WHERE clause for "older than the cursor" in ``ORDER BY created_at DESC, id DESC``."""
    if cursor is None:
        return None
    at, last_id = decode_cursor(cursor)
    return tuple_(created_at, ident) < tuple_(at, last_id)


def page_of(rows: Sequence[T], limit: int, key: Any) -> tuple[list[T], str | None]:
    """Split ``limit + 1`` fetched rows into a page and the cursor for the next (``key(row)`` gives
    ``(created_at, id)``)."""
    items = list(rows[:limit])
    if len(rows) <= limit or not items:
        return items, None
    created_at, ident = key(items[-1])
    return items, encode_cursor(created_at, ident)


__all__ = ["InvalidCursor", "Page", "after_cursor", "decode_cursor", "encode_cursor", "page_of"]
