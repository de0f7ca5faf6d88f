"""Server time of the Observe dashboard at 1,000 workspaces and 100,000 runtimes (SPEC 5).

Seeds a SQLite file (and PostgreSQL, when reachable, in a database of its own that is dropped
afterwards) with bulk inserts, signs in through the dashboard form, then times
`GET /dashboard/observe` through the ASGI app in-process: the figures are server time with
no network. Writes them, with the command, machine and date, into docs/benchmarks.md between
`<!-- bench:observe -->` markers.

    python bench/bench_observe.py [--workspaces 1000] [--runtimes 100000] [--requests 20]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import insert, text

import fleetplane.dashboard
from fleetplane.api.app import create_app
from fleetplane.domain.config_hash import config_hash
from fleetplane.domain.versions import version_sort_key
from fleetplane.settings import Settings, normalise_database_url
from fleetplane.store import migrate
from fleetplane.store.db import Database
from fleetplane.store.models import ConfigRevision, Org, OrgMember, Runtime, User, Workspace

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- bench:observe -->", "<!-- /bench:observe -->"
POSTGRES = os.environ.get(
    "FLEETPLANE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
GOAL_MS = 500.0
EMAIL = "bench@fleetplane.local"
HALF_EMAIL = "half@fleetplane.local"  # owns half the orgs: the grouped query filters by workspace
PASSWORD = "bench-password"  # noqa: S105 - a throwaway account in a throwaway database
ORGS = 10
VERSIONS = ["3.12.6", "3.12.6", "3.12.6", "3.7.0", "3.5.1", "3.3.0"]
NOW = dt.datetime.now(dt.UTC)
BATCH = 10_000


@dataclass
class Figures:
    """Server times in milliseconds for one database."""

    database: str
    seed_seconds: float
    scenarios: dict[str, list[float]]


def percentile(samples: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(1, round(share * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


def seed(database: Database, *, workspaces: int, runtimes: int) -> None:
    """ORGS orgs of `workspaces` workspaces holding `runtimes` runtimes; one user owns every
    org, another half of them."""
    rng = random.Random(1)
    user_id = uuid.uuid4().hex
    half_id = uuid.uuid4().hex
    orgs = [uuid.uuid4().hex for _ in range(ORGS)]
    workspace_rows: list[dict[str, Any]] = []
    revision_rows: list[dict[str, Any]] = []
    for index in range(workspaces):
        document = {"lanes": [{"name": f"lane-{index}", "wip_limit": 2}]}
        previous = {"lanes": [{"name": f"lane-{index}", "wip_limit": 1}]}
        workspace_id = uuid.uuid4().hex
        mode = "tighten-only" if index % 7 == 0 else "authoritative"
        workspace_rows.append(
            {
                "id": workspace_id,
                "org_id": orgs[index % ORGS],
                "name": f"workspace-{index:04d}",
                "policy_mode": mode,
                "previous_policy_mode": None,
                "dev_override_until": None,
                "policy": None,
                "config_revision": 2,
                "config_hash": config_hash(document),
                "config_updated_at": NOW - dt.timedelta(hours=index % 48),
                "created_at": NOW - dt.timedelta(days=30),
            }
        )
        for number, body in ((1, previous), (2, document)):
            revision_rows.append(
                {
                    "id": uuid.uuid4().hex,
                    "workspace_id": workspace_id,
                    "number": number,
                    "hash": config_hash(body),
                    "document": body,
                    "author": EMAIL,
                    "created_at": NOW - dt.timedelta(days=2 - number),
                }
            )
    with database.engine.begin() as connection:
        password_hash = PasswordHasher().hash(PASSWORD)
        connection.execute(
            insert(User),
            [
                {
                    "id": uid,
                    "email": email,
                    "password_hash": password_hash,
                    "is_superuser": False,
                    "created_at": NOW,
                }
                for uid, email in ((user_id, EMAIL), (half_id, HALF_EMAIL))
            ],
        )
        connection.execute(
            insert(Org),
            [{"id": o, "name": f"org-{n:02d}", "created_at": NOW} for n, o in enumerate(orgs)],
        )
        connection.execute(
            insert(OrgMember),
            [{"org_id": o, "user_id": user_id, "role": "owner"} for o in orgs]
            + [{"org_id": o, "user_id": half_id, "role": "owner"} for o in orgs[: ORGS // 2]],
        )
        connection.execute(insert(Workspace), workspace_rows)
        connection.execute(insert(ConfigRevision), revision_rows)
    previous_hash = {r["workspace_id"]: r["hash"] for r in revision_rows if r["number"] == 1}
    batch: list[dict[str, Any]] = []
    for index in range(runtimes):
        workspace = workspace_rows[index % workspaces]
        roll = rng.random()
        if roll < 0.70:
            last = NOW - dt.timedelta(seconds=rng.randint(0, 290))
        elif roll < 0.80:
            last = NOW - dt.timedelta(minutes=rng.randint(6, 59))
        elif roll < 0.90:
            last = NOW - dt.timedelta(hours=rng.randint(2, 48))
        else:
            last = None
        version = rng.choice(VERSIONS) if last is not None else None
        observed = None
        if last is not None:
            observed = (
                workspace["config_hash"] if rng.random() < 0.85 else previous_hash[workspace["id"]]
            )
        batch.append(
            {
                "id": uuid.uuid4().hex,
                "workspace_id": workspace["id"],
                "agent_id": f"agent-{index:06d}",
                "host_id": f"host-{index % 5000:04d}",
                "labels": None,
                "version": version,
                "version_key": version_sort_key(version) if version else None,
                "credential_hash": None,
                "enrolled_at": NOW - dt.timedelta(days=3),
                "last_heartbeat_at": last,
                "observed_config_hash": observed,
                "apply_failed_hash": None,
                "apply_failed_message": None,
                "last_session_id": None,
            }
        )
        if len(batch) == BATCH:
            with database.engine.begin() as connection:
                connection.execute(insert(Runtime), batch)
            batch = []
    if batch:
        with database.engine.begin() as connection:
            connection.execute(insert(Runtime), batch)
    if database.dialect == "postgresql":
        with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE"))
    else:
        with database.engine.begin() as connection:
            connection.exec_driver_sql("ANALYZE")


def sign_in(client: TestClient, email: str) -> None:
    """Sign in through the dashboard form (a new session replaces the previous one)."""
    client.cookies.clear()
    form = client.get("/dashboard/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    signed = client.post(
        "/dashboard/login",
        data={"email": email, "password": PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert signed.status_code == 303, signed.text


def measure(database: Database, *, requests: int) -> dict[str, list[float]]:
    """Server times of the Observe page (and its variants) through the ASGI app."""
    settings = Settings(database_url=database.url, public_url="http://bench.local")
    app = fleetplane.dashboard.ensure_installed(create_app(settings, database=database))
    scenarios = [
        (EMAIL, "observe, first page of 50", "/dashboard/observe"),
        (EMAIL, "observe, needs-attention filter", "/dashboard/observe?attention=1"),
        (EMAIL, "observe, last page", "/dashboard/observe?page=20"),
        (HALF_EMAIL, "observe, first page, user seeing half the workspaces", "/dashboard/observe"),
    ]
    timings: dict[str, list[float]] = {}
    with TestClient(app, base_url="http://bench.local") as client:
        for email, name, path in scenarios:
            sign_in(client, email)
            for _ in range(2):  # warm the caches and the connection pool
                assert client.get(path).status_code == 200
            samples = []
            for _ in range(requests):
                started = time.perf_counter()
                response = client.get(path)
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200
            assert response.text.count("<tr data-workspace=") >= 1
            timings[name] = samples
    return timings


@contextlib.contextmanager
def sqlite_database() -> Iterator[Database]:
    with tempfile.TemporaryDirectory(prefix="fleetplane-bench-") as directory:
        url = f"sqlite+pysqlite:///{Path(directory) / 'observe.db'}"
        migrate.upgrade(url)
        database = Database(url)
        try:
            yield database
        finally:
            database.dispose()


@contextlib.contextmanager
def postgres_database() -> Iterator[Database | None]:
    admin = Database(normalise_database_url(POSTGRES))
    try:
        admin.ping()
    except Exception as exc:  # noqa: BLE001 - unreachable PostgreSQL just skips that database
        print(f"PostgreSQL at {POSTGRES} is unreachable ({type(exc).__name__}); skipping it")
        admin.dispose()
        yield None
        return
    name = f"fleetplane_bench_{uuid.uuid4().hex[:10]}"
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.engine.url.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    database = Database(url)
    try:
        yield database
    finally:
        database.dispose()
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(database: Database, *, workspaces: int, runtimes: int, requests: int) -> Figures:
    started = time.perf_counter()
    seed(database, workspaces=workspaces, runtimes=runtimes)
    seeded = time.perf_counter() - started
    print(
        f"{database.dialect}: seeded {workspaces:,} workspaces, "
        f"{runtimes:,} runtimes in {seeded:.1f} s"
    )
    figures = Figures(database.dialect, seeded, measure(database, requests=requests))
    for name, samples in figures.scenarios.items():
        print(
            f"  {name}: median {statistics.median(samples):.0f} ms, "
            f"p95 {percentile(samples, 0.95):.0f} ms over {len(samples)} requests"
        )
    return figures


def section(results: list[Figures], args: argparse.Namespace) -> str:
    uname = " ".join(platform.uname()[:5])
    lines = [
        START,
        "## Observe dashboard (`bench/bench_observe.py`)",
        "",
        f"Command: `python bench/bench_observe.py --workspaces {args.workspaces} "
        f"--runtimes {args.runtimes} --requests {args.requests}`.",
        f"Machine: `{uname}`, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
        f"{os.getloadavg()[0]:.1f} when done. "
        f"Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
        f"Fleet: {args.workspaces:,} workspaces in {ORGS} orgs, {args.runtimes:,} runtimes, "
        "read by a user owning every org (and by one owning half of them). Server time: "
        "`GET` through the ASGI app in-process (signed-in session, no network), after 2 "
        "warm-up requests. The machine is shared with other work: the load average shows how "
        "busy it was.",
        "",
        "| database | page | goal | median | p95 | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for figures in results:
        for name, samples in figures.scenarios.items():
            p95 = percentile(samples, 0.95)
            verdict = "met" if p95 <= GOAL_MS else "**missed**"
            lines.append(
                f"| {figures.database} | {name} | server time ≤ {GOAL_MS:.0f} ms | "
                f"{statistics.median(samples):.0f} ms | {p95:.0f} ms | {verdict} |"
            )
    lines += [
        "",
        "Every page runs one grouped query (`services/observe.py`: each runtime's health and "
        "drift, then GROUP BY workspace with a count per state, over every visible workspace), "
        "so totals and the attention filter cover every page, not only the one shown.",
        END,
    ]
    return "\n".join(lines)


def write(block: str) -> None:
    current = (
        DOC.read_text()
        if DOC.exists()
        else "# Benchmarks\n\nFigures measured by the scripts in `bench/`.\n"
    )
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: block, current)
    else:
        updated = current.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(updated)
    print(f"wrote the figures to {DOC.relative_to(ROOT)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--runtimes", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--no-postgres", action="store_true", help="measure SQLite only")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    results = []
    with sqlite_database() as database:
        results.append(
            run(
                database, workspaces=args.workspaces, runtimes=args.runtimes, requests=args.requests
            )
        )
    if not args.no_postgres:
        with postgres_database() as database:
            if database is not None:
                results.append(
                    run(
                        database,
                        workspaces=args.workspaces,
                        runtimes=args.runtimes,
                        requests=args.requests,
                    )
                )
    if not args.no_write:
        write(section(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
