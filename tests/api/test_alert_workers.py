"""The background sweeper and delivery worker, on real threads and the real clock."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi.testclient import TestClient

from fleetplane.api import alerts
from fleetplane.api.app import create_app
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from tests.alerting_support import add_runtime, beat, history, receiver
from tests.conftest import ADMIN, make_workspace


def eventually(check: Callable[[], bool], *, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_workers_sweep_and_deliver_in_the_background(
    settings: Settings, database: Database
) -> None:
    fast = settings.model_copy(
        update={
            "sweep_seconds": 0.3,
            # No idle polling during the test: deliveries must come from wakes and the retry
            # schedule alone.
            "webhook_poll_seconds": 3600.0,
            "webhook_retry_base_seconds": 0.2,
            "webhook_retry_window_seconds": 5,
        }
    )
    app = create_app(fast, database=database)
    alerting = alerts.install(app, app.state.context)
    with (
        TestClient(app, base_url="https://fleet.test") as client,
        receiver(statuses=[500]) as hook,
    ):
        alerting.start()  # what the app's lifespan does once alerting is wired in
        try:
            ws = make_workspace(client)
            runtime_id, token = add_runtime(client, ws, "r1")
            beat(client, token, ws)

            def swept_connected() -> bool:
                current = history(client, ws, runtime_id)["current"]
                return current is not None and current["health"] == "connected"

            eventually(swept_connected)

            webhook = client.post(
                f"/api/v1/workspaces/{ws.workspace_id}/webhooks",
                json={"url": hook.url, "events": ["*"]},
                headers=ADMIN,
            ).json()
            base = f"/api/v1/workspaces/{ws.workspace_id}/webhooks/{webhook['id']}"
            assert client.post(f"{base}/ping", headers=ADMIN).status_code == 202

            def delivered() -> bool:
                items = client.get(f"{base}/deliveries", headers=ADMIN).json()["items"]
                return bool(items) and items[0]["status"] == "delivered"

            eventually(delivered)
            [entry] = client.get(f"{base}/deliveries", headers=ADMIN).json()["items"]
            assert [a["statusCode"] for a in entry["attemptLog"]] == [500, 200]
            assert len(hook.received) == 2
        finally:
            alerting.stop()
