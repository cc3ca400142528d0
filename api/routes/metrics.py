"""``GET /metrics``: Prometheus text exposition of the app's registry (reads the database, cached).

No authentication, like /healthz: it shows counts and rates, never tenant data or ids. Put it
behind the network policy that guards your other scrape targets."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import metrics as api_metrics

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    summary="Prometheus metrics: HTTP traffic, placements, fleet by state, spend rate, provider breakers",
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    # A sync route: the fleet figures may query the database, which must not block the event loop.
    registry = api_metrics.metrics_of(request.app).registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
