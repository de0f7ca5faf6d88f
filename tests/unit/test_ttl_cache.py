"""The hot path's TTL cache: bounded lifetimes, spread expiry, bounded size."""

from __future__ import annotations

import gc
from types import SimpleNamespace
from typing import Any

from fleetplane.services.hotpath import RuntimeIdentity, TtlCache, identity_from_row


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def refreshing(*, ttl: float, max_entries: int = 10) -> tuple[Ticks, TtlCache[Any, int]]:
    """A refresh-ahead cache without spread, on a clock the test moves."""
    ticks = Ticks()
    cache: TtlCache[Any, int] = TtlCache(
        ttl=ttl, max_entries=max_entries, clock=ticks, spread=0, refresh_ahead=True
    )
    return ticks, cache


def test_entries_live_between_half_and_all_of_the_ttl_and_expire_spread_out() -> None:
    ticks = Ticks()
    cache: TtlCache[int, str] = TtlCache(ttl=100, max_entries=10_000, clock=ticks)
    for key in range(1000):
        cache.put(key, f"v{key}")
    ticks.now += 49.9
    assert all(cache.get(key) == f"v{key}" for key in range(1000))  # none before half
    alive_over_time = []
    for _ in range(4):  # at 60, 70, 80 and 90 % of the ttl: about 800, 600, 400, 200 alive
        ticks.now += 10
        alive_over_time.append(sum(cache.get(key) is not None for key in range(1000)))
    ticks.now += 10.2  # now past the full ttl
    assert all(cache.get(key) is None for key in range(1000))
    # Expiry is spread over the second half of the lifetime, not all at one moment.
    assert alive_over_time == sorted(alive_over_time, reverse=True)
    assert 0 < alive_over_time[-1] < alive_over_time[0] < 1000


def test_no_spread_means_exactly_the_ttl() -> None:
    ticks = Ticks()
    cache: TtlCache[str, int] = TtlCache(ttl=5, max_entries=10, clock=ticks, spread=0)
    cache.put("a", 1)
    ticks.now += 4.999
    assert cache.get("a") == 1
    ticks.now += 0.001
    assert cache.get("a") is None
    assert len(cache) == 0


def test_a_full_cache_starts_over_and_clear_forgets_everything() -> None:
    cache: TtlCache[int, int] = TtlCache(ttl=60, max_entries=3)
    for key in range(3):
        cache.put(key, key)
    assert len(cache) == 3
    cache.put(3, 3)  # full: everything else is dropped, memory stays bounded
    assert len(cache) == 1
    assert cache.get(3) == 3
    cache.clear()
    assert cache.get(3) is None


def test_refresh_ahead_names_entries_read_past_half_their_life() -> None:
    ticks, cache = refreshing(ttl=10)
    cache.put("used", 1)
    cache.put("idle", 2)
    ticks.now += 4.9
    assert cache.get("used") == 1
    assert cache.take_due(10) == []  # not yet half its life
    ticks.now += 0.2
    assert cache.get("used") == 1  # still served while due
    assert cache.take_due(10) == ["used"]  # only what was read: idle entries just expire
    assert cache.take_due(10) == []
    cache.get("used")
    cache.put("used", 3)  # refreshed: a new life, no longer due
    assert cache.take_due(10) == []
    ticks.now += 5.0
    assert cache.get("idle") is None
    assert cache.get("used") == 3


def test_an_entry_read_only_early_in_its_life_is_still_renewed() -> None:
    # A runtime whose heartbeats reach this process in a burst, then not again for a while,
    # is in use: its entry is renewed at half its life rather than left to expire into a
    # database read on the request path.
    ticks, cache = refreshing(ttl=100)
    cache.put("early", 1)
    ticks.now += 10
    assert cache.get("early") == 1
    ticks.now += 39.9
    assert cache.take_due(10) == []
    ticks.now += 0.2
    assert cache.take_due(10) == ["early"]


def test_an_entry_first_read_after_half_its_life_is_renewed_at_the_last_look() -> None:
    ticks, cache = refreshing(ttl=100)
    cache.put("late", 1)
    cache.put("idle", 2)
    ticks.now += 50.1
    assert cache.take_due(10) == []  # neither was read in its first half
    ticks.now += 20
    assert cache.get("late") == 1
    assert cache.take_due(10) == []  # the last look is at nine tenths of the life
    ticks.now += 19.8
    assert cache.take_due(10) == []
    ticks.now += 0.2
    assert cache.take_due(10) == ["late"]
    cache.put("late", 3)  # renewed: a new life of its own
    ticks.now += 10
    assert cache.take_due(10) == []  # the idle entry is never due: it expires
    assert cache.get("idle") is None
    assert cache.get("late") == 3


def test_an_entry_read_in_its_last_life_is_renewed_until_idle_for_the_ttl() -> None:
    # With several worker processes, a runtime's heartbeats reach each one only now and then:
    # an entry read once is still in use through a life without reads, and is renewed until
    # nobody has read it for the whole ttl.
    ticks, cache = refreshing(ttl=100)
    cache.put("seen", 1)
    cache.put("never", 2)
    ticks.now += 10
    assert cache.get("seen") == 1  # its only read
    ticks.now += 40.1
    assert cache.take_due(10) == ["seen"]
    cache.put("seen", 3)  # renewed at 50.1: no read in this life
    ticks.now += 50  # 100.1: half of the new life, 90.1 s after the read
    assert cache.take_due(10) == ["seen"]
    cache.put("seen", 4)  # renewed at 100.1
    ticks.now += 50  # 150.1: the read is 140.1 s old, past the ttl
    assert cache.take_due(10) == []
    ticks.now += 40  # 190.1: the last look finds it idle too
    assert cache.take_due(10) == []
    ticks.now += 10
    assert cache.get("seen") is None  # expired: a runtime that went away leaves the cache
    assert cache.get("never") is None
    assert cache._read == {}  # nothing is kept for entries that are gone


def test_an_entry_a_request_needed_counts_as_read_when_put() -> None:
    # A runtime's first heartbeat in a process misses and its entry is put for it: that is a
    # use, though nothing has read the entry yet. A renewal's put is not.
    ticks, cache = refreshing(ttl=100)
    cache.put("missed", 1, used=True)
    cache.put("renewed", 2)
    ticks.now += 50.1
    assert cache.take_due(10) == ["missed"]
    cache.put("missed", 3)  # the renewal at 50.1
    ticks.now += 50  # 100.1: the put that was a use is now older than the ttl
    assert cache.take_due(10) == []
    ticks.now += 40
    assert cache.take_due(10) == []
    ticks.now += 10
    assert cache.get("missed") is None
    assert cache.get("renewed") is None


def test_entries_put_over_and_over_keep_the_refresh_schedule_small() -> None:
    ticks, cache = refreshing(ttl=100)
    for n in range(10_000):
        cache.put(n % 5, n)
    assert len(cache) == 5
    assert len(cache._looks) <= 2 * cache.max_entries  # not one look per put
    # What is left of the schedule still renews every entry in use, once.
    for key in range(5):
        assert cache.get(key) == 9_995 + key
    ticks.now += 50.1
    assert sorted(cache.take_due(10)) == [0, 1, 2, 3, 4]
    assert cache.take_due(10) == []


def test_take_due_is_bounded() -> None:
    ticks, cache = refreshing(ttl=10, max_entries=100)
    for key in range(20):
        cache.put(key, key)
    ticks.now += 6
    for key in range(20):
        cache.get(key)
    first = cache.take_due(15)
    rest = cache.take_due(15)
    assert len(first) == 15
    assert sorted(first + rest) == list(range(20))


def test_records_are_kept_out_of_the_collectors_passes() -> None:
    # A fleet-sized cache of runtime identities must not be walked by every full collection.
    cache: TtlCache[tuple[str, str, str], RuntimeIdentity] = TtlCache(
        ttl=100, max_entries=10_000, record=RuntimeIdentity
    )
    identities = [
        RuntimeIdentity(f"r{n}", "ws", "3.12.6", "h" * 64, True, f"s{n}") for n in range(500)
    ]
    for identity in identities:
        cache.put(("ws", "id", identity.runtime_id), identity)
    # Collections untrack the tuples they find holding only untracked values; an entry made
    # just before a collection may need the next one (its inner tuple is untracked first).
    gc.collect()
    gc.collect()
    stored = [entry for entry in gc.get_referents(cache._entries) if isinstance(entry, tuple)]
    assert len(stored) == 1000  # 500 keys and 500 entries
    assert not any(gc.is_tracked(entry) for entry in stored)
    # What comes out is the record again, equal to what went in.
    first = cache.get(("ws", "id", "r0"))
    assert isinstance(first, RuntimeIdentity)
    assert first == identities[0]
    assert first.last_session_id == "s0"


def test_identities_share_what_runtimes_have_in_common() -> None:
    def row(runtime_id: str) -> SimpleNamespace:
        # Each value built anew, as a database driver returns them row by row.
        return SimpleNamespace(
            id=runtime_id,
            workspace_id="".join(["ws-", "0" * 29]),
            version="".join(["3.12", ".6"]),
            observed_config_hash="".join(["a" * 32, "b" * 32]),
            last_heartbeat_at=None,
            last_session_id=None,
            apply_failed_hash="".join(["c" * 32, "d" * 32]),
            credential_hash=None,
        )

    first, second = identity_from_row(row("r1")), identity_from_row(row("r2"))
    for field in ("workspace_id", "version", "observed_config_hash", "apply_failed_hash"):
        assert getattr(first, field) == getattr(second, field)
        assert getattr(first, field) is getattr(second, field), field
    assert first.runtime_id != second.runtime_id
