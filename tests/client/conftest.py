"""Helpers for the client tests: the real app reached through httpx transports.

The async client gets ``httpx.ASGITransport(app=client.app)``: the same app object the
``client`` fixture built (and whose lifespan it ran), so every path sees one database and one
server clock. ``ASGITransport`` is async-only, and the TestClient's own transport cannot be
reused: starlette's TestClient is built on ``httpx2``, whose transports and streams are not
``httpx`` ones. So the sync client gets :class:`SyncASGITransport`, which runs that same
``ASGITransport`` on an anyio blocking portal: real ASGI semantics, no sockets.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi.testclient import TestClient

from tests.conftest import ADMIN

ENDPOINT = "https://fleet.test"


class SyncASGITransport(httpx.BaseTransport):
    """A blocking httpx transport that runs ``httpx.ASGITransport`` on an anyio portal."""

    def __init__(self, app: Any, portal: BlockingPortal) -> None:
        self._transport = httpx.ASGITransport(app=app)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> tuple[int, httpx.Headers, bytes]:
            response = await self._transport.handle_async_request(request)
            return response.status_code, response.headers, await response.aread()

        status, headers, body = self._portal.call(send)
        return httpx.Response(status, headers=headers, content=body, request=request)


@pytest.fixture
def sync_transport(client: TestClient) -> Iterator[httpx.BaseTransport]:
    """A sync httpx transport into the app under test."""
    with start_blocking_portal() as portal:
        yield SyncASGITransport(client.app, portal)


@pytest.fixture
def asgi_transport(client: TestClient) -> httpx.AsyncBaseTransport:
    """An async httpx transport into the same app."""
    return httpx.ASGITransport(app=client.app)


def fleet(client: TestClient, workspace_id: str, **params: Any) -> dict[str, Any]:
    """The operator's fleet view of a workspace."""
    response = client.get(f"/api/v1/workspaces/{workspace_id}/fleet", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def by_agent(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Fleet runtimes keyed by agent id."""
    return {runtime["agentId"]: runtime for runtime in body["runtimes"]}


def enrollment_token(client: TestClient, workspace_id: str, **body: Any) -> str:
    """A fresh fp_enr_ token for the workspace."""
    response = client.post(
        f"/api/v1/workspaces/{workspace_id}/enrollments", json=body, headers=ADMIN
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


def put_config(client: TestClient, workspace_id: str, document: Any) -> dict[str, Any]:
    """An operator config edit; returns the new revision."""
    response = client.put(f"/api/v1/workspaces/{workspace_id}/config", json=document, headers=ADMIN)
    assert response.status_code == 200, response.text
    revision: dict[str, Any] = response.json()["configRevision"]
    return revision


def set_mode(client: TestClient, workspace_id: str, mode: str) -> None:
    """Set a workspace's authority mode."""
    response = client.patch(
        f"/api/v1/workspaces/{workspace_id}", json={"policyMode": mode}, headers=ADMIN
    )
    assert response.status_code == 200, response.text


def put_policies(client: TestClient, workspace_id: str, policy_set: dict[str, Any]) -> None:
    """Set the workspace-scoped policy set."""
    response = client.put(
        f"/api/v1/workspaces/{workspace_id}/policies", json=policy_set, headers=ADMIN
    )
    assert response.status_code == 200, response.text
