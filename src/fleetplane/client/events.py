"""Kernel events a runtime sends to ``/events`` (schema version 1 envelope)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = [
    "EVENT_SCHEMA_VERSION",
    "config_apply_failed_event",
    "iso_timestamp",
    "workspace_updated_event",
    "workspace_warning_event",
]

EVENT_SCHEMA_VERSION = 1


def iso_timestamp(moment: datetime | None = None) -> str:
    """ISO 8601 in UTC with milliseconds and ``Z``, as the SDK writes event timestamps."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(kind: str, timestamp: str, session_id: str | None, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "schema_version": EVENT_SCHEMA_VERSION,
        "kind": kind,
        "timestamp": timestamp,
        **fields,
    }
    if session_id is not None:
        # Lets the server attribute the event when the caller holds the workspace key.
        event["session_id"] = session_id
    return event


def workspace_updated_event(
    config_hash: str, *, timestamp: str, session_id: str | None = None
) -> dict[str, Any]:
    """The runtime now runs the workspace config whose hash is ``config_hash``."""
    return _event("workspace_updated", timestamp, session_id, config_hash=config_hash)


def config_apply_failed_event(
    config_hash: str, message: str, *, timestamp: str, session_id: str | None = None
) -> dict[str, Any]:
    """The runtime could not apply the config whose hash is ``config_hash``."""
    return _event(
        "config_apply_failed", timestamp, session_id, config_hash=config_hash, message=message
    )


def workspace_warning_event(
    message: str, *, timestamp: str, session_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    """A warning the operator should see (counted per runtime as ``warnings24h``)."""
    return _event("workspace_warning", timestamp, session_id, message=message, **fields)
