"""What the sync and async clients share: request building, response parsing and client state.

Each operation is a :class:`Call`: the method, path, body and a ``parse`` function that turns the
``httpx.Response`` into a typed result (or raises from :mod:`fleetplane.client.errors`).
``Client`` and ``AsyncClient`` differ only in how they send a call.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import httpx

from fleetplane.client.errors import UnexpectedResponseError, error_from_response
from fleetplane.client.events import (
    config_apply_failed_event,
    iso_timestamp,
    workspace_updated_event,
)
from fleetplane.client.models import (
    Authentication,
    ConfigPull,
    Enrollment,
    HeartbeatResult,
    PolicyPull,
)

T = TypeVar("T")

API_PREFIX = "/api/v1"
USER_AGENT = "fleetplane-client/0.1.0"
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request of the runtime surface and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    authenticated: bool = True


@dataclass(frozen=True, slots=True)
class _Cached:
    etag: str
    body: dict[str, Any]


def normalise_endpoint(endpoint: str) -> str:
    """The server's base URL: no trailing slash and no ``/api/v1`` suffix."""
    # Accept the server's public URL (what `control_plane.endpoint` holds) with or without
    # the API prefix, so either form a person copies works.
    url = endpoint.strip().rstrip("/")
    url = url.removesuffix(API_PREFIX)
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"endpoint must be an http(s) URL, not {endpoint!r}")
    return url


def _json_object(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 2xx answer; an error from the error tree otherwise."""
    if not response.is_success:
        raise error_from_response(response)
    try:
        body = response.json()
    except ValueError as error:
        raise UnexpectedResponseError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code} without a JSON body",
            code="invalid_json",
        ) from error
    if not isinstance(body, dict):
        raise UnexpectedResponseError(
            f"{response.request.url.path} answered a JSON {type(body).__name__}, not an object",
            code="invalid_json",
        )
    return body


def _field(body: Mapping[str, Any], name: str, kind: type[T]) -> T:
    value = body.get(name)
    # bool is an int in Python; the contract never sends a bool where a number belongs.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise UnexpectedResponseError(
            f"the answer's {name!r} is missing or not a {kind.__name__}",
            code="unexpected_shape",
            details={"field": name},
        )
    result: T = value
    return result


def _without_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


class BaseClient:
    """Holds the credential and what the runtime knows; builds calls, parses answers."""

    def __init__(
        self,
        endpoint: str,
        *,
        token: str | None = None,
        workspace_id: str | None = None,
        org_id: str | None = None,
        agent_id: str | None = None,
        runtime_version: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.base_url = normalise_endpoint(endpoint)
        self.token = token
        self.workspace_id = workspace_id
        self.org_id = org_id
        self.agent_id = agent_id
        self.runtime_version = runtime_version
        self.clock = clock or (lambda: datetime.now(UTC))
        # The last session this client heartbeated or registered; events name it so a
        # workspace-key caller's events are attributed to this runtime.
        self.session_id: str | None = None
        # The config hash this runtime has applied; every heartbeat carries it.
        self.applied_config_hash: str | None = None
        # What the last heartbeat said the workspace wants.
        self.desired_config_hash: str | None = None
        self.policy_mode: str | None = None
        self._cache: dict[str, _Cached] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.base_url!r}, workspace_id={self.workspace_id!r}, "
            f"agent_id={self.agent_id!r})"
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}{API_PREFIX}{path}"

    def _request(self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        headers = {"Accept": "application/json", **call.headers}
        if call.authenticated and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return http.build_request(
            call.method, self._url(call.path), json=call.json, params=call.params, headers=headers
        )

    def timestamp(self) -> str:
        """Now, as an event timestamp."""
        return iso_timestamp(self.clock())

    def _scoped(self, **fields: Any) -> dict[str, Any]:
        return _without_none({"workspace_id": self.workspace_id, **fields})

    # -- calls ------------------------------------------------------------------------------

    def _enroll_call(
        self,
        enrollment_token: str,
        agent_id: str,
        runtime_version: str | None,
        host_id: str | None,
        labels: Mapping[str, str] | None,
    ) -> Call[Enrollment]:
        version = runtime_version or self.runtime_version

        def parse(response: httpx.Response) -> Enrollment:
            body = _json_object(response)
            result = Enrollment(
                runtime_id=_field(body, "runtime_id", str),
                credential=_field(body, "credential", str),
                workspace_id=_field(body, "workspace_id", str),
                org_id=_field(body, "org_id", str),
                control_plane=_field(body, "control_plane", dict),
            )
            self.token = result.credential
            self.workspace_id = result.workspace_id
            self.org_id = result.org_id
            self.agent_id = agent_id
            self.runtime_version = version
            return result

        body = _without_none(
            {
                "enrollment_token": enrollment_token,
                "agent_id": agent_id,
                "runtime_version": version,
                "host_id": host_id,
                "labels": dict(labels) if labels is not None else None,
            }
        )
        return Call("POST", "/enroll", parse, json=body, authenticated=False)

    def _authenticate_call(
        self, agent_id: str | None, workspace_id: str | None, org_id: str | None
    ) -> Call[Authentication]:
        workspace_id = workspace_id or self.workspace_id
        org_id = org_id or self.org_id
        agent_id = agent_id or self.agent_id
        if workspace_id is None or org_id is None:
            raise ValueError("authenticate needs workspace_id and org_id")

        def parse(response: httpx.Response) -> Authentication:
            body = _json_object(response)
            result = Authentication(
                workspace_id=_field(body, "workspace_id", str),
                org_id=_field(body, "org_id", str),
                agent_id=_field(body, "agent_id", str),
                token=_field(body, "token", str),
            )
            self.token = result.token
            self.workspace_id = result.workspace_id
            self.org_id = result.org_id
            self.agent_id = result.agent_id
            return result

        body = _without_none({"workspace_id": workspace_id, "org_id": org_id, "agent_id": agent_id})
        return Call("POST", "/authenticate", parse, json=body)

    def _heartbeat_call(
        self,
        session_id: str,
        runtime_version: str | None,
        config_hash: str | None,
        wu_id: str | None,
        health: Mapping[str, Any] | None,
    ) -> Call[HeartbeatResult]:
        def parse(response: httpx.Response) -> HeartbeatResult:
            body = _json_object(response)
            result = HeartbeatResult(
                status=_field(body, "status", str),
                server_time=_field(body, "server_time", str),
                next_heartbeat_ms=_field(body, "next_heartbeat_ms", int),
                config_hash=_field(body, "config_hash", str),
                policy_mode=_field(body, "policy_mode", str),
            )
            self.session_id = session_id
            self.desired_config_hash = result.config_hash
            self.policy_mode = result.policy_mode
            return result

        body = self._scoped(
            session_id=session_id,
            agent_id=self.agent_id,
            wu_id=wu_id,
            health=dict(health) if health is not None else None,
            runtime_version=runtime_version or self.runtime_version,
            config_hash=config_hash or self.applied_config_hash,
        )
        return Call("POST", "/heartbeat", parse, json=body)

    def _pull_call(
        self, path: str, build: Callable[[dict[str, Any], str | None, bool], T]
    ) -> Call[T]:
        params = _without_none({"workspace_id": self.workspace_id})
        key = f"{path}?{params.get('workspace_id', '')}"
        cached = self._cache.get(key)
        headers = {"If-None-Match": cached.etag} if cached is not None else {}

        def parse(response: httpx.Response) -> T:
            if response.status_code == 304:
                if cached is None:
                    raise UnexpectedResponseError(
                        f"{path} answered 304 to a request without If-None-Match",
                        code="unexpected_not_modified",
                    )
                etag = response.headers.get("etag") or cached.etag
                return build(copy.deepcopy(cached.body), etag, True)
            body = _json_object(response)
            etag = response.headers.get("etag")
            result = build(copy.deepcopy(body), etag, False)
            if etag:
                self._cache[key] = _Cached(etag, body)
            else:
                self._cache.pop(key, None)
            return result

        return Call("GET", path, parse, params=params, headers=headers)

    def _config_call(self) -> Call[ConfigPull]:
        def build(body: dict[str, Any], etag: str | None, not_modified: bool) -> ConfigPull:
            if "config" not in body:
                raise UnexpectedResponseError(
                    "the config answer has no 'config'", code="unexpected_shape"
                )
            return ConfigPull(
                workspace_id=_field(body, "id", str),
                control_plane=_field(body, "control_plane", dict),
                config=body["config"],
                config_hash=_field(body, "config_hash", str),
                config_revision=_field(body, "config_revision", int),
                etag=etag,
                not_modified=not_modified,
                body=body,
            )

        return self._pull_call("/config", build)

    def _policies_call(self) -> Call[PolicyPull]:
        def build(body: dict[str, Any], etag: str | None, not_modified: bool) -> PolicyPull:
            return PolicyPull(
                default_decision=_field(body, "default_decision", str),
                rules=_field(body, "rules", list),
                etag=etag,
                not_modified=not_modified,
                body=body,
            )

        return self._pull_call("/policies", build)

    def _accepted_call(self, path: str, body: dict[str, Any]) -> Call[int]:
        def parse(response: httpx.Response) -> int:
            return _field(_json_object(response), "accepted", int)

        return Call("POST", path, parse, json=body)

    def _events_call(self, events: Iterable[Mapping[str, Any]]) -> Call[int]:
        body = self._scoped(agent_id=self.agent_id, events=[dict(event) for event in events])
        return self._accepted_call("/events", body)

    def _telemetry_call(self, records: Iterable[Mapping[str, Any]]) -> Call[int]:
        return self._accepted_call(
            "/telemetry", self._scoped(records=[dict(record) for record in records])
        )

    def _evidence_call(self, evidence_refs: Iterable[Any]) -> Call[int]:
        return self._accepted_call("/evidence", self._scoped(evidence_refs=list(evidence_refs)))

    def _applied_call(self, config_hash: str) -> Call[int]:
        event = workspace_updated_event(
            config_hash, timestamp=self.timestamp(), session_id=self.session_id
        )
        call = self._events_call([event])

        def parse(response: httpx.Response) -> int:
            accepted = call.parse(response)
            self.applied_config_hash = config_hash
            return accepted

        return Call(call.method, call.path, parse, json=call.json)

    def _apply_failed_call(self, config_hash: str, message: str) -> Call[int]:
        event = config_apply_failed_event(
            config_hash, message, timestamp=self.timestamp(), session_id=self.session_id
        )
        return self._events_call([event])

    def _ok_call(self, path: str, body: dict[str, Any], session_id: str | None) -> Call[bool]:
        def parse(response: httpx.Response) -> bool:
            ok = _field(_json_object(response), "ok", bool)
            self.session_id = session_id
            return ok

        return Call("POST", path, parse, json=body)

    def _register_session_call(self, session_id: str, fields: Mapping[str, Any]) -> Call[bool]:
        known = {"agent_id": self.agent_id, "agent_version": self.runtime_version}
        body = self._scoped(session_id=session_id, **{**known, **_without_none(fields)})
        return self._ok_call("/sessions/register", body, session_id)

    def _deregister_session_call(
        self, session_id: str, reason: str | None, ended_at: str | None
    ) -> Call[bool]:
        body = self._scoped(session_id=session_id, reason=reason, ended_at=ended_at)
        # A deregistered session no longer names this runtime for its events.
        next_session = None if self.session_id == session_id else self.session_id
        return self._ok_call("/sessions/deregister", body, next_session)
