"""The dashboard sign-in session: the cookie carrying the API key, and whose key it is (reads the database).

The cookie holds the API key itself (not a server-side session id): the key is already the one
credential the API verifies and revokes, so a revoked key signs the browser out within the API's
key-cache interval, on every replica, with no session table. It is HttpOnly (page scripts never see
it), Secure (never sent over plain http, except to loopback addresses, which browsers treat as
secure), SameSite=Strict (never sent with a request another site starts) and Path=/.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Request, Response

from broker.services.tenancy import Principal, authenticate

SESSION_COOKIE = "gpubroker_session"
SESSION_MAX_AGE_SECONDS = 12 * 3600  # a working day: a stolen laptop's browser does not stay signed in
MAX_KEY_LENGTH = 256  # longer than any key we issue (gpb_ + 16 + 43 characters); refuses junk early


def principal_from_cookie(request: Request) -> Principal | None:
    """The signed-in caller, or None without a cookie or with an unknown, malformed or revoked key."""
    key = request.cookies.get(SESSION_COOKIE)
    if not key or len(key) > MAX_KEY_LENGTH:
        return None
    return verify_key(request, key)


def verify_key(request: Request, key: str) -> Principal | None:
    with request.app.state.database.sessions() as session:
        return authenticate(session, key.strip())


def set_session(response: Response, key: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        key,
        max_age=SESSION_MAX_AGE_SECONDS,
        path="/",
        secure=True,
        httponly=True,
        samesite="strict",
    )


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True, samesite="strict")


def same_origin(request: Request) -> bool:
    """False when a browser says the form was posted from another origin (a CSRF attempt).

    SameSite=Strict already keeps the cookie off cross-site requests; this also stops a forged
    sign-in (login CSRF), which needs no cookie. A request with neither header (curl) passes."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    return parts.netloc == request.headers.get("host", "")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never ``//evil`` or ``https://evil``)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/fleet"
    return target


__all__ = [
    "SESSION_COOKIE",
    "SESSION_MAX_AGE_SECONDS",
    "clear_session",
    "principal_from_cookie",
    "safe_next",
    "same_origin",
    "set_session",
    "verify_key",
]
