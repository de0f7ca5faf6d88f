"""Observe's one grouped query agrees with the fleet surface's summaries, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, event, select

from fleetplane.domain.fleet import FleetSummary, HealthThresholds
from fleetplane.domain.versions import version_sort_key
from fleetplane.services import fleet, observe, workspaces
from fleetplane.services.fleet import FleetRules
from fleetplane.store.db import Database
from fleetplane.store.models import Org, Runtime, User, Workspace
from tests.browser import seed

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
RULES = FleetRules(
    thresholds=HealthThresholds(300, 3600), minimum_version="3.4.0", full_sync_version="3.6.0"
)
# Each workspace wants a different hash, so a rule that compared against the wrong
# workspace's desired hash would miscount.
DESIRED = ["a" * 64, "b" * 64, "c" * 64, "d" * 64]

runtime_states = st.fixed_dictionaries(
    {
        "workspace": st.integers(0, len(DESIRED) - 1),
        "age_ms": st.one_of(
            st.none(),
            st.sampled_from([0, 299_999, 300_000, 3_600_000, 3_600_001]),
            st.integers(0, 10_000_000),
        ),
        "version": st.one_of(
            st.none(), st.sampled_from(["3.3.9", "3.4.0", "3.5.1", "3.6.0-rc.1", "3.6.0", "3.12.6"])
        ),
        # Indexes into DESIRED (any workspace's hash) or None.
        "observed": st.one_of(st.none(), st.integers(0, len(DESIRED) - 1)),
        "failed": st.one_of(st.none(), st.integers(0, len(DESIRED) - 1)),
    }
)


def _workspaces(database: Database) -> list[str]:
    """Four workspaces with distinct desired hashes (made once per database)."""
    with database.unit_of_work() as session:
        existing = list(session.scalars(select(Workspace.id).order_by(Workspace.name)))
        if existing:
            return existing
        org = Org(name="o", created_at=NOW)
        session.add(org)
        session.flush()
        ids = []
        for index, digest in enumerate(DESIRED):
            workspace = Workspace(
                org_id=org.id,
                name=f"w{index}",
                policy_mode="authoritative",
                config_revision=1,
                config_hash=digest,
                config_updated_at=NOW,
                created_at=NOW,
            )
            session.add(workspace)
            session.flush()
            ids.append(workspace.id)
        return ids


def _fleet_page(database: Database, workspace_id: str) -> dict[str, Any]:
    with database.read() as session:
        workspace = session.get(Workspace, workspace_id)
        assert workspace is not None
        page = fleet.fleet_page(
            session,
            desired=workspaces.desired_state(session, workspace=workspace),
            rules=RULES,
            now=NOW,
            health=None,
            drift=None,
            text=None,
            limit=1,
            cursor=None,
        )
    return page


def _fleet_summary(database: Database, workspace_id: str) -> dict[str, int]:
    summary: dict[str, int] = dict(_fleet_page(database, workspace_id)["summary"])
    summary.pop("archived")  # the observe posture counts visible runtimes only
    return summary


@contextmanager
def count_statements(database: Database) -> Iterator[list[str]]:
    """Every SQL statement the engine runs inside the block (BEGIN included on SQLite)."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(database.engine, "before_cursor_execute", record)


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(states=st.lists(runtime_states, min_size=0, max_size=30))
def test_grouped_counts_equal_fleet_summaries(
    database: Database, states: list[dict[str, Any]]
) -> None:
    ids = _workspaces(database)
    with database.unit_of_work() as session:
        session.execute(delete(Runtime))
        for index, state in enumerate(states):
            age = state["age_ms"]
            version = state["version"]
            session.add(
                Runtime(
                    workspace_id=ids[state["workspace"]],
                    agent_id=f"a{index:03d}",
                    enrolled_at=NOW,
                    last_heartbeat_at=NOW - timedelta(milliseconds=age)
                    if age is not None
                    else None,
                    version=version,
                    version_key=version_sort_key(version) if version else None,
                    observed_config_hash=None
                    if state["observed"] is None
                    else DESIRED[state["observed"]],
                    apply_failed_hash=None if state["failed"] is None else DESIRED[state["failed"]],
                )
            )
    with database.read() as session, count_statements(database) as statements:
        grouped = observe.posture_summaries(session, rules=RULES, now=NOW, workspace_ids=ids)
    grouping = [sql for sql in statements if "GROUP BY" in sql]
    assert len(grouping) == 1  # one GROUP BY for every workspace, never one per workspace
    assert len([sql for sql in statements if sql.lstrip().upper().startswith("SELECT")]) <= 2
    with database.read() as session:
        # A caller who sees only some workspaces gets them through the filtered form.
        some = observe.posture_summaries(session, rules=RULES, now=NOW, workspace_ids=ids[1:3])
    assert set(some) == set(ids[1:3])
    for workspace_id in ids:
        page = _fleet_page(database, workspace_id)
        expected = {key: value for key, value in page["summary"].items() if key != "archived"}
        assert grouped[workspace_id].summary.to_api() == expected
        # The rollout count is the fleet surface's: runtimes on this workspace's own hash.
        assert grouped[workspace_id].on_current == page["rollout"]["onRevision"]
        if workspace_id in some:
            assert some[workspace_id].summary.to_api() == expected
            assert some[workspace_id].on_current == page["rollout"]["onRevision"]


def test_observe_shows_what_the_user_may_see_with_totals_and_attention(
    database: Database,
) -> None:
    orgs = seed.two_orgs(database, now=NOW)
    with database.unit_of_work() as session:
        alice = session.scalar(select(User).where(User.email == "alice@a.test"))
        vera = session.scalar(select(User).where(User.email == "vera@a.test"))
        assert alice is not None
        assert vera is not None
        everything = observe.observe(
            session, user=alice, rules=RULES, now=NOW, org_id=None, attention_only=False, page=1
        )
        attention = observe.observe(
            session, user=alice, rules=RULES, now=NOW, org_id=None, attention_only=True, page=1
        )
        viewer = observe.observe(
            session, user=vera, rules=RULES, now=NOW, org_id=None, attention_only=False, page=1
        )
        foreign = observe.observe(
            session,
            user=alice,
            rules=RULES,
            now=NOW,
            org_id=orgs.b_only.org_id,
            attention_only=False,
            page=1,
        )
    rows = {row.workspace_id: row for group in everything.groups for row in group.rows}
    assert set(rows) == {orgs.a_mixed.id, orgs.a_aligned.id}
    for workspace_id, row in rows.items():
        assert row.summary.to_api() == _fleet_summary(database, workspace_id)
    assert everything.totals == observe.add_summaries([r.summary for r in rows.values()])
    assert everything.totals.total == len(seed.MIXED_FLEET) + len(seed.ALL_ALIGNED)
    assert [r.workspace_id for g in attention.groups for r in g.rows] == [orgs.a_mixed.id]
    assert attention.totals.aligned == seed.MIXED_COUNTS["aligned"]
    assert [r.workspace_id for g in viewer.groups for r in g.rows] == [orgs.a_mixed.id]
    assert viewer.orgs == [(orgs.a_mixed.org_id, "Org Alpha")]
    assert foreign.groups == []
    assert foreign.totals == FleetSummary()


def test_observe_pages_many_workspaces_sorted_by_org_then_name(database: Database) -> None:
    with database.unit_of_work() as session:
        owner = seed.user(session, "o@x.test", now=NOW, superuser=True)
        for org_name in ("zeta", "Alpha"):
            org = seed.org(session, org_name, owner=owner, now=NOW)
            for index in range(30):
                workspaces.create_workspace(
                    session,
                    org=org,
                    name=f"{org_name}-{index:02d}",
                    policy_mode=None,
                    dev_override_until=None,
                    actor="t",
                    now=NOW,
                )
    with database.unit_of_work() as session:
        user = session.scalar(select(User).where(User.email == "o@x.test"))
        assert user is not None
        pages = [
            observe.observe(
                session,
                user=user,
                rules=RULES,
                now=NOW,
                org_id=None,
                attention_only=False,
                page=number,
                page_size=25,
            )
            for number in (1, 2, 3, 4)
        ]
    names = [row.name for view in pages[:3] for group in view.groups for row in group.rows]
    assert names == [f"Alpha-{i:02d}" for i in range(30)] + [f"zeta-{i:02d}" for i in range(30)]
    assert [view.page_count for view in pages] == [3, 3, 3, 3]
    assert [group.org_name for group in pages[1].groups] == ["Alpha", "zeta"]
    assert pages[3].page == 3  # past the end shows the last page
