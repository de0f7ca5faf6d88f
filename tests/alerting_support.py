"""Helpers for the alerting tests: the app with alerting installed, a local webhook receiver,
and runtimes driven through the runtime surface."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi.testclient import TestClient

from fleetplane.api import alerts
from fleetplane.api.alerts import Alerting
from fleetplane.api.app import create_app
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from tests.conftest import ADMIN, Clock, WorkspaceFixture, auth

DAY = 24 * 3600


def quiet_settings(settings: Settings, **changes: Any) -> Settings:
    """Settings whose background workers never fire during a test: tests drive them."""
    return settings.model_copy(
        update={"sweep_seconds": 3600.0, "webhook_poll_seconds": 60.0, **changes}
    )


@contextmanager
def alert_app(
    settings: Settings, database: Database, clock: Clock
) -> Iterator[tuple[TestClient, Alerting]]:
    """The app with alerting installed (as `create_app` does once wired), over ASGI."""
    app = create_app(quiet_settings(settings), database=database, clock=clock)
    alerting = alerts.install(app, app.state.context)
    with TestClient(app, base_url="https://fleet.test") as client:
        # Tests run the sweeper and the delivery worker by hand, on the settable clock.
        alerting.stop()
        yield client, alerting


def second_process(
    settings: Settings, database_url: str, clock: Clock
) -> tuple[Alerting, Database]:
    """Another server process on the same database: its own engine, context and sweeper."""
    database = Database(database_url)
    app = create_app(quiet_settings(settings), database=database, clock=clock)
    return alerts.install(app, app.state.context), database


@dataclass
class Received:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes

    @property
    def document(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: records every POST, answers `statuses` in turn."""

    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    received: list[Received] = field(default_factory=list)
    url: str = ""

    def answer(self) -> int:
        return self.statuses.pop(0) if self.statuses else self.default_status


@contextmanager
def receiver(**options: Any) -> Iterator[Receiver]:
    """Run a `Receiver` in a thread for the duration of the block."""
    state = Receiver(**options)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            with lock:
                state.received.append(Received(dict(self.headers.items()), body))
                status = state.answer()
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def add_runtime(client: TestClient, ws: WorkspaceFixture, agent_id: str) -> tuple[str, str]:
    """Pre-register a runtime; its id and credential."""
    response = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/runtimes", json={"agentId": agent_id}, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    return response.json()["runtimeId"], response.json()["credential"]


def beat(client: TestClient, token: str, ws: WorkspaceFixture, **fields: Any) -> dict[str, Any]:
    """One heartbeat with the runtime's credential."""
    body = {"workspace_id": ws.workspace_id, "session_id": fields.pop("session_id", "s1"), **fields}
    response = client.post("/api/v1/heartbeat", json=body, headers=auth(token))
    assert response.status_code == 200, response.text
    return response.json()


def aligned_beat(client: TestClient, token: str, ws: WorkspaceFixture, **fields: Any) -> None:
    """A heartbeat of a runtime on the desired config at a full-sync version."""
    desired = client.get(f"/api/v1/workspaces/{ws.workspace_id}", headers=ADMIN).json()[
        "configRevision"
    ]["hash"]
    fields.setdefault("runtime_version", "3.6.0")
    beat(client, token, ws, config_hash=desired, **fields)


def history(client: TestClient, ws: WorkspaceFixture, runtime_id: str, **params: Any) -> Any:
    """A runtime's status history."""
    response = client.get(
        f"/api/v1/workspaces/{ws.workspace_id}/runtimes/{runtime_id}/history",
        params=params,
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    return response.json()


def moves(body: Any, kind: str) -> list[tuple[str | None, str]]:
    """(from, to) of a history's transitions of one kind, oldest first."""
    return [(i["from"], i["to"]) for i in reversed(body["items"]) if i["kind"] == kind]
