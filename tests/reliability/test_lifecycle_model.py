"""A stateful property test of the runtime life cycle against the real app.

Hypothesis drives any sequence of enroll (and re-enroll), heartbeat (with or without a version,
an observed config hash or a failed apply), config edit, revert to an earlier document, version
report through sessions/register, revoke and server-clock advance. After every step the fleet
view (runtimes and summary) must equal a small model written straight from SPEC section 3.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text

from fleetplane.api.app import create_app
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from fleetplane.store.models import Base
from tests.conftest import ADMIN, BOOTSTRAP_TOKEN, Clock, auth, make_workspace

CONNECTED, DORMANT = 300, 3600  # SPEC 3.1 defaults
# SPEC 3.2 with minimum 3.4.0 and full sync 3.6.0, by hand rather than through domain code.
VERSIONS = {
    "3.3.9": "unsupported",
    "v3.4.0": "limited",
    "3.5.2": "limited",
    "3.6.0-rc.1": "limited",
    "3.6.0": "full",
    "v3.7.1": "full",
}
DOCUMENTS = [
    {},
    {"agents": {"max": 3}},
    {"agents": {"max": 4}, "lanes": ["a", "b"]},
    {"telemetry": {"enabled": False}},
]
FOREIGN_HASH = "f" * 64
AGENTS = [f"agent-{n}" for n in range(4)]
STEPS = [1, 120, 299, 300, 301, 1800, 3299, 3600, 3601, 7200]


@dataclass
class ModelRuntime:
    """What SPEC 3 needs to know of one runtime."""

    agent_id: str
    credential: str
    runtime_id: str
    last_heartbeat: datetime | None = None
    version: str | None = None
    observed_hash: str | None = None
    apply_failed_hash: str | None = None


def model_health(runtime: ModelRuntime, now: datetime) -> str:
    if runtime.last_heartbeat is None:
        return "never"
    age = (now - runtime.last_heartbeat).total_seconds()
    if age < CONNECTED:
        return "connected"
    return "stale" if age <= DORMANT else "dormant"


def model_compatibility(runtime: ModelRuntime) -> str:
    return "unknown" if runtime.version is None else VERSIONS[runtime.version]


def model_drift(runtime: ModelRuntime, desired: str) -> tuple[str, str | None]:
    compatibility = model_compatibility(runtime)
    if runtime.last_heartbeat is None:
        return "awaiting_sync", "no_heartbeat"
    if compatibility == "unsupported":
        return "upgrade_required", "version_below_minimum"
    if runtime.apply_failed_hash == desired:
        return "needs_reconcile", "apply_failed"
    if runtime.observed_hash is None:
        return "needs_reconcile", "config_revision_unreported"
    if runtime.observed_hash != desired:
        return "needs_reconcile", "config_revision_differs"
    if compatibility == "limited":
        return "needs_reconcile", "version_below_full_sync"
    return "aligned", None


def model_summary(runtimes: list[ModelRuntime], now: datetime, desired: str) -> dict[str, int]:
    health = [model_health(r, now) for r in runtimes]
    drift = [model_drift(r, desired)[0] for r in runtimes]
    return {
        "total": len(runtimes),
        "active": health.count("connected"),
        "stale": health.count("stale"),
        "dormant": health.count("dormant"),
        "never": health.count("never"),
        "aligned": drift.count("aligned"),
        "needsReconcile": drift.count("needs_reconcile"),
        "upgradeRequired": drift.count("upgrade_required"),
        "awaitingSync": drift.count("awaiting_sync"),
    }


def lifecycle_machine(new_database: Callable[[], Database]) -> type[RuleBasedStateMachine]:
    """The state machine class, each run on a fresh database from `new_database`."""

    class Lifecycle(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.database = new_database()
            self.clock = Clock()
            settings_ = Settings(
                database_url=self.database.url,
                public_url="https://fleet.test",
                bootstrap_admin_token=BOOTSTRAP_TOKEN,
            )
            app = create_app(settings_, database=self.database, clock=self.clock)
            self.client = TestClient(app, base_url="https://fleet.test")
            self.client.__enter__()
            self.ws = make_workspace(self.client, name="lifecycle")
            self.live: dict[str, ModelRuntime] = {}
            self.document_hashes: dict[int, str] = {}
            self.current_document = 0
            self.desired = self._put(0)
            self.sessions = itertools.count()

        def teardown(self) -> None:
            self.client.__exit__(None, None, None)
            self.database.dispose()

        def _put(self, index: int) -> str:
            answer = self.client.put(
                f"/api/v1/workspaces/{self.ws.workspace_id}/config",
                json=DOCUMENTS[index],
                headers=ADMIN,
            )
            assert answer.status_code == 200, answer.text
            digest = str(answer.json()["configRevision"]["hash"])
            assert self.document_hashes.setdefault(index, digest) == digest
            self.current_document = index
            return digest

        def _pick(self, index: int) -> ModelRuntime:
            return self.live[sorted(self.live)[index % len(self.live)]]

        def _refused(self, credential: str) -> bool:
            answer = self.client.post(
                "/api/v1/heartbeat", json={"session_id": "x"}, headers=auth(credential)
            )
            return answer.status_code == 401

        @initialize(version=st.sampled_from([None, *VERSIONS]))
        def enroll_two(self, version: str | None) -> None:
            self.enroll(AGENTS[0], version)
            self.enroll(AGENTS[1], None)

        @rule(agent=st.sampled_from(AGENTS), version=st.sampled_from([None, *VERSIONS]))
        def enroll(self, agent: str, version: str | None) -> None:
            token = self.client.post(
                f"/api/v1/workspaces/{self.ws.workspace_id}/enrollments", headers=ADMIN
            )
            assert token.status_code == 201, token.text
            body: dict[str, Any] = {"enrollment_token": token.json()["token"], "agent_id": agent}
            if version is not None:
                body["runtime_version"] = version
            answer = self.client.post("/api/v1/enroll", json=body)
            assert answer.status_code == 200, answer.text
            credential = answer.json()["credential"]
            existing = self.live.get(agent)
            if existing is None:
                runtime_id = answer.json()["runtime_id"]
                self.live[agent] = ModelRuntime(agent, credential, runtime_id, version=version)
                return
            # Re-enrolling keeps the runtime and revokes its old credential at once.
            assert answer.json()["runtime_id"] == existing.runtime_id
            assert self._refused(existing.credential)
            existing.credential = credential
            existing.version = version or existing.version

        @precondition(lambda self: bool(self.live))
        @rule(
            pick=st.integers(min_value=0, max_value=len(AGENTS) - 1),
            version=st.sampled_from([None, "unknown", *VERSIONS]),
            reported=st.sampled_from(["none", "desired", "earlier", "foreign"]),
            failed=st.booleans(),
        )
        def heartbeat(self, pick: int, version: str | None, reported: str, failed: bool) -> None:
            runtime = self._pick(pick)
            body: dict[str, Any] = {"session_id": f"s-{runtime.agent_id}"}
            if version is not None:
                body["runtime_version"] = version
            observed = {
                "none": None,
                "desired": self.desired,
                "earlier": self.document_hashes[0],
                "foreign": FOREIGN_HASH,
            }[reported]
            if observed is not None:
                body["config_hash"] = observed
            if failed:
                body["config_apply_failed_hash"] = self.desired
                body["config_apply_error"] = "disk full"
            answer = self.client.post(
                "/api/v1/heartbeat", json=body, headers=auth(runtime.credential)
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["config_hash"] == self.desired
            runtime.last_heartbeat = self.clock.now
            if version not in (None, "unknown"):
                runtime.version = version
            if observed is not None:
                runtime.observed_hash = observed
                if runtime.apply_failed_hash == observed:
                    runtime.apply_failed_hash = None
            if failed:
                runtime.apply_failed_hash = self.desired

        @precondition(lambda self: bool(self.live))
        @rule(
            pick=st.integers(min_value=0, max_value=len(AGENTS) - 1),
            kind=st.sampled_from(["workspace_updated", "config_apply_failed"]),
            reported=st.sampled_from(["desired", "earlier", "foreign"]),
        )
        def config_event(self, pick: int, kind: str, reported: str) -> None:
            """The SDK reports an applied (or failed) config with an event, not a heartbeat."""
            runtime = self._pick(pick)
            digest = {
                "desired": self.desired,
                "earlier": self.document_hashes[0],
                "foreign": FOREIGN_HASH,
            }[reported]
            event = {
                "schema_version": 1,
                "kind": kind,
                "timestamp": "2026-03-01T12:00:00Z",
                "config_hash": digest,
                "message": "could not apply",
            }
            answer = self.client.post(
                "/api/v1/events", json={"events": [event]}, headers=auth(runtime.credential)
            )
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"accepted": 1}
            if kind == "workspace_updated":
                runtime.observed_hash = digest
                if runtime.apply_failed_hash == digest:
                    runtime.apply_failed_hash = None
            else:
                runtime.apply_failed_hash = digest

        @precondition(lambda self: bool(self.live))
        @rule(reported=st.sampled_from(["none", "desired"]))
        def every_runtime_heartbeats(self, reported: str) -> None:
            for index in range(len(self.live)):
                self.heartbeat(index, None, reported, failed=False)

        @precondition(lambda self: bool(self.live))
        @rule(
            pick=st.integers(min_value=0, max_value=len(AGENTS) - 1),
            version=st.sampled_from(list(VERSIONS)),
        )
        def register_session(self, pick: int, version: str) -> None:
            runtime = self._pick(pick)
            answer = self.client.post(
                "/api/v1/sessions/register",
                json={
                    "session_id": f"reg-{next(self.sessions)}",
                    "agent_id": runtime.agent_id,
                    "agent_version": version,
                },
                headers=auth(runtime.credential),
            )
            assert answer.status_code == 200, answer.text
            runtime.version = version

        @rule(index=st.integers(min_value=0, max_value=len(DOCUMENTS) - 1))
        def edit_config(self, index: int) -> None:
            self.desired = self._put(index)

        @precondition(lambda self: self.current_document != 0)
        @rule()
        def revert_to_the_first_document(self) -> None:
            self.desired = self._put(0)

        @precondition(lambda self: bool(self.live))
        @rule(pick=st.integers(min_value=0, max_value=len(AGENTS) - 1))
        def revoke(self, pick: int) -> None:
            runtime = self._pick(pick)
            answer = self.client.delete(
                f"/api/v1/workspaces/{self.ws.workspace_id}/runtimes/{runtime.runtime_id}",
                headers=ADMIN,
            )
            assert answer.status_code == 204, answer.text
            del self.live[runtime.agent_id]
            assert self._refused(runtime.credential)

        @rule(seconds=st.sampled_from(STEPS))
        def advance_clock(self, seconds: int) -> None:
            self.clock.now += timedelta(seconds=seconds)

        @invariant()
        def fleet_view_equals_the_model(self) -> None:
            answer = self.client.get(
                f"/api/v1/workspaces/{self.ws.workspace_id}/fleet", headers=ADMIN
            )
            assert answer.status_code == 200, answer.text
            fleet = answer.json()
            now = self.clock.now
            seen = {
                r["agentId"]: (
                    r["health"],
                    r["compatibility"],
                    r["drift"],
                    r["driftReason"],
                    r["observedConfigHash"],
                )
                for r in fleet["runtimes"]
            }
            expected = {
                agent: (
                    model_health(r, now),
                    model_compatibility(r),
                    *model_drift(r, self.desired),
                    r.observed_hash,
                )
                for agent, r in self.live.items()
            }
            assert seen == expected
            summary = model_summary(list(self.live.values()), now, self.desired)
            # Compared on SPEC 3.5's counts; later features may add their own.
            assert {key: fleet["summary"][key] for key in summary} == summary
            assert fleet["desiredState"]["configRevision"]["hash"] == self.desired

    return Lifecycle


@pytest.fixture
def fresh_databases(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], Database]]:
    """A factory of empty migrated databases, one per state-machine run."""
    backend = request.param
    counter = itertools.count()
    opened: list[Database] = []

    def sqlite() -> Database:
        path = tmp_path / f"run-{next(counter)}.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        database = Database(f"sqlite+pysqlite:///{path}")
        opened.append(database)
        return database

    def postgresql() -> Database:
        database = Database(request.getfixturevalue("postgres_database_url"))
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with database.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        opened.append(database)
        return database

    yield sqlite if backend == "sqlite" else postgresql
    for database in opened:
        database.dispose()


@pytest.mark.parametrize(
    ("fresh_databases", "runs"),
    [("sqlite", 12), pytest.param("postgresql", 4, marks=pytest.mark.postgres)],
    indirect=["fresh_databases"],
)
def test_fleet_view_follows_the_spec_model(
    fresh_databases: Callable[[], Database], runs: int
) -> None:
    run_state_machine_as_test(
        lifecycle_machine(fresh_databases),
        settings=settings(
            max_examples=runs,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_found_by_the_model_a_reapplied_hash_clears_a_failure_on_the_hot_path(
    client: TestClient,
) -> None:
    """Regression: the hot path answered a heartbeat whose hash matched its cached observed
    hash, so a runtime that failed to re-apply a hash and then reported it applied stayed
    `apply_failed`; and a `workspace_updated` event left the cached observed hash stale."""
    ws = make_workspace(client)
    made = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/runtimes", json={"agentId": "rt"}, headers=ADMIN
    )
    credential = auth(made.json()["credential"])
    desired = client.get(f"/api/v1/workspaces/{ws.workspace_id}", headers=ADMIN).json()[
        "configRevision"
    ]["hash"]

    def beat(**fields: str) -> None:
        answer = client.post(
            "/api/v1/heartbeat", json={"session_id": "s", **fields}, headers=credential
        )
        assert answer.status_code == 200, answer.text

    def drift() -> tuple[str, str | None]:
        fleet = client.get(f"/api/v1/workspaces/{ws.workspace_id}/fleet", headers=ADMIN).json()
        runtime = fleet["runtimes"][0]
        return runtime["drift"], runtime["driftReason"]

    beat(config_hash=desired)
    assert drift() == ("aligned", None)
    beat(config_apply_failed_hash=desired)
    assert drift() == ("needs_reconcile", "apply_failed")
    beat(config_hash=desired)  # applied after all
    assert drift() == ("aligned", None)

    event = {"schema_version": 1, "kind": "workspace_updated", "timestamp": "2026-03-01T12:00:00Z"}
    sent = client.post(
        "/api/v1/events",
        json={"events": [{**event, "config_hash": FOREIGN_HASH}]},
        headers=credential,
    )
    assert sent.status_code == 200
    assert drift() == ("needs_reconcile", "config_revision_differs")
    beat(config_hash=desired)  # back on the desired document
    assert drift() == ("aligned", None)
