"""The dashboard's workspace controls: each a CSRF-checked form POST with the API's access rules.

Changes that show nothing secret redirect back to the workspace page (POST, redirect, GET);
a new key or enrollment token is rendered once in the POST's own answer, never stored.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from fleetplane.dashboard.pages import workspace_page
from fleetplane.dashboard.render import error_excerpt
from fleetplane.dashboard.web import PREFIX, DashboardRoute, Post, context_of, see_other
from fleetplane.domain.config_hash import parse_workspace_yaml
from fleetplane.domain.errors import Invalid, InvalidDocument
from fleetplane.services import access, credentials
from fleetplane.services import runtimes as runtime_service
from fleetplane.services import workspaces as workspace_service
from fleetplane.services.access import Level

router = APIRouter(
    prefix=f"{PREFIX}/workspaces/{{workspace_id}}",
    route_class=DashboardRoute,
    include_in_schema=False,
)

MAX_CONFIG_CHARS = 256 * 1024


def _back(workspace_id: str, **query: str | int) -> Response:
    suffix = f"?{urlencode(query)}" if query else ""
    return see_other(f"{PREFIX}/workspaces/{workspace_id}{suffix}")


@router.post("/config")
def save_config(request: Request, workspace_id: str, post: Post) -> Response:
    """Store the editor's YAML as a new revision; a parse error keeps the text and says where."""
    context = context_of(request)
    text = post.field("config")
    try:
        with context.database.unit_of_work() as session:
            workspace = access.require_workspace(
                session,
                user=post.caller.user,
                workspace_id=workspace_id,
                level=Level.ADMIN,
                for_update=True,
            )
            if len(text) > MAX_CONFIG_CHARS:
                raise Invalid(f"the config is longer than {MAX_CONFIG_CHARS} characters")
            before = workspace.config_revision
            revision = workspace_service.store_config(
                session,
                workspace=workspace,
                document=parse_workspace_yaml(text),
                actor=post.caller.user.email,
                now=context.clock(),
            )
    except Invalid as error:
        excerpt = None
        if isinstance(error, InvalidDocument):
            excerpt = error_excerpt(text, error.line, error.column)
        return workspace_page(
            request,
            post.caller,
            workspace_id,
            status=422,
            editor_text=text,
            editor_error={"message": error.message, "excerpt": excerpt},
        )
    if revision.number == before:
        return _back(workspace_id, notice="config_unchanged")
    return _back(workspace_id, notice="config_saved", revision=revision.number)


@router.post("/rollback")
def rollback_config(request: Request, workspace_id: str, post: Post) -> Response:
    """Make an earlier revision's config current again, as a new revision (admins only)."""
    context = context_of(request)
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session,
            user=post.caller.user,
            workspace_id=workspace_id,
            level=Level.ADMIN,
            for_update=True,
        )
        number = _whole_number(post.field("number"), "Revision")
        if number is None or number < 1:
            raise Invalid("choose the revision to roll back to")
        revision = workspace_service.rollback_config(
            session,
            workspace=workspace,
            number=number,
            actor=post.caller.user.email,
            now=context.clock(),
        )
    return _back(workspace_id, notice="config_rolled_back", revision=revision.number)


def _expiry(value: str) -> datetime | None:
    """An `<input type=datetime-local>` value, read as UTC; empty means none."""
    if not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise Invalid(f"{value!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)") from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@router.post("/authority")
def set_authority(request: Request, workspace_id: str, post: Post) -> Response:
    """Switch the authority mode; dev-override needs an expiry at most 7 days ahead."""
    context = context_of(request)
    try:
        with context.database.unit_of_work() as session:
            workspace = access.require_workspace(
                session,
                user=post.caller.user,
                workspace_id=workspace_id,
                level=Level.ADMIN,
                for_update=True,
            )
            mode = post.field("policy_mode")
            workspace_service.update_workspace(
                session,
                workspace=workspace,
                name=None,
                policy_mode=mode,
                dev_override_until=_expiry(post.field("dev_override_until"))
                if mode == workspace_service.DEV_OVERRIDE
                else None,
                actor=post.caller.user.email,
                now=context.clock(),
            )
    except Invalid as error:
        return workspace_page(
            request, post.caller, workspace_id, status=422, authority_error=error.message
        )
    return _back(workspace_id, notice="authority_saved")


@router.post("/api-key")
def regenerate_api_key(request: Request, workspace_id: str, post: Post) -> Response:
    """Issue a new workspace key, revoking the old one, and show it once."""
    context = context_of(request)
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=post.caller.user, workspace_id=workspace_id, level=Level.ADMIN
        )
        issued = credentials.regenerate_api_key(
            session, workspace=workspace, actor=post.caller.user.email, now=context.clock()
        )
    return workspace_page(
        request,
        post.caller,
        workspace_id,
        issued={
            "what": "Workspace API key",
            "secret": issued.api_key,
            "detail": f"Set it as {credentials.TOKEN_ENV} on each runtime. "
            "The previous key stopped working.",
        },
    )


def _whole_number(value: str, what: str) -> int | None:
    if not value.strip():
        return None
    try:
        return int(value.strip())
    except ValueError as exc:
        raise Invalid(f"{what} must be a whole number") from exc


@router.post("/enrollments")
def create_enrollment(request: Request, workspace_id: str, post: Post) -> Response:
    """Create an enrollment token and show it once."""
    context = context_of(request)
    try:
        with context.database.unit_of_work() as session:
            workspace = access.require_workspace(
                session, user=post.caller.user, workspace_id=workspace_id, level=Level.OPERATE
            )
            hours = _whole_number(post.field("expires_in_hours"), "Expires in (hours)")
            issued = credentials.create_enrollment(
                session,
                workspace=workspace,
                expires_in_seconds=hours * 3600 if hours is not None else None,
                max_uses=_whole_number(post.field("max_uses"), "Max uses"),
                default_ttl_seconds=context.settings.enrollment_default_ttl_seconds,
                actor=post.caller.user.email,
                now=context.clock(),
            )
    except Invalid as error:
        return workspace_page(
            request, post.caller, workspace_id, status=422, enrollment_error=error.message
        )
    uses = f"{issued.row.max_uses} uses" if issued.row.max_uses else "unlimited uses"
    return workspace_page(
        request,
        post.caller,
        workspace_id,
        issued={
            "what": "Enrollment token",
            "secret": issued.token,
            "detail": f"A runtime exchanges it at /api/v1/enroll for its own credential "
            f"({uses}, expires {issued.row.expires_at:%Y-%m-%d %H:%M} UTC).",
        },
    )


@router.post("/runtimes/{runtime_id}/revoke")
def revoke_runtime(request: Request, workspace_id: str, runtime_id: str, post: Post) -> Response:
    """Revoke a runtime: its credential fails at once and it leaves the inventory."""
    context = context_of(request)
    with context.database.unit_of_work() as session:
        workspace = access.require_workspace(
            session, user=post.caller.user, workspace_id=workspace_id, level=Level.OPERATE
        )
        runtime_service.revoke_runtime(
            session,
            workspace=workspace,
            runtime_id=runtime_id,
            actor=post.caller.user.email,
            now=context.clock(),
        )
    return _back(workspace_id, notice="runtime_revoked")
