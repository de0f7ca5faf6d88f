"""The uvicorn entry point: builds the app from the environment in each worker process."""

from __future__ import annotations

import gc
import logging

from fastapi import FastAPI

from fleetplane.api.app import create_app
from fleetplane.settings import Settings

FULL_PASS_EVERY = 100


def app() -> FastAPI:
    """An app configured from `FLEETPLANE_*` environment variables."""
    # Worker processes start without the parent's logging set-up.
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
    built = create_app(Settings())
    # What exists now (modules, routes, settings) lives as long as the worker: keep it out of
    # the collector's full passes, which then walk only what serving creates.
    gc.freeze()
    # Full passes pause every request of the worker at once. Serving makes few long-lived
    # objects (the caches hold untracked tuples), so one full pass per 100 middle ones instead
    # of per 10 is enough: measured under heartbeat load, a full pass came every ~3 s.
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_PASS_EVERY)
    return built
