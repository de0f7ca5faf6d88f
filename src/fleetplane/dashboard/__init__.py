"""The Observe dashboard (SPEC 5): server-rendered HTML pages over the services.

`install(app)` adds the pages under `/dashboard`, their static files under `/dashboard/static`
and a redirect from `/` to the Observe page.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles

from fleetplane.dashboard import actions, pages
from fleetplane.dashboard.render import STATIC
from fleetplane.dashboard.web import OBSERVE_PATH, PREFIX, see_other

__all__ = ["ensure_installed", "install"]


def install(app: FastAPI) -> None:
    """Add the dashboard to an app built by `create_app`; a second call changes nothing."""
    if getattr(app.state, "dashboard_installed", False):
        return
    app.state.dashboard_installed = True
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="dashboard-static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return see_other(OBSERVE_PATH)

    @app.get(PREFIX, include_in_schema=False)
    def dashboard_root() -> RedirectResponse:
        return see_other(OBSERVE_PATH)


def ensure_installed(app: FastAPI) -> FastAPI:
    """The app with the dashboard installed (idempotent: safe whether or not app.py did it)."""
    install(app)
    return app
