"""The heartbeat hot path's mechanisms: coalescing, shutdown flush, 304s without queries,
the buffer bound and revocation reaching cached credentials. (Speed is measured in bench/.)"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, insert, select, update
from sqlalchemy.exc import OperationalError

from fleetplane.api import context as context_module
from fleetplane.api import hot as hot_module
from fleetplane.api.app import create_app
from fleetplane.domain.tokens import token_hash
from fleetplane.domain.versions import version_sort_key
from fleetplane.services import hotpath as hotpath_module
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from fleetplane.store.models import Runtime, Workspace
from tests.conftest import ADMIN, Clock, WorkspaceFixture, auth, make_workspace


@contextmanager
def statements(database: Database) -> Iterator[list[tuple[str, int]]]:
    """Record every SQL statement sent, with how many parameter sets it carried."""
    seen: list[tuple[str, int]] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, executemany: bool
    ) -> None:
        if executemany:
            rows = len(parameters)
        elif "json_array_elements_text" in statement:
            rows = len(json.loads(parameters[0]))  # rows sent as JSON arrays (PostgreSQL flush)
        else:
            rows = 1
        seen.append((statement, rows))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


@pytest.fixture
def slow_flush(settings: Settings) -> Settings:
    # The background flusher waits 30 s, so the test decides when flushes happen.
    return settings.model_copy(update={"liveness_flush_seconds": 30})


def _app(settings: Settings, database: Database, clock: Clock) -> TestClient:
    return TestClient(
        create_app(settings, database=database, clock=clock), base_url="https://fleet.test"
    )


def _warm(client: TestClient, key: str, agents: list[str]) -> None:
    # Stop the change watcher's background polls: every statement seen from here on is then
    # the request path's own work.
    client.app.state.context.hot.watcher.stop()  # type: ignore[attr-defined]
    for agent in agents:
        first = client.post(
            "/api/v1/heartbeat", json={"agent_id": agent, "session_id": agent}, headers=auth(key)
        )
        assert first.status_code == 200


def test_heartbeats_coalesce_into_one_batched_write(
    slow_flush: Settings, database: Database, clock: Clock
) -> None:
    with _app(slow_flush, database, clock) as client:
        ws = make_workspace(client)
        agents = [f"a{i}" for i in range(20)]
        _warm(client, ws.api_key, agents)
        context = client.app.state.context  # type: ignore[attr-defined]
        with statements(database) as seen:
            for _ in range(5):
                clock.advance(1)
                for agent in agents:
                    response = client.post(
                        "/api/v1/heartbeat",
                        json={"agent_id": agent, "session_id": agent},
                        headers=auth(ws.api_key),
                    )
                    assert response.status_code == 200
                    assert response.json()["server_time"] == clock.now.isoformat().replace(
                        "+00:00", "Z"
                    )
        assert seen == []  # 100 heartbeats, no database work yet
        assert context.hot.liveness.depth == 20
        with statements(database) as seen:
            assert context.hot.liveness.flush() == 20
        updates = [(sql, n) for sql, n in seen if sql.lstrip().upper().startswith("UPDATE")]
        assert len(updates) == 1
        assert updates[0][1] == 20  # one row per runtime, whatever the heartbeat count
    with database.read() as session:
        stamps = set(session.scalars(select(Runtime.last_heartbeat_at)))
    assert stamps == {clock.now}


def test_clean_shutdown_loses_no_acknowledged_heartbeat(
    slow_flush: Settings, database: Database, clock: Clock
) -> None:
    with _app(slow_flush, database, clock) as client:
        ws = make_workspace(client)
        _warm(client, ws.api_key, ["a", "b"])
        clock.advance(42)
        for agent in ("a", "b"):
            client.post(
                "/api/v1/heartbeat",
                json={"agent_id": agent, "session_id": agent},
                headers=auth(ws.api_key),
            )
        assert client.app.state.context.hot.liveness.depth == 2  # type: ignore[attr-defined]
    with database.read() as session:
        assert set(session.scalars(select(Runtime.last_heartbeat_at))) == {clock.now}


def test_matching_if_none_match_is_answered_without_a_query(
    settings: Settings, database: Database, clock: Clock
) -> None:
    with _app(settings, database, clock) as client:
        ws = make_workspace(client)
        client.app.state.context.hot.watcher.stop()  # type: ignore[attr-defined]
        for path in ("/api/v1/config", "/api/v1/policies"):
            first = client.get(
                path, params={"workspace_id": ws.workspace_id}, headers=auth(ws.api_key)
            )
            with statements(database) as seen:
                again = client.get(
                    path,
                    params={"workspace_id": ws.workspace_id},
                    headers={**auth(ws.api_key), "If-None-Match": first.headers["etag"]},
                )
            assert again.status_code == 304
            assert again.headers["etag"] == first.headers["etag"]
            assert seen == []
        # A config change in this process shows at once: no stale 304.
        client.put(f"/api/v1/workspaces/{ws.workspace_id}/config", json={"x": 1}, headers=ADMIN)
        changed = client.get(
            "/api/v1/config",
            params={"workspace_id": ws.workspace_id},
            headers={**auth(ws.api_key), "If-None-Match": first.headers["etag"]},
        )
        assert changed.status_code == 200


def test_full_buffer_answers_429(settings: Settings, database: Database, clock: Clock) -> None:
    small = settings.model_copy(update={"heartbeat_buffer_max": 2, "liveness_flush_seconds": 30})
    with _app(small, database, clock) as client:
        ws = make_workspace(client)
        _warm(client, ws.api_key, ["a", "b", "c"])
        codes = [
            client.post(
                "/api/v1/heartbeat", json={"agent_id": a, "session_id": a}, headers=auth(ws.api_key)
            )
            for a in ("a", "b", "c")
        ]
        assert [c.status_code for c in codes] == [200, 200, 429]
        assert codes[2].headers["retry-after"] == "1"
        assert codes[2].json()["error"]["code"] == "rate_limited"
        client.app.state.context.hot.liveness.flush()  # type: ignore[attr-defined]
        again = client.post(
            "/api/v1/heartbeat", json={"agent_id": "c", "session_id": "c"}, headers=auth(ws.api_key)
        )
        assert again.status_code == 200


def test_revocation_reaches_another_process_within_the_poll_interval(
    settings: Settings, database: Database, clock: Clock
) -> None:
    short = settings.model_copy(update={"cache_poll_seconds": 0.2})
    with _app(short, database, clock) as first, _app(short, database, clock) as second:
        ws = make_workspace(first)
        issued = first.post(
            f"/api/v1/workspaces/{ws.workspace_id}/runtimes", json={"agentId": "r"}, headers=ADMIN
        ).json()
        beat = {"session_id": "s"}
        for _ in range(2):  # the second one is served from the cache
            assert (
                second.post(
                    "/api/v1/heartbeat", json=beat, headers=auth(issued["credential"])
                ).status_code
                == 200
            )
        revoked = first.delete(
            f"/api/v1/workspaces/{ws.workspace_id}/runtimes/{issued['runtimeId']}", headers=ADMIN
        )
        assert revoked.status_code == 204
        assert (
            first.post(
                "/api/v1/heartbeat", json=beat, headers=auth(issued["credential"])
            ).status_code
            == 401
        )
        time.sleep(0.35)
        assert (
            second.post(
                "/api/v1/heartbeat", json=beat, headers=auth(issued["credential"])
            ).status_code
            == 401
        )


def test_changes_leave_the_fast_path(
    slow_flush: Settings, database: Database, clock: Clock
) -> None:
    """A new version or config hash is written at once, not buffered."""
    with _app(slow_flush, database, clock) as client:
        ws = make_workspace(client)
        _warm(client, ws.api_key, ["a"])
        digest = "a" * 64
        response = client.post(
            "/api/v1/heartbeat",
            json={
                "agent_id": "a",
                "session_id": "a",
                "runtime_version": "3.12.6",
                "config_hash": digest,
            },
            headers=auth(ws.api_key),
        )
        assert response.status_code == 200
        with database.read() as session:
            runtime = session.scalars(select(Runtime)).one()
        assert (runtime.version, runtime.observed_config_hash) == ("3.12.6", digest)
        bad = client.post(
            "/api/v1/heartbeat",
            json={"agent_id": "a", "runtime_version": "x"},
            headers=auth(ws.api_key),
        )
        assert bad.status_code == 422


def test_entries_in_use_are_refreshed_ahead_in_batches(
    slow_flush: Settings, database: Database, clock: Clock
) -> None:
    # Entries live 6 s here (no spread) and are due for a refresh after 3 s: the margin leaves
    # room for the twelve first heartbeats (each a write) on a slow machine.
    short = slow_flush.model_copy(update={"cache_max_age_seconds": 6})
    with _app(short, database, clock) as client:
        hot = client.app.state.context.hot  # type: ignore[attr-defined]
        hot.identities.spread = hot.callers.spread = hot.answers.spread = 0
        ws = make_workspace(client)
        issued = client.post(
            f"/api/v1/workspaces/{ws.workspace_id}/runtimes",
            json={"agentId": "cred"},
            headers=ADMIN,
        ).json()
        # An operator change clears every cache of this process: warm after it.
        agents = [f"a{i}" for i in range(12)]
        _warm(client, ws.api_key, agents)
        beat = {"session_id": "cred"}
        token = issued["credential"]
        assert client.post("/api/v1/heartbeat", json=beat, headers=auth(token)).status_code == 200
        keys = [(ws.workspace_id, "agent", agent) for agent in agents]
        # Another process records a version for every runtime; this one's entries are stale.
        with database.unit_of_work() as session:
            session.execute(
                update(Runtime)
                .where(Runtime.workspace_id == ws.workspace_id)
                .values(version="3.9.0", version_key=version_sort_key("3.9.0"))
            )
            # And the workspace's mode changed: this process's answer for it is stale too.
            session.execute(
                update(Workspace)
                .where(Workspace.id == ws.workspace_id)
                .values(policy_mode="tighten-only")
            )
        time.sleep(3.2)
        for key in keys:  # in use past half their life: due for a refresh
            assert hot.identities.get(key) is not None
        hot.callers.get(token_hash(ws.api_key))
        hot.callers.get(token_hash(token))
        assert hot.answers.get(ws.workspace_id).policy_mode == "authoritative"
        with statements(database) as seen:
            hot.refresh()
        selects = [sql for sql, _ in seen if sql.lstrip().upper().startswith("SELECT")]
        # Batched reads: one of the runtimes by agent id (all twelve), one by id (the runtime
        # whose credential heartbeated: its entry was put for that heartbeat, which is a use),
        # two of the credentials (keys, runtime credentials) and one of the workspace answer.
        assert len(selects) == 5, selects
        by_agent = [sql for sql in selects if "runtimes.agent_id" in sql.split("WHERE")[-1]]
        assert len(by_agent) == 1, selects
        for key in keys:
            refreshed = hot.identities.get(key)
            assert refreshed is not None
            assert refreshed.version == "3.9.0"
        # Renewed, not expired: the workspace's heartbeats stay on the hot path.
        assert hot.answers.get(ws.workspace_id).policy_mode == "tighten-only"

        # A refresh that finds the credential gone forgets it: the next use reads again (401).
        time.sleep(3.2)
        assert hot.callers.get(token_hash(token)) is not None
        with database.unit_of_work() as session:
            session.execute(
                update(Runtime)
                .where(Runtime.id == issued["runtimeId"])
                .values(credential_hash=None)
            )
        hot.refresh()
        assert hot.callers.get(token_hash(token)) is None


def test_a_refresh_overtaken_by_an_invalidation_keeps_nothing(
    slow_flush: Settings, database: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = slow_flush.model_copy(update={"cache_max_age_seconds": 2})
    with _app(short, database, clock) as client:
        hot = client.app.state.context.hot  # type: ignore[attr-defined]
        hot.identities.spread = 0
        ws = make_workspace(client)
        _warm(client, ws.api_key, ["a"])
        key = (ws.workspace_id, "agent", "a")
        time.sleep(1.2)
        assert hot.identities.get(key) is not None
        real = context_module.load_identities

        def racing(*args: Any, **kwargs: Any) -> Any:
            found = real(*args, **kwargs)
            hot.invalidate()  # a change committed while the batch was read
            return found

        monkeypatch.setattr(context_module, "load_identities", racing)
        hot.refresh()
        assert hot.identities.get(key) is None


def _concurrent_heartbeats(client: TestClient, key: str, agents: list[str]) -> list[int]:
    """Send one heartbeat per entry of `agents`, all at once, on the app's own event loop."""

    async def send_all() -> list[int]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="https://fleet.test") as http:
            answers = await asyncio.gather(
                *(
                    http.post(
                        "/api/v1/heartbeat",
                        json={"agent_id": agent, "session_id": agent},
                        headers=auth(key),
                    )
                    for agent in agents
                )
            )
        return [answer.status_code for answer in answers]

    assert client.portal is not None
    return client.portal.call(send_all)


def test_concurrent_cache_misses_are_read_in_batches(
    slow_flush: Settings, database: Database, clock: Clock
) -> None:
    with _app(slow_flush, database, clock) as client:
        ws = make_workspace(client)
        agents = [f"a{i}" for i in range(30)]
        _warm(client, ws.api_key, agents)
        hot = client.app.state.context.hot  # type: ignore[attr-defined]
        hot.identities.clear()  # as in a process that has not seen these runtimes yet
        loads, reads = hot.identity_loads, hot.identity_reads
        with statements(database) as seen:
            # Every runtime twice: both of its heartbeats wait for the same read.
            codes = _concurrent_heartbeats(client, ws.api_key, agents + agents)
        assert codes == [200] * 60
        assert hot.identity_loads - loads == 30
        batches = hot.identity_reads - reads
        assert 1 <= batches <= 3, batches
        runtime_reads = [sql for sql, _ in seen if "FROM runtimes" in sql]
        assert len(runtime_reads) == batches
        assert all(hot.identities.get((ws.workspace_id, "agent", a)) for a in agents)
        # Answered from the cache now, and acknowledged into the buffer: no write yet.
        assert not [sql for sql, _ in seen if sql.lstrip().upper().startswith("UPDATE")]
        assert hot.liveness.depth == 30


def test_a_failed_batched_read_leaves_heartbeats_to_the_full_route(
    slow_flush: Settings, database: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _app(slow_flush, database, clock) as client:
        ws = make_workspace(client)
        agents = ["a", "b", "c"]
        _warm(client, ws.api_key, agents)
        hot = client.app.state.context.hot  # type: ignore[attr-defined]
        hot.identities.clear()

        def unavailable(*_args: Any, **_kwargs: Any) -> Any:
            raise OperationalError("SELECT", {}, Exception("connection refused"))

        monkeypatch.setattr(hot_module, "load_identities", unavailable)
        assert _concurrent_heartbeats(client, ws.api_key, agents) == [200, 200, 200]
        # The full route answered each one and cached what it read.
        assert all(hot.identities.get((ws.workspace_id, "agent", a)) for a in agents)


@pytest.mark.postgres
def test_postgresql_flush_updates_by_primary_key_not_by_scanning(
    settings: Settings, database: Database, clock: Clock
) -> None:
    if database.engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL plan")
    with _app(settings, database, clock) as client:
        ws = make_workspace(client)
    rows = [
        {
            "id": f"{n:032x}",
            "workspace_id": ws.workspace_id,
            "agent_id": f"plan-{n}",
            "enrolled_at": clock.now,
            "last_heartbeat_at": clock.now,
        }
        for n in range(3000)
    ]
    with database.engine.begin() as connection:
        connection.execute(insert(Runtime), rows)
    ids = [row["id"] for row in rows[:1000]]
    with database.engine.begin() as connection:
        # A flush of a third of the table: the shape that made the planner scan it whole.
        connection.exec_driver_sql(hotpath_module._FLUSH_POSTGRESQL_PLAN)
        plan = "\n".join(
            line
            for (line,) in connection.exec_driver_sql(
                "EXPLAIN " + hotpath_module._FLUSH_POSTGRESQL,
                hotpath_module._postgres_flush_parameters(ids, [0] * len(ids), [None] * len(ids)),
            )
        )
        connection.rollback()
    assert "Index Scan using pk_runtimes" in plan, plan
    assert "Seq Scan on runtimes" not in plan, plan


def test_flush_writes_session_ids_verbatim_and_keeps_the_last_one_when_none(
    slow_flush: Settings, database: Database, clock: Clock
) -> None:
    with _app(slow_flush, database, clock) as client:
        ws = make_workspace(client)
        _warm(client, ws.api_key, ["a", "b"])
        with database.read() as session:
            ids = dict(
                session.execute(
                    select(Runtime.agent_id, Runtime.id).where(
                        Runtime.workspace_id == ws.workspace_id
                    )
                ).all()
            )
        buffer = client.app.state.context.hot.liveness  # type: ignore[attr-defined]
        later = clock.now + timedelta(seconds=5)
        awkward = "sess,\"'{1}\\ \u00e9"
        assert buffer.offer(ids["a"], later, awkward)
        assert buffer.offer(ids["b"], later, None)
        assert buffer.flush() == 2
    with database.read() as session:
        rows = {
            row.agent_id: row
            for row in session.execute(
                select(Runtime.agent_id, Runtime.last_session_id, Runtime.last_heartbeat_at)
            )
        }
    assert rows["a"].last_session_id == awkward
    assert rows["b"].last_session_id == "b"  # no session in the heartbeat: the last one stays
    assert rows["a"].last_heartbeat_at == rows["b"].last_heartbeat_at == later


def test_a_new_credential_reaches_other_processes_without_dropping_their_caches(
    settings: Settings, database: Database, clock: Clock
) -> None:
    short = settings.model_copy(update={"cache_poll_seconds": 0.2})
    with _app(short, database, clock) as first, _app(short, database, clock) as second:
        ws = make_workspace(first)
        exchange = {"workspace_id": ws.workspace_id, "org_id": ws.org_id, "agent_id": "r"}
        old = first.post("/api/v1/authenticate", json=exchange, headers=auth(ws.api_key))
        assert old.status_code == 200, old.text
        # The second process sees the workspace's creation (a change it answers by clearing
        # its caches) before it caches anything below.
        time.sleep(0.5)
        beat = {"session_id": "s"}
        for _ in range(2):  # the second one is served from the cache
            assert (
                second.post(
                    "/api/v1/heartbeat", json=beat, headers=auth(old.json()["token"])
                ).status_code
                == 200
            )
        for agent in ("x", "y"):  # other runtimes, cached by the second process
            for _ in range(2):
                answer = second.post(
                    "/api/v1/heartbeat",
                    json={"agent_id": agent, "session_id": agent},
                    headers=auth(ws.api_key),
                )
                assert answer.status_code == 200
        hot = second.app.state.context.hot  # type: ignore[attr-defined]
        new = first.post("/api/v1/authenticate", json=exchange, headers=auth(ws.api_key))
        assert new.status_code == 200
        # At once in the process that replaced it.
        assert (
            first.post(
                "/api/v1/heartbeat", json=beat, headers=auth(old.json()["token"])
            ).status_code
            == 401
        )
        time.sleep(0.5)
        assert (
            second.post(
                "/api/v1/heartbeat", json=beat, headers=auth(old.json()["token"])
            ).status_code
            == 401
        )
        assert (
            second.post(
                "/api/v1/heartbeat", json=beat, headers=auth(new.json()["token"])
            ).status_code
            == 200
        )
        # Only that runtime was forgotten: the others are still answered from the cache.
        assert hot.forgotten >= 1
        assert hot.identities.get((ws.workspace_id, "agent", "x")) is not None
        assert hot.identities.get((ws.workspace_id, "agent", "y")) is not None
        assert hot.callers.get(token_hash(ws.api_key)) is not None


def _flush_after(buffer: hotpath_module.LivenessBuffer, start: threading.Barrier) -> int:
    start.wait()
    return buffer.flush()


def test_flushes_of_two_processes_sharing_runtimes_do_not_deadlock(
    settings: Settings, database: Database, clock: Clock
) -> None:
    # Two processes' buffers hold the same runtimes, taken in opposite orders (as heartbeats
    # of one fleet reach both). Flushing at the same moment, each must lock the shared rows in
    # the same order: otherwise on PostgreSQL each holds what the other waits for.
    with _app(settings, database, clock) as client:
        ws = make_workspace(client)
    ids = [uuid.uuid4().hex for _ in range(2000)]
    with database.engine.begin() as connection:
        connection.execute(
            insert(Runtime),
            [
                {
                    "id": runtime_id,
                    "workspace_id": ws.workspace_id,
                    "agent_id": f"shared-{n}",
                    "enrolled_at": clock.now,
                }
                for n, runtime_id in enumerate(ids)
            ],
        )
    buffers = [hotpath_module.LivenessBuffer(database, max_pending=10_000) for _ in range(2)]
    for round_ in range(1, 4):
        seen = clock.now + timedelta(seconds=round_)
        for runtime_id in ids:
            buffers[0].offer(runtime_id, seen, "first")
        for runtime_id in reversed(ids):
            buffers[1].offer(runtime_id, seen, "second")
        start = threading.Barrier(2)
        with ThreadPoolExecutor(max_workers=2) as pool:
            written = list(pool.map(_flush_after, buffers, [start, start]))
        assert written == [2000, 2000]
        with database.read() as session:
            times = set(
                session.scalars(
                    select(Runtime.last_heartbeat_at).where(Runtime.workspace_id == ws.workspace_id)
                )
            )
        assert times == {seen}


def test_batched_reads_send_their_keys_as_one_parameter_on_postgresql(
    slow_flush: Settings, database: Database, clock: Clock
) -> None:
    with _app(slow_flush, database, clock) as client:
        ws = make_workspace(client)
        agents = [f"batch-{i}" for i in range(600)]
        _warm(client, ws.api_key, agents)
        keys = [(ws.workspace_id, "agent", agent) for agent in agents]
        keys.append((ws.workspace_id, "agent", "never-enrolled"))
        parameters: list[Any] = []

        def record(*args: Any) -> None:
            parameters.append(args[3])

        event.listen(database.engine, "before_cursor_execute", record)
        try:
            found = context_module.load_identities(database, keys)
        finally:
            event.remove(database.engine, "before_cursor_execute", record)
    assert sorted(key[2] for key in found) == sorted(agents)
    assert all(found[key].workspace_id == ws.workspace_id for key in found)
    reads = [p for p in parameters if p]  # two chunks of at most REFRESH_BATCH keys
    assert len(reads) == 2
    if database.engine.dialect.name == "postgresql":
        # One array of keys and the workspace id, not an IN list expanded key by key.
        assert all(len(p) == 2 for p in reads), [len(p) for p in reads]
    else:
        assert sorted(len(p) for p in reads) == [101 + 1, 500 + 1]


def _fleet_for_warming(
    settings: Settings, database: Database, clock: Clock
) -> tuple[WorkspaceFixture, dict[str, Any]]:
    """A workspace whose runtimes heartbeated through one process, which then stopped: five
    through the workspace key, one with a credential of its own, one long before the others
    and one never."""
    with _app(settings, database, clock) as client:
        ws = make_workspace(client)
        assert (
            client.post(
                "/api/v1/heartbeat",
                json={"agent_id": "old", "session_id": "old"},
                headers=auth(ws.api_key),
            ).status_code
            == 200
        )
        clock.advance(settings.cache_max_age_seconds + 60)
        _warm(client, ws.api_key, [f"a{i}" for i in range(5)])
        issued = client.post(
            f"/api/v1/workspaces/{ws.workspace_id}/runtimes",
            json={"agentId": "cred"},
            headers=ADMIN,
        ).json()
        assert (
            client.post(
                "/api/v1/heartbeat", json={"session_id": "c"}, headers=auth(issued["credential"])
            ).status_code
            == 200
        )
        never = client.post(
            f"/api/v1/workspaces/{ws.workspace_id}/runtimes",
            json={"agentId": "never"},
            headers=ADMIN,
        )
        assert never.status_code == 201
    return ws, issued


def test_a_starting_process_warms_its_caches_with_the_recently_seen_runtimes(
    settings: Settings, database: Database, clock: Clock
) -> None:
    ws, issued = _fleet_for_warming(settings, database, clock)
    with _app(settings, database, clock) as client:
        hot = client.app.state.context.hot  # type: ignore[attr-defined]
        hot.stop_warming()  # waits for it to finish
        assert hot.warmed == 6
        workspace_id = ws.workspace_id
        for agent in ["a0", "a1", "a2", "a3", "a4", "cred"]:
            assert hot.identities.get((workspace_id, "agent", agent)) is not None, agent
        # Not seen within the cache age, or never: read on first use, as before.
        assert hot.identities.get((workspace_id, "agent", "old")) is None
        assert hot.identities.get((workspace_id, "agent", "never")) is None
        # The runtime with its own credential, under the lookup that credential uses.
        assert hot.identities.get((workspace_id, "id", issued["runtimeId"])) is not None
        assert hot.callers.get(token_hash(issued["credential"])) == context_module.CachedCaller(
            workspace_id, ws.org_id, issued["runtimeId"]
        )
        assert len(hot.identities) == 7
        assert len(hot.callers) == 1
        # The first heartbeat reads the workspace's desired state (once per workspace); then no
        # runtime is a database read, whichever credential it heartbeats with.
        _warm(client, ws.api_key, ["a0"])
        with statements(database) as seen:
            for agent in ["a1", "a2", "a3", "a4"]:
                response = client.post(
                    "/api/v1/heartbeat",
                    json={"agent_id": agent, "session_id": agent},
                    headers=auth(ws.api_key),
                )
                assert response.status_code == 200
            response = client.post(
                "/api/v1/heartbeat", json={"session_id": "c"}, headers=auth(issued["credential"])
            )
            assert response.status_code == 200
        assert seen == []
        assert hot.identity_loads == 0
        metrics = client.get("/metrics").text
        assert "fleetplane_cache_warmed_runtimes_total 6.0" in metrics


def test_warming_can_be_turned_off(settings: Settings, database: Database, clock: Clock) -> None:
    _fleet_for_warming(settings, database, clock)
    off = settings.model_copy(update={"cache_warm_on_start": False})
    with _app(off, database, clock) as client:
        hot = client.app.state.context.hot  # type: ignore[attr-defined]
        hot.stop_warming()
        assert hot.warmed == 0
        assert len(hot.identities) == 0


def test_warming_overtaken_by_a_change_keeps_nothing_it_read_before_it(
    settings: Settings, database: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, issued = _fleet_for_warming(settings, database, clock)
    off = settings.model_copy(update={"cache_warm_on_start": False})
    with _app(off, database, clock) as client:
        hot = client.app.state.context.hot  # type: ignore[attr-defined]
        real = context_module.load_recent

        def racing(*args: Any, **kwargs: Any) -> Any:
            found = real(*args, **kwargs)
            hot.forget_runtime(ws.workspace_id, issued["runtimeId"], "cred", None)
            return found

        monkeypatch.setattr(context_module, "load_recent", racing)
        assert hot.warm(clock()) == 0
        assert len(hot.identities) == 0
        assert len(hot.callers) == 0

        # A change that comes in while the batch is being put: what was put is taken back.
        monkeypatch.setattr(context_module, "load_recent", real)
        real_put = hot.callers.put

        def put_racing(*args: Any, **kwargs: Any) -> None:
            real_put(*args, **kwargs)
            hot.forget_runtime(ws.workspace_id, issued["runtimeId"], "cred", None)

        monkeypatch.setattr(hot.callers, "put", put_racing)
        hot.warm(clock())
        assert len(hot.identities) == 0
        assert len(hot.callers) == 0


def test_warming_fills_at_most_half_the_cache(
    settings: Settings, database: Database, clock: Clock
) -> None:
    # A buffer of 100 makes caches of 1,000 entries: warming stops at 500.
    small = settings.model_copy(update={"heartbeat_buffer_max": 100, "cache_warm_on_start": False})
    with _app(small, database, clock) as client:
        ws = make_workspace(client)
        hot = client.app.state.context.hot  # type: ignore[attr-defined]
        with database.engine.begin() as connection:
            connection.execute(
                insert(Runtime),
                [
                    {
                        "id": uuid.uuid4().hex,
                        "workspace_id": ws.workspace_id,
                        "agent_id": f"bulk-{n}",
                        "enrolled_at": clock(),
                        "last_heartbeat_at": clock() - timedelta(seconds=n % 60),
                        "credential_hash": token_hash(f"fp_rt_bulk-{n}") if n % 2 else None,
                    }
                    for n in range(1200)
                ],
            )
        warmed = hot.warm(clock())
        assert hot.identities.max_entries == 1000
        # Runtimes with a credential take two entries: the count stops just short of half.
        assert 498 <= len(hot.identities) <= 500
        assert 300 <= warmed < 500
        # One entry under the agent id each, and one more under the id with a credential.
        assert len(hot.identities) == warmed + len(hot.callers)
        assert len(hot.callers) > 0


def test_heartbeats_handed_to_the_full_route_are_counted_by_reason(
    slow_flush: Settings, database: Database, clock: Clock
) -> None:
    with _app(slow_flush, database, clock) as client:
        hot = client.app.state.context.hot  # type: ignore[attr-defined]
        ws = make_workspace(client)
        # The audit rows of first heartbeats would clear this process's caches at its next poll.
        hot.watcher.stop()
        key = auth(ws.api_key)
        counted = dict(hot.full_route)
        assert set(counted) == set(context_module.FULL_ROUTE_REASONS)

        def beat(body: Any, headers: dict[str, str] = key, status: int = 200) -> None:
            sent = client.post(
                "/api/v1/heartbeat",
                content=json.dumps(body),
                headers={**headers, "content-type": "application/json"},
            )
            assert sent.status_code == status, sent.text

        def added() -> dict[str, int]:
            now = dict(hot.full_route)
            change = {reason: now[reason] - counted[reason] for reason in now}
            counted.update(now)
            return {reason: n for reason, n in change.items() if n}

        beat({"agent_id": "a", "session_id": "a"})  # the credential is not cached yet
        assert added() == {"credential": 1}
        beat({"agent_id": "b", "session_id": "b"})  # a runtime not seen: its first heartbeat
        assert added() == {"runtime": 1}
        beat({"agent_id": "b", "session_id": "b"})  # answered from memory
        assert added() == {}
        beat({"agent_id": "b", "session_id": "b", "runtime_version": "3.12.6"})
        assert added() == {"report": 1}
        beat({"agent_id": "b", "session_id": 7}, status=422)
        assert added() == {"body": 1}
        hot.answers.clear()
        beat({"agent_id": "b", "session_id": "b", "runtime_version": "3.12.6"})
        assert added() == {"workspace": 1}
        beat({"agent_id": "b"}, auth("fp_ws_not-a-key-of-this-server"), status=401)
        assert added() == {"credential": 1}
        scraped = client.get("/metrics").text
        assert 'fleetplane_heartbeat_full_route_total{reason="credential"} 2.0' in scraped


def test_a_change_in_this_process_drops_only_what_it_changed_before_its_answer(
    slow_flush: Settings, database: Database, clock: Clock
) -> None:
    with _app(slow_flush, database, clock) as client:
        hot = client.app.state.context.hot  # type: ignore[attr-defined]
        ws = make_workspace(client)
        _warm(client, ws.api_key, ["a", "a"])
        key = (ws.workspace_id, "agent", "a")
        digest = token_hash(ws.api_key)
        assert hot.identities.get(key) is not None
        assert hot.callers.get(digest) is not None

        # Operator changes to nothing the caches hold, or to another runtime only.
        other = client.post(
            f"/api/v1/orgs/{ws.org_id}/workspaces", json={"name": "b"}, headers=ADMIN
        )
        assert other.status_code == 201, other.text
        added = client.post(
            f"/api/v1/workspaces/{ws.workspace_id}/runtimes", json={"agentId": "b"}, headers=ADMIN
        )
        assert added.status_code == 201, added.text
        assert hot.identities.get(key) is not None
        assert hot.callers.get(digest) is not None
        before = dict(hot.full_route)
        beat = client.post(
            "/api/v1/heartbeat", json={"agent_id": "a", "session_id": "a"}, headers=auth(ws.api_key)
        )
        assert beat.status_code == 200
        assert dict(hot.full_route) == before  # still answered from memory

        # A new workspace key revokes the old one: gone from this process before the answer.
        regenerated = client.post(f"/api/v1/workspaces/{ws.workspace_id}/api-key", headers=ADMIN)
        assert regenerated.status_code == 201, regenerated.text
        assert hot.callers.get(digest) is None
        old = client.post(
            "/api/v1/heartbeat", json={"agent_id": "a", "session_id": "a"}, headers=auth(ws.api_key)
        )
        assert old.status_code == 401


def test_a_drift_event_forgets_its_runtime_only(
    slow_flush: Settings, database: Database, clock: Clock
) -> None:
    with _app(slow_flush, database, clock) as client:
        hot = client.app.state.context.hot  # type: ignore[attr-defined]
        ws = make_workspace(client)
        _warm(client, ws.api_key, ["a", "b", "a", "b"])
        keys = {agent: (ws.workspace_id, "agent", agent) for agent in "ab"}
        applied = "c" * 64
        event = {"schema_version": 1, "kind": "workspace_updated", "timestamp": "t"}
        sent = client.post(
            "/api/v1/events",
            json={"agent_id": "a", "events": [{**event, "config_hash": applied}]},
            headers=auth(ws.api_key),
        )
        assert sent.status_code == 200, sent.text
        # Before, every cache of the process was dropped: after a config change, each runtime
        # reporting its apply sent the whole fleet's next heartbeats to the database.
        assert hot.identities.get(keys["a"]) is None
        assert hot.identities.get(keys["b"]) is not None
        assert hot.callers.get(token_hash(ws.api_key)) is not None
        assert hot.answers.get(ws.workspace_id) is not None
        # Read again on its next heartbeat, with the hash it reported.
        beat = client.post(
            "/api/v1/heartbeat",
            json={"agent_id": "a", "session_id": "a", "config_hash": applied},
            headers=auth(ws.api_key),
        )
        assert beat.status_code == 200
        identity = hot.identities.get(keys["a"])
        assert identity is not None
        assert identity.observed_config_hash == applied
