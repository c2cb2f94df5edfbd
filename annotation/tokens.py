"""Per-user API tokens: made once, stored as a SHA-256 digest, revocable.

A token is 32 random bytes (URL-safe) behind a recognisable `fl_` prefix. Its entropy
makes a fast hash safe to store: guessing one is as hard as guessing the key itself,
so no slow password hash is needed, and lookup is a single indexed query.
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

PREFIX = "fl_"
# How stale a token's `last_used_at` may be.
LAST_USE_RESOLUTION = timedelta(minutes=1)


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


@transaction.atomic
def create_token(user: AbstractBaseUser, name: str) -> tuple[ApiToken, str]:
    """Create a token for the user; return the row and the raw token (shown once)."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ValidationError(
            f"a token needs a name of 1 to 100 characters saying what it is for, got {name!r}"
        )
    raw = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=raw[: len(PREFIX) + 6], digest=_digest(raw)
    )
    record(
        user, "token.create", obj=token, after={"name": name, "prefix": token.prefix}
    )
    return token, raw


def authenticate_token(raw: str) -> AbstractBaseUser | None:
    """Return the active user of a live token, or None; note when it was last used.

    The last use is written at most once a minute (LAST_USE_RESOLUTION).
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
    # A write (and commit) per request would cost an API call more than its work:
    # the last use is kept to the minute.
    if token.last_used_at is None or now - token.last_used_at >= LAST_USE_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


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
