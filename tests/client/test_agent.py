"""``fleetplane agent`` as a runtime against the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from fleetplane.client import AuthError, ForbiddenError, workspace_config_hash
from fleetplane.client import agent as agent_module
from fleetplane.client.agent import AgentError, agent_app, run_agent
from fleetplane.domain.config_hash import config_hash, parse_workspace_yaml
from fleetplane.store.db import Database
from fleetplane.store.models import RuntimeEvent
from tests.client.conftest import (
    ENDPOINT,
    by_agent,
    enrollment_token,
    fleet,
    put_config,
    put_policies,
)
from tests.conftest import make_workspace

DESIRED: dict[str, Any] = {
    "lanes": [{"name": "Framework: Core", "wip_limit": 2}],
    "sync": "on",
    "limits": {"ratio": ".5e3", "count": "12", "empty": ""},
}
OLD_FILE = "lanes:\n  - name: 'Framework: Core'\n    wip_limit: 1\n"


def agent(transport: httpx.BaseTransport, token: str, workspace_file: Path, **options: Any) -> Any:
    options.setdefault("agent_id", "edge-1")
    options.setdefault("write_config", False)
    options.setdefault("once", True)
    return run_agent(
        ENDPOINT,
        "EDGE_TOKEN",
        workspace_file,
        environ={"EDGE_TOKEN": token},
        transport=transport,
        **options,
    )


def test_once_without_write_config_reports_the_file_it_has_and_leaves_it(
    client: TestClient, sync_transport: httpx.BaseTransport, tmp_path: Path
) -> None:
    ws = make_workspace(client)
    desired = put_config(client, ws.workspace_id, DESIRED)
    token = enrollment_token(client, ws.workspace_id, maxUses=5)
    missing = tmp_path / "absent.yaml"
    first = agent(sync_transport, token, missing, runtime_version="3.12.6")
    assert not missing.exists()
    assert first.last is not None
    assert (first.last.workspace_hash, first.last.wrote_config, first.last.aligned) == (
        None,
        False,
        False,
    )
    assert first.workspace_id == ws.workspace_id
    assert first.runtime_id is not None
    assert first.cycles == 1
    assert f"differs from desired revision {desired['number']}" in first.messages[-1]
    row = by_agent(fleet(client, ws.workspace_id))["edge-1"]
    assert (row["drift"], row["driftReason"], row["health"]) == (
        "needs_reconcile",
        "config_revision_unreported",
        "connected",
    )

    workspace_file = tmp_path / "workspace.yaml"
    workspace_file.write_text(OLD_FILE, encoding="utf-8")
    second = agent(sync_transport, token, workspace_file)
    assert workspace_file.read_text(encoding="utf-8") == OLD_FILE
    assert second.last.workspace_hash == workspace_config_hash(OLD_FILE)
    assert second.runtime_id == first.runtime_id
    row = by_agent(fleet(client, ws.workspace_id))["edge-1"]
    assert (row["drift"], row["driftReason"], row["observedConfigHash"]) == (
        "needs_reconcile",
        "config_revision_differs",
        workspace_config_hash(OLD_FILE),
    )


def test_once_with_write_config_writes_the_desired_config_and_aligns(
    client: TestClient, sync_transport: httpx.BaseTransport, tmp_path: Path
) -> None:
    ws = make_workspace(client)
    desired = put_config(client, ws.workspace_id, DESIRED)
    token = enrollment_token(client, ws.workspace_id, maxUses=5)
    workspace_file = tmp_path / "workspace.yaml"
    workspace_file.write_text(
        f"control_plane:\n  project_id: {ws.workspace_id}\n" + OLD_FILE, encoding="utf-8"
    )
    result = agent(
        sync_transport, token, workspace_file, write_config=True, runtime_version="3.8.0"
    )
    assert parse_workspace_yaml(workspace_file.read_text(encoding="utf-8")) == DESIRED
    assert workspace_config_hash(workspace_file) == desired["hash"] == config_hash(DESIRED)
    assert (result.last.wrote_config, result.last.aligned) == (True, True)
    assert result.last.config.config_revision == desired["number"]
    assert f"wrote revision {desired['number']} to {workspace_file}" in result.messages
    view = fleet(client, ws.workspace_id)
    row = by_agent(view)["edge-1"]
    assert (row["drift"], row["version"], row["observedConfigHash"]) == (
        "aligned",
        "3.8.0",
        desired["hash"],
    )
    assert view["summary"]["aligned"] == 1

    again = agent(sync_transport, token, workspace_file, write_config=True)
    assert (again.last.wrote_config, again.last.aligned) == (False, True)


def test_a_corrupt_file_is_replaced_and_an_unwritable_one_reports_apply_failed(
    client: TestClient, sync_transport: httpx.BaseTransport, tmp_path: Path, database: Database
) -> None:
    ws = make_workspace(client)
    desired = put_config(client, ws.workspace_id, DESIRED)
    token = enrollment_token(client, ws.workspace_id, maxUses=2)
    corrupt = tmp_path / "workspace.yaml"
    corrupt.write_text("a: 1\na: 2\n", encoding="utf-8")
    fixed = agent(sync_transport, token, corrupt, write_config=True)
    assert (fixed.last.wrote_config, fixed.last.workspace_hash) == (True, desired["hash"])
    assert by_agent(fleet(client, ws.workspace_id))["edge-1"]["drift"] == "aligned"

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("", encoding="utf-8")
    stop = threading.Event()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            stop.set()

    failed = agent(
        sync_transport,
        token,
        blocker / "workspace.yaml",
        agent_id="edge-2",
        write_config=True,
        once=False,
        stop=stop,
        sleep=sleep,
    )
    assert failed.cycles == 3
    assert (failed.last.wrote_config, failed.last.workspace_hash) == (False, None)
    failures = [m for m in failed.messages if m.startswith("could not apply revision")]
    assert len(failures) == 1
    assert failures[0].startswith(f"could not apply revision {desired['number']}:")
    # Three cycles on a stuck file report the failure once.
    with database.engine.connect() as connection:
        kinds = connection.execute(
            select(RuntimeEvent.kind).where(RuntimeEvent.workspace_id == ws.workspace_id)
        ).scalars()
        assert Counter(kinds)["config_apply_failed"] == 1
    row = by_agent(fleet(client, ws.workspace_id))["edge-2"]
    assert (row["drift"], row["driftReason"]) == ("needs_reconcile", "apply_failed")
    assert row["applyFailedMessage"].startswith(("NotADirectoryError", "FileExistsError"))


def test_workspace_id_comes_from_the_file_first(
    client: TestClient, sync_transport: httpx.BaseTransport, tmp_path: Path
) -> None:
    ws = make_workspace(client)
    other = make_workspace(client, name="other")
    token = enrollment_token(client, ws.workspace_id)
    workspace_file = tmp_path / "workspace.yaml"
    workspace_file.write_text(f"control_plane:\n  project_id: {other.workspace_id}\n", "utf-8")
    # The file names another workspace than the token enrolls into: the server refuses.
    with pytest.raises(ForbiddenError):
        agent(sync_transport, token, workspace_file)
    # A workspace key and no file: the --workspace-id option names the workspace.
    result = agent(
        sync_transport,
        ws.api_key,
        tmp_path / "none.yaml",
        agent_id="keyed",
        workspace_id=ws.workspace_id,
    )
    assert (result.workspace_id, result.runtime_id) == (ws.workspace_id, None)
    assert "keyed" in by_agent(fleet(client, ws.workspace_id))


def test_loop_follows_config_edits_until_stopped(
    client: TestClient, sync_transport: httpx.BaseTransport, tmp_path: Path
) -> None:
    ws = make_workspace(client)
    put_config(client, ws.workspace_id, DESIRED)
    edited = {**DESIRED, "sync": "off"}
    token = enrollment_token(client, ws.workspace_id)
    workspace_file = tmp_path / "workspace.yaml"
    stop = threading.Event()
    delays: list[float] = []
    revisions: list[dict[str, Any]] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        if len(delays) == 1:
            revisions.append(put_config(client, ws.workspace_id, edited))
        else:
            stop.set()

    result = agent(
        sync_transport,
        token,
        workspace_file,
        write_config=True,
        once=False,
        stop=stop,
        sleep=sleep,
        random=lambda: 0.5,
    )
    assert result.cycles == 2
    assert delays == [30.0, 30.0]
    assert parse_workspace_yaml(workspace_file.read_text(encoding="utf-8")) == edited
    assert result.last.config.config_revision == revisions[0]["number"]
    row = by_agent(fleet(client, ws.workspace_id))["edge-1"]
    assert (row["drift"], row["observedConfigHash"]) == ("aligned", revisions[0]["hash"])


def test_local_policy_rejection_is_reported_once_per_policy_change(
    client: TestClient, sync_transport: httpx.BaseTransport, tmp_path: Path
) -> None:
    ws = make_workspace(client, policy_mode="tighten-only")
    put_policies(
        client,
        ws.workspace_id,
        {"default_decision": "deny", "rules": [{"id": "net.fetch", "decision": "allow"}]},
    )
    local_policy = tmp_path / "policy.yaml"
    local_policy.write_text("default_decision: allow\nrules: []\n", encoding="utf-8")
    token = enrollment_token(client, ws.workspace_id)
    stop = threading.Event()
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            stop.set()

    result = agent(
        sync_transport,
        token,
        tmp_path / "workspace.yaml",
        once=False,
        stop=stop,
        sleep=sleep,
        local_policy_file=local_policy,
    )
    assert result.cycles == 2
    assert result.last.policy is not None
    assert result.last.policy.rejection is not None
    assert result.last.policy.effective.default_decision == "deny"
    assert result.last.policies.not_modified
    assert any(message.startswith("local policy refused:") for message in result.messages)
    assert by_agent(fleet(client, ws.workspace_id))["edge-1"]["warnings24h"] == 1


def test_the_token_must_be_a_runtime_token(tmp_path: Path) -> None:
    transport = httpx.MockTransport(lambda _request: httpx.Response(500))
    with pytest.raises(AgentError) as missing:
        run_agent(
            ENDPOINT,
            "NOPE",
            tmp_path / "w.yaml",
            agent_id="a",
            write_config=False,
            once=True,
            environ={},
            transport=transport,
        )
    assert missing.value.code == "no_token"
    with pytest.raises(AgentError) as wrong:
        agent(transport, "fp_op_operator-token", tmp_path / "w.yaml")
    assert wrong.value.code == "wrong_token_kind"


def test_agent_command_maps_options_to_run_agent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fake_run_agent(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return agent_module.AgentResult("a-1", "s", "ws", None)

    monkeypatch.setattr(agent_module, "run_agent", fake_run_agent)
    runner = CliRunner()
    outcome = runner.invoke(
        agent_app,
        [
            "--endpoint",
            "https://fleet.example",
            "--token-env",
            "MY_TOKEN",
            "--workspace-file",
            str(tmp_path / "w.yaml"),
            "--agent-id",
            "a-1",
            "--write-config",
            "--once",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    ((args, kwargs),) = calls
    assert args == ("https://fleet.example", "MY_TOKEN", tmp_path / "w.yaml")
    assert (kwargs["agent_id"], kwargs["write_config"], kwargs["once"]) == ("a-1", True, True)
    assert kwargs["workspace_id"] is None
    assert isinstance(kwargs["stop"], threading.Event)

    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise AuthError("the token is revoked", status_code=401, code="unauthenticated")

    monkeypatch.setattr(agent_module, "run_agent", refused)
    failed = runner.invoke(agent_app, ["--endpoint", "https://fleet.example", "--once"])
    assert failed.exit_code == 1
    assert "error: 401 unauthenticated: the token is revoked" in failed.output


def test_agent_command_runs_a_cycle_and_prints_the_state(
    client: TestClient,
    sync_transport: httpx.BaseTransport,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ws = make_workspace(client)
    desired = put_config(client, ws.workspace_id, DESIRED)
    monkeypatch.setenv("EDGE_TOKEN", enrollment_token(client, ws.workspace_id))
    real_run_agent = agent_module.run_agent

    def with_transport(*args: Any, **kwargs: Any) -> Any:
        return real_run_agent(*args, transport=sync_transport, **kwargs)

    monkeypatch.setattr(agent_module, "run_agent", with_transport)
    workspace_file = tmp_path / "workspace.yaml"
    outcome = CliRunner().invoke(
        agent_app,
        [
            "--endpoint",
            ENDPOINT,
            "--token-env",
            "EDGE_TOKEN",
            "--workspace-file",
            str(workspace_file),
            "--agent-id",
            "cli-box",
            "--write-config",
            "--once",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.splitlines()[-1] == (
        f"cli-box: revision {desired['number']} ({desired['hash'][:12]}), workspace file aligned"
    )
    assert by_agent(fleet(client, ws.workspace_id))["cli-box"]["drift"] == "aligned"
