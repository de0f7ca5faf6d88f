"""Health, drift and summary rules of a fleet (SPEC 3.1, 3.4, 3.5).

The store evaluates the same rules in SQL for aggregates; tests hold the two to each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from fleetplane.domain.versions import Compatibility


class Health(StrEnum):
    """Heartbeat freshness on the server clock."""

    CONNECTED = "connected"
    STALE = "stale"
    DORMANT = "dormant"
    NEVER = "never"


class Drift(StrEnum):
    """How a runtime's observed config relates to the desired config."""

    ALIGNED = "aligned"
    NEEDS_RECONCILE = "needs_reconcile"
    UPGRADE_REQUIRED = "upgrade_required"
    AWAITING_SYNC = "awaiting_sync"


class DriftReason(StrEnum):
    """Why a runtime is not aligned (SPEC 3.4 `driftReason`)."""

    NO_HEARTBEAT = "no_heartbeat"
    VERSION_BELOW_MINIMUM = "version_below_minimum"
    APPLY_FAILED = "apply_failed"
    CONFIG_REVISION_DIFFERS = "config_revision_differs"
    CONFIG_REVISION_UNREPORTED = "config_revision_unreported"
    VERSION_BELOW_FULL_SYNC = "version_below_full_sync"


@dataclass(frozen=True)
class HealthThresholds:
    """Heartbeat ages, in seconds, at which a runtime turns stale and then dormant."""

    connected_seconds: int = 300
    dormant_seconds: int = 3600


def heartbeat_age_seconds(last_heartbeat_at: datetime | None, *, now: datetime) -> float | None:
    """Seconds since the last heartbeat on the server clock, or None if there was none."""
    if last_heartbeat_at is None:
        return None
    return (now - last_heartbeat_at).total_seconds()


def health(
    last_heartbeat_at: datetime | None, *, now: datetime, thresholds: HealthThresholds
) -> Health:
    """Health from the age of the last heartbeat: <connected, ≤dormant, beyond, or never."""
    age = heartbeat_age_seconds(last_heartbeat_at, now=now)
    if age is None:
        return Health.NEVER
    if age < thresholds.connected_seconds:
        return Health.CONNECTED
    if age <= thresholds.dormant_seconds:
        return Health.STALE
    return Health.DORMANT


def drift(
    *,
    has_heartbeat: bool,
    compatibility: Compatibility,
    observed_config_hash: str | None,
    apply_failed_hash: str | None,
    desired_config_hash: str,
) -> tuple[Drift, DriftReason | None]:
    """Drift and its reason: the first row of SPEC 3.4's table that matches."""
    if not has_heartbeat:
        return Drift.AWAITING_SYNC, DriftReason.NO_HEARTBEAT
    if compatibility is Compatibility.UNSUPPORTED:
        return Drift.UPGRADE_REQUIRED, DriftReason.VERSION_BELOW_MINIMUM
    if apply_failed_hash is not None and apply_failed_hash == desired_config_hash:
        return Drift.NEEDS_RECONCILE, DriftReason.APPLY_FAILED
    if observed_config_hash is None:
        return Drift.NEEDS_RECONCILE, DriftReason.CONFIG_REVISION_UNREPORTED
    if observed_config_hash != desired_config_hash:
        return Drift.NEEDS_RECONCILE, DriftReason.CONFIG_REVISION_DIFFERS
    if compatibility is Compatibility.LIMITED:
        return Drift.NEEDS_RECONCILE, DriftReason.VERSION_BELOW_FULL_SYNC
    return Drift.ALIGNED, None


@dataclass(frozen=True)
class FleetSummary:
    """Counts of runtimes per health and drift state (SPEC 3.5)."""

    total: int = 0
    active: int = 0
    stale: int = 0
    dormant: int = 0
    never: int = 0
    aligned: int = 0
    needs_reconcile: int = 0
    upgrade_required: int = 0
    awaiting_sync: int = 0

    @classmethod
    def from_counts(cls, health: Mapping[Health, int], drift: Mapping[Drift, int]) -> FleetSummary:
        """The summary of runtimes counted per health and per drift state (absent ones: 0)."""
        return cls(
            total=sum(health.values()),
            active=health.get(Health.CONNECTED, 0),
            stale=health.get(Health.STALE, 0),
            dormant=health.get(Health.DORMANT, 0),
            never=health.get(Health.NEVER, 0),
            aligned=drift.get(Drift.ALIGNED, 0),
            needs_reconcile=drift.get(Drift.NEEDS_RECONCILE, 0),
            upgrade_required=drift.get(Drift.UPGRADE_REQUIRED, 0),
            awaiting_sync=drift.get(Drift.AWAITING_SYNC, 0),
        )

    def to_api(self) -> dict[str, int]:
        """The camelCase shape of the fleet API."""
        return {
            "total": self.total,
            "active": self.active,
            "stale": self.stale,
            "dormant": self.dormant,
            "never": self.never,
            "aligned": self.aligned,
            "needsReconcile": self.needs_reconcile,
            "upgradeRequired": self.upgrade_required,
            "awaitingSync": self.awaiting_sync,
        }
