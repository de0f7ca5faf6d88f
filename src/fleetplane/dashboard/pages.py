"""The dashboard's pages: sign-in and sign-out, Observe, and a workspace's page (SPEC 5)."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request, Response

from fleetplane.api.accounts import client_address, set_session_cookie, sign_in
from fleetplane.api.context import AppContext
from fleetplane.api.deps import SESSION_COOKIE
from fleetplane.dashboard import render
from fleetplane.dashboard.web import (
    LOGIN_PATH,
    OBSERVE_PATH,
    PREFIX,
    Caller,
    DashboardRoute,
    Form,
    Post,
    context_of,
    safe_next,
    see_other,
    signed_in,
)
from fleetplane.domain.errors import RateLimited, Unauthenticated
from fleetplane.services import access, history, signin
from fleetplane.services import observe as observe_service
from fleetplane.services import webhooks as webhook_service
from fleetplane.services import workspaces as workspace_service
from fleetplane.services.access import Level
from fleetplane.services.signin import WebCaller

router = APIRouter(prefix=PREFIX, route_class=DashboardRoute, include_in_schema=False)

# Sign-in has no session yet, so its form carries a double-submit token against login CSRF.
LOGIN_CSRF_COOKIE = "fp_login_csrf"
MAX_EMAIL = 320
MAX_PASSWORD = 1000

NOTICES = {
    "config_saved": "Saved config revision {revision}. Runtimes that have not applied it now "
    "show as needs reconcile.",
    "config_unchanged": "The config is identical to the current revision; nothing changed.",
    "authority_saved": "Authority mode saved.",
    "runtime_revoked": "Runtime revoked: its credential stopped working.",
    "config_rolled_back": "Rolled back: the earlier config is now revision {revision}. "
    "Runtimes pull it on their next sync.",
}
LEVEL_NAMES = {Level.ADMIN: "admin", Level.OPERATE: "operator", Level.READ: "viewer"}
DELIVERIES_SHOWN = 20
HISTORY_SHOWN = 100


def _login_form(
    request: Request,
    *,
    status: int = 200,
    error: str | None = None,
    email: str = "",
    next_path: str = OBSERVE_PATH,
    headers: dict[str, str] | None = None,
) -> Response:
    """The sign-in form with a fresh double-submit token in a cookie and a hidden field."""
    token = secrets.token_urlsafe(32)
    response = render.page(
        "login.html",
        status=status,
        headers=headers,
        error=error,
        email=email,
        next_path=next_path,
        csrf_token=token,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        httponly=True,
        samesite="strict",
        secure=context_of(request).settings.secure_cookies,
        path=LOGIN_PATH,
    )
    return response


@router.get("/login")
def login_page(
    request: Request, next_path: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    """The sign-in form; a signed-in browser goes straight on."""
    target = safe_next(next_path)
    if request.cookies.get(SESSION_COOKIE):
        try:
            signed_in(request)
        except Unauthenticated:
            pass
        else:
            return see_other(target)
    return _login_form(request, next_path=target)


@router.post("/login")
def login(request: Request, form: Form) -> Response:
    """Check the password, rotate the session and go on; re-render the form on failure."""
    context = context_of(request)
    email = form.get("email", "").strip()
    password = form.get("password", "")
    target = safe_next(form.get("next"))
    if not signin.csrf_valid(request.cookies.get(LOGIN_CSRF_COOKIE, ""), form.get("csrf_token")):
        return _login_form(
            request,
            status=403,
            error="The sign-in form expired or did not come from this server. Try again.",
            email=email[:MAX_EMAIL],
            next_path=target,
        )
    if not email or not password or len(email) > MAX_EMAIL or len(password) > MAX_PASSWORD:
        return _login_form(
            request,
            status=422,
            error="Enter your email and password.",
            email=email[:MAX_EMAIL],
            next_path=target,
        )
    try:
        signed = sign_in(context, email=email, password=password, address=client_address(request))
    except RateLimited as limited:
        minutes = max(1, -(-limited.retry_after // 60))
        return _login_form(
            request,
            status=429,
            error=f"Too many failed sign-ins. Try again in {minutes} min.",
            email=email,
            next_path=target,
            headers={"Retry-After": str(limited.retry_after)},
        )
    except Unauthenticated:
        return _login_form(
            request, status=401, error="Wrong email or password.", email=email, next_path=target
        )
    previous = request.cookies.get(SESSION_COOKIE)
    if previous:
        # A new session at every sign-in: a cookie planted before it is worth nothing after.
        with context.database.unit_of_work() as session:
            signin.sign_out(session, cookie=previous)
    response = see_other(target)
    set_session_cookie(response, context, signed)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=LOGIN_PATH)
    return response


@router.post("/logout")
def logout(request: Request, post: Post) -> Response:
    """End the session and return to the sign-in page."""
    context = context_of(request)
    with context.database.unit_of_work() as session:
        signin.sign_out(session, cookie=request.cookies[SESSION_COOKIE])
    response = see_other(LOGIN_PATH)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def lapse_overdue(context: AppContext, workspace_ids: list[str], *, now: datetime) -> bool:
    """Lapse expired dev-overrides in a write transaction of their own; True if there were any.

    Pages read in read-only sessions so that showing them never waits on, or holds, the
    writers' turn; this rare write is the exception.
    """
    if not workspace_ids:
        return False
    with context.database.unit_of_work() as session:
        observe_service.lapse_overrides(session, workspace_ids=workspace_ids, now=now)
    return True


@router.get("/observe")
def observe(
    request: Request,
    caller: Caller,
    org: Annotated[str | None, Query(max_length=64)] = None,
    attention: Annotated[str | None, Query(max_length=8)] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
) -> Response:
    """Rollout posture of every workspace the caller can read, grouped by org."""
    context = context_of(request)
    now = context.clock()
    attention_only = attention in ("1", "on", "true")

    def read() -> observe_service.ObserveView:
        with context.database.read() as session:
            return observe_service.observe(
                session,
                user=caller.user,
                rules=context.fleet_rules,
                now=now,
                org_id=org or None,
                attention_only=attention_only,
                page=page,
            )

    view = read()
    if lapse_overdue(context, view.overdue_overrides, now=now):
        view = read()
    return render.page(
        "observe.html",
        caller=caller,
        now=now,
        view=view,
        org=org or "",
        attention_only=attention_only,
        refresh=True,
    )


def _states(values: list[str] | None) -> list[str] | None:
    """Filter values may repeat or be comma-separated; empty ones mean no filter."""
    states = [part for value in values or [] for part in value.split(",") if part]
    return states or None


def workspace_page(
    request: Request,
    caller: WebCaller,
    workspace_id: str,
    *,
    health: list[str] | None = None,
    drift: list[str] | None = None,
    q: str | None = None,
    cursor: str | None = None,
    status: int = 200,
    refresh: bool = False,
    **extra: Any,
) -> Response:
    """Render a workspace's page; POST results pass what they show once (`issued`, errors)."""
    context = context_of(request)
    now = context.clock()

    def read() -> observe_service.WorkspaceOverview:
        with context.database.read() as session:
            return observe_service.workspace_overview(
                session,
                user=caller.user,
                workspace_id=workspace_id,
                rules=context.fleet_rules,
                now=now,
                public_url=context.settings.public_url,
                health=health,
                drift=drift,
                text=q or None,
                cursor=cursor or None,
            )

    overview = read()
    if lapse_overdue(context, overview.overdue_overrides, now=now):
        overview = read()
    values: dict[str, Any] = {
        "notice": None,
        "issued": None,
        "editor_text": None,
        "editor_error": None,
        "authority_error": None,
        "enrollment_error": None,
        **extra,
    }
    if values["editor_text"] is None:
        values["editor_text"] = render.editable_yaml(overview.config_document)
    deliveries = None
    if overview.level >= Level.ADMIN:
        deliveries = recent_deliveries(context, caller, workspace_id)
    return render.page(
        "workspace.html",
        status=status,
        caller=caller,
        now=now,
        ws=overview,
        level=LEVEL_NAMES.get(overview.level, "viewer"),
        can_operate=overview.level >= Level.OPERATE,
        can_admin=overview.level >= Level.ADMIN,
        filter_query=urlencode(
            [("health", v) for v in health or []]
            + [("drift", v) for v in drift or []]
            + ([("q", q)] if q else [])
        ),
        default_override_until=now + timedelta(days=1),
        filters={
            "health": (health or [""])[0],
            "drift": (drift or [""])[0],
            "q": q or "",
            "cursor": cursor or "",
        },
        base_url=f"{PREFIX}/workspaces/{overview.workspace.id}",
        refresh=refresh,
        deliveries=deliveries,
        **values,
    )


def recent_deliveries(
    context: AppContext, caller: WebCaller, workspace_id: str
) -> list[dict[str, Any]]:
    """The newest webhook deliveries of the workspace across its webhooks (admins only)."""
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=caller.user, workspace_id=workspace_id, level=Level.ADMIN
        )
        rows = []
        for hook in webhook_service.list_webhooks(session, workspace=workspace):
            for delivery, _attempts in webhook_service.list_deliveries(
                session, webhook=hook, status=None, limit=DELIVERIES_SHOWN, before=None
            ):
                rows.append(
                    {
                        "id": delivery.id,
                        "url": hook.url,
                        "event": delivery.event,
                        "status": str(delivery.status),
                        "attempts": delivery.attempts,
                        "next_attempt_at": delivery.next_attempt_at,
                        "created_at": delivery.created_at,
                        "last_status_code": delivery.last_status_code,
                        "last_error": delivery.last_error,
                    }
                )
    rows.sort(key=lambda row: (row["created_at"], row["id"]), reverse=True)
    return rows[:DELIVERIES_SHOWN]


@router.get("/workspaces/{workspace_id}")
def workspace(
    request: Request,
    caller: Caller,
    workspace_id: str,
    health: Annotated[list[str] | None, Query()] = None,
    drift: Annotated[list[str] | None, Query()] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
    notice: Annotated[str | None, Query(max_length=40)] = None,
    revision: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """A workspace: runtimes, desired state, connect command, controls by level, history."""
    message = NOTICES.get(notice or "")
    return workspace_page(
        request,
        caller,
        workspace_id,
        health=_states(health),
        drift=_states(drift),
        q=q,
        cursor=cursor,
        refresh=True,
        notice=message.format(revision=revision or "") if message else None,
    )


@router.get("/workspaces/{workspace_id}/diff")
def revision_diff(
    request: Request,
    caller: Caller,
    workspace_id: str,
    from_number: Annotated[int, Query(alias="from", ge=1)],
    to_number: Annotated[int, Query(alias="to", ge=1)],
) -> Response:
    """A unified diff between two config revisions."""
    context = context_of(request)
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=caller.user, workspace_id=workspace_id, level=Level.READ
        )
        text = workspace_service.diff_revisions(
            session, workspace=workspace, from_number=from_number, to_number=to_number
        )
        name = workspace.name
    return render.page(
        "diff.html",
        caller=caller,
        workspace_id=workspace_id,
        workspace_name=name,
        base_url=f"{PREFIX}/workspaces/{workspace_id}",
        from_number=from_number,
        to_number=to_number,
        diff=text,
        refresh=False,
    )


@router.get("/workspaces/{workspace_id}/runtimes/{runtime_id}")
def runtime_page(request: Request, caller: Caller, workspace_id: str, runtime_id: str) -> Response:
    """A runtime's status history: each transition and how long the state it began lasted."""
    context = context_of(request)
    now = context.clock()
    with context.database.read() as session:
        workspace = access.require_workspace(
            session, user=caller.user, workspace_id=workspace_id, level=Level.READ
        )
        runtime, _state, items = history.runtime_history(
            session,
            workspace=workspace,
            runtime_id=runtime_id,
            kind=None,
            limit=HISTORY_SHOWN,
            before_id=None,
            now=now,
        )
        name = workspace.name
        agent_id = runtime.agent_id
        host_id = runtime.host_id
    return render.page(
        "runtime.html",
        caller=caller,
        now=now,
        workspace_id=workspace_id,
        workspace_name=name,
        base_url=f"{PREFIX}/workspaces/{workspace_id}",
        runtime_id=runtime_id,
        agent_id=agent_id,
        host_id=host_id,
        transitions=items,
        refresh=True,
    )
