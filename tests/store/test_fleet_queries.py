"""The SQL form of the fleet rules agrees with the pure rules, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from fleetplane.domain.fleet import Drift, Health, HealthThresholds, drift, health
from fleetplane.domain.versions import compatibility, version_sort_key
from fleetplane.store.db import Database
from fleetplane.store.fleet_queries import (
    RuleContext,
    compatibility_expression,
    drift_expression,
    drift_reason_expression,
    health_expression,
    state_counts,
    state_counts_query,
)
from fleetplane.store.models import Org, Runtime, Workspace

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
DESIRED = "d" * 64
OTHER = "e" * 64
CONTEXT = RuleContext(
    now=NOW,
    thresholds=HealthThresholds(300, 3600),
    minimum_version="3.4.0",
    full_sync_version="3.6.0",
    desired_config_hash=DESIRED,
)

runtime_states = st.fixed_dictionaries(
    {
        "age_ms": st.one_of(
            st.none(),
            st.sampled_from([0, 299_999, 300_000, 3_600_000, 3_600_001]),
            st.integers(0, 10_000_000),
        ),
        "version": st.one_of(
            st.none(),
            st.sampled_from(
                ["3.3.9", "3.4.0-rc.1", "3.4.0", "3.5.1", "3.6.0-rc.1", "3.6.0", "3.12.6", "10.0.0"]
            ),
        ),
        "observed": st.sampled_from([None, DESIRED, OTHER]),
        "failed": st.sampled_from([None, DESIRED, OTHER]),
    }
)


def _seed(database: Database) -> str:
    with database.unit_of_work() as session:
        org = Org(name="o", created_at=NOW)
        session.add(org)
        session.flush()
        workspace = Workspace(
            org_id=org.id,
            name="w",
            policy_mode="authoritative",
            config_revision=1,
            config_hash=DESIRED,
            config_updated_at=NOW,
            created_at=NOW,
        )
        session.add(workspace)
        session.flush()
        return workspace.id


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(states=st.lists(runtime_states, min_size=1, max_size=25))
def test_sql_rules_match_domain_rules(database: Database, states: list[dict[str, object]]) -> None:
    with database.unit_of_work() as session:
        workspace_id = session.scalar(select(Workspace.id))
    workspace_id = workspace_id or _seed(database)
    expected = []
    with database.unit_of_work() as session:
        session.execute(delete(Runtime))
        for index, state in enumerate(states):
            age_ms = state["age_ms"]
            last = NOW - timedelta(milliseconds=age_ms) if isinstance(age_ms, int) else None
            version = state["version"] if isinstance(state["version"], str) else None
            session.add(
                Runtime(
                    workspace_id=workspace_id,
                    agent_id=f"a{index:03d}",
                    enrolled_at=NOW,
                    last_heartbeat_at=last,
                    version=version,
                    version_key=version_sort_key(version) if version else None,
                    observed_config_hash=state["observed"],
                    apply_failed_hash=state["failed"],
                )
            )
            compat = compatibility(version, minimum="3.4.0", full_sync="3.6.0")
            drift_value, reason = drift(
                has_heartbeat=last is not None,
                compatibility=compat,
                observed_config_hash=state["observed"],  # type: ignore[arg-type]
                apply_failed_hash=state["failed"],  # type: ignore[arg-type]
                desired_config_hash=DESIRED,
            )
            expected.append(
                (
                    f"a{index:03d}",
                    health(last, now=NOW, thresholds=CONTEXT.thresholds).value,
                    compat.value,
                    drift_value.value,
                    reason.value if reason else None,
                )
            )
    with database.read() as session:
        rows = session.execute(
            select(
                Runtime.agent_id,
                health_expression(CONTEXT),
                compatibility_expression(CONTEXT),
                drift_expression(CONTEXT),
                drift_reason_expression(CONTEXT),
            ).order_by(Runtime.agent_id)
        ).all()
        counted = state_counts(
            session.execute(
                state_counts_query(CONTEXT, [Runtime.workspace_id == workspace_id])
            ).one()
        )
        nothing = state_counts(
            session.execute(state_counts_query(CONTEXT, [Runtime.workspace_id == "none"])).one()
        )
    assert [tuple(row) for row in rows] == expected
    assert counted.health == {h: sum(e[1] == h.value for e in expected) for h in Health}
    assert counted.drift == {d: sum(e[3] == d.value for e in expected) for d in Drift}
    assert counted.on_desired == sum(state["observed"] == DESIRED for state in states)
    assert sum(counted.health.values()) == sum(counted.drift.values()) == len(states)
    assert nothing == state_counts((0,) * 8)
    assert set(nothing.health.values()) == set(nothing.drift.values()) == {0}
