"""Webhooks: subscriptions, one signed delivery per alert, retries on schedule, the log."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from fleetplane.services.webhooks import RetryPolicy, retry_schedule, verify
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from tests.alerting_support import (
    Receiver,
    add_runtime,
    alert_app,
    aligned_beat,
    beat,
    receiver,
)
from tests.conftest import ADMIN, Clock, WorkspaceFixture, make_workspace

SECRET = "a-receiver-shared-secret"


def subscribe(
    client: TestClient, ws: WorkspaceFixture, url: str, events: list[str] | None = None
) -> str:
    response = client.post(
        f"/api/v1/workspaces/{ws.workspace_id}/webhooks",
        json={"url": url, "events": events or ["*"], "secret": SECRET},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def deliveries(client: TestClient, ws: WorkspaceFixture, webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(
        f"/api/v1/workspaces/{ws.workspace_id}/webhooks/{webhook_id}/deliveries", headers=ADMIN
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def test_subscriptions_are_validated_and_keep_their_secret(
    settings: Settings, database: Database, clock: Clock
) -> None:
    with alert_app(settings, database, clock) as (client, _):
        ws = make_workspace(client)
        url = f"/api/v1/workspaces/{ws.workspace_id}/webhooks"
        for bad in (
            {"url": "ftp://127.0.0.1/x", "events": ["*"]},
            {"url": "javascript:alert(1)", "events": ["*"]},
            {"url": "http:///no-host", "events": ["*"]},
            {"url": "http://user:pw@127.0.0.1/x", "events": ["*"]},
            {"url": "http://127.0.0.1:99999/x", "events": ["*"]},
            {"url": "http://127.0.0.1/x", "events": ["runtime.sneezed"]},
            {"url": "http://127.0.0.1/x", "events": []},
            {"url": "http://127.0.0.1/x", "events": ["*"], "secret": "short"},
        ):
            refused = client.post(url, json=bad, headers=ADMIN)
            assert refused.status_code == 422, (bad, refused.text)
        created = client.post(
            url,
            json={"url": "https://127.0.0.1/hook", "events": ["runtime.health_changed"]},
            headers=ADMIN,
        )
        assert created.status_code == 201
        secret = created.json()["secret"]
        assert secret.startswith("whsec_")
        assert len(secret) > 40
        webhook_id = created.json()["id"]
        listed = client.get(url, headers=ADMIN).json()["items"]
        assert [w["id"] for w in listed] == [webhook_id]
        assert "secret" not in listed[0]
        patched = client.patch(
            f"{url}/{webhook_id}",
            json={"events": ["threshold.dormant_share", "runtime.health_changed"]},
            headers=ADMIN,
        )
        assert patched.json()["events"] == ["runtime.health_changed", "threshold.dormant_share"]
        assert client.delete(f"{url}/{webhook_id}", headers=ADMIN).status_code == 204
        assert client.get(f"{url}/{webhook_id}", headers=ADMIN).status_code == 404
        audit = client.get(f"/api/v1/workspaces/{ws.workspace_id}/audit", headers=ADMIN).json()
        actions = [entry["action"] for entry in audit["items"]]
        assert actions[:3] == ["webhook.delete", "webhook.update", "webhook.create"]


def _signed(hook: Receiver, clock: Clock) -> list[dict[str, Any]]:
    """Every received body, after checking its signature."""
    documents = []
    for request in hook.received:
        signature = request.headers["X-Fleetplane-Signature"]
        assert verify(SECRET, signature, body=request.body, now=clock())
        assert not verify("another-secret-entirely", signature, body=request.body, now=clock())
        assert not verify(SECRET, signature, body=request.body + b" ", now=clock())
        document = request.document
        assert request.headers["X-Fleetplane-Event"] == document["type"]
        documents.append(document)
    return documents


def test_one_signed_delivery_per_transition_and_threshold_crossing(
    settings: Settings, database: Database, clock: Clock
) -> None:
    with alert_app(settings, database, clock) as (client, alerting), receiver() as hook:
        ws = make_workspace(client)
        webhook_id = subscribe(client, ws, hook.url)
        thresholds = client.put(
            f"/api/v1/workspaces/{ws.workspace_id}/alerts/thresholds",
            json={"alignedShareBelow": 50, "dormantShareAbove": 40, "upgradeRequired": True},
            headers=ADMIN,
        )
        assert thresholds.status_code == 200, thresholds.text
        _, quiet = add_runtime(client, ws, "quiet")
        _, busy = add_runtime(client, ws, "busy")
        aligned_beat(client, quiet, ws)
        aligned_beat(client, busy, ws)
        alerting.sweep(force=True)  # first sight: history starts, nothing to alert
        assert alerting.deliver() == []

        clock.advance(301)
        aligned_beat(client, busy, ws)
        for _ in range(3):  # one alert per transition, however many sweeps see it
            alerting.sweep(force=True)
        clock.advance(3300)
        # `busy` falls below the minimum version: an upgrade alert and a drift alert.
        beat(client, busy, ws, runtime_version="3.3.0")
        for _ in range(3):
            alerting.sweep(force=True)
        assert [o.status_code for o in alerting.deliver()] == [200] * 5
        documents = _signed(hook, clock)
        assert Counter(d["type"] for d in documents) == {
            "runtime.health_changed": 2,  # quiet: connected → stale → dormant
            "runtime.drift_changed": 1,  # busy: aligned → upgrade_required
            "threshold.dormant_share": 1,  # 50 % dormant > 40 %
            "threshold.upgrade_required": 1,
            # The aligned share is 50 % (dormant `quiet` still runs the desired config): not
            # below 50 %, so no alert.
        }
        health = [d["data"] for d in documents if d["type"] == "runtime.health_changed"]
        assert [(h["agentId"], h["from"], h["to"]) for h in health] == [
            ("quiet", "connected", "stale"),
            ("quiet", "stale", "dormant"),
        ]
        dormant = next(d for d in documents if d["type"] == "threshold.dormant_share")
        assert dormant["data"]["state"] == "firing"
        assert dormant["data"]["value"] == 50.0
        assert dormant["data"]["limit"] == 40.0
        assert dormant["workspaceId"] == ws.workspace_id
        assert len({d["id"] for d in documents}) == 5

        # `quiet` reconfigured elsewhere (a config edit): now nothing is aligned.
        client.put(f"/api/v1/workspaces/{ws.workspace_id}/config", json={"v": 2}, headers=ADMIN)
        beat(client, busy, ws, runtime_version="3.6.0")
        alerting.sweep(force=True)
        alerting.sweep(force=True)
        alerting.deliver()
        later = Counter(
            (d["type"], d["data"].get("state") or d["data"].get("to"))
            for d in _signed(hook, clock)[5:]
        )
        assert later == {
            ("runtime.drift_changed", "needs_reconcile"): 2,  # both: the desired hash moved
            ("threshold.upgrade_required", "resolved"): 1,
            ("threshold.aligned_share", "firing"): 1,  # 0 % aligned < 50 %
        }
        crossings = client.get(f"/api/v1/workspaces/{ws.workspace_id}/alerts", headers=ADMIN)
        assert [(c["threshold"], c["state"]) for c in crossings.json()["items"]] == [
            ("upgrade_required", "resolved"),
            ("aligned_share", "firing"),
            ("upgrade_required", "firing"),
            ("dormant_share", "firing"),
        ]
        current = client.get(
            f"/api/v1/workspaces/{ws.workspace_id}/alerts/thresholds", headers=ADMIN
        ).json()
        assert current["firing"] == ["aligned_share", "dormant_share"]
        log = deliveries(client, ws, webhook_id)
        assert len(log) == 9
        assert {d["status"] for d in log} == {"delivered"}
        assert all(d["attempts"] == 1 and d["attemptLog"][0]["statusCode"] == 200 for d in log)


def test_subscriptions_filter_events(settings: Settings, database: Database, clock: Clock) -> None:
    with alert_app(settings, database, clock) as (client, alerting), receiver() as hook:
        ws = make_workspace(client)
        subscribe(client, ws, hook.url, ["runtime.drift_changed"])
        _, token = add_runtime(client, ws, "r")
        aligned_beat(client, token, ws)
        alerting.sweep(force=True)
        clock.advance(400)  # stale: a health alert nobody asked for
        alerting.sweep(force=True)
        alerting.deliver()
        assert hook.received == []
        client.put(f"/api/v1/workspaces/{ws.workspace_id}/config", json={"v": 2}, headers=ADMIN)
        alerting.sweep(force=True)
        alerting.deliver()
        assert [r.document["type"] for r in hook.received] == ["runtime.drift_changed"]


def test_failing_receiver_is_retried_on_schedule(
    settings: Settings, database: Database, clock: Clock
) -> None:
    policy = RetryPolicy()
    with (
        alert_app(settings, database, clock) as (client, alerting),
        receiver(statuses=[500, 503, 500]) as hook,
    ):
        ws = make_workspace(client)
        webhook_id = subscribe(client, ws, hook.url)
        start = clock()
        ping = client.post(
            f"/api/v1/workspaces/{ws.workspace_id}/webhooks/{webhook_id}/ping", headers=ADMIN
        )
        # Answered before anything is sent: deliveries never run on the request path.
        assert ping.status_code == 202
        assert hook.received == []
        delivery_id = ping.json()["deliveryId"]
        assert isinstance(delivery_id, str)
        assert delivery_id
        attempted = []
        for _ in range(8):
            outcomes = alerting.deliver()
            if outcomes:
                attempted.append((clock() - start, outcomes[0].status_code))
            clock.advance(5)
        assert attempted == [
            (timedelta(0), 500),  # then wait 10 s
            (timedelta(seconds=10), 503),  # then 20 s
            (timedelta(seconds=30), 500),  # then 40 s: outside this loop
        ]
        clock.now = start + timedelta(seconds=69)
        assert alerting.deliver() == []
        clock.now = start + timedelta(seconds=70)
        assert [o.status_code for o in alerting.deliver()] == [200]
        [entry] = deliveries(client, ws, webhook_id)
        assert entry["id"] == delivery_id  # the ping named the delivery it queued
        assert entry["status"] == "delivered"
        assert entry["event"] == "ping"
        assert [(a["number"], a["statusCode"]) for a in entry["attemptLog"]] == [
            (1, 500),
            (2, 503),
            (3, 500),
            (4, 200),
        ]
        assert [a["at"] for a in entry["attemptLog"]] == [
            (start + timedelta(seconds=s)).isoformat().replace("+00:00", "Z")
            for s in (0, 10, 30, 70)
        ]
        assert entry["lastError"] is None
        # The same delivery id and body on every attempt; a fresh signature each time.
        assert len({r.headers["X-Fleetplane-Delivery"] for r in hook.received}) == 1
        assert len({r.body for r in hook.received}) == 1
        assert len({r.headers["X-Fleetplane-Signature"] for r in hook.received}) == 4

        # A receiver that never recovers: retried up to the hour, then given up.
        hook.default_status = 500
        start = clock()
        ping = client.post(
            f"/api/v1/workspaces/{ws.workspace_id}/webhooks/{webhook_id}/ping", headers=ADMIN
        )
        schedule = retry_schedule(policy, start=start)
        for moment in schedule:
            clock.now = moment - timedelta(seconds=1)
            assert alerting.deliver() == []
            clock.now = moment
            assert len(alerting.deliver()) == 1
        clock.advance(7 * 24 * 3600)
        assert alerting.deliver() == []
        failed = deliveries(client, ws, webhook_id)[0]
        assert failed["status"] == "failed"
        assert failed["nextAttemptAt"] is None
        assert failed["attempts"] == len(schedule) == 10
        assert failed["lastError"] == "HTTP 500"
        assert failed["attemptLog"][-1]["at"] == (start + timedelta(hours=1)).isoformat().replace(
            "+00:00", "Z"
        )
        only_failed = client.get(
            f"/api/v1/workspaces/{ws.workspace_id}/webhooks/{webhook_id}/deliveries",
            params={"status": "failed"},
            headers=ADMIN,
        ).json()["items"]
        assert [d["id"] for d in only_failed] == [failed["id"]]


def test_unreachable_receiver_and_disabling(
    settings: Settings, database: Database, clock: Clock
) -> None:
    with alert_app(settings, database, clock) as (client, alerting):
        ws = make_workspace(client)
        with receiver() as gone:
            url = gone.url  # a port nothing listens on once the block ends
        webhook_id = subscribe(client, ws, url)
        base = f"/api/v1/workspaces/{ws.workspace_id}/webhooks/{webhook_id}"
        client.post(f"{base}/ping", headers=ADMIN)
        [outcome] = alerting.deliver()
        assert outcome.status_code is None
        assert outcome.error is not None
        assert "Connect" in outcome.error
        # Disabling the webhook cancels what was still to be sent.
        client.patch(base, json={"active": False}, headers=ADMIN)
        clock.advance(3600)
        assert alerting.deliver() == []
        [entry] = deliveries(client, ws, webhook_id)
        assert entry["status"] == "cancelled"
        assert entry["attempts"] == 1
