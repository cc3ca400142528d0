"""GET /v1/providers: each provider's configuration, breakers and last price refresh (no provider calls)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from broker.services.providers import describe

router = APIRouter(prefix="/v1", tags=["providers"])


class BreakerOut(BaseModel):
    region: str
    state: str
    consecutive_failures: int
    last_error: str | None


class ProviderOut(BaseModel):
    name: str
    configured: bool
    reachable: bool | None
    detail: str
    breaker_state: str
    breakers: list[BreakerOut]
    last_error: str | None
    capacity_types: list[str]
    interruption_notice_seconds: int | None


class ProviderList(BaseModel):
    providers: list[ProviderOut]


@router.get(
    "/providers", response_model=ProviderList, summary="Providers known to this server and their health"
)
def list_providers(request: Request) -> ProviderList:
    refresher = request.app.state.refresher
    last = refresher.last if refresher is not None else {}
    reports = [describe(entry, last.get(entry.info.name)) for entry in request.app.state.providers]
    return ProviderList(
        providers=[
            ProviderOut(
                name=r.name,
                configured=r.configured,
                reachable=r.reachable,
                detail=r.detail,
                breaker_state=r.breaker_state,
                breakers=[
                    BreakerOut(
                        region=b.region,
                        state=b.state,
                        consecutive_failures=b.consecutive_failures,
                        last_error=b.last_error,
                    )
                    for b in r.breakers
                ],
                last_error=r.last_error,
                capacity_types=r.capacity_types,
                interruption_notice_seconds=r.interruption_notice_seconds,
            )
            for r in reports
        ]
    )
