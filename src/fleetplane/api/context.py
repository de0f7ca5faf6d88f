"""What every request can reach: settings, the database and the server clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fleetplane.domain.fleet import HealthThresholds
from fleetplane.services.fleet import FleetRules
from fleetplane.settings import Settings
from fleetplane.store.db import Database


def system_clock() -> datetime:
    """The server's UTC clock; the only clock that decides health."""
    return datetime.now(UTC)


@dataclass
class AppContext:
    """Shared by all requests of one process; holds no state another process would need."""

    settings: Settings
    database: Database
    clock: Callable[[], datetime] = field(default=system_clock)

    @property
    def fleet_rules(self) -> FleetRules:
        """The health and version thresholds from settings."""
        return FleetRules(
            thresholds=HealthThresholds(
                connected_seconds=self.settings.health_connected_seconds,
                dormant_seconds=self.settings.health_dormant_seconds,
            ),
            minimum_version=self.settings.min_runtime_version,
            full_sync_version=self.settings.full_sync_version,
        )
