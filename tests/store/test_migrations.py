"""Migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text

from fleetplane.services import lifecycle
from fleetplane.store import migrate
from fleetplane.store.db import Database


def test_models_and_migrations_agree(database: Database) -> None:
    # Raises if autogenerate would emit any operation.
    migrate.check(database.url)


def test_sqlite_runs_in_wal_with_foreign_keys(database: Database) -> None:
    if database.dialect != "sqlite":
        pytest.skip("SQLite pragmas do not apply to PostgreSQL")
    with database.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_the_archived_count_can_use_its_partial_index(database: Database) -> None:
    # Every fleet page counts archived runtimes: that must not need a scan of the workspace.
    seen: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, parameters: Any, _x: Any, _m: bool) -> None:
        seen.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        with database.read() as session:
            assert lifecycle.archived_count(session, workspace_id="w") == 0
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
    statement, parameters = next((s, p) for s, p in seen if "archived_at" in s)
    with database.engine.begin() as connection:
        if database.dialect == "sqlite":
            rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            plan = " ".join(str(row[-1]) for row in rows)
        else:
            # Whether the planner may use it, whatever the table's current statistics.
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            rows = connection.exec_driver_sql("EXPLAIN " + statement, parameters)
            plan = " ".join(str(row[0]) for row in rows)
    assert "ix_runtimes_archived" in plan, plan
