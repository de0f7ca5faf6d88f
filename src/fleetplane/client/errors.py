"""The one exception tree of the runtime client.

Every failure a client call can raise is a :class:`ClientError`:

* :class:`TransportError` - no HTTP answer at all (connection refused, timeout, TLS failure);
* :class:`UnexpectedResponseError` - a 2xx answer that is not the JSON the contract promises;
* :class:`APIError` and its subclasses - a non-2xx answer, built from fleetplane's error body
  ``{"error": {"code", "message", "details"}}`` (SPEC 4.1);
* :class:`TightenOnlyViolationError` - a local policy that tries to loosen the cloud policy
  under the ``tighten-only`` authority mode (raised locally, never by the server).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

__all__ = [
    "APIError",
    "AuthError",
    "BadRequestError",
    "ClientError",
    "ConflictError",
    "ForbiddenError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ServerError",
    "TightenOnlyViolationError",
    "TransportError",
    "UnexpectedResponseError",
    "ValidationError",
    "error_from_response",
    "parse_retry_after",
]


class ClientError(Exception):
    """Base of every error the client raises."""

    def __init__(self, message: str, *, code: str = "client_error", details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.details = details


class TransportError(ClientError):
    """The request got no HTTP answer (network failure, timeout); worth retrying."""


class UnexpectedResponseError(ClientError):
    """A successful status whose body is not what the wire contract promises."""


class TightenOnlyViolationError(ClientError):
    """Local policy tried to loosen the cloud policy under ``tighten-only``."""

    def __init__(self, message: str, *, rule_id: str | None, workspace_id: str) -> None:
        super().__init__(
            message,
            code="tighten_only_violation",
            details={"workspace_id": workspace_id, "rule_id": rule_id},
        )
        self.rule_id = rule_id
        self.workspace_id = workspace_id


class APIError(ClientError):
    """The server answered with a non-2xx status."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.status_code = status_code
        # Seconds the server asked us to wait (429, 503); None when it did not say.
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status_code} {self.code}: {self.message}"


class BadRequestError(APIError):
    """400: the request could not be read."""


class AuthError(APIError):
    """401: no credential, or one that is unknown, expired, used up or revoked."""


class ForbiddenError(APIError):
    """403: the credential is valid but may not do this (e.g. another workspace)."""


class NotFoundError(APIError):
    """404: absent or not visible to this credential."""


class ConflictError(APIError):
    """409: the change conflicts with the current state."""


class PayloadTooLargeError(APIError):
    """413: the body is over the server's limit."""


class ValidationError(APIError):
    """422: well-formed input that breaks a rule (bad version, bad hash, bad policy set)."""


class RateLimitedError(APIError):
    """429: too many requests; ``retry_after`` says how long to wait, when the server said."""


class ServerError(APIError):
    """5xx: the server failed; worth retrying later."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitedError,
}


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date), else None."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _error_class(status_code: int) -> type[APIError]:
    if status_code >= 500:
        return ServerError
    return _BY_STATUS.get(status_code, APIError)


def error_from_response(response: httpx.Response) -> APIError:
    """The :class:`APIError` subclass for a non-2xx answer, with the server's code and message."""
    status = response.status_code
    code = f"http_{status}"
    message = response.reason_phrase or f"HTTP {status}"
    details: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    envelope = body.get("error") if isinstance(body, dict) else None
    if isinstance(envelope, dict):
        code = str(envelope.get("code") or code)
        message = str(envelope.get("message") or message)
        details = envelope.get("details")
    elif response.text:
        # A proxy's HTML error page or plain text: keep a short excerpt for the log.
        details = {"body": response.text[:500]}
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    return _error_class(status)(
        message, status_code=status, code=code, details=details, retry_after=retry_after
    )
