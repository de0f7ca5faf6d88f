"""Builds the app as `create_app` wires it, with the rate limiter's clock under test control.

`create_app` gives the app one `RateLimiter`, used by the `RateLimit` middleware and by the hot
path in front of the stack; the tests swap its clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI

from fleetplane.api.app import create_app
from fleetplane.api.ratelimit import RateLimit, RateLimiter
from fleetplane.settings import Settings
from fleetplane.store.db import Database


class Ticks:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def rate_limited_app(
    settings: Settings,
    *,
    database: Database,
    clock: Callable[[], datetime],
    ticks: Callable[[], float],
) -> FastAPI:
    """The app with `RateLimit` in place and its limiter reading `ticks` as its clock."""
    app = create_app(settings, database=database, clock=clock)
    limiter: RateLimiter = app.state.rate_limiter
    limiter.buckets.clock = ticks
    for entry in app.user_middleware:
        if entry.cls is RateLimit and entry.kwargs["limiter"] is limiter:
            return app
    raise AssertionError("create_app no longer installs the rate limiter")
