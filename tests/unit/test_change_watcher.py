"""The change watcher: a change to one runtime forgets that runtime, a change to nothing cached
is let be, anything else drops every cache, and a sequence number committed late is not
missed."""

from __future__ import annotations

from datetime import UTC, datetime

from fleetplane.services.hotpath import GAP_PATIENCE_SECONDS, TARGETED_MAX, ChangeWatcher
from fleetplane.store.db import Database
from fleetplane.store.models import AuditEntry

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Target:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def invalidate(self) -> None:
        self.calls.append(("invalidate", []))

    def forget_runtimes(self, runtime_ids: list[str]) -> None:
        self.calls.append(("forget", runtime_ids))

    def refresh(self) -> None:
        pass


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _audit(database: Database, action: str, target: str, *, seq: int | None = None) -> None:
    with database.unit_of_work() as session:
        entry = AuditEntry(actor="test", action=action, target=target, created_at=NOW)
        if seq is not None:
            entry.seq = seq
        session.add(entry)


def _newest(database: Database) -> int:
    with database.read() as session:
        return max([0, *(entry.seq for entry in session.query(AuditEntry))])


def test_runtime_changes_forget_those_runtimes_and_other_changes_drop_everything(
    database: Database,
) -> None:
    target = Target()
    watcher = ChangeWatcher(database, target, interval=1)
    assert watcher.check() is False  # the first read only learns where the log is
    assert watcher.check() is False
    _audit(database, "runtime.authenticate", "runtime:r1")
    _audit(database, "runtime.enroll", "runtime:r2")
    assert watcher.check() is True
    assert target.calls == [("forget", ["r1", "r2"])]
    assert watcher.check() is False  # nothing new: nothing done

    _audit(database, "runtime.archive", "runtime:r3")
    _audit(database, "runtime.revoke", "runtime:r4")  # gone from the database: drop everything
    assert watcher.check() is True
    assert target.calls[-1] == ("invalidate", [])

    _audit(database, "workspace.update", "workspace:w1")
    assert watcher.check() is True
    assert target.calls[-1] == ("invalidate", [])

    for n in range(TARGETED_MAX + 1):  # a burst: cheaper to drop everything
        _audit(database, "runtime.enroll", f"runtime:b{n}")
    calls = len(target.calls)
    assert watcher.check() is True
    assert target.calls[calls:] == [("invalidate", [])]


def test_a_sequence_committed_late_is_still_acted_on(database: Database) -> None:
    target = Target()
    ticks = Ticks()
    watcher = ChangeWatcher(database, target, interval=1, clock=ticks)
    _audit(database, "runtime.enroll", "runtime:r0")
    watcher.check()
    base = _newest(database)
    # A later transaction commits first: base + 1 is handed out but not visible yet.
    _audit(database, "runtime.enroll", "runtime:r2", seq=base + 2)
    assert watcher.check() is True
    assert target.calls == [("forget", ["r2"])]
    # The earlier one commits: a revocation. The newest sequence did not move, yet it is seen.
    _audit(database, "runtime.revoke", "runtime:r1", seq=base + 1)
    assert watcher.check() is True
    assert target.calls[-1] == ("invalidate", [])
    assert watcher.check() is False

    # A sequence number whose transaction rolled back never shows: given up after a while.
    _audit(database, "runtime.enroll", "runtime:r4", seq=base + 4)
    watcher.check()
    ticks.now += GAP_PATIENCE_SECONDS / 2
    assert watcher.check() is False
    ticks.now += GAP_PATIENCE_SECONDS
    watcher.check()
    _audit(database, "workspace.update", "workspace:w", seq=base + 3)
    calls = len(target.calls)
    assert watcher.check() is False  # no longer looked for
    assert target.calls[calls:] == []


def test_changes_to_nothing_cached_are_let_be(database: Database) -> None:
    target = Target()
    watcher = ChangeWatcher(database, target, interval=1)
    watcher.check()
    _audit(database, "workspace.member.add", "workspace:w1")
    _audit(database, "alerts.thresholds", "workspace:w1")
    assert watcher.check() is True  # seen, and nothing to do
    assert target.calls == []
    _audit(database, "user.create", "user:u1")
    _audit(database, "runtime.preregister", "runtime:r1")
    assert watcher.check() is True
    assert target.calls == [("forget", ["r1"])]
    _audit(database, "webhook.create", "webhook:h1")
    _audit(database, "api_key.regenerate", "workspace:w1")  # still drops everything
    assert watcher.check() is True
    assert target.calls[-1] == ("invalidate", [])
