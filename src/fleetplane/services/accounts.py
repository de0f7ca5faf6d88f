"""Users and operator tokens: argon2 for passwords, SHA-256 for random tokens."""

from __future__ import annotations

from datetime import datetime

from argon2 import PasswordHasher
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fleetplane.domain.errors import Conflict, Invalid, NotFound, Unauthenticated
from fleetplane.domain.tokens import TokenKind, new_token, token_display_prefix, token_hash
from fleetplane.services import audit
from fleetplane.store.models import OperatorToken, User

_PASSWORDS = PasswordHasher()
BOOTSTRAP_EMAIL = "admin"


def create_user(
    session: Session,
    *,
    email: str,
    password: str | None,
    is_superuser: bool,
    actor: str,
    now: datetime,
) -> User:
    """Create a user; the email must be new and the password, when given, 8 characters or more."""
    email = email.strip().lower()
    if not email:
        raise Invalid("email must not be empty", code="invalid_email")
    if password is not None and len(password) < 8:
        raise Invalid("password must have at least 8 characters", code="weak_password")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"a user with email {email} already exists", code="user_exists")
    user = User(
        email=email,
        password_hash=_PASSWORDS.hash(password) if password is not None else None,
        is_superuser=is_superuser,
        created_at=now,
    )
    session.add(user)
    session.flush()
    audit.record(session, actor=actor, action="user.create", target=f"user:{user.id}", now=now)
    return user


def create_operator_token(
    session: Session, *, user: User, name: str, now: datetime, plaintext: str | None = None
) -> tuple[OperatorToken, str]:
    """Issue an `fp_op_` token for the user; the plaintext is returned once and never stored."""
    token = plaintext if plaintext is not None else new_token(TokenKind.OPERATOR)
    row = OperatorToken(
        user_id=user.id,
        name=name,
        token_hash=token_hash(token),
        display_prefix=token_display_prefix(token),
        created_at=now,
    )
    session.add(row)
    session.flush()
    audit.record(
        session, actor=user.email, action="token.create", target=f"token:{row.id}", now=now
    )
    return row, token


def user_by_email(session: Session, *, email: str) -> User:
    """The user with this email, or NotFound."""
    user = session.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise NotFound(f"no user with email {email}")
    return user


def authenticate_operator(session: Session, *, token: str) -> User:
    """The user an unrevoked operator token acts as, or Unauthenticated."""
    row = session.execute(
        select(User)
        .join(OperatorToken, OperatorToken.user_id == User.id)
        .where(OperatorToken.token_hash == token_hash(token), OperatorToken.revoked_at.is_(None))
    ).scalar_one_or_none()
    if row is None:
        raise Unauthenticated("the operator token is unknown or revoked")
    return row


def bootstrap_superuser(session: Session, *, token: str, now: datetime) -> bool:
    """Create the `admin` superuser holding `token` if no user exists yet; True if created."""
    if session.scalar(select(func.count()).select_from(User)):
        return False
    user = create_user(
        session, email=BOOTSTRAP_EMAIL, password=None, is_superuser=True, actor="bootstrap", now=now
    )
    create_operator_token(session, user=user, name="bootstrap", now=now, plaintext=token)
    return True


def list_tokens(session: Session, *, user: User) -> list[OperatorToken]:
    """The user's unrevoked operator tokens (prefix and name only are ever shown)."""
    return list(
        session.scalars(
            select(OperatorToken)
            .where(OperatorToken.user_id == user.id, OperatorToken.revoked_at.is_(None))
            .order_by(OperatorToken.created_at, OperatorToken.id)
        )
    )


def revoke_token(session: Session, *, user: User, token_id: str, now: datetime) -> None:
    """Revoke one of the user's own tokens; it fails from this commit on."""
    row = session.scalar(
        select(OperatorToken).where(
            OperatorToken.id == token_id,
            OperatorToken.user_id == user.id,
            OperatorToken.revoked_at.is_(None),
        )
    )
    if row is None:
        raise NotFound("token not found")
    row.revoked_at = now
    audit.record(
        session, actor=user.email, action="token.revoke", target=f"token:{row.id}", now=now
    )
