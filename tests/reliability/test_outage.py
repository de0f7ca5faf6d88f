"""Database outage: a private PostgreSQL cluster is stopped under load and started again.

While it is down the server answers 503 with the JSON error body within the connect timeout
(never hangs), /readyz says so, and heartbeats the hot path can answer are kept in the liveness
buffer. Once it is back, service resumes without restarting fleetplane and nothing acknowledged
is lost. The cluster is this test's own (`pg_createcluster`), never the shared one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from fleetplane.store import migrate
from tests.conftest import BOOTSTRAP_TOKEN, IN_CI, auth
from tests.reliability import figures
from tests.reliability.load import OPERATOR, Fleet, Load
from tests.reliability.servers import free_port, running

VERSION = "15"
CLUSTER = f"fpoutage{os.getpid()}"
# db.py connects with connect_timeout=5 and waits at most pool_timeout=10 for a connection.
ANSWER_BOUND = 6.0


def _run(*command: str, check: bool = True) -> None:
    """Run a postgresql-common command by its absolute path."""
    executable = shutil.which(command[0])
    assert executable is not None, command[0]
    subprocess.run(  # noqa: S603 - fixed arguments
        [executable, *command[1:]], check=check, capture_output=True, timeout=120
    )


def _ctl(action: str) -> None:
    _run("pg_ctlcluster", "--skip-systemctl-redirect", VERSION, CLUSTER, action)


@pytest.fixture
def private_cluster() -> Iterator[str]:
    """A PostgreSQL cluster on a free port, created for this test and dropped afterwards."""
    if shutil.which("pg_createcluster") is None or os.geteuid() != 0:
        reason = "pg_createcluster (postgresql-common) and root are needed for a private cluster"
        if IN_CI:
            pytest.fail(reason + " under CI")
        pytest.skip(reason)
    port = free_port()
    _run(
        "pg_createcluster", VERSION, CLUSTER, "--port", str(port), "--", "--auth=trust", "--no-sync"
    )
    try:
        _ctl("start")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        # Always dropped (stopping it first), even when the test failed half-way.
        _run("pg_dropcluster", "--stop", VERSION, CLUSTER, check=False)


def test_server_answers_503_during_an_outage_and_recovers_without_restart(
    tmp_path: Path, private_cluster: str
) -> None:
    migrate.upgrade(private_cluster.replace("postgresql://", "postgresql+psycopg://"))
    env = {
        "FLEETPLANE_DATABASE_URL": private_cluster,
        "FLEETPLANE_BOOTSTRAP_ADMIN_TOKEN": BOOTSTRAP_TOKEN,
    }
    with running(tmp_path, env, name="outage") as server:
        fleet = Fleet.create(server.url, runtimes=4)
        http = httpx.Client(base_url=server.url, headers=OPERATOR, timeout=30)
        workspace = f"/api/v1/workspaces/{fleet.workspace_id}"
        assert http.get("/readyz").json()["status"] == "ok"
        load = Load(fleet, [server.url], timeout=30, max_seconds=60)
        with load:
            time.sleep(1.0)
            _ctl("stop")
            stopped_at = time.monotonic()
            try:
                during = []
                for n in range(6):
                    started = time.monotonic()
                    answer = http.put(f"{workspace}/config", json={"during": n})
                    during.append((answer, time.monotonic() - started))
                ready = http.get("/readyz")
                fleet_read = http.get(f"{workspace}/fleet")
                # A heartbeat the hot path knows is acknowledged from memory and kept.
                agent, credential = next(iter(fleet.credentials.items()))
                kept = httpx.post(
                    f"{server.url}/api/v1/heartbeat",
                    json={"session_id": f"s-{agent}"},
                    headers=auth(credential),
                    timeout=30,
                )
            finally:
                _ctl("start")
            outage_seconds = time.monotonic() - stopped_at
            # Service resumes: the pool's pre-ping replaces the dead connections.
            resumed = None
            for _ in range(100):
                resumed = http.put(f"{workspace}/config", json={"after": "outage"})
                if resumed.status_code == 200:
                    break
                time.sleep(0.1)
            time.sleep(1.5)  # one liveness flush after the database is back
        view = http.get(f"{workspace}/fleet").json()
        http.close()

    for answer, seconds in during:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["retry-after"] == "5"
        assert answer.json()["error"]["code"] == "database_unavailable"
        assert seconds < ANSWER_BOUND
    assert ready.status_code == 503
    assert ready.json()["database"] == "down"
    assert fleet_read.status_code == 503
    assert fleet_read.json()["error"]["code"] == "database_unavailable"
    assert resumed is not None
    assert resumed.status_code == 200, resumed.text
    assert load.record.slowest < ANSWER_BOUND + 1
    assert 500 not in load.record.statuses
    # A heartbeat during the outage is refused like any request (the process drops its caches
    # when it cannot watch for revocations), or, if acknowledged, reaches the database later.
    assert kept.status_code in (200, 503), kept.text
    if kept.status_code == 200:
        kept_at = datetime.fromisoformat(kept.json()["server_time"].replace("Z", "+00:00"))
        stored = {r["agentId"]: r["lastHeartbeatAt"] for r in view["runtimes"]}[agent]
        assert datetime.fromisoformat(stored.replace("Z", "+00:00")) >= kept_at
    else:
        assert kept.json()["error"]["code"] == "database_unavailable"
    figures.record(
        "outage",
        {
            "outage_seconds": round(outage_seconds, 2),
            "slowest_answer_during_outage": round(max(s for _, s in during), 3),
            "load_requests": sum(load.record.statuses.values()),
            "load_statuses": load.record.statuses,
            "heartbeat_during_outage": kept.status_code,
        },
    )
    assert outage_seconds < 30
