"""``Idempotency-Key`` for POST: the same key and body replay the first response; the same key with
another body is a 409 (reads and writes the database, in the request's transaction).

The key's row is inserted *before* the work, in the same transaction: a concurrent request with
the same key waits on that row's lock until the first commits, then replays its response, so a
client retrying on a timeout never creates two workloads. Keys are scoped to the organization.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from api.errors import ApiProblem
from broker.db.fleet import IdempotentRequest
from broker.services.tenancy import Principal

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def fingerprint(method: str, path: str, body: BaseModel) -> str:
    """What makes two requests "the same": method, path and the parsed body (key order aside)."""
    canonical = json.dumps(jsonable_encoder(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def idempotent(
    request: Request,
    session: Session,
    principal: Principal,
    body: BaseModel,
    now: datetime,
    work: Callable[[], Any],
    *,
    status_code: int = 201,
) -> JSONResponse:
    """Run ``work`` once per (organization, Idempotency-Key); without the header, just run it."""
    key = request.headers.get(HEADER)
    if key is None:
        return JSONResponse(jsonable_encoder(work()), status_code=status_code)
    if not key or len(key) > MAX_KEY_LENGTH or not key.isascii():
        raise ApiProblem(
            400,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            f"{HEADER} must be 1-{MAX_KEY_LENGTH} ASCII characters",
        )
    method_path = f"{request.method} {request.url.path}"
    digest = fingerprint(request.method, request.url.path, body)
    inserted = session.execute(
        insert(IdempotentRequest)
        .values(
            org_id=principal.org_id,
            key=key,
            method_path=method_path,
            request_sha256=digest,
            status_code=0,
            response_body="",
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(IdempotentRequest.key)
    ).first()
    if inserted is None:
        stored = session.scalars(
            select(IdempotentRequest).where(
                IdempotentRequest.org_id == principal.org_id, IdempotentRequest.key == key
            )
        ).one()
        if stored.request_sha256 != digest or stored.method_path != method_path:
            raise ApiProblem(
                409,
                "idempotency-key-reused",
                "Idempotency-Key reused with a different request",
                f"the key {key!r} was first used for another request; use a new key for a new request",
            )
        replay = JSONResponse(json.loads(stored.response_body), status_code=stored.status_code)
        replay.headers["Idempotent-Replayed"] = "true"
        return replay
    content = jsonable_encoder(work())
    session.execute(
        update(IdempotentRequest)
        .where(IdempotentRequest.org_id == principal.org_id, IdempotentRequest.key == key)
        .values(status_code=status_code, response_body=json.dumps(content))
    )
    return JSONResponse(content, status_code=status_code)


__all__ = ["HEADER", "fingerprint", "idempotent"]
