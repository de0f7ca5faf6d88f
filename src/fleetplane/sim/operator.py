"""The few operator API calls the simulator needs to build a fleet (SPEC 4.4)."""

from __future__ import annotations

from typing import Any

import httpx

from fleetplane.client.errors import TransportError, UnexpectedResponseError, error_from_response

API_PREFIX = "/api/v1"


class OperatorAPI:
    """Creates orgs, workspaces, configs and runtime credentials with an ``fp_op_`` token."""

    def __init__(self, http: httpx.AsyncClient, *, base_url: str, token: str) -> None:
        self._http = http
        self._base_url = base_url
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    async def _call(self, method: str, path: str, body: Any) -> dict[str, Any]:
        url = f"{self._base_url}{API_PREFIX}{path}"
        try:
            response = await self._http.request(method, url, json=body, headers=self._headers)
        except httpx.RequestError as error:
            raise TransportError(f"{method} {url} failed: {error}") from error
        if not response.is_success:
            raise error_from_response(response)
        answer = response.json()
        if not isinstance(answer, dict):
            raise UnexpectedResponseError(f"{method} {path} did not answer a JSON object")
        return answer

    async def create_org(self, name: str) -> str:
        """A new org's id."""
        return str((await self._call("POST", "/orgs", {"name": name}))["id"])

    async def create_workspace(self, org_id: str, name: str, policy_mode: str | None) -> str:
        """A new workspace's id."""
        body: dict[str, Any] = {"name": name}
        if policy_mode is not None:
            body["policyMode"] = policy_mode
        return str((await self._call("POST", f"/orgs/{org_id}/workspaces", body))["id"])

    async def put_config(self, workspace_id: str, document: dict[str, Any]) -> str:
        """Store a config document; returns its hash."""
        answer = await self._call("PUT", f"/workspaces/{workspace_id}/config", document)
        return str(answer["configRevision"]["hash"])

    async def create_runtime(
        self, workspace_id: str, agent_id: str, labels: dict[str, str]
    ) -> tuple[str, str]:
        """Pre-register a runtime; returns its id and its ``fp_rt_`` credential."""
        answer = await self._call(
            "POST", f"/workspaces/{workspace_id}/runtimes", {"agentId": agent_id, "labels": labels}
        )
        return str(answer["runtimeId"]), str(answer["credential"])
