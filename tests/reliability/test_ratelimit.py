"""Rate limits: token buckets per credential and per client address on the runtime surface and
sign-in, 429 with Retry-After and the standard error body, other routes untouched, and the
limit shared (not multiplied) across the worker processes of `fleetplane serve`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from fleetplane.api.ratelimit import Buckets, Limit, Limits, is_runtime_surface, login_account
from fleetplane.settings import Settings
from fleetplane.store.db import Database
from tests.conftest import ADMIN, BOOTSTRAP_TOKEN, Clock, auth, make_workspace, snapshot
from tests.reliability.servers import running
from tests.reliability.wiring import Ticks, rate_limited_app

HEARTBEAT = "/api/v1/heartbeat"


def settings_for(database: Database, **limits: Any) -> Settings:
    return Settings(
        database_url=database.url,
        public_url="https://fleet.test",
        bootstrap_admin_token=BOOTSTRAP_TOKEN,
        **limits,
    )


class Harness:
    """An app with its rate limiter on a hand-moved clock."""

    def __init__(self, database: Database, **limits: Any) -> None:
        self.database = database
        self.ticks = Ticks()
        self.settings = settings_for(database, **limits)
        self.app = rate_limited_app(
            self.settings, database=database, clock=Clock(), ticks=self.ticks
        )

    def client_from(self, address: str) -> TestClient:
        """A client with another source address (no lifespan: the first client runs it)."""
        return TestClient(self.app, base_url="https://fleet.test", client=(address, 40000))


@pytest.fixture
def harness(request: pytest.FixtureRequest, sqlite_database: Database) -> Harness:
    limits = getattr(request, "param", {})
    return Harness(sqlite_database, **limits)


@pytest.fixture
def client(harness: Harness) -> Iterator[TestClient]:
    with TestClient(harness.app, base_url="https://fleet.test", client=("10.0.0.1", 1)) as c:
        yield c


def beat(client: TestClient, token: str, agent: str = "a-1") -> httpx.Response:
    return client.post(
        HEARTBEAT, json={"session_id": f"s-{agent}", "agent_id": agent}, headers=auth(token)
    )


def runtime_credential(client: TestClient, workspace_id: str, agent: str) -> str:
    made = client.post(
        f"/api/v1/workspaces/{workspace_id}/runtimes", json={"agentId": agent}, headers=ADMIN
    )
    assert made.status_code == 201, made.text
    return str(made.json()["credential"])


def assert_rate_limited(response: httpx.Response, *, retry_after: int, limit: str) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["retry-after"] == str(retry_after)
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": {
            "code": "rate_limited",
            "message": f"too many requests; retry after {retry_after} s",
            "details": {"retryAfterSeconds": retry_after, "limit": limit},
        }
    }
    # The security headers wrap the limiter too.
    assert response.headers["x-content-type-options"] == "nosniff"


CREDENTIAL_LIMITS = {
    "rate_limit_credential_per_second": 0.5,
    "rate_limit_credential_burst": 5,
    "rate_limit_workspace_key_per_second": 1.0,
    "rate_limit_workspace_key_burst": 12,
}


@pytest.mark.parametrize("harness", [CREDENTIAL_LIMITS], indirect=True)
def test_runtime_credential_bucket_refuses_past_its_burst_and_refills(
    harness: Harness, client: TestClient
) -> None:
    ws = make_workspace(client)
    credential = runtime_credential(client, ws.workspace_id, "rt-1")
    other = runtime_credential(client, ws.workspace_id, "rt-2")

    assert [beat(client, credential).status_code for _ in range(5)] == [200] * 5
    context = harness.app.state.context
    context.hot.liveness.flush()
    before = snapshot(harness.database)
    refused = beat(client, credential)
    # 1 token at 0.5/s is 2 s away.
    assert_rate_limited(refused, retry_after=2, limit="credential")
    context.hot.liveness.flush()
    assert snapshot(harness.database) == before  # a refused request changes nothing

    # Another runtime's credential has its own bucket.
    assert beat(client, other).status_code == 200
    # Half a token is not a token; two seconds refill one, and only one.
    harness.ticks.advance(1.0)
    assert_rate_limited(beat(client, credential), retry_after=1, limit="credential")
    harness.ticks.advance(1.0)
    assert beat(client, credential).status_code == 200
    assert beat(client, credential).status_code == 429


@pytest.mark.parametrize("harness", [CREDENTIAL_LIMITS], indirect=True)
def test_a_heartbeat_the_hot_path_hands_on_is_charged_once(
    harness: Harness, client: TestClient
) -> None:
    # The hot path charges a request it can answer from its cache before looking further; when
    # the heartbeat turns out to change something (here a new version each time), the full
    # route answers it, and the limiter behind the hot path must not charge it again.
    ws = make_workspace(client)
    credential = runtime_credential(client, ws.workspace_id, "rt-1")
    versions = ["3.6.0", "3.7.1", "3.6.0", "3.7.1", "3.6.0", "3.7.1"]
    answers = [
        client.post(
            HEARTBEAT,
            json={"session_id": "s", "runtime_version": version},
            headers=auth(credential),
        )
        for version in versions
    ]
    assert [answer.status_code for answer in answers] == [200] * 5 + [429]
    assert_rate_limited(answers[-1], retry_after=2, limit="credential")
    runtimes = client.get(f"/api/v1/workspaces/{ws.workspace_id}/fleet", headers=ADMIN).json()
    assert [runtime["version"] for runtime in runtimes["runtimes"]] == ["3.6.0"]


@pytest.mark.parametrize("harness", [CREDENTIAL_LIMITS], indirect=True)
def test_a_workspace_key_serves_a_fleet_so_its_bucket_is_larger(client: TestClient) -> None:
    ws = make_workspace(client)
    answers = [beat(client, ws.api_key, agent=f"agent-{n}").status_code for n in range(12)]
    assert answers == [200] * 12  # past the per-credential burst of 5
    assert_rate_limited(
        beat(client, ws.api_key, agent="agent-12"), retry_after=1, limit="credential"
    )


ADDRESS_LIMITS = {"rate_limit_address_per_second": 2.0, "rate_limit_address_burst": 4}


@pytest.mark.parametrize("harness", [ADDRESS_LIMITS], indirect=True)
def test_client_address_bucket_counts_every_credential_and_none(
    harness: Harness, client: TestClient
) -> None:
    # Unknown tokens and no token at all: every request costs the address a token.
    statuses = [
        client.post(HEARTBEAT, json={}, headers=auth(f"fp_rt_made-up-{n}")).status_code
        for n in range(3)
    ]
    statuses.append(client.post("/api/v1/config", json={}).status_code)
    assert statuses == [401, 401, 401, 401]
    assert_rate_limited(
        client.post(HEARTBEAT, json={}, headers=auth("fp_rt_yet-another")),
        retry_after=1,
        limit="address",
    )
    # Another address is not affected; this one refills at 2/s.
    elsewhere = harness.client_from("10.0.0.2")
    assert elsewhere.post(HEARTBEAT, json={}).status_code == 401
    harness.ticks.advance(0.5)
    assert client.post(HEARTBEAT, json={}).status_code == 401


@pytest.mark.parametrize("harness", [{"rate_limit_address_burst": 1}], indirect=True)
def test_operator_routes_and_probes_are_not_limited(client: TestClient) -> None:
    answers = [client.get("/api/v1/me", headers=ADMIN).status_code for _ in range(15)]
    answers += [client.get("/healthz").status_code for _ in range(15)]
    assert answers == [200] * 30
    fleet_config = "/api/v1/workspaces/some-id/fleet/config"
    assert client.get(fleet_config).status_code == 401
    assert client.get(fleet_config).status_code == 429  # the fleet descriptor is runtime surface


LOGIN_LIMITS = {"rate_limit_login_per_second": 0.2, "rate_limit_login_burst": 3}


@pytest.mark.parametrize("harness", [LOGIN_LIMITS], indirect=True)
def test_sign_in_is_limited_per_address_and_per_account(
    harness: Harness, client: TestClient
) -> None:
    def login(on: TestClient, email: str) -> httpx.Response:
        return on.post("/api/v1/auth/login", json={"email": email, "password": "wrong-password"})

    assert [login(client, "ann@example.com").status_code for _ in range(3)] == [401] * 3
    # Same address, another account: the address bucket is empty (1 token at 0.2/s: 5 s).
    assert_rate_limited(login(client, "bob@example.com"), retry_after=5, limit="address")
    # Another address, the same account: the account's bucket is empty.
    second = harness.client_from("10.0.0.2")
    assert_rate_limited(login(second, "ANN@example.com "), retry_after=5, limit="account")
    # Another address, another account: allowed through to the password check.
    assert login(second, "carl@example.com").status_code == 401
    harness.ticks.advance(5.0)
    assert login(client, "bob@example.com").status_code == 401


@pytest.mark.parametrize("harness", [{"rate_limit_enabled": False}], indirect=True)
def test_limits_can_be_switched_off(client: TestClient) -> None:
    assert {client.post(HEARTBEAT, json={}).status_code for _ in range(30)} == {401}
    harness_settings = Settings(rate_limit_address_burst=1, rate_limit_enabled=False)
    assert harness_settings.rate_limit_enabled is False


def test_default_limits_are_far_above_a_real_fleet() -> None:
    limits = Limits.from_settings(Settings())
    heartbeat_and_pulls_per_runtime = 3 / 30  # per second, at the 30 s sync interval
    assert limits.credential.per_second >= 100 * heartbeat_and_pulls_per_runtime
    assert limits.credential.burst >= 100
    assert limits.workspace_key.per_second / heartbeat_and_pulls_per_runtime >= 10_000
    assert limits.address.per_second / heartbeat_and_pulls_per_runtime >= 10_000


def test_each_process_gets_its_share_of_the_limits() -> None:
    shared = Limits.from_settings(
        Settings(
            rate_limit_processes=4,
            rate_limit_credential_per_second=50,
            rate_limit_credential_burst=100,
            rate_limit_login_burst=2,
        )
    )
    assert shared.credential == Limit(per_second=12.5, burst=25.0)
    assert shared.login.burst == 1.0  # never below one request


def test_buckets_stay_bounded_under_random_keys() -> None:
    ticks = Ticks()
    buckets = Buckets(max_buckets=50, clock=ticks)
    limit = Limit(per_second=1.0, burst=2.0)
    for n in range(1000):
        assert buckets.wait(f"random-{n}", limit) == 0.0
        buckets.take(f"random-{n}", limit)
        assert len(buckets) <= 50
    # A drained bucket survives eviction while refilled ones make room.
    buckets = Buckets(max_buckets=3, clock=ticks)
    buckets.take("busy", limit)
    buckets.take("busy", limit)
    buckets.take("idle", limit)
    ticks.advance(1.0)  # "idle" is full again, "busy" holds 1 token
    buckets.take("new-1", limit)
    buckets.take("new-2", limit)
    assert buckets.wait("busy", limit) == 0.0
    buckets.take("busy", limit)
    assert buckets.wait("busy", limit) == pytest.approx(1.0)


def test_request_classification() -> None:
    assert is_runtime_surface("POST", "/api/v1/heartbeat")
    assert is_runtime_surface("GET", "/api/v1/workspaces/w1/fleet/config")
    assert not is_runtime_surface("GET", "/api/v1/workspaces/w1/fleet")
    assert not is_runtime_surface("PUT", "/api/v1/workspaces/w1/config")
    form = "application/x-www-form-urlencoded; charset=utf-8"
    assert login_account(b"email=Ann%40Example.com&password=x", form.encode()) == "ann@example.com"
    assert login_account(b'{"email": " Bob@x.io "}', b"application/json") == "bob@x.io"
    for body in (b"[1]", b"{not json", b'{"email": 5}', b"[" * 5000):
        assert login_account(body, b"application/json") is None


def test_workers_share_the_limit_instead_of_multiplying_it(
    tmp_path: Path, sqlite_template: Path
) -> None:
    """Two worker processes with RATE_LIMIT_PROCESSES=2 admit one limit's worth together."""
    database = tmp_path / "workers.db"
    database.write_bytes(sqlite_template.read_bytes())
    burst, per_second = 20, 1.0
    env = {
        "FLEETPLANE_DATABASE_URL": f"sqlite:///{database}",
        "FLEETPLANE_RATE_LIMIT_PROCESSES": "2",
        "FLEETPLANE_RATE_LIMIT_ADDRESS_BURST": str(burst),
        "FLEETPLANE_RATE_LIMIT_ADDRESS_PER_SECOND": str(per_second),
    }
    with running(tmp_path, env, workers=2) as server:
        started = time.monotonic()
        admitted = 0
        # A new connection per request, so the kernel spreads them over both workers.
        for _ in range(80):
            with httpx.Client(base_url=server.url, timeout=5) as fresh:
                status = fresh.post(HEARTBEAT, json={}).status_code
            assert status in (401, 429)
            admitted += status == 401
        elapsed = time.monotonic() - started
        log = server.read_log()
    assert log.count("Started server process") >= 2
    # Together the workers never admit more than the configured burst plus the refill ...
    assert admitted <= burst + per_second * elapsed + 1
    # ... and each worker admits at least its own share.
    assert admitted >= burst / 2
