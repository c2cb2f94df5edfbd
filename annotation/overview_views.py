"""The project overview for admins and researchers: rounds, policies, win rates, leaderboard.

Read-only. Lineage is read from the registry rows (`Policy.parent`, snapshot and
config copied onto each row), so this page needs nothing from the training app.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.db import transaction
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from annotation.audit import record
from annotation.figures import page_figures
from annotation.leaderboard import JUDGE_WIN_RATE_KEY, RM_WIN_RATE_KEY, sft_policy
from annotation.membership import get_project_for
from annotation.models import Project, ProjectFigures, Response, Round
from annotation.views import figures_status
from config.roles import ADMIN, RESEARCHER, role_required
from inference.models import Policy

# Policy.metrics keys shown as columns, in order, with their headings.
METRIC_COLUMNS = (
    (JUDGE_WIN_RATE_KEY, "Judge win rate vs SFT"),
    (RM_WIN_RATE_KEY, "RM win rate vs SFT"),
    ("judge_win_rate_vs_previous", "Judge win rate vs previous"),
    ("kl", "KL to reference"),
    ("distinct_2", "distinct-2"),
)


def project_policies(project: Project) -> list[Policy]:
    """Return the project's policies: those that wrote its responses, the current one,
    and their ancestors, oldest first."""
    ids = set(
        Response.objects.filter(task__project=project)
        .order_by()
        .values_list("policy_id", flat=True)
        .distinct()
    )
    if project.current_policy_id:
        ids.add(project.current_policy_id)
    by_id = {
        p.pk: p for p in Policy.objects.filter(pk__in=ids).select_related("parent")
    }
    frontier = [
        p.parent_id for p in by_id.values() if p.parent_id and p.parent_id not in by_id
    ]
    while frontier:
        found = {
            p.pk: p
            for p in Policy.objects.filter(pk__in=frontier).select_related("parent")
        }
        by_id.update(found)
        frontier = [
            p.parent_id
            for p in found.values()
            if p.parent_id and p.parent_id not in by_id
        ]
    return sorted(by_id.values(), key=lambda p: (p.created_at, p.pk))


@role_required(ADMIN, RESEARCHER)
def project_overview(request: HttpRequest, name: str) -> HttpResponse:
    """Show a project's rounds, policies with their win rates, and the leaderboards."""
    project = get_project_for(
        request.user, name, Project.objects.select_related("current_policy")
    )
    if request.htmx and "figures" in request.GET:
        return figures_status(request, project, ProjectFigures.Page.OVERVIEW)
    rounds = (
        Round.objects.filter(project=project)
        .select_related("policy")
        .annotate(
            task_count=Count("tasks", distinct=True),
            ranking_count=Count(
                "tasks__rankings",
                filter=Q(
                    tasks__rankings__is_skip=False, tasks__rankings__is_current=True
                ),
            ),
        )
        .order_by("number")
    )
    sft = sft_policy(project)
    policies = [
        {
            "policy": p,
            "is_current": p.pk == project.current_policy_id,
            "is_sft": sft is not None and p.pk == sft.pk,
            "metrics": [_metric(p.metrics, key) for key, _ in METRIC_COLUMNS],
        }
        for p in project_policies(project)
    ]
    # The leaderboards and the simulators' agreement read every ranking: a large
    # project's are the worker's (annotation.figures).
    shown = page_figures(project, ProjectFigures.Page.OVERVIEW, user=request.user)
    return render(
        request,
        "overview/project.html",
        {
            "project": project,
            "publish_form": PublishForm(),
            "rounds": rounds,
            "policies": policies,
            "metric_headings": [heading for _, heading in METRIC_COLUMNS],
            "shown": shown,
            **(shown.figures or {}),
        },
    )


def _metric(metrics: dict, key: str) -> float | None:
    value = (metrics or {}).get(key)
    return (
        value
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else None
    )


class PublishForm(forms.Form):
    """What an admin chooses when publishing the next round from the overview page."""

    prompts = forms.IntegerField(min_value=1, max_value=2000, initial=32)
    strategy = forms.ChoiceField(
        choices=[(s, s) for s in ("fresh", "random", "uncertainty", "disagreement")],
        initial="fresh",
    )
    temperature = forms.FloatField(min_value=0.0, max_value=2.0, initial=1.0)
    seed = forms.IntegerField(min_value=0, max_value=2**32 - 1, initial=0)
    earlier = forms.BooleanField(
        required=False,
        initial=True,
        help_text="One candidate per task from the deployed policy's parent.",
    )


@require_POST
@role_required(ADMIN)
def publish(request: HttpRequest, name: str) -> HttpResponse:
    """Queue the next round's generation for the worker (POST prompts, strategy, ...)."""
    from annotation.tasks import publish_round_task

    project = get_project_for(request.user, name)
    form = PublishForm(request.POST)
    if project.current_policy_id is None:
        messages.error(
            request, "Deploy a policy to this project before publishing a round."
        )
        return redirect("overview:project", name=name)
    if not form.is_valid():
        errors = "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items())
        return HttpResponse(f"Invalid round settings: {errors}", status=400)
    data = form.cleaned_data
    with transaction.atomic():
        publish_round_task.enqueue(
            project.pk,
            data["prompts"],
            data["strategy"],
            data["temperature"],
            data["seed"],
            data["earlier"],
        )
        record(request.user, "round.publish", project=project, after=data)
    messages.success(
        request,
        f"Round queued: the worker generates {data['prompts']} tasks with "
        f"{project.current_policy}; it appears under Rounds when done.",
    )
    return redirect("overview:project", name=name)
