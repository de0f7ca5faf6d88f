"""Health, compatibility, drift and summary rules (SPEC 3.1, 3.2, 3.4, 3.5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import semver
from hypothesis import given
from hypothesis import strategies as st

from fleetplane.domain.errors import Invalid
from fleetplane.domain.fleet import (
    Drift,
    DriftReason,
    FleetSummary,
    Health,
    HealthThresholds,
    drift,
    health,
    heartbeat_age_seconds,
)
from fleetplane.domain.versions import (
    Compatibility,
    compatibility,
    normalise_reported_version,
    parse_version,
    version_sort_key,
)

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)
THRESHOLDS = HealthThresholds()
DESIRED = "d" * 64


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0, Health.CONNECTED),
        (299, Health.CONNECTED),
        (299.999, Health.CONNECTED),
        (300, Health.STALE),
        (3600, Health.STALE),
        (3600.001, Health.DORMANT),
        (3601, Health.DORMANT),
    ],
)
def test_health_boundaries(age: float, expected: Health) -> None:
    last = NOW - timedelta(seconds=age)
    assert health(last, now=NOW, thresholds=THRESHOLDS) is expected


def test_never_without_heartbeat() -> None:
    assert health(None, now=NOW, thresholds=THRESHOLDS) is Health.NEVER
    assert heartbeat_age_seconds(None, now=NOW) is None


@given(st.floats(min_value=0, max_value=10_000_000, allow_nan=False))
def test_health_is_monotonic_in_age(age: float) -> None:
    order = [Health.CONNECTED, Health.STALE, Health.DORMANT]
    here = health(NOW - timedelta(seconds=age), now=NOW, thresholds=THRESHOLDS)
    later = health(NOW - timedelta(seconds=age + 1), now=NOW, thresholds=THRESHOLDS)
    assert order.index(later) >= order.index(here)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("3.12.6", Compatibility.FULL),
        ("3.6.0", Compatibility.FULL),
        ("v3.6.0", Compatibility.FULL),
        ("3.6.0-rc.1", Compatibility.LIMITED),
        ("3.5.1", Compatibility.LIMITED),
        ("3.4.0", Compatibility.LIMITED),
        ("3.4.0-beta", Compatibility.UNSUPPORTED),
        ("3.3.0", Compatibility.UNSUPPORTED),
        (None, Compatibility.UNKNOWN),
    ],
)
def test_compatibility(version: str | None, expected: Compatibility) -> None:
    assert compatibility(version, minimum="3.4.0", full_sync="3.6.0") is expected


@pytest.mark.parametrize("text", ["3.x", "3.4", "", "latest", "3.4.0.1", "v", "01.2.3"])
def test_non_semver_is_invalid(text: str) -> None:
    with pytest.raises(Invalid) as raised:
        parse_version(text)
    assert raised.value.code == "invalid_version"


def test_unknown_means_not_reported() -> None:
    assert normalise_reported_version("unknown") is None
    assert normalise_reported_version(None) is None
    assert normalise_reported_version("v3.6.0") == "3.6.0"


identifier = st.one_of(
    st.integers(min_value=0, max_value=10**6).map(str),
    st.text(alphabet="abcxyzABC-", min_size=1, max_size=5).filter(lambda s: not s.isdigit()),
)
versions = st.builds(
    lambda major, minor, patch, pre: (
        f"{major}.{minor}.{patch}" + (f"-{'.'.join(pre)}" if pre else "")
    ),
    st.integers(0, 40),
    st.integers(0, 40),
    st.integers(0, 40),
    st.lists(identifier, max_size=3),
)


@given(versions, versions)
def test_sort_key_orders_like_semver(left: str, right: str) -> None:
    expected = semver.Version.parse(left).compare(right)
    key_left, key_right = version_sort_key(left), version_sort_key(right)
    actual = (key_left > key_right) - (key_left < key_right)
    assert actual == expected


def _drift(**overrides: object) -> tuple[Drift, DriftReason | None]:
    arguments: dict[str, object] = {
        "has_heartbeat": True,
        "compatibility": Compatibility.FULL,
        "observed_config_hash": DESIRED,
        "apply_failed_hash": None,
        "desired_config_hash": DESIRED,
    }
    arguments.update(overrides)
    return drift(**arguments)  # type: ignore[arg-type]


def test_drift_table_first_match_wins() -> None:
    assert _drift() == (Drift.ALIGNED, None)
    assert _drift(compatibility=Compatibility.UNKNOWN) == (Drift.ALIGNED, None)
    assert _drift(has_heartbeat=False, compatibility=Compatibility.UNSUPPORTED) == (
        Drift.AWAITING_SYNC,
        DriftReason.NO_HEARTBEAT,
    )
    assert _drift(compatibility=Compatibility.UNSUPPORTED, apply_failed_hash=DESIRED) == (
        Drift.UPGRADE_REQUIRED,
        DriftReason.VERSION_BELOW_MINIMUM,
    )
    assert _drift(apply_failed_hash=DESIRED, observed_config_hash="o" * 64) == (
        Drift.NEEDS_RECONCILE,
        DriftReason.APPLY_FAILED,
    )
    assert _drift(apply_failed_hash="o" * 64) == (Drift.ALIGNED, None)
    assert _drift(observed_config_hash="o" * 64, compatibility=Compatibility.LIMITED) == (
        Drift.NEEDS_RECONCILE,
        DriftReason.CONFIG_REVISION_DIFFERS,
    )
    assert _drift(observed_config_hash=None) == (
        Drift.NEEDS_RECONCILE,
        DriftReason.CONFIG_REVISION_UNREPORTED,
    )
    assert _drift(compatibility=Compatibility.LIMITED) == (
        Drift.NEEDS_RECONCILE,
        DriftReason.VERSION_BELOW_FULL_SYNC,
    )


def test_summary_from_counts() -> None:
    summary = FleetSummary.from_counts(
        {Health.CONNECTED: 8, Health.STALE: 2, Health.NEVER: 1, Health.DORMANT: 4},
        {
            Drift.ALIGNED: 3,
            Drift.NEEDS_RECONCILE: 7,
            Drift.AWAITING_SYNC: 1,
            Drift.UPGRADE_REQUIRED: 4,
        },
    )
    assert summary.to_api() == {
        "total": 15,
        "active": 8,
        "stale": 2,
        "dormant": 4,
        "never": 1,
        "aligned": 3,
        "needsReconcile": 7,
        "upgradeRequired": 4,
        "awaitingSync": 1,
    }
    assert FleetSummary.from_counts({}, {}).to_api() == dict.fromkeys(summary.to_api(), 0)
