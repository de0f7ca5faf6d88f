"""Migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import text

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
