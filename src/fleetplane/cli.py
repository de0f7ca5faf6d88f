"""The `fleetplane` command: thin over services."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from typing import Annotated

import httpx
import typer
import uvicorn

from fleetplane.api.context import system_clock
from fleetplane.client.agent import agent_command
from fleetplane.services import accounts
from fleetplane.services import demo as demo_service
from fleetplane.settings import Settings
from fleetplane.sim import simulate as run_simulation
from fleetplane.sim import simulate_command
from fleetplane.store import migrate
from fleetplane.store.db import Database

app = typer.Typer(
    help="fleetplane: control plane for fleets of agent runtimes.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
admin_app = typer.Typer(help="Users and operator tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
# The runtime agent and the simulator speak HTTP only; they are commands here for convenience.
app.command("agent")(agent_command)
app.command("simulate")(simulate_command)


def _settings() -> Settings:
    return Settings()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every schema migration."""
    settings = _settings()
    migrate.upgrade(settings.sqlalchemy_url)
    typer.echo("database schema is up to date")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
    access_log: Annotated[
        bool, typer.Option(help="Log every request (costly under load).")
    ] = False,
    simulate: Annotated[
        int, typer.Option(help="Also run a live simulated fleet of this many runtimes (demo).")
    ] = 0,
) -> None:
    """Migrate the database, then serve the API and dashboard."""
    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    migrate.upgrade(settings.sqlalchemy_url)
    if simulate:
        _start_simulation(settings, f"http://{host}:{port}", simulate)
    # The workers share the rate limits (docs/reliability.md); several machines set it in full.
    os.environ.setdefault("FLEETPLANE_RATE_LIMIT_PROCESSES", str(workers))
    # glibc gives every thread that allocates its own arena; with the request threadpool that
    # multiplies resident memory for no gain. Worker processes read this when they start.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    uvicorn.run(
        "fleetplane.api.factory:app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=access_log,
        proxy_headers=True,
    )


def _start_simulation(settings: Settings, endpoint: str, runtimes: int) -> None:
    """Run `fleetplane simulate` in a daemon thread once the server answers (for the demo)."""
    database = Database(settings.sqlalchemy_url)
    with database.unit_of_work() as session:
        user = accounts.user_by_email(session, email=demo_service.DEMO_EMAIL)
        # A token for the simulator only: held in memory, never printed.
        _, token = accounts.create_operator_token(
            session, user=user, name="demo simulator", now=system_clock()
        )
    database.dispose()

    def run() -> None:
        for _ in range(120):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{endpoint}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.5)
        asyncio.run(
            run_simulation(
                endpoint,
                token,
                runtimes,
                max(1, runtimes // 20),
                duration=0,
                heartbeat_seconds=10.0,
                progress=lambda message: logging.getLogger("fleetplane.sim").info(message),
            )
        )

    threading.Thread(target=run, name="fleetplane-demo-simulator", daemon=True).start()


@admin_app.command("create-user")
def create_user(
    email: Annotated[str, typer.Option(help="The user's email.")],
    password: Annotated[
        str, typer.Option(help="At least 8 characters.", prompt=True, hide_input=True)
    ],
    superuser: Annotated[bool, typer.Option(help="Grant every permission.")] = False,
) -> None:
    """Create a user."""
    database = Database(_settings().sqlalchemy_url)
    with database.unit_of_work() as session:
        user = accounts.create_user(
            session,
            email=email,
            password=password,
            is_superuser=superuser,
            actor="cli",
            now=system_clock(),
        )
    typer.echo(f"created user {user.email}")


@admin_app.command("create-token")
def create_token(
    email: Annotated[str, typer.Option(help="The user the token acts as.")],
    name: Annotated[str, typer.Option(help="A name to recognise the token by.")] = "cli",
) -> None:
    """Issue an operator token and print only the token."""
    database = Database(_settings().sqlalchemy_url)
    with database.unit_of_work() as session:
        user = accounts.user_by_email(session, email=email)
        _, token = accounts.create_operator_token(session, user=user, name=name, now=system_clock())
    typer.echo(token)


@app.command()
def demo() -> None:
    """Fill an empty database with a demo fleet and print the demo login."""
    settings = _settings()
    migrate.upgrade(settings.sqlalchemy_url)
    database = Database(settings.sqlalchemy_url)
    with database.unit_of_work() as session:
        login = demo_service.seed(session, now=system_clock())
    state = "created" if login.created else "already present"
    typer.echo(f"demo fleet {state}")
    typer.echo(f"  dashboard:      {settings.public_url}/dashboard/observe")
    typer.echo(f"  login:          {login.email} / {login.password}")
    typer.echo(f"  operator token: {login.operator_token}")
