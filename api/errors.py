"""RFC 9457 problem+json responses: one stable ``type`` per error (no I/O)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

_log = logging.getLogger(__name__)

PROBLEM_BASE = "https://gpubroker.dev/problems/"
PROBLEM_JSON = "application/problem+json"


def problem(
    status: int,
    kind: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {"type": PROBLEM_BASE + kind, "title": title, "status": status}
    if detail is not None:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


class ApiProblem(Exception):
    """Raised by routes and dependencies: becomes a problem+json response with a stable ``type``.

    ``kind`` is the last part of the type URL; keep each one stable, clients branch on it."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extra = extra


def not_found(what: str, ident: str) -> ApiProblem:
    """The one 404: a missing object and another organization's object answer exactly alike."""
    return ApiProblem(404, "not-found", "Not found", f"no {what} {ident!r}")


async def _api_problem(_request: Request, exc: ApiProblem) -> JSONResponse:
    return problem(exc.status, exc.kind, exc.title, exc.detail, exc.headers, **exc.extra)


async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"field": ".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0]), "message": err["msg"]}
        for err in exc.errors()
    ]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return problem(422, "validation-error", "Request is not valid", detail, errors=errors)


async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
    kind = {404: "not-found", 405: "method-not-allowed", 503: "unavailable"}.get(
        exc.status_code, "http-error"
    )
    return problem(exc.status_code, kind, str(exc.detail) if exc.detail else "HTTP error")


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    _log.exception("unhandled error", exc_info=exc)
    return problem(500, "internal-error", "Internal server error")


def install(app: FastAPI) -> None:
    """Route every error through problem+json."""
    app.add_exception_handler(ApiProblem, _api_problem)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)
