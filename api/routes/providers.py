"""GET /v1/providers: each provider's configuration, breakers and last price refresh (no provider calls)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from api.auth import require
from broker.services.providers import describe
from broker.services.tenancy import Role

router = APIRouter(prefix="/v1", dependencies=[require(Role.VIEWER)], tags=["providers"])


class BreakerOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    region: str
    state: str
    consecutive_failures: int
    last_error: str | None


class ProviderOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

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
    return ProviderList(
        providers=[
            ProviderOut.model_validate(describe(entry, last.get(entry.info.name)))
            for entry in request.app.state.providers
        ]
    )
