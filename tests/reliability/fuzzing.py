"""API fuzzing with schemathesis against the ASGI app, shared by the test suite and bench/fuzz.py.

Cases are generated from the served OpenAPI document (`/api/v1/openapi.json`), positive and
negative, for every operation, and sent through a Starlette TestClient so that the app runs its
real lifespan (hot-path caches, liveness flusher). Each case goes out once per credential: a
valid operator token, a workspace key, and none. Path parameters are either generated or taken
from a small world of real ids, so the fuzzer reaches the handlers and not only the 404s.

Every response is checked by schemathesis: no 5xx, a documented status code, a documented
content type, and a body that matches the documented schema (error bodies: `ErrorResponse`).
Failures are collected, not raised, so one run reports every problem with a curl reproduction.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.generation.case import Case
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN, auth, make_workspace

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Operations that, when they succeed, change the world the next cases rely on.
DESTRUCTIVE = (
    ("DELETE", "/api/v1/workspaces/{workspace_id}"),
    ("DELETE", "/api/v1/orgs/{org_id}"),
    ("POST", "/api/v1/workspaces/{workspace_id}/api-key"),
    ("DELETE", "/api/v1/me/tokens/{token_id}"),
    ("DELETE", "/api/v1/orgs/{org_id}/members/{user_id}"),
    ("DELETE", "/api/v1/workspaces/{workspace_id}/members/{user_id}"),
)
BASE_URL = "https://fleet.test"


@dataclass
class World:
    """Real ids and credentials the fuzzer can aim at."""

    credentials: dict[str, dict[str, str]]
    path_ids: dict[str, str]

    @classmethod
    def build(cls, client: TestClient) -> World:
        """An org, a workspace with a key, a pre-registered runtime and an enrollment token."""
        ws = make_workspace(client, name="fuzz")
        runtime = client.post(
            f"/api/v1/workspaces/{ws.workspace_id}/runtimes",
            json={"agentId": "fuzz-agent"},
            headers=ADMIN,
        )
        assert runtime.status_code == 201, runtime.text
        enrollment = client.post(f"/api/v1/workspaces/{ws.workspace_id}/enrollments", headers=ADMIN)
        assert enrollment.status_code == 201, enrollment.text
        me = client.get("/api/v1/me", headers=ADMIN).json()
        return cls(
            credentials={
                "operator": ADMIN,
                "workspace_key": auth(ws.api_key),
                "runtime": auth(runtime.json()["credential"]),
                "none": {},
            },
            path_ids={
                "org_id": ws.org_id,
                "workspace_id": ws.workspace_id,
                "runtime_id": runtime.json()["runtimeId"],
                "enrollment_id": enrollment.json()["id"],
                "user_id": me["id"],
                "number": "1",
            },
        )


@dataclass
class FuzzReport:
    """What one fuzzing run sent and what it found."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    server_errors: list[str] = field(default_factory=list)
    operations: int = 0
    seconds: float = 0.0

    @property
    def server_error_count(self) -> int:
        """Responses with a 5xx status."""
        return sum(count for status, count in self.statuses.items() if status >= 500)


def load_schema(client: TestClient) -> Any:
    """The schemathesis schema of the app's served OpenAPI document."""
    document = client.get("/api/v1/openapi.json")
    assert document.status_code == 200
    return schemathesis.openapi.from_dict(document.json())


def operations(schema: Any) -> list[Any]:
    """Every operation of the schema (a broken one fails loudly)."""
    found = []
    for result in schema.get_all_operations():
        found.append(result.ok())
    return found


def _httpx_kwargs(case: Case) -> dict[str, Any]:
    """The request schemathesis would send, in the form Starlette's (httpx) TestClient takes."""
    sent = case.as_transport_kwargs(base_url=BASE_URL)
    headers = {str(k): str(v) for k, v in (sent.get("headers") or {}).items()}
    cookies = sent.get("cookies") or {}
    if cookies:
        # Per-request cookies are deprecated in httpx; a Cookie header says the same.
        headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    kwargs: dict[str, Any] = {
        "method": sent["method"],
        "url": sent["url"],
        "headers": headers,
        "params": sent.get("params") or None,
    }
    if "json" in sent:
        kwargs["content"] = json.dumps(sent["json"]).encode()
        headers.setdefault("Content-Type", "application/json")
    elif "data" in sent:
        data = sent["data"]
        if isinstance(data, dict):
            kwargs["data"] = data
        else:
            kwargs["content"] = data.encode() if isinstance(data, str) else data
    return kwargs


def _case_strategy(operation: Any, world: World) -> st.SearchStrategy[Case]:
    """Positive and negative cases, with generated or real path ids."""
    fixed = {
        name: world.path_ids[name]
        for name in (p.name for p in operation.path_parameters)
        if name in world.path_ids
    }
    strategies = [operation.as_strategy(generation_mode=mode) for mode in GenerationMode]
    if fixed:
        strategies.append(
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE, path_parameters=fixed)
        )
    return st.one_of(*strategies)


def fuzz_operation(
    client: TestClient,
    operation: Any,
    world_holder: list[World],
    report: FuzzReport,
    *,
    max_examples: int,
    seed: int,
    rebuild: Callable[[], World],
    credentials: tuple[str, ...] = ("operator", "workspace_key", "none"),
) -> None:
    """Send up to `max_examples` generated cases of one operation, once per credential."""
    strategy = _case_strategy(operation, world_holder[0])
    label = (operation.method.upper(), operation.path)

    @hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=False,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.seed(seed)
    @given(case=strategy)
    def run(case: Case) -> None:
        for credential in credentials:
            kwargs = _httpx_kwargs(case)
            kwargs["headers"].pop("Authorization", None)
            kwargs["headers"].update(world_holder[0].credentials[credential])
            response = client.request(**kwargs)
            report.requests += 1
            report.statuses[response.status_code] += 1
            try:
                case.validate_response(response, checks=CHECKS)
            except FailureGroup as failure:
                text = f"[{credential}] {label[0]} {label[1]}\n{failure}"
                report.failures.append(text)
                if response.status_code >= 500:
                    report.server_errors.append(text)
            if label in DESTRUCTIVE and response.status_code < 300:
                world_holder[0] = rebuild()

    run()


def fuzz_app(
    client: TestClient, *, max_examples: int, seed: int = 0, only: str | None = None
) -> FuzzReport:
    """Fuzz every operation of the app behind `client`; returns the report."""
    started = time.perf_counter()
    schema = load_schema(client)
    report = FuzzReport()
    world_holder = [World.build(client)]

    def rebuild() -> World:
        return World.build(client)

    for operation in operations(schema):
        if only is not None and only not in operation.path:
            continue
        report.operations += 1
        fuzz_operation(
            client,
            operation,
            world_holder,
            report,
            max_examples=max_examples,
            seed=seed,
            rebuild=rebuild,
        )
    report.seconds = time.perf_counter() - started
    return report
