"""The FastAPI application factory: wires routes, errors and the open database (no I/O itself)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from fastapi import FastAPI

import broker
from api import errors
from api.routes import health, offers, providers
from broker.clock import Clock, utc_now
from broker.db.engine import Database
from broker.jobs.price_refresh import PriceRefresher
from broker.services.offers import DEFAULT_STALE_AFTER
from providers.registry import ProviderEntry


def create_app(
    database: Database,
    clock: Clock = utc_now,
    *,
    provider_entries: Sequence[ProviderEntry] = (),
    refresher: PriceRefresher | None = None,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
) -> FastAPI:
    """Build the API around an open database and the providers in use. The caller owns their lifetimes."""
    app = FastAPI(
        title="gpubroker",
        version=broker.__version__,
        summary="Multi-cloud GPU broker: offers, placement and provisioning across clouds.",
    )
    app.state.database = database
    app.state.clock = clock
    app.state.providers = list(provider_entries)
    app.state.refresher = refresher
    app.state.stale_after = stale_after
    errors.install(app)
    app.include_router(health.router)
    app.include_router(offers.router)
    app.include_router(providers.router)
    return app
