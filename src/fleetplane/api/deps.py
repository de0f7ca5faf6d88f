"""Request dependencies: the app context, bearer tokens and the signed-in operator."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse

from fleetplane.api.context import AppContext
from fleetplane.domain.errors import Forbidden, Unauthenticated
from fleetplane.domain.tokens import TokenKind, token_kind
from fleetplane.services.accounts import authenticate_operator
from fleetplane.services.signin import csrf_valid, resolve_session
from fleetplane.store.models import User


def get_context(request: Request) -> AppContext:
    """The process-wide context the app was built with."""
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header, or None."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


Token = Annotated[str | None, Depends(bearer_token)]


SESSION_COOKIE = "fp_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def current_operator(context: Context, token: Token, request: Request) -> User:
    """The user an operator token or a dashboard session acts as; 401 without one.

    A session cookie on a state-changing request also needs the session's CSRF token in the
    `X-CSRF-Token` header, so that another site cannot ride on the cookie.
    """
    if token is not None:
        if token_kind(token) is not TokenKind.OPERATOR:
            raise Unauthenticated("an operator token (Authorization: Bearer fp_op_…) is required")
        with context.database.read() as session:
            return authenticate_operator(session, token=token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Unauthenticated("sign in, or send an operator token (Authorization: Bearer fp_op_…)")
    with context.database.read() as session:
        caller = resolve_session(session, cookie=cookie, now=context.clock())
    if request.method not in SAFE_METHODS and not csrf_valid(
        caller.csrf_token, request.headers.get(CSRF_HEADER)
    ):
        raise Forbidden("missing or wrong CSRF token", code="csrf_failed")
    return caller.user


Operator = Annotated[User, Depends(current_operator)]


def etag_for(body: bytes) -> str:
    """A strong ETag over the exact bytes of a desired-state body."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {part.strip().removeprefix("W/") for part in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def json_with_etag(request: Request, payload: Any, *, honour_if_none_match: bool) -> Response:
    """A JSON answer carrying an ETag; a matching If-None-Match on a GET gets 304."""
    response = JSONResponse(payload)
    etag = etag_for(bytes(response.body))
    if honour_if_none_match and _matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag})
    response.headers["ETag"] = etag
    return response
