"""People pages: admins list, add and edit people and make password links; everyone
changes their own password.

Thin views: a form validates, one function of annotation/people.py acts.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.models import User
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from annotation.models import Membership, Project
from annotation.people import add_person, password_link, role_of, update_person
from config.forms import act
from config.roles import ADMIN, ROLES, role_required


class _ProjectsField(forms.ModelMultipleChoiceField):
    def __init__(self) -> None:
        super().__init__(
            queryset=Project.objects.all(),
            to_field_name="name",
            required=False,
            widget=forms.CheckboxSelectMultiple,
            help_text="Where the person works or reads; admins see every project.",
        )


class PersonForm(forms.Form):
    """A new person: username, role, projects."""

    username = forms.RegexField(
        regex=r"^[\w.@+-]+\Z",
        max_length=150,
        help_text="Letters, digits and @ . + - _ only.",
    )
    role = forms.ChoiceField(choices=[(r, r) for r in ROLES])
    projects = _ProjectsField()


class EditPersonForm(forms.Form):
    """A person's role, projects and whether they may sign in."""

    role = forms.ChoiceField(choices=[(r, r) for r in ROLES])
    projects = _ProjectsField()
    is_active = forms.BooleanField(
        required=False, label="Active", help_text="Unticked: the person cannot sign in."
    )


def _no_store(response: HttpResponse) -> HttpResponse:
    # A password link is on this page: never cache it.
    response["Cache-Control"] = "no-store"
    return response


@role_required(ADMIN)
def people(request: HttpRequest) -> HttpResponse:
    """List people with their roles and projects; POST adds one and shows their link."""
    form = PersonForm(request.POST or None)
    invited = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        user = act(
            form,
            add_person,
            data["username"],
            data["role"],
            list(data["projects"]),
            actor=request.user,
        )
        if user is not None:
            invited = {
                "user": user,
                "link": request.build_absolute_uri(password_link(user)),
            }
            form = PersonForm()
    everyone = User.objects.order_by("username").prefetch_related(
        "groups",
        Prefetch("memberships", Membership.objects.select_related("project")),
    )
    rows = [
        {
            "user": user,
            "role": role_of(user) or "none",
            "projects": [m.project.name for m in user.memberships.all()],
        }
        for user in everyone
    ]
    return _no_store(
        render(
            request,
            "people/people.html",
            {"form": form, "rows": rows, "invited": invited},
            status=400 if form.is_bound and form.errors else 200,
        )
    )


@role_required(ADMIN)
def person(request: HttpRequest, user_id: int) -> HttpResponse:
    """Edit a person's role, projects and whether they are active."""
    user = get_object_or_404(User, pk=user_id)
    initial = {
        "role": role_of(user),
        "projects": list(user.member_projects.all()),
        "is_active": user.is_active,
    }
    form = EditPersonForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        saved = act(
            form,
            update_person,
            user,
            role=data["role"],
            projects=list(data["projects"]),
            is_active=data["is_active"],
            by=request.user,
        )
        if saved:
            messages.success(request, f"Saved {user.username}.")
            return redirect("people:person", user_id=user.pk)
    return render(
        request,
        "people/person.html",
        {"person": user, "form": form},
        status=400 if form.is_bound and form.errors else 200,
    )


@require_POST
@role_required(ADMIN)
def reset_link(request: HttpRequest, user_id: int) -> HttpResponse:
    """Make a link where the person sets a new password; show it once."""
    user = get_object_or_404(User, pk=user_id)
    form = EditPersonForm(
        initial={
            "role": role_of(user),
            "projects": list(user.member_projects.all()),
            "is_active": user.is_active,
        }
    )
    link = request.build_absolute_uri(password_link(user))
    return _no_store(
        render(
            request,
            "people/person.html",
            {"person": user, "form": form, "link": link},
        )
    )
