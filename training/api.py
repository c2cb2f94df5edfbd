"""The training part of the REST API: training rounds, their jobs, launch, cancel,
resume and deploy.

Researchers read rounds and jobs; only admins launch, cancel, resume and deploy
(DESIGN.md). The workflow functions raise ValidationError with a message for the
user, which config/api.py turns into a 400.
"""

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.http import Http404, HttpRequest
from ninja import Field, Query, Router, Schema, Status
from ninja.pagination import LimitOffsetPagination, paginate

from annotation.api import (
    ERRORS,
    caller,
    project_or_404,
    require_admin,
    require_researcher,
)
from annotation.models import Project
from config.scopes import ADMIN, READ, scoped
from inference.models import Policy
from training.models import TrainingJob, TrainingRound
from training.stages import PIPELINES

router = Router()


class JobOut(Schema):
    id: int
    stage: str
    index: int
    status: str
    step: int
    total_steps: int
    progress: float
    last_metrics: dict[str, Any]
    error: str
    output_path: str
    heartbeat_at: datetime | None
    progress_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_progress(obj: TrainingJob) -> float:
        return obj.progress_fraction()


class TrainingRoundOut(Schema):
    id: int
    project: str
    method: str
    status: str
    snapshot: str | None
    snapshot_sha256: str | None
    corpus: str | None
    corpus_sha256: str | None
    demonstrations: str | None
    demonstrations_sha256: str | None
    parent_policy: str
    output_policy: str | None
    config: dict[str, Any]
    error: str
    created_by: str | None
    created_at: datetime
    finished_at: datetime | None
    jobs: list[JobOut]

    @staticmethod
    def resolve_project(obj: TrainingRound) -> str:
        return obj.project.name

    @staticmethod
    def resolve_snapshot(obj: TrainingRound) -> str | None:
        return obj.snapshot.name if obj.snapshot_id else None

    @staticmethod
    def resolve_snapshot_sha256(obj: TrainingRound) -> str | None:
        return (obj.snapshot.sha256 or None) if obj.snapshot_id else None

    @staticmethod
    def resolve_corpus(obj: TrainingRound) -> str | None:
        return obj.corpus.name if obj.corpus_id else None

    @staticmethod
    def resolve_corpus_sha256(obj: TrainingRound) -> str | None:
        return obj.corpus.sha256 if obj.corpus_id else None

    @staticmethod
    def resolve_demonstrations(obj: TrainingRound) -> str | None:
        return obj.demonstrations.name if obj.demonstrations_id else None

    @staticmethod
    def resolve_demonstrations_sha256(obj: TrainingRound) -> str | None:
        return obj.demonstrations.sha256 if obj.demonstrations_id else None

    @staticmethod
    def resolve_parent_policy(obj: TrainingRound) -> str:
        return obj.parent_policy.name

    @staticmethod
    def resolve_output_policy(obj: TrainingRound) -> str | None:
        return obj.output_policy.name if obj.output_policy_id else None

    @staticmethod
    def resolve_created_by(obj: TrainingRound) -> str | None:
        return obj.created_by.username if obj.created_by_id else None

    @staticmethod
    def resolve_jobs(obj: TrainingRound) -> list:
        return list(obj.jobs.all())


class LaunchIn(Schema):
    method: str = Field(
        ...,
        max_length=100,
        description="Stages, comma-separated, run in order (training/stages.py); e.g. "
        + "; ".join(PIPELINES.values())
        + ".",
    )
    options: dict[str, Any] = Field(
        {},
        max_length=50,
        description="Launch options: policy, snapshot, reward_model, reward_ensemble, "
        "corpus, demonstrations, queue, and per-stage configs.",
    )


def _rounds() -> QuerySet:
    return TrainingRound.objects.select_related(
        "project",
        "snapshot",
        "corpus",
        "demonstrations",
        "parent_policy",
        "output_policy",
        "created_by",
    ).prefetch_related("jobs")


def _round_or_404(request: HttpRequest, round_id: int) -> TrainingRound:
    """Return the training round if it is in one of the caller's projects; else 404."""
    training_round = (
        _rounds()
        .filter(pk=round_id, project__in=Project.objects.visible_to(caller(request)))
        .first()
    )
    if training_round is None:
        raise Http404(f"no training round {round_id} in your projects")
    return training_round


@router.get(
    "/projects/{name}/training-rounds",
    auth=scoped(READ),
    response={200: list[TrainingRoundOut], **ERRORS},
    tags=["training"],
)
@paginate(LimitOffsetPagination)
def list_training_rounds(
    request: HttpRequest, name: str, status: str | None = Query(None, max_length=20)
) -> QuerySet:
    """List a project's training rounds, newest first (researchers, admins)."""
    require_researcher(request)
    rounds = _rounds().filter(project=project_or_404(request, name))
    if status:
        rounds = rounds.filter(status=status)
    return rounds


@router.post(
    "/projects/{name}/training-rounds",
    auth=scoped(ADMIN),
    response={201: TrainingRoundOut, **ERRORS},
    tags=["training"],
)
def launch(request: HttpRequest, name: str, payload: LaunchIn):
    """Launch a training round (admins): freeze a snapshot, queue the stages."""
    from training import tasks

    require_admin(request)
    project = project_or_404(request, name)
    training_round = tasks.launch(
        project, payload.method, user=caller(request), options=payload.options
    )
    return Status(201, _round_or_404(request, training_round.pk))


@router.get(
    "/training-rounds/{round_id}",
    auth=scoped(READ),
    response={200: TrainingRoundOut, **ERRORS},
    tags=["training"],
)
def get_training_round(request: HttpRequest, round_id: int):
    """Return one training round with its jobs (researchers, admins)."""
    require_researcher(request)
    return _round_or_404(request, round_id)


@router.get(
    "/training-rounds/{round_id}/jobs",
    auth=scoped(READ),
    response={200: list[JobOut], **ERRORS},
    tags=["training"],
)
def list_jobs(request: HttpRequest, round_id: int):
    """List a training round's stage jobs with progress (researchers, admins)."""
    require_researcher(request)
    return list(_round_or_404(request, round_id).jobs.all())


@router.post(
    "/training-rounds/{round_id}/cancel",
    auth=scoped(ADMIN),
    response={200: TrainingRoundOut, **ERRORS},
    tags=["training"],
)
def cancel(request: HttpRequest, round_id: int):
    """Cancel a queued or running training round (admins)."""
    from training.rounds import cancel_round

    require_admin(request)
    cancel_round(_round_or_404(request, round_id), user=caller(request))
    return _round_or_404(request, round_id)


@router.post(
    "/training-rounds/{round_id}/resume",
    auth=scoped(ADMIN),
    response={200: TrainingRoundOut, **ERRORS},
    tags=["training"],
)
def resume(request: HttpRequest, round_id: int):
    """Resume a failed or cancelled round from its last checkpoint (admins)."""
    from training import tasks

    require_admin(request)
    tasks.resume(_round_or_404(request, round_id), user=caller(request))
    return _round_or_404(request, round_id)


class DeployIn(Schema):
    policy: str = Field(..., max_length=200, description="Name of a registered policy.")


class DeployOut(Schema):
    project: str
    policy: str
    previous: str | None


@router.post(
    "/projects/{name}/deploy",
    auth=scoped(ADMIN),
    response={200: DeployOut, **ERRORS},
    tags=["training"],
)
def deploy(request: HttpRequest, name: str, payload: DeployIn):
    """Make a registered policy the project's current policy (admins)."""
    from training.deployment import deploy_policy

    require_admin(request)
    project = project_or_404(request, name)
    policy = Policy.objects.filter(name=payload.policy).first()
    if policy is None:
        raise Http404(f"no registered policy named {payload.policy!r}")
    deployment = deploy_policy(project, policy, user=caller(request))
    return {
        "project": project.name,
        "policy": policy.name,
        "previous": deployment.previous.name if deployment.previous_id else None,
    }
