"""The tables of fleetplane. Timestamps are UTC, stored as epoch milliseconds on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def epoch_ms(value: datetime) -> int:
    """An aware datetime as stored: integer milliseconds since the epoch."""
    return int(value.timestamp() * 1000)


class EpochMillis(TypeDecorator[datetime]):
    """An aware UTC datetime kept as integer milliseconds: same bytes and ordering on every DB."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware ones")
        return epoch_ms(value)

    def process_result_value(self, value: int | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return datetime.fromtimestamp(value / 1000, tz=UTC)


# PostgreSQL must compare version sort keys byte-wise, as SQLite does by default.
VersionKey = String(120).with_variant(String(120, collation="C"), "postgresql")


def new_id() -> str:
    """A random identifier: leaks nothing about other tenants or creation order."""
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    """Declarative base with stable constraint names for migrations."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, datetime: EpochMillis}


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    is_superuser: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class OperatorToken(Base):
    __tablename__ = "operator_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Org(Base):
    __tablename__ = "orgs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200))
    policy: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime]


class OrgMember(Base):
    __tablename__ = "org_members"
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(20))


class Workspace(Base):
    __tablename__ = "workspaces"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    policy_mode: Mapped[str] = mapped_column(String(20))
    # The mode to return to when a dev-override lapses.
    previous_policy_mode: Mapped[str | None] = mapped_column(String(20))
    dev_override_until: Mapped[datetime | None]
    policy: Mapped[dict[str, Any] | None]
    config_revision: Mapped[int] = mapped_column(Integer)
    config_hash: Mapped[str] = mapped_column(String(64))
    config_updated_at: Mapped[datetime]
    created_at: Mapped[datetime]


class WorkspaceMember(Base):
    __tablename__ = "workspace_members"
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[str] = mapped_column(String(20))


class ConfigRevision(Base):
    __tablename__ = "config_revisions"
    __table_args__ = (UniqueConstraint("workspace_id", "number"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    document: Mapped[Any] = mapped_column(JSON)
    author: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime]


class WorkspaceKey(Base):
    __tablename__ = "workspace_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(20))
    expires_at: Mapped[datetime]
    max_uses: Mapped[int | None] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Runtime(Base):
    __tablename__ = "runtimes"
    # No index covers last_heartbeat_at: liveness flushes then update rows in place (migration
    # 0004; on PostgreSQL with fillfactor 80, as heap-only tuples).
    # Archived runtimes are few and counted on every fleet page: a partial index finds them
    # without a scan of the workspace (migration 0005). It names no heartbeat column.
    __table_args__ = (
        UniqueConstraint("workspace_id", "agent_id"),
        Index(
            "ix_runtimes_archived",
            "workspace_id",
            postgresql_where=text("archived_at IS NOT NULL"),
            sqlite_where=text("archived_at IS NOT NULL"),
        ),
        {"postgresql_with": {"fillfactor": 80}},
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(200))
    host_id: Mapped[str | None] = mapped_column(String(200))
    labels: Mapped[dict[str, Any] | None]
    version: Mapped[str | None] = mapped_column(String(100))
    version_key: Mapped[str | None] = mapped_column(VersionKey)
    credential_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    enrolled_at: Mapped[datetime]
    last_heartbeat_at: Mapped[datetime | None]
    observed_config_hash: Mapped[str | None] = mapped_column(String(64))
    apply_failed_hash: Mapped[str | None] = mapped_column(String(64))
    apply_failed_message: Mapped[str | None] = mapped_column(Text)
    last_session_id: Mapped[str | None] = mapped_column(String(200))
    # Set by the sweeper after a long dormancy; a heartbeat newer than it brings the runtime back.
    archived_at: Mapped[datetime | None]


class RuntimeSession(Base):
    __tablename__ = "runtime_sessions"
    __table_args__ = (UniqueConstraint("workspace_id", "session_id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    runtime_id: Mapped[str] = mapped_column(
        ForeignKey("runtimes.id", ondelete="CASCADE"), index=True
    )
    session_id: Mapped[str] = mapped_column(String(200))
    agent_type: Mapped[str | None] = mapped_column(String(200))
    agent_version: Mapped[str | None] = mapped_column(String(100))
    host_id: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any] | None]
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    end_reason: Mapped[str | None] = mapped_column(String(200))


class RuntimeEvent(Base):
    """Kernel events, append-only; `runtime_id` is null when the event named no runtime."""

    __tablename__ = "runtime_events"
    __table_args__ = (
        Index("ix_runtime_events_runtime_kind_received", "runtime_id", "kind", "received_at"),
        Index("ix_runtime_events_workspace_received", "workspace_id", "received_at"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    runtime_id: Mapped[str | None] = mapped_column(ForeignKey("runtimes.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]


class TelemetryRecord(Base):
    __tablename__ = "telemetry_records"
    __table_args__ = (Index("ix_telemetry_workspace_received", "workspace_id", "received_at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    runtime_id: Mapped[str | None] = mapped_column(ForeignKey("runtimes.id", ondelete="CASCADE"))
    metric: Mapped[str] = mapped_column(String(200))
    value: Mapped[float]
    recorded_at: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[dict[str, Any] | None]
    received_at: Mapped[datetime]


class EvidenceRef(Base):
    __tablename__ = "evidence_refs"
    __table_args__ = (Index("ix_evidence_workspace_received", "workspace_id", "received_at"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    runtime_id: Mapped[str | None] = mapped_column(ForeignKey("runtimes.id", ondelete="CASCADE"))
    ref: Mapped[Any] = mapped_column(JSON)
    received_at: Mapped[datetime]


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_workspace_seq", "workspace_id", "seq"),
        Index("ix_audit_org_seq", "org_id", "seq"),
    )
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    org_id: Mapped[str | None] = mapped_column(String(32))
    workspace_id: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(300))
    before_hash: Mapped[str | None] = mapped_column(String(64))
    after_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]


class WebSession(Base):
    """A signed-in dashboard session; the cookie holds a random token stored here as SHA-256."""

    __tablename__ = "web_sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class LoginFailure(Base):
    """One failed sign-in, kept for the throttling window; shared by every server process."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_email_at", "email", "failed_at"),
        Index("ix_login_failures_address_at", "address", "failed_at"),
    )
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    address: Mapped[str] = mapped_column(String(64))
    failed_at: Mapped[datetime]


AUTO_ID = BigInteger().with_variant(Integer, "sqlite")


class RuntimeState(Base):
    """The health and drift of a runtime as the sweeper last saw them, and since when."""

    __tablename__ = "runtime_states"
    runtime_id: Mapped[str] = mapped_column(
        ForeignKey("runtimes.id", ondelete="CASCADE"), primary_key=True
    )
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    health: Mapped[str] = mapped_column(String(20))
    health_since: Mapped[datetime]
    drift: Mapped[str] = mapped_column(String(20))
    drift_reason: Mapped[str | None] = mapped_column(String(40))
    drift_since: Mapped[datetime]
    swept_at: Mapped[datetime]


class RuntimeTransition(Base):
    """One change of a runtime's health, drift or life cycle, recorded once by the sweeper."""

    __tablename__ = "runtime_transitions"
    __table_args__ = (
        Index("ix_runtime_transitions_runtime_id", "runtime_id", "id"),
        Index("ix_runtime_transitions_workspace_detected", "workspace_id", "detected_at"),
    )
    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True)
    runtime_id: Mapped[str] = mapped_column(ForeignKey("runtimes.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[datetime]
    detected_at: Mapped[datetime]


class WorkspaceAlertRules(Base):
    """A workspace's alert thresholds and whether each is currently crossed."""

    __tablename__ = "workspace_alert_rules"
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    aligned_share_below: Mapped[float | None]
    dormant_share_above: Mapped[float | None]
    upgrade_required: Mapped[bool] = mapped_column(Boolean, default=False)
    aligned_firing: Mapped[bool] = mapped_column(Boolean, default=False)
    dormant_firing: Mapped[bool] = mapped_column(Boolean, default=False)
    upgrade_firing: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime]


class ThresholdCrossing(Base):
    """A workspace threshold that started or stopped being crossed."""

    __tablename__ = "threshold_crossings"
    __table_args__ = (Index("ix_threshold_crossings_workspace_id", "workspace_id", "id"),)
    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    threshold: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(20))
    value: Mapped[float]
    threshold_value: Mapped[float | None]
    at: Mapped[datetime]


class Webhook(Base):
    """A workspace's webhook subscription; the secret signs every delivery (HMAC-SHA256)."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(200))
    events: Mapped[list[str]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(320))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WebhookDelivery(Base):
    """One alert for one webhook: the outbox row the delivery worker sends, and its log."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("webhook_id", "dedupe_key"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_created", "webhook_id", "created_at"),
        Index("ix_webhook_deliveries_workspace_created", "workspace_id", "created_at"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(60))
    dedupe_key: Mapped[str] = mapped_column(String(100))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    last_attempt_at: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery, as the delivery log shows it."""

    __tablename__ = "webhook_attempts"
    id: Mapped[int] = mapped_column(AUTO_ID, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    number: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)


class SweepRun(Base):
    """When the fleet sweep last ran, shared by every server process."""

    __tablename__ = "sweep_runs"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    last_started_at: Mapped[datetime]
    last_duration_ms: Mapped[int] = mapped_column(Integer)
    runs: Mapped[int] = mapped_column(BigInteger)
