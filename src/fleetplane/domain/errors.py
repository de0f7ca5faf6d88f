"""The one exception tree of fleetplane; the API maps each class to an HTTP status in one place."""

from __future__ import annotations

from typing import Any


class FleetplaneError(Exception):
    """Base of every error fleetplane raises on purpose."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class Invalid(FleetplaneError):
    """The input is well-formed but breaks a rule (HTTP 422)."""

    code = "invalid"


class BadRequest(FleetplaneError):
    """The input cannot be read at all (HTTP 400)."""

    code = "bad_request"


class InvalidDocument(Invalid):
    """A YAML or JSON document could not be parsed; carries the 1-based line and column."""

    code = "invalid_document"

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message, details={"line": line, "column": column})
        self.line = line
        self.column = column


class TightenOnlyViolation(Invalid):
    """A local policy tried to loosen the cloud policy in tighten-only mode."""

    code = "tighten_only_violation"


class Unauthenticated(FleetplaneError):
    """No credential, or one that is unknown, expired or revoked (HTTP 401)."""

    code = "unauthenticated"


class Forbidden(FleetplaneError):
    """A valid credential that may not do this, where existence is already known (HTTP 403)."""

    code = "forbidden"


class NotFound(FleetplaneError):
    """Absent, or not visible to the caller (HTTP 404)."""

    code = "not_found"


class Conflict(FleetplaneError):
    """The change conflicts with the current state (HTTP 409)."""

    code = "conflict"


class PayloadTooLarge(FleetplaneError):
    """The body is over the configured limit (HTTP 413)."""

    code = "payload_too_large"


class RateLimited(FleetplaneError):
    """Too many requests; retry after the given number of seconds (HTTP 429)."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retryAfterSeconds": retry_after})
        self.retry_after = retry_after
