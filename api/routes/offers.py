"""GET /v1/offers: the cheapest current GPU offers, with the CLI's filters; GET /v1/offers/history: one
offer's price over time."""

from __future__ import annotations

import threading
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, Field

from api.auth import require
from api.deps import NowDep, SessionDep
from api.errors import ApiProblem
from api.schemas import OfferList, OfferOut
from broker.core.types import CapacityType
from broker.services.offers import CurrentOfferCache, find_offers, offer_history
from broker.services.tenancy import Role
from pricing.core import OfferQuery

router = APIRouter(prefix="/v1", dependencies=[require(Role.VIEWER)], tags=["offers"])

_cache_created = threading.Lock()


def offer_cache(app: FastAPI) -> CurrentOfferCache:
    """The app's cache of decoded current offers: one per app, as an app serves one database."""
    cache = getattr(app.state, "offer_cache", None)
    if cache is None:
        with _cache_created:
            cache = getattr(app.state, "offer_cache", None)
            if cache is None:
                cache = app.state.offer_cache = CurrentOfferCache()
    return cache


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
) -> Response:
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
    quotes = find_offers(session, query, now, request.app.state.stale_after, offer_cache(request.app))
    answer = OfferList(offers=[OfferOut.from_quote(q) for q in quotes], count=len(quotes), generated_at=now)
    # Rendered here: the models above are already validated, and FastAPI's response_model pass
    # (dump, validate again, encode) cost more CPU than the whole cached look-up. response_model
    # still documents the shape.
    return Response(answer.model_dump_json(), media_type="application/json")


class PricePointOut(BaseModel):
    observed_at: datetime = Field(description="When the source observed the price")
    region: str
    zone: str | None
    price_per_hour: Decimal = Field(description="Per instance-hour, in `currency`")
    price_per_gpu_hour: Decimal
    currency: str
    source: str
    snapshot_id: int = Field(description="The price snapshot (import) this price is from")
    availability: str


class OfferHistory(BaseModel):
    """One offer's stored prices in ``[start, end)``, oldest first."""

    cloud: str
    instance_type: str
    capacity: str
    region: str | None
    zone: str | None
    start: datetime
    end: datetime
    points: list[PricePointOut]
    count: int


@router.get(
    "/offers/history",
    response_model=OfferHistory,
    summary="One offer's price over time (every stored snapshot's price), oldest first",
)
def offers_history(
    session: SessionDep,
    now: NowDep,
    cloud: Annotated[str, Query(min_length=1, max_length=64)],
    instance_type: Annotated[str, Query(min_length=1, max_length=128)],
    capacity: Annotated[CapacityType, Query(description="on-demand, spot or reserved")],
    region: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    zone: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    start: Annotated[AwareDatetime | None, Query(description="Default: 30 days before end")] = None,
    end: Annotated[AwareDatetime | None, Query(description="Default: now")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> OfferHistory:
    if start is not None and end is not None and end <= start:
        raise ApiProblem(
            422,
            "validation-error",
            "Request is not valid",
            "end: end must be after start",
            errors=[{"field": "end", "message": "end must be after start"}],
        )
    window_start, window_end, points = offer_history(
        session,
        cloud=cloud,
        instance_type=instance_type,
        capacity=capacity.value,
        now=now,
        region=region,
        zone=zone,
        start=start,
        end=end,
        limit=limit,
    )
    return OfferHistory(
        cloud=cloud.strip().lower(),
        instance_type=instance_type,
        capacity=capacity.value,
        region=region,
        zone=zone,
        start=window_start,
        end=window_end,
        points=[PricePointOut.model_validate(p, from_attributes=True) for p in points],
        count=len(points),
    )
