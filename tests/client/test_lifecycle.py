"""The client against the real app, on SQLite and PostgreSQL: enroll, beat, pull, apply."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fleetplane.client import (
    AsyncClient,
    AuthError,
    Client,
    ForbiddenError,
    NotFoundError,
    ValidationError,
    workspace_config_hash,
)
from fleetplane.domain.config_hash import config_hash
from tests.client.conftest import ENDPOINT, by_agent, enrollment_token, fleet, put_config
from tests.conftest import make_workspace

CONFIG_V2: dict[str, Any] = {
    "lanes": [{"name": "Framework: Core", "wip_limit": 1}],
    "sync": "on",
    "control_plane": {"sync_interval": 30},
}
CONFIG_V3: dict[str, Any] = {**CONFIG_V2, "lanes": [{"name": "Framework: Core", "wip_limit": 3}]}


def test_enroll_heartbeat_pull_apply_then_reconcile_a_config_edit(
    client: TestClient, sync_transport: httpx.BaseTransport
) -> None:
    ws = make_workspace(client)
    v2 = put_config(client, ws.workspace_id, CONFIG_V2)
    token = enrollment_token(client, ws.workspace_id)
    with Client(ENDPOINT + "/api/v1/", transport=sync_transport) as runtime:
        enrolled = runtime.enroll(
            token, "laptop-1", runtime_version="3.12.6", host_id="h1", labels={"team": "core"}
        )
        assert enrolled.credential.startswith("fp_rt_")
        assert enrolled.credential not in repr(enrolled)
        assert (runtime.token, runtime.workspace_id, runtime.org_id, runtime.agent_id) == (
            enrolled.credential,
            ws.workspace_id,
            ws.org_id,
            "laptop-1",
        )
        assert enrolled.control_plane["project_id"] == ws.workspace_id
        assert enrolled.control_plane["endpoint"] == ENDPOINT
        row = by_agent(fleet(client, ws.workspace_id))["laptop-1"]
        assert (row["drift"], row["driftReason"], row["health"]) == (
            "awaiting_sync",
            "no_heartbeat",
            "never",
        )
        assert row["id"] == enrolled.runtime_id

        beat = runtime.heartbeat("session-1")
        assert (beat.status, beat.next_heartbeat_ms, beat.policy_mode) == (
            "ok",
            30_000,
            "authoritative",
        )
        assert beat.config_hash == v2["hash"] == config_hash(CONFIG_V2)
        assert beat.server_time == "2026-03-01T12:00:00Z"
        row = by_agent(fleet(client, ws.workspace_id))["laptop-1"]
        assert (row["drift"], row["driftReason"]) == (
            "needs_reconcile",
            "config_revision_unreported",
        )

        desired = runtime.pull_config()
        assert not desired.not_modified
        assert desired.config == CONFIG_V2
        assert (desired.config_hash, desired.config_revision) == (v2["hash"], v2["number"])
        assert desired.workspace_id == ws.workspace_id
        assert desired.control_plane["policy_mode"] == "authoritative"
        assert desired.etag is not None
        assert desired.etag.startswith('"')
        policies = runtime.pull_policies()
        assert (policies.default_decision, policies.rules, policies.not_modified) == (
            "allow",
            [],
            False,
        )

        assert runtime.report_applied(desired.config_hash) == 1
        assert runtime.applied_config_hash == desired.config_hash
        view = fleet(client, ws.workspace_id)
        row = by_agent(view)["laptop-1"]
        assert (row["drift"], row["driftReason"], row["health"]) == ("aligned", None, "connected")
        assert (row["version"], row["compatibility"]) == ("3.12.6", "full")
        assert (row["hostId"], row["labels"], row["lastSessionId"]) == (
            "h1",
            {"team": "core"},
            "session-1",
        )
        assert row["observedConfigHash"] == v2["hash"]
        assert view["summary"]["aligned"] == 1

        # Unchanged desired state: the GET forms answer 304 from the ETag, the client its cache.
        again = runtime.pull_config()
        assert again.not_modified
        assert (again.config, again.config_hash, again.etag) == (
            CONFIG_V2,
            v2["hash"],
            desired.etag,
        )
        again.config["sync"] = "changed by the caller"
        assert runtime.pull_config().config == CONFIG_V2
        assert runtime.pull_policies().not_modified

        # An operator edit: the runtime is behind at once, and catches up after reporting.
        v3 = put_config(client, ws.workspace_id, CONFIG_V3)
        row = by_agent(fleet(client, ws.workspace_id))["laptop-1"]
        assert (row["drift"], row["driftReason"]) == ("needs_reconcile", "config_revision_differs")
        assert runtime.heartbeat("session-1").config_hash == v3["hash"]
        assert runtime.desired_config_hash == v3["hash"]
        edited = runtime.pull_config()
        assert not edited.not_modified
        assert (edited.config, edited.config_revision) == (CONFIG_V3, v3["number"])
        assert runtime.pull_policies().not_modified
        runtime.report_applied(edited.config_hash)
        view = fleet(client, ws.workspace_id)
        row = by_agent(view)["laptop-1"]
        assert (row["drift"], row["observedConfigRevision"]) == ("aligned", v3["number"])
        assert (view["summary"]["aligned"], view["summary"]["needsReconcile"]) == (1, 0)


def test_async_client_apply_failure_then_recovery(
    client: TestClient, asgi_transport: httpx.AsyncBaseTransport
) -> None:
    ws = make_workspace(client)
    v2 = put_config(client, ws.workspace_id, CONFIG_V2)
    token = enrollment_token(client, ws.workspace_id)

    async def scenario() -> None:
        async with AsyncClient(ENDPOINT, transport=asgi_transport) as runtime:
            await runtime.enroll(token, "worker-9", runtime_version="v3.8.0")
            assert await runtime.register_session("s-9", host_id="host-9")
            beat = await runtime.heartbeat("s-9")
            assert beat.config_hash == v2["hash"]
            first = await runtime.pull_config()
            assert (first.not_modified, first.config) == (False, CONFIG_V2)
            assert (await runtime.pull_config()).not_modified
            assert (await runtime.pull_policies()).not_modified is False
            assert (await runtime.pull_policies()).not_modified is True
            assert await runtime.report_applied(first.config_hash) == 1
            assert by_agent(fleet(client, ws.workspace_id))["worker-9"]["drift"] == "aligned"

            v3 = put_config(client, ws.workspace_id, CONFIG_V3)
            await runtime.heartbeat("s-9")
            edited = await runtime.pull_config()
            assert edited.config_hash == v3["hash"]
            assert await runtime.report_apply_failed(edited.config_hash, "disk full") == 1
            row = by_agent(fleet(client, ws.workspace_id))["worker-9"]
            assert (row["drift"], row["driftReason"]) == ("needs_reconcile", "apply_failed")
            assert row["applyFailedMessage"] == "disk full"
            # A heartbeat that still carries the old hash does not clear the failure.
            await runtime.heartbeat("s-9")
            row = by_agent(fleet(client, ws.workspace_id))["worker-9"]
            assert row["driftReason"] == "apply_failed"

            await runtime.report_applied(edited.config_hash)
            row = by_agent(fleet(client, ws.workspace_id))["worker-9"]
            assert (row["drift"], row["driftReason"]) == ("aligned", None)
            assert (row["hostId"], row["version"]) == ("host-9", "3.8.0")
            assert await runtime.deregister_session("s-9", reason="done")
            assert runtime.session_id is None

    asyncio.run(scenario())


def test_workspace_key_client_registers_by_agent_id_and_reports(
    client: TestClient, sync_transport: httpx.BaseTransport, tmp_path: Any
) -> None:
    ws = make_workspace(client)
    put_config(client, ws.workspace_id, CONFIG_V2)
    workspace_file = tmp_path / "workspace.yaml"
    workspace_file.write_text(
        "lanes:\n  - name: 'Framework: Core'\n    wip_limit: 1\nsync: on\n"
        "control_plane:\n  sync_interval: 30\n",
        encoding="utf-8",
    )
    local_hash = workspace_config_hash(workspace_file)
    assert local_hash == config_hash(CONFIG_V2)
    with Client(
        ENDPOINT,
        token=ws.api_key,
        workspace_id=ws.workspace_id,
        org_id=ws.org_id,
        agent_id="ci-runner",
        runtime_version="3.5.1",
        transport=sync_transport,
    ) as runtime:
        beat = runtime.heartbeat("ci-session", config_hash=local_hash)
        assert beat.config_hash == local_hash
        row = by_agent(fleet(client, ws.workspace_id))["ci-runner"]
        assert (row["drift"], row["driftReason"], row["compatibility"]) == (
            "needs_reconcile",
            "version_below_full_sync",
            "limited",
        )
        assert runtime.send_telemetry([{"metric": "wip", "value": 2, "timestamp": "t"}]) == 1
        assert runtime.send_evidence([{"ref": "sha256:abc"}]) == 1
        # Exchange the workspace key for this runtime's own credential.
        issued = runtime.authenticate()
        assert issued.token.startswith("fp_rt_")
        assert (runtime.token, issued.agent_id, issued.org_id) == (
            issued.token,
            "ci-runner",
            ws.org_id,
        )
        runtime.heartbeat("ci-session", runtime_version="3.12.6")
        row = by_agent(fleet(client, ws.workspace_id))["ci-runner"]
        assert (row["drift"], row["version"]) == ("aligned", "3.12.6")


def test_server_errors_map_to_the_client_error_tree(
    client: TestClient, sync_transport: httpx.BaseTransport
) -> None:
    ws = make_workspace(client)
    other = make_workspace(client, name="other")
    token = enrollment_token(client, ws.workspace_id, maxUses=1)
    with Client(ENDPOINT, transport=sync_transport) as runtime:
        runtime.enroll(token, "r1")
        with pytest.raises(ValidationError) as invalid:
            runtime.heartbeat("s", runtime_version="banana")
        assert invalid.value.status_code == 422
        with pytest.raises(ValidationError) as bad_hash:
            runtime.heartbeat("s", config_hash="ABC")
        assert bad_hash.value.code == "invalid_config_hash"
        with pytest.raises(NotFoundError):
            runtime.deregister_session("never-registered")
        runtime.workspace_id = other.workspace_id
        with pytest.raises(ForbiddenError) as forbidden:
            runtime.pull_config()
        assert forbidden.value.code == "workspace_mismatch"
        assert "workspace_id does not match" in forbidden.value.message
    with Client(ENDPOINT, transport=sync_transport) as used_up:
        with pytest.raises(AuthError) as refused:
            used_up.enroll(token, "r2")
        assert refused.value.status_code == 401
        assert used_up.token is None
    with (
        Client(ENDPOINT, token="fp_rt_not-a-real-credential", transport=sync_transport) as bad,
        pytest.raises(AuthError),
    ):
        bad.heartbeat("s")
