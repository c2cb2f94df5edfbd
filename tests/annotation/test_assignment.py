"""Tests of annotation/assignment.py: who gets which task, and when."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.db.models import F
from django.utils import timezone

from annotation.assignment import (
    AnnotatorPaused,
    RankingSubmission,
    is_gold_due,
    next_task,
    skip_task,
    submit_ranking,
)
from annotation.gold import mark_gold
from annotation.models import AnnotatorProfile, Lease, Project, Ranking, RankingTask
from tests.annotation.factories import (
    handles,
    make_annotators,
    make_task,
    make_tasks,
    response_ids,
)

NOW = timezone.now()


def rank(lease: Lease, user, now=NOW) -> Ranking:
    """Submit the task's responses in display order."""
    return submit_ranking(
        lease, user, RankingSubmission([[h] for h in handles(lease.task)]), now=now
    )


def test_task_closest_to_completing_comes_first(project):
    fresh, nearly, half = make_tasks(project, 3)
    a, b, c, me = make_annotators(4)
    for user, task in ((a, nearly), (b, nearly), (c, half)):
        lease = Lease.objects.create(
            task=task,
            annotator=user,
            leased_at=NOW,
            expires_at=NOW + timedelta(minutes=30),
        )
        rank(lease, user)
    assert next_task(project, me, now=NOW).task_id == nearly.pk


def test_selection_score_breaks_ties_then_age(project):
    old, high, young = make_tasks(project, 3)
    RankingTask.objects.filter(pk=high.pk).update(selection_score=0.9)
    a, b = make_annotators(2)
    assert next_task(project, a, now=NOW).task_id == high.pk
    assert next_task(project, b, now=NOW).task_id == high.pk


def test_oldest_task_comes_first_when_all_else_is_equal(project):
    first, second = make_tasks(project, 2)
    (a,) = make_annotators(1)
    assert next_task(project, a, now=NOW).task_id == first.pk


def test_annotator_holding_a_lease_gets_the_same_lease_back(project):
    make_tasks(project, 3)
    (a,) = make_annotators(1)
    lease = next_task(project, a, now=NOW)
    assert next_task(project, a, now=NOW + timedelta(minutes=1)).pk == lease.pk


def test_annotator_never_gets_a_task_they_have_seen(project):
    make_tasks(project, 2)
    (a,) = make_annotators(1)
    first = next_task(project, a, now=NOW)
    rank(first, a)
    second = next_task(project, a, now=NOW)
    rank(second, a)
    assert second.task_id != first.task_id
    assert next_task(project, a, now=NOW) is None


def test_task_leased_up_to_its_overlap_is_not_offered(project):
    project.overlap = 2
    project.save()
    only = make_task(project)
    a, b, c = make_annotators(3)
    assert next_task(project, a, now=NOW).task_id == only.pk
    assert next_task(project, b, now=NOW).task_id == only.pk
    assert next_task(project, c, now=NOW) is None


def test_expired_lease_returns_its_slot_to_the_pool(project):
    only = make_task(project, overlap=1)
    a, b = make_annotators(2)
    next_task(project, a, now=NOW)
    assert next_task(project, b, now=NOW) is None
    later = NOW + timedelta(minutes=project.lease_minutes, seconds=1)
    assert next_task(project, b, now=later).task_id == only.pk


def test_skip_returns_the_slot_and_counts_no_ranking(project):
    only = make_task(project, overlap=1)
    a, b = make_annotators(2)
    skip_task(next_task(project, a, now=NOW), a, "cannot judge", now=NOW)
    assert RankingTask.objects.get(pk=only.pk).ranking_count == 0
    assert next_task(project, b, now=NOW).task_id == only.pk
    assert next_task(project, a, now=NOW + timedelta(hours=1)) is None


def test_lease_lasts_the_project_lease_length(project):
    make_task(project)
    (a,) = make_annotators(1)
    lease = next_task(project, a, now=NOW)
    assert lease.expires_at - lease.leased_at == timedelta(minutes=30)


def test_paused_annotator_gets_no_task_and_a_reason(project):
    make_task(project)
    (a,) = make_annotators(1)
    AnnotatorProfile.objects.create(
        user=a, is_paused=True, paused_reason="gold below 50%"
    )
    with pytest.raises(AnnotatorPaused, match="gold below 50%"):
        next_task(project, a, now=NOW)
    assert Lease.objects.count() == 0


def test_no_task_left_gives_none(project):
    (a,) = make_annotators(1)
    assert next_task(project, a, now=NOW) is None


@pytest.mark.parametrize(
    ("gold_seen", "seen", "rate", "due"),
    [
        (0, 0, 0.1, False),
        (0, 8, 0.1, False),
        (0, 9, 0.1, True),
        (1, 9, 0.1, False),
        (1, 19, 0.1, True),
        (0, 0, 1.0, True),
        (3, 3, 1.0, True),
        (0, 100, 0.0, False),
        (0, 1, 0.5, True),
        (1, 2, 0.5, False),
    ],
)
def test_gold_is_due_at_the_project_rate(gold_seen, seen, rate, due):
    assert is_gold_due(gold_seen, seen, rate) is due


def test_gold_tasks_are_mixed_in_at_the_rate(project):
    project.gold_rate = 0.5
    project.save()
    regular = make_tasks(project, 3)
    gold = make_tasks(project, 3)
    for task in gold:
        mark_gold(task, [[r] for r in response_ids(task)])
    (a,) = make_annotators(1)
    kinds = []
    for _ in range(6):
        lease = next_task(project, a, now=NOW)
        kinds.append(lease.task.is_gold)
        rank(lease, a)
    assert kinds == [False, True, False, True, False, True]
    assert {t.pk for t in regular + gold} == set(
        Ranking.objects.filter(annotator=a).values_list("task_id", flat=True)
    )


def test_gold_tasks_are_not_capped_by_the_overlap(project):
    project.gold_rate = 1.0
    project.save()
    gold = make_task(project, overlap=1)
    mark_gold(gold, [[r] for r in response_ids(gold)])
    a, b = make_annotators(2)
    rank(next_task(project, a, now=NOW), a)
    assert next_task(project, b, now=NOW).task_id == gold.pk


def _has_open_task_unseen_by(project: Project, user) -> bool:
    return (
        RankingTask.objects.filter(project=project, ranking_count__lt=F("overlap"))
        .exclude(leases__annotator=user)
        .exists()
    )


def _annotate_until_done(
    project_id: int, user, errors: list, barrier: threading.Barrier
):
    try:
        project = Project.objects.get(pk=project_id)
        barrier.wait()
        waits = 0
        while waits < 400:
            lease = next_task(project, user)
            if lease is None:
                # SKIP LOCKED says "nothing free right now": rows locked by others are
                # passed over. Stop only once no open task is left for this user.
                if not _has_open_task_unseen_by(project, user):
                    break
                waits += 1
                time.sleep(0.01)
                continue
            submit_ranking(
                lease, user, RankingSubmission([[h] for h in handles(lease.task)])
            )
    except Exception as exc:  # reported to the main thread, which fails the test
        errors.append(exc)
    finally:
        connection.close()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_annotators_never_exceed_overlap_nor_repeat_nor_lose():
    if connections["default"].vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL): SQLite serialises writers")
    project = Project.objects.create(
        name="race", responses_per_task=2, overlap=3, gold_rate=0
    )
    tasks = make_tasks(project, 40)
    users = make_annotators(50, prefix="racer")
    errors: list = []
    barrier = threading.Barrier(len(users))
    threads = [
        threading.Thread(
            target=_annotate_until_done, args=(project.pk, u, errors, barrier)
        )
        for u in users
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    rankings = list(Ranking.objects.values_list("task_id", "annotator_id"))
    assert len(rankings) == len(set(rankings))
    per_task = {t.pk: 0 for t in tasks}
    for task_id, _ in rankings:
        per_task[task_id] += 1
    assert set(per_task.values()) == {3}
    assert len(rankings) == 120
    stored = dict(RankingTask.objects.values_list("pk", "ranking_count"))
    assert stored == per_task
    assert Lease.objects.filter(status=Lease.Status.SUBMITTED).count() == 120
