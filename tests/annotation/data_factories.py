"""Factories for preference data built with the ORM: policies, rounds, tasks, rankings."""

from __future__ import annotations

from django.contrib.auth.models import User

from annotation.models import Project, Prompt, Ranking, RankingTask, Response, Round
from inference.models import Policy
from tests.conftest import make_user


def make_policy(name: str = "demo-sft") -> Policy:
    """Return the policy of that name, creating it if needed."""
    return Policy.objects.get_or_create(
        name=name, defaults={"base_path": "/models/" + name}
    )[0]


def make_round(
    project: Project, number: int = 1, policy: Policy | None = None
) -> Round:
    return Round.objects.create(
        project=project, number=number, policy=policy or make_policy()
    )


def make_task(
    project: Project,
    prompt: str = "What is 2 + 2?",
    texts: tuple[str, ...] = ("Four.", "4", "It is 5.", "No idea."),
    *,
    round: Round | None = None,
    policy: Policy | None = None,
    is_gold: bool = False,
) -> RankingTask:
    """Return a task with one response per text, in display order."""
    round = (
        round or Round.objects.filter(project=project).first() or make_round(project)
    )
    prompt_row = Prompt.objects.filter(
        project=project, content_hash=_hash(prompt)
    ).first() or Prompt.objects.create(project=project, messages=prompt)
    task = RankingTask.objects.create(
        project=project, round=round, prompt=prompt_row, overlap=3, is_gold=is_gold
    )
    for position, text in enumerate(texts):
        Response.objects.create(
            task=task, policy=policy or round.policy, text=text, position=position
        )
    return task


def _hash(prompt: str) -> str:
    from annotation.models import messages_hash, normalise_messages

    return messages_hash(normalise_messages(prompt))


def ids(task: RankingTask) -> list[int]:
    """Return the task's response ids in display order."""
    return list(task.responses.order_by("position").values_list("id", flat=True))


def rank(task: RankingTask, user: User, order: list, **fields) -> Ranking:
    """Store a ranking whose order is given by display positions: [[0], [1, 2], [3]]."""
    rids = ids(task)
    groups = [[rids[p] for p in (g if isinstance(g, list) else [g])] for g in order]
    ranking = Ranking.objects.create(task=task, annotator=user, order=groups, **fields)
    task.ranking_count += 1
    task.save(update_fields=["ranking_count"])
    return ranking


def annotators(n: int = 3) -> list[User]:
    return [make_user(f"ann{i}", "annotator") for i in range(1, n + 1)]
