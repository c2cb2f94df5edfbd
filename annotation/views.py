"""Annotation pages: thin views that check the role and call one workflow function.

Pages: home; the annotator workspace (GET shows the held task, POST leases the
next one; submit and skip); the review queue and a task's review page with adjudication (researchers
and admins); gold management, project settings and the dashboard (admins).
"""

from __future__ import annotations

from datetime import datetime, time
from functools import lru_cache

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.db import connection, transaction
from django.db.models import Count, F
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRefresh

from annotation.assignment import (
    AnnotatorPaused,
    LateSubmissionRefused,
    held_lease,
    next_task,
    pause_reason,
    skip_task,
    submit_ranking_and_lease_next,
)
from annotation.audit import record
from annotation.consensus import adjudicate
from annotation.figures import PageFigures, fail_lost_figures, page_figures
from annotation.forms import (
    AdjudicateForm,
    GoldForm,
    ProjectSettingsForm,
    RankingForm,
    SkipForm,
    scale_points,
)
from annotation.gold import mark_gold, reinstate, unmark_gold
from annotation.markdown import render_guidelines
from annotation.membership import get_project_for
from annotation.models import (
    AnnotatorProfile,
    Lease,
    Project,
    ProjectFigures,
    Prompt,
    Ranking,
    RankingTask,
    Response,
)
from config.forms import act
from config.roles import ADMIN, ANNOTATOR, RESEARCHER, is_annotator, role_required

# Tasks whose agreement is below this go to the review queue.
REVIEW_BELOW = 0.67


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Show the user's projects and where each role goes next (annotators: their progress)."""
    projects = list(
        Project.objects.visible_to(request.user).filter(archived_at__isnull=True)
    )
    open_tasks = dict(
        RankingTask.objects.filter(is_gold=False, ranking_count__lt=F("overlap"))
        .values("project")
        .annotate(n=Count("pk"))
        .values_list("project", "n")
    )
    done = {}
    if is_annotator(request.user):
        done = dict(
            Ranking.objects.filter(annotator=request.user, is_skip=False)
            .values("task__project")
            .annotate(n=Count("pk"))
            .values_list("task__project", "n")
        )
    for project in projects:
        project.open_tasks = open_tasks.get(project.pk, 0)
        project.done_by_me = done.get(project.pk, 0)
    return render(request, "home.html", {"projects": projects})


def _see_other(url: str) -> HttpResponseRedirect:
    """Answer a POST with 303 See Other, so a reload does not post again."""
    response = HttpResponseRedirect(url)
    response.status_code = 303
    return response


def _project(request: HttpRequest, name: str) -> Project:
    """Return the named project if the user is a member (admins: any); else 404."""
    return get_project_for(request.user, name)


def _progress(project: Project, user: User, now: datetime) -> dict[str, int]:
    """Return the annotator's rankings in the project: today (UTC day) and in all.

    Raw SQL, with `_task_text`: the workspace renders on every submission.
    """
    start = timezone.make_aware(datetime.combine(timezone.localdate(now), time.min))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*), "
            "COALESCE(SUM(CASE WHEN r.created_at >= %s THEN 1 ELSE 0 END), 0) "
            f"FROM {Ranking._meta.db_table} r JOIN {RankingTask._meta.db_table} t "
            "ON t.id = r.task_id "
            "WHERE r.annotator_id = %s AND t.project_id = %s AND r.is_skip = %s "
            "AND r.is_current = %s",
            [
                connection.ops.adapt_datetimefield_value(start),
                user.pk,
                project.pk,
                False,
                True,
            ],
        )
        total, today = cursor.fetchone()
    return {"today": today, "total": total}


def _task_text(task_id: int) -> tuple[list[dict], list[dict[str, str]]]:
    """Return a task's prompt messages and its responses (text and handle, the
    handle as a string, in display order) in one statement.

    Annotators see handles only, never response ids: ids follow generation, and
    could tell which policy wrote a response (`models.Handles`).
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.messages, r.id, r.text FROM {RankingTask._meta.db_table} t "
            f"JOIN {Prompt._meta.db_table} p ON p.id = t.prompt_id "
            f"LEFT JOIN {Response._meta.db_table} r ON r.task_id = t.id "
            "WHERE t.id = %s ORDER BY r.position, r.id",
            [task_id],
        )
        rows = cursor.fetchall()
    messages_field = Prompt._meta.get_field("messages")
    messages_in_prompt = messages_field.from_db_value(rows[0][0], None, connection)
    numbered = enumerate((row for row in rows if row[1] is not None), start=1)
    responses = [
        {"text": text, "number": str(number)} for number, (_, _, text) in numbered
    ]
    return messages_in_prompt, responses


@lru_cache(maxsize=16)
def _options(n: int) -> SafeString:
    """Return the <option>s 1..n of a rank or rating select (numbers only: no escaping)."""
    return mark_safe(
        "".join(f'<option value="{i}">{i}</option>' for i in range(1, n + 1))
    )


@lru_cache(maxsize=64)
def _guidelines_html(text: str) -> SafeString:
    # Markdown + nh3 cost more than the rest of the page; guidelines rarely change.
    return render_guidelines(text)


def _paused(
    request: HttpRequest, project: Project, exc: AnnotatorPaused | str
) -> HttpResponse:
    return render(
        request,
        "annotation/_paused.html" if request.htmx else "annotation/paused.html",
        {"project": project, "reason": str(exc)},
        status=403,
    )


def _workspace(
    request: HttpRequest,
    project: Project,
    *,
    lease: Lease | None = None,
    is_leased: bool = False,
    form: RankingForm | SkipForm | None = None,
    notice: str = "",
    status: int = 200,
    offer_next: bool = False,
) -> HttpResponse:
    """Render the workspace for `lease`, or for the annotator's next task.

    `is_leased` says `lease` is already the annotator's next task (None: none left).
    `offer_next`: no lease is held; the page asks for one by POST (htmx on load).
    """
    now = timezone.now()
    if lease is None and not is_leased:
        try:
            lease = next_task(project, request.user, now=now)
        except AnnotatorPaused as exc:
            return _paused(request, project, exc)
    context = {
        "project": project,
        "lease": lease,
        "form": form,
        "notice": notice,
        "progress": _progress(project, request.user, now),
        "guidelines": _guidelines_html(project.guidelines),
        "offer_next": offer_next,
    }
    if lease is not None:
        # Only the columns the page shows, and numbers as strings: the template then
        # neither builds model instances nor localises each number it prints.
        messages_in_prompt, responses = _task_text(lease.task_id)
        context.update(
            responses=responses,
            messages_in_prompt=messages_in_prompt,
            elapsed_seconds=int((now - lease.leased_at).total_seconds()),
            seconds_left=int((lease.expires_at - now).total_seconds()),
            # The same options under every response: built once, not per response.
            rank_options=_options(len(responses)),
            rating_options=_options(7),
        )
        if project.mode == Project.Mode.PAIRWISE:
            context["scale"] = scale_points(project)
            for response, side in zip(responses, "AB", strict=False):
                response["side"] = side
    template = (
        "annotation/_workspace.html" if request.htmx else "annotation/workspace.html"
    )
    return render(request, template, context, status=status)


def _after_answer(
    request: HttpRequest, project: Project, notice: str, *, ok: bool
) -> HttpResponse:
    """Show the next task: in place for htmx, else lease it and redirect with a message."""
    if request.htmx:
        return _workspace(request, project, notice=notice)
    (messages.success if ok else messages.error)(request, notice)
    try:
        next_task(project, request.user)
    except AnnotatorPaused:
        pass  # the workspace page says so
    return _see_other(reverse("annotation:annotate", args=[project.name]))


def _invalid(
    request: HttpRequest, project: Project, form: RankingForm | SkipForm
) -> HttpResponse:
    """Show the same task again with the form's errors; nothing was stored."""
    lease = form.cleaned_data.get("lease") if hasattr(form, "cleaned_data") else None
    return _workspace(request, project, lease=lease, form=form, status=400)


@role_required(ANNOTATOR)
def annotate(request: HttpRequest, name: str) -> HttpResponse:
    """Show the workspace: GET the annotator's held task, POST lease the next one.

    A GET never leases (a cross-site image or link must not take tasks in someone's
    name): without a held task the page asks for one by POST, by itself with htmx
    or by a button without JavaScript. POST answers the workspace in place (htmx)
    or 303 to this page.
    """
    project = _project(request, name)
    if request.method == "POST":
        if request.htmx:
            return _workspace(request, project)
        try:
            lease = next_task(project, request.user)
        except AnnotatorPaused as exc:
            return _paused(request, project, exc)
        if lease is None:  # say so here: the GET would offer the next task again
            return _workspace(request, project, is_leased=True)
        return _see_other(reverse("annotation:annotate", args=[project.name]))
    reason = pause_reason(request.user)
    if reason is not None:
        return _paused(request, project, reason)
    lease = held_lease(project, request.user)
    return _workspace(
        request, project, lease=lease, is_leased=True, offer_next=lease is None
    )


@require_POST
@role_required(ANNOTATOR)
def submit(request: HttpRequest, name: str) -> HttpResponse:
    """Store the annotator's ranking of their leased task, then show the next task.

    POST fields (form-encoded):
    - `lease`: id of the annotator's lease, from the workspace page;
    Responses are named by their handle, the number the page shows (1..K), never
    by database id.
    - `order`: JSON list of tie groups of handles, best first, e.g.
      `[[3],[1,4],[2]]` (1 and 4 tie). Without it, one `rank-<handle>` field per
      response, 1 = best, equal numbers tie (the no-JavaScript form);
    - `all_bad`: `on` when every response is bad;
    - `unsafe`: the handle of a response flagged as unsafe (repeat the field for
      several);
    - `rationale`: why (required when the project requires rationales);
    - `rewrite`: a better response written by the annotator;
    - `aspect-<handle>-<aspect>`: 1 to 7 for the project's aspects (blank: not
      rated);
    - `active_seconds`: active time measured by the page;
    - pairwise projects: `preference`, the point on the strength scale (-levels:
      A's strongest, 0: about the same, levels: B's strongest) in place of
      `order`; or `order` with `strength` (see `Ranking.validate_strength`).

    Answer 303 to the workspace (htmx: the next task's workspace, 200). A missing,
    repeated or unknown response, or any other invalid field, answers 400 with the
    message, and nothing is stored. A late submission whose task filled up
    meanwhile is refused with a message and the next task.
    """
    project = _project(request, name)
    form = RankingForm(request.POST, user=request.user, project=project)
    if not form.is_valid():
        return _invalid(request, project, form)
    lease = form.cleaned_data["lease"]
    was_late = lease.status != Lease.Status.ACTIVE or lease.expires_at <= timezone.now()
    try:
        _, next_lease = submit_ranking_and_lease_next(
            lease,
            request.user,
            form.submission(),
            response_ids=form.response_ids,
            project=project,
        )
    except LateSubmissionRefused as exc:
        return _after_answer(request, project, str(exc), ok=False)
    except AnnotatorPaused as exc:
        # Paused before this ranking (nothing stored) or by it (stored): the paused
        # page says why no task follows.
        if request.htmx:
            return _paused(request, project, exc)
        return _see_other(reverse("annotation:annotate", args=[project.name]))
    notice = (
        "Your lease had expired, but the task still needed rankings: your ranking is saved."
        if was_late
        else "Ranking saved."
    )
    if request.htmx:
        return _workspace(
            request, project, lease=next_lease, is_leased=True, notice=notice
        )
    messages.success(request, notice)
    return _see_other(reverse("annotation:annotate", args=[project.name]))


@require_POST
@role_required(ANNOTATOR)
def skip(request: HttpRequest, name: str) -> HttpResponse:
    """Skip the leased task with a reason (POST `lease`, `reason`), then show the next."""
    project = _project(request, name)
    form = SkipForm(request.POST, user=request.user, project=project)
    if not form.is_valid():
        return _invalid(request, project, form)
    try:
        skip_task(form.cleaned_data["lease"], request.user, form.cleaned_data["reason"])
    except AnnotatorPaused as exc:
        return _paused(request, project, exc)
    return _after_answer(request, project, "Task skipped.", ok=True)


@role_required(RESEARCHER)
def review(request: HttpRequest, name: str) -> HttpResponse:
    """List the tasks whose annotators disagree most, unadjudicated first."""
    project = _project(request, name)
    tasks = (
        RankingTask.objects.filter(
            project=project, ranking_count__gte=2, agreement__lt=REVIEW_BELOW
        )
        .select_related("prompt", "adjudicated_by")
        .order_by(F("adjudicated_at").asc(nulls_first=True), "agreement", "id")
    )
    page = Paginator(tasks, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "annotation/review.html",
        {"project": project, "page": page, "below": REVIEW_BELOW},
    )


def _numbered(order: list[list[int]] | None, number: dict[int, int]) -> list[list[int]]:
    return [[number.get(rid, rid) for rid in group] for group in order or []]


@role_required(RESEARCHER)
def review_task(request: HttpRequest, name: str, task_id: int) -> HttpResponse:
    """Show every ranking and rationale of a task; POST adjudicates an order.

    POST takes the order like the workspace (`order` JSON or `rank-<response id>`).
    """
    project = _project(request, name)
    task = get_object_or_404(
        RankingTask.objects.select_related("prompt", "adjudicated_by"),
        pk=task_id,
        project=project,
    )
    responses = list(task.responses.order_by("position", "id"))
    number = {r.pk: i for i, r in enumerate(responses, start=1)}
    for r in responses:
        r.number = number[r.pk]
    form = AdjudicateForm(
        request.POST if request.method == "POST" else None,
        task=task,
        response_ids=list(number),
    )
    if request.method == "POST":
        if form.is_valid():
            adjudicate(task, form.cleaned_data["order"], request.user)
            messages.success(request, f"Adjudicated order of task {task.pk} saved.")
            return _see_other(
                reverse("annotation:review_task", args=[project.name, task.pk])
            )
    rankings = list(task.rankings.select_related("annotator").order_by("id"))
    for ranking in rankings:
        ranking.numbered = _numbered(ranking.order, number)
        ranking.unsafe_numbers = [number.get(r, r) for r in ranking.unsafe_response_ids]
    return render(
        request,
        "annotation/review_task.html",
        {
            "project": project,
            "task": task,
            "responses": responses,
            "rankings": rankings,
            "consensus": _numbered(task.consensus_order, number),
            "adjudicated": _numbered(task.adjudicated_order, number),
            "gold": _numbered(task.gold_order, number),
            "form": form,
            "rank_choices": range(1, len(responses) + 1),
        },
        status=400 if form.is_bound and form.errors else 200,
    )


@role_required(ADMIN)
def gold(request: HttpRequest, name: str) -> HttpResponse:
    """List gold tasks and paused annotators; POST marks a task gold."""
    project = _project(request, name)
    form = GoldForm(request.POST if request.method == "POST" else None, project=project)
    if request.method == "POST" and form.is_valid():
        act(
            form,
            mark_gold,
            form.cleaned_data["task"],
            form.cleaned_data["gold_order"],
            actor=request.user,
        )
        if not form.errors:
            messages.success(
                request, f"Task {form.cleaned_data['task'].pk} is now gold."
            )
            return _see_other(reverse("annotation:gold", args=[project.name]))
    gold_tasks = (
        RankingTask.objects.filter(project=project, is_gold=True)
        .select_related("prompt")
        .order_by("id")
    )
    paused = (
        AnnotatorProfile.objects.filter(is_paused=True)
        .select_related("user")
        .order_by("user__username")
    )
    return render(
        request,
        "annotation/gold.html",
        {
            "project": project,
            "form": form,
            "page": Paginator(gold_tasks, 50).get_page(request.GET.get("page")),
            "paused": paused,
        },
        status=400 if form.is_bound and form.errors else 200,
    )


@require_POST
@role_required(ADMIN)
def unmark(request: HttpRequest, name: str, task_id: int) -> HttpResponse:
    """Make a gold task an ordinary task again."""
    project = _project(request, name)
    task = get_object_or_404(RankingTask, pk=task_id, project=project)
    unmark_gold(task, actor=request.user)
    messages.success(request, f"Task {task_id} is no longer gold.")
    return _see_other(reverse("annotation:gold", args=[project.name]))


@require_POST
@role_required(ADMIN)
def reinstate_annotator(request: HttpRequest, name: str, user_id: int) -> HttpResponse:
    """Lift a paused annotator's pause."""
    project = _project(request, name)
    annotator = get_object_or_404(User, pk=user_id)
    reinstate(annotator, actor=request.user)
    messages.success(request, f"{annotator.username} is reinstated.")
    return _see_other(reverse("annotation:gold", args=[project.name]))


@role_required(ADMIN)
def project_settings(request: HttpRequest, name: str) -> HttpResponse:
    """Edit a project's guidelines, task shape and quality settings."""
    project = _project(request, name)
    form = ProjectSettingsForm(
        request.POST if request.method == "POST" else None, instance=project
    )
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            form.save()
            changed = form.changed_data
            before = {key: form.initial.get(key) for key in changed}
            after = {key: form.cleaned_data.get(key) for key in changed}
            record(
                request.user,
                "project.settings",
                obj=project,
                before=before,
                after=after,
            )
        messages.success(request, "Project settings saved.")
        return _see_other(reverse("annotation:settings", args=[project.name]))
    return render(
        request,
        "annotation/settings.html",
        {"project": project, "form": form},
        status=400 if form.is_bound and form.errors else 200,
    )


def figures_status(request: HttpRequest, project: Project, page: str) -> HttpResponse:
    """Answer the poll of a page whose figures the worker computes: reload the page
    once they are done, else show how far it got (or why it failed, which stops the
    poll; the next visit asks again)."""
    fail_lost_figures()
    job = get_object_or_404(ProjectFigures, project=project, page=page)
    if job.status == ProjectFigures.Status.DONE:
        return HttpResponseClientRefresh()
    return render(
        request,
        "annotation/_figures_status.html",
        {"shown": PageFigures(job.result or None, job, None)},
    )


@role_required(ADMIN)
def dashboard(request: HttpRequest, name: str) -> HttpResponse:
    """Show throughput, agreement, gold accuracy and time per task, as plots and tables.

    A large project's figures are the worker's (`annotation.figures`): the page shows
    the kept ones and, while newer ones are computed, polls and reloads when they are.
    """
    project = _project(request, name)
    if request.htmx and "figures" in request.GET:
        return figures_status(request, project, ProjectFigures.Page.DASHBOARD)
    shown = page_figures(project, ProjectFigures.Page.DASHBOARD, user=request.user)
    return render(
        request,
        "annotation/dashboard.html",
        {"project": project, "shown": shown, **(shown.figures or {})},
    )
