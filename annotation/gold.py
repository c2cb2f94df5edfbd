"""Gold tasks: marking a task's known answer, scoring annotators on it, pausing them.

A gold task carries a known order (or only a known best response, stored as the
order [[best], [every other response]]). An annotator's gold score on one task is
the share of the gold order's strict preferences they reproduce, a tie earning half
a point. An annotator is paused when, after at least `project.gold_min_tasks` gold
tasks answered since their last reinstatement, their mean score is below
`project.gold_threshold`; an admin reinstates them.
"""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotation.agreement import Order, rank_map


def gold_score(order: Order, gold_order: Order) -> float | None:
    """Return the share of the gold order's strict preferences that `order` keeps.

    A pair the annotator ties scores one half. None when the gold order has no
    strict preference among the responses both orders rank.
    """
    mine, gold = rank_map(order), rank_map(gold_order)
    common = [r for r in gold if r in mine]
    points = 0.0
    pairs = 0
    for x in common:
        for y in common:
            if gold[x] < gold[y]:
                pairs += 1
                if mine[x] < mine[y]:
                    points += 1.0
                elif mine[x] == mine[y]:
                    points += 0.5
    return points / pairs if pairs else None


def best_only_order(best_id: int, response_ids: list[int] | set[int]) -> Order:
    """Return the gold order that knows only the best response."""
    rest = sorted(set(response_ids) - {best_id})
    return [[best_id], rest] if rest else [[best_id]]


def mark_gold(task, order: object, *, actor: AbstractBaseUser | None = None) -> None:
    """Make the task a gold task with the given known order (validated like a ranking).

    Raise ValidationError naming the problem when the order does not rank every
    response of the task exactly once.
    """
    from annotation.audit import record
    from annotation.models import Ranking, RankingTask

    with transaction.atomic():
        task = RankingTask.objects.select_for_update().get(pk=task.pk)
        before = task.gold_order if task.is_gold else None
        groups = Ranking.validate_order(
            order, set(task.responses.values_list("pk", flat=True))
        )
        if len(groups) < 2:
            raise ValidationError(
                f"a gold order must prefer at least one response, got {groups}; put the "
                "best response in its own group"
            )
        task.is_gold = True
        task.gold_order = groups
        task.save(update_fields=["is_gold", "gold_order"])
        record(actor, "gold.mark", obj=task, before=before, after=groups)


@transaction.atomic
def unmark_gold(task, *, actor: AbstractBaseUser | None = None) -> None:
    """Make a gold task an ordinary task again."""
    from annotation.audit import record

    record(actor, "gold.unmark", obj=task, before=task.gold_order)
    task.is_gold = False
    task.gold_order = None
    task.save(update_fields=["is_gold", "gold_order"])


def gold_record(project, user: AbstractBaseUser) -> tuple[int, float | None]:
    """Return (gold tasks scored, mean score) since the annotator's last reinstatement.

    A skipped gold task scores 0: otherwise skipping the tasks one finds hard (or
    suspects are gold) would raise one's accuracy.
    """
    from annotation.models import AnnotatorProfile, Ranking

    rankings = Ranking.objects.filter(
        task__project=project, annotator=user, task__is_gold=True
    )
    reinstated_at = (
        AnnotatorProfile.objects.filter(user=user)
        .values_list("reinstated_at", flat=True)
        .first()
    )
    if reinstated_at is not None:
        rankings = rankings.filter(created_at__gt=reinstated_at)
    scores = [
        s
        for order, gold, is_skip in rankings.values_list(
            "order", "task__gold_order", "is_skip"
        )
        if gold and (s := 0.0 if is_skip else gold_score(order, gold)) is not None
    ]
    return len(scores), (sum(scores) / len(scores) if scores else None)


def apply_gold_rule(project, user: AbstractBaseUser) -> bool:
    """Pause the annotator if their gold accuracy is below the project's threshold.

    Return whether they are paused now. Call it in the transaction that stored a
    gold ranking.
    """
    from annotation.models import AnnotatorProfile

    n, accuracy = gold_record(project, user)
    if (
        n < project.gold_min_tasks
        or accuracy is None
        or accuracy >= project.gold_threshold
    ):
        return False
    AnnotatorProfile.objects.filter(user=user).update(
        is_paused=True,
        paused_reason=(
            f"gold accuracy {accuracy:.0%} over {n} gold tasks in project "
            f"{project.name} is below its threshold of {project.gold_threshold:.0%}"
        ),
    )
    return True


@transaction.atomic
def reinstate(
    user: AbstractBaseUser,
    *,
    now: datetime | None = None,
    actor: AbstractBaseUser | None = None,
) -> None:
    """Lift the annotator's pause; gold tasks answered before now no longer count."""
    from annotation.audit import record
    from annotation.models import AnnotatorProfile

    now = now or timezone.now()
    record(actor, "annotator.reinstate", obj=user, after={"user": user.get_username()})
    AnnotatorProfile.objects.update_or_create(
        user=user,
        defaults={"is_paused": False, "paused_reason": "", "reinstated_at": now},
    )
