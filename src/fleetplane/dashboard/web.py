"""Request plumbing of the dashboard: the signed-in caller, CSRF-checked forms, HTML errors.

Dashboard routes answer in HTML: a missing or expired session redirects to the sign-in page,
and every other fleetplane error renders an error page with the status the API would give.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from fleetplane.api.context import AppContext
from fleetplane.api.deps import SESSION_COOKIE
from fleetplane.api.errors import status_for
from fleetplane.dashboard import render
from fleetplane.domain.errors import BadRequest, FleetplaneError, Forbidden, Unauthenticated
from fleetplane.services import signin
from fleetplane.services.signin import WebCaller

PREFIX = "/dashboard"
LOGIN_PATH = f"{PREFIX}/login"
OBSERVE_PATH = f"{PREFIX}/observe"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 50


def context_of(request: Request) -> AppContext:
    """The process-wide context the app was built with."""
    context: AppContext = request.app.state.context
    return context


def signed_in(request: Request) -> WebCaller:
    """The user and CSRF token of the request's session cookie; Unauthenticated without one."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Unauthenticated("sign in to use the dashboard")
    context = context_of(request)
    with context.database.read() as session:
        return signin.resolve_session(session, cookie=cookie, now=context.clock())


Caller = Annotated[WebCaller, Depends(signed_in)]


async def form_fields(request: Request) -> dict[str, str]:
    """The fields of a URL-encoded form body (first value of each); other bodies read as empty.

    An empty form has no CSRF token, so a forged request in any other encoding is refused
    by the CSRF check rather than parsed.
    """
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != FORM_TYPE:
        return {}
    raw = await request.body()
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest("the form could not be read", code="invalid_form") from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


Form = Annotated[dict[str, str], Depends(form_fields)]


@dataclass(frozen=True)
class FormPost:
    """A state-changing form from a signed-in caller whose CSRF token matched its session."""

    caller: WebCaller
    form: dict[str, str]

    def field(self, name: str, default: str = "") -> str:
        """One field's value, or the default when the form lacks it."""
        return self.form.get(name, default)


def checked_post(request: Request, form: Form) -> FormPost:
    """The caller of a form POST; 403 when the form's `csrf_token` is not the session's."""
    caller = signed_in(request)
    if not signin.csrf_valid(caller.csrf_token, form.get("csrf_token")):
        raise Forbidden("missing or wrong CSRF token", code="csrf_failed")
    return FormPost(caller=caller, form=form)


Post = Annotated[FormPost, Depends(checked_post)]


def see_other(url: str) -> RedirectResponse:
    """A 303 redirect: after a POST the browser follows it with a GET."""
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a dashboard path on this server, never another site."""
    if not value or "\\" in value:
        return OBSERVE_PATH
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith(f"{PREFIX}/"):
        return OBSERVE_PATH
    if parts.path.startswith(LOGIN_PATH):
        return OBSERVE_PATH
    return value


def login_redirect(request: Request) -> RedirectResponse:
    """Send a signed-out browser to the sign-in page, returning here after a GET."""
    target = LOGIN_PATH
    if request.method == "GET":
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = f"{LOGIN_PATH}?next={quote(here, safe='')}"
    response = see_other(target)
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def error_page(status: int, message: str) -> Response:
    """An HTML page for a refused or failed request."""
    titles = {
        400: "Bad request",
        403: "Not allowed",
        404: "Not found",
        409: "Conflict",
        413: "Too large",
        422: "Invalid input",
        429: "Too many requests",
    }
    return render.page(
        "error.html",
        status=status,
        title=titles.get(status, "Error"),
        message=message,
    )


class DashboardRoute(APIRoute):
    """A route whose errors render as HTML pages (and signed-out requests go to sign-in)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except Unauthenticated:
                return login_redirect(request)
            except FleetplaneError as error:
                return error_page(status_for(error), error.message)
            except RequestValidationError as error:
                problems = error.errors()
                first = problems[0] if problems else {}
                where = ".".join(str(part) for part in first.get("loc", ()) if part != "query")
                return error_page(422, f"{where or 'request'}: {first.get('msg', 'invalid')}")

        return guarded
