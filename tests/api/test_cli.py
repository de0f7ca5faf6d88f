"""The `fleetplane` command on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from fleetplane.api.app import create_app
from fleetplane.cli import app
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from fleetplane.store.models import Workspace


@pytest.fixture
def sqlite_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("FLEETPLANE_DATABASE_URL", url)
    return url


def test_admin_commands_and_demo(sqlite_env: str) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    created = runner.invoke(
        app, ["admin", "create-user", "--email", "Ops@Example.com", "--password", "s3cret-pass"]
    )
    assert created.exit_code == 0, created.output
    token = runner.invoke(app, ["admin", "create-token", "--email", "ops@example.com"])
    assert token.exit_code == 0
    assert token.output.strip().startswith("fp_op_")
    assert len(token.output.strip().splitlines()) == 1
    again = runner.invoke(
        app, ["admin", "create-user", "--email", "ops@example.com", "--password", "s3cret-pass"]
    )
    assert again.exit_code != 0

    demo = runner.invoke(app, ["demo"])
    assert demo.exit_code != 0  # the demo fills only an empty database

    with TestClient(create_app(Settings(database_url=sqlite_env))) as client:
        orgs = client.post(
            "/api/v1/orgs",
            json={"name": "ops org"},
            headers={"Authorization": f"Bearer {token.output.strip()}"},
        )
        assert orgs.status_code == 201


def test_demo_fleet_shows_every_state(sqlite_env: str) -> None:
    runner = CliRunner()
    demo = runner.invoke(app, ["demo"])
    assert demo.exit_code == 0, demo.output
    assert "demo@fleetplane.local / fleetplane-demo" in demo.output
    token = next(line.split()[-1] for line in demo.output.splitlines() if "operator token" in line)
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(Settings(database_url=sqlite_env))) as client:
        database = Database(Settings(database_url=sqlite_env).sqlalchemy_url)
        with database.read() as session:
            workspace_ids = list(session.scalars(select(Workspace.id)))
        database.dispose()
        health, drift = set(), set()
        for workspace_id in workspace_ids:
            body = client.get(f"/api/v1/workspaces/{workspace_id}/fleet", headers=headers).json()
            health |= {r["health"] for r in body["runtimes"]}
            drift |= {r["driftReason"] for r in body["runtimes"]}
        assert health == {"connected", "stale", "dormant", "never"}
        assert drift == {
            None,
            "no_heartbeat",
            "version_below_minimum",
            "config_revision_differs",
            "version_below_full_sync",
        }
    rerun = runner.invoke(app, ["demo"])
    assert rerun.exit_code == 0
    assert "already present" in rerun.output
