"""The FastAPI app factory: one app per process, built from settings and a database."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI
from starlette.types import ASGIApp

from fleetplane import dashboard
from fleetplane.api import accounts, alerts, errors, fleet, operator, orgs, probes, runtime
from fleetplane.api.context import AppContext, system_clock
from fleetplane.api.hot import HotPathFront, InvalidateOnChange
from fleetplane.api.middleware import BodyLimit, SecurityHeaders, security_headers
from fleetplane.api.ratelimit import RateLimit, RateLimiter
from fleetplane.services.accounts import bootstrap_superuser
from fleetplane.settings import Settings
from fleetplane.store.db import Database

log = logging.getLogger("fleetplane")


def bootstrap(context: AppContext) -> None:
    """Create the bootstrap superuser from BOOTSTRAP_ADMIN_TOKEN if no user exists yet."""
    secret = context.settings.bootstrap_admin_token
    if secret is None:
        return
    with context.database.unit_of_work() as session:
        if bootstrap_superuser(session, token=secret.get_secret_value(), now=context.clock()):
            log.info("created the bootstrap superuser 'admin'")


class FleetplaneAPI(FastAPI):
    """The FastAPI app with the hot path in front of its whole middleware stack.

    Cached heartbeats and unchanged pulls are most of a fleet's traffic; the front answers them
    without passing through every layer (each one more call and more wrapping per request),
    and does what those layers would do itself, with the same limiter, headers and metrics.
    """

    def build_middleware_stack(self) -> ASGIApp:
        settings = self.state.context.settings
        return HotPathFront(
            super().build_middleware_stack(),
            context=self.state.context,
            limiter=self.state.rate_limiter,
            metrics=self.state.metrics,
            headers=security_headers(hsts=settings.secure_cookies),
            max_body_bytes=settings.max_body_bytes,
        )


def create_app(
    settings: Settings,
    *,
    database: Database | None = None,
    clock: Callable[[], datetime] = system_clock,
) -> FastAPI:
    """Build the app; the schema must already be migrated (`fleetplane db upgrade`)."""
    context = AppContext(
        settings=settings, database=database or Database(settings.sqlalchemy_url), clock=clock
    )

    @asynccontextmanager
    async def lifespan(running: FastAPI) -> AsyncIterator[None]:
        bootstrap(context)
        context.hot.flusher.start()
        context.hot.watcher.start()
        if settings.cache_warm_on_start:
            # After the watcher has started: a change committed while warming is noticed.
            context.hot.start_warming(context.clock())
        alerting.start()
        metrics = running.state.metrics
        metrics.loop_lag.start()
        metrics.gc_pauses.start()
        yield
        alerting.stop()
        context.hot.stop_warming()
        context.hot.watcher.stop()
        # Write every acknowledged heartbeat before the process goes.
        context.hot.flusher.stop()
        if database is None:
            context.database.dispose()
        metrics.gc_pauses.stop()
        await metrics.loop_lag.stop()

    app = FleetplaneAPI(
        title="fleetplane",
        version="0.1.0",
        description="Control plane for fleets of agent runtimes (LumenFlow control-plane SDK v1).",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
        # fleetplane reports through /metrics; FastAPI's OpenTelemetry hooks would otherwise
        # look up the global providers (and the environment) on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.context = context
    # One limiter per process, shared by the middleware and the hot path in front of it.
    app.state.rate_limiter = RateLimiter(settings)
    errors.install(app)
    app.include_router(probes.router)
    app.include_router(runtime.router)
    app.include_router(fleet.router)
    app.include_router(operator.router)
    app.include_router(orgs.router)
    app.include_router(accounts.router)
    dashboard.install(app)

    app.add_middleware(InvalidateOnChange, context=context)
    app.add_middleware(RateLimit, limiter=app.state.rate_limiter)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders, hsts=settings.secure_cookies)
    # Last, so that request metrics wrap the whole stack (the hot path in front of it counts
    # the answers it gives itself).
    alerting = alerts.install(app, context)
    return app
