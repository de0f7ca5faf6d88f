"""The blocking runtime client, over ``httpx.Client``."""

from __future__ import annotations

import random as _random
import threading
from collections.abc import Callable, Iterable, Mapping
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


class Client(BaseClient):
    """A LumenFlow control-plane SDK v1 runtime client for fleetplane (blocking).

    Pass ``transport=`` (any ``httpx.BaseTransport``) to talk to an app in-process, or
    ``http_client=`` to share one connection pool between several runtimes' clients; a client
    closes only an ``httpx.Client`` it created itself.
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
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
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
        self._http = http_client or httpx.Client(
            transport=transport, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )

    def close(self) -> None:
        """Close the connection pool, if this client created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: Call[T]) -> T:
        request = self._request(self._http, call)
        try:
            response = self._http.send(request)
        except httpx.RequestError as error:
            raise TransportError(
                f"{call.method} {request.url} failed: {error}", code=type(error).__name__
            ) from error
        return call.parse(response)

    # -- the runtime surface ----------------------------------------------------------------

    def enroll(
        self,
        enrollment_token: str,
        agent_id: str,
        runtime_version: str | None = None,
        host_id: str | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> Enrollment:
        """Exchange an ``fp_enr_`` token for this runtime's ``fp_rt_`` credential, and keep it."""
        return self._send(
            self._enroll_call(enrollment_token, agent_id, runtime_version, host_id, labels)
        )

    def authenticate(
        self,
        agent_id: str | None = None,
        *,
        workspace_id: str | None = None,
        org_id: str | None = None,
    ) -> Authentication:
        """Exchange the workspace key for a runtime credential for ``agent_id``, and keep it."""
        return self._send(self._authenticate_call(agent_id, workspace_id, org_id))

    def heartbeat(
        self,
        session_id: str,
        runtime_version: str | None = None,
        config_hash: str | None = None,
        *,
        wu_id: str | None = None,
        health: Mapping[str, Any] | None = None,
    ) -> HeartbeatResult:
        """Beat once; ``config_hash`` defaults to the hash last reported as applied."""
        return self._send(
            self._heartbeat_call(session_id, runtime_version, config_hash, wu_id, health)
        )

    def pull_config(self) -> ConfigPull:
        """The desired config; a 304 answers from the cached body with ``not_modified``."""
        return self._send(self._config_call())

    def pull_policies(self) -> PolicyPull:
        """The effective policy set; a 304 answers from the cached body with ``not_modified``."""
        return self._send(self._policies_call())

    def send_events(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Send kernel events; returns how many the server stored."""
        return self._send(self._events_call(events))

    def send_telemetry(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Send telemetry records ``{metric, value, timestamp, tags?}``."""
        return self._send(self._telemetry_call(records))

    def send_evidence(self, evidence_refs: Iterable[Any]) -> int:
        """Send evidence references."""
        return self._send(self._evidence_call(evidence_refs))

    def report_applied(self, config_hash: str) -> int:
        """Report the config hash now applied (a ``workspace_updated`` event).

        From then on every heartbeat carries it as ``config_hash`` too; when this client has a
        session, one such heartbeat is sent at once.
        """
        accepted = self._send(self._applied_call(config_hash))
        if self.session_id is not None:
            self.heartbeat(self.session_id)
        return accepted

    def report_apply_failed(self, config_hash: str, message: str) -> int:
        """Report that the config with ``config_hash`` could not be applied."""
        return self._send(self._apply_failed_call(config_hash, message))

    def register_session(
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
        return self._send(self._register_session_call(session_id, {**fields, **extra}))

    def deregister_session(
        self, session_id: str, *, reason: str | None = None, ended_at: str | None = None
    ) -> bool:
        """Mark a session ended."""
        return self._send(self._deregister_session_call(session_id, reason, ended_at))

    # -- the heartbeat loop -----------------------------------------------------------------

    def run_heartbeat_loop(
        self,
        session_id: str,
        stop: threading.Event,
        *,
        on_heartbeat: Callable[[HeartbeatResult], None] | None = None,
        on_error: Callable[[ClientError, float], None] | None = None,
        sleep: Callable[[float], object] | None = None,
        random: Callable[[], float] | None = None,
        schedule: HeartbeatSchedule | None = None,
    ) -> int:
        """Heartbeat until ``stop`` is set; returns the number of successful beats.

        Waits the server's ``next_heartbeat_ms`` (+-10% jitter) between beats and backs off
        exponentially on retryable failures (see :mod:`fleetplane.client.schedule`). An error
        that is not retryable (401, 403, 422...) ends the loop by raising it. ``on_heartbeat``
        runs after each beat (its retryable errors back off like the beat's own); ``sleep``
        defaults to waiting on ``stop``, so setting it ends the wait at once.
        """
        plan = schedule or HeartbeatSchedule(random=random or _random.random)
        wait = sleep or stop.wait
        beats = 0
        while not stop.is_set():
            try:
                result = self.heartbeat(session_id)
                if on_heartbeat is not None:
                    on_heartbeat(result)
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
            wait(delay)
        return beats
