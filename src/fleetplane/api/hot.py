"""The hot path of the runtime surface, as lean ASGI in front of the whole app: heartbeats
from cached credentials into the liveness buffer, and 304s for unchanged pulls, without touching
the database or passing through the middleware stack.

What the stack does for every request (rate limits, the body limit, security headers, request
metrics) the front does itself for the answers it gives, with the same limiter, headers and
metrics. Anything it cannot answer with certainty (unknown credential, first heartbeat, a new
version, a new config hash, a new session, bad input) goes to the app unchanged, and the
regular FastAPI route does the full work and refills the caches. Every state-changing request
outside the runtime surface brings the caches up to date with the changes committed so far
before its response leaves (`InvalidateOnChange`), so this process never serves a credential
or desired state older than its own last change.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetplane.api.context import AppContext, CachedCaller, load_identities
from fleetplane.api.errors import error_body
from fleetplane.api.ratelimit import CHARGED, RateLimiter, refusal, replay
from fleetplane.domain.tokens import token_hash
from fleetplane.services.hotpath import (
    RuntimeIdentity,
    WorkspaceAnswer,
)

if TYPE_CHECKING:
    from fleetplane.api.metrics import Metrics

log = logging.getLogger("fleetplane.hotpath")
HEARTBEAT = "/api/v1/heartbeat"
PULLS = {"/api/v1/config": "config", "/api/v1/policies": "policies"}
# Runtime-surface writes that cannot revoke or change anything the caches hold.
NON_INVALIDATING = frozenset(
    {
        "/api/v1/heartbeat",
        "/api/v1/config",
        "/api/v1/policies",
        "/api/v1/events",
        "/api/v1/telemetry",
        "/api/v1/evidence",
        "/api/v1/sessions",
        "/api/v1/sessions/register",
        "/api/v1/sessions/deregister",
        # These create a runtime or replace its credential: the route forgets that runtime
        # itself, and other processes forget it through the audit log (ChangeWatcher).
        "/api/v1/enroll",
        "/api/v1/authenticate",
    }
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_STRING_FIELDS = ("workspace_id", "session_id", "agent_id", "runtime_version", "config_hash")


def bearer(scope: Scope) -> str | None:
    """The bearer token of a raw ASGI request."""
    raw = header(scope, b"authorization")
    if raw is None:
        return None
    scheme, _, token = raw.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def header(scope: Scope, wanted: bytes) -> str | None:
    """One request header, decoded."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == wanted:
            return value.decode("latin-1")
    return None


def identity_key(workspace_id: str, kind: str, value: str) -> tuple[str, str, str]:
    """Key of the identity cache: a runtime by id, or by agent id or session id in a workspace."""
    return (workspace_id, kind, value)


def remember_caller(
    context: AppContext, token: str, caller: CachedCaller, *, generation: int
) -> None:
    """Cache a credential the database just confirmed (unless a change came in meanwhile)."""
    if context.hot.generation != generation:
        return
    context.hot.callers.put(token_hash(token), caller, used=True)


def remember_runtime(
    context: AppContext,
    identity: RuntimeIdentity,
    *,
    by_credential: bool,
    agent_id: str | None,
    session_id: str | None,
    generation: int,
) -> None:
    """Cache what a runtime last reported, under the lookup its next heartbeat will use."""
    if context.hot.generation != generation:
        return
    if by_credential:
        key = identity_key(identity.workspace_id, "id", identity.runtime_id)
    elif agent_id:
        key = identity_key(identity.workspace_id, "agent", agent_id)
    elif session_id:
        key = identity_key(identity.workspace_id, "session", session_id)
    else:
        return
    context.hot.identities.put(key, identity, used=True)


def remember_answer(context: AppContext, answer: WorkspaceAnswer, *, generation: int) -> None:
    """Cache what a heartbeat answer says about the workspace."""
    if context.hot.generation != generation:
        return
    context.hot.answers.put(answer.workspace_id, answer)


def remember_etag(
    context: AppContext, workspace_id: str, kind: str, etag: str, *, generation: int
) -> None:
    """Cache the current ETag of a pull."""
    if context.hot.generation != generation:
        return
    context.hot.etags.put((workspace_id, kind), etag)


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, list[Message], bool]:
    """The body, the messages it came in, and whether it was read whole within `limit` bytes
    (if not, reading stops there: the app, given the messages back, refuses it as too large)."""
    messages: list[Message] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return b"", messages, False
        size += len(message.get("body", b""))
        if size > limit:
            return b"", messages, False
        if not message.get("more_body", False):
            if len(messages) == 1:
                return message.get("body", b""), messages, True
            return b"".join(m.get("body", b"") for m in messages), messages, True


def _declared_length(scope: Scope) -> int:
    raw = header(scope, b"content-length")
    try:
        return int(raw) if raw is not None else 0
    except ValueError:
        return 0


class MissBatcher:
    """Reads the runtimes that heartbeats miss in the cache, many per query.

    Misses that arrive while a read is under way wait for the next one, so the number of
    queries follows the database's pace rather than the heartbeat rate: a process starting
    under a large fleet (every heartbeat a miss) reads it in batches instead of in one query
    per runtime. Several heartbeats of the same runtime share one read.
    """

    def __init__(self, context: AppContext) -> None:
        self.context = context
        self._waiting: dict[tuple[str, str, str], asyncio.Future[RuntimeIdentity | None]] = {}
        self._draining = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def load(self, key: tuple[str, str, str]) -> RuntimeIdentity | None:
        """The runtime under an identity-cache key, or None (unknown, or the read failed)."""
        future = self._waiting.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[key] = future
            self.context.hot.identity_loads += 1
            if not self._draining:
                self._draining = True
                task = asyncio.get_running_loop().create_task(self._drain())
                self._tasks.add(task)  # held until done, so it is not collected mid-read
                task.add_done_callback(self._tasks.discard)
        # Shielded: a heartbeat whose client went away must not cancel the others' read.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        hot = self.context.hot
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                generation = hot.generation
                hot.identity_reads += 1
                try:
                    found = await run_in_threadpool(
                        load_identities, self.context.database, list(batch)
                    )
                except Exception:
                    # The full route answers these heartbeats (and reports the outage).
                    log.warning(
                        "reading %d runtimes for heartbeats failed", len(batch), exc_info=True
                    )
                    found = {}
                for key, future in batch.items():
                    identity = found.get(key)
                    # Read under an older generation, it may predate a change: answer, not keep.
                    if identity is not None and hot.generation == generation:
                        hot.identities.put(key, identity, used=True)
                    if not future.done():
                        future.set_result(identity)
        finally:
            self._draining = False


Answer = tuple[int, Any, list[tuple[bytes, bytes]]]


class HotPathFront:
    """The outermost layer of the app: answers what it can from memory, hands on the rest."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        context: AppContext,
        limiter: RateLimiter,
        metrics: Metrics,
        headers: list[tuple[bytes, bytes]],
        max_body_bytes: int,
    ) -> None:
        self.app = app
        self.context = context
        self.limiter = limiter
        self.metrics = metrics
        self.headers = headers
        self.max_body_bytes = max_body_bytes
        self.misses = MissBatcher(context)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method == "POST" and path == HEARTBEAT:
                await self._heartbeat(scope, receive, send)
                return
            if method == "GET" and path in PULLS:
                await self._pull(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _caller(self, scope: Scope) -> tuple[str, bool, CachedCaller] | None:
        """The cached credential of a request, with the token's hash and whether it is a
        workspace key."""
        token = bearer(scope)
        if token is None or not token.startswith(("fp_rt_", "fp_ws_")):
            return None
        digest = token_hash(token)
        caller = self.context.hot.callers.get(digest)
        return None if caller is None else (digest, token.startswith("fp_ws_"), caller)

    def _charge(self, scope: Scope, digest: str, shared: bool) -> tuple[int, str] | None:
        """Take this request's tokens, as `RateLimit` would; the refusal if a bucket is empty."""
        limiter = self.limiter
        if not limiter.enabled:
            return None
        refused = limiter.admit(
            limiter.runtime_checks(scope, credential=("cred:" + digest, shared))
        )
        scope[CHARGED] = True  # handed on to the app, it is not charged again
        return refused

    async def _heartbeat(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        found = self._caller(scope)
        if found is None or _declared_length(scope) > self.max_body_bytes:
            self.context.hot.full_route["credential" if found is None else "body"] += 1
            await self.app(scope, receive, send)
            return
        digest, shared, caller = found
        refused = self._charge(scope, digest, shared)
        if refused is not None:
            await self._refuse(send, HEARTBEAT, "POST", refused, started)
            return
        body, messages, whole = await _read_body(receive, self.max_body_bytes)
        answer: Answer | str = "body"
        if whole:
            try:
                answer = await self._fast_heartbeat(caller, digest, body)
            except Exception:
                log.exception("the heartbeat fast path failed; the full route answers")
                answer = "error"
        if isinstance(answer, str):
            self.context.hot.full_route[answer] += 1
            await self.app(scope, replay(messages, receive), send)
            return
        status, payload, extra = answer
        await self._respond(send, HEARTBEAT, "POST", status, payload, extra, started)

    async def _pull(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path = scope["path"]
        presented = header(scope, b"if-none-match")
        found = self._caller(scope) if presented else None
        if (
            presented is None
            or found is None
            or not self._not_modified(scope, found[2], presented, PULLS[path])
        ):
            await self.app(scope, receive, send)
            return
        digest, shared, _caller = found
        refused = self._charge(scope, digest, shared)
        if refused is not None:
            await self._refuse(send, path, "GET", refused, started)
            return
        etag = [(b"etag", presented.encode("latin-1"))]
        await self._respond(send, path, "GET", 304, None, etag, started)

    async def _respond(
        self,
        send: Send,
        route: str,
        method: str,
        status: int,
        payload: Any,
        extra: list[tuple[bytes, bytes]],
        started: float,
    ) -> None:
        body = orjson.dumps(payload, option=orjson.OPT_UTC_Z) if payload is not None else b""
        headers = [(b"content-length", str(len(body)).encode())]
        if payload is not None:
            headers.append((b"content-type", b"application/json"))
        headers += extra
        headers += self.headers
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(method, route, status, time.perf_counter() - started)

    async def _refuse(
        self, send: Send, route: str, method: str, refused: tuple[int, str], started: float
    ) -> None:
        body, headers = refusal(*refused)
        headers += self.headers
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(method, route, 429, time.perf_counter() - started)

    def _not_modified(self, scope: Scope, caller: CachedCaller, presented: str, kind: str) -> bool:
        query = scope.get("query_string", b"")
        if query:
            asked = parse_qs(query.decode("latin-1")).get("workspace_id", [caller.workspace_id])
            if asked[0] != caller.workspace_id:
                return False
        etag = self.context.hot.etags.get((caller.workspace_id, kind))
        return etag is not None and etag in {p.strip() for p in presented.split(",")}

    async def _fast_heartbeat(self, caller: CachedCaller, digest: str, body: bytes) -> Answer | str:
        """The answer to a heartbeat from cached state, or why the full route must answer it
        (a `fleetplane_heartbeat_full_route_total` reason)."""
        try:
            fields = orjson.loads(body)
        except orjson.JSONDecodeError:
            return "body"
        if not isinstance(fields, dict):
            return "body"
        for name in _STRING_FIELDS:
            value = fields.get(name)
            if value is not None and not isinstance(value, str):
                return "body"
        workspace_id = fields.get("workspace_id")
        if workspace_id is not None and workspace_id != caller.workspace_id:
            return "body"
        if fields.get("config_apply_failed_hash") is not None:
            return "report"  # a reported failure changes drift: the full route records it
        identity = self._identity(caller, fields)
        if identity is None:
            # A runtime this process has not seen yet: one indexed read, no write.
            identity = await self._load_identity(caller, fields)
        if identity is None or not identity.has_heartbeat:
            return "runtime"  # unknown here, or its first heartbeat (written at once)
        if caller.runtime_id is not None and identity.credential_hash != digest:
            return "credential"  # replaced since it was cached: the full route says 401
        version = fields.get("runtime_version")
        if version not in (None, "unknown", identity.version):
            return "report"
        observed = fields.get("config_hash")
        if observed is not None and observed != identity.observed_config_hash:
            return "report"
        if observed is not None and observed == identity.apply_failed_hash:
            return "report"  # reporting the hash it failed to apply as applied clears it
        session_id = fields.get("session_id")
        if session_id and session_id != identity.last_session_id:
            return "report"
        answer = self.context.hot.answers.get(caller.workspace_id)
        now = self.context.clock()
        if answer is None or (answer.dev_override_until and answer.dev_override_until <= now):
            return "workspace"
        if not self.context.hot.liveness.offer(identity.runtime_id, now, session_id):
            busy = error_body(
                "rate_limited",
                "the server is catching up; retry shortly",
                {"retryAfterSeconds": 1},
            )
            return 429, busy, [(b"retry-after", b"1")]
        return (
            200,
            {
                "status": "ok",
                "server_time": now,
                "next_heartbeat_ms": self.context.settings.heartbeat_interval_seconds * 1000,
                "config_hash": answer.config_hash,
                "policy_mode": answer.policy_mode,
            },
            [],
        )

    async def _load_identity(
        self, caller: CachedCaller, fields: dict[str, Any]
    ) -> RuntimeIdentity | None:
        """Read a runtime the cache misses, by the same lookup the full route would use."""
        if caller.runtime_id is not None:
            key = identity_key(caller.workspace_id, "id", caller.runtime_id)
        elif fields.get("agent_id"):
            key = identity_key(caller.workspace_id, "agent", fields["agent_id"])
        else:
            return None  # a lookup through sessions is rare; the full route does it
        return await self.misses.load(key)

    def _identity(self, caller: CachedCaller, fields: dict[str, Any]) -> RuntimeIdentity | None:
        cache = self.context.hot.identities
        if caller.runtime_id is not None:
            return cache.get(identity_key(caller.workspace_id, "id", caller.runtime_id))
        agent_id = fields.get("agent_id")
        if agent_id:
            return cache.get(identity_key(caller.workspace_id, "agent", agent_id))
        session_id = fields.get("session_id")
        if session_id:
            return cache.get(identity_key(caller.workspace_id, "session", session_id))
        return None


class InvalidateOnChange:
    """Brings this process's caches up to date before the answer to any request that may have
    changed what they hold leaves, from the audit rows committed so far (`HotPath.catch_up`):
    that request's change forgets what it names, or drops every cache, as in other processes,
    and a request that changed nothing cached (a sign-in, a new member) drops nothing."""

    def __init__(self, app: ASGIApp, *, context: AppContext) -> None:
        self.app = app
        self.context = context

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in SAFE_METHODS
            or scope["path"] in NON_INVALIDATING
        ):
            await self.app(scope, receive, send)
            return
        hot = self.context.hot
        caught_up = False

        async def catching_up_send(message: Message) -> None:
            # Before the answer leaves, so the caller's next request sees the change.
            nonlocal caught_up
            if message["type"] == "http.response.start" and not caught_up:
                caught_up = True
                await run_in_threadpool(hot.catch_up)
            await send(message)

        try:
            await self.app(scope, receive, catching_up_send)
        finally:
            if not caught_up:  # failed before answering: the outer layers answer it
                await run_in_threadpool(hot.catch_up)
