"""API token scopes: what a token may do, declared by every API operation.

A token holds some of four scopes: `read` (list and get), `annotate` (lease, rank,
skip), `data` (prompts, snapshots, exports and imports in bulk) and `admin` (projects,
training rounds, revoking tokens). Each operation passes `auth=scoped(SCOPE)`; a token
without that scope gets 403 naming it, before the request body is read. A signed-in
session is not limited by scopes (the caller's roles still are), and `SESSION_ONLY`
operations refuse tokens outright: a token cannot mint tokens. Roles are checked by
the operations themselves (config/roles.py).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

READ, ANNOTATE, DATA, ADMIN = "read", "annotate", "data", "admin"
SCOPES = (READ, ANNOTATE, DATA, ADMIN)
SESSION = "session"


class TokenAuth(HttpBearer):
    """`Authorization: Bearer <token>` with a live token that holds the scope."""

    def __init__(self, scope: str | None) -> None:
        super().__init__()
        self.scope = scope

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        from annotation.tokens import authenticate_token

        found = authenticate_token(token)
        if found is None:
            return None  # unknown, revoked or expired: 401 unless a session signs in
        if self.scope is None:
            raise PermissionDenied(
                "this operation declares no token scope, so tokens may not call it; "
                "sign in instead"
            )
        if self.scope not in found.scopes:
            raise PermissionDenied(
                f"this token lacks the '{self.scope}' scope (it has "
                f"{', '.join(found.scopes) or 'none'}); make a token with it on the "
                "tokens page"
            )
        request.api_token = found
        return found.user


class NoTokens(HttpBearer):
    """Refuse any bearer token: the operation is for a signed-in session only."""

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        raise PermissionDenied(
            "API tokens are made from a signed-in session (the tokens page or the API "
            "with the session cookie), not with a token"
        )


def scoped(scope: str) -> list:
    """Return the auth of an operation that a token with `scope` (or a session) may call."""
    if scope not in SCOPES:
        raise ValueError(f"unknown token scope {scope!r}; expected one of {SCOPES}")
    return [TokenAuth(scope), SessionAuth()]


SESSION_ONLY = [NoTokens(), SessionAuth()]
# Operations that forget to declare a scope: a session may call them, a token not.
UNDECLARED = [TokenAuth(None), SessionAuth()]


def scope_of(operation: Any) -> str | None:
    """Return the scope a ninja operation needs of a token, 'session', or None."""
    for callback in operation.auth_callbacks:
        if isinstance(callback, NoTokens):
            return SESSION
        if isinstance(callback, TokenAuth):
            return callback.scope
    return None
