"""API and CLI output schemas (pydantic); separate from ORM models. Decimal money is a JSON string."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from broker.services.offers import OfferQuote


class OfferOut(BaseModel):
    """One offer. Field names are stable: scripts parse them (`gpubroker offers --json` too)."""

    model_config = ConfigDict(frozen=True)

    cloud: str
    region: str
    zone: str | None
    instance_type: str
    accelerator: str
    accelerator_count: int
    vcpus: Decimal | None
    memory_gib: Decimal | None
    capacity_type: str = Field(description="on-demand, spot or reserved")
    price_per_hour: Decimal = Field(description="Price per instance-hour, in `currency`")
    price_per_gpu_hour: Decimal = Field(description="Price per GPU-hour, in `currency`")
    currency: str
    source: str = Field(description="Where the price comes from (catalog file and version)")
    observed_at: datetime = Field(description="When the source observed the price")
    price_age_seconds: int = Field(description="Age of the price when this answer was made")
    stale: bool = Field(description="The price is older than the refresh interval allows (last good price)")
    availability: str = Field(
        description="Provider capacity signal: available, limited, unavailable, unknown"
    )

    @classmethod
    def from_quote(cls, quote: OfferQuote) -> OfferOut:
        o = quote.offer
        return cls(
            cloud=o.cloud,
            region=o.region,
            zone=o.zone,
            instance_type=o.instance_type,
            accelerator=o.accelerator,
            accelerator_count=o.accelerator_count,
            vcpus=o.vcpus,
            memory_gib=o.memory_gib,
            capacity_type=o.capacity_type.value,
            price_per_hour=o.price_per_hour,
            price_per_gpu_hour=quote.price_per_gpu_hour,
            currency=o.currency,
            source=o.source,
            observed_at=o.observed_at,
            price_age_seconds=quote.price_age_seconds,
            stale=quote.stale,
            availability=o.availability.value,
        )


class OfferList(BaseModel):
    """A page of offers, cheapest per GPU-hour first."""

    offers: list[OfferOut]
    count: int
    generated_at: datetime


class Health(BaseModel):
    status: str
    database: str | None = None
    schema_revision: str | None = None
