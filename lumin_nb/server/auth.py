"""Bearer-token authentication of the HTTP server.

Every route except ``GET /health`` needs ``Authorization: Bearer <token>``. The token is
random (`secrets.token_urlsafe`) unless the owner passes one, lives only in memory, and is
compared in constant time (`hmac.compare_digest`), so response timing says nothing about it.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final

#: bytes of randomness in a generated token (43 URL-safe characters)
TOKEN_BYTES: Final = 32


def new_token() -> str:
    """Return a fresh random token for a server."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def bearer(header: str | None) -> str | None:
    """Return the token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def is_authorized(header: str | None, token: str) -> bool:
    """Whether the Authorization `header` carries `token` (constant-time comparison)."""
    given = bearer(header)
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))
