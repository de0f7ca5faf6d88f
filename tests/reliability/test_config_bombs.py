"""Config input hardening: YAML and JSON bombs sent to PUT /workspaces/{id}/config are refused
with 413 or 422 after bounded work, leave the database as it was, and the limits are settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleetplane.api.app import create_app
from fleetplane.domain.config_hash import DEFAULT_MAX_DEPTH, DEFAULT_MAX_NODES, parse_workspace_yaml
from fleetplane.domain.errors import InvalidDocument
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from tests.conftest import ADMIN, BOOTSTRAP_TOKEN, Clock, WorkspaceFixture, make_workspace, snapshot
from tests.reliability import figures

MiB = 1024 * 1024
# A refused YAML bomb is refused after at most one event per node allowed, one per level
# allowed, and the few that open the stream, the document and the top-level map.
EVENT_BOUND = DEFAULT_MAX_NODES + DEFAULT_MAX_DEPTH + 3
JSON = "application/json"
YAML = "application/yaml"


def _laughs() -> str:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, 10):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
    return "\n".join(lines) + "\n"


BOMBS: dict[str, tuple[str, str, int, str]] = {
    "json nested arrays past the stack": (
        JSON,
        '{"a":' + "[" * 200_000 + "]" * 200_000 + "}",
        422,
        "invalid_document",
    ),
    "json nested objects past the stack": (
        JSON,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        422,
        "invalid_document",
    ),
    "json nested one past the depth limit": (
        JSON,
        '{"a":' * 65 + "1" + "}" * 65,
        422,
        "invalid_document",
    ),
    "json 200,000 array items": (
        JSON,
        '{"a":[' + ",".join(["0"] * 200_000) + "]}",
        422,
        "invalid_document",
    ),
    "json integer of 500,000 digits": (
        JSON,
        '{"a":' + "9" * 500_000 + "}",
        422,
        "invalid_document",
    ),
    "json string over the body limit": (
        JSON,
        '{"a":"' + "x" * (MiB + 1) + '"}',
        413,
        "payload_too_large",
    ),
    "yaml billion laughs": (YAML, _laughs(), 422, "invalid_document"),
    "yaml 99 aliases of a 500 KB string": (
        YAML,
        'a: &a "' + "x" * 500_000 + '"\nb: [' + ", ".join(["*a"] * 99) + "]\n",
        422,
        "invalid_document",
    ),
    "yaml nested flow sequences": (
        YAML,
        "a: " + "[" * 300_000 + "]" * 300_000,
        422,
        "invalid_document",
    ),
    "yaml nested block mappings": (
        YAML,
        "".join("  " * i + f"k{i}:\n" for i in range(500)),
        422,
        "invalid_document",
    ),
    "yaml 1 MiB of sequence items": (
        YAML,
        "a:\n" + "- 0\n" * (MiB // 4 - 1),
        422,
        "invalid_document",
    ),
    "yaml 30,000 anchors": (
        YAML,
        "".join(f"k{i}: &a{i} v\n" for i in range(30_000)),
        422,
        "invalid_document",
    ),
    "yaml string over the body limit": (YAML, "a: " + "x" * (MiB + 1), 413, "payload_too_large"),
}


@pytest.fixture
def app_client(sqlite_database: Database) -> Iterator[TestClient]:
    settings = Settings(
        database_url=sqlite_database.url,
        public_url="https://fleet.test",
        bootstrap_admin_token=BOOTSTRAP_TOKEN,
        max_body_bytes=MiB,
    )
    app = create_app(settings, database=sqlite_database, clock=Clock())
    with TestClient(app, base_url="https://fleet.test") as client:
        yield client


def put_config(
    client: TestClient, ws: WorkspaceFixture, body: str, content_type: str
) -> tuple[Any, float]:
    started = time.perf_counter()
    answer = client.put(
        f"/api/v1/workspaces/{ws.workspace_id}/config",
        content=body.encode(),
        headers={**ADMIN, "Content-Type": content_type},
    )
    return answer, time.perf_counter() - started


def test_every_bomb_is_refused_after_bounded_work_and_changes_nothing(
    app_client: TestClient, sqlite_database: Database, parser_events: list[int]
) -> None:
    ws = make_workspace(app_client)
    accepted, _ = put_config(app_client, ws, '{"agents": {"max": 3}}', JSON)
    assert accepted.status_code == 200
    before = snapshot(sqlite_database)
    timings = {}
    for name, (content_type, body, status, code) in BOMBS.items():
        parser_events.clear()
        answer, elapsed = put_config(app_client, ws, body, content_type)
        timings[name] = elapsed
        assert answer.status_code == status, (name, answer.text[:300])
        assert answer.json()["error"]["code"] == code, name
        # The work is bounded by the limits, not by the document (the times are reported in
        # docs/reliability.md, not asserted: they depend on the machine).
        assert all(count <= EVENT_BOUND for count in parser_events), (name, parser_events)
        if content_type == YAML and status == 422:
            assert parser_events, name
    figures.record("config bombs", {name: round(s, 3) for name, s in timings.items()})
    assert snapshot(sqlite_database) == before
    revision = app_client.get(f"/api/v1/workspaces/{ws.workspace_id}", headers=ADMIN).json()
    assert revision["configRevision"]["number"] == 2


def test_limits_are_settings(sqlite_database: Database) -> None:
    settings = Settings(
        database_url=sqlite_database.url,
        bootstrap_admin_token=BOOTSTRAP_TOKEN,
        config_max_depth=3,
        config_max_nodes=12,
        config_max_text_chars=40,
    )
    app = create_app(settings, database=sqlite_database, clock=Clock())
    with TestClient(app, base_url="https://fleet.test") as client:
        ws = make_workspace(client)
        cases = [
            ('{"a": {"b": {"c": 1}}}', JSON, 200),
            ('{"a": {"b": {"c": [1]}}}', JSON, 422),  # depth 4
            ("a:\n  b:\n    c: 2\n", YAML, 200),
            ("a:\n  b:\n    c: [2]\n", YAML, 422),
            ('{"a": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]}', JSON, 422),  # 14 nodes
            ("a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]\n", YAML, 422),
            ("a: &x " + "y" * 15 + "\nb: *x\nc: *x\n", YAML, 422),  # 3 x 15 characters
        ]
        for body, content_type, status in cases:
            answer, _ = put_config(client, ws, body, content_type)
            assert answer.status_code == status, (body, answer.text)


def test_parsing_does_not_stall_the_server(app_client: TestClient) -> None:
    """A slow document is parsed off the event loop: probes and heartbeats still answer."""
    ws = make_workspace(app_client)
    slow = "".join(f"k{i}: [a, b, c]\n" for i in range(3_500))  # 17,500 nodes: accepted
    result: dict[str, Any] = {}

    def send() -> None:
        result["answer"], result["seconds"] = put_config(app_client, ws, slow, YAML)

    sender = threading.Thread(target=send)
    sender.start()
    probe_times = []
    while sender.is_alive() and len(probe_times) < 50:
        started = time.perf_counter()
        assert app_client.get("/healthz").status_code == 200
        probe_times.append(time.perf_counter() - started)
        time.sleep(0.02)
    sender.join(timeout=60)
    assert result["answer"].status_code == 200, result["answer"].text
    # The probes ran while the document was being parsed, each far quicker than the parse.
    assert len(probe_times) >= 3, result["seconds"]
    assert max(probe_times) < max(0.5, result["seconds"] / 2)


def test_text_expanded_through_aliases_is_bounded() -> None:
    document = "a: &s " + "x" * 1000 + "\nb: [*s, *s, *s]\n"
    assert parse_workspace_yaml(document, max_text_chars=4002)["b"][2] == "x" * 1000
    with pytest.raises(InvalidDocument, match="more than 4001 characters of text") as refused:
        parse_workspace_yaml(document, max_text_chars=4001)
    assert refused.value.line == 2
