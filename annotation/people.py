"""People: adding a person with a role and projects, and the links that set passwords.

No e-mail is sent: an admin hands the person a link. An invitation and a password
reset are the same kind of link, a Django password-reset token valid for
`LINK_VALID_FOR`, spent once (it hashes the password, which setting one changes).
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import Group, User
from django.contrib.auth.tokens import PasswordResetTokenGenerator
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils.crypto import constant_time_compare
from django.utils.encoding import force_bytes
from django.utils.http import base36_to_int, urlsafe_base64_encode

from annotation.audit import record
from annotation.membership import set_memberships
from annotation.models import AnnotatorProfile, Project
from config.roles import ANNOTATOR, ROLES, ensure_groups

LINK_VALID_FOR = timedelta(days=7)


class PasswordLinkTokens(PasswordResetTokenGenerator):
    """Password-reset tokens valid for LINK_VALID_FOR rather than PASSWORD_RESET_TIMEOUT."""

    key_salt = "annotation.people.PasswordLinkTokens"

    def check_token(self, user: User | None, token: str | None) -> bool:
        """Return whether `token` was made for `user`'s current state within the period."""
        if not (user and token) or "-" not in token:
            return False
        try:
            timestamp = base36_to_int(token.split("-")[0])
        except ValueError:
            return False
        age = self._num_seconds(self._now()) - timestamp
        if age > LINK_VALID_FOR.total_seconds():
            return False
        return any(
            constant_time_compare(
                self._make_token_with_timestamp(user, timestamp, secret), token
            )
            for secret in [self.secret, *self.secret_fallbacks]
        )


password_link_tokens = PasswordLinkTokens()


def password_link(user: User) -> str:
    """Return the path where `user` sets their own password (an invitation or a reset)."""
    return reverse(
        "people:set_password",
        kwargs={
            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": password_link_tokens.make_token(user),
        },
    )


def role_of(user: User) -> str | None:
    """Return the user's role (the highest, should they hold several), or None."""
    held = set(user.groups.values_list("name", flat=True))
    if user.is_superuser:
        held.add("admin")
    return next((role for role in reversed(ROLES) if role in held), None)


def set_role(user: User, role: str) -> None:
    """Give the user exactly one role; an annotator gets an annotator profile."""
    if role not in ROLES:
        raise ValidationError(f"unknown role {role!r}; expected one of {ROLES}")
    ensure_groups()
    user.groups.remove(*Group.objects.filter(name__in=ROLES).exclude(name=role))
    user.groups.add(Group.objects.get(name=role))
    if role == ANNOTATOR:
        AnnotatorProfile.objects.get_or_create(user=user)
    user._role_cache = None


@transaction.atomic
def add_person(
    username: str,
    role: str,
    projects: list[Project],
    *,
    actor: User | None = None,
) -> User:
    """Create a user without a usable password, with a role and projects.

    They set their password through `password_link(user)`.
    """
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationError(
            f"a person named {username!r} exists already; choose another username"
        )
    user = User(username=username)
    user.set_unusable_password()
    user.save()
    set_role(user, role)
    set_memberships(user, projects)
    record(actor, "person.add", obj=user, after=_person_state(user))
    return user


@transaction.atomic
def update_person(
    user: User, *, role: str, projects: list[Project], is_active: bool, by: User
) -> User:
    """Change a person's role, projects and whether they may sign in; return them.

    An admin cannot take their own admin role away or deactivate themselves: the
    platform would be left without the person who can undo it.
    """
    if user.pk == by.pk and (role != "admin" or not is_active):
        raise ValidationError(
            "you cannot remove your own admin role or deactivate yourself; "
            "ask another admin"
        )
    before = _person_state(user)
    set_role(user, role)
    set_memberships(user, projects)
    if user.is_active != is_active:
        user.is_active = is_active
        user.save(update_fields=["is_active"])
    record(by, "person.update", obj=user, before=before, after=_person_state(user))
    return user


def _person_state(user: User) -> dict:
    """Return what the audit log keeps of a person: username, role, projects, active."""
    return {
        "username": user.username,
        "role": role_of(user),
        "projects": sorted(user.member_projects.values_list("name", flat=True)),
        "is_active": user.is_active,
    }
