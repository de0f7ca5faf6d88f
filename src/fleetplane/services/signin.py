"""Dashboard sign-in: argon2 password checks, throttled failures, cookie sessions with CSRF."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from fleetplane.domain.errors import RateLimited, Unauthenticated
from fleetplane.domain.tokens import hashes_equal, token_hash
from fleetplane.store.models import LoginFailure, User, WebSession

_PASSWORDS = PasswordHasher()
# Verifying against a real hash when the email is unknown keeps the timing of both refusals alike.
_DUMMY_HASH = _PASSWORDS.hash("fleetplane-no-such-user")


@dataclass(frozen=True)
class Throttle:
    """Failed sign-ins allowed per account and per client address within the window."""

    window: timedelta = timedelta(minutes=15)
    per_account: int = 5
    per_address: int = 20


@dataclass(frozen=True)
class SignedIn:
    """A new session: the cookie value (shown once) and its CSRF token."""

    cookie: str
    csrf_token: str
    user: User
    expires_at: datetime


def _check_throttle(
    session: Session, *, email: str, address: str, now: datetime, throttle: Throttle
) -> None:
    since = now - throttle.window
    for column, value, limit in (
        (LoginFailure.email, email, throttle.per_account),
        (LoginFailure.address, address, throttle.per_address),
    ):
        count, oldest = session.execute(
            select(func.count(), func.min(LoginFailure.failed_at)).where(
                column == value, LoginFailure.failed_at > since
            )
        ).one()
        if count >= limit:
            retry = math.ceil((oldest + throttle.window - now).total_seconds()) if oldest else 60
            raise RateLimited(
                "too many failed sign-ins; try again later", retry_after=max(1, retry)
            )


def record_failure(session: Session, *, email: str, address: str, now: datetime) -> None:
    """Remember a failed sign-in (committed on its own, so the refusal cannot erase it)."""
    session.add(
        LoginFailure(email=email.strip().lower()[:320], address=address[:64], failed_at=now)
    )


def sign_in(
    session: Session,
    *,
    email: str,
    password: str,
    address: str,
    now: datetime,
    lifetime: timedelta,
    throttle: Throttle,
) -> SignedIn:
    """Check a password and open a session; failures are throttled per account and address."""
    email = email.strip().lower()
    _check_throttle(session, email=email, address=address, now=now, throttle=throttle)
    user = session.scalar(select(User).where(User.email == email))
    try:
        _PASSWORDS.verify(
            user.password_hash if user and user.password_hash else _DUMMY_HASH, password
        )
        valid = user is not None and user.password_hash is not None
    except (VerificationError, InvalidHashError):
        valid = False
    if not valid or user is None:
        raise Unauthenticated("wrong email or password", code="invalid_credentials")
    session.execute(delete(LoginFailure).where(LoginFailure.email == email))
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            token_hash=token_hash(cookie),
            user_id=user.id,
            csrf_token=csrf,
            created_at=now,
            expires_at=now + lifetime,
        )
    )
    session.flush()
    return SignedIn(cookie=cookie, csrf_token=csrf, user=user, expires_at=now + lifetime)


@dataclass(frozen=True)
class WebCaller:
    """The user behind a session cookie, with the session's CSRF token."""

    user: User
    csrf_token: str


def resolve_session(session: Session, *, cookie: str, now: datetime) -> WebCaller:
    """The user of an unexpired session cookie, else Unauthenticated."""
    row = session.execute(
        select(WebSession, User)
        .join(User, User.id == WebSession.user_id)
        .where(WebSession.token_hash == token_hash(cookie), WebSession.expires_at > now)
    ).one_or_none()
    if row is None:
        raise Unauthenticated("the session has expired; sign in again")
    web_session, user = row
    return WebCaller(user=user, csrf_token=web_session.csrf_token)


def csrf_valid(expected: str, presented: str | None) -> bool:
    """Constant-time check of a presented CSRF token."""
    return presented is not None and hashes_equal(expected, presented)


def sign_out(session: Session, *, cookie: str) -> None:
    """End the session the cookie names."""
    session.execute(delete(WebSession).where(WebSession.token_hash == token_hash(cookie)))
