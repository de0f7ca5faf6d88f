"""The fleet simulator: its plan, and short runs against the real app over ASGI."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fleetplane.client import AuthError, TransportError, UnexpectedResponseError
from fleetplane.sim import (
    BEHAVIOUR_MIX,
    VERSION_MIX,
    Behaviour,
    SimulationReport,
    plan_fleet,
    sim_app,
    simulate,
)
from fleetplane.sim import cli as sim_cli
from fleetplane.sim.plan import config_document, spread
from tests.client.conftest import ENDPOINT, fleet
from tests.conftest import ADMIN, BOOTSTRAP_TOKEN, Clock

# --- the plan -------------------------------------------------------------------------------


def test_spread_follows_the_weights_exactly_for_a_large_fleet() -> None:
    versions = Counter(spread(VERSION_MIX, 500, random.Random(1)))
    assert versions == {"3.12.6": 200, "3.8.0": 100, "3.5.1": 75, "3.3.0": 50, None: 75}
    behaviours = Counter(spread(BEHAVIOUR_MIX, 500, random.Random(1)))
    assert behaviours == {
        Behaviour.RECONCILES: 300,
        Behaviour.LAGS: 75,
        Behaviour.FAILS: 40,
        Behaviour.STOPS: 50,
        Behaviour.SILENT: 35,
    }


@pytest.mark.parametrize("count", [1, 3, 5, 7, 12, 33])
def test_spread_keeps_every_kind_when_it_can(count: int) -> None:
    values = spread(BEHAVIOUR_MIX, count, random.Random(count))
    assert len(values) == count
    if count >= len(BEHAVIOUR_MIX):
        assert set(values) == {behaviour for behaviour, _ in BEHAVIOUR_MIX}


def test_plan_is_seeded_and_round_robin() -> None:
    plan = plan_fleet(runtimes=10, workspaces=3, run_id="abc", seed=42)
    assert plan == plan_fleet(runtimes=10, workspaces=3, run_id="abc", seed=42)
    assert [runtime.workspace_index for runtime in plan] == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    assert plan[7].agent_id == "sim-abc-00007"
    assert plan != plan_fleet(runtimes=10, workspaces=3, run_id="abc", seed=43)
    assert config_document(workspace="w", revision=2) != config_document(workspace="w", revision=3)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"runtimes": 0, "workspaces": 1}, "runtimes"),
        ({"runtimes": 10_001, "workspaces": 1}, "runtimes"),
        ({"runtimes": 3, "workspaces": 4}, "workspaces"),
        ({"runtimes": 3, "workspaces": 1, "duration": -1}, "duration"),
        ({"runtimes": 3, "workspaces": 1, "duration": 10**7}, "duration"),
        ({"runtimes": 3, "workspaces": 1, "concurrency": 0}, "concurrency"),
    ],
)
def test_simulate_refuses_unbounded_runs(arguments: dict[str, Any], message: str) -> None:
    def no_network(_request: httpx.Request) -> httpx.Response:
        raise AssertionError("a refused run must not talk to the server")

    with pytest.raises(ValueError, match=message):
        asyncio.run(
            simulate(ENDPOINT, "fp_op_x", transport=httpx.MockTransport(no_network), **arguments)
        )


# --- the command ------------------------------------------------------------------------


def test_simulate_command_maps_options(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    async def fake_simulate(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        kwargs["progress"]("created 3/3 runtimes")
        return SimulationReport(run_id="r", org_id="org-1", workspace_ids=["w1"])

    monkeypatch.setattr(sim_cli, "simulate", fake_simulate)
    monkeypatch.setenv("OPERATOR", "fp_op_secret")
    runner = CliRunner()
    outcome = runner.invoke(
        sim_app,
        [
            "--endpoint",
            "https://fleet.example",
            "--token-env",
            "OPERATOR",
            "--runtimes",
            "3",
            "--workspaces",
            "1",
            "--duration",
            "0",
            "--seed",
            "5",
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    ((args, kwargs),) = calls
    assert args == ("https://fleet.example", "fp_op_secret", 3, 1)
    assert (kwargs["duration"], kwargs["seed"], kwargs["heartbeat_seconds"]) == (0.0, 5, None)
    assert outcome.output.splitlines() == ["created 3/3 runtimes", "org org-1: workspaces w1"]

    monkeypatch.delenv("FLEETPLANE_TOKEN", raising=False)
    missing = runner.invoke(sim_app, ["--endpoint", "https://fleet.example"])
    assert missing.exit_code == 2
    assert "FLEETPLANE_TOKEN holds no operator token" in missing.output
    too_many = runner.invoke(
        sim_app,
        ["--endpoint", "x", "--token-env", "OPERATOR", "--runtimes", "2", "--workspaces", "3"],
    )
    assert too_many.exit_code == 2
    unbounded = runner.invoke(
        sim_app, ["--endpoint", "x", "--token-env", "OPERATOR", "--runtimes", "10001"]
    )
    assert unbounded.exit_code == 2

    async def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise AuthError("bad token", status_code=401, code="unauthenticated")

    monkeypatch.setattr(sim_cli, "simulate", refused)
    failed = runner.invoke(sim_app, ["--endpoint", "x", "--token-env", "OPERATOR"])
    assert failed.exit_code == 1
    assert "error: 401 unauthenticated: bad token" in failed.output


# --- runs against the app -------------------------------------------------------------------


def expected_drift(behaviour: str, version: str | None, *, edited: bool) -> tuple[str, Any]:
    """The drift a simulated runtime ends in, from SPEC 3.4's first-match table."""
    if behaviour == "silent":
        return "awaiting_sync", "no_heartbeat"
    if version == "3.3.0":
        return "upgrade_required", "version_below_minimum"
    if edited and behaviour == "fails":
        return "needs_reconcile", "apply_failed"
    if edited and behaviour in ("lags", "stops"):
        return "needs_reconcile", "config_revision_differs"
    if version == "3.5.1":
        return "needs_reconcile", "version_below_full_sync"
    return "aligned", None


def fleet_rows(client: TestClient, report: SimulationReport) -> list[dict[str, Any]]:
    rows = []
    for workspace_id in report.workspace_ids:
        rows.extend(fleet(client, workspace_id)["runtimes"])
    return rows


def test_short_real_time_run_builds_a_mixed_fleet(
    client: TestClient, asgi_transport: httpx.AsyncBaseTransport
) -> None:
    progress: list[str] = []
    report = asyncio.run(
        simulate(
            ENDPOINT,
            BOOTSTRAP_TOKEN,
            10,
            2,
            duration=1.0,
            edit_after=-1,
            seed=3,
            policy_mode="tighten-only",
            concurrency=4,
            transport=asgi_transport,
            progress=progress.append,
        )
    )
    assert len(report.workspace_ids) == 2
    assert len(report.runtime_ids) == 10
    assert sum(report.behaviours.values()) == 10
    assert set(report.behaviours) == {str(behaviour) for behaviour, _ in BEHAVIOUR_MIX}
    assert set(report.versions) == {"3.12.6", "3.8.0", "3.5.1", "3.3.0", "none"}
    assert progress[0] == f"created 2 workspaces in org {report.org_id}"
    assert [line for line in progress if line.startswith("created ") and "runtimes" in line] == [
        f"created {count}/10 runtimes" for count in range(1, 11)
    ]
    assert progress[-1].startswith(f"done: {report.heartbeats} heartbeats")
    silent = report.behaviours["silent"]
    # At the server's 30 s pace the one-second run holds only each runtime's first beat.
    assert report.heartbeats == 10 - silent
    assert report.applied == 10 - silent
    assert report.config_edits == 0
    assert report.errors == 0

    rows = fleet_rows(client, report)
    assert len(rows) == 10
    for row in rows:
        behaviour = row["labels"]["behaviour"]
        assert row["labels"]["simulation"] == report.run_id
        assert (row["drift"], row["driftReason"]) == expected_drift(
            behaviour, row["version"], edited=False
        ), row
        assert row["health"] == ("never" if behaviour == "silent" else "connected")
    drifts = Counter(row["drift"] for row in rows)
    assert set(drifts) == {"aligned", "needs_reconcile", "upgrade_required", "awaiting_sync"}
    workspace = client.get(f"/api/v1/workspaces/{report.workspace_ids[0]}", headers=ADMIN)
    assert workspace.json()["name"] == f"sim-{report.run_id}-001"
    assert workspace.json()["policyMode"] == "tighten-only"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            httpx.Response(401, json={"error": {"code": "unauthenticated", "message": "no"}}),
            AuthError,
        ),
        (httpx.Response(201, json=["not", "an", "object"]), UnexpectedResponseError),
        (httpx.ConnectError("refused"), TransportError),
    ],
)
def test_operator_failures_end_the_run_with_a_client_error(
    answer: httpx.Response | Exception, error: type[Exception]
) -> None:
    paths: list[str] = []

    def server(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        assert request.headers["authorization"] == "Bearer fp_op_x"
        if isinstance(answer, Exception):
            raise answer
        return answer

    with pytest.raises(error):
        asyncio.run(simulate(ENDPOINT, "fp_op_x", 2, 1, transport=httpx.MockTransport(server)))
    assert paths == ["/api/v1/orgs"]


class VirtualTime:
    """Simulated seconds that move the server's clock in step, so a long run takes no time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.clock.advance(seconds)
        await asyncio.sleep(0)


class FlakyTransport(httpx.AsyncBaseTransport):
    """Answers one agent's Nth heartbeat with an error status, passing the rest through."""

    def __init__(self, inner: httpx.AsyncBaseTransport, failures: dict[tuple[str, int], int]):
        self.inner = inner
        self.failures = failures
        self.heartbeats: Counter[str] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/heartbeat":
            suffix = json.loads(request.content)["agent_id"].rsplit("-", 1)[1]
            self.heartbeats[suffix] += 1
            status = self.failures.get((suffix, self.heartbeats[suffix]))
            if status is not None:
                body = {"error": {"code": "injected", "message": "injected", "details": None}}
                return httpx.Response(status, headers={"Retry-After": "2"}, json=body)
        return await self.inner.handle_async_request(request)


def test_virtual_time_run_reconciles_lags_fails_and_goes_stale(
    client: TestClient, asgi_transport: httpx.AsyncBaseTransport, clock: Clock
) -> None:
    time = VirtualTime(clock)
    plan = {
        runtime.index: runtime
        for runtime in plan_fleet(runtimes=14, workspaces=2, run_id="x", seed=11)
    }
    assert (plan[7].behaviour, plan[7].version) == (Behaviour.RECONCILES, "3.12.6")
    assert plan[13].behaviour is Behaviour.RECONCILES
    # Runtime 7's second heartbeat (the one after its first report) passes a 503; runtime 13
    # is refused (401, as if revoked) at its third, and stops.
    transport = FlakyTransport(asgi_transport, {("00007", 2): 503, ("00013", 3): 401})
    progress: list[str] = []
    report = asyncio.run(
        simulate(
            ENDPOINT,
            BOOTSTRAP_TOKEN,
            14,
            2,
            duration=900,
            heartbeat_seconds=60,
            edit_after=200,
            edit_every=0,
            reconcile_delay=(5, 20),
            stop_after=(60, 120),
            seed=11,
            transport=transport,
            progress=progress.append,
            sleep=time.sleep,
            monotonic=time.monotonic,
        )
    )
    assert time.now >= 900
    assert report.config_edits == 1
    assert "config edit: revision 2 in 2 workspaces" in progress
    assert (report.retries, report.errors) == (1, 1)
    assert report.apply_failures == report.behaviours["fails"] == 1
    assert transport.heartbeats["00013"] == 3
    silent = [f"{index:05d}" for index, runtime in plan.items() if runtime.behaviour == "silent"]
    assert silent
    assert [transport.heartbeats[suffix] for suffix in silent] == [0] * len(silent)

    rows = fleet_rows(client, report)
    assert len(rows) == 14
    for row in rows:
        behaviour = row["labels"]["behaviour"]
        if row["agentId"].endswith("-00013"):
            # Refused at t=60 s, before the edit: it stays on revision 1 and goes quiet.
            assert (row["drift"], row["health"]) == ("needs_reconcile", "stale")
            assert row["driftReason"] == "config_revision_differs"
            continue
        assert (row["drift"], row["driftReason"]) == expected_drift(
            behaviour, row["version"], edited=True
        ), row
        expected_health = {"silent": "never", "stops": "stale"}.get(behaviour, "connected")
        assert row["health"] == expected_health, row
    assert {row["labels"]["behaviour"] for row in rows} == {
        str(behaviour) for behaviour, _ in BEHAVIOUR_MIX
    }
    # Fifty minutes later the stopped runtimes are dormant and the rest merely stale.
    clock.advance(3000)
    for row in fleet_rows(client, report):
        behaviour = row["labels"]["behaviour"]
        if row["agentId"].endswith("-00013"):
            continue
        expected_health = {"silent": "never", "stops": "dormant"}.get(behaviour, "stale")
        assert row["health"] == expected_health, row


def test_rollout_of_an_edit_climbs_to_every_reconciling_runtime(
    client: TestClient, asgi_transport: httpx.AsyncBaseTransport, clock: Clock
) -> None:
    time = VirtualTime(clock)
    samples: list[tuple[float, int, int, int]] = []  # (time, revision, on it, expected)

    async def run() -> SimulationReport:
        async with httpx.AsyncClient(transport=asgi_transport, base_url=ENDPOINT) as operator:

            async def sampling_sleep(seconds: float) -> None:
                # After every simulated pause: the rollout of each workspace, as /fleet says.
                await time.sleep(seconds)
                listed = await operator.get("/api/v1/workspaces", headers=ADMIN)
                revision = on = expected = 0
                for workspace in listed.json()["items"]:
                    page = await operator.get(
                        f"/api/v1/workspaces/{workspace['id']}/fleet",
                        params={"limit": 1},
                        headers=ADMIN,
                    )
                    rollout = page.json()["rollout"]
                    revision = max(revision, rollout["revision"])
                    on += rollout["onRevision"]
                    expected += rollout["expected"]
                samples.append((time.now, revision, on, expected))

            return await simulate(
                ENDPOINT,
                BOOTSTRAP_TOKEN,
                24,
                2,
                duration=600,
                heartbeat_seconds=60,
                edit_after=200,
                edit_every=0,
                reconcile_delay=(5, 20),
                stop_after=(1000, 1001),  # runtimes that stop do so after this run
                seed=5,
                transport=asgi_transport,
                sleep=sampling_sleep,
                monotonic=time.monotonic,
            )

    report = asyncio.run(run())
    assert report.config_edits == 1
    first_revision, final_revision = samples[0][1], samples[-1][1]
    assert final_revision == first_revision + 1  # the one edit
    edited = [(t, on, n) for t, revision, on, n in samples if revision == final_revision]
    assert edited[0][1] == 0  # nobody runs the edit the moment it is made
    ons = [on for _, on, _ in edited]
    assert ons == sorted(ons)  # the rollout only ever climbs
    assert ons[0] < ons[-1]
    rows = fleet_rows(client, report)
    reconciling = [row for row in rows if row["labels"]["behaviour"] == "reconciles"]
    assert reconciling
    # Every runtime that reconciles ends on the new revision: 100 % of those expected to.
    assert all(row["revisionsBehind"] == 0 for row in reconciling)
    on_it = [row for row in rows if row["revisionsBehind"] == 0]
    assert ons[-1] == len(on_it) >= len(reconciling)
    assert edited[-1][2] == len(rows) == 24
    # Left behind: runtimes that lag, fail, never heartbeat or are about to stop (they keep
    # the config they have), as the simulator's behaviours say.
    assert {row["labels"]["behaviour"] for row in rows if row not in on_it} <= {
        "lags",
        "fails",
        "silent",
        "stops",
    }
