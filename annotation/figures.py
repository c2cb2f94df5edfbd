"""The figures of the project pages that read every ranking: the dashboard
(throughput, agreement, gold, time per task) and the overview's leaderboards and
simulators' agreement.

Their time grows with the project (bench/dashboard.py: about 1 and 1.6 s at 30,000
rankings, so half a minute at a million, past what a web request may hold). A project
of up to REQUEST_MAX_RANKINGS rankings has them computed in the request; a larger
one's figures are computed by the worker and kept (`ProjectFigures`): the page shows
the kept ones with when they were computed, and queues a new computation when
rankings came in since (at most once a FIGURES_MIN_INTERVAL) or they are older than
FIGURES_MAX_AGE; while it runs the page says so and reloads itself when it is done.

The figures are plain JSON values either way (`jsonable`), so a page renders the
same from either path.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Count, Max
from django.utils import timezone

from annotation.models import Project, ProjectFigures, Ranking
from config.workers import (
    HEARTBEAT_SECONDS,
    LOST_AFTER_SECONDS,
    fail_lost,
    queue_job,
    run_job,
)


def jsonable(value: object) -> object:
    """Return `value` as plain JSON values: dataclasses become dicts, tuples lists,
    dates ISO strings, and NaN or infinite floats None (PostgreSQL's jsonb has no
    NaN)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)
        }
    if isinstance(value, dict):
        return {str(k) if k is not None else "": jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def dashboard_figures(project: Project, progress: Callable[[float], None]) -> dict:
    """Return the dashboard's tables and charts (`annotation.dashboard.dashboard`)."""
    from annotation.dashboard import dashboard

    return jsonable(dashboard(project))


def overview_figures(project: Project, progress: Callable[[float], None]) -> dict:
    """Return the overview's leaderboards (people's, and the simulators' where they
    compared anything, each with its plot) and the simulators' agreement with people."""
    from annotation.leaderboard import build_leaderboard, sft_policy
    from annotation.simulated import simulated_agreement

    sft = sft_policy(project)
    boards = []
    for step, source in enumerate(("human", "simulated")):
        board = build_leaderboard(project, source=source, anchor=sft)
        if board.ratings or source == "human":
            shown = {**jsonable(board), "svg": board.to_svg()}
            for row, rating in zip(shown["ratings"], board.ratings, strict=True):
                row["win_rate"] = rating.win_rate  # a property: not a field
            boards.append(shown)
        progress((step + 1) / 3)
    agreement = [row for row in simulated_agreement(project) if row.tasks]
    return {"boards": boards, "agreement": jsonable(agreement)}


COMPUTE: dict[str, Callable[[Project, Callable[[float], None]], dict]] = {
    ProjectFigures.Page.DASHBOARD: dashboard_figures,
    ProjectFigures.Page.OVERVIEW: overview_figures,
}


def fingerprint(project: Project) -> tuple[int, str]:
    """Return how many rankings the project has (every version, skips included) and a
    string that changes when one is added or revised."""
    found = Ranking.versions.filter(task__project=project).aggregate(
        count=Count("id"), newest=Max("id")
    )
    return found["count"], f"{found['count']}:{found['newest'] or 0}"


@dataclass
class PageFigures:
    """A page's figures and where they came from: computed in this request (`job` is
    None), or kept by the worker's job (`figures` None until its first run ends)."""

    figures: dict | None
    job: ProjectFigures | None
    rankings: int

    def updating(self) -> bool:
        """Return whether the worker is computing newer figures."""
        return self.job is not None and self.job.status in (
            ProjectFigures.Status.QUEUED,
            ProjectFigures.Status.RUNNING,
        )


def page_figures(
    project: Project, page: str, *, user: AbstractBaseUser | None = None
) -> PageFigures:
    """Return the page's figures: computed here for a project of up to
    REQUEST_MAX_RANKINGS rankings, else the kept ones, queuing a new computation when
    they are missing, stale or failed (`run_figures`)."""
    count, print_ = fingerprint(project)
    if count <= settings.REQUEST_MAX_RANKINGS:
        return PageFigures(COMPUTE[page](project, lambda share: None), None, count)
    fail_lost_figures()
    job = ProjectFigures.objects.filter(project=project, page=page).first()
    if job is None or _due(job, print_):
        job = queue_job(
            ProjectFigures,
            {"project": project, "page": page},
            _enqueue,
            lambda found: (
                found.status
                in (ProjectFigures.Status.DONE, ProjectFigures.Status.FAILED)
            ),
            created_by=user,
        )
    return PageFigures(job.result or None, job, count)


def _due(job: ProjectFigures, print_: str) -> bool:
    """Return whether a finished computation's figures should be computed again."""
    if job.status in (ProjectFigures.Status.QUEUED, ProjectFigures.Status.RUNNING):
        return False
    if job.status == ProjectFigures.Status.FAILED or job.computed_at is None:
        return True
    age = timezone.now() - job.computed_at
    if age > timedelta(seconds=settings.FIGURES_MAX_AGE):
        return True
    return job.fingerprint != print_ and age > timedelta(
        seconds=settings.FIGURES_MIN_INTERVAL
    )


def _enqueue(figures_id: int) -> None:
    from annotation.tasks import figures_task

    figures_task.enqueue(figures_id)


def run_figures(figures_id: int) -> ProjectFigures:
    """Compute a queued page's figures (the worker's job) and keep them, with the
    rankings they were computed from; return the row. The figures kept before stay
    until the new ones land; an error fails the row with the reason in `error`."""
    job = ProjectFigures.objects.select_related("project").get(pk=figures_id)

    def compute(running) -> dict:
        fail_lost_figures()
        _, print_ = fingerprint(job.project)  # before: rankings added meanwhile count
        result = COMPUTE[job.page](
            job.project, lambda share: running.update(progress=round(share, 4))
        )
        return {"result": result, "fingerprint": print_, "computed_at": timezone.now()}

    run_job(
        ProjectFigures.objects.all(),
        figures_id,
        HEARTBEAT_SECONDS,
        compute,
        "computing the figures stopped on an error",
    )
    return ProjectFigures.objects.select_related("project").get(pk=figures_id)


def fail_lost_figures(*, now: datetime | None = None) -> list[int]:
    """Fail the running computations whose worker is lost (`config.workers.fail_lost`:
    its process on this host gone, or elsewhere and silent for LOST_AFTER_SECONDS);
    return their ids. The page queues the next one."""
    return fail_lost(
        ProjectFigures.objects.all(),
        LOST_AFTER_SECONDS,
        "the worker computing these figures stopped ({why}); the page asks for "
        "them again",
        now,
    )
