"""Pages of an annotator's history: their own rankings, newest first, and revising one.

Thin views over annotation.revisions; responses are named by their display number
(1 is the first shown), never by database id.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render

from annotation.forms import pairwise_judgement, preference_of, scale_points
from annotation.membership import get_project_for
from annotation.models import Project, Ranking, Response
from annotation.revisions import RevisionRefused, revisability, revise_ranking
from config.forms import outcome, refusal_text
from config.roles import ANNOTATOR, role_required

PAGE_SIZE = 25


@role_required(ANNOTATOR)
def history(request: HttpRequest, name: str) -> HttpResponse:
    """List the annotator's current rankings in the project, newest first.

    Keyset-paged by id: `?before=<id>` shows the rankings older than that one.
    """
    project = get_project_for(request.user, name)
    rankings = Ranking.objects.filter(
        annotator=request.user, task__project=project
    ).select_related("task__prompt", "task__project")
    before = request.GET.get("before", "")
    if before.isdigit():
        rankings = rankings.filter(pk__lt=int(before))
    rows = list(rankings.order_by("-pk")[: PAGE_SIZE + 1])
    older = rows[PAGE_SIZE - 1].pk if len(rows) > PAGE_SIZE else None
    rows = rows[:PAGE_SIZE]
    numbers = _display_numbers([r.task_id for r in rows])
    entries = [
        {
            "ranking": r,
            "numbered": [[numbers[rid] for rid in group] for group in r.order],
            "revisable": revisability(r, request.user),
        }
        for r in rows
    ]
    return render(
        request,
        "annotation/history.html",
        {"project": project, "entries": entries, "older": older},
    )


def _display_numbers(task_ids: list[int]) -> dict[int, int]:
    """Return each response id of the tasks mapped to its display number."""
    numbers: dict[int, int] = {}
    seen: dict[int, int] = {}
    responses = Response.objects.filter(task_id__in=task_ids).order_by(
        "task_id", "position", "id"
    )
    for task_id, rid in responses.values_list("task_id", "pk"):
        seen[task_id] = seen.get(task_id, 0) + 1
        numbers[rid] = seen[task_id]
    return numbers


@role_required(ANNOTATOR)
def revise(request: HttpRequest, name: str, ranking_id: int) -> HttpResponse:
    """Show one of the annotator's rankings; POST stores a revised order.

    POST fields: `rank-<n>` for each response number n (1 is best, equal numbers
    tie), or in a pairwise project `preference` (the point of the strength scale,
    as on the workspace); optional `rationale`. Outside the window, or on a settled task, the page
    says why and offers no form; a POST then answers 409.
    """
    project = get_project_for(request.user, name)
    ranking = get_object_or_404(
        Ranking.versions.select_related("task__prompt", "task__project"),
        pk=ranking_id,
        task__project=project,
    )
    if ranking.annotator_id != request.user.pk:
        raise PermissionDenied("You can see and revise only your own rankings.")
    responses = list(ranking.task.responses.order_by("position", "id"))
    ids = [r.pk for r in responses]
    pairwise = project.mode == Project.Mode.PAIRWISE
    error, status = "", 200
    if request.method == "POST":
        _, refused = outcome(
            lambda: _revise(request, ranking, len(responses), pairwise)
        )
        if refused:
            error = refusal_text(refused)
            status = 409 if isinstance(refused, RevisionRefused) else 400
        else:
            messages.success(
                request, f"Your ranking of task {ranking.task_id} is revised."
            )
            return redirect("annotation:history", name=project.name)
    rank_of = ranking.rank_of()
    return render(
        request,
        "annotation/revise.html",
        {
            "project": project,
            "ranking": ranking,
            "revisable": revisability(ranking, request.user),
            "responses": [
                (n, r, rank_of.get(r.pk, 0) + 1)
                for n, r in enumerate(responses, start=1)
            ],
            "rank_choices": range(1, len(responses) + 1),
            "scale": scale_points(project) if pairwise else None,
            "point": (
                str(preference_of(ranking.order, ranking.strength or 0, ids))
                if pairwise
                else None
            ),
            "error": error,
        },
        status=status,
    )


def _posted_order(data: QueryDict, k: int) -> list[list[int]]:
    """Return the order posted as `rank-<display number>` fields, as tie groups of
    display numbers (handles) of the task's `k` responses.

    Raise ValidationError naming a missing or non-numeric rank.
    """
    by_rank: dict[int, list[int]] = {}
    for number in range(1, k + 1):
        value = (data.get(f"rank-{number}") or "")[:20].strip()
        if not value.isdigit():
            raise ValidationError(
                f"response {number} needs a rank (a whole number, 1 is best), "
                f"got {value!r}"
            )
        by_rank.setdefault(int(value), []).append(number)
    return [by_rank[r] for r in sorted(by_rank)]


def _revise(request: HttpRequest, ranking: Ranking, k: int, pairwise: bool) -> Ranking:
    """Store the revision the request posted (see `revise`), in handles 1..k."""
    if pairwise:
        order, strength = _posted_judgement(request.POST, list(range(1, k + 1)))
    else:
        order, strength = _posted_order(request.POST, k), None
    return revise_ranking(
        ranking,
        request.user,
        order,
        strength=strength,
        rationale=request.POST.get("rationale"),
    )


def _posted_judgement(
    data: QueryDict, handles: list[int]
) -> tuple[list[list[int]], int]:
    """Return the order and strength a pairwise revision posted as `preference`.

    Raise ValidationError naming a missing or non-numeric point.
    """
    value = (data.get("preference") or "").strip()
    if not value.lstrip("-").isdigit() or len(value) > 3:
        raise ValidationError(
            f"choose a point on the scale (a whole number), got {value!r}"[:300]
        )
    return pairwise_judgement(int(value), handles)
