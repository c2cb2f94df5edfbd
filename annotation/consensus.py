"""The consensus order of a task's rankings, by the Borda count.

Method (Borda with ties): in each ranking a response scores one point per response
ranked strictly below it and half a point per response tied with it; the points are
summed over the rankings, and responses with equal totals form one tie group of the
consensus, best first. Every ranking counts, simulated annotators' included, since
the consensus is a label; the task's `agreement` figure counts humans only.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

from annotation.agreement import Order, rank_map


def borda(orders: list[Order]) -> Order | None:
    """Return the Borda consensus of orders as tie groups (ids sorted in a group).

    None when there is no order.
    """
    if not orders:
        return None
    # Doubled points keep the sums integral: 2 per response below, 1 per tied one.
    points: dict[int, int] = defaultdict(int)
    for order in orders:
        below = sum(len(g) for g in order)
        for group in order:
            below -= len(group)
            for rid in group:
                points[rid] += 2 * below + (len(group) - 1)
    by_points: dict[int, list[int]] = defaultdict(list)
    for rid, p in points.items():
        by_points[p].append(rid)
    return [sorted(by_points[p]) for p in sorted(by_points, reverse=True)]


def pairwise_agreement_by_counts(orders: list[Order]) -> float | None:
    """Return `agreement.pairwise_agreement(orders)`, counting instead of comparing.

    For each response pair, count the orders preferring one side, the other, or
    tying it; the agreeing judgements are the pairs of orders within one count. The
    cost grows with the number of orders, not with its square, so a gold task that
    every annotator ranks stays cheap to update.
    """
    counts: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    for order in orders:
        ranks = rank_map(order)
        for x, y in combinations(sorted(ranks), 2):
            rx, ry = ranks[x], ranks[y]
            counts[x, y][(rx > ry) - (rx < ry) + 1] += 1
    agree = total = 0
    for by_relation in counts.values():
        n = sum(by_relation)
        total += n * (n - 1) // 2
        agree += sum(k * (k - 1) // 2 for k in by_relation)
    return agree / total if total else None


def update_task_figures(task) -> None:
    """Recompute and save a task's consensus order, agreement and ranking count.

    Call it inside the transaction that changed the task's rankings, with the task
    row locked, so the stored figures always describe the stored rankings. Two raw
    statements: this runs on every submission (bench/annotation_load.py).
    """
    from django.db import connection

    from annotation.models import AnnotatorProfile, Ranking, RankingTask

    order_field = Ranking._meta.get_field("order")
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT r.{connection.ops.quote_name('order')}, p.is_simulated "
            f"FROM {Ranking._meta.db_table} r LEFT JOIN "
            f"{AnnotatorProfile._meta.db_table} p ON p.user_id = r.annotator_id "
            "WHERE r.task_id = %s AND r.is_skip = %s AND r.is_current = %s",
            [task.pk, False, True],
        )
        rows = [
            (order_field.from_db_value(order, None, connection), bool(sim))
            for order, sim in cursor.fetchall()
        ]
        task.consensus_order = borda([order for order, _ in rows])
        humans = [order for order, sim in rows if not sim]
        task.agreement = pairwise_agreement_by_counts(humans)
        field = RankingTask._meta.get_field("consensus_order")
        cursor.execute(
            f"UPDATE {RankingTask._meta.db_table} SET ranking_count = %s, "
            "consensus_order = %s, agreement = %s WHERE id = %s",
            [
                task.ranking_count,
                field.get_db_prep_save(task.consensus_order, connection),
                task.agreement,
                task.pk,
            ],
        )


def adjudicate(task, order: object, user, *, now=None) -> None:
    """Record an adjudicated order that overrides the task's consensus, with who and when.

    Raise ValidationError, storing nothing, when the order does not rank every
    response of the task exactly once.
    """
    from django.db import transaction
    from django.utils import timezone

    from annotation.audit import record
    from annotation.models import Ranking, RankingTask

    with transaction.atomic():
        task = RankingTask.objects.select_for_update().get(pk=task.pk)
        before = task.adjudicated_order
        task.adjudicated_order = Ranking.validate_order(
            order, set(task.responses.values_list("pk", flat=True))
        )
        task.adjudicated_by = user
        task.adjudicated_at = now or timezone.now()
        task.save(
            update_fields=["adjudicated_order", "adjudicated_by", "adjudicated_at"]
        )
        record(
            user,
            "task.adjudicate",
            obj=task,
            before=before,
            after=task.adjudicated_order,
        )
