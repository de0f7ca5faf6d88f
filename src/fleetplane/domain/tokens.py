"""Opaque credentials: typed prefixes, 256 bits of randomness, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum


class TokenKind(StrEnum):
    """The credential kinds of SPEC section 2, by their prefix."""

    OPERATOR = "fp_op_"
    WORKSPACE_KEY = "fp_ws_"
    ENROLLMENT = "fp_enr_"
    RUNTIME = "fp_rt_"


def new_token(kind: TokenKind) -> str:
    """A fresh token of the given kind: the prefix then 43 url-safe characters (256 bits)."""
    return kind.value + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The SHA-256 hex digest under which a token is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_kind(token: str) -> TokenKind | None:
    """The kind a token claims by its prefix, or None for an unknown prefix."""
    for kind in TokenKind:
        if token.startswith(kind.value):
            return kind
    return None


def token_display_prefix(token: str) -> str:
    """The non-secret start of a token shown in lists (the type prefix and 4 characters)."""
    kind = token_kind(token)
    head = len(kind.value) if kind else 0
    return token[: head + 4]


def hashes_equal(left: str, right: str) -> bool:
    """Constant-time comparison of two digests."""
    return hmac.compare_digest(left.encode(), right.encode())
