"""What every request can reach: settings, the database and the server clock."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import select

from fleetplane.domain.fleet import HealthThresholds
from fleetplane.services.fleet import FleetRules
from fleetplane.services.hotpath import (
    ChangeWatcher,
    Flusher,
    LivenessBuffer,
    RuntimeIdentity,
    TtlCache,
    WorkspaceAnswer,
    identity_from_row,
    identity_query,
)
from fleetplane.settings import Settings
from fleetplane.store.db import Database, one_of
from fleetplane.store.models import Runtime, Workspace, WorkspaceKey


def fleet_rules(settings: Settings) -> FleetRules:
    """The health and version thresholds of a server's settings."""
    return FleetRules(
        thresholds=HealthThresholds(
            connected_seconds=settings.health_connected_seconds,
            dormant_seconds=settings.health_dormant_seconds,
        ),
        minimum_version=settings.min_runtime_version,
        full_sync_version=settings.full_sync_version,
    )


def system_clock() -> datetime:
    """The server's UTC clock; the only clock that decides health."""
    return datetime.now(UTC)


class CachedCaller(NamedTuple):
    """A runtime-surface credential as last read from the database (plain values: see
    `TtlCache`'s `record`)."""

    workspace_id: str
    org_id: str
    runtime_id: str | None


log = logging.getLogger("fleetplane.hotpath")

# Why a heartbeat went to the full route: no cached credential (or one replaced since), a
# body the hot path does not take, something to record beyond liveness (a new version, config
# hash, session or apply failure), a runtime this process does not know (or its first
# heartbeat), the workspace's answer not cached (or a lapsed dev-override), a failure.
FULL_ROUTE_REASONS = ("credential", "body", "report", "runtime", "workspace", "error")
K = TypeVar("K")
V = TypeVar("V")
# Entries re-read per refresh round (every CACHE_POLL_SECONDS), and per query.
REFRESH_PER_ROUND = 5000
REFRESH_BATCH = 500
# Warming a starting process: runtimes read per query, and the pause after each query, which
# leaves the event loop the GIL to answer requests meanwhile.
WARM_BATCH = 1000
WARM_PAUSE_SECONDS = 0.005


def _chunks(values: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def load_identities(
    database: Database, keys: list[tuple[str, str, str]]
) -> dict[tuple[str, str, str], RuntimeIdentity]:
    """The runtimes named by identity-cache keys (by id or by agent id), in batched reads."""
    wanted: dict[tuple[str, str], list[str]] = {}
    for workspace_id, kind, value in keys:
        if kind in ("id", "agent"):
            wanted.setdefault((workspace_id, kind), []).append(value)
    found: dict[tuple[str, str, str], RuntimeIdentity] = {}
    if not wanted:
        return found
    with database.engine.connect() as connection:
        for (workspace_id, kind), values in wanted.items():
            column = Runtime.id if kind == "id" else Runtime.agent_id
            for chunk in _chunks(values, REFRESH_BATCH):
                query = identity_query().where(
                    Runtime.workspace_id == workspace_id,
                    one_of(column, chunk, dialect=database.dialect),
                )
                for row in connection.execute(query):
                    value = row.id if kind == "id" else row.agent_id
                    found[(workspace_id, kind, value)] = identity_from_row(row)
    return found


def load_callers(database: Database, digests: list[str]) -> dict[str, CachedCaller]:
    """The workspace keys and runtime credentials with these token hashes, as the hot path
    authenticates them (`services.runtimes.authenticate_runtime`): unrevoked keys, existing
    runtimes."""
    found: dict[str, CachedCaller] = {}
    if not digests:
        return found
    with database.engine.connect() as connection:
        for chunk in _chunks(digests, REFRESH_BATCH):
            keys = select(WorkspaceKey.key_hash, Workspace.id, Workspace.org_id).join(
                Workspace, Workspace.id == WorkspaceKey.workspace_id
            )
            keys = keys.where(
                one_of(WorkspaceKey.key_hash, chunk, dialect=database.dialect),
                WorkspaceKey.revoked_at.is_(None),
            )
            for digest, workspace_id, org_id in connection.execute(keys):
                found[digest] = CachedCaller(workspace_id, org_id, None)
            runtimes = select(
                Runtime.credential_hash, Runtime.workspace_id, Workspace.org_id, Runtime.id
            ).join(Workspace, Workspace.id == Runtime.workspace_id)
            runtimes = runtimes.where(
                one_of(Runtime.credential_hash, chunk, dialect=database.dialect)
            )
            for credential_hash, workspace_id, org_id, runtime_id in connection.execute(runtimes):
                if credential_hash is not None:
                    found[credential_hash] = CachedCaller(workspace_id, org_id, runtime_id)
    return found


def load_answers(database: Database, workspace_ids: list[str]) -> dict[str, WorkspaceAnswer]:
    """What heartbeat answers need of these workspaces' desired state, as stored now (as
    `services.workspaces.desired_state` reads it)."""
    found: dict[str, WorkspaceAnswer] = {}
    if not workspace_ids:
        return found
    with database.engine.connect() as connection:
        for chunk in _chunks(workspace_ids, REFRESH_BATCH):
            query = select(
                Workspace.id,
                Workspace.org_id,
                Workspace.config_hash,
                Workspace.policy_mode,
                Workspace.dev_override_until,
            ).where(one_of(Workspace.id, chunk, dialect=database.dialect))
            for row in connection.execute(query):
                found[row.id] = WorkspaceAnswer(
                    workspace_id=row.id,
                    org_id=row.org_id,
                    config_hash=row.config_hash,
                    policy_mode=row.policy_mode,
                    dev_override_until=row.dev_override_until,
                )
    return found


def load_recent(
    database: Database, *, since: datetime, after: str, limit: int
) -> list[tuple[RuntimeIdentity, str, str]]:
    """Runtimes that heartbeated at `since` or later, in id order after `after`: each with its
    agent id and its workspace's org id."""
    query = (
        identity_query()
        .add_columns(Workspace.org_id)
        .join(Workspace, Workspace.id == Runtime.workspace_id)
        .where(Runtime.id > after, Runtime.last_heartbeat_at >= since)
        .order_by(Runtime.id)
        .limit(limit)
    )
    with database.engine.connect() as connection:
        return [
            (identity_from_row(row), row.agent_id, sys.intern(row.org_id))
            for row in connection.execute(query)
        ]


def _renew(cache: TtlCache[K, V], key: K, value: V | None) -> None:
    """Put a value read again, or forget the key if the database no longer has it."""
    if value is None:
        cache.pop(key)
    else:
        cache.put(key, value)


class HotPath:
    """Per-process caches of the heartbeat and pull paths; every entry is short-lived."""

    def __init__(self, settings: Settings, database: Database) -> None:
        # Caches hold one entry per runtime or credential; they are sized apart from the
        # liveness buffer so that a small buffer still answers 429 instead of missing the cache.
        cap = max(2 * settings.heartbeat_buffer_max, 1000)
        age = settings.cache_max_age_seconds
        # One entry per runtime (or credential): refreshed ahead in batches while in use.
        self.callers: TtlCache[str, CachedCaller] = TtlCache(
            ttl=age, max_entries=cap, refresh_ahead=True, record=CachedCaller
        )
        self.identities: TtlCache[tuple[str, str, str], RuntimeIdentity] = TtlCache(
            ttl=age, max_entries=cap, refresh_ahead=True, record=RuntimeIdentity
        )
        self.database = database
        # One entry per workspace, also refreshed ahead: were it left to expire, every
        # heartbeat of the workspace reaching the process would take the full route at once
        # until one of them had read it again (each a transaction, a write on SQLite).
        self.answers: TtlCache[str, WorkspaceAnswer] = TtlCache(
            ttl=age, max_entries=cap, refresh_ahead=True
        )
        self.etags: TtlCache[tuple[str, str], str] = TtlCache(ttl=age, max_entries=cap)
        self.liveness = LivenessBuffer(database, max_pending=settings.heartbeat_buffer_max)
        self.flusher = Flusher(self.liveness, interval=settings.liveness_flush_seconds)
        self.watcher = ChangeWatcher(database, self, interval=settings.cache_poll_seconds)
        # Bumped on every invalidation; a reader that started under an older generation may
        # have read data older than the change, so it must not cache what it read.
        self.generation = 0
        # For /metrics: how often the request path had to read the database, and why.
        self.identity_loads = 0
        self.identity_reads = 0
        # Heartbeats the hot path handed to the full route, by reason (FULL_ROUTE_REASONS).
        self.full_route: Counter[str] = Counter(dict.fromkeys(FULL_ROUTE_REASONS, 0))
        self.forgotten = 0
        self.refreshed = 0
        self.warmed = 0
        self.warm_seconds = 0.0
        self._stop_warming = threading.Event()
        self._warmer: threading.Thread | None = None

    def start_warming(self, now: datetime) -> None:
        """Warm the caches in the background (`warm`), from what the database holds at `now`."""
        self._warmer = threading.Thread(
            target=self._warm_logged, args=(now,), name="fleetplane-warm", daemon=True
        )
        self._warmer.start()

    def stop_warming(self) -> None:
        """Stop warming, if it is still under way."""
        self._stop_warming.set()
        if self._warmer is not None and self._warmer.is_alive():
            self._warmer.join(timeout=5)

    def _warm_logged(self, now: datetime) -> None:
        try:
            self.warm(now)
        except Exception:
            # Nothing is lost: each runtime is then read on its first heartbeat, as without it.
            log.warning("warming the caches failed after %d runtimes", self.warmed, exc_info=True)

    def warm(self, now: datetime) -> int:
        """Read the runtimes that heartbeated within the cache age into the identity cache (and
        their credentials into the credential cache), a batch at a time; returns how many.

        A process starting under a large fleet, each of whose runtimes reaches it a heartbeat
        at a time, would otherwise read every one of them on the request path (a cache miss,
        and a slow answer). Each runtime is cached under its agent id (heartbeats under the
        workspace key) and, when it holds a credential of its own, under its id. Entries no
        request uses expire within the cache age, like any other. At most half the cache is
        filled, so that requests never find it full.
        """
        started = time.monotonic()
        since = now - timedelta(seconds=self.identities.ttl)
        budget = self.identities.max_entries // 2
        after = ""
        entries = warmed = 0
        # Each runtime takes one entry, or two with a credential of its own.
        while entries + 2 <= budget and not self._stop_warming.is_set():
            generation = self.generation
            limit = min(WARM_BATCH, (budget - entries) // 2)
            batch = load_recent(self.database, since=since, after=after, limit=limit)
            if not batch:
                break
            after = batch[-1][0].runtime_id
            keys = self._cache_warm_batch(batch, generation)
            if keys:  # else dropped, overtaken by a change
                entries += len(keys)
                warmed += len(batch)
                self.warmed += len(batch)
            self._stop_warming.wait(WARM_PAUSE_SECONDS)
        self.warm_seconds = time.monotonic() - started
        log.info("caches warmed: %d runtimes in %.1f s", warmed, self.warm_seconds)
        return warmed

    def _cache_warm_batch(
        self, batch: list[tuple[RuntimeIdentity, str, str]], generation: int
    ) -> list[tuple[str, str, str]]:
        if self.generation != generation:
            return []  # read across a change: those runtimes are read on first use instead
        keys: list[tuple[str, str, str]] = []
        callers: list[str] = []
        for identity, agent_id, org_id in batch:
            workspace_id = identity.workspace_id
            keys.append((workspace_id, "agent", agent_id))
            self.identities.put(keys[-1], identity)
            if identity.credential_hash is not None:
                keys.append((workspace_id, "id", identity.runtime_id))
                self.identities.put(keys[-1], identity)
                callers.append(identity.credential_hash)
                caller = CachedCaller(workspace_id, org_id, identity.runtime_id)
                self.callers.put(identity.credential_hash, caller)
        if self.generation != generation:
            # A change came in while these were put: take them back out, for what they hold may
            # predate it (they are read again on first use).
            for key in keys:
                self.identities.pop(key)
            for digest in callers:
                self.callers.pop(digest)
            return []
        return keys

    def refresh(self) -> None:
        """Re-read the credentials, runtimes and workspace answers in use whose entries are
        past half their life.

        Batched (one query per REFRESH_BATCH entries), so a large fleet's entries are renewed
        a few queries a second instead of each expiring into a database read on the request
        path. What was read is dropped if an invalidation came in meanwhile.
        """
        generation = self.generation
        identity_keys = self.identities.take_due(REFRESH_PER_ROUND)
        caller_keys = self.callers.take_due(REFRESH_PER_ROUND)
        answer_keys = self.answers.take_due(REFRESH_PER_ROUND)
        if not identity_keys and not caller_keys and not answer_keys:
            return
        self.refreshed += len(identity_keys) + len(caller_keys) + len(answer_keys)
        identities = load_identities(self.database, identity_keys)
        callers = load_callers(self.database, caller_keys)
        answers = load_answers(self.database, answer_keys)
        if self.generation != generation:
            return
        for key in identity_keys:
            if key[1] == "session":
                continue  # not refreshed: it expires and the full route reads it
            _renew(self.identities, key, identities.get(key))
        for digest in caller_keys:
            _renew(self.callers, digest, callers.get(digest))
        for workspace_id in answer_keys:
            _renew(self.answers, workspace_id, answers.get(workspace_id))

    def forget_runtimes(self, runtime_ids: list[str]) -> None:
        """Forget the cached identities of these runtimes (changed by another process).

        A credential cached for one of them stays, but is checked against the runtime's
        identity on use, which is read again with its current credential.
        """
        with self.database.engine.connect() as connection:
            rows = connection.execute(
                select(
                    Runtime.id, Runtime.workspace_id, Runtime.agent_id, Runtime.last_session_id
                ).where(Runtime.id.in_(set(runtime_ids)))
            ).all()
        if len(rows) < len(set(runtime_ids)):
            self.invalidate()  # gone meanwhile: what names it in the caches is unknown
            return
        for row in rows:
            self.forget_runtime(row.workspace_id, row.id, row.agent_id, row.last_session_id)

    def forget_runtime(
        self, workspace_id: str, runtime_id: str, agent_id: str, session_id: str | None
    ) -> None:
        """Forget one runtime's cached identity, under each lookup that can find it."""
        self.generation += 1  # a read under way may predate the change: it must not cache
        self.identities.pop((workspace_id, "id", runtime_id))
        self.identities.pop((workspace_id, "agent", agent_id))
        if session_id:
            self.identities.pop((workspace_id, "session", session_id))
        self.forgotten += 1

    def catch_up(self) -> None:
        """Act at once on the changes committed so far, this process's own included, as the
        change watcher would at its next poll (a request that may have changed something calls
        this before its answer leaves). Where that cannot be known, drop everything."""
        try:
            if self.watcher.seen is None:  # not watching yet: no position to read from
                self.watcher.check()
                self.invalidate()
                return
            self.watcher.check()
        except Exception:
            log.warning("reading the changes failed; caches cleared", exc_info=True)
            self.invalidate()

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
        return fleet_rules(self.settings)
