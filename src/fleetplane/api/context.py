"""What every request can reach: settings, the database and the server clock."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fleetplane.domain.fleet import HealthThresholds
from fleetplane.services.fleet import FleetRules
from fleetplane.services.hotpath import (
    ChangeWatcher,
    Flusher,
    LivenessBuffer,
    RuntimeIdentity,
    TtlCache,
    WorkspaceAnswer,
)
from fleetplane.settings import Settings
from fleetplane.store.db import Database


def system_clock() -> datetime:
    """The server's UTC clock; the only clock that decides health."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class CachedCaller:
    """A runtime-surface credential as last read from the database."""

    workspace_id: str
    org_id: str
    runtime_id: str | None


class HotPath:
    """Per-process caches of the heartbeat and pull paths; every entry is short-lived."""

    def __init__(self, settings: Settings, database: Database) -> None:
        # Caches hold one entry per runtime or credential; they are sized apart from the
        # liveness buffer so that a small buffer still answers 429 instead of missing the cache.
        cap = max(2 * settings.heartbeat_buffer_max, 1000)
        age = settings.cache_max_age_seconds
        self.callers: TtlCache[str, CachedCaller] = TtlCache(ttl=age, max_entries=cap)
        self.identities: TtlCache[tuple[str, str, str], RuntimeIdentity] = TtlCache(
            ttl=age, max_entries=cap
        )
        self.answers: TtlCache[str, WorkspaceAnswer] = TtlCache(ttl=age, max_entries=cap)
        self.etags: TtlCache[tuple[str, str], str] = TtlCache(ttl=age, max_entries=cap)
        self.liveness = LivenessBuffer(database, max_pending=settings.heartbeat_buffer_max)
        self.flusher = Flusher(self.liveness, interval=settings.liveness_flush_seconds)
        self.watcher = ChangeWatcher(database, self, interval=settings.cache_poll_seconds)
        # Bumped on every invalidation; a reader that started under an older generation may
        # have read data older than the change, so it must not cache what it read.
        self.generation = 0

    def invalidate(self) -> None:
        """Forget every cached credential and answer: a change in this process shows at once."""
        self.generation += 1
        for cache in (self.callers, self.identities, self.answers, self.etags):
            cache.clear()


@dataclass
class AppContext:
    """Shared by all requests of one process; holds no state another process would need."""

    settings: Settings
    database: Database
    clock: Callable[[], datetime] = field(default=system_clock)
    hot: HotPath = field(init=False)

    def __post_init__(self) -> None:
        self.hot = HotPath(self.settings, self.database)

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
