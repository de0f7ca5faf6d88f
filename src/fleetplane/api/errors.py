"""The one mapping from fleetplane's exception tree to HTTP responses (SPEC 4.1)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleetplane.domain.errors import (
    BadRequest,
    Conflict,
    FleetplaneError,
    Forbidden,
    Invalid,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthenticated,
)

log = logging.getLogger("fleetplane.api")

STATUS = {
    BadRequest: 400,
    Invalid: 422,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    RateLimited: 429,
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The error envelope every non-2xx answer carries."""
    return {"error": {"code": code, "message": message, "details": details}}


def status_for(error: FleetplaneError) -> int:
    """The HTTP status of a fleetplane error, by the most specific class in STATUS."""
    for klass in type(error).__mro__:
        if klass in STATUS:
            return STATUS[klass]
    return 400


def _fleetplane_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, FleetplaneError)
    headers = {}
    if isinstance(error, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(error, RateLimited):
        headers["Retry-After"] = str(error.retry_after)
    return JSONResponse(
        error_body(error.code, error.message, error.details),
        status_code=status_for(error),
        headers=headers,
    )


def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    problems = [
        {"loc": list(item.get("loc", ())), "message": item.get("msg", ""), "type": item.get("type")}
        for item in error.errors()
    ]
    if any(problem["type"] == "json_invalid" for problem in problems):
        return JSONResponse(
            error_body("malformed_json", "the request body is not valid JSON", problems),
            status_code=400,
        )
    first = problems[0] if problems else {"loc": [], "message": "invalid request"}
    where = ".".join(str(part) for part in first["loc"] if part != "body") or "request"
    return JSONResponse(
        error_body("validation_failed", f"{where}: {first['message']}", problems),
        status_code=422,
    )


def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 415: "unsupported_media_type"}
    return JSONResponse(
        error_body(codes.get(error.status_code, "http_error"), str(error.detail)),
        status_code=error.status_code,
        headers=getattr(error, "headers", None),
    )


def _database_unavailable(_request: Request, error: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(error).__name__)
    return JSONResponse(
        error_body("database_unavailable", "the database is not answering; retry shortly"),
        status_code=503,
        headers={"Retry-After": "5"},
    )


def _value_out_of_range(_request: Request, error: Exception) -> JSONResponse:
    log.info("database refused a value: %s", type(getattr(error, "orig", error)).__name__)
    return JSONResponse(
        error_body("value_out_of_range", "a value in the request is out of the stored range"),
        status_code=422,
    )


def install(app: FastAPI) -> None:
    """Register the handlers on an app."""
    app.add_exception_handler(FleetplaneError, _fleetplane_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(DataError, _value_out_of_range)
