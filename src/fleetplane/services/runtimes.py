"""The runtime surface's use cases (SPEC 4.2): identity, heartbeats, sessions, events, enroll."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from fleetplane.domain.errors import Forbidden, Invalid, NotFound, Unauthenticated
from fleetplane.domain.tokens import TokenKind, token_hash, token_kind
from fleetplane.domain.versions import normalise_reported_version, version_sort_key
from fleetplane.services import audit
from fleetplane.services.credentials import check_agent_id, check_labels, issue_runtime_credential
from fleetplane.store.models import (
    EnrollmentToken,
    EvidenceRef,
    Runtime,
    RuntimeEvent,
    RuntimeSession,
    TelemetryRecord,
    Workspace,
    WorkspaceKey,
)

HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
WORKSPACE_UPDATED = "workspace_updated"
CONFIG_APPLY_FAILED = "config_apply_failed"
WORKSPACE_WARNING = "workspace_warning"
MAX_BATCH = 1000


@dataclass
class RuntimeCaller:
    """Who is calling the runtime surface: a workspace key, or one runtime's credential."""

    workspace: Workspace
    runtime: Runtime | None

    @property
    def via_runtime_credential(self) -> bool:
        """True when the caller holds a runtime credential rather than the workspace key."""
        return self.runtime is not None


def authenticate_runtime(session: Session, *, token: str | None) -> RuntimeCaller:
    """Resolve a bearer token to a workspace key or runtime credential, else Unauthenticated."""
    if not token:
        raise Unauthenticated("missing bearer token")
    kind = token_kind(token)
    digest = token_hash(token)
    if kind is TokenKind.WORKSPACE_KEY:
        workspace = session.scalar(
            select(Workspace)
            .join(WorkspaceKey, WorkspaceKey.workspace_id == Workspace.id)
            .where(WorkspaceKey.key_hash == digest, WorkspaceKey.revoked_at.is_(None))
        )
        if workspace is not None:
            return RuntimeCaller(workspace=workspace, runtime=None)
    elif kind is TokenKind.RUNTIME:
        runtime = session.scalar(select(Runtime).where(Runtime.credential_hash == digest))
        if runtime is not None:
            workspace = session.get(Workspace, runtime.workspace_id)
            if workspace is not None:
                return RuntimeCaller(workspace=workspace, runtime=runtime)
    raise Unauthenticated("the token is not a valid workspace key or runtime credential")


def check_workspace(caller: RuntimeCaller, workspace_id: str | None) -> None:
    """A body `workspace_id` must name the caller's own workspace (403 otherwise)."""
    if workspace_id is not None and workspace_id != caller.workspace.id:
        raise Forbidden(
            "workspace_id does not match the credential's workspace",
            code="workspace_mismatch",
        )


def check_config_hash(value: object, *, field: str) -> str:
    """A config hash is 64 lowercase hex characters."""
    if not isinstance(value, str) or not HASH_PATTERN.fullmatch(value):
        raise Invalid(
            f"{field} must be 64 lowercase hex characters",
            code="invalid_config_hash",
            details={"field": field},
        )
    return value


def _runtime_by_agent(session: Session, workspace_id: str, agent_id: str) -> Runtime | None:
    return session.scalar(
        select(Runtime).where(Runtime.workspace_id == workspace_id, Runtime.agent_id == agent_id)
    )


def _runtime_by_session(session: Session, workspace_id: str, session_id: str) -> Runtime | None:
    return session.scalar(
        select(Runtime)
        .join(RuntimeSession, RuntimeSession.runtime_id == Runtime.id)
        .where(RuntimeSession.workspace_id == workspace_id, RuntimeSession.session_id == session_id)
    )


def _register(session: Session, workspace_id: str, agent_id: str, now: datetime) -> Runtime:
    runtime = Runtime(workspace_id=workspace_id, agent_id=check_agent_id(agent_id), enrolled_at=now)
    session.add(runtime)
    session.flush()
    return runtime


def resolve_runtime(
    session: Session,
    *,
    caller: RuntimeCaller,
    agent_id: str | None,
    session_id: str | None,
    register: bool,
    now: datetime,
) -> Runtime | None:
    """The runtime a call speaks for (SPEC 4.2 identity rules), registering it when allowed."""
    if caller.runtime is not None:
        return caller.runtime
    workspace_id = caller.workspace.id
    if agent_id:
        found = _runtime_by_agent(session, workspace_id, agent_id)
        if found is None and register:
            found = _register(session, workspace_id, agent_id, now)
        return found
    if session_id:
        found = _runtime_by_session(session, workspace_id, session_id)
        if found is None:
            found = _runtime_by_agent(session, workspace_id, session_id)
        if found is None and register:
            found = _register(session, workspace_id, session_id, now)
        return found
    return None


def _note_session(
    session: Session, runtime: Runtime, session_id: str, now: datetime
) -> RuntimeSession:
    existing = session.scalar(
        select(RuntimeSession).where(
            RuntimeSession.workspace_id == runtime.workspace_id,
            RuntimeSession.session_id == session_id,
        )
    )
    if existing is None:
        existing = RuntimeSession(
            workspace_id=runtime.workspace_id,
            runtime_id=runtime.id,
            session_id=session_id,
            started_at=now,
        )
        session.add(existing)
    else:
        existing.runtime_id = runtime.id
    runtime.last_session_id = session_id
    return existing


def _set_version(runtime: Runtime, reported: str | None) -> None:
    version = normalise_reported_version(reported)
    if version is not None:
        runtime.version = version
        runtime.version_key = version_sort_key(version)


def _observe_hash(runtime: Runtime, observed: str) -> None:
    runtime.observed_config_hash = observed
    # Reporting a hash as applied clears an earlier failure to apply that same hash.
    if runtime.apply_failed_hash == observed:
        runtime.apply_failed_hash = None
        runtime.apply_failed_message = None


@dataclass(frozen=True)
class Heartbeat:
    """The heartbeat fields fleetplane uses; the SDK's others are accepted and ignored."""

    workspace_id: str | None
    session_id: str | None
    agent_id: str | None
    runtime_version: str | None
    config_hash: str | None
    apply_failed_hash: str | None = None
    apply_error: str | None = None


def record_heartbeat(
    session: Session, *, caller: RuntimeCaller, heartbeat: Heartbeat, now: datetime
) -> Runtime:
    """Record a heartbeat: last-seen on the server clock, version and observed hash if given."""
    check_workspace(caller, heartbeat.workspace_id)
    # Validate before touching anything, so a refused heartbeat changes nothing.
    normalise_reported_version(heartbeat.runtime_version)
    if heartbeat.config_hash is not None:
        check_config_hash(heartbeat.config_hash, field="config_hash")
    if heartbeat.apply_failed_hash is not None:
        check_config_hash(heartbeat.apply_failed_hash, field="config_apply_failed_hash")
    if caller.runtime is None and not (heartbeat.agent_id or heartbeat.session_id):
        raise Invalid("a heartbeat needs session_id or agent_id", code="missing_identity")
    runtime = resolve_runtime(
        session,
        caller=caller,
        agent_id=heartbeat.agent_id,
        session_id=heartbeat.session_id,
        register=True,
        now=now,
    )
    assert runtime is not None  # register=True with an identity always yields one
    runtime.last_heartbeat_at = now
    _set_version(runtime, heartbeat.runtime_version)
    if heartbeat.config_hash is not None:
        _observe_hash(runtime, heartbeat.config_hash)
    if heartbeat.apply_failed_hash is not None:
        runtime.apply_failed_hash = heartbeat.apply_failed_hash
        runtime.apply_failed_message = heartbeat.apply_error
    if heartbeat.session_id:
        _note_session(session, runtime, heartbeat.session_id, now)
    session.flush()
    return runtime


@dataclass(frozen=True)
class SessionRegistration:
    """A `sessions/register` body."""

    workspace_id: str | None
    session_id: str
    agent_id: str | None
    agent_type: str | None
    agent_version: str | None
    host_id: str | None
    details: dict[str, Any]


def register_session(
    session: Session, *, caller: RuntimeCaller, registration: SessionRegistration, now: datetime
) -> RuntimeSession:
    """Record a session of a runtime, registering the runtime under `agent_id` if new."""
    check_workspace(caller, registration.workspace_id)
    normalise_reported_version(registration.agent_version)
    if caller.runtime is None and not registration.agent_id:
        raise Invalid("sessions/register needs agent_id", code="missing_identity")
    runtime = resolve_runtime(
        session,
        caller=caller,
        agent_id=registration.agent_id,
        session_id=None,
        register=True,
        now=now,
    )
    assert runtime is not None
    _set_version(runtime, registration.agent_version)
    if registration.host_id:
        runtime.host_id = registration.host_id
    row = _note_session(session, runtime, registration.session_id, now)
    row.agent_type = registration.agent_type
    row.agent_version = registration.agent_version
    row.host_id = registration.host_id
    row.details = registration.details or None
    row.ended_at = None
    row.end_reason = None
    session.flush()
    return row


def deregister_session(
    session: Session,
    *,
    caller: RuntimeCaller,
    workspace_id: str | None,
    session_id: str,
    reason: str | None,
    now: datetime,
) -> None:
    """Mark a session ended; an unknown session is NotFound."""
    check_workspace(caller, workspace_id)
    query = select(RuntimeSession).where(
        RuntimeSession.workspace_id == caller.workspace.id, RuntimeSession.session_id == session_id
    )
    if caller.runtime is not None:
        query = query.where(RuntimeSession.runtime_id == caller.runtime.id)
    row = session.scalar(query)
    if row is None:
        raise NotFound("session not found")
    row.ended_at = now
    row.end_reason = reason
    session.flush()


def _event_runtime(
    session: Session, caller: RuntimeCaller, event: dict[str, Any], agent_id: str | None
) -> Runtime | None:
    if caller.runtime is not None:
        return caller.runtime
    event_session = event.get("session_id")
    if isinstance(event_session, str) and event_session:
        found = _runtime_by_session(session, caller.workspace.id, event_session)
        if found is not None:
            return found
    if agent_id:
        return _runtime_by_agent(session, caller.workspace.id, agent_id)
    return None


def _check_events(events: list[Any]) -> None:
    if len(events) > MAX_BATCH:
        raise Invalid(f"at most {MAX_BATCH} events per request", code="batch_too_large")
    for index, event in enumerate(events):
        if not isinstance(event, dict) or not isinstance(event.get("kind"), str):
            raise Invalid(
                f"events[{index}] must be an object with a string kind",
                code="invalid_event",
                details={"index": index},
            )
        if event["kind"] in (WORKSPACE_UPDATED, CONFIG_APPLY_FAILED):
            check_config_hash(event.get("config_hash"), field=f"events[{index}].config_hash")


def record_events(
    session: Session,
    *,
    caller: RuntimeCaller,
    workspace_id: str | None,
    agent_id: str | None,
    events: list[Any],
    now: datetime,
) -> tuple[int, list[Runtime]]:
    """Store kernel events append-only, applying `workspace_updated`/`config_apply_failed`;
    returns how many were stored and the runtimes whose drift they changed."""
    check_workspace(caller, workspace_id)
    _check_events(events)
    stored = 0
    changed: dict[str, Runtime] = {}
    for event in events:
        runtime = _event_runtime(session, caller, event, agent_id)
        kind = event["kind"]
        if runtime is not None and kind in (WORKSPACE_UPDATED, CONFIG_APPLY_FAILED):
            changed[runtime.id] = runtime
        if runtime is not None and kind == WORKSPACE_UPDATED:
            _observe_hash(runtime, event["config_hash"])
        elif runtime is not None and kind == CONFIG_APPLY_FAILED:
            runtime.apply_failed_hash = event["config_hash"]
            message = event.get("message")
            runtime.apply_failed_message = str(message)[:2000] if message is not None else None
        session.add(
            RuntimeEvent(
                workspace_id=caller.workspace.id,
                runtime_id=runtime.id if runtime is not None else None,
                kind=kind[:100],
                payload=event,
                received_at=now,
            )
        )
        stored += 1
    session.flush()
    return stored, list(changed.values())


def record_telemetry(
    session: Session,
    *,
    caller: RuntimeCaller,
    workspace_id: str | None,
    records: list[Any],
    now: datetime,
) -> int:
    """Store telemetry records (metric, numeric value, timestamp, tags) append-only."""
    check_workspace(caller, workspace_id)
    if len(records) > MAX_BATCH:
        raise Invalid(f"at most {MAX_BATCH} records per request", code="batch_too_large")
    rows = []
    for index, record in enumerate(records):
        valid = (
            isinstance(record, dict)
            and isinstance(record.get("metric"), str)
            and isinstance(record.get("value"), int | float)
            and not isinstance(record.get("value"), bool)
            and isinstance(record.get("tags", {}), dict | type(None))
        )
        if not valid:
            raise Invalid(
                f"records[{index}] must have a string metric, a numeric value and object tags",
                code="invalid_telemetry",
                details={"index": index},
            )
        timestamp = record.get("timestamp")
        rows.append(
            TelemetryRecord(
                workspace_id=caller.workspace.id,
                runtime_id=caller.runtime.id if caller.runtime is not None else None,
                metric=record["metric"][:200],
                value=float(record["value"]),
                recorded_at=str(timestamp)[:64] if timestamp is not None else None,
                tags=record.get("tags"),
                received_at=now,
            )
        )
    session.add_all(rows)
    session.flush()
    return len(rows)


def record_evidence(
    session: Session,
    *,
    caller: RuntimeCaller,
    workspace_id: str | None,
    evidence_refs: list[Any],
    now: datetime,
) -> int:
    """Store evidence references append-only."""
    check_workspace(caller, workspace_id)
    if len(evidence_refs) > MAX_BATCH:
        raise Invalid(f"at most {MAX_BATCH} evidence refs per request", code="batch_too_large")
    session.add_all(
        EvidenceRef(
            workspace_id=caller.workspace.id,
            runtime_id=caller.runtime.id if caller.runtime is not None else None,
            ref=ref,
            received_at=now,
        )
        for ref in evidence_refs
    )
    session.flush()
    return len(evidence_refs)


def authenticate_agent(
    session: Session,
    *,
    caller: RuntimeCaller,
    workspace_id: str,
    org_id: str,
    agent_id: str | None,
    now: datetime,
) -> tuple[Runtime, str]:
    """Exchange the caller's credential for a fresh runtime credential for `agent_id`."""
    check_workspace(caller, workspace_id)
    if org_id != caller.workspace.org_id:
        raise Forbidden("org_id does not match the credential's org", code="org_mismatch")
    if caller.runtime is None:
        runtime = resolve_runtime(
            session,
            caller=caller,
            agent_id=check_agent_id(agent_id),
            session_id=None,
            register=True,
            now=now,
        )
        assert runtime is not None
    else:
        runtime = caller.runtime
    credential = issue_runtime_credential(runtime)
    session.flush()
    audit.record(
        session,
        actor=f"runtime:{runtime.id}",
        action="runtime.authenticate",
        target=f"runtime:{runtime.id}",
        now=now,
        org_id=caller.workspace.org_id,
        workspace_id=caller.workspace.id,
    )
    return runtime, credential


@dataclass(frozen=True)
class Enrollment:
    """An `/enroll` body."""

    enrollment_token: str
    agent_id: str
    runtime_version: str | None
    host_id: str | None
    labels: object


def enroll(
    session: Session, *, enrollment: Enrollment, now: datetime
) -> tuple[Workspace, Runtime, str]:
    """Exchange an enrollment token for a runtime credential; re-enrolling keeps the runtime."""
    agent_id = check_agent_id(enrollment.agent_id)
    normalise_reported_version(enrollment.runtime_version)
    labels = check_labels(enrollment.labels)
    token = session.scalar(
        select(EnrollmentToken).where(
            EnrollmentToken.token_hash == token_hash(enrollment.enrollment_token)
        )
    )
    if token is None or token.revoked_at is not None or token.expires_at <= now:
        raise Unauthenticated("the enrollment token is unknown, expired or revoked")
    # A guarded increment so that concurrent enrollments never exceed max uses.
    claim = update(EnrollmentToken).where(EnrollmentToken.id == token.id)
    if token.max_uses is not None:
        claim = claim.where(EnrollmentToken.uses < token.max_uses)
    result = session.execute(
        claim.values(uses=EnrollmentToken.uses + 1).execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Unauthenticated("the enrollment token has been used up")
    workspace = session.get(Workspace, token.workspace_id)
    assert workspace is not None  # the foreign key cascades token deletion
    runtime = _runtime_by_agent(session, workspace.id, agent_id)
    action = "runtime.reenroll"
    if runtime is None:
        runtime = Runtime(workspace_id=workspace.id, agent_id=agent_id, enrolled_at=now)
        session.add(runtime)
        action = "runtime.enroll"
    _set_version(runtime, enrollment.runtime_version)
    if enrollment.host_id:
        runtime.host_id = enrollment.host_id[:200]
    if labels is not None:
        runtime.labels = labels
    credential = issue_runtime_credential(runtime)
    session.flush()
    audit.record(
        session,
        actor=f"enrollment:{token.id}",
        action=action,
        target=f"runtime:{runtime.id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
    )
    return workspace, runtime, credential


def revoke_runtime(
    session: Session, *, workspace: Workspace, runtime_id: str, actor: str, now: datetime
) -> None:
    """Remove a runtime from the inventory; its credential fails from this commit on."""
    runtime = session.scalar(
        select(Runtime).where(Runtime.id == runtime_id, Runtime.workspace_id == workspace.id)
    )
    if runtime is None:
        raise NotFound("runtime not found")
    session.execute(delete(Runtime).where(Runtime.id == runtime.id))
    audit.record(
        session,
        actor=actor,
        action="runtime.revoke",
        target=f"runtime:{runtime_id}",
        now=now,
        org_id=workspace.org_id,
        workspace_id=workspace.id,
    )
