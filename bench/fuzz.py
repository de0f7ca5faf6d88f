"""`make fuzz`: the API fuzzing of tests/reliability at a larger size, figures in docs/reliability.md.

Runs schemathesis over every operation of /api/v1/openapi.json against the ASGI app on a fresh
SQLite database (and PostgreSQL with --postgres), each generated case sent with an operator
token, a workspace key and no credential. Prints and records the requests sent, the statuses,
the 5xx count and every contract failure with a curl reproduction.

    python bench/fuzz.py [--examples 40] [--seed 1] [--postgres] [--no-write]
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import text  # noqa: E402
from tests.conftest import BOOTSTRAP_TOKEN, POSTGRES_URL, Clock  # noqa: E402
from tests.reliability.fuzzing import FuzzReport, fuzz_app  # noqa: E402

from fleetplane.api.app import create_app  # noqa: E402
from fleetplane.settings import Settings  # noqa: E402
from fleetplane.store import migrate  # noqa: E402
from fleetplane.store.db import Database  # noqa: E402

DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- fuzz:figures -->", "<!-- /fuzz:figures -->"


def run(url: str, *, examples: int, seed: int) -> FuzzReport:
    """Fuzz an app on the (migrated, empty) database at `url`."""
    database = Database(url)
    settings = Settings(
        database_url=url,
        public_url="https://fleet.test",
        bootstrap_admin_token=BOOTSTRAP_TOKEN,
        max_body_bytes=64 * 1024,
    )
    app = create_app(settings, database=database, clock=Clock())
    try:
        with TestClient(app, base_url="https://fleet.test", raise_server_exceptions=False) as c:
            return fuzz_app(c, max_examples=examples, seed=seed)
    finally:
        database.dispose()


def sqlite_url(folder: Path) -> str:
    url = f"sqlite+pysqlite:///{folder / 'fuzz.db'}"
    migrate.upgrade(url)
    return url


def postgres_url() -> tuple[str, Database, str]:
    admin = Database(Settings(database_url=POSTGRES_URL).sqlalchemy_url)
    name = f"fleetplane_fuzz_{uuid.uuid4().hex[:10]}"
    with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.engine.url.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    return url, admin, name


def row(backend: str, report: FuzzReport) -> str:
    statuses = ", ".join(f"{status}: {n:,}" for status, n in sorted(report.statuses.items()))
    return (
        f"| {backend} | {report.operations} | {report.requests:,} | {report.server_error_count} "
        f"| {len(report.failures)} | {report.seconds:.0f} s | {statuses} |"
    )


def write(rows: list[str], reports: list[FuzzReport], args: argparse.Namespace) -> None:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    failures = [f for report in reports for f in report.failures]
    block = [
        BEGIN,
        f"Command: `python bench/fuzz.py --examples {args.examples} --seed {args.seed}"
        f"{' --postgres' if args.postgres else ''}`. Machine: {platform.platform()}. Date: {when}.",
        "",
        "| database | operations | requests | 5xx | contract failures | duration | statuses |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Failures found in this run: " + ("none." if not failures else f"{len(failures)}, below."),
        *(f"\n```\n{failure[:1500]}\n```" for failure in failures[:10]),
        END,
    ]
    document = DOC.read_text()
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(document):
        raise SystemExit(f"{DOC} has no {BEGIN} … {END} block to fill")
    DOC.write_text(pattern.sub(lambda _m: "\n".join(block), document))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=40, help="cases per operation")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", action="store_true", help="also fuzz on PostgreSQL")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()
    rows, reports = [], []
    with tempfile.TemporaryDirectory() as folder:
        report = run(sqlite_url(Path(folder)), examples=args.examples, seed=args.seed)
        rows.append(row("sqlite", report))
        reports.append(report)
    if args.postgres:
        url, admin, name = postgres_url()
        try:
            report = run(url, examples=args.examples, seed=args.seed)
        finally:
            with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        rows.append(row("postgresql", report))
        reports.append(report)
    for line in rows:
        print(line)
    for report in reports:
        for failure in report.failures:
            print("\n" + failure)
    if not args.no_write:
        write(rows, reports, args)
    return 1 if any(r.failures for r in reports) else 0


if __name__ == "__main__":
    raise SystemExit(main())
