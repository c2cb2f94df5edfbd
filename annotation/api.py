"""The annotation part of the REST API: projects, prompts, rounds, tasks, rankings,
snapshots with downloads, imports, and the caller's API tokens.

Operations are thin: check the role (DESIGN.md), validate through the schema, call
one workflow function, return its result. Roles: annotators see and work only on the
tasks leased to them; researchers read everything, freeze snapshots, export and
import; admins also manage projects and prompts.
"""

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, F, Prefetch, Q, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from ninja import Field, File, Form, Query, Router, Schema, Status
from ninja.errors import HttpError
from ninja.files import UploadedFile
from ninja.pagination import LimitOffsetPagination, paginate

from annotation.assignment import (
    MAX_ASPECTS,
    MAX_RESPONSES,
    RATIONALE_MAX_CHARS,
    REWRITE_MAX_CHARS,
    RankingSubmission,
)
from annotation.audit import record
from annotation.export import (
    DOWNLOAD_TYPES,
    FILE_FORMATS,
    FORMATS,
    PROMPT_MODES,
    STYLES,
    download_suffix,
    fail_lost_exports,
    queue_export,
    ready_export,
)
from annotation.importing import FORMATS as IMPORT_FORMATS
from annotation.membership import get_project_for
from annotation.models import (
    DEFAULT_STRENGTH_LABELS,
    MAX_STRENGTH_LEVELS,
    STRENGTH_LABEL_MAX_CHARS,
    ApiToken,
    Corpus,
    Handles,
    ImportReport,
    Lease,
    Project,
    Prompt,
    Ranking,
    RankingTask,
    Response,
    Round,
    Snapshot,
)
from annotation.snapshots import (
    DEDUP_RULES,
    MARGIN_RULES,
    PAIR_RULES,
    REWRITE_RULES,
    TIE_RULES,
)
from config.roles import is_admin, is_annotator, is_researcher
from config.scopes import ADMIN, ANNOTATE, DATA, READ, SESSION_ONLY, scoped

router = Router()


# ---------------------------------------------------------------- shared pieces


class ErrorOut(Schema):
    detail: Any = Field(..., description="What went wrong and how to fix it.")


ERRORS = {400: ErrorOut, 401: ErrorOut, 403: ErrorOut, 404: ErrorOut, 422: ErrorOut}


def caller(request: HttpRequest) -> AbstractBaseUser:
    """Return the authenticated user (by token or session)."""
    return request.auth


def require(request: HttpRequest, allowed: bool, role: str) -> None:
    """Raise PermissionDenied naming the role an operation needs."""
    if not allowed:
        raise PermissionDenied(f"this operation needs the {role} role")


def require_any_role(request: HttpRequest) -> None:
    user = caller(request)
    require(
        request,
        is_annotator(user) or is_researcher(user),
        "annotator, researcher or admin",
    )


def require_researcher(request: HttpRequest) -> None:
    require(request, is_researcher(caller(request)), "researcher or admin")


def require_admin(request: HttpRequest) -> None:
    require(request, is_admin(caller(request)), "admin")


def project_or_404(request: HttpRequest, name: str) -> Project:
    """Return the named project if the caller is a member (admins: any); else 404."""
    return get_project_for(caller(request), name)


MAX_TEXT_CHARS = 100_000  # a prompt message, as annotation.importing allows
MAX_MESSAGES = 100


class Message(Schema):
    role: Literal["system", "user", "assistant"]
    content: str


class MessageIn(Message):
    content: str = Field(..., max_length=MAX_TEXT_CHARS)


Conversation = Annotated[list[MessageIn], Field(max_length=MAX_MESSAGES)]


# ---------------------------------------------------------------- projects


class ProjectOut(Schema):
    id: int
    name: str
    title: str
    guidelines: str
    responses_per_task: int
    overlap: int
    aspects: list[str]
    mode: str
    strength_labels: list[str]
    current_policy: str | None
    created_at: datetime

    @staticmethod
    def resolve_current_policy(obj: Project) -> str | None:
        return obj.current_policy.name if obj.current_policy_id else None


class ProjectIn(Schema):
    name: str = Field(..., pattern=r"^[-a-zA-Z0-9_]+$", max_length=100)
    title: str = Field("", max_length=200)
    guidelines: str = Field("", max_length=MAX_TEXT_CHARS)
    responses_per_task: int = Field(4, ge=2, le=9)
    overlap: int = Field(3, ge=1, le=100)
    aspects: list[Annotated[str, Field(max_length=100)]] = Field(
        [], max_length=MAX_ASPECTS
    )
    mode: Literal[tuple(Project.Mode.values)] = Field(
        Project.Mode.RANKING,
        description="ranking (K responses, ties allowed) or pairwise (2 responses "
        "and a strength).",
    )
    strength_labels: list[
        Annotated[str, Field(min_length=1, max_length=STRENGTH_LABEL_MAX_CHARS)]
    ] = Field(
        DEFAULT_STRENGTH_LABELS,
        min_length=1,
        max_length=MAX_STRENGTH_LEVELS,
        description="Pairwise: strength levels of one side, weakest first.",
    )


@router.get(
    "/projects",
    auth=scoped(READ),
    response={200: list[ProjectOut], **ERRORS},
    tags=["projects"],
)
@paginate(LimitOffsetPagination)
def list_projects(request: HttpRequest) -> QuerySet:
    """List the caller's projects (every role; admins see all)."""
    require_any_role(request)
    return (
        Project.objects.visible_to(caller(request))
        .select_related("current_policy")
        .order_by("name")
    )


@router.post(
    "/projects",
    auth=scoped(ADMIN),
    response={201: ProjectOut, **ERRORS},
    tags=["projects"],
)
def create_project(request: HttpRequest, payload: ProjectIn):
    """Create a project (admins)."""
    require_admin(request)
    if Project.objects.filter(name=payload.name).exists():
        raise ValidationError(
            f"a project named {payload.name!r} exists; choose another name"
        )
    project = Project(**payload.dict())
    project.clean()
    with transaction.atomic():
        project.save()
        record(caller(request), "project.create", obj=project, after=payload.dict())
    return Status(201, project)


@router.get(
    "/projects/{name}",
    auth=scoped(READ),
    response={200: ProjectOut, **ERRORS},
    tags=["projects"],
)
def get_project(request: HttpRequest, name: str):
    """Return one of the caller's projects (every role)."""
    require_any_role(request)
    return project_or_404(request, name)


# ---------------------------------------------------------------- prompts


class PromptOut(Schema):
    id: int
    messages: list[Message]
    source: str
    flags: list[dict]
    is_held_out: bool
    created_at: datetime


class PromptsIn(Schema):
    prompts: list[Annotated[str, Field(max_length=MAX_TEXT_CHARS)] | Conversation] = (
        Field(..., max_length=10000)
    )
    source: str = Field("api", max_length=300)
    is_held_out: bool = False


class Rejected(Schema):
    index: int
    reason: str
    text: str


class Flagged(Schema):
    index: int
    prompt_id: int
    reason: str


class PoolReportOut(Schema):
    added: list[int]
    rejected: list[Rejected]
    flagged: list[Flagged]


@router.get(
    "/projects/{name}/prompts",
    auth=scoped(READ),
    response={200: list[PromptOut], **ERRORS},
    tags=["prompts"],
)
@paginate(LimitOffsetPagination)
def list_prompts(
    request: HttpRequest,
    name: str,
    flagged: bool | None = None,
    held_out: bool | None = None,
) -> QuerySet:
    """List a project's prompt pool (researchers, admins), optionally only flagged ones."""
    require_researcher(request)
    prompts = Prompt.objects.filter(project=project_or_404(request, name)).order_by(
        "id"
    )
    if flagged is not None:
        prompts = prompts.exclude(flags=[]) if flagged else prompts.filter(flags=[])
    if held_out is not None:
        prompts = prompts.filter(is_held_out=held_out)
    return prompts


@router.post(
    "/projects/{name}/prompts",
    auth=scoped(DATA),
    response={201: PoolReportOut, **ERRORS},
    tags=["prompts"],
)
def create_prompts(request: HttpRequest, name: str, payload: PromptsIn):
    """Add prompts in bulk through pool curation (admins); the report says what was left out."""
    from annotation.pool import add_prompts

    require_admin(request)
    prompts = [
        p if isinstance(p, str) else [m.dict() for m in p] for p in payload.prompts
    ]
    report = add_prompts(
        project_or_404(request, name),
        prompts,
        source=payload.source,
        is_held_out=payload.is_held_out,
        actor=caller(request),
    )
    return Status(201, report.as_dict())


# ---------------------------------------------------------------- rounds and tasks


class RoundOut(Schema):
    id: int
    number: int
    policy: str | None
    sampling: dict
    strategy: str
    task_count: int
    created_at: datetime

    @staticmethod
    def resolve_policy(obj: Round) -> str | None:
        return obj.policy.name if obj.policy_id else None


class ResponseOut(Schema):
    handle: int = Field(
        ...,
        description="The response's number in its task, 1..K in display order: what "
        "a ranking names it by.",
    )
    id: int | None = Field(
        None,
        description="Database id; null for annotators, to whom ids (which follow "
        "generation) could tell which policy wrote a response.",
    )
    text: str


class TaskOut(Schema):
    id: int
    round: int | None
    prompt_id: int
    prompt: list[Message]
    responses: list[ResponseOut]
    overlap: int | None = Field(
        None, description="Rankings wanted; null for annotators (see ranking_count)."
    )
    ranking_count: int | None = Field(
        None,
        description="Rankings stored; null for annotators, to whom counts would tell "
        "gold tasks (leased past their overlap) from the rest.",
    )
    created_at: datetime

    @staticmethod
    def resolve_overlap(obj: RankingTask, context: dict) -> int | None:
        return obj.overlap if is_researcher(context["request"].auth) else None

    @staticmethod
    def resolve_ranking_count(obj: RankingTask, context: dict) -> int | None:
        return obj.ranking_count if is_researcher(context["request"].auth) else None

    @staticmethod
    def resolve_round(obj: RankingTask) -> int | None:
        return obj.round.number if obj.round_id else None

    @staticmethod
    def resolve_prompt(obj: RankingTask) -> list:
        return obj.prompt.messages

    @staticmethod
    def resolve_responses(obj: RankingTask, context: dict) -> list:
        # Prefetched in display order (Response.Meta.ordering): handles are 1..K.
        shows_ids = is_researcher(context["request"].auth)
        return [
            {"handle": handle, "id": r.pk if shows_ids else None, "text": r.text}
            for handle, r in enumerate(obj.responses.all(), start=1)
        ]


@router.get(
    "/projects/{name}/rounds",
    auth=scoped(READ),
    response={200: list[RoundOut], **ERRORS},
    tags=["rounds"],
)
@paginate(LimitOffsetPagination)
def list_rounds(request: HttpRequest, name: str) -> QuerySet:
    """List a project's labelling rounds (researchers, admins)."""
    require_researcher(request)
    return (
        Round.objects.filter(project=project_or_404(request, name))
        .select_related("policy")
        .annotate(task_count=Count("tasks"))
        .order_by("number")
    )


def _visible_tasks(request: HttpRequest) -> QuerySet:
    """Return the tasks the caller may see, in their projects: all for researchers,
    leased ones for annotators."""
    user = caller(request)
    tasks = (
        RankingTask.objects.filter(project__in=Project.objects.visible_to(user))
        .select_related("prompt", "round")
        .prefetch_related("responses")
    )
    if is_researcher(user):
        return tasks
    require(request, is_annotator(user), "annotator, researcher or admin")
    return tasks.filter(leases__annotator=user).distinct()


@router.get(
    "/projects/{name}/tasks",
    auth=scoped(READ),
    response={200: list[TaskOut], **ERRORS},
    tags=["tasks"],
)
@paginate(LimitOffsetPagination)
def list_tasks(
    request: HttpRequest,
    name: str,
    round: int | None = None,
    complete: bool | None = None,
) -> QuerySet:
    """List tasks: every task for researchers, only their own for annotators."""
    tasks = _visible_tasks(request)
    tasks = tasks.filter(project=project_or_404(request, name)).order_by("id")
    if round is not None:
        tasks = tasks.filter(round__number=round)
    if complete is not None:
        complete_q = Q(ranking_count__gte=F("overlap"))
        tasks = tasks.filter(complete_q) if complete else tasks.exclude(complete_q)
    return tasks


@router.get(
    "/tasks/{task_id}",
    auth=scoped(READ),
    response={200: TaskOut, **ERRORS},
    tags=["tasks"],
)
def get_task(request: HttpRequest, task_id: int):
    """Return one task (annotators: only tasks leased to them)."""
    task = _visible_tasks(request).filter(pk=task_id).first()
    if task is None:
        raise Http404(f"no task {task_id} that you can see")
    return task


class LeaseOut(Schema):
    id: int
    task: TaskOut
    leased_at: datetime
    expires_at: datetime


@router.post(
    "/projects/{name}/next-task",
    auth=scoped(ANNOTATE),
    response={200: LeaseOut, 204: None, **ERRORS},
    tags=["tasks"],
)
def next_task(request: HttpRequest, name: str):
    """Lease the caller's next task (annotators); 204 when none is left, 403 when the
    annotator is paused."""
    from annotation.assignment import next_task as lease_next

    user = caller(request)
    require(request, is_annotator(user), "annotator")
    lease = lease_next(project_or_404(request, name), user)
    if lease is None:
        return Status(204, None)
    # The whole task in two queries, whether the lease was held or just taken.
    return _with_task(lease)


Responses = Annotated[list[int], Field(max_length=MAX_RESPONSES)]
AspectName = Annotated[str, Field(max_length=100)]


class RankingIn(Schema):
    order: list[Responses] = Field(
        ...,
        max_length=MAX_RESPONSES,
        description="Tie groups of response handles (1..K, as the task lists them), "
        "best first: [[3], [1, 4], [2]].",
    )
    all_bad: bool = False
    unsafe: Responses = Field([], description="Handles of responses flagged unsafe.")
    rationale: str = Field("", max_length=RATIONALE_MAX_CHARS)
    rewrite: str = Field("", max_length=REWRITE_MAX_CHARS)
    aspect_ratings: dict[
        Annotated[str, Field(max_length=20)],
        Annotated[dict[AspectName, int], Field(max_length=MAX_ASPECTS)],
    ] = Field(
        {},
        max_length=MAX_RESPONSES,
        description='{handle: {aspect: 1..7}}, e.g. {"2": {"helpfulness": 6}}.',
    )
    active_seconds: float | None = Field(None, ge=0, allow_inf_nan=False)
    strength: int | None = Field(
        None,
        ge=0,
        le=MAX_STRENGTH_LEVELS,
        description="Pairwise projects only, and required there: how much better the "
        "first group is, 1 to the project's number of strength levels, or 0 for "
        "'about the same' with both responses in one tie group.",
    )

    def submission(self) -> RankingSubmission:
        """Return the ranking as the value `submit_ranking` stores."""
        return RankingSubmission(**self.model_dump())


class RankingOut(Schema):
    id: int
    task_id: int
    order: list[list[int]] = Field(
        ..., description="Tie groups of response handles (1..K), best first."
    )
    strength: int | None
    is_skip: bool
    skip_reason: str
    all_bad: bool
    rationale: str
    rewrite: str
    created_at: datetime

    @staticmethod
    def resolve_order(obj: Ranking) -> list[list[int]]:
        # The caller's own ranking: named as their task showed it. A submission
        # leaves the task's handles on the ranking; a listing prefetches them.
        handles = getattr(obj, "handles", None)
        if handles is None:
            handles = Handles(r.pk for r in obj.task.responses.all())
        return handles.order_to_handles(obj.order)


class SkipIn(Schema):
    reason: str = Field(..., max_length=2000)


def _own_lease(request: HttpRequest, lease_id: int) -> Lease:
    user = caller(request)
    require(request, is_annotator(user), "annotator")
    lease = (
        Lease.objects.select_related("task__project")
        .filter(pk=lease_id, task__project__in=Project.objects.visible_to(user))
        .first()
    )
    if lease is None:
        raise Http404(f"no lease {lease_id} in your projects")
    if lease.annotator_id != user.pk:
        raise PermissionDenied(f"lease {lease_id} belongs to another annotator")
    return lease


@router.post(
    "/leases/{lease_id}/ranking",
    auth=scoped(ANNOTATE),
    response={201: RankingOut, 409: ErrorOut, **ERRORS},
    tags=["tasks"],
)
def submit(request: HttpRequest, lease_id: int, payload: RankingIn):
    """Submit a ranking for a leased task (the annotator holding the lease); 403 when
    the annotator is paused."""
    from annotation.assignment import LateSubmissionRefused, submit_ranking

    lease = _own_lease(request, lease_id)
    try:
        ranking = submit_ranking(
            lease, caller(request), payload.submission(), project=lease.task.project
        )
    except LateSubmissionRefused as exc:
        return Status(409, {"detail": str(exc)})
    return Status(201, ranking)


class RankingAndNextOut(Schema):
    ranking: RankingOut
    next: LeaseOut | None = Field(
        None, description="The caller's next lease; null when no task is left."
    )


def _with_task(lease: Lease) -> Lease:
    """Attach the lease's task, prompt, round and responses (two queries)."""
    lease.task = (
        RankingTask.objects.select_related("prompt", "round")
        .prefetch_related("responses")
        .get(pk=lease.task_id)
    )
    return lease


@router.post(
    "/leases/{lease_id}/ranking-and-next-task",
    auth=scoped(ANNOTATE),
    response={201: RankingAndNextOut, 409: ErrorOut, **ERRORS},
    tags=["tasks"],
)
def submit_and_next(request: HttpRequest, lease_id: int, payload: RankingIn):
    """Submit a ranking and lease the caller's next task in one round trip.

    What the workspace page does on submit: one transaction stores the ranking (as
    `POST /leases/{id}/ranking`) and takes the next task (as `POST
    /projects/{name}/next-task`); `next` is null when none is left. 403 when the
    annotator is paused (nothing stored), or when this very ranking paused them
    (the ranking is then stored).
    """
    from annotation.assignment import (
        LateSubmissionRefused,
        submit_ranking_and_lease_next,
    )

    lease = _own_lease(request, lease_id)
    try:
        ranking, following = submit_ranking_and_lease_next(
            lease, caller(request), payload.submission(), project=lease.task.project
        )
    except LateSubmissionRefused as exc:
        return Status(409, {"detail": str(exc)})
    return Status(
        201,
        {"ranking": ranking, "next": _with_task(following) if following else None},
    )


@router.post(
    "/leases/{lease_id}/skip",
    auth=scoped(ANNOTATE),
    response={201: RankingOut, **ERRORS},
    tags=["tasks"],
)
def skip(request: HttpRequest, lease_id: int, payload: SkipIn):
    """Skip a leased task with a reason (the annotator holding the lease)."""
    from annotation.assignment import skip_task

    lease = _own_lease(request, lease_id)
    return Status(201, skip_task(lease, caller(request), payload.reason))


@router.get(
    "/my/rankings",
    auth=scoped(READ),
    response={200: list[RankingOut], **ERRORS},
    tags=["tasks"],
)
@paginate(LimitOffsetPagination)
def my_rankings(request: HttpRequest) -> QuerySet:
    """List the caller's own rankings and skips (every role)."""
    require_any_role(request)
    return (
        Ranking.objects.filter(annotator=caller(request))
        .select_related("task")
        .prefetch_related(
            Prefetch(
                "task__responses",
                queryset=Response.objects.order_by("position", "id").only(
                    "pk", "task_id"
                ),
            )
        )
        .order_by("-id")
    )


# ---------------------------------------------------------------- snapshots


class SnapshotIn(Schema):
    name: str = Field(..., min_length=1, max_length=200)
    filter: dict[Annotated[str, Field(max_length=100)], Any] = Field(
        {},
        max_length=50,
        description="See annotation.snapshots.FILTER_KEYS: rounds, policies, since, "
        "until, min_agreement, min_reliability, gold, flagged, skipped, votes, "
        "adjudicated, simulated.",
    )
    pair_rule: Literal[tuple(PAIR_RULES)] = "all_pairs"
    tie_rule: Literal[tuple(TIE_RULES)] = "drop"
    dedup_rule: Literal[tuple(DEDUP_RULES)] = "none"
    margin_rule: Literal[tuple(MARGIN_RULES)] = "rank"
    rewrite_rule: Literal[tuple(REWRITE_RULES)] = Field(
        "sft", description="; ".join(f"{k}: {v}" for k, v in REWRITE_RULES.items())
    )


class SnapshotOut(Schema):
    id: int
    project: str
    name: str
    filter: dict[str, Any]
    pair_rule: str
    tie_rule: str
    dedup_rule: str
    margin_rule: str
    rewrite_rule: str
    row_count: int
    sha256: str
    stats: dict[str, Any]
    created_by: str | None
    created_at: datetime
    status: str = Field(
        ...,
        description="queued, running, done or failed: the pages and the API freeze "
        "in the worker; poll GET /api/snapshots/{id} until done (or failed: see error).",
    )
    progress: float = Field(..., description="Share of the freeze done, 0 to 1.")
    error: str = Field(..., description="Why the freeze failed; empty otherwise.")

    @staticmethod
    def resolve_project(obj: Snapshot) -> str:
        return obj.project.name

    @staticmethod
    def resolve_created_by(obj: Snapshot) -> str | None:
        return obj.created_by.username if obj.created_by_id else None


@router.get(
    "/projects/{name}/snapshots",
    auth=scoped(READ),
    response={200: list[SnapshotOut], **ERRORS},
    tags=["snapshots"],
)
@paginate(LimitOffsetPagination)
def list_snapshots(
    request: HttpRequest, name: str, search: str | None = Query(None, max_length=200)
) -> QuerySet:
    """List a project's snapshots, newest first, with any freeze still queued or
    running, or failed (researchers, admins)."""
    from annotation.snapshots import fail_lost_freezes

    require_researcher(request)
    fail_lost_freezes()
    snapshots = Snapshot.any_state.filter(
        project=project_or_404(request, name)
    ).select_related("project", "created_by")
    if search:
        snapshots = snapshots.filter(name__icontains=search)
    return snapshots


@router.post(
    "/projects/{name}/snapshots",
    auth=scoped(DATA),
    response={202: SnapshotOut, **ERRORS},
    tags=["snapshots"],
)
def create_snapshot(request: HttpRequest, name: str, payload: SnapshotIn):
    """Queue a freeze of the project's preference pairs for the worker and return
    the queued snapshot (researchers, admins): its name is taken at once, and GET
    /api/snapshots/{id} shows its progress until its status is done (or failed)."""
    from annotation.snapshots import queue_freeze

    require_researcher(request)
    snapshot = queue_freeze(
        project_or_404(request, name),
        payload.name,
        user=caller(request),
        filter=payload.filter,
        pair_rule=payload.pair_rule,
        tie_rule=payload.tie_rule,
        dedup_rule=payload.dedup_rule,
        margin_rule=payload.margin_rule,
        rewrite_rule=payload.rewrite_rule,
    )
    return Status(202, snapshot)


def snapshot_or_404(
    request: HttpRequest, snapshot_id: int, *, frozen: bool = True
) -> Snapshot:
    """Return the snapshot if it belongs to one of the caller's projects; else 404.

    With `frozen`, a snapshot still being frozen, or whose freeze failed, is a 409
    that says so (it has no pairs to read).
    """
    from annotation.snapshots import fail_lost_freezes

    fail_lost_freezes()
    snapshot = (
        Snapshot.any_state.select_related("project", "created_by")
        .filter(
            pk=snapshot_id,
            project__in=Project.objects.visible_to(caller(request)),
        )
        .first()
    )
    if snapshot is None:
        raise Http404(f"no snapshot {snapshot_id} in your projects")
    if frozen and snapshot.status == Snapshot.Status.FAILED:
        raise HttpError(
            409,
            f"snapshot {snapshot_id} ({snapshot.name}) has no pairs: its freeze "
            f"failed ({snapshot.error}); freeze it again",
        )
    if frozen and snapshot.status != Snapshot.Status.DONE:
        raise HttpError(
            409,
            f"snapshot {snapshot_id} ({snapshot.name}) is still being frozen "
            f"({snapshot.status}, {snapshot.progress:.0%}): poll GET "
            f"/api/snapshots/{snapshot_id} until its status is done",
        )
    return snapshot


@router.get(
    "/snapshots/{snapshot_id}",
    auth=scoped(READ),
    response={200: SnapshotOut, **ERRORS},
    tags=["snapshots"],
)
def get_snapshot(request: HttpRequest, snapshot_id: int):
    """Return one snapshot with its stats, or a freeze's status and progress
    (researchers, admins)."""
    require_researcher(request)
    return snapshot_or_404(request, snapshot_id, frozen=False)


class BreakdownOut(Schema):
    key: int | str | None = Field(..., description="Round number, policy or label.")
    added: int
    removed: int


class SpecRowOut(Schema):
    key: str
    a: Any
    b: Any
    differs: bool


class DiffPairOut(Schema):
    task: int
    round: int | None
    chosen: int | None = Field(
        description="The chosen response's id; null for an annotator's rewrite "
        "(chosen_policy 'rewrite'), chosen under the rewrite rule 'chosen'."
    )
    rejected: int
    margin: float
    annotator: str
    chosen_policy: str
    rejected_policy: str


class SnapshotDiffOut(Schema):
    a: SnapshotOut
    b: SnapshotOut
    added: int
    removed: int
    unchanged: int
    margin_changed: int
    by_round: list[BreakdownOut]
    by_policy: list[BreakdownOut]
    by_annotator: list[BreakdownOut]
    filters: list[SpecRowOut]
    rules: list[SpecRowOut]
    added_sample: list[DiffPairOut]
    removed_sample: list[DiffPairOut]


class ComparisonOut(Schema):
    id: int
    a: int = Field(..., alias="a_id")
    b: int = Field(..., alias="b_id")
    status: str = Field(
        ...,
        description="queued or running: ask for the same comparison again after "
        "Retry-After seconds, until it answers 200 with it; failed: the next request "
        "queues it anew (see error).",
    )
    progress: float = Field(..., description="Share of the comparison done, 0 to 1.")
    error: str = Field(..., description="Why it failed; empty otherwise.")
    created_at: datetime


# Seconds a client waits before asking again for an export or a comparison the worker
# is working on.
RETRY_AFTER_SECONDS = 2


def _ask_again(why: str) -> dict:
    """Return the OpenAPI entry of a 202 that asks the client to repeat the request
    after Retry-After seconds."""
    return {
        "description": f"{why}: ask again after Retry-After seconds.",
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before asking again.",
                "schema": {"type": "integer"},
            }
        },
    }


@router.get(
    "/snapshots/{snapshot_id}/diff",
    auth=scoped(READ),
    response={200: SnapshotDiffOut, 202: ComparisonOut, 409: ErrorOut, **ERRORS},
    tags=["snapshots"],
    openapi_extra={
        "responses": {
            202: _ask_again(
                "The worker is comparing them (a snapshot over REQUEST_MAX_PAIRS "
                "pairs, not compared before)"
            ),
        }
    },
)
def diff_snapshot(
    request: HttpRequest, response: HttpResponse, snapshot_id: int, against: int
):
    """Compare a snapshot (a) with another of its project (b): pairs added and
    removed by round, policy and annotator, the filters and rules side by side
    (researchers, admins). See annotation.snapshots.SnapshotDiff for what a pair is.

    Two snapshots of up to REQUEST_MAX_PAIRS pairs each are compared in the request.
    Larger ones are compared once by the worker and kept: the answer is 202 with the
    job's state and a Retry-After header until the same request answers 200.
    """
    from annotation.snapshots import (
        fail_lost_comparisons,
        queue_comparison,
        ready_comparison,
    )

    require_researcher(request)
    a = snapshot_or_404(request, snapshot_id)
    b = snapshot_or_404(request, against)
    fail_lost_comparisons()
    diff = ready_comparison(a, b)
    if diff is None:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return Status(202, queue_comparison(a, b, user=caller(request)))
    return diff


class ExportOut(Schema):
    id: int
    snapshot: int = Field(..., alias="snapshot_id")
    fmt: str
    style: str
    prompt: str
    file_format: str
    status: str = Field(
        ...,
        description="queued or running: ask for the same download again after "
        "Retry-After seconds, until it answers 200 with the file; failed: the next "
        "request queues it anew (see error).",
    )
    progress: float = Field(..., description="Share of the file written, 0 to 1.")
    error: str = Field(..., description="Why the last build failed; empty otherwise.")
    created_at: datetime


@router.get(
    "/snapshots/{snapshot_id}/download",
    auth=scoped(DATA),
    response={200: None, 202: ExportOut, 409: ErrorOut, **ERRORS},
    tags=["snapshots"],
    openapi_extra={
        "responses": {
            200: {
                "description": "The export file (a zip of the folder for file_format=hf).",
                "content": {
                    t: {"schema": {"type": "string", "format": "binary"}}
                    for t in DOWNLOAD_TYPES.values()
                },
            },
            202: _ask_again(
                "The export is being written by the worker (a snapshot over "
                "REQUEST_MAX_PAIRS pairs, not exported in these options before)"
            ),
        }
    },
)
def download_snapshot(
    request: HttpRequest,
    response: HttpResponse,
    snapshot_id: int,
    fmt: Literal[FORMATS] = "trl",
    style: Literal[STYLES] = "conversational",
    prompt: Literal[PROMPT_MODES] = "explicit",
    file_format: Literal[FILE_FORMATS] = "jsonl",
):
    """Download the snapshot in a format (researchers, admins).

    A snapshot of up to REQUEST_MAX_PAIRS pairs, or an export built before, answers
    200 with the file. A larger snapshot's first export in these options is written by
    the worker: the answer is 202 with the build's state and a Retry-After header;
    the same request answers 200 with the file once it is written.
    """
    require_researcher(request)
    snapshot = snapshot_or_404(request, snapshot_id)
    options = {"fmt": fmt, "style": style, "prompt": prompt, "file_format": file_format}
    fail_lost_exports()
    path = ready_export(snapshot, **options)
    if path is None:
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return Status(202, queue_export(snapshot, user=caller(request), **options))
    suffix = download_suffix(file_format)
    name = f"{snapshot.project.name}-{snapshot.name}-{fmt}.{suffix}".replace("/", "_")
    return FileResponse(
        open(path, "rb"),
        as_attachment=True,
        filename=name,
        content_type=DOWNLOAD_TYPES[file_format],
    )


@router.get(
    "/snapshots/{snapshot_id}/card",
    auth=scoped(READ),
    response={200: None, 409: ErrorOut, **ERRORS},
    tags=["snapshots"],
    openapi_extra={
        "responses": {
            200: {
                "description": "The dataset card (Markdown) that goes with every export.",
                "content": {"text/markdown": {"schema": {"type": "string"}}},
            }
        }
    },
)
def snapshot_card(
    request: HttpRequest,
    snapshot_id: int,
    fmt: Literal[FORMATS] = "trl",
    style: Literal[STYLES] = "conversational",
    prompt: Literal[PROMPT_MODES] = "explicit",
):
    """Return the dataset card of an export: filter, rules, counts, agreement."""
    from django.http import HttpResponse

    from annotation.export import dataset_card

    require_researcher(request)
    snapshot = snapshot_or_404(request, snapshot_id)
    count = snapshot.row_count if fmt in ("trl", "hh") else None
    return HttpResponse(
        dataset_card(snapshot, fmt, style, prompt, count),
        content_type="text/markdown; charset=utf-8",
    )


# ---------------------------------------------------------------- imports


class RejectedLine(Schema):
    line: int
    reason: str


class ImportOut(Schema):
    id: int
    project: str
    source: str
    kind: str = Field(
        ...,
        description="preferences, prompts (a prompt file) or corpus (a corpus upload).",
    )
    details: dict[str, Any] = Field(
        ...,
        description="A done corpus upload: {corpus, kept} (GET /projects/{name}/corpora/"
        "{corpus} has its report); a done prompt file: its curation report by line.",
    )
    status: str = Field(
        ...,
        description="queued, running (the worker reads the file), done (is_applied "
        "says whether anything landed) or failed (error says why).",
    )
    progress: float = Field(
        ...,
        description="Share done, 0 to 1: of the file read (preferences), of reading "
        "then curating (prompts, corpus).",
    )
    error: str
    format: str
    skip_invalid: bool
    is_applied: bool
    records: int
    accepted: int
    prompts_created: int
    rankings_created: int
    rejected: list[RejectedLine]
    created_at: datetime
    finished_at: datetime | None

    @staticmethod
    def resolve_project(obj: ImportReport) -> str:
        return obj.project.name


@router.get(
    "/projects/{name}/imports",
    auth=scoped(READ),
    response={200: list[ImportOut], **ERRORS},
    tags=["imports"],
)
@paginate(LimitOffsetPagination)
def list_imports(request: HttpRequest, name: str) -> QuerySet:
    """List a project's imports with their reports (researchers, admins)."""
    from annotation.importing import fail_lost_imports

    require_researcher(request)
    fail_lost_imports()
    return ImportReport.objects.filter(
        project=project_or_404(request, name)
    ).select_related("project")


@router.post(
    "/projects/{name}/imports",
    auth=scoped(DATA),
    response={202: ImportOut, **ERRORS},
    tags=["imports"],
)
def create_import(
    request: HttpRequest,
    name: str,
    file: UploadedFile = File(..., description="JSONL, gzip JSONL or Parquet."),
    format: Literal[IMPORT_FORMATS] | None = Form(None),
    skip_invalid: bool = Form(False),
):
    """Queue an import of preference data, whole or nothing (researchers, admins).

    The worker reads the file: poll `GET /imports/{id}` until its status is done
    (with invalid records and skip_invalid off, nothing lands and the report lists
    every rejected line) or failed (a cap or an unreadable file; error says why).
    """
    from annotation.importing import queue_upload

    require_researcher(request)
    report = queue_upload(
        project_or_404(request, name),
        file,
        fmt=format,
        skip_invalid=skip_invalid,
        user=caller(request),
    )
    return Status(202, report)


@router.get(
    "/imports/{report_id}",
    auth=scoped(READ),
    response={200: ImportOut, **ERRORS},
    tags=["imports"],
)
def get_import(request: HttpRequest, report_id: int):
    """Return one import: its progress while the worker runs it, then its report
    (researchers, admins); an import whose worker went silent is failed first."""
    from annotation.importing import fail_lost_imports

    require_researcher(request)
    fail_lost_imports()
    report = (
        ImportReport.objects.select_related("project")
        .filter(pk=report_id, project__in=Project.objects.visible_to(caller(request)))
        .first()
    )
    if report is None:
        raise Http404(f"no import {report_id} in your projects")
    return report


# ---------------------------------------------------------------- corpora


class CorpusOut(Schema):
    name: str
    project: str
    kind: str
    source: str
    sha256: str
    records: int
    kept: int
    filters: dict[str, Any]
    report: dict[str, Any] = Field(
        ..., description="total, kept, dropped, flagged; per reason: count, samples."
    )
    created_by: str | None
    created_at: datetime

    @staticmethod
    def resolve_project(obj: Corpus) -> str:
        return obj.project.name

    @staticmethod
    def resolve_created_by(obj: Corpus) -> str | None:
        return obj.created_by.username if obj.created_by_id else None


@router.get(
    "/projects/{name}/corpora",
    auth=scoped(READ),
    response={200: list[CorpusOut], **ERRORS},
    tags=["corpora"],
)
@paginate(LimitOffsetPagination)
def list_corpora(request: HttpRequest, name: str) -> QuerySet:
    """List a project's curated corpora, newest first (researchers, admins)."""
    require_researcher(request)
    return Corpus.objects.filter(project=project_or_404(request, name)).select_related(
        "project", "created_by"
    )


@router.get(
    "/projects/{name}/corpora/{corpus}",
    auth=scoped(READ),
    response={200: CorpusOut, **ERRORS},
    tags=["corpora"],
)
def get_corpus(request: HttpRequest, name: str, corpus: str):
    """Return a corpus with its curation report (researchers, admins)."""
    require_researcher(request)
    found = Corpus.objects.filter(
        project=project_or_404(request, name), name=corpus
    ).first()
    if found is None:
        raise Http404(f"project {name} has no corpus named {corpus!r}")
    return found


@router.post(
    "/projects/{name}/corpora",
    auth=scoped(DATA),
    response={202: ImportOut, **ERRORS},
    tags=["corpora"],
)
def create_corpus(
    request: HttpRequest,
    name: str,
    file: UploadedFile = File(
        ..., description="Text, JSON, JSONL, CSV or Parquet, optionally gzip."
    ),
    corpus: str = Form(..., max_length=100, description="The corpus's name."),
    kind: Literal["text", "demonstrations"] = Form("text"),
    min_chars: int | None = Form(None, ge=1),
    max_chars: int | None = Form(None, ge=1),
    max_char_run: int | None = Form(None, ge=2),
    max_repeated_ngrams: float | None = Form(None, ge=0, le=1),
    min_letter_share: float | None = Form(None, ge=0, le=1),
    near_duplicate_jaccard: float | None = Form(None, gt=0, le=1),
    drop_harmful: bool | None = Form(None),
):
    """Queue the curation of an uploaded corpus; what passes is stored (researchers,
    admins).

    The name, kind, thresholds and size are checked now (400); the worker curates
    the file: poll `GET /imports/{id}` until its status is done (details names the
    corpus; `GET /projects/{name}/corpora/{corpus}` has its report: per reason how
    many records were dropped, with samples) or failed (error says why). Unset
    thresholds take the corpus defaults.
    """
    from annotation.corpora import queue_corpus

    require_researcher(request)
    thresholds = {
        "min_chars": min_chars,
        "max_chars": max_chars,
        "max_char_run": max_char_run,
        "max_repeated_ngrams": max_repeated_ngrams,
        "min_letter_share": min_letter_share,
        "near_duplicate_jaccard": near_duplicate_jaccard,
        "drop_harmful": drop_harmful,
    }
    job = queue_corpus(
        project_or_404(request, name),
        corpus,
        file,
        kind=kind,
        filters={k: v for k, v in thresholds.items() if v is not None},
        user=caller(request),
    )
    return Status(202, job)


# ---------------------------------------------------------------- tokens


class TokenIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    scopes: list[Literal["read", "annotate", "data", "admin"]] = Field(
        ...,
        min_length=1,
        max_length=4,
        description="What the token may do: read, annotate, data, admin.",
    )
    expires_in_days: int | None = Field(
        None, ge=1, le=3650, description="Days until it expires; null never expires."
    )


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenCreatedOut(TokenOut):
    token: str = Field(..., description="Shown once; only its hash is stored.")


@router.get(
    "/tokens",
    auth=scoped(READ),
    response={200: list[TokenOut], **ERRORS},
    tags=["tokens"],
)
@paginate(LimitOffsetPagination)
def list_tokens(request: HttpRequest) -> QuerySet:
    """List the caller's own API tokens (every role)."""
    require_any_role(request)
    return ApiToken.objects.filter(user=caller(request))


@router.post(
    "/tokens",
    auth=SESSION_ONLY,
    response={201: TokenCreatedOut, **ERRORS},
    tags=["tokens"],
)
def create_token(request: HttpRequest, payload: TokenIn):
    """Create an API token for the caller; the response is the only time it is shown.

    Only a signed-in session may: a token cannot mint tokens, so a leaked one dies with
    its revocation.
    """
    from annotation.tokens import create_token as make

    require_any_role(request)
    days = payload.expires_in_days
    token, raw = make(
        caller(request),
        payload.name,
        payload.scopes,
        None if days is None else timedelta(days=days),
    )
    token.token = raw
    return Status(201, token)


@router.delete(
    "/tokens/{token_id}",
    auth=scoped(ADMIN),
    response={200: TokenOut, **ERRORS},
    tags=["tokens"],
)
def revoke_token(request: HttpRequest, token_id: int):
    """Revoke one of the caller's tokens."""
    from annotation.tokens import revoke_token as revoke

    require_any_role(request)
    token = ApiToken.objects.filter(pk=token_id, user=caller(request)).first()
    if token is None:
        raise Http404(f"you have no token {token_id}")
    return revoke(token, caller(request))
