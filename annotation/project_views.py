"""Project management pages for admins: list, create, archive, upload prompts, and
release or remove the prompts held for review.

Editing a project's guidelines and task shape is the settings page (views.py); the
current policy changes by deployment from the model registry, which keeps a record.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.db import transaction
from django.db.models import Count, F, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from annotation.audit import record
from annotation.forms import ProjectSettingsForm
from annotation.membership import add_member, get_project_for
from annotation.models import ImportReport, Project
from annotation.pool import (
    held_prompts,
    queue_prompt_file,
    release_prompts,
    remove_prompts,
)
from annotation.prompt_files import SUFFIXES
from config.forms import act
from config.roles import ADMIN, role_required
from inference.models import Policy

MAX_UPLOAD_BYTES = 50 * 1024 * 1024


class NewProjectForm(ProjectSettingsForm):
    """A new project: its name, the settings of the settings page, and its policy."""

    current_policy = forms.ModelChoiceField(
        queryset=Policy.objects.filter(kind=Policy.Kind.POLICY).order_by("name"),
        required=False,
        to_field_name="name",
        label="Policy",
        help_text="The policy whose candidates round 1 shows (can be set later by "
        "deploying one from the model registry).",
    )

    class Meta(ProjectSettingsForm.Meta):
        fields = ["name", *ProjectSettingsForm.Meta.fields, "current_policy"]


class PromptUploadForm(forms.Form):
    file = forms.FileField(
        help_text="Plain text (one prompt a line), JSONL or JSON with `prompt` or "
        "`messages`, CSV with a `prompt` column, or Parquet; .gz allowed."
    )
    is_held_out = forms.BooleanField(
        required=False,
        label="Held out",
        help_text="Keep these prompts for evaluation; never published for labelling.",
    )


class HeldPromptsForm(forms.Form):
    prompts = forms.TypedMultipleChoiceField(coerce=int, choices=())
    action = forms.ChoiceField(choices=[("release", "release"), ("remove", "remove")])

    def __init__(self, *args, project: Project, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["prompts"].choices = [
            (pk, pk) for pk in held_prompts(project).values_list("pk", flat=True)
        ]


def _see_other(url: str) -> HttpResponseRedirect:
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


@role_required(ADMIN)
def projects(request: HttpRequest) -> HttpResponse:
    """List every project, archived ones last, with pool and review counts."""
    rows = Project.objects.annotate(
        prompt_count=Count("prompts", distinct=True),
        held_count=Count(
            "prompts", filter=Q(prompts__held_for_review=True), distinct=True
        ),
        member_count=Count("memberships", distinct=True),
    ).order_by(F("archived_at").asc(nulls_first=True), "name")
    return render(request, "projects/projects.html", {"projects": rows})


@role_required(ADMIN)
def new_project(request: HttpRequest) -> HttpResponse:
    """Create a project; the admin who creates it goes to its prompt upload."""
    form = NewProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            project = form.save()
            add_member(request.user, project)
            record(request.user, "project.create", obj=project, after=form.cleaned_data)
        messages.success(request, f"Project {project.name} created: add its prompts.")
        return _see_other(reverse("projects:prompts", args=[project.name]))
    return render(
        request,
        "projects/new.html",
        {"form": form},
        status=400 if form.is_bound and form.errors else 200,
    )


@require_POST
@role_required(ADMIN)
def archive(request: HttpRequest, name: str) -> HttpResponse:
    """Archive the project (only admins see it then), or restore an archived one."""
    project = get_project_for(request.user, name)
    before = {"archived_at": project.archived_at}
    project.archived_at = None if project.archived_at else timezone.now()
    with transaction.atomic():
        project.save(update_fields=["archived_at"])
        action = "project.archive" if project.archived_at else "project.restore"
        record(
            request.user,
            action,
            obj=project,
            before=before,
            after={"archived_at": project.archived_at},
        )
    state = "archived" if project.archived_at else "restored"
    messages.success(request, f"Project {project.name} is {state}.")
    return _see_other(reverse("projects:projects"))


@role_required(ADMIN)
def prompts(request: HttpRequest, name: str) -> HttpResponse:
    """Upload a prompt file for the worker to curate into the pool; list earlier
    uploads. A valid upload is staged and queued, and the answer is 303 to its job
    page, which follows the curation and then shows its report by line."""
    project = get_project_for(request.user, name)
    form = PromptUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            form.add_error(
                "file",
                f"the file has {upload.size:,} bytes; the most is {MAX_UPLOAD_BYTES:,}",
            )
        else:
            job = act(
                form,
                queue_prompt_file,
                project,
                upload,
                is_held_out=form.cleaned_data["is_held_out"],
                actor=request.user,
            )
            if job is not None:
                return _see_other(reverse("data:import_report", args=[job.pk]))
    return render(
        request,
        "projects/prompts.html",
        {
            "project": project,
            "form": form,
            "suffixes": SUFFIXES,
            "pool_count": project.prompts.count(),
            "held_count": held_prompts(project).count(),
            "uploads": project.imports.filter(kind=ImportReport.Kind.PROMPTS)[:20],
        },
        status=400 if form.is_bound and form.errors else 200,
    )


@role_required(ADMIN)
def held(request: HttpRequest, name: str) -> HttpResponse:
    """List the prompts held for review; POST releases or removes the chosen ones."""
    project = get_project_for(request.user, name)
    form = HeldPromptsForm(request.POST or None, project=project)
    if request.method == "POST" and form.is_valid():
        ids = form.cleaned_data["prompts"]
        if form.cleaned_data["action"] == "release":
            count = release_prompts(project, ids, actor=request.user)
            messages.success(request, f"Released {count} prompt(s) for publishing.")
        else:
            count = remove_prompts(project, ids, actor=request.user)
            messages.success(request, f"Removed {count} prompt(s) from the pool.")
        return _see_other(reverse("projects:held", args=[project.name]))
    return render(
        request,
        "projects/held.html",
        {"project": project, "form": form, "prompts": held_prompts(project)},
        status=400 if form.is_bound and form.errors else 200,
    )
