"""The heartbeat loops against a scripted server: interval, jitter, backoff, Retry-After."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from fleetplane.client import (
    AsyncClient,
    AuthError,
    Client,
    ClientError,
    ForbiddenError,
    HeartbeatResult,
    HeartbeatSchedule,
    RateLimitedError,
    ServerError,
    TransportError,
)

DESIRED = "d" * 64
APPLIED = "a" * 64
ENDPOINT = "https://fleet.example"


def ok(next_heartbeat_ms: int = 30_000) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "status": "ok",
            "server_time": "2026-03-01T12:00:00Z",
            "next_heartbeat_ms": next_heartbeat_ms,
            "config_hash": DESIRED,
            "policy_mode": "tighten-only",
        },
    )


def failure(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    body = {"error": {"code": "some_code", "message": "scripted failure", "details": None}}
    return httpx.Response(status, json=body, headers=headers)


Script = list[httpx.Response | Exception]


class ScriptedServer:
    """Answers heartbeats from a script, recording each request body."""

    def __init__(self, script: Script) -> None:
        self.script: Iterator[httpx.Response | Exception] = iter(script)
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/heartbeat"
        assert request.headers["authorization"] == "Bearer fp_rt_test"
        self.bodies.append(json.loads(request.content))
        step = next(self.script)
        if isinstance(step, Exception):
            raise step
        return step


class Sleeper:
    """Records the delays and sets ``stop`` after ``limit`` sleeps."""

    def __init__(self, stop: threading.Event | asyncio.Event, limit: int) -> None:
        self.stop = stop
        self.limit = limit
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if len(self.delays) >= self.limit:
            self.stop.set()

    async def asleep(self, seconds: float) -> None:
        self(seconds)


def sync_client(server: ScriptedServer) -> Client:
    return Client(
        ENDPOINT,
        token="fp_rt_test",
        workspace_id="ws-1",
        agent_id="agent-1",
        runtime_version="3.12.6",
        transport=httpx.MockTransport(server),
    )


def fixed(value: float) -> Callable[[], float]:
    return lambda: value


def test_loop_honours_next_heartbeat_ms_with_jitter_and_carries_the_applied_hash() -> None:
    server = ScriptedServer([ok(20_000), ok(20_000), ok(45_000)])
    stop = threading.Event()
    sleeper = Sleeper(stop, limit=3)
    draws = iter([0.0, 0.5, 0.999])
    seen: list[HeartbeatResult] = []
    with sync_client(server) as runtime:
        runtime.applied_config_hash = APPLIED
        beats = runtime.run_heartbeat_loop(
            "session-7", stop, on_heartbeat=seen.append, sleep=sleeper, random=lambda: next(draws)
        )
    assert beats == 3
    assert sleeper.delays == pytest.approx([18.0, 20.0, 45 * 1.0998])
    assert [result.policy_mode for result in seen] == ["tighten-only"] * 3
    assert server.bodies[0] == {
        "workspace_id": "ws-1",
        "session_id": "session-7",
        "agent_id": "agent-1",
        "runtime_version": "3.12.6",
        "config_hash": APPLIED,
    }
    assert runtime.desired_config_hash == DESIRED


def test_jitter_stays_within_ten_percent_and_varies() -> None:
    schedule = HeartbeatSchedule(random=random.Random(7).random)
    delays = [schedule.after_success(30_000) for _ in range(500)]
    assert all(27.0 <= delay <= 33.0 for delay in delays)
    assert min(delays) < 27.5
    assert max(delays) > 32.5
    # A nonsense interval from the server is clamped, never a hot loop or a silent runtime.
    flat = HeartbeatSchedule(random=fixed(0.5))
    assert (flat.after_success(0), flat.after_success(10**9)) == (1.0, 3600.0)


def test_backoff_doubles_respects_retry_after_and_resets_after_success() -> None:
    server = ScriptedServer(
        [
            failure(429, retry_after="7"),
            failure(503),
            failure(500),
            httpx.ConnectError("connection refused"),
            ok(15_000),
            failure(502),
            failure(429, retry_after="120"),
            failure(500),
            failure(500),
            failure(500),
            failure(500),
            failure(500),
        ]
    )
    stop = threading.Event()
    sleeper = Sleeper(stop, limit=12)
    errors: list[tuple[type[ClientError], float]] = []
    with sync_client(server) as runtime:
        beats = runtime.run_heartbeat_loop(
            "s",
            stop,
            sleep=sleeper,
            random=fixed(0.5),
            on_error=lambda error, delay: errors.append((type(error), delay)),
        )
    assert beats == 1
    assert sleeper.delays == [7.0, 2.0, 4.0, 8.0, 15.0, 1.0, 120.0, 4.0, 8.0, 16.0, 32.0, 60.0]
    assert [kind for kind, _ in errors[:4]] == [
        RateLimitedError,
        ServerError,
        ServerError,
        TransportError,
    ]
    assert [delay for _, delay in errors] == [d for i, d in enumerate(sleeper.delays) if i != 4]


def test_backoff_is_jittered_but_capped() -> None:
    schedule = HeartbeatSchedule(random=fixed(0.999), max_backoff=60.0)
    error = ServerError("down", status_code=503, code="x")
    delays = [schedule.after_failure(error) for _ in range(8)]
    assert delays[0] == pytest.approx(1.0998)
    assert delays[-1] == 60.0
    assert schedule.failures == 8


def test_a_non_retryable_error_ends_the_loop() -> None:
    server = ScriptedServer([ok(), failure(401)])
    stop = threading.Event()
    sleeper = Sleeper(stop, limit=10)
    with sync_client(server) as runtime, pytest.raises(AuthError) as raised:
        runtime.run_heartbeat_loop("s", stop, sleep=sleeper, random=fixed(0.5))
    assert raised.value.code == "some_code"
    assert sleeper.delays == [30.0]


def test_a_retryable_error_in_on_heartbeat_backs_off_too() -> None:
    server = ScriptedServer([ok(), ok()])
    stop = threading.Event()
    sleeper = Sleeper(stop, limit=2)
    calls: list[int] = []

    def on_heartbeat(_result: HeartbeatResult) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise TransportError("pull failed")

    with sync_client(server) as runtime:
        beats = runtime.run_heartbeat_loop(
            "s", stop, on_heartbeat=on_heartbeat, sleep=sleeper, random=fixed(0.5)
        )
    assert (beats, sleeper.delays) == (1, [1.0, 30.0])


def test_default_sleep_is_cut_short_by_stop() -> None:
    server = ScriptedServer([ok(60_000)])
    stop = threading.Event()
    with sync_client(server) as runtime:
        started = time.monotonic()
        timer = threading.Timer(0.05, stop.set)
        timer.start()
        try:
            beats = runtime.run_heartbeat_loop("s", stop)
        finally:
            timer.cancel()
    assert beats == 1
    assert time.monotonic() - started < 5


def test_stop_set_by_the_callback_ends_the_loop_without_sleeping() -> None:
    server = ScriptedServer([ok()])
    stop = threading.Event()
    sleeper = Sleeper(stop, limit=10)
    with sync_client(server) as runtime:
        beats = runtime.run_heartbeat_loop(
            "s", stop, on_heartbeat=lambda _result: stop.set(), sleep=sleeper
        )
    assert (beats, sleeper.delays) == (1, [])


def async_client(server: ScriptedServer) -> AsyncClient:
    return AsyncClient(
        ENDPOINT,
        token="fp_rt_test",
        workspace_id="ws-1",
        agent_id="agent-1",
        transport=httpx.MockTransport(server),
    )


def test_async_loop_backs_off_and_honours_the_interval() -> None:
    server = ScriptedServer(
        [failure(429, retry_after="3"), failure(500), ok(12_000), ok(12_000), failure(401)]
    )
    seen: list[str] = []

    async def scenario() -> tuple[int, list[float]]:
        stop = asyncio.Event()
        sleeper = Sleeper(stop, limit=4)

        async def on_heartbeat(result: HeartbeatResult) -> None:
            seen.append(result.config_hash)

        async with async_client(server) as runtime:
            beats = await runtime.run_heartbeat_loop(
                "s", stop, on_heartbeat=on_heartbeat, sleep=sleeper.asleep, random=fixed(0.0)
            )
        return beats, sleeper.delays

    beats, delays = asyncio.run(scenario())
    assert beats == 2
    # Retry-After 3 beats the jittered 0.9 s; then 2 * 0.9; then 12 s * 0.9 twice.
    assert delays == pytest.approx([3.0, 1.8, 10.8, 10.8])
    assert seen == [DESIRED, DESIRED]


def test_async_loop_raises_non_retryable_and_default_wait_ends_on_stop() -> None:
    async def refused() -> None:
        stop = asyncio.Event()
        async with async_client(ScriptedServer([failure(403)])) as runtime:
            await runtime.run_heartbeat_loop("s", stop)

    with pytest.raises(ForbiddenError) as raised:
        asyncio.run(refused())
    assert raised.value.code == "some_code"

    async def stopped() -> tuple[int, float]:
        stop = asyncio.Event()
        async with async_client(ScriptedServer([ok(60_000)])) as runtime:
            asyncio.get_running_loop().call_later(0.05, stop.set)
            started = time.monotonic()
            beats = await runtime.run_heartbeat_loop("s", stop, on_heartbeat=lambda _result: None)
            return beats, time.monotonic() - started

    beats, elapsed = asyncio.run(stopped())
    assert beats == 1
    assert elapsed < 5
