"""Workspace API keys, enrollment tokens and pre-registered runtimes: the ways runtimes get in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fleetplane.domain.errors import Conflict, Invalid, NotFound
from fleetplane.domain.tokens import TokenKind, new_token, token_display_prefix, token_hash
from fleetplane.services import audit
from fleetplane.store.models import EnrollmentToken, Runtime, Workspace, WorkspaceKey

TOKEN_ENV = "LUMENFLOW_CLOUD_TOKEN"  # noqa: S105 - the name of a variable, not a secret
MAX_ENROLLMENT_TTL = timedelta(days=30)
MAX_AGENT_ID_LENGTH = 200
MAX_LABELS = 50


def connect_command(*, public_url: str, org_id: str, workspace_id: str) -> str:
    """The command that points a LumenFlow runtime at this workspace."""
    return (
        f"npx lumenflow cloud connect --endpoint {public_url} --org-id {org_id} "
        f"--project-id {workspace_id} --token-env {TOKEN_ENV}"
    )


def control_plane_block(
    *, public_url: str, org_id: str, workspace_id: str, sync_interval: int, policy_mode: str
) -> dict[str, Any]:
    """The `control_plane` block a runtime writes into its workspace.yaml (snake_case, SDK v1)."""
    return {
        "endpoint": public_url,
        "org_id": org_id,
        "project_id": workspace_id,
        "sync_interval": sync_interval,
        "policy_mode": policy_mode,
        "auth": {"token_env": TOKEN_ENV},
    }


def check_agent_id(agent_id: object) -> str:
    """A valid agent id: a non-empty string of at most 200 characters."""
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise Invalid("agent_id must be a non-empty string", code="invalid_agent_id")
    if len(agent_id) > MAX_AGENT_ID_LENGTH:
        raise Invalid("agent_id must be at most 200 characters", code="invalid_agent_id")
    return agent_id


def check_labels(labels: object) -> dict[str, str] | None:
    """Labels are a mapping of at most 50 short string keys to string values."""
    if labels is None:
        return None
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise Invalid("labels must be an object of at most 50 entries", code="invalid_labels")
    for key, value in labels.items():
        if not isinstance(value, str) or not key or len(key) > 100 or len(value) > 200:
            raise Invalid(
                "labels must map names (1-100 characters) to strings of at most 200 characters",
                code="invalid_labels",
                details={"label": key},
            )
    return dict(labels)


@dataclass(frozen=True)
class IssuedKey:
    """A workspace key as shown once to the operator."""

    api_key: str
    row: WorkspaceKey


def regenerate_api_key(
    session: Session, *, workspace: Workspace, actor: str, now: datetime
) -> IssuedKey:
    """Issue a new workspace key and revoke every earlier one at once."""
    session.execute(
        update(WorkspaceKey)
        .where(WorkspaceKey.workspace_id == workspace.id, WorkspaceKey.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    plaintext = new_token(TokenKind.WORKSPACE_KEY)
    row = WorkspaceKey(
        workspace_id=workspace.id,
        key_hash=token_hash(plaintext),
        display_prefix=token_display_prefix(plaintext),
        created_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="api_key.regenerate",
        target=f"api_key:{row.id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
    )
    return IssuedKey(api_key=plaintext, row=row)


@dataclass(frozen=True)
class IssuedEnrollment:
    """An enrollment token as shown once to the operator."""

    token: str
    row: EnrollmentToken


def create_enrollment(
    session: Session,
    *,
    workspace: Workspace,
    expires_in_seconds: int | None,
    max_uses: int | None,
    default_ttl_seconds: int,
    actor: str,
    now: datetime,
) -> IssuedEnrollment:
    """Create an enrollment token with an expiry (default from settings) and optional max uses."""
    ttl = expires_in_seconds if expires_in_seconds is not None else default_ttl_seconds
    if ttl <= 0 or ttl > MAX_ENROLLMENT_TTL.total_seconds():
        raise Invalid(
            "expiresInSeconds must be between 1 and 2592000 (30 days)", code="invalid_expiry"
        )
    if max_uses is not None and max_uses < 1:
        raise Invalid("maxUses must be at least 1", code="invalid_max_uses")
    plaintext = new_token(TokenKind.ENROLLMENT)
    row = EnrollmentToken(
        workspace_id=workspace.id,
        token_hash=token_hash(plaintext),
        display_prefix=token_display_prefix(plaintext),
        expires_at=now + timedelta(seconds=ttl),
        max_uses=max_uses,
        uses=0,
        created_by=actor,
        created_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="enrollment.create",
        target=f"enrollment:{row.id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
    )
    return IssuedEnrollment(token=plaintext, row=row)


@dataclass(frozen=True)
class IssuedRuntime:
    """A runtime and its credential as shown once."""

    runtime: Runtime
    credential: str


def issue_runtime_credential(runtime: Runtime) -> str:
    """Give a runtime a fresh credential; its previous one stops working with this commit."""
    plaintext = new_token(TokenKind.RUNTIME)
    runtime.credential_hash = token_hash(plaintext)
    return plaintext


def preregister_runtime(
    session: Session,
    *,
    workspace: Workspace,
    agent_id: str,
    labels: object,
    actor: str,
    now: datetime,
) -> IssuedRuntime:
    """Register a runtime ahead of its first heartbeat and give it its own credential."""
    agent_id = check_agent_id(agent_id)
    checked_labels = check_labels(labels)
    exists = session.scalar(
        select(Runtime.id).where(Runtime.workspace_id == workspace.id, Runtime.agent_id == agent_id)
    )
    if exists is not None:
        raise Conflict(
            f"the workspace already has a runtime with agent id {agent_id}",
            code="runtime_exists",
            details={"runtimeId": exists},
        )
    runtime = Runtime(
        workspace_id=workspace.id, agent_id=agent_id, labels=checked_labels, enrolled_at=now
    )
    credential = issue_runtime_credential(runtime)
    session.add(runtime)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="runtime.preregister",
        target=f"runtime:{runtime.id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
    )
    return IssuedRuntime(runtime=runtime, credential=credential)


def list_enrollments(session: Session, *, workspace: Workspace) -> list[EnrollmentToken]:
    """The workspace's enrollment tokens, newest first (never their secrets)."""
    return list(
        session.scalars(
            select(EnrollmentToken)
            .where(EnrollmentToken.workspace_id == workspace.id)
            .order_by(EnrollmentToken.created_at.desc(), EnrollmentToken.id)
        )
    )


def revoke_enrollment(
    session: Session, *, workspace: Workspace, enrollment_id: str, actor: str, now: datetime
) -> None:
    """Revoke an enrollment token; it refuses enrollments from this commit on."""
    row = session.scalar(
        select(EnrollmentToken).where(
            EnrollmentToken.id == enrollment_id, EnrollmentToken.workspace_id == workspace.id
        )
    )
    if row is None:
        raise NotFound("enrollment token not found")
    if row.revoked_at is None:
        row.revoked_at = now
    audit.record(
        session,
        actor=actor,
        action="enrollment.revoke",
        target=f"enrollment:{row.id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
    )
