"""The API's edge as one pure ASGI middleware: request id, body-size limit, per-key rate limit,
access log and HTTP metrics (no I/O beyond the access log line).

One middleware, not five: every request pays for one extra ASGI hop, one pass over its headers
and one dict lookup per concern (the target is well over 1,000 requests a second on two cores).

* **Request id.** ``X-Request-ID`` from the client when it is a sane token (1-128 characters of
  ``[A-Za-z0-9._-]``), else a new one. It is echoed on the response and set in
  ``broker.logs.request_id`` so every log line of the request carries it.
* **Body limit.** A ``Content-Length`` above ``max_body_bytes`` is refused at once; a body without
  one (chunked) is counted as it streams in and refused as soon as it grows past the limit, so the
  app never holds more than the limit. Either way: 413 problem+json ``payload-too-large``.
* **Rate limit.** A token bucket per caller: the SHA-256 of the presented API key
  (``Authorization: Bearer``, ``X-API-Key`` or the dashboard's session cookie), or the client
  address without a key. 429 problem+json ``rate-limited`` with ``Retry-After``. /healthz, /readyz
  and /metrics are exempt. The buckets live in this process: N replicas (or N worker processes)
  let a caller make N times the rate. Behind a proxy, run uvicorn with ``--proxy-headers`` so the
  client address is the caller's, not the proxy's. A caller who rotates made-up keys gets a bucket
  per key; each such request still costs a 401 and a key lookup, and the buckets are bounded (idle
  ones are forgotten first).
* **Access log.** One line per request at INFO on ``gpubroker.access``: method, path, route
  template, status, duration, and the key id and organization when the route authenticated the
  caller. Never headers, query strings or keys.
* **Metrics.** ``api.metrics.HttpMetrics`` by method, route template and status.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Iterator
from time import perf_counter
from typing import Any

import fastapi.routing
from fastapi import FastAPI
from starlette.routing import BaseRoute, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics as api_metrics
from api.errors import problem
from api.metrics import ROUTE_UNMATCHED
from broker import logs
from broker.settings import Settings
from web.session import SESSION_COOKIE

_access = logging.getLogger("gpubroker.access")

REQUEST_ID_HEADER = "X-Request-ID"
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_CALLERS = 100_000
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")


class RateLimiter:
    """Token buckets by caller: ``rate`` requests per second on average, up to ``burst`` at once.

    Bounded memory: a bucket idle long enough to be full again is the same as no bucket, so it is
    forgotten when a new caller arrives; past ``max_callers`` the least recently seen go first.
    Not thread-safe: it runs on the event loop only."""

    def __init__(
        self,
        rate: float,
        burst: int,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        max_callers: int = MAX_CALLERS,
    ) -> None:
        if rate <= 0 or burst < 1 or max_callers < 1:
            raise ValueError("rate must be > 0, burst and max_callers >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.max_callers = max_callers
        self._monotonic = monotonic
        self._refill_seconds = burst / rate
        # caller -> (tokens, when counted); insertion order is least recently seen first
        self._buckets: dict[bytes, tuple[float, float]] = {}
        self._next_sweep = monotonic() + self._refill_seconds

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, caller: bytes) -> float:
        """Spend one token of ``caller``'s: 0.0 when allowed, else the seconds until one is available.

        A refused request costs nothing: a caller who keeps trying is let in as soon as the rate allows."""
        now = self._monotonic()
        buckets = self._buckets
        bucket = buckets.pop(caller, None)
        if bucket is None:
            if len(buckets) >= self.max_callers or now >= self._next_sweep:
                self._forget(now)
            tokens = self.burst
        else:
            tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        if tokens >= 1.0:
            buckets[caller] = (tokens - 1.0, now)
            return 0.0
        buckets[caller] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget(self, now: float) -> None:
        buckets = self._buckets
        full_before = now - self._refill_seconds
        idle = []
        for caller, (_, seen) in buckets.items():  # least recently seen first: stop at the first busy one
            if seen > full_before:
                break
            idle.append(caller)
        for caller in idle:
            del buckets[caller]
        excess = len(buckets) - (self.max_callers * 9) // 10
        if excess > 0:  # still full of busy callers: drop the least recently seen tenth
            for caller in list(buckets)[:excess]:
                del buckets[caller]
        self._next_sweep = now + self._refill_seconds


_SESSION_PREFIX = SESSION_COOKIE.encode() + b"="


def _session_key(cookie: bytes) -> bytes | None:
    """The dashboard session cookie's value in a Cookie header (None when absent or empty)."""
    for part in cookie.split(b";"):
        part = part.strip()
        if part.startswith(_SESSION_PREFIX):
            return part[len(_SESSION_PREFIX) :].strip(b'"') or None
    return None


def _caller(authorization: bytes | None, api_key: bytes | None, cookie: bytes | None, scope: Scope) -> bytes:
    """Who the rate limit counts: the presented key (hashed, as api.auth reads it: a header, else
    the dashboard's session cookie), else the address. A key is one caller however it comes, and
    two people signed in to the dashboard behind one address are two callers."""
    presented: bytes | None = None
    if authorization is not None:
        scheme, _, value = authorization.partition(b" ")
        if scheme.lower() == b"bearer":
            presented = value.strip() or None
    elif api_key:
        presented = api_key
    elif cookie is not None:
        presented = _session_key(cookie)
    if presented is not None:
        return hashlib.sha256(presented).digest()
    client = scope.get("client")
    return b"ip:" + (client[0].encode() if client else b"?")


def _route_contexts(routes: list[BaseRoute]) -> Iterator[tuple[object, Any]]:
    """Each route with what knows its full path (FastAPI keeps included routers nested)."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    if iterate is None:  # a FastAPI that flattens included routers: the routes know their paths
        for route in routes:
            yield route, route
        return
    for context in iterate(routes):
        yield context.original_route, context


class RouteTemplates:
    """The path template a request reaches (``/v1/workloads/{workload_id}``), include prefixes and all.

    FastAPI's ``scope["route"]`` is the router-local route, whose own path lacks the prefixes of
    the routers it was included into; the full templates are indexed once, on first use."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._by_route: dict[int, tuple[object, str]] | None = None
        self._patterns: list[tuple[re.Pattern[str], frozenset[str], str]] = []

    def _index(self) -> dict[int, tuple[object, str]]:
        by_route: dict[int, tuple[object, str]] = {}
        patterns = []
        for route, context in _route_contexts(self._app.routes):
            template, path = getattr(context, "path_format", None), getattr(context, "path", None)
            if not template or not path:
                continue
            by_route.setdefault(id(route), (route, template))
            methods = frozenset(getattr(context, "methods", None) or ())
            patterns.append((compile_path(path)[0], methods, template))
        self._by_route, self._patterns = by_route, patterns
        return by_route

    def served(self, scope: Scope, status: int) -> str:
        """The template of the route that answered ``scope`` (after routing)."""
        route = scope.get("route")  # FastAPI sets it for its own routes, not for /docs or /openapi.json
        if route is None:
            return ROUTE_UNMATCHED if status == 404 else self.reached(scope)
        entry = (self._by_route if self._by_route is not None else self._index()).get(id(route))
        if entry is not None and entry[0] is route:
            return entry[1]
        return getattr(route, "path_format", None) or ROUTE_UNMATCHED

    def reached(self, scope: Scope) -> str:
        """The template ``scope`` would reach: for requests refused before routing (413, 429)."""
        if self._by_route is None:
            self._index()
        path, method = scope["path"], scope["method"]
        other_method = ROUTE_UNMATCHED  # the path matches but not the method: a 405
        for pattern, methods, template in self._patterns:
            if pattern.match(path):
                if not methods or method in methods:
                    return template
                if other_method == ROUTE_UNMATCHED:
                    other_method = template
        return other_method


class _BodyTooLarge(Exception):
    """The request body grew past the limit while streaming in."""


class EdgeMiddleware:
    """See the module docstring. Install with :func:`install`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        templates: RouteTemplates,
        http_metrics: api_metrics.HttpMetrics,
        limiter: RateLimiter,
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.templates = templates
        self.http_metrics = http_metrics
        self.limiter = limiter
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = perf_counter()
        given_id = length = authorization = api_key = cookie = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given_id = value
            elif name == b"content-length":
                length = value
            elif name == b"authorization":
                authorization = value
            elif name == b"x-api-key":
                api_key = value
            elif name == b"cookie":
                cookie = value
        if given_id is not None and _SANE_REQUEST_ID.fullmatch(given_id):
            request_id = given_id.decode("ascii")
        else:
            request_id = secrets.token_hex(8)
        token = logs.request_id.set(request_id)
        id_header = (b"x-request-id", request_id.encode("ascii"))
        limit = self.max_body_bytes
        status = 0  # the status sent, once the response has started
        received = 0
        too_large = False
        route: str | None = None  # the template, when known before the app runs (rejections)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                if too_large:  # the app answered the truncated body (400...): answer 413 instead
                    raise _BodyTooLarge
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), id_header]}
            await send(message)

        async def receive_within_limit() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        failed = False
        try:
            declared = _content_length(length)
            if scope["path"] not in EXEMPT_PATHS:
                wait = self.limiter.take(_caller(authorization, api_key, cookie, scope))
                if wait > 0.0:
                    route = self.templates.reached(scope)
                    retry_after = max(1, math.ceil(wait))
                    await problem(
                        429,
                        "rate-limited",
                        "Too many requests",
                        f"this API key (or address) is over its rate limit; retry in {retry_after}s",
                        headers={"Retry-After": str(retry_after)},
                    )(scope, receive, send_with_id)
                    return
            if declared is not None and declared > limit:
                route = self.templates.reached(scope)
                await self._too_large(scope, receive, send_with_id)
                return
            # The server keeps a body within its Content-Length: only a body without one is counted.
            body_receive = receive if declared is not None else receive_within_limit
            try:
                await self.app(scope, body_receive, send_with_id)
            except Exception:
                # Whatever the app made of the refused body (a 400, an exception group), the
                # answer is 413, unless the response had already begun.
                if not too_large or status:
                    raise
            if too_large and not status:
                too_large = False
                await self._too_large(scope, receive, send_with_id)
        except Exception:
            failed = True
            if not status:
                # Answer here, so the 500 carries the request id too; the app's error handler
                # (outside) still logs the traceback, and sees the response has been sent.
                with contextlib.suppress(Exception):  # the client may be gone: the app's error matters
                    await problem(500, "internal-error", "Internal server error")(
                        scope, receive, send_with_id
                    )
            raise
        finally:
            self._record(scope, route, status or 500, perf_counter() - started)
            # After an unhandled error the id stays set, so the error handler that logs the
            # traceback (outside this middleware, in the same task) still names the request.
            if not failed:
                logs.request_id.reset(token)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await problem(
            413,
            "payload-too-large",
            "Request body too large",
            f"the request body is larger than {self.max_body_bytes} bytes",
        )(scope, receive, send)

    def _record(self, scope: Scope, route: str | None, status: int, seconds: float) -> None:
        if route is None:
            route = self.templates.served(scope, status)
        method: str = scope["method"]
        self.http_metrics.observe(method, route, status, seconds)
        if not _access.isEnabledFor(logging.INFO):
            return
        path: str = scope["path"]
        fields: dict[str, Any] = {
            "method": method,
            "path": path,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000.0, 3),
        }
        state = scope.get("state")
        principal = state.get("principal") if isinstance(state, dict) else None
        if principal is not None:
            fields["key_id"] = principal.key_id
            fields["org_id"] = principal.org_id
        _access.info("%s %s %d", method, path, status, extra=fields)


def _content_length(value: bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def install(app: FastAPI, settings: Settings, *, monotonic: Callable[[], float] = time.monotonic) -> None:
    """Put the edge middleware in front of ``app`` (call it last, so it is the outermost middleware)
    and give the app its metrics registry. ``monotonic`` drives the rate limiter and the metrics cache.

    Calling it again (before the app serves) reconfigures: the previous edge middleware is replaced."""
    metrics = api_metrics.install(app, monotonic)
    limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst, monotonic)
    app.state.rate_limiter = limiter
    app.user_middleware[:] = [m for m in app.user_middleware if m.cls is not EdgeMiddleware]
    app.add_middleware(
        EdgeMiddleware,  # type: ignore[arg-type]
        templates=RouteTemplates(app),
        http_metrics=metrics.http,
        limiter=limiter,
        max_body_bytes=settings.max_body_bytes,
    )


__all__ = ["EXEMPT_PATHS", "REQUEST_ID_HEADER", "EdgeMiddleware", "RateLimiter", "RouteTemplates", "install"]
