"""The data manager's query: every task of a project, filtered, searched and keyset-paged.

Filters are read from a query string into a `TaskFilter` (ValidationError names a bad
value); `task_page` returns one page of tasks newest first, keyed by id (`after` is
the last id of the previous page), so a page costs an index walk from that id and no
OFFSET nor COUNT(*) over the table, whatever the number of rankings. Each
per-ranking filter is an EXISTS on the (task, annotator) index. Text search uses
PostgreSQL full-text search (websearch syntax, English configuration) where the
database is PostgreSQL and a case-insensitive substring match elsewhere.
`snapshot_spec` maps a filter to annotation.snapshots' filter spec and names what a
snapshot cannot express; `task_history` lists what happened to one task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet, TextField
from django.db.models.functions import Cast
from django.http import QueryDict

from annotation.consensus import borda
from annotation.models import (
    Project,
    Prompt,
    Ranking,
    RankingTask,
    Response,
    SnapshotRanking,
)
from annotation.snapshots import parse_moment

PAGE_SIZE = 50
TRI_STATE = ("include", "exclude", "only")
YES_NO = ("any", "yes", "no")


@dataclass
class TaskFilter:
    """What the data manager shows; empty fields do not filter."""

    round: int | None = None
    policy: str = ""
    min_agreement: float | None = None
    max_agreement: float | None = None
    gold: str = "include"
    flagged: str = "include"
    skipped: str = "include"
    annotator: str = ""
    adjudicated: str = "any"
    since: datetime | None = None
    until: datetime | None = None
    search: str = ""
    fields: dict = field(default_factory=dict)

    def is_active(self, name: str) -> bool:
        """Return whether the filter `name` narrows the tasks."""
        value = getattr(self, name)
        return value not in (None, "", "include", "any")


FILTER_NAMES = (
    "round",
    "policy",
    "min_agreement",
    "max_agreement",
    "gold",
    "flagged",
    "skipped",
    "annotator",
    "adjudicated",
    "since",
    "until",
    "search",
)


def parse_filter(params: QueryDict | dict) -> TaskFilter:
    """Return the filter a query string asks for.

    Raise ValidationError naming the parameter, the value received and what is
    expected.
    """
    raw = {k: (params.get(k) or "").strip() for k in FILTER_NAMES}
    f = TaskFilter(fields={k: v for k, v in raw.items() if v})
    if raw["round"]:
        if not raw["round"].isdigit():
            raise ValidationError(f"round must be a round number, got {raw['round']!r}")
        f.round = int(raw["round"])
    for name in ("min_agreement", "max_agreement"):
        if raw[name]:
            try:
                value = float(raw[name])
            except ValueError:
                value = -1.0
            if not 0 <= value <= 1:
                raise ValidationError(
                    f"{name} must be a number in [0, 1], got {raw[name]!r}"
                )
            setattr(f, name, value)
    for name, allowed in (
        ("gold", TRI_STATE),
        ("flagged", TRI_STATE),
        ("skipped", TRI_STATE),
        ("adjudicated", YES_NO),
    ):
        if raw[name]:
            if raw[name] not in allowed:
                raise ValidationError(
                    f"{name} must be one of {allowed}, got {raw[name]!r}"
                )
            setattr(f, name, raw[name])
    for name in ("since", "until"):
        if raw[name]:
            setattr(f, name, parse_moment(name, raw[name]))
    f.policy, f.annotator, f.search = raw["policy"], raw["annotator"], raw["search"]
    return f


def filtered_tasks(project: Project, f: TaskFilter) -> QuerySet:
    """Return the project's tasks that pass the filter (unordered, unsliced)."""
    tasks = RankingTask.objects.filter(project=project)
    if f.round is not None:
        tasks = tasks.filter(round__number=f.round)
    if f.policy:
        tasks = tasks.filter(
            Exists(Response.objects.filter(task=OuterRef("pk"), policy__name=f.policy))
        )
    if f.min_agreement is not None:
        tasks = tasks.filter(agreement__gte=f.min_agreement)
    if f.max_agreement is not None:
        tasks = tasks.filter(agreement__lte=f.max_agreement)
    tasks = _tri_state(tasks, f.gold, Q(is_gold=True))
    flagged_ranking = Ranking.objects.filter(task=OuterRef("pk")).filter(
        Q(all_bad=True) | ~Q(unsafe_response_ids=[])
    )
    tasks = _tri_state(
        tasks, f.flagged, ~Q(prompt__flags=[]) | Q(Exists(flagged_ranking))
    )
    skips = Ranking.objects.filter(task=OuterRef("pk"), is_skip=True)
    tasks = _tri_state(tasks, f.skipped, Q(Exists(skips)))
    if f.annotator:
        tasks = tasks.filter(
            Exists(
                Ranking.objects.filter(
                    task=OuterRef("pk"), annotator__username=f.annotator
                )
            )
        )
    if f.adjudicated != "any":
        tasks = tasks.filter(adjudicated_at__isnull=f.adjudicated == "no")
    if f.since is not None or f.until is not None:
        in_window = Ranking.objects.filter(task=OuterRef("pk"))
        if f.since is not None:
            in_window = in_window.filter(created_at__gte=f.since)
        if f.until is not None:
            in_window = in_window.filter(created_at__lt=f.until)
        tasks = tasks.filter(Exists(in_window))
    if f.search:
        tasks = tasks.filter(_search(f.search))
    return tasks


def _tri_state(tasks: QuerySet, choice: str, condition: Q) -> QuerySet:
    if choice == "only":
        return tasks.filter(condition)
    if choice == "exclude":
        return tasks.exclude(condition)
    return tasks


def _search(text: str) -> Q:
    """Return the condition: the prompt or one of the responses matches `text`."""
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchVector

        query = SearchQuery(text, search_type="websearch", config="english")
        responses = Response.objects.annotate(
            document=SearchVector("text", config="english")
        ).filter(task=OuterRef("pk"), document=query)
        prompts = Prompt.objects.annotate(
            document=SearchVector(Cast("messages", TextField()), config="english")
        ).filter(pk=OuterRef("prompt_id"), document=query)
    else:
        responses = Response.objects.filter(task=OuterRef("pk"), text__icontains=text)
        prompts = Prompt.objects.annotate(
            document=Cast("messages", TextField())
        ).filter(pk=OuterRef("prompt_id"), document__icontains=text)
    return Q(Exists(responses)) | Q(Exists(prompts))


@dataclass
class TaskPage:
    """One page of tasks, newest first, and the id the next page starts after."""

    tasks: list[RankingTask]
    next_after: int | None


def task_page(
    project: Project, f: TaskFilter, *, after: int | None = None, size: int = PAGE_SIZE
) -> TaskPage:
    """Return the tasks passing `f` with ids below `after`, newest first.

    Reads size + 1 rows to know whether another page follows; never counts.
    """
    tasks = filtered_tasks(project, f).select_related("prompt", "round")
    if after is not None:
        tasks = tasks.filter(pk__lt=after)
    rows = list(tasks.order_by("-pk")[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return TaskPage(rows, rows[-1].pk if more else None)


def snapshot_spec(f: TaskFilter) -> tuple[dict, list[str]]:
    """Return the snapshot filter spec for `f` and what a snapshot cannot express.

    The second value names each active filter the spec leaves out or approximates,
    in words for the page.
    """
    spec: dict = {}
    lost: list[str] = []
    if f.round is not None:
        spec["rounds"] = [f.round]
    if f.policy:
        spec["policies"] = [f.policy]
        lost.append(
            "policy: the snapshot keeps only pairs of two responses by that policy, "
            "not every pair of the tasks it wrote one response of"
        )
    if f.min_agreement is not None:
        spec["min_agreement"] = f.min_agreement
    if f.max_agreement is not None:
        lost.append("maximum agreement: a snapshot has only a minimum")
    if f.gold != "include":
        spec["gold"] = f.gold
    for name in ("flagged", "skipped"):
        value = getattr(f, name)
        if value == "exclude":
            spec[name] = "exclude"
        elif value == "only":
            lost.append(f"{name} only: a snapshot can include or exclude them, no more")
    if f.annotator:
        lost.append("annotator: a snapshot takes every annotator's rankings")
    if f.adjudicated != "any":
        lost.append("adjudicated yes/no: a snapshot takes adjudicated and other tasks")
    if f.since is not None:
        spec["since"] = f.since.isoformat()
    if f.until is not None:
        spec["until"] = f.until.isoformat()
    if f.search:
        lost.append("text search: a snapshot cannot select by text")
    return spec, lost


@dataclass
class Event:
    """One line of a task's history."""

    at: datetime | None
    what: str
    who: str = ""
    order: list | None = None
    consensus: list | None = None


def task_history(task: RankingTask) -> list[Event]:
    """Return what happened to a task, oldest first, with the consensus after each vote.

    Events: its creation, each ranking, revision or skip, its adjudication, each
    snapshot that froze it. The consensus after a ranking is the Borda count of the
    versions current at that moment, as the task's stored consensus was then.
    """
    events = [Event(task.created_at, "created")]
    current: dict[int, list] = {}
    versions = Ranking.versions.filter(task=task).select_related("annotator")
    for ranking in versions.order_by("id"):
        who = ranking.annotator.username
        if ranking.is_skip:
            events.append(Event(ranking.created_at, "skipped", who))
            continue
        current[ranking.annotator_id] = ranking.order
        what = "revised" if ranking.supersedes_id else "ranked"
        consensus = borda(list(current.values()))
        events.append(Event(ranking.created_at, what, who, ranking.order, consensus))
    if task.adjudicated_at:
        events.append(
            Event(
                task.adjudicated_at,
                "adjudicated",
                task.adjudicated_by.username if task.adjudicated_by_id else "",
                task.adjudicated_order,
            )
        )
    snapshots = (
        SnapshotRanking.objects.filter(task=task)
        .values_list("snapshot__name", "snapshot__created_at")
        .order_by()
        .distinct()
    )
    for name, created_at in snapshots:
        events.append(Event(created_at, f"frozen into snapshot {name}"))
    return sorted(events, key=lambda e: e.at)
