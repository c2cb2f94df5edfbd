"""Per-annotator quality: gold accuracy, agreement with consensus, time, skips, reliability.

Definitions (the README repeats them):
- gold accuracy: mean gold score (`gold.gold_score`) over the annotator's gold rankings;
- consensus agreement: the share of response pairs on which the annotator's order
  agrees with the Borda consensus of the *other* annotators' rankings of the same
  task (leave-one-out, so an annotator does not agree with themselves);
- median seconds: median active time reported by the page, else server time from
  lease to submission;
- skip rate: skips over all answers;
- reliability: the share of checked pair judgements (against gold and against the
  leave-one-out consensus) that match, with one agreeing and one disagreeing
  pseudo-judgement added, so an annotator with little evidence sits near 0.5.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from statistics import median

from annotation.agreement import pair_agreement
from annotation.consensus import borda
from annotation.gold import gold_score


@dataclass
class AnnotatorStats:
    """Quality figures of one annotator in one project."""

    user_id: int
    username: str
    is_simulated: bool
    is_paused: bool
    rankings: int
    skips: int
    skip_rate: float
    gold_tasks: int
    gold_accuracy: float | None
    consensus_agreement: float | None
    median_seconds: float | None
    reliability: float


def ranking_rows(project) -> list[dict]:
    """Return every answer of the project as plain dicts, in one query."""
    from annotation.models import Ranking

    return list(
        Ranking.objects.filter(task__project=project)
        .order_by("id")
        .values(
            "annotator_id",
            "annotator__username",
            "annotator__annotator_profile__is_simulated",
            "annotator__annotator_profile__is_paused",
            "task_id",
            "task__is_gold",
            "task__gold_order",
            "order",
            "strength",
            "is_skip",
            "server_seconds",
            "active_seconds",
            "created_at",
        )
    )


def annotator_stats(rows: list[dict]) -> list[AnnotatorStats]:
    """Return each annotator's quality figures from `ranking_rows`, by username."""
    by_task: dict[int, list[dict]] = defaultdict(list)
    by_user: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_user[row["annotator_id"]].append(row)
        if not row["is_skip"]:
            by_task[row["task_id"]].append(row)
    stats = []
    for user_id, answers in by_user.items():
        ranked = [r for r in answers if not r["is_skip"]]
        # A skipped gold task scores 0, as in `gold.gold_record`.
        gold_scores = [
            s
            for r in answers
            if r["task__is_gold"]
            and r["task__gold_order"]
            and (
                s := 0.0
                if r["is_skip"]
                else gold_score(r["order"], r["task__gold_order"])
            )
            is not None
        ]
        gold_pairs = gold_agree = 0.0
        for r in ranked:
            if r["task__is_gold"] and r["task__gold_order"]:
                agree, n = pair_agreement(r["order"], r["task__gold_order"])
                gold_agree += agree
                gold_pairs += n
        cons_agree = cons_pairs = 0
        for r in ranked:
            others = [
                o["order"]
                for o in by_task[r["task_id"]]
                if o["annotator_id"] != user_id
            ]
            if others:
                agree, n = pair_agreement(r["order"], borda(others))
                cons_agree += agree
                cons_pairs += n
        seconds = [
            r["active_seconds"]
            if r["active_seconds"] is not None
            else r["server_seconds"]
            for r in answers
        ]
        seconds = [s for s in seconds if s is not None]
        first = answers[0]
        stats.append(
            AnnotatorStats(
                user_id=user_id,
                username=first["annotator__username"],
                is_simulated=bool(first["annotator__annotator_profile__is_simulated"]),
                is_paused=bool(first["annotator__annotator_profile__is_paused"]),
                rankings=len(ranked),
                skips=len(answers) - len(ranked),
                skip_rate=(len(answers) - len(ranked)) / len(answers),
                gold_tasks=len(gold_scores),
                gold_accuracy=sum(gold_scores) / len(gold_scores)
                if gold_scores
                else None,
                consensus_agreement=cons_agree / cons_pairs if cons_pairs else None,
                median_seconds=median(seconds) if seconds else None,
                reliability=(gold_agree + cons_agree + 1)
                / (gold_pairs + cons_pairs + 2),
            )
        )
    return sorted(stats, key=lambda s: s.username)
