"""The fleet sweep: every SWEEP_SECONDS it records status transitions, evaluates workspace
thresholds, archives, restores and purges runtimes, and applies retention.

Several server processes may share one PostgreSQL database; each runs a sweeper thread, and
exactly one sweep runs per interval. A claim transaction takes a PostgreSQL advisory lock
(`pg_try_advisory_xact_lock`) and checks when the last sweep started; each workspace is then
swept in its own short transaction under a per-workspace advisory lock, reading the stored
states only after taking it, so that even overlapping sweeps record every transition once.
On SQLite, transactions that write start with BEGIN IMMEDIATE and so run one at a time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from fleetplane.services import alerts, history, lifecycle
from fleetplane.services.fleet import FleetRules
from fleetplane.services.lifecycle import Retention
from fleetplane.store.db import Database
from fleetplane.store.models import SweepRun, Webhook, Workspace

log = logging.getLogger("fleetplane.sweeper")

SWEEP_NAME = "fleet"
# Advisory lock keys: a namespace ("FPSW") and, for workspaces, the hash of the id.
LOCK_NAMESPACE = 0x46505357
CLAIM_KEY = 0
# Another process's sweep counts as this interval's if it started less than this share of
# the interval ago (timers in different processes drift a little).
CLAIM_SLACK = 0.9


@dataclass(frozen=True)
class SweepPolicy:
    """What a sweep needs from settings."""

    rules: FleetRules
    retention: Retention
    interval: timedelta
    # Changed runtimes recorded per transaction, and the pause between two such transactions:
    # at least `pause_seconds`, and `rest_ratio` times as long as the chunk took.
    chunk: int = 500
    pause_seconds: float = 0.02
    rest_ratio: float = 2.0


@dataclass
class SweepReport:
    """What one sweep did (`ran` is False when another process had this interval's sweep)."""

    ran: bool
    workspaces: int = 0
    skipped_workspaces: int = 0
    transitions: int = 0
    crossings: int = 0
    archived: int = 0
    restored: int = 0
    purged: int = 0
    pruned: int = 0
    duration_seconds: float = 0.0

    def add(self, other: WorkspaceSweep) -> None:
        """Count one workspace's results."""
        self.workspaces += 1
        self.transitions += other.transitions
        self.crossings += other.crossings
        self.archived += other.archived
        self.restored += other.restored
        self.purged += other.purged
        self.pruned += other.pruned


@dataclass
class WorkspaceSweep:
    """What the sweep did in one workspace."""

    transitions: int = 0
    crossings: int = 0
    archived: int = 0
    restored: int = 0
    purged: int = 0
    pruned: int = 0


def _try_lock(session: Session, key: str | None) -> bool:
    """Take a transaction-scoped advisory lock on PostgreSQL; SQLite is serial already."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    if key is None:
        statement = text("SELECT pg_try_advisory_xact_lock(:ns, :key)")
        return bool(session.scalar(statement, {"ns": LOCK_NAMESPACE, "key": CLAIM_KEY}))
    statement = text("SELECT pg_try_advisory_xact_lock(:ns, hashtext(:key))")
    return bool(session.scalar(statement, {"ns": LOCK_NAMESPACE, "key": key}))


def claim(database: Database, *, now: datetime, interval: timedelta, force: bool) -> bool:
    """Whether this process runs this interval's sweep; if so, mark it started."""
    with database.unit_of_work() as session:
        if not _try_lock(session, None):
            return False
        run = session.get(SweepRun, SWEEP_NAME)
        if run is None:
            session.add(SweepRun(name=SWEEP_NAME, last_started_at=now, last_duration_ms=0, runs=1))
            return True
        if not force and now - run.last_started_at < interval * CLAIM_SLACK:
            return False
        run.last_started_at = now
        run.runs += 1
        return True


def _hooks(session: Session, workspace: Workspace) -> list[Webhook]:
    return list(
        session.scalars(
            select(Webhook).where(Webhook.workspace_id == workspace.id, Webhook.active.is_(True))
        )
    )


def sweep_lifecycle(
    session: Session, *, workspace: Workspace, policy: SweepPolicy, now: datetime
) -> WorkspaceSweep:
    """Restore returned runtimes, archive dormant ones and purge expired archives."""
    done = WorkspaceSweep()
    hooks = _hooks(session, workspace)
    retention = policy.retention
    restored = lifecycle.restore_returned(session, workspace=workspace, now=now)
    archived = lifecycle.archive_dormant(
        session, workspace=workspace, rules=policy.rules, retention=retention, now=now
    )
    for changes, is_archive in ((restored, False), (archived, True)):
        done.transitions += len(
            history.record_lifecycle(
                session,
                workspace=workspace,
                changes=changes,
                archived=is_archive,
                hooks=hooks,
                rules=policy.rules,
                retention=retention,
                now=now,
            )
        )
    done.restored, done.archived = len(restored), len(archived)
    done.purged = len(
        lifecycle.purge_archived(session, workspace=workspace, retention=retention, now=now)
    )
    return done


def sweep_states(
    session: Session,
    *,
    workspace: Workspace,
    policy: SweepPolicy,
    now: datetime,
    after: str | None,
) -> tuple[int, str | None]:
    """Record the transitions of the next chunk of changed runtimes (after runtime id `after`).

    Returns the transitions recorded and the last runtime id of the chunk, or None when the
    workspace has no more changed runtimes.
    """
    observed = history.changed_states(
        session,
        workspace=workspace,
        rules=policy.rules,
        now=now,
        after=after,
        limit=policy.chunk,
    )
    recorded = history.record_changes(
        session,
        workspace=workspace,
        observed=observed,
        thresholds=policy.rules.thresholds,
        hooks=_hooks(session, workspace) if observed else [],
        now=now,
    )
    last = observed[-1].runtime_id if len(observed) == policy.chunk else None
    return len(recorded), last


def sweep_thresholds(
    session: Session, *, workspace: Workspace, policy: SweepPolicy, now: datetime
) -> WorkspaceSweep:
    """Evaluate the workspace's alert thresholds and apply retention."""
    done = WorkspaceSweep()
    rules = alerts.get_rules(session, workspace_id=workspace.id)
    if rules is not None:
        summary = lifecycle.workspace_summary(
            session, workspace=workspace, rules=policy.rules, now=now
        )
        done.crossings = len(
            alerts.record_crossings(
                session,
                workspace=workspace,
                rules=rules,
                summary=summary,
                hooks=_hooks(session, workspace),
                now=now,
            )
        )
    done.pruned = lifecycle.prune_expired(
        session, workspace_id=workspace.id, retention=policy.retention, now=now
    )
    return done


def _locked_workspace(session: Session, workspace_id: str) -> Workspace | bool | None:
    """The workspace under its sweep lock; False if another sweep holds it, None if deleted."""
    if not _try_lock(session, workspace_id):
        return False
    return session.get(Workspace, workspace_id)


def sweep_workspace_in_steps(
    database: Database, *, workspace_id: str, policy: SweepPolicy, now: datetime
) -> WorkspaceSweep | None:
    """Sweep one workspace in short transactions; None if another sweep holds it.

    The status states go a chunk of runtimes per transaction with a pause in between, so a
    fleet-wide change (the first sweep of a large fleet, a network coming back) never holds
    the write lock, or this process's interpreter, for long while heartbeats are answered.
    """
    with database.unit_of_work() as session:
        workspace = _locked_workspace(session, workspace_id)
        if not isinstance(workspace, Workspace):
            return None
        done = sweep_lifecycle(session, workspace=workspace, policy=policy, now=now)
    after: str | None = None
    while True:
        chunk_started = time.monotonic()
        with database.unit_of_work() as session:
            workspace = _locked_workspace(session, workspace_id)
            if not isinstance(workspace, Workspace):
                return done  # deleted, or another sweep took over: it records the rest
            recorded, after = sweep_states(
                session, workspace=workspace, policy=policy, now=now, after=after
            )
            done.transitions += recorded
        if after is None:
            break
        # Resting twice as long as the chunk took, a backlog of changes uses at most a third
        # of this process's interpreter and of the database's write lock.
        took = time.monotonic() - chunk_started
        time.sleep(max(policy.pause_seconds, policy.rest_ratio * took))
    with database.unit_of_work() as session:
        workspace = _locked_workspace(session, workspace_id)
        if isinstance(workspace, Workspace):
            thresholds = sweep_thresholds(session, workspace=workspace, policy=policy, now=now)
            done.crossings, done.pruned = thresholds.crossings, thresholds.pruned
    return done


def sweep_once(
    database: Database, *, policy: SweepPolicy, now: datetime, force: bool = False
) -> SweepReport:
    """Run this interval's sweep unless another process has; `force` ignores the interval."""
    started = time.monotonic()
    if not claim(database, now=now, interval=policy.interval, force=force):
        return SweepReport(ran=False)
    report = SweepReport(ran=True)
    with database.read() as session:
        workspace_ids = list(session.scalars(select(Workspace.id).order_by(Workspace.id)))
    for workspace_id in workspace_ids:
        done = sweep_workspace_in_steps(database, workspace_id=workspace_id, policy=policy, now=now)
        if done is None:
            report.skipped_workspaces += 1  # another sweep is on it right now
        else:
            report.add(done)
    report.duration_seconds = time.monotonic() - started
    with database.unit_of_work() as session:
        run = session.get(SweepRun, SWEEP_NAME)
        if run is not None:
            run.last_duration_ms = int(report.duration_seconds * 1000)
    return report


def last_sweep(database: Database) -> SweepRun | None:
    """The cluster's most recent sweep, whichever process ran it."""
    with database.read() as session:
        return session.get(SweepRun, SWEEP_NAME)
