"""How much annotators agree: pairwise agreement, Kendall's tau-b, Krippendorff's alpha.

Pairwise projects' judgements carry a strength; `strength_alpha` measures agreement
on the signed strength (Krippendorff's alpha, interval), so "A much better" against
"A slightly better" counts as a smaller disagreement than against "B better".

Every function takes plain orders (lists of tie groups of response ids, best first)
so it can be tested without a database. Callers pass human rankings only: rankings
of users whose profile is simulated are left out of human agreement figures
(`human_orders_by_task` does that for a project).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from itertools import combinations

Order = list[list[int]]


def rank_map(order: Order) -> dict[int, int]:
    """Return each response id's rank in an order (0 is best; ties share a rank)."""
    return {rid: rank for rank, group in enumerate(order) for rid in group}


def fractional_ranks(order: Order) -> dict[int, float]:
    """Return each response id's average rank (0 is best; a tie shares the mean place).

    A tie of two at the top gives both 0.5 and the next response 2, so a tie does
    not shift everything below it as dense ranks would.
    """
    ranks: dict[int, float] = {}
    place = 0
    for group in order:
        mean = place + (len(group) - 1) / 2
        ranks.update({rid: mean for rid in group})
        place += len(group)
    return ranks


def _relation(ranks: dict[int, int], x: int, y: int) -> int:
    """Return -1 when x is preferred to y, 1 when y is preferred, 0 for a tie."""
    return (ranks[x] > ranks[y]) - (ranks[x] < ranks[y])


def pair_agreement(a: Order, b: Order) -> tuple[int, int]:
    """Return (agreeing, compared) over the response pairs both orders rank.

    Two orders agree on a pair when they prefer the same response or both tie it.
    """
    ra, rb = rank_map(a), rank_map(b)
    common = sorted(set(ra) & set(rb))
    agree = sum(
        _relation(ra, x, y) == _relation(rb, x, y) for x, y in combinations(common, 2)
    )
    return agree, len(common) * (len(common) - 1) // 2


def pairwise_agreement(orders: list[Order]) -> float | None:
    """Return the share of (annotator pair, response pair) judgements that agree.

    None when fewer than two orders compare at least one pair.
    """
    agree = total = 0
    for a, b in combinations(orders, 2):
        n_agree, n = pair_agreement(a, b)
        agree += n_agree
        total += n
    return agree / total if total else None


def kendall_tau_b(a: Order, b: Order) -> float | None:
    """Return Kendall's tau-b between two orders over their common responses.

    None when it is undefined: fewer than two common responses, or one order ties
    them all. Counted over the pairs directly, as scipy.stats.kendalltau(variant="b")
    computes it (the tests check it against scipy): a ranking has a few responses,
    and scipy's overhead per call (0.5 ms) made this most of the project dashboard's
    time (7.7 s for 30,000 rankings).
    """
    ra, rb = rank_map(a), rank_map(b)
    common = [r for r in ra if r in rb]
    concordant = discordant = ties_a = ties_b = 0
    for x, y in combinations(common, 2):
        da, db = ra[x] - ra[y], rb[x] - rb[y]
        if da == 0:
            ties_a += 1
        if db == 0:
            ties_b += 1
        if da * db > 0:
            concordant += 1
        elif da * db < 0:
            discordant += 1
    pairs = len(common) * (len(common) - 1) // 2
    if pairs == 0 or ties_a == pairs or ties_b == pairs:
        return None
    return (concordant - discordant) / math.sqrt((pairs - ties_a) * (pairs - ties_b))


def krippendorff_alpha(orders_by_task: dict[int, dict[int, Order]]) -> float | None:
    """Return Krippendorff's alpha (ordinal, the `krippendorff` package) of rankings.

    `orders_by_task` maps task id -> {annotator id: order}. Each response is a unit
    and its fractional rank (0 best, a tie sharing the mean of its places) is the
    value an annotator gave it. None
    when alpha is undefined: no unit with two values, or a single value in all data.
    """
    import krippendorff
    import numpy as np

    annotators = sorted(
        {a for by_annotator in orders_by_task.values() for a in by_annotator}
    )
    row = {a: i for i, a in enumerate(annotators)}
    columns: list[list[float]] = []
    for task_id in sorted(orders_by_task):
        by_annotator = orders_by_task[task_id]
        if len(by_annotator) < 2:
            continue
        ranks = {a: fractional_ranks(order) for a, order in by_annotator.items()}
        for rid in sorted({r for rm in ranks.values() for r in rm}):
            column = [float("nan")] * len(annotators)
            for a, rm in ranks.items():
                if rid in rm:
                    column[row[a]] = float(rm[rid])
            columns.append(column)
    if not columns:
        return None
    data = np.array(columns, dtype=float).T  # (annotators, units)
    if len(np.unique(data[~np.isnan(data)])) < 2:
        return None
    return float(
        krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal")
    )


def signed_strength(order: Order, strength: int) -> int:
    """Return a pairwise judgement as one number on its scale: +strength when the
    response with the lower id is preferred, -strength when the other is, 0 for a
    tie.

    Every annotator of a task is oriented the same way, so the values compare.
    """
    if len(order) == 1:
        return 0
    (better,), (worse,) = order
    return strength if better < worse else -strength


def strength_alpha(strengths_by_task: dict[int, dict[int, int]]) -> float | None:
    """Return Krippendorff's alpha (interval) of signed strengths.

    `strengths_by_task` maps task id -> {annotator id: signed strength}; each task is
    a unit. None when alpha is undefined: no task with two judgements, or one value
    in all data.
    """
    import krippendorff
    import numpy as np

    multi = {t: by for t, by in strengths_by_task.items() if len(by) >= 2}
    annotators = sorted({a for by in multi.values() for a in by})
    row = {a: i for i, a in enumerate(annotators)}
    data = np.full((len(annotators), len(multi)), np.nan)  # (annotators, units)
    for column, task_id in enumerate(sorted(multi)):
        for annotator, value in multi[task_id].items():
            data[row[annotator], column] = value
    if not multi or len(np.unique(data[~np.isnan(data)])) < 2:
        return None
    return float(
        krippendorff.alpha(reliability_data=data, level_of_measurement="interval")
    )


def summarise(
    orders_by_task: dict[int, dict[int, Order]],
) -> dict[str, float | int | None]:
    """Return a project's agreement figures over tasks with at least two rankings."""
    multi = {t: by for t, by in orders_by_task.items() if len(by) >= 2}
    agree = total = 0
    taus: list[float] = []
    for by_annotator in multi.values():
        for a, b in combinations(list(by_annotator.values()), 2):
            n_agree, n = pair_agreement(a, b)
            agree += n_agree
            total += n
            if (t := kendall_tau_b(a, b)) is not None:
                taus.append(t)
    return {
        "tasks": len(multi),
        "pairwise_agreement": agree / total if total else None,
        "kendall_tau_b": sum(taus) / len(taus) if taus else None,
        "krippendorff_alpha": krippendorff_alpha(multi),
    }


def human_strengths_by_task(
    rows: Iterable[tuple[int, int, Order, int | None, bool | None]],
) -> dict[int, dict[int, int]]:
    """Group (task id, annotator id, order, strength, is_simulated) rows as signed
    strengths, dropping simulated ones and rankings without a strength."""
    grouped: dict[int, dict[int, int]] = defaultdict(dict)
    for task_id, annotator_id, order, strength, is_simulated in rows:
        if not is_simulated and strength is not None:
            grouped[task_id][annotator_id] = signed_strength(order, strength)
    return dict(grouped)


def human_orders_by_task(rows: Iterable[tuple[int, int, Order, bool | None]]) -> dict:
    """Group (task id, annotator id, order, is_simulated) rows, dropping simulated ones."""
    grouped: dict[int, dict[int, Order]] = defaultdict(dict)
    for task_id, annotator_id, order, is_simulated in rows:
        if not is_simulated:
            grouped[task_id][annotator_id] = order
    return dict(grouped)
