"""``fleetplane simulate``: build a simulated fleet on a server and keep it live."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

from fleetplane.client.errors import ClientError
from fleetplane.sim.fleet import MAX_DURATION_SECONDS, MAX_RUNTIMES, MAX_WORKSPACES, simulate

__all__ = ["sim_app", "simulate_command"]

DEFAULT_TOKEN_ENV = "FLEETPLANE_TOKEN"  # noqa: S105 - a variable's name, not a secret

sim_app = typer.Typer(help="Simulate a fleet of runtimes.", add_completion=False)


@sim_app.command("simulate")
def simulate_command(
    endpoint: Annotated[str, typer.Option(help="The fleetplane server's URL.")],
    token_env: Annotated[
        str, typer.Option(help="Variable holding an operator (fp_op_) token.")
    ] = DEFAULT_TOKEN_ENV,
    runtimes: Annotated[
        int, typer.Option(min=1, max=MAX_RUNTIMES, help="Runtimes to create.")
    ] = 100,
    workspaces: Annotated[
        int, typer.Option(min=1, max=MAX_WORKSPACES, help="Workspaces to spread them over.")
    ] = 5,
    duration: Annotated[
        float,
        typer.Option(min=0, max=MAX_DURATION_SECONDS, help="Seconds to stay live (0: forever)."),
    ] = 300.0,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight.")] = 32,
    heartbeat_seconds: Annotated[
        float | None,
        typer.Option(min=0.1, help="Heartbeat pace (default: the server's next_heartbeat_ms)."),
    ] = None,
    edit_after: Annotated[
        float, typer.Option(help="Seconds until the first config edit (negative: none).")
    ] = 20.0,
    edit_every: Annotated[
        float, typer.Option(help="Seconds between config edits (0: only one).")
    ] = 120.0,
    seed: Annotated[int | None, typer.Option(help="Seed for a repeatable fleet.")] = None,
) -> None:
    """Create a fleet with a realistic version mix and keep it heartbeating."""
    token = os.environ.get(token_env, "").strip()
    if not token:
        typer.echo(f"error: environment variable {token_env} holds no operator token", err=True)
        raise typer.Exit(2)
    if workspaces > runtimes:
        typer.echo("error: --workspaces must not exceed --runtimes", err=True)
        raise typer.Exit(2)
    try:
        report = asyncio.run(
            simulate(
                endpoint,
                token,
                runtimes,
                workspaces,
                duration=duration,
                concurrency=concurrency,
                heartbeat_seconds=heartbeat_seconds,
                edit_after=edit_after,
                edit_every=edit_every,
                seed=seed,
                progress=typer.echo,
            )
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (ClientError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    typer.echo(f"org {report.org_id}: workspaces {', '.join(report.workspace_ids)}")
