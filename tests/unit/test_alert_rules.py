"""The pure rules behind alerts: retry schedule, signatures, thresholds, transition times."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetplane.domain.errors import Invalid
from fleetplane.domain.fleet import FleetSummary, Health, HealthThresholds
from fleetplane.services.alerts import Threshold, Thresholds, evaluate
from fleetplane.services.history import clamp, health_changed_at
from fleetplane.services.webhooks import (
    RetryPolicy,
    check_events,
    check_webhook_url,
    next_attempt_at,
    retry_schedule,
    sign,
    verify,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def test_default_schedule_doubles_and_ends_at_the_hour() -> None:
    offsets = [(t - T0).total_seconds() for t in retry_schedule(RetryPolicy(), start=T0)]
    assert offsets == [0, 10, 30, 70, 150, 310, 630, 1270, 2550, 3600]


@given(
    base=st.floats(min_value=0.5, max_value=600),
    window=st.floats(min_value=1, max_value=7 * 24 * 3600),
)
def test_schedule_properties(base: float, window: float) -> None:
    policy = RetryPolicy(base_seconds=base, window_seconds=window)
    times = retry_schedule(policy, start=T0)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap > 0 for gap in gaps)
    assert times[-1] == T0 + timedelta(seconds=window)
    # Every gap but the last (cut at the window's end) doubles the one before.
    for index, gap in enumerate(gaps[:-1]):
        assert gap == pytest.approx(base * 2**index)
    assert (
        next_attempt_at(created_at=T0, attempted_at=times[-1], attempts=len(times), policy=policy)
        is None
    )


def test_a_late_attempt_past_the_window_is_the_last() -> None:
    policy = RetryPolicy()
    late = T0 + timedelta(hours=5)
    assert next_attempt_at(created_at=T0, attempted_at=late, attempts=1, policy=policy) is None


@given(secret=st.text(min_size=1), body=st.binary(), timestamp=st.integers(0, 2**33))
def test_signatures_verify_only_unchanged(secret: str, body: bytes, timestamp: int) -> None:
    header = sign(secret, timestamp=timestamp, body=body)
    now = datetime.fromtimestamp(timestamp, tz=UTC)
    assert verify(secret, header, body=body, now=now)
    assert not verify(secret + "x", header, body=body, now=now)
    assert not verify(secret, header, body=body + b"x", now=now)
    assert not verify(secret, header, body=body, now=now + timedelta(seconds=301))


def test_signature_format_is_hmac_sha256_over_timestamp_dot_body() -> None:
    # Computed independently: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
    header = sign("s3cret", timestamp=1700000000, body=b'{"a":1}')
    assert header == (
        "t=1700000000,v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
    )
    assert not verify("s3cret", "garbage", body=b"{}", now=T0)
    assert not verify("s3cret", "t=abc,v1=00", body=b"{}", now=T0)


def _summary(**counts: int) -> FleetSummary:
    return FleetSummary(**counts)


def test_thresholds_cross_strictly() -> None:
    thresholds = Thresholds(aligned_share_below=50, dormant_share_above=40, upgrade_required=True)
    half = evaluate(thresholds, _summary(total=4, aligned=2, dormant=2, upgrade_required=0))
    crossed = {e.threshold: e.crossed for e in half}
    assert crossed == {
        Threshold.ALIGNED_SHARE: False,  # 50 % is not below 50 %
        Threshold.DORMANT_SHARE: True,  # 50 % is above 40 %
        Threshold.UPGRADE_REQUIRED: False,
    }
    values = {e.threshold: e.value for e in half}
    assert values[Threshold.ALIGNED_SHARE] == 50.0
    upgrade = evaluate(thresholds, _summary(total=4, aligned=1, upgrade_required=1))
    assert {e.threshold: e.crossed for e in upgrade}[Threshold.UPGRADE_REQUIRED] is True
    assert {e.threshold: e.crossed for e in upgrade}[Threshold.ALIGNED_SHARE] is True


def test_empty_fleets_and_switched_off_thresholds_cross_nothing() -> None:
    on = Thresholds(aligned_share_below=100, dormant_share_above=0, upgrade_required=True)
    assert not any(e.crossed for e in evaluate(on, _summary()))
    off = Thresholds()
    busy = _summary(total=3, dormant=3, upgrade_required=3)
    assert not any(e.crossed for e in evaluate(off, busy))


def test_health_is_dated_by_the_heartbeat() -> None:
    thresholds = HealthThresholds(connected_seconds=300, dormant_seconds=3600)
    last = T0 + timedelta(minutes=5)

    def at(health: Health, heartbeat: datetime | None = last) -> datetime:
        return health_changed_at(
            health, last_heartbeat_at=heartbeat, enrolled_at=T0, thresholds=thresholds
        )

    assert at(Health.NEVER, None) == T0
    assert at(Health.CONNECTED) == last
    assert at(Health.STALE) == last + timedelta(seconds=300)
    assert at(Health.DORMANT) == last + timedelta(seconds=3600)
    assert clamp(T0, earliest=last, latest=last + timedelta(1)) == last
    assert clamp(T0 + timedelta(2), earliest=None, latest=T0) == T0


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "http://",
        "https://user:pass@example.com/",
        "https://example.com/a b",
        "http://example.com:notaport/",
        "//example.com/",
    ],
)
def test_bad_webhook_urls(url: str) -> None:
    with pytest.raises(Invalid):
        check_webhook_url(url)


def test_good_webhook_urls_and_events() -> None:
    assert (
        check_webhook_url(" https://hooks.example.com/x?y=1 ") == "https://hooks.example.com/x?y=1"
    )
    assert check_webhook_url("http://127.0.0.1:8080/hook") == "http://127.0.0.1:8080/hook"
    assert check_events(["runtime.drift_changed", "*", "runtime.drift_changed"]) == [
        "*",
        "runtime.drift_changed",
    ]
    with pytest.raises(Invalid):
        check_events(["runtime.exploded"])
