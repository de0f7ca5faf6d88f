"""The uvicorn entry point: builds the app from the environment in each worker process."""

from __future__ import annotations

from fastapi import FastAPI

from fleetplane.api.app import create_app
from fleetplane.settings import Settings


def app() -> FastAPI:
    """An app configured from `FLEETPLANE_*` environment variables."""
    return create_app(Settings())
