"""The three roles of the platform and the server-side checks that enforce them.

Annotator: ranks the tasks assigned to them. Researcher: reads everything, builds
snapshots, exports and imports; cannot launch training. Admin: everything, including
managing projects and launching, cancelling and deploying training rounds. A superuser
counts as an admin.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

ANNOTATOR = "annotator"
RESEARCHER = "researcher"
ADMIN = "admin"
ROLES = (ANNOTATOR, RESEARCHER, ADMIN)


def ensure_groups() -> None:
    """Create the role groups if they are missing."""
    for name in ROLES:
        Group.objects.get_or_create(name=name)


def roles_of(user: AbstractBaseUser | AnonymousUser) -> set[str]:
    """Return the role names a user holds (empty for anonymous users)."""
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_role_cache", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        if user.is_superuser:
            cached.add(ADMIN)
        user._role_cache = cached
    return cached


def is_admin(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Return whether the user may manage projects and training."""
    return ADMIN in roles_of(user)


def is_researcher(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Return whether the user may read all data, snapshot, export and import."""
    return bool({RESEARCHER, ADMIN} & roles_of(user))


def is_annotator(user: AbstractBaseUser | AnonymousUser) -> bool:
    """Return whether the user may take and rank tasks."""
    return ANNOTATOR in roles_of(user)


def has_any_role(
    user: AbstractBaseUser | AnonymousUser, roles: tuple[str, ...]
) -> bool:
    """Return whether the user holds one of the roles (admin implies researcher)."""
    held = roles_of(user)
    if ADMIN in held:
        held = held | {RESEARCHER}
    return bool(held & set(roles))


def role_required(*roles: str) -> Callable:
    """Decorate a view: anonymous users go to login, users without a role get 403."""

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not has_any_role(request.user, roles):
                raise PermissionDenied(
                    f"This page needs one of the roles {', '.join(roles)}."
                )
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
