"""API-key authentication and role checks, as FastAPI dependencies (reads the database).

A key comes as ``Authorization: Bearer gpb_...`` (or ``X-API-Key``). A verified key is cached
in-process for ``KEY_CACHE_SECONDS``, so a busy client costs one lookup per that interval, and a
revoked key stops working within it on every replica.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from api.errors import ApiProblem
from broker.services.tenancy import Principal, Role, authenticate
from web.session import SESSION_COOKIE

KEY_CACHE_SECONDS = 10.0
_CACHE_LIMIT = 10_000


class KeyCache:
    """Verified keys by the SHA-256 of the presented key (never the key itself), with expiry."""

    def __init__(self, ttl: float = KEY_CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        with self._lock:
            if len(self._entries) >= _CACHE_LIMIT:
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + self.ttl, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    if "x-api-key" not in request.headers and request.method in ("GET", "HEAD"):
        # The dashboard's session cookie (web/session.py), for reads only: a write needs a header,
        # which another site cannot make a browser send (CSRF).
        return request.cookies.get(SESSION_COOKIE) or None
    return request.headers.get("x-api-key")


def _unauthorized(detail: str) -> ApiProblem:
    return ApiProblem(
        401, "unauthorized", "Authentication required", detail, headers={"WWW-Authenticate": "Bearer"}
    )


def _lookup(request: Request, presented: str) -> Principal | None:
    with request.app.state.database.sessions() as session:
        return authenticate(session, presented)


async def current_principal(request: Request) -> Principal:
    """The caller, from its API key; 401 without a valid one.

    Async on purpose: a cached key is answered on the event loop, without the thread-pool hop a
    sync dependency costs; only a cache miss goes to a thread for the database."""
    presented = _presented_key(request)
    if not presented:
        raise _unauthorized("send an API key: Authorization: Bearer gpb_...")
    cache: KeyCache = request.app.state.key_cache
    digest = hashlib.sha256(presented.encode()).hexdigest()
    principal = cache.get(digest)
    if principal is None:
        principal = await run_in_threadpool(_lookup, request, presented)
        if principal is None:
            raise _unauthorized("the API key is unknown or revoked")
        cache.put(digest, principal)
    request.state.principal = principal
    return principal


def require(role: Role) -> object:
    """A dependency that admits callers whose role covers ``role`` (403 otherwise)."""

    async def check(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.role.covers(role):
            raise ApiProblem(
                403,
                "forbidden",
                "Not allowed",
                f"this needs the {role} role; the key has {principal.role}",
            )
        return principal

    return Depends(check)


Viewer = Annotated[Principal, require(Role.VIEWER)]
Operator = Annotated[Principal, require(Role.OPERATOR)]
Admin = Annotated[Principal, require(Role.ADMIN)]

__all__ = ["KEY_CACHE_SECONDS", "Admin", "KeyCache", "Operator", "Viewer", "current_principal", "require"]
