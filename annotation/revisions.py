"""Annotators revising their own rankings within the project's window, as new versions.

A revision stores a new `Ranking` that `supersedes` the old one; the old one stays,
with `is_current` false, for audit. The window runs from the first version's time,
so revising again does not extend it. A task that is adjudicated or frozen into a
snapshot is settled and cannot be revised; skips are not revisable. The task's
ranking count is unchanged; its consensus and agreement are recomputed, and a gold
task's gold rule applied again, in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from annotation import consensus
from annotation.gold import apply_gold_rule
from annotation.models import Handles, Ranking, RankingTask, SnapshotRanking


class RevisionRefused(ValidationError):
    """The ranking cannot be revised now; the message says why."""


@dataclass
class Revisability:
    """Whether a ranking may be revised now, until when, and if not, why."""

    allowed: bool
    until: datetime | None
    reason: str = ""


def first_version(ranking: Ranking) -> Ranking:
    """Return the earliest version in the ranking's chain of revisions."""
    while ranking.supersedes_id is not None:
        ranking = Ranking.versions.get(pk=ranking.supersedes_id)
    return ranking


def revisability(
    ranking: Ranking, user: AbstractBaseUser, *, now: datetime | None = None
) -> Revisability:
    """Return whether `user` may revise `ranking` at `now` (default: now)."""
    now = now or timezone.now()
    task = ranking.task
    minutes = task.project.revision_minutes
    until = first_version(ranking).created_at + timedelta(minutes=minutes)
    if ranking.annotator_id != user.pk:
        return Revisability(False, None, "only its annotator may revise a ranking")
    if not ranking.is_current:
        return Revisability(
            False, None, "this version was already revised; revise the current one"
        )
    if ranking.is_skip:
        return Revisability(False, None, "a skip cannot be revised")
    if minutes == 0:
        return Revisability(False, None, "this project does not allow revisions")
    if now >= until:
        return Revisability(
            False,
            until,
            f"the {minutes}-minute revision window closed at "
            f"{timezone.localtime(until):%Y-%m-%d %H:%M} UTC",
        )
    if task.adjudicated_at is not None:
        return Revisability(False, until, "the task has been adjudicated")
    if SnapshotRanking.objects.filter(task_id=task.pk).exists():
        return Revisability(False, until, "the task is frozen into a snapshot")
    return Revisability(True, until)


def revise_ranking(
    ranking: Ranking,
    user: AbstractBaseUser,
    order: object,
    *,
    rationale: str | None = None,
    strength: int | None = None,
    now: datetime | None = None,
) -> Ranking:
    """Store `order` as a new version of `ranking` and return it.

    `order`: tie groups of handles (1..K, as the annotator's pages number the
    task's responses), mapped here to response ids. A pairwise project's revision
    takes `strength` (`Ranking.validate_strength`); without it the old version's
    strength is kept, and must fit the new order.

    Raise PermissionDenied when `user` is not the ranking's annotator, RevisionRefused
    naming the reason when the window closed or the task is settled, and
    ValidationError when the order does not rank each response exactly once.
    """
    now = now or timezone.now()
    if ranking.annotator_id != user.pk:
        raise PermissionDenied(
            f"ranking {ranking.pk} is not yours; you can revise only your own rankings"
        )
    with transaction.atomic():
        task = RankingTask.objects.select_for_update().get(pk=ranking.task_id)
        ranking = Ranking.versions.select_for_update().get(pk=ranking.pk)
        ranking.task = task
        verdict = revisability(ranking, user, now=now)
        if not verdict.allowed:
            raise RevisionRefused(
                f"ranking {ranking.pk} cannot be revised: {verdict.reason}"
            )
        handles = Handles.of_task(task.pk)
        groups = handles.order_to_ids(order)
        if strength is None:
            strength = ranking.strength
        strength = Ranking.validate_strength(
            strength, handles.order_to_handles(groups), task.project
        )
        Ranking.versions.filter(pk=ranking.pk).update(is_current=False)
        revision = Ranking.versions.create(
            task=task,
            annotator=ranking.annotator,
            order=groups,
            all_bad=ranking.all_bad,
            unsafe_response_ids=ranking.unsafe_response_ids,
            rationale=ranking.rationale if rationale is None else rationale.strip(),
            rewrite=ranking.rewrite,
            aspect_ratings=ranking.aspect_ratings,
            strength=strength,
            server_seconds=ranking.server_seconds,
            active_seconds=ranking.active_seconds,
            source=ranking.source,
            supersedes=ranking,
        )
        Ranking.versions.filter(pk=revision.pk).update(created_at=now)
        revision.created_at = now
        consensus.update_task_figures(task)
        if task.is_gold and task.gold_order:
            apply_gold_rule(task.project, user)
    return revision
