"""Crash: SIGKILL `fleetplane serve` while runtimes heartbeat and an operator edits config, then
restart it on the same database. Every acknowledged edit is there with its audit row, heartbeat
loss is bounded by the liveness flush interval, and the database is intact."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from fleetplane.settings import Settings
from fleetplane.store.db import Database
from tests.conftest import BOOTSTRAP_TOKEN
from tests.reliability import figures
from tests.reliability.load import OPERATOR, Fleet, Load, all_pages
from tests.reliability.servers import Server, free_port

FLUSH_SECONDS = 1.0
# The flush that was writing when the kill came may be lost with the buffer it held.
LOSS_BOUND = FLUSH_SECONDS + 0.5


def consistency_problems(url: str) -> list[str]:
    """Cross-table facts that must hold after any crash, on either database."""
    database = Database(Settings(database_url=url).sqlalchemy_url)
    queries = {
        "workspace hash is its newest revision's": """
            SELECT w.id FROM workspaces w JOIN config_revisions r
              ON r.workspace_id = w.id AND r.number = w.config_revision
            WHERE r.hash <> w.config_hash""",
        "every workspace has its current revision": """
            SELECT w.id FROM workspaces w WHERE NOT EXISTS (
              SELECT 1 FROM config_revisions r
              WHERE r.workspace_id = w.id AND r.number = w.config_revision)""",
        "revision numbers have no gaps": """
            SELECT workspace_id FROM config_revisions GROUP BY workspace_id
            HAVING COUNT(*) <> MAX(number)""",
        "every runtime's workspace exists": """
            SELECT r.id FROM runtimes r LEFT JOIN workspaces w ON w.id = r.workspace_id
            WHERE w.id IS NULL""",
    }
    problems = []
    try:
        with database.engine.connect() as conn:
            for name, query in queries.items():
                if conn.execute(text(query)).first() is not None:
                    problems.append(name)
    finally:
        database.dispose()
    return problems


def crash_and_restart(tmp_path: Path, url: str) -> dict[str, object]:
    env = {
        "FLEETPLANE_DATABASE_URL": url,
        "FLEETPLANE_BOOTSTRAP_ADMIN_TOKEN": BOOTSTRAP_TOKEN,
        "FLEETPLANE_LIVENESS_FLUSH_SECONDS": str(FLUSH_SECONDS),
    }
    server = Server(port=free_port(), env=env, log_path=tmp_path / "crash.log")
    server.start()
    try:
        fleet = Fleet.create(server.url, runtimes=6)
        load = Load(fleet, [server.url], timeout=5, max_seconds=30)
        with load:
            time.sleep(2.5)
            server.kill()
            time.sleep(0.3)  # requests in flight fail; nothing more is acknowledged
        record = load.record
        assert record.acknowledged_edits, record.statuses
        assert len(record.acknowledged_beats) == len(fleet.credentials)

        server.start()  # same port, same database
        with httpx.Client(base_url=server.url, headers=OPERATOR, timeout=10) as http:
            revisions = all_pages(http, f"/api/v1/workspaces/{fleet.workspace_id}/config/revisions")
            audit = all_pages(http, f"/api/v1/workspaces/{fleet.workspace_id}/audit")
            fleet_view = http.get(f"/api/v1/workspaces/{fleet.workspace_id}/fleet").json()
    finally:
        server.stop()

    stored = {r["number"]: r["hash"] for r in revisions}
    for number, digest, _document in record.acknowledged_edits:
        assert stored.get(number) == digest, f"acknowledged revision {number} lost"
    # Revisions are 1..N without gaps, and each edit has exactly one audit row, in order.
    assert sorted(stored) == list(range(1, len(stored) + 1))
    edits = [entry for entry in reversed(audit) if entry["action"] == "config.update"]
    assert [e["afterHash"] for e in edits] == [stored[n] for n in range(2, len(stored) + 1)]
    assert [e["beforeHash"] for e in edits] == [stored[n] for n in range(1, len(stored))]

    losses = []
    seen = {r["agentId"]: r["lastHeartbeatAt"] for r in fleet_view["runtimes"]}
    for agent, acknowledged in record.acknowledged_beats.items():
        assert seen[agent] is not None, agent
        stored_at = datetime.fromisoformat(seen[agent].replace("Z", "+00:00"))
        losses.append((acknowledged - stored_at).total_seconds())
    assert max(losses) <= LOSS_BOUND, losses
    assert consistency_problems(url) == []
    return {
        "acknowledged_edits": len(record.acknowledged_edits),
        "unacknowledged_but_stored": len(stored) - 1 - len(record.acknowledged_edits),
        "requests": sum(record.statuses.values()),
        "statuses": record.statuses,
        "max_heartbeat_loss_seconds": max(losses),
    }


def test_sigkill_on_sqlite_loses_no_acknowledged_change(
    tmp_path: Path, sqlite_template: Path
) -> None:
    path = tmp_path / "crash.db"
    path.write_bytes(sqlite_template.read_bytes())
    result = crash_and_restart(tmp_path, f"sqlite:///{path}")
    figures.record("crash sqlite", result)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert result["acknowledged_edits"]


@pytest.mark.postgres
def test_sigkill_on_postgresql_loses_no_acknowledged_change(
    tmp_path: Path, fresh_postgres_url: str
) -> None:
    result = crash_and_restart(tmp_path, fresh_postgres_url)
    figures.record("crash postgresql", result)
    assert result["acknowledged_edits"]
