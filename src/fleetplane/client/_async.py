"""The asyncio runtime client, over ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random as _random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from fleetplane.client._base import DEFAULT_TIMEOUT, USER_AGENT, BaseClient, Call
from fleetplane.client.errors import ClientError, TransportError
from fleetplane.client.models import (
    Authentication,
    ConfigPull,
    Enrollment,
    HeartbeatResult,
    PolicyPull,
)
from fleetplane.client.schedule import HeartbeatSchedule, is_retryable

T = TypeVar("T")


async def _wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


class AsyncClient(BaseClient):
    """A LumenFlow control-plane SDK v1 runtime client for fleetplane (asyncio).

    The same operations as :class:`fleetplane.client.Client`, awaited. Many runtimes can share
    one connection pool by passing the same ``http_client=`` to each runtime's client (the
    simulator does); a client closes only an ``httpx.AsyncClient`` it created itself.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        token: str | None = None,
        workspace_id: str | None = None,
        org_id: str | None = None,
        agent_id: str | None = None,
        runtime_version: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(
            endpoint,
            token=token,
            workspace_id=workspace_id,
            org_id=org_id,
            agent_id=agent_id,
            runtime_version=runtime_version,
            clock=clock,
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            transport=transport, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    async def aclose(self) -> None:
        """Close the connection pool, if this client created it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call[T]) -> T:
        request = self._request(self._http, call)
        try:
            response = await self._http.send(request)
        except httpx.RequestError as error:
            raise TransportError(
                f"{call.method} {request.url} failed: {error}", code=type(error).__name__
            ) from error
        return call.parse(response)

    # -- the runtime surface ----------------------------------------------------------------

    async def enroll(
        self,
        enrollment_token: str,
        agent_id: str,
        runtime_version: str | None = None,
        host_id: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Enrollment:
        """Exchange an ``fp_enr_`` token for this runtime's ``fp_rt_`` credential, and keep it."""
        return await self._send(
            self._enroll_call(enrollment_token, agent_id, runtime_version, host_id, labels)
        )

    async def authenticate(
        self,
        agent_id: str | None = None,
        *,
        workspace_id: str | None = None,
        org_id: str | None = None,
    ) -> Authentication:
        """Exchange the workspace key for a runtime credential for ``agent_id``, and keep it."""
        return await self._send(self._authenticate_call(agent_id, workspace_id, org_id))

    async def heartbeat(
        self,
        session_id: str,
        runtime_version: str | None = None,
        config_hash: str | None = None,
        *,
        wu_id: str | None = None,
        health: Mapping[str, Any] | None = None,
    ) -> HeartbeatResult:
        """Beat once; ``config_hash`` defaults to the hash last reported as applied."""
        return await self._send(
            self._heartbeat_call(session_id, runtime_version, config_hash, wu_id, health)
        )

    async def pull_config(self) -> ConfigPull:
        """The desired config; a 304 answers from the cached body with ``not_modified``."""
        return await self._send(self._config_call())

    async def pull_policies(self) -> PolicyPull:
        """The effective policy set; a 304 answers from the cached body with ``not_modified``."""
        return await self._send(self._policies_call())

    async def send_events(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Send kernel events; returns how many the server stored."""
        return await self._send(self._events_call(events))

    async def send_telemetry(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Send telemetry records ``{metric, value, timestamp, tags?}``."""
        return await self._send(self._telemetry_call(records))

    async def send_evidence(self, evidence_refs: Iterable[Any]) -> int:
        """Send evidence references."""
        return await self._send(self._evidence_call(evidence_refs))

    async def report_applied(self, config_hash: str) -> int:
        """Report the config hash now applied (a ``workspace_updated`` event).

        From then on every heartbeat carries it as ``config_hash`` too; when this client has a
        session, one such heartbeat is sent at once.
        """
        accepted = await self._send(self._applied_call(config_hash))
        if self.session_id is not None:
            await self.heartbeat(self.session_id)
        return accepted

    async def report_apply_failed(self, config_hash: str, message: str) -> int:
        """Report that the config with ``config_hash`` could not be applied."""
        return await self._send(self._apply_failed_call(config_hash, message))

    async def register_session(
        self,
        session_id: str,
        *,
        agent_type: str | None = None,
        agent_version: str | None = None,
        host_id: str | None = None,
        **fields: Any,
    ) -> bool:
        """Register a session (``client_type``, ``lane``, ``metadata``... pass through)."""
        extra = {"agent_type": agent_type, "agent_version": agent_version, "host_id": host_id}
        return await self._send(self._register_session_call(session_id, {**fields, **extra}))

    async def deregister_session(
        self, session_id: str, *, reason: str | None = None, ended_at: str | None = None
    ) -> bool:
        """Mark a session ended."""
        return await self._send(self._deregister_session_call(session_id, reason, ended_at))

    # -- the heartbeat loop -----------------------------------------------------------------

    async def run_heartbeat_loop(
        self,
        session_id: str,
        stop: asyncio.Event,
        *,
        on_heartbeat: Callable[[HeartbeatResult], Awaitable[None] | None] | None = None,
        on_error: Callable[[ClientError, float], None] | None = None,
        sleep: Callable[[float], Awaitable[object]] | None = None,
        random: Callable[[], float] | None = None,
        schedule: HeartbeatSchedule | None = None,
    ) -> int:
        """Heartbeat until ``stop`` is set; returns the number of successful beats.

        The asyncio twin of :meth:`fleetplane.client.Client.run_heartbeat_loop`:
        ``on_heartbeat`` may be a plain or an async function, and ``sleep`` defaults to
        waiting on ``stop``.
        """
        plan = schedule or HeartbeatSchedule(random=random or _random.random)
        beats = 0
        while not stop.is_set():
            try:
                result = await self.heartbeat(session_id)
                if on_heartbeat is not None:
                    outcome = on_heartbeat(result)
                    if inspect.isawaitable(outcome):
                        await outcome
            except ClientError as error:
                if not is_retryable(error):
                    raise
                delay = plan.after_failure(error)
                if on_error is not None:
                    on_error(error, delay)
            else:
                beats += 1
                delay = plan.after_success(result.next_heartbeat_ms)
            if stop.is_set():
                break
            if sleep is None:
                await _wait_or_stop(stop, delay)
            else:
                await sleep(delay)
        return beats
