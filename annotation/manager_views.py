"""Pages of the data manager: browse a project's tasks, open one, snapshot a filter.

Thin views over annotation.data_manager (the query, the snapshot mapping, the task
history) and annotation.snapshots.queue_freeze; researchers and admins only.
"""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from annotation.data_manager import (
    FILTER_NAMES,
    TaskFilter,
    parse_filter,
    snapshot_spec,
    task_history,
    task_page,
)
from annotation.data_views import queued_message
from annotation.membership import get_project_for
from annotation.models import Ranking, RankingTask, Round, Snapshot
from annotation.snapshots import queue_freeze
from config.forms import act, outcome, refusal_text
from config.roles import RESEARCHER, role_required
from inference.models import Policy


@role_required(RESEARCHER)
def tasks(request: HttpRequest, name: str) -> HttpResponse:
    """List the project's tasks passing the query string's filter, newest first."""
    project = get_project_for(request.user, name)
    f, refused = outcome(parse_filter, request.GET)
    error = refusal_text(refused) if refused else None
    f = f or TaskFilter()
    after = request.GET.get("after", "")
    page = task_page(project, f, after=int(after) if after.isdigit() else None)
    spec, lost = snapshot_spec(f)
    return render(
        request,
        "data/manager.html",
        {
            "project": project,
            "filter": f,
            "error": error,
            "page": page,
            "next_query": urlencode({**f.fields, "after": page.next_after}),
            "first_query": urlencode(f.fields),
            "spec": spec,
            "lost": lost,
            "rounds": Round.objects.filter(project=project).values_list(
                "number", flat=True
            ),
            "policies": Policy.objects.filter(responses__task__project=project)
            .values_list("name", flat=True)
            .distinct()
            .order_by("name")[:100],
            "default_name": f"manager-{timezone.now():%Y%m%d-%H%M%S}",
        },
        status=400 if error else 200,
    )


@role_required(RESEARCHER)
def task(request: HttpRequest, name: str, task_id: int) -> HttpResponse:
    """Show one task: prompt, responses, every ranking, consensus and its history."""
    project = get_project_for(request.user, name)
    row = get_object_or_404(
        RankingTask.objects.select_related("prompt", "round", "adjudicated_by"),
        pk=task_id,
        project=project,
    )
    responses = list(row.responses.select_related("policy").order_by("position", "id"))
    number = {r.pk: i for i, r in enumerate(responses, start=1)}
    rankings = list(  # every version: superseded ones stay for audit
        Ranking.versions.filter(task=row).select_related("annotator").order_by("id")
    )
    return render(
        request,
        "data/manager_task.html",
        {
            "project": project,
            "task": row,
            "responses": responses,
            "rankings": [(r, _numbered(r.order, number)) for r in rankings],
            "consensus": _numbered(row.consensus_order, number),
            "adjudicated": _numbered(row.adjudicated_order, number),
            "history": [
                (e, _numbered(e.order, number), _numbered(e.consensus, number))
                for e in task_history(row)
            ],
        },
    )


def _numbered(order: list | None, number: dict[int, int]) -> list[list[int]]:
    """Return an order of response ids as display numbers (1 is the first shown)."""
    return [[number.get(rid, rid) for rid in group] for group in order or []]


@require_POST
@role_required(RESEARCHER)
def freeze(request: HttpRequest, name: str) -> HttpResponse:
    """Freeze the posted filter into a snapshot; say what the snapshot left out."""
    project = get_project_for(request.user, name)
    fields = {k: request.POST[k] for k in FILTER_NAMES if request.POST.get(k)}
    back = f"{reverse('data:manager', args=[name])}?{urlencode(fields)}"

    def freeze_filtered() -> tuple[Snapshot, list[str]]:
        spec, lost = snapshot_spec(parse_filter(request.POST))
        name = request.POST.get("name", "").strip()
        return queue_freeze(project, name, user=request.user, filter=spec), lost

    frozen = act(request, freeze_filtered)
    if frozen is None:
        return redirect(back)
    snapshot, lost = frozen
    messages.success(request, queued_message(snapshot))
    if lost:
        messages.warning(request, "Not in the snapshot's filter: " + "; ".join(lost))
    return redirect("data:snapshot", snapshot_id=snapshot.pk)
