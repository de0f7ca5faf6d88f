"""`/metrics`: Prometheus text that the client's parser reads, with fleet gauges equal to the
fleet API's summary."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from fleetplane.api import alerts
from fleetplane.api.alerts import Alerting
from fleetplane.api.app import create_app
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from tests.alerting_support import add_runtime, aligned_beat, beat, quiet_settings, receiver
from tests.conftest import ADMIN, Clock, WorkspaceFixture, auth, make_workspace

HEALTH_OF_SUMMARY = {
    "connected": "active",
    "stale": "stale",
    "dormant": "dormant",
    "never": "never",
}
DRIFT_OF_SUMMARY = {
    "aligned": "aligned",
    "needs_reconcile": "needsReconcile",
    "upgrade_required": "upgradeRequired",
    "awaiting_sync": "awaitingSync",
}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@contextmanager
def metrics_app(
    settings: Settings, database: Database, clock: Clock, **changes: Any
) -> Iterator[tuple[TestClient, Alerting]]:
    app = create_app(quiet_settings(settings, **changes), database=database, clock=clock)
    alerting = alerts.install(app, app.state.context)
    with TestClient(app, base_url="https://fleet.test") as client:
        alerting.stop()  # tests run the workers by hand
        yield client, alerting


def scrape(client: TestClient, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def fleet_summary(client: TestClient, ws: WorkspaceFixture) -> dict[str, int]:
    response = client.get(f"/api/v1/workspaces/{ws.workspace_id}/fleet", headers=ADMIN)
    assert response.status_code == 200
    summary: dict[str, int] = response.json()["summary"]
    return summary


def populate(client: TestClient, clock: Clock, ws: WorkspaceFixture, prefix: str) -> None:
    """Runtimes in every health and several drift states."""
    tokens = {name: add_runtime(client, ws, f"{prefix}-{name}")[1] for name in "abcdef"}
    aligned_beat(client, tokens["a"], ws)  # will turn dormant
    clock.advance(3000)
    beat(client, tokens["b"], ws, runtime_version="3.3.0")  # will turn stale; upgrade required
    clock.advance(700)
    aligned_beat(client, tokens["c"], ws)  # connected, aligned
    beat(client, tokens["d"], ws, runtime_version="3.5.0")  # connected, limited
    beat(client, tokens["e"], ws)  # connected, no hash reported
    # f never heartbeats


def test_metrics_parse_and_fleet_gauges_equal_the_fleet_api(
    settings: Settings, database: Database, clock: Clock
) -> None:
    with metrics_app(settings, database, clock, metrics_per_workspace=True) as (client, _):
        first, second = make_workspace(client, name="one"), make_workspace(client, name="two")
        populate(client, clock, first, "one")
        populate(client, clock, second, "two")
        beat(client, add_runtime(client, second, "two-extra")[1], second)
        summaries = {ws.workspace_id: fleet_summary(client, ws) for ws in (first, second)}
        # Every state is represented, so that a gauge mixing two states up would show.
        for field in [*HEALTH_OF_SUMMARY.values(), "aligned", "needsReconcile", "awaitingSync"]:
            assert summaries[second.workspace_id][field] >= 1, field
        assert summaries[first.workspace_id] != summaries[second.workspace_id]
        samples = scrape(client)
        for health, field in HEALTH_OF_SUMMARY.items():
            total = sum(s[field] for s in summaries.values())
            assert samples[("fleetplane_runtimes", (("health", health),))] == total, health
            for workspace_id, summary in summaries.items():
                labels = (("health", health), ("workspace", workspace_id))
                assert samples[("fleetplane_workspace_runtimes", labels)] == summary[field]
        for drift, field in DRIFT_OF_SUMMARY.items():
            total = sum(s[field] for s in summaries.values())
            assert samples[("fleetplane_runtimes_drift", (("drift", drift),))] == total, drift
            for workspace_id, summary in summaries.items():
                labels = (("drift", drift), ("workspace", workspace_id))
                assert samples[("fleetplane_workspace_runtimes_drift", labels)] == summary[field]
        assert samples[("fleetplane_runtimes_archived", ())] == 0
        assert samples[("fleetplane_metrics_database_up", ())] == 1


def test_requests_buffer_sweeps_and_deliveries_are_counted(
    settings: Settings, database: Database, clock: Clock
) -> None:
    with metrics_app(settings, database, clock) as (client, alerting), receiver() as hook:
        ws = make_workspace(client)
        _, token = add_runtime(client, ws, "r")
        for _ in range(3):
            aligned_beat(client, token, ws)  # the later ones answered by the hot path
        fleet_summary(client, ws)
        client.get(f"/api/v1/workspaces/{ws.workspace_id}/nothing-here", headers=ADMIN)
        webhook = client.post(
            f"/api/v1/workspaces/{ws.workspace_id}/webhooks",
            json={"url": hook.url, "events": ["*"]},
            headers=ADMIN,
        ).json()
        client.post(
            f"/api/v1/workspaces/{ws.workspace_id}/webhooks/{webhook['id']}/ping", headers=ADMIN
        )
        alerting.deliver()
        alerting.sweep(force=True)
        samples = scrape(client)
        heartbeats = (
            "fleetplane_http_requests_total",
            (("method", "POST"), ("route", "/api/v1/heartbeat"), ("status", "200")),
        )
        assert samples[heartbeats] == 3
        fleet = (
            "fleetplane_http_requests_total",
            (
                ("method", "GET"),
                ("route", "/api/v1/workspaces/{workspace_id}/fleet"),
                ("status", "200"),
            ),
        )
        assert samples[fleet] == 1
        unmatched = (
            "fleetplane_http_requests_total",
            (("method", "GET"), ("route", "unmatched"), ("status", "404")),
        )
        assert samples[unmatched] == 1
        latency = (
            "fleetplane_http_request_duration_seconds_count",
            (("method", "POST"), ("route", "/api/v1/heartbeat")),
        )
        assert samples[latency] == 3
        # No raw path (with its ids) ever becomes a label value.
        assert not any(ws.workspace_id in str(labels) for _, labels in samples)
        assert ("fleetplane_heartbeat_buffer_depth", ()) in samples
        assert samples[("fleetplane_liveness_flushes_total", ())] >= 1
        assert samples[("fleetplane_liveness_flush_seconds_total", ())] > 0
        assert samples[("fleetplane_webhook_attempts_total", (("outcome", "delivered"),))] == 1
        assert samples[("fleetplane_webhook_deliveries", (("status", "delivered"),))] == 1
        assert samples[("fleetplane_sweeps_total", ())] == 1
        assert samples[("fleetplane_status_transitions_total", ())] == 2
        assert samples[("fleetplane_last_sweep_timestamp_seconds", ())] == clock().timestamp()


def test_the_buffer_depth_is_read_live(
    settings: Settings, database: Database, clock: Clock
) -> None:
    with metrics_app(settings, database, clock) as (client, alerting):
        registry = client.app.state.metrics.registry  # type: ignore[attr-defined]
        assert registry.get_sample_value("fleetplane_heartbeat_buffer_depth") == 0
        assert alerting.context.hot.liveness.offer("a-runtime-id", clock(), None)
        assert registry.get_sample_value("fleetplane_heartbeat_buffer_depth") == 1


def test_metrics_token(settings: Settings, database: Database, clock: Clock) -> None:
    token = "metrics-scraper-token-0123456789"
    with metrics_app(settings, database, clock, metrics_token=SecretStr(token)) as (client, _):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=auth("wrong")).status_code == 401
        assert scrape(client, **auth(token))[("fleetplane_metrics_database_up", ())] == 1


def test_event_loop_lag_and_collector_pauses_are_measured_while_the_app_runs(
    settings: Settings, database: Database, clock: Clock
) -> None:
    with metrics_app(settings, database, clock) as (client, _):
        metrics = client.app.state.metrics  # type: ignore[attr-defined]
        time.sleep(0.3)  # the app's loop runs in its own thread meanwhile
        gc.collect(2)
        samples = scrape(client)
        assert samples[("fleetplane_event_loop_lag_seconds_count", ())] >= 2
        assert samples[("fleetplane_gc_pause_seconds_count", (("generation", "2"),))] >= 1
        assert metrics.gc_pauses._callback in gc.callbacks
    # Stopped with the app: no callback keeps a finished app's registry alive.
    assert metrics.gc_pauses._callback not in gc.callbacks
    assert metrics.loop_lag._task is None
