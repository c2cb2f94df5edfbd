"""Per-user API tokens: made once, stored as a SHA-256 digest, scoped, expiring, revocable.

A token is 32 random bytes (URL-safe) behind a recognisable `fl_` prefix. Its entropy
makes a fast hash safe to store: guessing one is as hard as guessing the key itself,
so no slow password hash is needed, and lookup is a single indexed query. A token holds
the scopes it was made with (config/scopes.py) and may carry an expiry.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from annotation.audit import record
from annotation.models import ApiToken
from config.scopes import SCOPES

PREFIX = "fl_"
# How stale a token's `last_used_at` may be.
LAST_USE_RESOLUTION = timedelta(minutes=1)
MAX_LIFETIME = timedelta(days=3650)


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@transaction.atomic
def create_token(
    user: AbstractBaseUser,
    name: str,
    scopes: list[str] | tuple[str, ...],
    expires_in: timedelta | None = None,
) -> tuple[ApiToken, str]:
    """Create a token for the user; return the row and the raw token (shown once).

    `scopes` are what the token may do (config/scopes.py); `expires_in` None never
    expires.
    """
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError(
            f"a token needs a name of 1 to 100 characters saying what it is for, got {name!r}"
        )
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValidationError(
            f"a token needs one or more of the scopes {', '.join(SCOPES)}; "
            f"got {list(scopes)!r}"
        )
    if expires_in is not None and not timedelta(0) < expires_in <= MAX_LIFETIME:
        raise ValidationError(
            f"a token's lifetime must be between a moment and {MAX_LIFETIME.days} "
            f"days, got {expires_in}; leave it empty for a token that never expires"
        )
    raw = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=raw[: len(PREFIX) + 6],
        digest=_digest(raw),
        scopes=[s for s in SCOPES if s in scopes],
        expires_at=None if expires_in is None else timezone.now() + expires_in,
    )
    record(
        user,
        "token.create",
        obj=token,
        after={"name": name, "prefix": token.prefix, "scopes": token.scopes},
    )
    return token, raw


def authenticate_token(raw: str) -> ApiToken | None:
    """Return a live token (not revoked, not expired, its user active), or None.

    Its last use is written at most once a minute (LAST_USE_RESOLUTION).
    """
    if not raw or not raw.startswith(PREFIX):
        return None
    token = (
        ApiToken.objects.filter(digest=_digest(raw), revoked_at__isnull=True)
        .select_related("user")
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    now = timezone.now()
    if token.expires_at is not None and token.expires_at <= now:
        return None
    # A write (and commit) per request would cost an API call more than its work:
    # the last use is kept to the minute.
    if token.last_used_at is None or now - token.last_used_at >= LAST_USE_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


@transaction.atomic
def revoke_token(token: ApiToken, user: AbstractBaseUser) -> ApiToken:
    """Revoke one of the user's own tokens; revoking twice changes nothing."""
    if token.user_id != user.pk:
        raise PermissionDenied(
            f"token {token.pk} belongs to another user; revoke your own"
        )
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        record(user, "token.revoke", obj=token, after={"revoked_at": token.revoked_at})
    return token
