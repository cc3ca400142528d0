"""The FastAPI application factory: wires routes, errors and the open database (no I/O itself)."""

from __future__ import annotations

from fastapi import FastAPI

import broker
from api import errors
from api.routes import health, offers
from broker.clock import Clock, utc_now
from broker.db.engine import Database


def create_app(database: Database, clock: Clock = utc_now) -> FastAPI:
    """Build the API around an open database. The caller owns the database's lifetime."""
    app = FastAPI(
        title="gpubroker",
        version=broker.__version__,
        summary="Multi-cloud GPU broker: offers, placement and provisioning across clouds.",
    )
    app.state.database = database
    app.state.clock = clock
    errors.install(app)
    app.include_router(health.router)
    app.include_router(offers.router)
    return app
