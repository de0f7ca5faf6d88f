"""Credentials: typed prefixes, enough entropy, stored only as digests."""

from __future__ import annotations

import pytest

from fleetplane.domain.tokens import (
    TokenKind,
    hashes_equal,
    new_token,
    token_display_prefix,
    token_hash,
    token_kind,
)


@pytest.mark.parametrize("kind", list(TokenKind))
def test_new_tokens_carry_their_prefix_and_256_bits(kind: TokenKind) -> None:
    tokens = {new_token(kind) for _ in range(50)}
    assert len(tokens) == 50
    for token in tokens:
        assert token.startswith(kind.value)
        assert len(token) - len(kind.value) == 43  # 32 random bytes, url-safe base64
        assert token_kind(token) is kind
        assert token_display_prefix(token) == token[: len(kind.value) + 4]


def test_hash_is_sha256_hex_and_compared_in_constant_time() -> None:
    digest = token_hash("fp_op_x")
    assert len(digest) == 64
    assert digest != "fp_op_x"
    assert hashes_equal(digest, token_hash("fp_op_x"))
    assert not hashes_equal(digest, token_hash("fp_op_y"))


def test_unknown_prefix() -> None:
    assert token_kind("gh_abc") is None
    assert token_display_prefix("gh_abcdef") == "gh_a"
