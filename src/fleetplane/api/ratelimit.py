"""Rate limits on the runtime surface and sign-in: token buckets as pure ASGI middleware.

Every runtime-surface request takes a token from two buckets, one for its bearer credential
and one for its client address; a sign-in takes one from its address's and its account's
sign-in buckets. An empty bucket answers 429 with `Retry-After` and the standard error body,
before any route, cache or database is touched. Other routes pass untouched.

Limits are sized so that a real fleet never meets them (a runtime heartbeats every 30 s and
pulls a few times per sync interval: about 0.1 request per second), and so that only a runaway
or hostile client does:

* a runtime credential (`fp_rt_`) or operator token: one runtime or person, 50/s, burst 100;
* a workspace key (`fp_ws_`) is shared by every runtime of a fleet that uses it, so its bucket
  is much larger (1000/s, burst 2000: about 10,000 runtimes); a fleet beyond that should give
  each runtime its own credential (which exact drift tracking needs anyway) or raise the limit;
* a client address can stand for a whole fleet behind one NAT: 1000/s, burst 2000;
* sign-in, per address and per account: 1/s, burst 10 (argon2 makes each attempt costly; the
  database throttle of failed sign-ins still applies behind this one).

Buckets live in process memory, keyed by the SHA-256 of the credential (never the plaintext).
With several server processes every rate and burst is divided by `RATE_LIMIT_PROCESSES`, so the
processes together admit at most the configured limit however requests are spread; one client
whose connections all reach one process gets its share, which is still far above real use.
A database-backed counter would be exact but would cost a write on the heartbeat hot path.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetplane.api.errors import error_body
from fleetplane.settings import Settings

RUNTIME_PATHS = frozenset(
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
        "/api/v1/authenticate",
        "/api/v1/enroll",
    }
)
LOGIN_PATHS = frozenset({"/api/v1/auth/login", "/dashboard/login"})
_FLEET_CONFIG = ("/api/v1/workspaces/", "/fleet/config")
# A sign-in body larger than this carries no account we would look at (BodyLimit still applies).
_MAX_LOGIN_BODY = 16 * 1024


@dataclass(frozen=True)
class Limit:
    """A token bucket's refill rate (tokens per second) and capacity."""

    per_second: float
    burst: float

    def share(self, processes: int) -> Limit:
        """This process's share when `processes` processes enforce the limit together."""
        return Limit(self.per_second / processes, max(1.0, self.burst / processes))


class Buckets:
    """Token buckets by key; bounded in number, so random keys cannot grow memory."""

    def __init__(self, *, max_buckets: int, clock: Callable[[], float]) -> None:
        self.max_buckets = max_buckets
        self.clock = clock
        # key -> (tokens, updated_at, limit)
        self._buckets: dict[str, tuple[float, float, Limit]] = {}

    def _level(self, key: str, limit: Limit, now: float) -> float:
        tokens, updated, _ = self._buckets.get(key, (limit.burst, now, limit))
        return min(limit.burst, tokens + (now - updated) * limit.per_second)

    def wait(self, key: str, limit: Limit) -> float:
        """Seconds until `key` has a token (0 when it has one now); takes nothing."""
        level = self._level(key, limit, self.clock())
        return 0.0 if level >= 1.0 else (1.0 - level) / limit.per_second

    def take(self, key: str, limit: Limit) -> None:
        """Take one token from `key`'s bucket (after `wait` said 0)."""
        now = self.clock()
        level = self._level(key, limit, now)
        if key not in self._buckets and len(self._buckets) >= self.max_buckets:
            self._evict(now)
        self._buckets[key] = (level - 1.0, now, limit)

    def _evict(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket; if every bucket is busy, start
        # over (failing open for a moment beats growing without bound).
        full = [
            key
            for key, (tokens, updated, limit) in self._buckets.items()
            if tokens + (now - updated) * limit.per_second >= limit.burst
        ]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_buckets:
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True)
class Limits:
    """This process's share of every configured limit."""

    credential: Limit
    workspace_key: Limit
    address: Limit
    login: Limit

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits of the settings, divided among `RATE_LIMIT_PROCESSES` processes."""
        processes = settings.rate_limit_processes
        return cls(
            credential=Limit(
                settings.rate_limit_credential_per_second, settings.rate_limit_credential_burst
            ).share(processes),
            workspace_key=Limit(
                settings.rate_limit_workspace_key_per_second,
                settings.rate_limit_workspace_key_burst,
            ).share(processes),
            address=Limit(
                settings.rate_limit_address_per_second, settings.rate_limit_address_burst
            ).share(processes),
            login=Limit(
                settings.rate_limit_login_per_second, settings.rate_limit_login_burst
            ).share(processes),
        )


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    for name, value in headers:
        if name == wanted:
            return value
    return None


def _digest(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def bearer_token(scope: Scope) -> bytes | None:
    """The request's bearer token, as sent."""
    raw = _header(scope, b"authorization")
    if raw is None:
        return None
    scheme, _, token = raw.partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return token


def credential_key(scope: Scope) -> tuple[str, bool] | None:
    """The bucket key of the request's bearer credential, and whether it is a workspace key."""
    token = bearer_token(scope)
    if token is None:
        return None
    return "cred:" + _digest(token), token.startswith(b"fp_ws_")


def client_address(scope: Scope) -> str:
    """The client address as the server sees it (uvicorn resolves trusted forwarded headers)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def login_account(body: bytes, content_type: bytes | None) -> str | None:
    """The account a sign-in names (JSON or form `email`), normalised, or None."""
    media = (content_type or b"").split(b";", 1)[0].strip().lower()
    email: Any = None
    try:
        if media == b"application/x-www-form-urlencoded":
            email = parse_qs(body.decode("utf-8"), max_num_fields=50).get("email", [None])[0]
        else:
            parsed = json.loads(body)
            email = parsed.get("email") if isinstance(parsed, dict) else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(email, str) or not email.strip():
        return None
    return email.strip().lower()


def is_runtime_surface(method: str, path: str) -> bool:
    """Whether a request belongs to the runtime surface (SPEC 4.2, and fleet/config)."""
    if path in RUNTIME_PATHS:
        return True
    prefix, suffix = _FLEET_CONFIG
    return method == "GET" and path.startswith(prefix) and path.endswith(suffix)


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, list[Message]]:
    """Up to `limit` bytes of the body, and every message read, for replaying."""
    messages: list[Message] = []
    size = 0
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= limit:
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return (b"".join(chunks) if size <= limit else b""), messages


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A receive that gives back the messages read already, then reads on."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


# Set in a request's scope by the hot path once it has charged the request to its buckets, so
# that the request, handed on to the full app, is not charged twice.
CHARGED = "fleetplane.rate_charged"


class RateLimiter:
    """This process's token buckets and limits, shared by the middleware and the hot path."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = settings.rate_limit_enabled
        self.limits = Limits.from_settings(settings)
        self.buckets = Buckets(max_buckets=settings.rate_limit_max_buckets, clock=clock)
        self.refused = 0

    def runtime_checks(
        self, scope: Scope, *, credential: tuple[str, bool] | None = None
    ) -> list[tuple[str, Limit, str]]:
        """The buckets a runtime-surface request takes from: its address's and its credential's.

        `credential` is the request's `credential_key`, when the caller has worked it out.
        """
        checks = [("addr:" + client_address(scope), self.limits.address, "address")]
        if credential is None:
            credential = credential_key(scope)
        if credential is not None:
            key, shared = credential
            limit = self.limits.workspace_key if shared else self.limits.credential
            checks.append((key, limit, "credential"))
        return checks

    def admit(self, checks: list[tuple[str, Limit, str]]) -> tuple[int, str] | None:
        """Take a token from each bucket, or, when one is empty, take none and return the
        seconds to wait (at least 1) and which limit was met."""
        waits = [(self.buckets.wait(key, limit), scope_name) for key, limit, scope_name in checks]
        longest, which = max(waits)
        if longest > 0:
            self.refused += 1
            return max(1, math.ceil(longest)), which
        for key, limit, _ in checks:
            self.buckets.take(key, limit)
        return None


class RateLimit:
    """Token buckets in front of the runtime surface and sign-in; 429 past them."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.limiter
        if not limiter.enabled or scope["type"] != "http" or scope.get(CHARGED):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path in LOGIN_PATHS:
            address = client_address(scope)
            body, messages = await _read_body(receive, _MAX_LOGIN_BODY)
            receive = replay(messages, receive)
            checks = [("login-addr:" + address, limiter.limits.login, "address")]
            account = login_account(body, _header(scope, b"content-type"))
            if account is not None:
                checks.append(
                    ("login-account:" + _digest(account.encode()), limiter.limits.login, "account")
                )
        elif is_runtime_surface(method, path):
            checks = limiter.runtime_checks(scope)
        else:
            await self.app(scope, receive, send)
            return
        refusal = limiter.admit(checks)
        if refusal is not None:
            await _refuse(send, retry_after=refusal[0], which=refusal[1])
            return
        await self.app(scope, receive, send)


def refusal(retry_after: int, which: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The 429 answer's body and headers."""
    body = json.dumps(
        error_body(
            "rate_limited",
            f"too many requests; retry after {retry_after} s",
            {"retryAfterSeconds": retry_after, "limit": which},
        )
    ).encode()
    return body, [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]


async def _refuse(send: Send, *, retry_after: int, which: str) -> None:
    body, headers = refusal(retry_after, which)
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})
