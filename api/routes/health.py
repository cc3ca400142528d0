"""Liveness and readiness probes (readiness reads the database)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from api.deps import DatabaseDep
from api.errors import problem
from api.schemas import Health
from broker.db.schema import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness: the process answers")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: the database answers and its schema is current",
    responses={503: {"description": "Not ready (problem+json)"}},
)
def readyz(database: DatabaseDep) -> Health | JSONResponse:
    try:
        revision = current_revision(database.engine)
    except SQLAlchemyError as exc:
        return problem(503, "not-ready", "Database unavailable", str(exc).splitlines()[0])
    head = head_revision()
    if revision != head:
        return problem(
            503,
            "not-ready",
            "Database schema is not current",
            f"schema at {revision}, gpubroker needs {head}: run `gpubroker db upgrade`",
        )
    return Health(status="ok", database="ok", schema_revision=revision)
