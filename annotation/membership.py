"""Project membership: which projects a person may work in or read.

Roles stay global (config/roles.py); a membership says where the role applies.
Admins are implicitly members of every project. Outside their projects a person is
answered 404, as if the project did not exist, so project names do not leak.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from annotation.models import Membership, Project


def visible_projects(user: AbstractBaseUser | AnonymousUser) -> QuerySet:
    """Return the projects the user may see (all for admins, none for anonymous)."""
    return Project.objects.visible_to(user)


def get_project_for(
    user: AbstractBaseUser | AnonymousUser,
    name: str,
    queryset: QuerySet | None = None,
) -> Project:
    """Return the project named `name` if the user may see it; raise Http404 if not.

    `queryset` (a `Project` queryset) decorates the lookup, e.g. with `select_related`.
    """
    projects = queryset if queryset is not None else Project.objects.all()
    project = projects.visible_to(user).filter(name=name).first()
    if project is None:
        raise Http404(f"no project named {name!r} among your projects")
    return project


def is_member(user: AbstractBaseUser | AnonymousUser, project: Project) -> bool:
    """Return whether the user may see the project (admins: always)."""
    return Project.objects.visible_to(user).filter(pk=project.pk).exists()


def require_member(user: AbstractBaseUser | AnonymousUser, project: Project) -> None:
    """Raise Http404 when the user may not see the project."""
    if not is_member(user, project):
        raise Http404(f"no project named {project.name!r} among your projects")


def set_memberships(user: AbstractBaseUser, projects: list[Project]) -> None:
    """Make the user a member of exactly `projects`."""
    keep = {p.pk for p in projects}
    Membership.objects.filter(user=user).exclude(project__in=keep).delete()
    have = set(Membership.objects.filter(user=user).values_list("project", flat=True))
    Membership.objects.bulk_create(
        [Membership(user=user, project_id=pk) for pk in keep - have]
    )


def add_member(user: AbstractBaseUser, project: Project) -> None:
    """Make the user a member of the project (no-op when they already are)."""
    Membership.objects.get_or_create(user=user, project=project)
