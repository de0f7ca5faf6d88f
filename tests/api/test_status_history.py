"""Status history: transitions recorded by the sweeper, once each, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from fleetplane.api.alerts import Alerting
from fleetplane.services import history as history_service
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from fleetplane.store.models import RuntimeTransition
from tests.alerting_support import (
    add_runtime,
    alert_app,
    aligned_beat,
    beat,
    history,
    moves,
    second_process,
)
from tests.conftest import ADMIN, START, Clock, make_workspace


def test_health_and_drift_transitions_with_their_times(
    settings: Settings, database: Database, clock: Clock
) -> None:
    with alert_app(settings, database, clock) as (client, alerting):
        ws = make_workspace(client)
        runtime_id, token = add_runtime(client, ws, "r1")
        assert alerting.sweep().ran
        first = history(client, ws, runtime_id)
        assert moves(first, "health") == [(None, "never")]
        assert moves(first, "drift") == [(None, "awaiting_sync")]
        assert first["current"]["health"] == "never"
        assert first["items"][0]["at"] == "2026-03-01T12:00:00Z"  # enrolled then

        clock.advance(10)
        aligned_beat(client, token, ws)
        clock.advance(20)
        alerting.sweep(force=True)
        # Quiet for 301 s after the heartbeat at +10 s: stale since exactly +310 s.
        clock.advance(301)
        alerting.sweep(force=True)
        alerting.sweep(force=True)  # nothing new: one transition per change, not per sweep
        clock.advance(3600)
        alerting.sweep(force=True)
        clock.advance(600)
        aligned_beat(client, token, ws)
        alerting.sweep(force=True)

        body = history(client, ws, runtime_id)
        assert moves(body, "health") == [
            (None, "never"),
            ("never", "connected"),
            ("connected", "stale"),
            ("stale", "dormant"),
            ("dormant", "connected"),
        ]
        assert moves(body, "drift") == [(None, "awaiting_sync"), ("awaiting_sync", "aligned")]
        health = [i for i in body["items"] if i["kind"] == "health"]
        back, dormant, stale, connected = health[:4]
        assert connected["at"] == "2026-03-01T12:00:10Z"
        assert stale["at"] == "2026-03-01T12:05:10Z"
        assert dormant["at"] == "2026-03-01T13:00:10Z"
        # Connected for 300 s, stale for 3300 s (the states' durations, not the sweeps').
        assert connected["durationSeconds"] == 300
        assert stale["durationSeconds"] == 3300
        assert stale["until"] == dormant["at"]
        assert back["ongoing"] is True
        assert back["to"] == "connected"
        assert body["current"]["health"] == "connected"

        # A config edit makes the aligned runtime drift; the reason is recorded.
        edited = client.put(
            f"/api/v1/workspaces/{ws.workspace_id}/config", json={"lanes": []}, headers=ADMIN
        )
        assert edited.status_code == 200
        alerting.sweep(force=True)
        drift = history(client, ws, runtime_id, kind="drift")["items"][0]
        assert (drift["from"], drift["to"], drift["reason"]) == (
            "aligned",
            "needs_reconcile",
            "config_revision_differs",
        )


def test_history_is_paged_and_checked(settings: Settings, database: Database, clock: Clock) -> None:
    with alert_app(settings, database, clock) as (client, alerting):
        ws = make_workspace(client)
        runtime_id, token = add_runtime(client, ws, "r1")
        for _ in range(3):
            beat(client, token, ws)
            alerting.sweep(force=True)
            clock.advance(400)
            alerting.sweep(force=True)
        first = history(client, ws, runtime_id, limit=2)
        assert len(first["items"]) == 2
        second = history(client, ws, runtime_id, limit=100, cursor=first["nextCursor"])
        everything = history(client, ws, runtime_id, limit=100)
        assert [i["id"] for i in first["items"] + second["items"]] == [
            i["id"] for i in everything["items"]
        ]
        url = f"/api/v1/workspaces/{ws.workspace_id}/runtimes"
        assert client.get(f"{url}/nope/history", headers=ADMIN).status_code == 404
        bad_kind = client.get(f"{url}/{runtime_id}/history?kind=mood", headers=ADMIN)
        assert bad_kind.status_code == 422
        bad_cursor = client.get(f"{url}/{runtime_id}/history?cursor=xyz", headers=ADMIN)
        assert bad_cursor.status_code == 422
        other = make_workspace(client, name="other")
        # A runtime is only reachable through its own workspace.
        assert (
            client.get(
                f"/api/v1/workspaces/{other.workspace_id}/runtimes/{runtime_id}/history",
                headers=ADMIN,
            ).status_code
            == 404
        )


def _transition_counts(database: Database) -> dict[tuple[str, str, str | None, str], int]:
    with database.read() as session:
        rows = session.execute(
            select(
                RuntimeTransition.runtime_id,
                RuntimeTransition.kind,
                RuntimeTransition.from_state,
                RuntimeTransition.to_state,
                func.count(),
            ).group_by(
                RuntimeTransition.runtime_id,
                RuntimeTransition.kind,
                RuntimeTransition.from_state,
                RuntimeTransition.to_state,
            )
        ).all()
    return {(r[0], r[1], r[2], r[3]): r[4] for r in rows}


def _race(sweepers: list[Alerting], *, force: bool) -> list[bool]:
    """Both processes sweep at the same moment; whether each one ran."""
    barrier = threading.Barrier(len(sweepers))
    ran: list[bool] = [False] * len(sweepers)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            ran[index] = sweepers[index].sweep(force=force).ran
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(sweepers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return ran


def test_two_processes_record_each_transition_exactly_once(
    settings: Settings, database: Database, clock: Clock
) -> None:
    with alert_app(settings, database, clock) as (client, first):
        second, other_database = second_process(settings, database.url, clock)
        try:
            runtimes = []
            for name in ("a", "b", "c"):
                ws = make_workspace(client, name=name)
                for agent in ("x", "y"):
                    runtime_id, token = add_runtime(client, ws, f"{name}-{agent}")
                    aligned_beat(client, token, ws)
                    runtimes.append(runtime_id)
            # Each step, both processes sweep at once, several times; forced, so that both
            # really work on every workspace instead of leaving the interval to the other.
            for step in (0, 301, 3601):
                clock.now = START + timedelta(seconds=step)
                for _ in range(3):
                    _race([first, second], force=True)
            counts = _transition_counts(database)
            assert set(counts.values()) == {1}, counts
            expected = {
                ("health", None, "connected"),
                ("health", "connected", "stale"),
                ("health", "stale", "dormant"),
                ("drift", None, "aligned"),
            }
            for runtime_id in runtimes:
                mine = {(k, f, t) for (r, k, f, t) in counts if r == runtime_id}
                assert mine == expected

            # Unforced, the two processes share the interval: exactly one sweeps.
            clock.advance(3600)
            assert sorted(_race([first, second], force=False)) == [False, True]
        finally:
            other_database.dispose()


def test_a_fleet_wide_change_is_recorded_a_chunk_at_a_time(
    settings: Settings, database: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks: list[int] = []
    original = history_service.changed_states

    def spy(*args: Any, **kwargs: Any) -> list[history_service.Observed]:
        found = original(*args, **kwargs)
        chunks.append(len(found))
        return found

    monkeypatch.setattr(history_service, "changed_states", spy)
    with alert_app(settings, database, clock) as (client, alerting):
        alerting.policy = replace(alerting.policy, chunk=2, pause_seconds=0, rest_ratio=0)
        ws = make_workspace(client)
        runtimes = []
        for n in range(5):
            runtime_id, token = add_runtime(client, ws, f"r{n}")
            aligned_beat(client, token, ws)
            runtimes.append(runtime_id)
        assert alerting.sweep().ran
        assert chunks == [2, 2, 1]  # five first-seen runtimes, two per transaction
        chunks.clear()
        clock.advance(301)  # every runtime goes stale at once
        alerting.sweep(force=True)
        assert chunks == [2, 2, 1]
        chunks.clear()
        alerting.sweep(force=True)
        assert chunks == [0]  # nothing changed since
    counts = _transition_counts(database)
    assert set(counts.values()) == {1}, counts
    for runtime_id in runtimes:
        mine = {(k, f, t) for (r, k, f, t) in counts if r == runtime_id}
        assert mine == {
            ("health", None, "connected"),
            ("health", "connected", "stale"),
            ("drift", None, "aligned"),
        }
