"""``fleetplane agent``: a minimal runtime that keeps a workspace.yaml in step with fleetplane.

Each cycle heartbeats (carrying the hash of the workspace file it has), pulls the desired
config and the effective policies (GET with If-None-Match, so an unchanged state costs two
304s), writes the pulled config into the workspace file only when ``write_config`` is on, and
reports the hash of the file it now has. With a local policy file it merges it under the
workspace's authority mode and reports the resulting warnings.

Where the workspace id comes from, first match wins: the workspace file's
``control_plane.project_id``, the ``/enroll`` answer, the ``workspace_id`` argument. With a
workspace key or runtime credential and none of these, the server takes the credential's own
workspace.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from fleetplane.client._sync import Client
from fleetplane.client.errors import ClientError
from fleetplane.client.models import ConfigPull, HeartbeatResult, PolicyPull
from fleetplane.client.policy import PolicyMerge, merge_local_policy
from fleetplane.client.workspace import read_workspace_file, write_workspace_file
from fleetplane.domain.config_hash import config_hash, parse_workspace_yaml
from fleetplane.domain.errors import FleetplaneError

__all__ = ["AgentCycle", "AgentError", "AgentResult", "agent_app", "agent_command", "run_agent"]

DEFAULT_TOKEN_ENV = "LUMENFLOW_CLOUD_TOKEN"  # noqa: S105 - a variable's name, not a secret
ENROLLMENT_PREFIX = "fp_enr_"
RUNTIME_TOKEN_PREFIXES = ("fp_ws_", "fp_rt_")


class AgentError(ClientError):
    """The agent cannot start: no token in the variable, or not a runtime token."""


@dataclass(frozen=True, slots=True)
class AgentCycle:
    """What one heartbeat-pull-apply cycle saw and did."""

    heartbeat: HeartbeatResult
    config: ConfigPull
    policies: PolicyPull
    # The hash of the workspace file after the cycle (None: no readable file).
    workspace_hash: str | None
    wrote_config: bool
    policy: PolicyMerge | None = None

    @property
    def aligned(self) -> bool:
        """True when the workspace file holds the desired config."""
        return self.workspace_hash == self.config.config_hash


@dataclass(slots=True)
class AgentResult:
    """The agent's identity and its last cycle."""

    agent_id: str
    session_id: str
    workspace_id: str | None
    runtime_id: str | None
    cycles: int = 0
    last: AgentCycle | None = None
    messages: list[str] = field(default_factory=list)


def _file_hash(path: Path) -> str | None:
    """Hash of the workspace file, or None when it is missing or not a valid workspace.yaml."""
    try:
        return config_hash(parse_workspace_yaml(path.read_text(encoding="utf-8")))
    except (OSError, FleetplaneError):
        return None


def _project_id(path: Path) -> str | None:
    try:
        document = read_workspace_file(path)
    except (OSError, FleetplaneError):
        return None
    control_plane = document.get("control_plane") if isinstance(document, dict) else None
    project_id = control_plane.get("project_id") if isinstance(control_plane, dict) else None
    return project_id if isinstance(project_id, str) and project_id else None


def _read_local_policy(path: Path) -> Any:
    # JSON is YAML, so one parser reads either form.
    return parse_workspace_yaml(path.read_text(encoding="utf-8"))


class _Agent:
    """One run of the agent: the client, the files and what has been reported so far."""

    def __init__(
        self,
        client: Client,
        *,
        workspace_file: Path,
        write_config: bool,
        local_policy: Any,
        log: Callable[[str], None],
    ) -> None:
        self.client = client
        self.workspace_file = workspace_file
        self.write_config = write_config
        self.local_policy = local_policy
        self.log = log
        self.policy: PolicyMerge | None = None
        self.policy_basis: tuple[str | None, str | None] | None = None
        self.failed_hash: str | None = None

    def apply_config(self, desired: ConfigPull) -> tuple[str | None, bool]:
        """Write the desired config when allowed and needed; return the file's hash after."""
        current = _file_hash(self.workspace_file)
        if not self.write_config or current == desired.config_hash:
            # Said once per desired revision, not on every 304.
            if current != desired.config_hash and not desired.not_modified:
                self.log(
                    f"{self.workspace_file} differs from desired revision "
                    f"{desired.config_revision}; run with --write-config to apply it"
                )
            return current, False
        try:
            written = write_workspace_file(self.workspace_file, desired.config)
        except (OSError, ValueError) as error:
            # Reported once per desired hash, so a stuck file does not flood the event log.
            if self.failed_hash != desired.config_hash:
                message = f"{type(error).__name__}: {error}"
                self.client.report_apply_failed(desired.config_hash, message)
                self.log(f"could not apply revision {desired.config_revision}: {error}")
                self.failed_hash = desired.config_hash
            return current, False
        self.log(f"wrote revision {desired.config_revision} to {self.workspace_file}")
        return written, True

    def merge_policy(self, policies: PolicyPull, mode: str) -> PolicyMerge | None:
        """Merge the local policy when the pulled set or the mode changed; send its warnings."""
        if self.local_policy is None:
            return None
        basis = (policies.etag, mode)
        if self.policy is not None and basis == self.policy_basis and policies.not_modified:
            return self.policy
        merge = merge_local_policy(
            mode=mode,
            workspace_id=self.client.workspace_id or "",
            remote=policies.body,
            local=self.local_policy,
            timestamp=self.client.timestamp(),
            session_id=self.client.session_id,
        )
        if merge.events:
            self.client.send_events(merge.events)
        if merge.rejection is not None:
            self.log(f"local policy refused: {merge.rejection.message}")
        self.policy, self.policy_basis = merge, basis
        return merge

    def cycle(self, beat: HeartbeatResult) -> AgentCycle:
        """Pull, apply and report, after a heartbeat."""
        desired = self.client.pull_config()
        policies = self.client.pull_policies()
        workspace_hash, wrote = self.apply_config(desired)
        if workspace_hash is not None and workspace_hash != self.client.applied_config_hash:
            self.client.report_applied(workspace_hash)
        mode = self.client.policy_mode or str(desired.control_plane.get("policy_mode", ""))
        policy = self.merge_policy(policies, mode)
        return AgentCycle(beat, desired, policies, workspace_hash, wrote, policy)


def _resolve_token(token_env: str, environ: Mapping[str, str]) -> str:
    token = environ.get(token_env, "").strip()
    if not token:
        raise AgentError(f"environment variable {token_env} holds no token", code="no_token")
    if not token.startswith((ENROLLMENT_PREFIX, *RUNTIME_TOKEN_PREFIXES)):
        raise AgentError(
            f"{token_env} must hold an fp_enr_, fp_ws_ or fp_rt_ token", code="wrong_token_kind"
        )
    return token


def run_agent(
    endpoint: str,
    token_env: str,
    workspace_file: str | os.PathLike[str],
    *,
    agent_id: str,
    write_config: bool,
    once: bool,
    workspace_id: str | None = None,
    runtime_version: str | None = None,
    host_id: str | None = None,
    local_policy_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
    stop: threading.Event | None = None,
    sleep: Callable[[float], object] | None = None,
    random: Callable[[], float] | None = None,
    log: Callable[[str], None] | None = None,
) -> AgentResult:
    """Run as a runtime until ``stop`` is set (one cycle when ``once``); see the module doc."""
    messages: list[str] = []

    def note(message: str) -> None:
        messages.append(message)
        if log is not None:
            log(message)

    token = _resolve_token(token_env, os.environ if environ is None else environ)
    path = Path(workspace_file)
    local_policy = (
        None if local_policy_file is None else _read_local_policy(Path(local_policy_file))
    )
    enrolling = token.startswith(ENROLLMENT_PREFIX)
    file_workspace = _project_id(path)
    with Client(
        endpoint,
        token=None if enrolling else token,
        workspace_id=file_workspace,
        agent_id=agent_id,
        runtime_version=runtime_version,
        transport=transport,
    ) as client:
        runtime_id = None
        if enrolling:
            enrollment = client.enroll(token, agent_id, runtime_version, host_id)
            runtime_id = enrollment.runtime_id
            note(f"enrolled {agent_id} as runtime {runtime_id}")
        client.workspace_id = file_workspace or client.workspace_id or workspace_id
        # The file the runtime already has is its observed config until it applies another.
        client.applied_config_hash = _file_hash(path)
        session_id = f"{agent_id}-{uuid.uuid4().hex[:12]}"
        client.register_session(session_id, agent_type="fleetplane-agent", host_id=host_id)
        agent = _Agent(
            client,
            workspace_file=path,
            write_config=write_config,
            local_policy=local_policy,
            log=note,
        )
        result = AgentResult(agent_id, session_id, client.workspace_id, runtime_id)

        def on_heartbeat(beat: HeartbeatResult) -> None:
            result.last = agent.cycle(beat)
            result.cycles += 1

        if once:
            on_heartbeat(client.heartbeat(session_id))
        else:
            stopper = stop or threading.Event()
            client.run_heartbeat_loop(
                session_id,
                stopper,
                on_heartbeat=on_heartbeat,
                on_error=lambda error, delay: note(f"{error}; retrying in {delay:.1f}s"),
                sleep=sleep,
                random=random,
            )
        client.deregister_session(session_id, reason="stopped")
    result.workspace_id = client.workspace_id
    result.messages = messages
    return result


# -- the command ------------------------------------------------------------------------------

agent_app = typer.Typer(help="Run as a fleetplane runtime.", add_completion=False)


@agent_app.command("agent")
def agent_command(
    endpoint: Annotated[str, typer.Option(help="The fleetplane server's URL.")],
    token_env: Annotated[
        str, typer.Option(help="Variable holding an fp_enr_, fp_ws_ or fp_rt_ token.")
    ] = DEFAULT_TOKEN_ENV,
    workspace_file: Annotated[Path, typer.Option(help="The runtime's workspace.yaml.")] = Path(
        "workspace.yaml"
    ),
    agent_id: Annotated[
        str | None, typer.Option(help="This runtime's agent id (default: host name).")
    ] = None,
    write_config: Annotated[
        bool, typer.Option(help="Write the pulled config into the workspace file.")
    ] = False,
    once: Annotated[bool, typer.Option(help="Run one cycle and exit.")] = False,
    workspace_id: Annotated[
        str | None, typer.Option(help="Workspace id, when neither file nor token names it.")
    ] = None,
    runtime_version: Annotated[str | None, typer.Option(help="Runtime version to report.")] = None,
    local_policy: Annotated[
        Path | None, typer.Option(help="Local policy set (YAML/JSON) to merge.")
    ] = None,
) -> None:
    """Heartbeat, pull config and policies, optionally write the config, report its hash."""
    stop = threading.Event()
    in_main_thread = threading.current_thread() is threading.main_thread()
    # SIGTERM (a service manager stopping us) ends the loop cleanly, deregistering the session.
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if in_main_thread else None
    try:
        result = run_agent(
            endpoint,
            token_env,
            workspace_file,
            agent_id=agent_id or socket.gethostname(),
            write_config=write_config,
            once=once,
            workspace_id=workspace_id,
            runtime_version=runtime_version,
            local_policy_file=local_policy,
            stop=stop,
            log=typer.echo,
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (ClientError, FleetplaneError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    last = result.last
    if last is not None:
        state = "aligned" if last.aligned else "not aligned"
        typer.echo(
            f"{result.agent_id}: revision {last.config.config_revision} "
            f"({last.config.config_hash[:12]}), workspace file {state}"
        )
