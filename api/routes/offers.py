"""GET /v1/offers: the cheapest current GPU offers, with the CLI's filters."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query, Request

from api.auth import require
from api.deps import NowDep, SessionDep
from api.schemas import OfferList, OfferOut
from broker.core.types import CapacityType
from broker.services.offers import find_offers
from broker.services.tenancy import Role
from pricing.core import OfferQuery

router = APIRouter(prefix="/v1", dependencies=[require(Role.VIEWER)], tags=["offers"])


@router.get("/offers", response_model=OfferList, summary="Cheapest current offers, per GPU-hour")
def list_offers(
    request: Request,
    session: SessionDep,
    now: NowDep,
    gpu: Annotated[str | None, Query(max_length=64, description="GPU model, e.g. H100")] = None,
    count: Annotated[int | None, Query(ge=1, le=64, description="GPUs per instance")] = None,
    cloud: Annotated[
        list[str] | None, Query(description="Only these clouds (repeat, or comma-separate)")
    ] = None,
    region: Annotated[str | None, Query(max_length=128)] = None,
    capacity: Annotated[CapacityType | None, Query(description="on-demand, spot or reserved")] = None,
    max_price: Annotated[Decimal | None, Query(ge=0, le=10_000, description="Max $ per GPU-hour")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> OfferList:
    clouds = (
        frozenset(c.strip().lower() for part in cloud for c in part.split(",") if c.strip())
        if cloud
        else None
    )
    query = OfferQuery(
        gpu=gpu,
        count=count,
        clouds=clouds or None,
        region=region,
        capacity=capacity,
        max_price_per_gpu_hour=max_price,
        limit=limit,
    )
    quotes = find_offers(session, query, now, request.app.state.stale_after)
    return OfferList(offers=[OfferOut.from_quote(q) for q in quotes], count=len(quotes), generated_at=now)
