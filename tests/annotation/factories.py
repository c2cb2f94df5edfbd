"""Factories for annotation rows: policies, tasks with responses, annotators."""

from __future__ import annotations

from itertools import count

from django.contrib.auth.models import User

from annotation.models import Project, Prompt, RankingTask, Response
from inference.models import Policy
from tests.conftest import make_user

_serial = count(1)


def make_policy(name: str = "test-policy") -> Policy:
    """Return the policy named `name`, creating it without weights."""
    return Policy.objects.get_or_create(
        name=name, defaults={"kind": Policy.Kind.IMPORTED}
    )[0]


def make_task(
    project: Project,
    *,
    k: int | None = None,
    texts: list[str] | None = None,
    messages: list[dict] | str | None = None,
    overlap: int | None = None,
    selection_score: float = 0.0,
) -> RankingTask:
    """Create a task with a fresh prompt and K responses (texts default to 'response i')."""
    n = next(_serial)
    texts = texts or [
        f"response {i} of task {n}" for i in range(k or project.responses_per_task)
    ]
    prompt = Prompt.objects.create(
        project=project, messages=messages or f"prompt number {n}"
    )
    task = RankingTask.objects.create(
        project=project,
        prompt=prompt,
        overlap=overlap if overlap is not None else project.overlap,
        selection_score=selection_score,
    )
    policy = make_policy()
    # Inserted last position first: ids then run against the display order, so a
    # test that confuses a response's id with its handle (1..K) fails.
    Response.objects.bulk_create(
        reversed(
            [
                Response(task=task, policy=policy, text=text, position=i)
                for i, text in enumerate(texts)
            ]
        )
    )
    return task


def make_tasks(project: Project, n: int, **kwargs) -> list[RankingTask]:
    """Create n tasks (see make_task)."""
    return [make_task(project, **kwargs) for _ in range(n)]


def response_ids(task: RankingTask) -> list[int]:
    """Return the task's response ids in display order."""
    return list(task.responses.order_by("position", "id").values_list("pk", flat=True))


def handles(task: RankingTask) -> list[int]:
    """Return the task's response handles, 1..K: how annotators name its responses."""
    return list(range(1, task.responses.count() + 1))


def make_annotators(n: int, prefix: str = "ann") -> list[User]:
    """Create n users with the annotator role."""
    return [make_user(f"{prefix}{i}", "annotator") for i in range(n)]
