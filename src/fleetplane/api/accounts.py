"""Accounts: sign-in for the dashboard, who am I, operator tokens, users (SPEC 2)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from fleetplane.api import responses, schemas
from fleetplane.api.context import AppContext
from fleetplane.api.deps import SESSION_COOKIE, Context, Operator
from fleetplane.api.schemas import OperatorBody
from fleetplane.domain.errors import Forbidden, Unauthenticated
from fleetplane.services import access, accounts, signin
from fleetplane.store.models import User

router = APIRouter(prefix="/api/v1", tags=["accounts"], responses=schemas.OPERATOR_ERRORS)


class LoginRequest(OperatorBody):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1000)


class TokenCreate(OperatorBody):
    name: str = Field(default="api", min_length=1, max_length=200)


class UserCreate(OperatorBody):
    email: str = Field(min_length=3, max_length=320)
    password: str = Field(min_length=8, max_length=1000)
    superuser: bool = False


def throttle(context: AppContext) -> signin.Throttle:
    """The sign-in throttle from settings."""
    settings = context.settings
    return signin.Throttle(
        window=timedelta(minutes=settings.login_throttle_minutes),
        per_account=settings.login_failures_per_account,
        per_address=settings.login_failures_per_address,
    )


def client_address(request: Request) -> str:
    """The caller's address as the server sees it (behind a proxy: its forwarded address)."""
    return request.client.host if request.client else "unknown"


def sign_in(context: AppContext, *, email: str, password: str, address: str) -> signin.SignedIn:
    """Sign in, recording a failure in its own transaction so a refusal still counts it."""
    now = context.clock()
    try:
        with context.database.unit_of_work() as session:
            return signin.sign_in(
                session,
                email=email,
                password=password,
                address=address,
                now=now,
                lifetime=timedelta(hours=context.settings.session_hours),
                throttle=throttle(context),
            )
    except Unauthenticated:
        with context.database.unit_of_work() as session:
            signin.record_failure(session, email=email, address=address, now=now)
        raise


def set_session_cookie(response: Response, context: AppContext, signed: signin.SignedIn) -> None:
    """The session cookie: HttpOnly, SameSite=Lax, Secure over HTTPS."""
    response.set_cookie(
        SESSION_COOKIE,
        signed.cookie,
        max_age=context.settings.session_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=context.settings.secure_cookies,
        path="/",
    )


def user_view(user: User) -> dict[str, Any]:
    """A user as the API shows it."""
    return {"id": user.id, "email": user.email, "superuser": user.is_superuser}


@router.post("/auth/login", response_model=responses.SignedIn)
def login(body: LoginRequest, request: Request, context: Context) -> JSONResponse:
    """Sign in with email and password; sets the session cookie and returns the CSRF token."""
    signed = sign_in(
        context, email=body.email, password=body.password, address=client_address(request)
    )
    response = JSONResponse({"user": user_view(signed.user), "csrfToken": signed.csrf_token})
    set_session_cookie(response, context, signed)
    return response


@router.post("/auth/logout", status_code=204)
def logout(request: Request, context: Context, user: Operator) -> Response:
    """End the current dashboard session."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        with context.database.unit_of_work() as session:
            signin.sign_out(session, cookie=cookie)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/me", response_model=responses.Me)
def me(context: Context, user: Operator) -> dict[str, Any]:
    """Who the caller is and what it can access."""
    with context.database.read() as session:
        orgs = access.accessible_orgs(session, user=user)
        workspaces = access.accessible_workspaces(session, user=user)
        levels = {w.id: access.workspace_level(session, user=user, workspace=w) for w in workspaces}
    return {
        **user_view(user),
        "orgs": [{"id": org.id, "name": org.name, "role": role} for org, role in orgs],
        "workspaces": [
            {"id": w.id, "orgId": w.org_id, "name": w.name, "access": levels[w.id].name.lower()}
            for w in workspaces
        ],
    }


@router.get("/me/tokens", response_model=responses.OperatorTokenList)
def list_tokens(context: Context, user: Operator) -> dict[str, Any]:
    """The caller's operator tokens: prefix and name only."""
    with context.database.read() as session:
        rows = accounts.list_tokens(session, user=user)
    return {
        "items": [
            {
                "id": r.id,
                "name": r.name,
                "prefix": r.display_prefix,
                "createdAt": r.created_at.isoformat().replace("+00:00", "Z"),
            }
            for r in rows
        ],
        "nextCursor": None,
    }


@router.post("/me/tokens", status_code=201, response_model=responses.OperatorTokenIssued)
def create_token(body: TokenCreate, context: Context, user: Operator) -> dict[str, Any]:
    """Issue a new operator token for the caller (the plaintext is shown once)."""
    with context.database.unit_of_work() as session:
        row, token = accounts.create_operator_token(
            session, user=user, name=body.name, now=context.clock()
        )
    return {"id": row.id, "name": row.name, "prefix": row.display_prefix, "token": token}


@router.delete("/me/tokens/{token_id}", status_code=204)
def revoke_token(token_id: str, context: Context, user: Operator) -> Response:
    """Revoke one of the caller's tokens."""
    with context.database.unit_of_work() as session:
        accounts.revoke_token(session, user=user, token_id=token_id, now=context.clock())
    return Response(status_code=204)


@router.post("/users", status_code=201, response_model=responses.UserRead)
def create_user(body: UserCreate, context: Context, user: Operator) -> dict[str, Any]:
    """Create a user (superusers only)."""
    if not user.is_superuser:
        raise Forbidden("only a superuser creates users")
    with context.database.unit_of_work() as session:
        created = accounts.create_user(
            session,
            email=body.email,
            password=body.password,
            is_superuser=body.superuser,
            actor=user.email,
            now=context.clock(),
        )
    return user_view(created)
