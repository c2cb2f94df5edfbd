"""Tests of annotation/gold.py: scoring gold tasks and pausing annotators."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from annotation.assignment import (
    AnnotatorPaused,
    RankingSubmission,
    next_task,
    submit_ranking,
)
from annotation.gold import best_only_order, gold_score, mark_gold, reinstate
from annotation.models import AnnotatorProfile, RankingTask
from tests.annotation.factories import make_annotators, make_task, response_ids


@pytest.mark.parametrize(
    ("order", "gold", "expected"),
    [
        ([[1], [2], [3]], [[1], [2], [3]], 1.0),
        ([[3], [2], [1]], [[1], [2], [3]], 0.0),
        ([[1], [3], [2]], [[1], [2], [3]], 2 / 3),
        ([[1, 2, 3]], [[1], [2], [3]], 0.5),
        ([[1], [3], [2]], [[1], [2, 3]], 1.0),
        ([[2], [1], [3]], [[1], [2, 3]], 0.5),
        ([[1], [2]], [[1, 2]], None),
    ],
)
def test_gold_score_is_the_share_of_known_preferences_kept(order, gold, expected):
    result = gold_score(order, gold)
    assert result == (pytest.approx(expected) if expected is not None else None)


def test_known_best_response_becomes_a_two_group_order():
    assert best_only_order(7, [5, 6, 7]) == [[7], [5, 6]]


def test_mark_gold_rejects_an_incomplete_order(project):
    task = make_task(project, k=3)
    with pytest.raises(ValidationError, match="missing"):
        mark_gold(task, [[response_ids(task)[0]]])
    assert RankingTask.objects.get(pk=task.pk).is_gold is False


def test_mark_gold_rejects_an_order_that_ties_everything(project):
    task = make_task(project, k=2)
    with pytest.raises(ValidationError, match="must prefer at least one"):
        mark_gold(task, [response_ids(task)])


@pytest.fixture
def gold_project(project):
    project.gold_rate = 1.0
    project.gold_min_tasks = 2
    project.gold_threshold = 0.5
    project.save()
    for _ in range(4):
        task = make_task(project, k=2)
        mark_gold(task, [[r] for r in response_ids(task)])
    return project


def _answer(project, user, *, right: bool) -> None:
    lease = next_task(project, user)
    order = [[1], [2]] if right else [[2], [1]]  # handles; gold is in display order
    submit_ranking(lease, user, RankingSubmission(order))


def test_annotator_is_not_paused_before_the_minimum_gold_tasks(gold_project):
    (a,) = make_annotators(1)
    _answer(gold_project, a, right=False)
    assert AnnotatorProfile.objects.get(user=a).is_paused is False


def test_annotator_below_threshold_after_minimum_is_paused_with_a_reason(gold_project):
    (a,) = make_annotators(1)
    _answer(gold_project, a, right=False)
    _answer(gold_project, a, right=False)
    profile = AnnotatorProfile.objects.get(user=a)
    assert profile.is_paused is True
    assert profile.paused_reason == (
        "gold accuracy 0% over 2 gold tasks in project demo is below its threshold of 50%"
    )
    with pytest.raises(AnnotatorPaused, match="gold accuracy 0%"):
        next_task(gold_project, a)


def test_annotator_at_threshold_keeps_working(gold_project):
    (a,) = make_annotators(1)
    _answer(gold_project, a, right=True)
    _answer(gold_project, a, right=False)
    assert AnnotatorProfile.objects.get(user=a).is_paused is False


def test_reinstated_annotator_starts_a_fresh_gold_record(gold_project):
    (a,) = make_annotators(1)
    _answer(gold_project, a, right=False)
    _answer(gold_project, a, right=False)
    reinstate(a)
    _answer(gold_project, a, right=False)
    profile = AnnotatorProfile.objects.get(user=a)
    assert (profile.is_paused, profile.paused_reason) == (False, "")
    assert profile.reinstated_at is not None
