"""The error tree carries codes and details the API passes on unchanged."""

from __future__ import annotations

from fleetplane.domain.errors import Invalid, InvalidDocument, NotFound, RateLimited


def test_codes_and_details() -> None:
    limited = RateLimited("slow down", retry_after=7)
    assert (limited.code, limited.retry_after, limited.details) == (
        "rate_limited",
        7,
        {"retryAfterSeconds": 7},
    )
    document = InvalidDocument("bad", line=3, column=4)
    assert (document.code, document.details) == ("invalid_document", {"line": 3, "column": 4})
    assert Invalid("x", code="custom").code == "custom"
    assert NotFound("gone").message == "gone"
