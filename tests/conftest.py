"""Shared fixtures: both databases, the app over ASGI with a settable clock, and factories."""

from __future__ import annotations

import configparser
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import ruamel.yaml
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text

from fleetplane.api.app import create_app
from fleetplane.settings import Settings
from fleetplane.store import migrate
from fleetplane.store.db import Database
from fleetplane.store.models import Base

POSTGRES_URL = os.environ.get(
    "FLEETPLANE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _vectors_dir() -> Path:
    """The reference vectors of the shared contract (`shared/vectors`).

    `FLEETPLANE_VECTORS_DIR` if set; else `shared/vectors` beside this checkout, or beside the
    local checkout it was cloned from (a clone made elsewhere, as CI makes one, still finds
    them). Tests that read a vector fail when none of these holds it.
    """
    explicit = os.environ.get("FLEETPLANE_VECTORS_DIR")
    if explicit:
        return Path(explicit)
    root = Path(__file__).resolve().parents[1]
    candidates = [root.parent / "shared" / "vectors"]
    git_config = configparser.ConfigParser(strict=False)
    git_config.read(root / ".git" / "config")
    origin = git_config.get('remote "origin"', "url", fallback="")
    if origin and Path(origin).is_dir():
        candidates.append(Path(origin).resolve().parent / "shared" / "vectors")
    return next((path for path in candidates if path.is_dir()), candidates[0])


VECTORS_DIR = _vectors_dir()
START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    """A server clock tests move by hand."""

    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _postgres_admin_url() -> str:
    return Settings(database_url=POSTGRES_URL).sqlalchemy_url


@pytest.fixture(scope="session")
def postgres_database_url() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test run; dropped afterwards."""
    admin = Database(_postgres_admin_url())
    try:
        admin.ping()
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "no PostgreSQL here"
        admin.dispose()
        if IN_CI:
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is unreachable under CI: {exc}")
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} is unreachable: {type(exc).__name__}")
    name = f"fleetplane_test_{uuid.uuid4().hex[:12]}"
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.engine.url.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file copied for each test."""
    path = tmp_path_factory.mktemp("template") / "fleetplane.db"
    migrate.upgrade(f"sqlite+pysqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty database: every storage and API test runs on both."""
    if request.param == "sqlite":
        path = tmp_path / "fleetplane.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        db = Database(f"sqlite+pysqlite:///{path}")
    else:
        db = Database(request.getfixturevalue("postgres_database_url"))
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with db.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    yield db
    db.dispose()


@pytest.fixture
def clock() -> Clock:
    """The server clock the app sees."""
    return Clock()


BOOTSTRAP_TOKEN = "fp_op_bootstrap-token-for-tests-0123456789abcdef"


@pytest.fixture
def settings(database: Database) -> Settings:
    """Settings for the app under test."""
    return Settings(
        database_url=database.url,
        public_url="https://fleet.test",
        bootstrap_admin_token=BOOTSTRAP_TOKEN,
        max_body_bytes=64 * 1024,
    )


@pytest.fixture
def client(settings: Settings, database: Database, clock: Clock) -> Iterator[TestClient]:
    """The app over ASGI (real HTTP semantics, no sockets), bootstrapped with a superuser."""
    app = create_app(settings, database=database, clock=clock)
    with TestClient(app, base_url="https://fleet.test") as test_client:
        yield test_client


def auth(token: str) -> dict[str, str]:
    """An Authorization header."""
    return {"Authorization": f"Bearer {token}"}


ADMIN = auth(BOOTSTRAP_TOKEN)


@dataclass
class WorkspaceFixture:
    """An org, a workspace and its key, made through the API."""

    org_id: str
    workspace_id: str
    api_key: str


def make_workspace(
    client: TestClient, *, name: str = "ws", policy_mode: str | None = None
) -> WorkspaceFixture:
    """Create an org, a workspace and a workspace key through the operator API."""
    org = client.post("/api/v1/orgs", json={"name": f"org of {name}"}, headers=ADMIN)
    assert org.status_code == 201, org.text
    body: dict[str, Any] = {"name": name}
    if policy_mode:
        body["policyMode"] = policy_mode
    workspace = client.post(f"/api/v1/orgs/{org.json()['id']}/workspaces", json=body, headers=ADMIN)
    assert workspace.status_code == 201, workspace.text
    key = client.post(f"/api/v1/workspaces/{workspace.json()['id']}/api-key", headers=ADMIN)
    assert key.status_code == 201, key.text
    return WorkspaceFixture(org.json()["id"], workspace.json()["id"], key.json()["apiKey"])


def snapshot(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, to prove a refused request changed nothing."""
    tables = inspect(database.engine).get_table_names()
    result = {}
    with database.engine.connect() as conn:
        for table in sorted(tables):
            if table == "alembic_version":
                continue
            rows = conn.execute(text(f'SELECT * FROM "{table}"')).all()
            result[table] = sorted(tuple(map(repr, row)) for row in rows)
    return result


@pytest.fixture
def parser_events(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events the YAML parser has handed out, one counter per parse: proof that a
    refused document was refused after bounded work, without timing anything."""
    counts: list[int] = []
    parse = ruamel.yaml.YAML.parse

    def counted(self: ruamel.yaml.YAML, stream: str) -> Iterator[Any]:
        counts.append(0)
        for event in parse(self, stream):
            counts[-1] += 1
            yield event

    monkeypatch.setattr(ruamel.yaml.YAML, "parse", counted)
    return counts
