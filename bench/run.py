"""The runtime-surface benchmark suite behind `make bench` (issue: scale).

Starts the servers as real processes (`fleetplane serve` and a bare FastAPI app, same worker
count), drives them with wrk from a separate process, and writes every figure with its command,
machine and date into docs/benchmarks.md between `<!-- bench:runtime -->` markers.

    python bench/run.py [--quick] [--databases sqlite,postgresql] [--runs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, text

from fleetplane.api.alerts import sweep_policy
from fleetplane.domain.config_hash import config_hash
from fleetplane.domain.tokens import token_display_prefix, token_hash
from fleetplane.domain.versions import version_sort_key
from fleetplane.services.sweeper import sweep_once
from fleetplane.settings import Settings, normalise_database_url
from fleetplane.store import migrate
from fleetplane.store.db import Database
from fleetplane.store.models import ConfigRevision, Org, Runtime, Workspace, WorkspaceKey

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOC = ROOT / "docs" / "benchmarks.md"
POSTGRES = os.environ.get(
    "FLEETPLANE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
KEY = "fp_ws_benchmark-key-0000000000000000000000000000"
DESIRED = {"lanes": [{"name": "bench", "wip_limit": 2}]}
WORKERS = 2
THREADS = 2  # wrk's
CONNECTIONS = 32
SUSTAINED_RATE = 8_000
SUSTAINED_CONNECTIONS = 64
SUSTAINED_SECONDS = 60


@dataclass
class Fleet:
    url: str
    small_workspace: str
    big_workspace: str
    big_runtimes: int


@dataclass
class Results:
    database: str
    figures: dict[str, Any] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seed(url: str, *, small: int, big: int) -> Fleet:
    """A workspace of `small` and one of `big` runtimes in every state, by bulk insert.

    Times are relative to the moment of seeding, not to the start of the suite: the second
    database is seeded minutes later, and its fleet must have heartbeated just as lately.
    """
    now = dt.datetime.now(dt.UTC)
    migrate.upgrade(url)
    database = Database(url)
    desired = config_hash(DESIRED)
    ids = {}
    with database.unit_of_work() as session:
        org = Org(name="bench", created_at=now)
        session.add(org)
        session.flush()
        for name in ("small", "big"):
            workspace = Workspace(
                org_id=org.id,
                name=name,
                policy_mode="authoritative",
                config_revision=1,
                config_hash=desired,
                config_updated_at=now,
                created_at=now,
            )
            session.add(workspace)
            session.flush()
            session.add(
                ConfigRevision(
                    workspace_id=workspace.id,
                    number=1,
                    hash=desired,
                    document=DESIRED,
                    author="bench",
                    created_at=now,
                )
            )
            ids[name] = workspace.id
        session.execute(
            insert(WorkspaceKey).values(
                id=uuid.uuid4().hex,
                workspace_id=ids["big"],
                key_hash=token_hash(KEY),
                display_prefix=token_display_prefix(KEY),
                created_at=now,
            )
        )
    versions = ["3.12.6", "3.12.6", "3.8.0", "3.5.1", "3.3.0", None]
    # The small workspace has runtimes in every health state, for the fleet-page filters. The
    # big one is a fleet in its steady state, as heartbeats would leave it: every runtime has
    # heartbeated lately (the heartbeat runs are not a first connection of the whole fleet).
    ages = {"small": [5, 30, 600, 7200, None], "big": [5, 10, 15, 20, 25]}
    for name, count in (("small", small), ("big", big)):
        rows = []
        for n in range(count):
            version = versions[n % len(versions)]
            age = ages[name][n % 5]
            rows.append(
                {
                    "id": uuid.uuid4().hex,
                    "workspace_id": ids[name],
                    "agent_id": f"rt-{n:06d}",
                    "enrolled_at": now,
                    "version": version,
                    "version_key": version_sort_key(version) if version else None,
                    "last_heartbeat_at": now - dt.timedelta(seconds=age)
                    if age is not None
                    else None,
                    "observed_config_hash": desired if n % 3 else "0" * 64,
                    # Steady state: each runtime has been heartbeating in its current session.
                    "last_session_id": f"rt-{n:06d}",
                }
            )
            if len(rows) == 10_000:
                with database.engine.begin() as connection:
                    connection.execute(insert(Runtime), rows)
                rows = []
        if rows:
            with database.engine.begin() as connection:
                connection.execute(insert(Runtime), rows)
    # A server that has been running has swept: every runtime's status is on record.
    sweep_once(
        database,
        policy=replace(sweep_policy(Settings()), pause_seconds=0, rest_ratio=0),
        now=now,
        force=True,
    )
    # A bulk load leaves the planner without statistics until something analyzes the tables
    # (autovacuum's analyze on a production PostgreSQL, never on SQLite): do it now, as after
    # any bulk load. Without it PostgreSQL estimated a few dozen rows for a 100,000-runtime
    # workspace and sorted the whole workspace on disk for every fleet page.
    analyze(url)
    database.dispose()
    return Fleet(url, ids["small"], ids["big"], big)


def analyze(url: str) -> None:
    """Refresh the planner's statistics, as autovacuum would on a production PostgreSQL."""
    database = Database(url)
    with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    database.dispose()


def autovacuum_on(url: str) -> bool:
    database = Database(url)
    with database.engine.connect() as conn:
        setting = conn.execute(text("SHOW autovacuum")).scalar_one()
    database.dispose()
    return bool(setting == "on")


@contextlib.contextmanager
def server(
    command: list[str], port: int, env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, ready on `port`, stopped with SIGTERM (a clean shutdown) afterwards."""
    handle = log.open("wb")
    process = subprocess.Popen(
        command,
        env={**os.environ, **env},
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if (
                httpx.get(
                    f"http://127.0.0.1:{port}/healthz"
                    if "fleetplane" in command[0]
                    else f"http://127.0.0.1:{port}/",
                    timeout=1,
                ).status_code
                == 200
            ):
                break
        time.sleep(0.3)
    else:
        # The whole group: a server that started its workers and then failed leaves them behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        handle.close()


def rss_mb(pid: int) -> list[float]:
    """Resident memory of a process's children (the workers), in MB."""
    sizes = []
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for child in children:
        status = Path(f"/proc/{child}/status").read_text()
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        if match:
            sizes.append(int(match.group(1)) / 1024)
    return sizes


def wrk(
    url: str,
    *,
    seconds: int,
    script: Path | None = None,
    env: dict[str, str] | None = None,
    connections: int = CONNECTIONS,
) -> dict[str, Any]:
    command = ["wrk", f"-t{THREADS}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        command += ["-s", str(script)]
    output = subprocess.run(
        command + [url],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    p99_match = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99 = float(p99_match.group(1)) * scale[p99_match.group(2)] if p99_match else float("nan")
    failed_match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors_match = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    failed = int(failed_match.group(1)) if failed_match else 0
    if errors_match:
        failed += sum(int(g) for g in errors_match.groups())
    figures: dict[str, Any] = {"rate": rate, "p99_ms": p99, "failed": failed, "requests": total}
    walked = re.search(r"walked: ([\d,]+)", output)  # heartbeat.lua: requests per thread
    if walked:
        figures["walked"] = [int(count) for count in walked.group(1).split(",")]
    return figures


class Heartbeats:
    """wrk runs of heartbeat.lua that walk the fleet's agent ids on from where the last stopped.

    Every run of wrk restarts its script; without the carried position, short runs would
    heartbeat the fleet's first ids over and over and the rest would stay cold in every cache.
    """

    def __init__(self, url: str, script_env: dict[str, str]) -> None:
        self.url = url
        self.script_env = script_env
        runtimes = int(script_env["BENCH_RUNTIMES"])
        # Each wrk thread walks its own slice of the ids (thread t: t, t + THREADS, ...).
        self.slices = [len(range(t, runtimes, THREADS)) for t in range(THREADS)]
        self.positions = [0] * THREADS
        self.sent = 0

    def run(
        self, *, seconds: int, connections: int = CONNECTIONS, delay_ms: int | None = None
    ) -> dict[str, Any]:
        env = {
            **self.script_env,
            "BENCH_THREADS": str(THREADS),
            "BENCH_START": ",".join(map(str, self.positions)),
        }
        if delay_ms is not None:
            env["BENCH_DELAY_MS"] = str(delay_ms)
        figures = wrk(
            self.url,
            seconds=seconds,
            script=ROOT / "bench" / "heartbeat.lua",
            env=env,
            connections=connections,
        )
        self.sent += int(figures["requests"])
        walked = figures["walked"]
        self.positions = [
            (position + count) % size
            for position, count, size in zip(self.positions, walked, self.slices, strict=True)
        ]
        return figures


def sustained(heartbeats: Heartbeats) -> dict[str, float]:
    """A paced 60 s heartbeat run near SUSTAINED_RATE (wrk has no fixed-rate mode).

    Each of SUSTAINED_CONNECTIONS connections waits a fixed delay after every answer; short
    calibration runs pick the delay whose rate is closest to the target from above.
    """
    best: tuple[float, int] | None = None
    ideal = SUSTAINED_CONNECTIONS * 1000 / SUSTAINED_RATE
    for delay_ms in range(max(int(ideal), 1), 0, -1):
        rate = heartbeats.run(seconds=5, connections=SUSTAINED_CONNECTIONS, delay_ms=delay_ms)[
            "rate"
        ]
        print(f"[sustained] delay {delay_ms} ms: {rate:,.0f}/s", flush=True)
        best = (rate, delay_ms)
        if rate >= SUSTAINED_RATE:
            break
    assert best is not None
    figures = heartbeats.run(
        seconds=SUSTAINED_SECONDS, connections=SUSTAINED_CONNECTIONS, delay_ms=best[1]
    )
    return {**figures, "delay_ms": best[1]}


def median_spread(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def latency(url: str, headers: dict[str, str], samples: int) -> float:
    """p95 of sequential requests, in ms (client-side, loopback)."""
    times = []
    with httpx.Client(headers=headers, timeout=30) as client:
        client.get(url).raise_for_status()
        for _ in range(samples):
            start = time.perf_counter()
            client.get(url).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.quantiles(times, n=20)[18]


def wal_lsn(url: str) -> int:
    database = Database(url)
    with database.engine.connect() as connection:
        value = connection.execute(
            text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
        ).scalar()
    database.dispose()
    return int(value)


def transactions(url: str) -> int:
    database = Database(url)
    with database.engine.connect() as connection:
        value = connection.execute(
            text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        ).scalar()
    database.dispose()
    return int(value)


# Per-process counters of /metrics that explain the heartbeat tail (summed over the workers).
WORKER_FIGURES: dict[str, tuple[str, dict[str, str] | None]] = {
    "misses": ("fleetplane_heartbeat_cache_misses_total", {}),
    "full_route": ("fleetplane_heartbeat_full_route_total", None),  # None: every label summed
    "warmed": ("fleetplane_cache_warmed_runtimes_total", {}),
    "loop_samples": ("fleetplane_event_loop_lag_seconds_count", {}),
    "loop_within_50ms": ("fleetplane_event_loop_lag_seconds_bucket", {"le": "0.05"}),
    "full_gc_passes": ("fleetplane_gc_pause_seconds_count", {"generation": "2"}),
    "full_gc_seconds": ("fleetplane_gc_pause_seconds_sum", {"generation": "2"}),
}


def worker_totals(url: str) -> dict[str, float]:
    """WORKER_FIGURES summed over the server's workers, read while no load runs.

    Each scrape reaches one worker at random; a worker is told apart by the rows its flushes
    wrote (a scrape flushes first, so at rest that count stays put).
    """
    seen: dict[float, dict[str, float]] = {}
    for _ in range(200):
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
            for sample in family.samples
        }
        worker = samples[("fleetplane_liveness_rows_written_total", ())]
        seen[worker] = {
            figure: sum(value for (sample, _), value in samples.items() if sample == name)
            if labels is None
            else samples.get((name, tuple(sorted(labels.items()))), 0.0)
            for figure, (name, labels) in WORKER_FIGURES.items()
        }
        if len(seen) == WORKERS:
            break
    if len(seen) < WORKERS:
        raise RuntimeError(f"/metrics reached {len(seen)} of {WORKERS} workers in 200 scrapes")
    return {figure: sum(worker[figure] for worker in seen.values()) for figure in WORKER_FIGURES}


def operator_token(url: str) -> str:
    """A superuser token for the fleet reads."""
    from fleetplane.services import accounts

    database = Database(url)
    now = dt.datetime.now(dt.UTC)
    with database.unit_of_work() as session:
        user = accounts.create_user(
            session,
            email=f"bench-{uuid.uuid4().hex[:6]}",
            password=None,
            is_superuser=True,
            actor="bench",
            now=now,
        )
        _, token = accounts.create_operator_token(session, user=user, name="bench", now=now)
    database.dispose()
    return token


def bench_database(kind: str, *, quick: bool, runs: int, workdir: Path) -> Results:
    results = Results(kind)
    big = 10_000 if quick else 100_000
    seconds = 2 if quick else 15
    if kind == "sqlite":
        url = normalise_database_url(f"sqlite:///{workdir / 'bench.db'}")
    else:
        admin = Database(normalise_database_url(POSTGRES))
        name = f"fleetplane_bench_{uuid.uuid4().hex[:8]}"
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = admin.engine.url.set(database=name).render_as_string(hide_password=False)
    print(f"[{kind}] seeding 10,000 + {big:,} runtimes", flush=True)
    fleet = seed(url, small=10_000, big=big)
    results.figures["runtimes"] = big
    fp_port, bare_port = free_port(), free_port()
    env = {
        "FLEETPLANE_DATABASE_URL": url,
        "FLEETPLANE_PUBLIC_URL": f"http://127.0.0.1:{fp_port}",
        # The rate limiter stays in the path (its cost is measured), but wrk sends every
        # heartbeat from one address with one workspace key, far above the per-key and
        # per-address defaults meant for a real fleet.
        "FLEETPLANE_RATE_LIMIT_WORKSPACE_KEY_PER_SECOND": "10000000",
        "FLEETPLANE_RATE_LIMIT_WORKSPACE_KEY_BURST": "10000000",
        "FLEETPLANE_RATE_LIMIT_ADDRESS_PER_SECOND": "10000000",
        "FLEETPLANE_RATE_LIMIT_ADDRESS_BURST": "10000000",
    }
    fp_cmd = [str(BIN / "fleetplane"), "serve", "--port", str(fp_port), "--workers", str(WORKERS)]
    bare_cmd = [
        str(BIN / "uvicorn"),
        "bench.bare_app:app",
        "--port",
        str(bare_port),
        "--workers",
        str(WORKERS),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    script_env = {
        "BENCH_RUNTIMES": str(big),
        "BENCH_WORKSPACE": fleet.big_workspace,
        "BENCH_KEY": KEY,
        "BENCH_THREADS": str(THREADS),
    }
    fp_log = workdir / f"{kind}-fleetplane.log"
    with (
        server(bare_cmd, bare_port, {"PYTHONPATH": str(ROOT)}, workdir / "bare.log"),
        server(fp_cmd, fp_port, env, fp_log) as fp,
    ):
        started = time.monotonic()
        heartbeat_url = f"http://127.0.0.1:{fp_port}"
        # Warm every worker's caches: a runtime's first heartbeat in a process reads it once
        # (and a never-seen runtime's first one is written at once). Warm until every runtime
        # has been sent about eight heartbeats, so that each worker has very likely seen it,
        # and two consecutive rounds agree within 10% (bounded in time).
        warm_deadline = time.monotonic() + (60 if quick else 300)
        heartbeats = Heartbeats(heartbeat_url, script_env)
        previous = 0.0
        while time.monotonic() < warm_deadline:
            rate = heartbeats.run(seconds=5)["rate"]
            print(
                f"[{kind}] warming: {rate:,.0f} heartbeats/s ({heartbeats.sent:,} sent)", flush=True
            )
            if heartbeats.sent >= 8 * big and previous and abs(rate - previous) < 0.1 * previous:
                break
            previous = rate
        wal_before = wal_lsn(url) if kind == "postgresql" else 0
        workers_before = worker_totals(heartbeat_url)
        bare_rates, bare_p99, fp_rates, fp_p99, failed, total = [], [], [], [], 0, 0
        for run in range(runs):
            print(f"[{kind}] run {run + 1}/{runs}: bare GET, then heartbeats", flush=True)
            bare = wrk(f"http://127.0.0.1:{bare_port}/", seconds=seconds)
            bare_rates.append(bare["rate"])
            bare_p99.append(bare["p99_ms"])
            figures = heartbeats.run(seconds=seconds)
            fp_rates.append(figures["rate"])
            fp_p99.append(figures["p99_ms"])
            failed += int(figures["failed"])
            total += int(figures["requests"])
        workers_after = worker_totals(heartbeat_url)
        results.figures["workers"] = {
            figure: workers_after[figure] - workers_before[figure] for figure in WORKER_FIGURES
        }
        results.figures["warmed"] = workers_after["warmed"]
        if kind == "postgresql":
            results.figures["wal_per_heartbeat"] = (wal_lsn(url) - wal_before) / max(total, 1)
        results.figures["rss_mb"] = rss_mb(fp.pid)
        results.figures["bare"] = bare_rates
        results.figures["heartbeat"] = fp_rates
        results.figures["heartbeat_p99"] = fp_p99
        results.figures["bare_p99"] = bare_p99
        results.figures["heartbeat_failed"] = failed
        results.figures["heartbeat_total"] = total

        # Config pulls holding the current ETag.
        pull = f"{heartbeat_url}/api/v1/config?workspace_id={fleet.big_workspace}"
        first_pull = httpx.get(pull, headers={"Authorization": f"Bearer {KEY}"})
        first_pull.raise_for_status()
        etag = first_pull.headers["etag"]
        pull_env = {"BENCH_KEY": KEY, "BENCH_ETAG": etag}
        wrk(pull, seconds=2, script=ROOT / "bench" / "etag.lua", env=pull_env)
        tx_before = transactions(url) if kind == "postgresql" else 0
        if not quick:
            results.figures["sustained"] = sustained(heartbeats)

        pull_rates, bare_again = [], []
        for _ in range(runs):
            bare_again.append(wrk(f"http://127.0.0.1:{bare_port}/", seconds=seconds)["rate"])
            pull_rates.append(
                wrk(pull, seconds=seconds, script=ROOT / "bench" / "etag.lua", env=pull_env)["rate"]
            )
        if kind == "postgresql":
            window = runs * 2 * seconds
            results.figures["pull_transactions"] = transactions(url) - tx_before
            results.figures["pull_watch_polls"] = int(window / 0.5 * WORKERS)
        results.figures["pull"] = pull_rates
        results.figures["pull_bare"] = bare_again

        # Fleet pages with their summary. After millions of heartbeat updates a production
        # PostgreSQL has re-analyzed the runtimes table (autovacuum); where the server runs with
        # autovacuum off, as this machine's does, the bench analyzes in its place and says so.
        if kind == "postgresql":
            results.figures["autovacuum"] = autovacuum_on(url)
            if not results.figures["autovacuum"]:
                analyze(url)
        token = operator_token(url)
        headers = {"Authorization": f"Bearer {token}"}
        base = f"{heartbeat_url}/api/v1/workspaces"
        samples = 15 if quick else 40
        results.figures["fleet_small"] = latency(
            f"{base}/{fleet.small_workspace}/fleet", headers, samples
        )
        results.figures["fleet_small_health"] = latency(
            f"{base}/{fleet.small_workspace}/fleet?health=stale", headers, samples
        )
        results.figures["fleet_small_drift"] = latency(
            f"{base}/{fleet.small_workspace}/fleet?drift=needs_reconcile", headers, samples
        )
        results.figures["fleet_big"] = latency(
            f"{base}/{fleet.big_workspace}/fleet", headers, samples
        )
        uptime = time.monotonic() - started
    flushes = [
        int(m) for m in re.findall(r"liveness buffer stopped: flushes=(\d+)", fp_log.read_text())
    ]
    results.figures["flushes_per_second"] = [f / uptime for f in flushes]
    if kind == "postgresql":
        with admin.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return results


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(all_results: list[Results], *, command: str, quick: bool, runs: int) -> str:
    machine = f"{platform.node()}: {platform.platform()}, {os.cpu_count()} CPUs"
    lines = [
        "<!-- bench:runtime -->",
        "## Runtime surface (`make bench`)",
        "",
        f"Command: `{command}`; {runs} runs per figure, median (min–max); {'quick' if quick else 'full'} mode.",
        f"Machine: {machine}. Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
        f"Load: wrk, {THREADS} threads, {CONNECTIONS} connections, separate process; servers with {WORKERS} workers.",
        "",
        "| database | scenario | goal | measured | verdict |",
        "|---|---|---|---|---|",
    ]
    for result in all_results:
        f = result.figures
        db = result.database
        ratio = statistics.median(f["heartbeat"]) / statistics.median(f["bare"])
        p99 = statistics.median(f["heartbeat_p99"])
        lines.append(
            f"| {db} | heartbeats from {f['runtimes']:,} distinct runtimes (req/s) | ≥ 0.8× bare GET, "
            f"p99 ≤ 25 ms, 0 failed | {median_spread(f['heartbeat'])} vs bare {median_spread(f['bare'])} = "
            f"{ratio:.2f}×; p99 {p99:.1f} ms ({min(f['heartbeat_p99']):.1f}–{max(f['heartbeat_p99']):.1f}; bare GET {statistics.median(f['bare_p99']):.1f} ms); failed {f['heartbeat_failed']} of {f['heartbeat_total']:,} | "
            f"{verdict(ratio >= 0.8 and p99 <= 25 and f['heartbeat_failed'] == 0)} |"
        )
        w = f["workers"]
        lines.append(
            f"| {db} | what the heartbeat runs met in the workers (both, summed) | reported | "
            f"{w['misses']:,.0f} cache misses; {w['full_route']:,.0f} heartbeats answered "
            f"by the full route; {w['loop_samples'] - w['loop_within_50ms']:,.0f} "
            f"event-loop stalls > 50 ms in {w['loop_samples']:,.0f} looks; {w['full_gc_passes']:,.0f} "
            f"full collector passes, {1000 * w['full_gc_seconds']:,.0f} ms in all; "
            f"{f['warmed']:,.0f} runtimes warmed at start | reported |"
        )
        per_second = max(f["flushes_per_second"]) if f["flushes_per_second"] else float("nan")
        lines.append(
            f"| {db} | liveness write transactions per process | ≤ 2/s | "
            f"{', '.join(f'{x:.2f}/s' for x in f['flushes_per_second'])} | {verdict(per_second <= 2)} |"
        )
        pull_ratio = statistics.median(f["pull"]) / statistics.median(f["pull_bare"])
        queries = (
            f"{f['pull_transactions']:,} transactions in the window, of which ~{f['pull_watch_polls']:,} "
            "change-watch polls"
            if "pull_transactions" in f
            else "no queries (asserted by tests/api/test_hotpath.py)"
        )
        lines.append(
            f"| {db} | config pull with matching If-None-Match (req/s) | ≥ 0.8× bare; 0 queries | "
            f"{median_spread(f['pull'])} vs bare {median_spread(f['pull_bare'])} = {pull_ratio:.2f}×; {queries} | "
            f"{verdict(pull_ratio >= 0.8)} |"
        )
        for key, label in (
            ("fleet_small", "no filter"),
            ("fleet_small_health", "health=stale"),
            ("fleet_small_drift", "drift=needs_reconcile"),
        ):
            lines.append(
                f"| {db} | /fleet page of 100 + summary, 10,000 runtimes, {label} | p95 ≤ 100 ms | "
                f"{f[key]:.0f} ms | {verdict(f[key] <= 100)} |"
            )
        stats = (
            "; autovacuum is off on this server: the bench ran ANALYZE in its place"
            if f.get("autovacuum") is False
            else ""
        )
        lines.append(
            f"| {db} | /fleet page of 100 + summary, {f['runtimes']:,} runtimes | p95 ≤ 300 ms | "
            f"{f['fleet_big']:.0f} ms{stats} | {verdict(f['fleet_big'] <= 300)} |"
        )
        rss = max(f["rss_mb"]) if f["rss_mb"] else float("nan")
        lines.append(
            f"| {db} | resident memory per worker after the heartbeat runs | ≤ 300 MB | "
            f"{', '.join(f'{x:.0f} MB' for x in f['rss_mb'])} | {verdict(rss <= 300)} |"
        )
        if "wal_per_heartbeat" in f:
            lines.append(
                f"| {db} | PostgreSQL WAL bytes per heartbeat | reported | "
                f"{f['wal_per_heartbeat']:.1f} B | reported |"
            )
    for result in all_results:
        s = result.figures.get("sustained")
        if s is None:
            continue
        ok = s["rate"] >= 0.95 * SUSTAINED_RATE and s["failed"] == 0
        lines.append(
            f"| {result.database} | sustained {SUSTAINED_SECONDS} s at ~{SUSTAINED_RATE:,}/s "
            f"({SUSTAINED_CONNECTIONS} connections, {s['delay_ms']:.0f} ms pause after each answer) | "
            f"holds the rate, 0 failed | {s['rate']:,.0f}/s; p99 {s['p99_ms']:.1f} ms; "
            f"failed {s['failed']:.0f} of {s['requests']:,.0f} | {verdict(ok)} |"
        )
    lines += [
        "",
        "wrk has no constant-rate mode (wrk2 is not packaged by Debian): the sustained run paces "
        "each connection with a fixed pause after every answer, so its rate is what the "
        "server held, reported as measured. Quick mode skips it.",
        "<!-- /bench:runtime -->",
    ]
    return "\n".join(lines) + "\n"


def write_section(section: str) -> None:
    DOC.parent.mkdir(exist_ok=True)
    current = (
        DOC.read_text()
        if DOC.exists()
        else "# Benchmarks\n\nFigures measured by the scripts in `bench/`.\n"
    )
    pattern = re.compile(r"<!-- bench:runtime -->.*?<!-- /bench:runtime -->\n?", re.S)
    updated = (
        pattern.sub(section, current)
        if pattern.search(current)
        else current.rstrip() + "\n\n" + section
    )
    DOC.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="10,000 runtimes, 5 s runs: under 3 minutes"
    )
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit(
            "bench/run.py needs wrk on the PATH: `make bench` installs it, or apt-get install wrk"
        )
    results = []
    with tempfile.TemporaryDirectory(prefix="fleetplane-bench-") as workdir:
        for kind in args.databases.split(","):
            results.append(
                bench_database(kind, quick=args.quick, runs=args.runs, workdir=Path(workdir))
            )
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    section = render(results, command=command.strip(), quick=args.quick, runs=args.runs)
    print(section)
    write_section(section)


if __name__ == "__main__":
    main()
