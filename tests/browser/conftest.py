"""Fixtures for the browser tests: a real uvicorn server and Debian's headless Chromium.

The browser tests run on SQLite only: the ASGI tests in tests/api run every dashboard route on
both databases, and what these add (a real browser over real HTTP, JavaScript, rendering)
does not depend on the database.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)

import fleetplane.dashboard
from fleetplane.api.app import create_app
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from tests.browser import seed
from tests.conftest import IN_CI, Clock

CHROMIUM = Path(os.environ.get("FLEETPLANE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}


@dataclass
class LiveServer:
    """A fleetplane server listening on a local port, with its database and clock."""

    url: str
    database: Database
    clock: Clock


@pytest.fixture
def live_server(tmp_path: Path, sqlite_template: Path) -> Iterator[LiveServer]:
    """`create_app` served by uvicorn in a background thread on a migrated SQLite file."""
    path = tmp_path / "fleetplane.db"
    shutil.copy(sqlite_template, path)
    database = Database(f"sqlite+pysqlite:///{path}")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    clock = Clock()
    app = create_app(
        Settings(database_url=database.url, public_url=url), database=database, clock=clock
    )
    fleetplane.dashboard.ensure_installed(app)
    # ws="none": the dashboard needs no websockets, and their libraries warn on import.
    config = uvicorn.Config(app, log_level="warning", access_log=False, ws="none", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the uvicorn server did not start")
        time.sleep(0.02)
    yield LiveServer(url=url, database=database, clock=clock)
    server.should_exit = True
    thread.join(timeout=15)
    listener.close()
    database.dispose()


# Package scope, not session: Playwright's sync API keeps an event loop running in the main
# thread while it is open, which would break every later test that calls asyncio.run().
@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Playwright]:
    """Playwright's driver, once for the browser tests."""
    if not CHROMIUM.exists():
        reason = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
        if IN_CI:
            pytest.fail(f"{reason}; browser tests must run under CI")
        pytest.skip(reason)
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    launched = playwright_driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def context(browser: Browser, live_server: LiveServer) -> Iterator[BrowserContext]:
    """A fresh browser profile (no cookies) pointed at the live server."""
    created = browser.new_context(viewport=VIEWPORT, base_url=live_server.url)
    created.set_default_timeout(10_000)
    yield created
    created.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A tab in the fresh profile."""
    return context.new_page()


def sign_in(page: Page, email: str, password: str = seed.PASSWORD) -> None:
    """Fill and send the sign-in form, landing on the Observe page."""
    page.goto("/dashboard/observe")
    assert "/dashboard/login" in page.url
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard/observe")
