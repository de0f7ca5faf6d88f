"""Several replicas: two `fleetplane serve` processes on different ports share one PostgreSQL
database. Runtimes and the operator spread their requests over both; afterwards the fleet view
and the audit log read the same from either, and a credential revoked through one process
fails on the other within the cache poll interval."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BOOTSTRAP_TOKEN, auth
from tests.reliability import figures
from tests.reliability.load import OPERATOR, Fleet, Load, all_pages
from tests.reliability.servers import running

POLL_SECONDS = 0.5
# The poll interval, plus the poll's own query and one request round trip.
REVOCATION_BOUND = POLL_SECONDS + 0.5


def time_until_refused(base_url: str, token: str, body: dict[str, str]) -> float:
    """Seconds until `token` gets 401 from the server at `base_url` (polled every 20 ms)."""
    started = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=5) as http:
        for _ in range(500):
            answer = http.post("/api/v1/heartbeat", json=body, headers=auth(token))
            if answer.status_code == 401:
                return time.monotonic() - started
            assert answer.status_code == 200, answer.text
            time.sleep(0.02)
    raise AssertionError("the revoked credential was never refused")


@pytest.mark.postgres
def test_two_processes_on_one_postgresql_agree(tmp_path: Path, fresh_postgres_url: str) -> None:
    env = {
        "FLEETPLANE_DATABASE_URL": fresh_postgres_url,
        "FLEETPLANE_BOOTSTRAP_ADMIN_TOKEN": BOOTSTRAP_TOKEN,
        "FLEETPLANE_CACHE_POLL_SECONDS": str(POLL_SECONDS),
    }
    with (
        running(tmp_path, env, name="replica-a") as first,
        running(tmp_path, env, name="replica-b") as second,
    ):
        fleet = Fleet.create(first.url, runtimes=6)
        with Load(fleet, [first.url, second.url], timeout=10, max_seconds=30) as load:
            time.sleep(2.0)
        record = load.record
        assert record.acknowledged_edits
        assert set(record.statuses) == {200}, record.statuses
        time.sleep(1.5)  # one liveness flush in each process

        workspace = f"/api/v1/workspaces/{fleet.workspace_id}"
        views = []
        for server in (first, second):
            with httpx.Client(base_url=server.url, headers=OPERATOR, timeout=10) as http:
                fleet_view = http.get(f"{workspace}/fleet").json()
                views.append(
                    {
                        "runtimes": fleet_view["runtimes"],
                        "summary": fleet_view["summary"],
                        "desired": fleet_view["desiredState"],
                        "audit": all_pages(http, f"{workspace}/audit"),
                        "revisions": all_pages(http, f"{workspace}/config/revisions"),
                    }
                )
        assert views[0] == views[1]
        newest = max(record.acknowledged_edits)
        assert views[0]["desired"]["configRevision"]["number"] == newest[0]
        assert views[0]["desired"]["configRevision"]["hash"] == newest[1]
        assert views[0]["summary"]["total"] == views[0]["summary"]["active"] == 6
        edits = [e for e in views[0]["audit"] if e["action"] == "config.update"]
        assert len(edits) == len(record.acknowledged_edits)

        # Revocation through one process reaches the other's cached credentials.
        agent, credential = sorted(fleet.credentials.items())[0]
        body = {"session_id": f"s-{agent}"}
        for _ in range(2):  # the second one is answered from the hot path's caches
            assert (
                httpx.post(
                    f"{second.url}/api/v1/heartbeat", json=body, headers=auth(credential)
                ).status_code
                == 200
            )
        runtime_id = next(r["id"] for r in views[0]["runtimes"] if r["agentId"] == agent)
        revoked = httpx.delete(f"{first.url}{workspace}/runtimes/{runtime_id}", headers=OPERATOR)
        assert revoked.status_code == 204
        runtime_delay = time_until_refused(second.url, credential, body)

        key_body = {"session_id": "key-session", "agent_id": "rt-1"}
        assert (
            httpx.post(
                f"{second.url}/api/v1/heartbeat", json=key_body, headers=auth(fleet.api_key)
            ).status_code
            == 200
        )
        regenerated = httpx.post(f"{first.url}{workspace}/api-key", headers=OPERATOR)
        assert regenerated.status_code == 201
        key_delay = time_until_refused(second.url, fleet.api_key, key_body)
        new_key = regenerated.json()["apiKey"]
        assert (
            httpx.post(
                f"{second.url}/api/v1/heartbeat", json=key_body, headers=auth(new_key)
            ).status_code
            == 200
        )

    figures.record(
        "replicas",
        {
            "requests": sum(record.statuses.values()),
            "edits": len(record.acknowledged_edits),
            "runtime_revocation_seconds": round(runtime_delay, 3),
            "key_revocation_seconds": round(key_delay, 3),
        },
    )
    assert runtime_delay <= REVOCATION_BOUND, runtime_delay
    assert key_delay <= REVOCATION_BOUND, key_delay


@pytest.mark.postgres
def test_revision_numbers_never_repeat_with_two_processes_editing_at_once(
    tmp_path: Path, fresh_postgres_url: str
) -> None:
    env = {
        "FLEETPLANE_DATABASE_URL": fresh_postgres_url,
        "FLEETPLANE_BOOTSTRAP_ADMIN_TOKEN": BOOTSTRAP_TOKEN,
    }
    editors, edits_each = 4, 8
    with (
        running(tmp_path, env, name="editor-a") as first,
        running(tmp_path, env, name="editor-b") as second,
    ):
        fleet = Fleet.create(first.url, runtimes=0)
        path = f"/api/v1/workspaces/{fleet.workspace_id}/config"
        start = threading.Barrier(editors)
        acknowledged: dict[int, list[tuple[int, str]]] = {}

        def edit(editor: int) -> None:
            # Editors 0 and 2 talk to one process, 1 and 3 to the other, all at the same time.
            base_url = (first.url, second.url)[editor % 2]
            numbers = []
            with httpx.Client(base_url=base_url, headers=OPERATOR, timeout=30) as http:
                start.wait()
                for n in range(edits_each):
                    answer = http.put(path, json={"editor": editor, "edit": n})
                    assert answer.status_code == 200, answer.text
                    revision = answer.json()["configRevision"]
                    numbers.append((revision["number"], revision["hash"]))
            acknowledged[editor] = numbers

        threads = [threading.Thread(target=edit, args=(e,)) for e in range(editors)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert len(acknowledged) == editors, "an editor failed; see its exception above"

        histories = []
        for server in (first, second):
            with httpx.Client(base_url=server.url, headers=OPERATOR, timeout=10) as http:
                histories.append(all_pages(http, f"{path}/revisions"))
    assert histories[0] == histories[1]
    history = histories[0]
    numbers = [item["number"] for item in history]
    # Newest first, no number twice, none skipped: the creation's revision 1 and every edit.
    assert numbers == list(range(editors * edits_each + 1, 0, -1))
    by_number = {item["number"]: item["hash"] for item in history}
    every = [entry for entries in acknowledged.values() for entry in entries]
    assert len({number for number, _ in every}) == len(every)  # never handed out twice
    for entries in acknowledged.values():
        assert [n for n, _ in entries] == sorted(n for n, _ in entries)  # never backwards
        assert len({n for n, _ in entries}) == len(entries)
        for number, digest in entries:
            assert by_number[number] == digest
