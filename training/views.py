"""Training pages: launch a round, watch its stages, cancel and resume it, the model registry, deploy.

Views are thin: a form validates, the role is checked, one workflow function in
training/rounds.py, training/tasks.py or training/deployment.py acts. Researchers read rounds; only
admins launch, cancel, resume, deploy and roll back.
"""

from __future__ import annotations

from pathlib import Path

from django import forms
from django.conf import settings
from django.contrib import messages
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotation.models import Project
from config.forms import act
from config.roles import ADMIN, RESEARCHER, role_required
from inference.lineage import lineage_svg
from inference.models import Policy
from inference.registry import register_model
from training import tasks
from training.charts import job_charts
from training.deployment import deploy_policy, rollback_policy
from training.forms import LaunchForm, RegisterModelForm
from training.models import FINISHED, Status, TrainingJob, TrainingRound
from training.progress import LOG_FILE
from training.reaper import reap_stale_jobs
from training.rounds import cancel_round
from training.supervisor import tail

LOG_TAIL_CHARS = 3000


class ProjectForm(forms.Form):
    """The project a deployment or roll-back applies to."""

    project = forms.ModelChoiceField(
        queryset=Project.objects.all(), to_field_name="name"
    )


@role_required(ADMIN)
def launch(request: HttpRequest) -> HttpResponse:
    """Show the launch form; on a valid POST launch the round and go to its page."""
    if request.method == "POST":
        form = LaunchForm(request.POST)
        if form.is_valid():
            training_round = act(
                form,
                tasks.launch,
                form.cleaned_data["project"],
                form.cleaned_data["method"],
                user=request.user,
                options=form.launch_options(),
            )
            if training_round is not None:
                messages.success(
                    request, f"Training round {training_round.pk} is queued."
                )
                return redirect(training_round)
        return render(request, "training/launch.html", {"form": form}, status=400)
    initial = {
        "project": request.GET.get("project")
        or Project.objects.values_list("name", flat=True).first()
    }
    return render(
        request, "training/launch.html", {"form": LaunchForm(initial=initial)}
    )


@role_required(RESEARCHER, ADMIN)
def round_list(request: HttpRequest) -> HttpResponse:
    """List the newest training rounds of the user's projects with their status."""
    rounds = TrainingRound.objects.filter(
        project__in=Project.objects.visible_to(request.user)
    ).select_related("project", "parent_policy", "output_policy")[:100]
    return render(request, "training/rounds.html", {"rounds": rounds})


def _job_view(job: TrainingJob) -> dict:
    return {
        "job": job,
        "percent": round(100 * job.progress_fraction()),
        "stalled_minutes": int(stalled.total_seconds() // 60)
        if (stalled := job.stalled_for())
        else 0,
        "charts": job_charts(job.history),
        "log": tail(Path(job.run_dir) / LOG_FILE, LOG_TAIL_CHARS)
        if job.run_dir
        else "",
        "metrics": sorted(
            (k, v) for k, v in job.last_metrics.items() if isinstance(v, (int, float))
        ),
    }


@role_required(RESEARCHER, ADMIN)
def round_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """Show a round's stages, progress, curves, logs and errors; htmx polls the status part."""
    reap_stale_jobs()
    training_round = get_object_or_404(
        TrainingRound.objects.select_related(
            "project", "snapshot", "parent_policy", "output_policy"
        ),
        pk=pk,
        project__in=Project.objects.visible_to(request.user),
    )
    jobs = list(training_round.jobs.select_related("output_policy").order_by("index"))
    stopping = training_round.status == Status.CANCELLED and any(
        j.status == Status.RUNNING for j in jobs
    )
    context = {
        "round": training_round,
        "jobs": [_job_view(job) for job in jobs],
        "polling": training_round.status not in FINISHED or stopping,
        "stopping": stopping,
        "stall_minutes": settings.STAGE_STALL_MINUTES,
        "can_resume": training_round.status in (Status.FAILED, Status.CANCELLED)
        and not stopping,
    }
    template = "training/_round_status.html" if request.htmx else "training/round.html"
    return render(request, template, context)


@role_required(RESEARCHER, ADMIN)
def job_log(request: HttpRequest, pk: int) -> HttpResponse:
    """Return the end of a stage's log as plain text."""
    job = get_object_or_404(
        TrainingJob,
        pk=pk,
        round__project__in=Project.objects.visible_to(request.user),
    )
    text = tail(Path(job.run_dir) / LOG_FILE, 200_000) if job.run_dir else ""
    return HttpResponse(text, content_type="text/plain; charset=utf-8")


@require_POST
@role_required(ADMIN)
def cancel(request: HttpRequest, pk: int) -> HttpResponse:
    """Cancel the round: queued stages never start, a running stage is asked to stop."""
    training_round = get_object_or_404(TrainingRound, pk=pk)
    if act(request, cancel_round, training_round, user=request.user):
        messages.success(
            request, f"Round {pk} is cancelled; a running stage stops at its next step."
        )
    return redirect(training_round)


@require_POST
@role_required(ADMIN)
def resume(request: HttpRequest, pk: int) -> HttpResponse:
    """Re-queue a failed or cancelled round from its last checkpoint."""
    training_round = get_object_or_404(TrainingRound, pk=pk)
    job = act(request, tasks.resume, training_round, user=request.user)
    if job is not None:
        messages.success(
            request, f"Round {pk} resumes at stage {job.index + 1} ({job.stage})."
        )
    return redirect(training_round)


@role_required(RESEARCHER, ADMIN)
def registry(request: HttpRequest) -> HttpResponse:
    """Show every registered model with its lineage, metrics and disk use.

    The round that produced a policy comes through the reverse relation
    `produced_by_jobs` of the registry row.
    """
    policies = list(
        Policy.objects.select_related("parent").prefetch_related(
            Prefetch("produced_by_jobs"), "current_for_projects"
        )
    )
    projects = list(
        Project.objects.visible_to(request.user).select_related("current_policy")
    )
    current_ids = {p.current_policy_id for p in projects if p.current_policy_id}
    rows = []
    for policy in policies:
        size = policy.disk_bytes()
        jobs = list(policy.produced_by_jobs.all())
        rows.append(
            {
                "policy": policy,
                "bytes": size,
                "job": jobs[0] if jobs else None,
                "metrics": sorted(
                    (k, v)
                    for k, v in policy.metrics.items()
                    if isinstance(v, (int, float))
                ),
                "current_for": [p.name for p in policy.current_for_projects.all()],
            }
        )
    context = {
        "rows": rows,
        "projects": projects,
        "register_form": RegisterModelForm(),
        "graph": lineage_svg(policies, current_ids),
        # A folder shared by several rows (one base under many full-model rows) counts once.
        "total_bytes": sum(
            {
                (r["policy"].adapter_path or r["policy"].base_path): r["bytes"]
                for r in rows
            }.values()
        ),
    }
    return render(request, "training/registry.html", context)


@require_POST
@role_required(ADMIN)
def deploy(request: HttpRequest, pk: int) -> HttpResponse:
    """Make the policy the chosen project's current policy."""
    policy = get_object_or_404(Policy, pk=pk)
    form = ProjectForm(request.POST)
    if not form.is_valid():
        return HttpResponse(f"bad project: {form.errors.as_text()}", status=400)
    if act(
        request, deploy_policy, form.cleaned_data["project"], policy, user=request.user
    ):
        messages.success(
            request,
            f"{policy.name} is now the current policy of {form.cleaned_data['project']}.",
        )
    return redirect(reverse("training:registry"))


@require_POST
@role_required(ADMIN)
def rollback(request: HttpRequest) -> HttpResponse:
    """Deploy again the policy the project's newest deployment replaced."""
    form = ProjectForm(request.POST)
    if not form.is_valid():
        return HttpResponse(f"bad project: {form.errors.as_text()}", status=400)
    deployment = act(
        request, rollback_policy, form.cleaned_data["project"], user=request.user
    )
    if deployment is not None:
        messages.success(
            request, f"Rolled back: {deployment.policy.name} is current again."
        )
    return redirect(reverse("training:registry"))


@require_POST
@role_required(ADMIN)
def register(request: HttpRequest) -> HttpResponse:
    """Register a model from a server path or hub id (a GGUF file converts in the request)."""
    form = RegisterModelForm(request.POST)
    if not form.is_valid():
        return HttpResponse(f"bad model: {form.errors.as_text()}", status=400)
    data = form.cleaned_data
    policy = act(
        request,
        register_model,
        data["name"],
        data["source"],
        **form.register_options(),
        actor=request.user,
    )
    if policy is not None:
        messages.success(
            request,
            f"Registered {policy.name}: {policy.architecture or 'unknown architecture'}, "
            f"{policy.parameter_count or 0:,} parameters.",
        )
    return redirect(reverse("training:registry"))
