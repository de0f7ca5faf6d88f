"""In-process state of the heartbeat hot path: credential and desired-state caches, and the
liveness buffer that coalesces heartbeats into batched writes.

Nothing here is the source of truth: every entry expires within seconds, so several processes
sharing one database stay consistent (a revoked credential fails everywhere within the
credential lifetime, and at once in the process that revoked it).
"""

from __future__ import annotations

import heapq
import logging
import random
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, Protocol, TypeVar

import orjson
from sqlalchemy import Select, func, select

from fleetplane.store.db import Database
from fleetplane.store.models import AuditEntry, Runtime, epoch_ms

log = logging.getLogger("fleetplane.liveness")


class RuntimeIdentity(NamedTuple):
    """What the hot path knows of a runtime between database reads.

    A named tuple of plain values, so that a cache can hold it as an exact tuple (see
    `TtlCache`), which the garbage collector stops tracking.
    """

    runtime_id: str
    workspace_id: str
    version: str | None
    observed_config_hash: str | None
    has_heartbeat: bool
    last_session_id: str | None
    apply_failed_hash: str | None = None
    # The runtime's current credential: a cached credential naming this runtime is only good
    # while it still matches (a new credential replaces the old one at once).
    credential_hash: str | None = None


def identity_query() -> Select[
    str, str, str, str | None, str | None, datetime | None, str | None, str | None, str | None
]:
    """The columns a `RuntimeIdentity` is made of (add the WHERE)."""
    return select(
        Runtime.id,
        Runtime.workspace_id,
        Runtime.agent_id,
        Runtime.version,
        Runtime.observed_config_hash,
        Runtime.last_heartbeat_at,
        Runtime.last_session_id,
        Runtime.apply_failed_hash,
        Runtime.credential_hash,
    )


def _shared(value: str | None) -> str | None:
    return None if value is None else sys.intern(value)


def identity_from_row(row: Any) -> RuntimeIdentity:
    """A `RuntimeIdentity` from a row of `identity_query()` or a `Runtime` just written.

    The values most runtimes share (their workspace, version and config hash) are interned: a
    cache of a whole fleet then holds one copy of each instead of one per runtime.
    """
    return RuntimeIdentity(
        runtime_id=row.id,
        workspace_id=sys.intern(row.workspace_id),
        version=_shared(row.version),
        observed_config_hash=_shared(row.observed_config_hash),
        has_heartbeat=row.last_heartbeat_at is not None,
        last_session_id=row.last_session_id,
        apply_failed_hash=_shared(row.apply_failed_hash),
        credential_hash=row.credential_hash,
    )


@dataclass(frozen=True, slots=True)
class WorkspaceAnswer:
    """What a heartbeat answer needs of the workspace's desired state."""

    workspace_id: str
    org_id: str
    config_hash: str
    policy_mode: str
    dev_override_until: datetime | None


K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A small thread-safe map whose entries expire after at most `ttl` seconds (monotonic).

    Each entry lives a random share of `ttl`, between `1 - spread` and all of it: entries
    cached in one burst (a server starting under a large fleet) then expire spread out,
    instead of all being read again from the database in the same moment.

    With `refresh_ahead`, `take_due()` names the entries in use to re-read in a batch before
    they expire. An entry is in use while it was read within the last `ttl` seconds, in this
    life or an earlier one: it is looked at at half its life and, failing that, at nine
    tenths of it. An entry in use is then renewed whatever the pattern of its reads (a runtime
    whose heartbeats reach this process once a minute, or reach each of several worker
    processes only now and then), so it is never a miss on the request path, and no entry is
    ever older than `ttl`. An entry nobody read for `ttl` seconds expires.

    With `record` (a named tuple of plain values), each value is kept as an exact tuple and
    rebuilt on `get`. The collector untracks exact tuples of untracked values, so a cache of a
    whole fleet (hundreds of thousands of entries) adds nothing to its full passes: otherwise
    each pass walks every entry, and pauses the event loop for a tenth of a second or more.
    """

    # When the last look at an entry falls, as a share of its life.
    LAST_LOOK = 0.9

    def __init__(
        self,
        *,
        ttl: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
        spread: float = 0.5,
        refresh_ahead: bool = False,
        record: Callable[..., V] | None = None,
    ) -> None:
        self.ttl = ttl
        self.record = record
        self.max_entries = max_entries
        self.spread = spread
        self.refresh_ahead = refresh_ahead
        self._clock = clock
        self._random = random.Random()  # noqa: S311 - expiry spreading, not security
        # key -> (expires at, value or its fields as an exact tuple, number of the put)
        self._entries: dict[K, tuple[float, Any, int]] = {}
        self._puts = 0
        # Refresh-ahead: when each key was last read, and a heap of the moments to look at
        # entries, (when, number of the put it is for, key, last look). A look whose entry was
        # replaced or dropped since is skipped when it comes up.
        self._read: dict[K, float] = {}
        self._looks: list[tuple[float, int, K, bool]] = []
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        """The live value under `key`, or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        if entry[0] <= now:
            with self._lock:
                self._entries.pop(key, None)
                self._read.pop(key, None)
            return None
        if self.refresh_ahead:
            self._read[key] = now
        if self.record is not None:
            return self.record(*entry[1])
        return entry[1]  # type: ignore[no-any-return]

    def put(self, key: K, value: V, *, used: bool = False) -> None:
        """Remember `value`; when full, forget everything (cheap, and entries are short-lived).

        `used`: a request needed this value (a cache miss it was read for), which counts as a
        read for refresh-ahead; a renewal by `take_due`'s reader does not.
        """
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._forget_all()
            now = self._clock()
            lifetime = self.ttl * (1 - self.spread * self._random.random())
            stored: Any = tuple(value) if self.record is not None else value  # type: ignore[arg-type]
            self._puts += 1
            self._entries[key] = (now + lifetime, stored, self._puts)
            if self.refresh_ahead:
                if used:
                    self._read[key] = now
                heapq.heappush(self._looks, (now + lifetime / 2, self._puts, key, False))
                if len(self._looks) > 2 * self.max_entries:
                    self._drop_stale_looks()

    def pop(self, key: K) -> None:
        """Forget one entry (the database no longer has it)."""
        with self._lock:
            self._entries.pop(key, None)
            self._read.pop(key, None)

    def take_due(self, limit: int) -> list[K]:
        """Up to `limit` entries in use that are due to be re-read (refresh-ahead)."""
        now = self._clock()
        in_use_since = now - self.ttl
        due: list[K] = []
        with self._lock:
            looks, read = self._looks, self._read
            while looks and looks[0][0] <= now and len(due) < limit:
                when, put, key, last = heapq.heappop(looks)
                entry = self._entries.get(key)
                if entry is None:
                    read.pop(key, None)  # dropped since
                    continue
                if entry[2] != put:
                    continue  # replaced (refreshed) since: its own looks come up later
                if read.get(key, in_use_since) > in_use_since:
                    due.append(key)
                elif not last:
                    expires = entry[0]
                    again = expires - (1 - self.LAST_LOOK) * 2 * (expires - when)
                    heapq.heappush(looks, (again, put, key, True))
                else:
                    read.pop(key, None)  # idle: it expires
        return due

    def clear(self) -> None:
        """Forget every entry (after a revocation or a desired-state change in this process)."""
        with self._lock:
            self._forget_all()

    def _drop_stale_looks(self) -> None:
        # Entries put again and again (faster than their looks come up) leave stale looks
        # behind: keep the heap within a small multiple of the entries, whatever the rate.
        entries = self._entries
        self._looks = [
            look for look in self._looks if (entry := entries.get(look[2])) and entry[2] == look[1]
        ]
        heapq.heapify(self._looks)

    def _forget_all(self) -> None:
        self._entries.clear()
        self._read.clear()
        self._looks.clear()

    def __len__(self) -> int:
        return len(self._entries)


# The liveness flush, written for each driver: it runs every second with thousands of rows, so
# it skips the ORM's per-row parameter processing (time held under the GIL is time the event
# loop does not answer heartbeats). PostgreSQL gets the whole batch as three JSON arrays in one
# statement (encoded in C by orjson, where adapting Python lists item by item would hold the GIL
# for milliseconds); SQLite runs one prepared statement per row inside the one transaction.
# `last_heartbeat_at` only moves forward, so processes flushing in any order agree.
_FLUSH_POSTGRESQL = """
UPDATE runtimes AS r
SET last_heartbeat_at = v.seen::bigint, last_session_id = COALESCE(v.sid, r.last_session_id)
FROM ROWS FROM (
    json_array_elements_text(%s::json),
    json_array_elements_text(%s::json),
    json_array_elements_text(%s::json)
) AS v(rid, seen, sid)
WHERE r.id = v.rid AND (r.last_heartbeat_at IS NULL OR r.last_heartbeat_at < v.seen::bigint)
"""


def _postgres_flush_parameters(
    ids: list[str], seen_ms: list[int], sessions: list[str | None]
) -> tuple[str, str, str]:
    return (
        orjson.dumps(ids).decode(),
        orjson.dumps(seen_ms).decode(),
        orjson.dumps(sessions).decode(),
    )


# A flush touches a small share of a large fleet's rows: by the primary key, one row at a time,
# never a scan of the whole table (which the planner picks for a batch of a few thousand rows
# once it takes the table for small, and which then spills its hash to disk). For this
# transaction only.
_FLUSH_POSTGRESQL_PLAN = (
    "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
)
_FLUSH_SQLITE = """
UPDATE runtimes SET last_heartbeat_at = ?, last_session_id = COALESCE(?, last_session_id)
WHERE id = ? AND (last_heartbeat_at IS NULL OR last_heartbeat_at < ?)
"""


class LivenessBuffer:
    """Coalesces heartbeats per runtime and writes them in one batched UPDATE per flush.

    The UPDATE only moves `last_heartbeat_at` forward, so processes flushing in any order
    agree, and it never recreates a runtime revoked in the meantime (an upsert would).
    """

    def __init__(self, database: Database, *, max_pending: int) -> None:
        self.database = database
        self.max_pending = max_pending
        self._pending: dict[str, tuple[datetime, str | None]] = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.flushes = 0
        self.rows_written = 0
        self.flush_seconds = 0.0  # total time spent writing flushes, for /metrics

    def offer(self, runtime_id: str, seen_at: datetime, session_id: str | None) -> bool:
        """Buffer a heartbeat; False when the buffer is full (the caller answers 429)."""
        with self._lock:
            if runtime_id not in self._pending and len(self._pending) >= self.max_pending:
                return False
            self._pending[runtime_id] = (seen_at, session_id)
            return True

    @property
    def depth(self) -> int:
        """Runtimes waiting to be written."""
        return len(self._pending)

    def flush(self) -> int:
        """Write every pending heartbeat in one transaction; returns the rows written."""
        with self._flush_lock:
            with self._lock:
                if not self._pending:
                    return 0
                batch, self._pending = self._pending, {}
            # In id order: every process then locks the rows it shares with another's flush in
            # the same order, and two flushes wait for each other instead of deadlocking (on
            # PostgreSQL a deadlock costs both a second, `deadlock_timeout`, and one a retry).
            ids = sorted(batch)
            seen_ms = [epoch_ms(batch[runtime_id][0]) for runtime_id in ids]
            sessions = [batch[runtime_id][1] for runtime_id in ids]
            started = time.monotonic()
            try:
                with self.database.write_connection() as connection:
                    if connection.dialect.name == "postgresql":
                        connection.exec_driver_sql(_FLUSH_POSTGRESQL_PLAN)
                        connection.exec_driver_sql(
                            _FLUSH_POSTGRESQL, _postgres_flush_parameters(ids, seen_ms, sessions)
                        )
                    else:
                        connection.exec_driver_sql(
                            _FLUSH_SQLITE, list(zip(seen_ms, sessions, ids, seen_ms, strict=True))
                        )
            except Exception:
                # Put the batch back (newer heartbeats win) so a database outage loses nothing.
                with self._lock:
                    for runtime_id, pending in batch.items():
                        self._pending.setdefault(runtime_id, pending)
                raise
            self.flushes += 1
            self.rows_written += len(ids)
            self.flush_seconds += time.monotonic() - started
            return len(ids)


class Flusher:
    """A daemon thread that flushes the liveness buffer every `interval` seconds."""

    def __init__(self, buffer: LivenessBuffer, *, interval: float) -> None:
        self.buffer = buffer
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleetplane-liveness", daemon=True)

    def start(self) -> None:
        """Begin flushing in the background."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.buffer.flush()
            except Exception:
                log.warning("liveness flush failed; retrying", exc_info=True)

    def stop(self) -> None:
        """Stop the thread and write what is still pending."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.buffer.flush()
        log.info(
            "liveness buffer stopped: flushes=%d rows=%d",
            self.buffer.flushes,
            self.buffer.rows_written,
        )


class Invalidatable(Protocol):
    """Something holding caches that a committed change makes stale."""

    def invalidate(self) -> None:
        """Forget every cached entry."""

    def forget_runtimes(self, runtime_ids: list[str]) -> None:
        """Forget what is cached about these runtimes only."""

    def refresh(self) -> None:
        """Re-read, in batches, the cached entries that are in use and getting old."""


# Audit actions that change one runtime and leave it in the database: a process need only
# forget that runtime (its identity, which carries its current credential hash), not every
# cache. Enrollments, credential exchanges and the sweep's archiving come and go all day in a
# large fleet; dropping every cache for each would make every heartbeat a database read.
# Anything else (a revocation, a purge, a key, a config or a policy change) drops everything.
RUNTIME_SCOPED_ACTIONS = frozenset(
    {
        "runtime.enroll",
        "runtime.reenroll",
        "runtime.authenticate",
        "runtime.preregister",
        "runtime.archive",
        "runtime.restore",
    }
)
# Audit actions that change nothing the caches hold (credentials of runtimes and workspace
# keys, runtimes, desired state): accounts, memberships, operator tokens, new orgs, workspaces
# and enrollment tokens (enrolling always takes the full route), alert settings, webhooks.
UNCACHED_ACTIONS = frozenset(
    {
        "user.create",
        "token.create",
        "org.create",
        "org.member.add",
        "org.member.update",
        "org.member.remove",
        "workspace.create",
        "workspace.member.add",
        "workspace.member.update",
        "workspace.member.remove",
        "enrollment.create",
        "alerts.thresholds",
        "webhook.create",
        "webhook.update",
        "webhook.delete",
        "webhook.ping",
    }
)
# Past this many changes in one poll, dropping everything is cheaper than sorting them out.
TARGETED_MAX = 200
# A sequence number below the newest that is not visible yet belongs to a transaction still
# committing (PostgreSQL hands them out before commit); it is looked for again for this long.
GAP_PATIENCE_SECONDS = 5.0


def runtimes_to_forget(changes: list[tuple[str, str]]) -> list[str] | None:
    """The runtime ids named by (action, target) changes, or None if any needs a full drop."""
    runtime_ids = []
    for action, target in changes:
        if action in UNCACHED_ACTIONS:
            continue
        kind, _, runtime_id = target.partition(":")
        if action not in RUNTIME_SCOPED_ACTIONS or kind != "runtime" or not runtime_id:
            return None
        runtime_ids.append(runtime_id)
    return runtime_ids


class ChangeWatcher:
    """Notices changes other processes committed, through the audit log.

    Every mutation writes its audit row in the same transaction as the change, so new audit
    rows appear exactly when changes are committed: one indexed read per interval per process
    keeps every cache of every process within `interval` of the database. A change to one
    runtime forgets that runtime, a change to nothing cached is let be, and any other change
    drops every cache.
    """

    def __init__(
        self,
        database: Database,
        target: Invalidatable,
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.target = target
        self.interval = interval
        self.seen: int | None = None
        self._clock = clock
        self._gaps: dict[int, float] = {}  # sequence not visible yet -> when first missed
        # Checks come from the watcher's thread and from requests that changed something.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleetplane-changes", daemon=True)

    def check(self) -> bool:
        """Read the audit rows committed since the last check and act on them; True if any."""
        with self._lock:
            return self._check()

    def _check(self) -> bool:
        with self.database.engine.connect() as connection:
            newest = connection.execute(select(func.max(AuditEntry.seq))).scalar() or 0
            if self.seen is None:
                self.seen = newest
                return False
            if newest == self.seen and not self._gaps:
                return False
            if newest - self.seen > TARGETED_MAX:
                self.seen, self._gaps = newest, {}
                self.target.invalidate()
                return True
            since = min([self.seen, *(gap - 1 for gap in self._gaps)])
            rows = connection.execute(
                select(AuditEntry.seq, AuditEntry.action, AuditEntry.target)
                .where(AuditEntry.seq > since, AuditEntry.seq <= newest)
                .order_by(AuditEntry.seq)
                .limit(TARGETED_MAX + 1)
            ).all()
        if len(rows) > TARGETED_MAX:
            self.seen, self._gaps = max(newest, self.seen), {}
            self.target.invalidate()
            return True
        fresh = [row for row in rows if row.seq > self.seen or row.seq in self._gaps]
        self._note_gaps({row.seq for row in rows}, after=self.seen, newest=newest)
        self.seen = max(newest, self.seen)
        if not fresh:
            return False
        runtime_ids = runtimes_to_forget([(row.action, row.target) for row in fresh])
        if runtime_ids is None:
            self.target.invalidate()
        elif runtime_ids:
            self.target.forget_runtimes(runtime_ids)
        return True

    def _note_gaps(self, visible: set[int], *, after: int, newest: int) -> None:
        now = self._clock()
        waiting = {seq: since for seq, since in self._gaps.items() if seq not in visible}
        for seq in range(after + 1, newest + 1):
            if seq not in visible:
                waiting.setdefault(seq, now)
        # A sequence number whose transaction rolled back never appears: stop looking.
        self._gaps = {
            seq: since for seq, since in waiting.items() if now - since < GAP_PATIENCE_SECONDS
        }

    def start(self) -> None:
        """Begin watching in the background."""
        self.check()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:
                # Without the database nothing is known to have changed; drop what we hold.
                self.target.invalidate()
                log.warning("change watch failed; caches cleared", exc_info=True)
                continue
            try:
                self.target.refresh()
            except Exception:
                # Entries then expire as they would have: a miss re-reads them one by one.
                log.warning("cache refresh failed", exc_info=True)

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
