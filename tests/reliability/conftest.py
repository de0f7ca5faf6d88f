"""Fixtures of the reliability tests: a SQLite database and settings for apps they build."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from fleetplane.store import migrate
from fleetplane.store.db import Database


@pytest.fixture
def sqlite_database(tmp_path: Path, sqlite_template: Path) -> Iterator[Database]:
    """A migrated, empty SQLite database (for tests whose subject is not the storage layer)."""
    path = tmp_path / "fleetplane.db"
    shutil.copy(sqlite_template, path)
    database = Database(f"sqlite+pysqlite:///{path}")
    yield database
    database.dispose()


@pytest.fixture
def fresh_postgres_url(postgres_database_url: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database of its own (for servers run as subprocesses)."""
    admin = Database(postgres_database_url)
    name = f"fleetplane_rel_{uuid.uuid4().hex[:12]}"
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.engine.url.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
