"""The FastAPI application factory: wires routes, errors and the open database (no I/O itself)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta

from fastapi import FastAPI

import broker
from api import errors, middleware
from api.auth import KeyCache
from api.routes import (
    commitments,
    costs,
    health,
    instances,
    metrics,
    notices,
    offers,
    projects,
    providers,
    reports,
    utilization,
    workloads,
)
from broker.clock import Clock, utc_now
from broker.db.engine import Database
from broker.jobs.price_refresh import PriceRefresher
from broker.services.offers import DEFAULT_STALE_AFTER
from broker.services.submissions import SubmissionWriter
from broker.settings import Settings
from providers.registry import ProviderEntry
from web import pages as dashboard


def create_app(
    database: Database,
    clock: Clock = utc_now,
    *,
    provider_entries: Sequence[ProviderEntry] = (),
    refresher: PriceRefresher | None = None,
    stale_after: timedelta = DEFAULT_STALE_AFTER,
    wake: Callable[[str], None] | None = None,
    settings: Settings | None = None,
) -> FastAPI:
    """Build the API around an open database and the providers in use. The caller owns their lifetimes.

    ``wake(topic)`` (optional: the in-process scheduler's) is called after a request wrote work the
    scheduler should act on at once. Without it a scheduler elsewhere still hears of the work
    through PostgreSQL's NOTIFY, sent in the request's transaction, or on its next poll."""
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
    app.state.key_cache = KeyCache()
    app.state.wake = wake
    app.state.settings = settings or Settings()
    # Group commit for POST /v1/workloads; its thread starts with the first submission.
    app.state.submissions = SubmissionWriter(database.sessions)
    app.router.on_shutdown.append(app.state.submissions.close)
    errors.install(app)
    for module in (
        health,
        metrics,
        offers,
        providers,
        projects,
        workloads,
        instances,
        notices,
        commitments,
        utilization,
        costs,
        reports,
    ):
        app.include_router(module.router)
    dashboard.install(app)  # the web dashboard at /: HTML shells over this same API
    middleware.install(app, app.state.settings)  # last: it must be the outermost layer
    return app
