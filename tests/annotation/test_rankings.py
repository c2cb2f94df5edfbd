"""Tests of rankings: the pair rules on the model, and submit/skip in assignment.py."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from annotation import consensus
from annotation.assignment import (
    LateSubmissionRefused,
    RankingSubmission,
    next_task,
    skip_task,
    submit_ranking,
)
from annotation.models import Lease, Ranking, RankingTask
from tests.annotation.factories import handles, make_annotators, make_task, response_ids

NOW = timezone.now()


@pytest.mark.parametrize(
    ("order", "pairs"),
    [
        ([[1], [2]], [(1, 2, 1)]),
        ([[2], [1]], [(2, 1, 1)]),
        ([[1, 2]], []),
        ([[1], [2], [3]], [(1, 2, 1), (1, 3, 2), (2, 3, 1)]),
        ([[1, 2], [3]], [(1, 3, 1), (2, 3, 1)]),
        ([[1], [2, 3]], [(1, 2, 1), (1, 3, 1)]),
        ([[1, 2, 3]], []),
        ([[4], [1, 2], [3]], [(4, 1, 1), (4, 2, 1), (4, 3, 2), (1, 3, 1), (2, 3, 1)]),
    ],
)
def test_ranking_yields_every_pair_of_differing_rank_with_rank_distance(order, pairs):
    assert Ranking(order=order).pairs() == pairs


@pytest.mark.parametrize(
    ("order", "message"),
    [
        ([[1], [2]], "missing from the order: [3]"),
        ([[1], [2], [2]], "ranked more than once: [2]"),
        ([[1], [2], [9]], "unknown responses [9]"),
        (
            [[1], [2], [3], [9]],
            "order ranks more responses than this task's 3 responses",
        ),
        ([[1, 2, 3]] + [[1]] * 2_000, "more responses than this task's 3"),
        ([], "non-empty list of tie groups"),
        ([[1], [], [2, 3]], "non-empty list"),
        ([["1"], [2], [3]], "must be named by integers"),
        ("1,2,3", "non-empty list of tie groups"),
    ],
)
def test_validate_order_names_the_problem(order, message):
    with pytest.raises(
        ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")
    ):
        Ranking.validate_order(order, {1, 2, 3})


@pytest.fixture
def leased(project):
    """A task of three responses leased to one annotator."""
    make_task(project, k=3)
    (user,) = make_annotators(1)
    return next_task(project, user, now=NOW), user


@pytest.mark.parametrize("kind", ["missing", "repeated", "unknown"])
def test_bad_order_stores_nothing(leased, kind):
    lease, user = leased
    order = {
        "missing": [[1], [2]],
        "repeated": [[1], [2], [2, 3]],
        "unknown": [[1], [2], [3], [4]],
    }[kind]
    with pytest.raises(ValidationError):
        submit_ranking(lease, user, RankingSubmission(order), now=NOW)
    assert Ranking.objects.count() == 0
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.ACTIVE
    assert RankingTask.objects.get(pk=lease.task_id).ranking_count == 0


def test_submission_stores_everything_the_annotator_said(leased, project):
    project.aspects = ["helpfulness"]
    project.save()
    lease, user = leased
    # The annotator names responses by handle; the ranking stores their ids.
    a, b, c = response_ids(lease.task)
    ranking = submit_ranking(
        lease,
        user,
        RankingSubmission(
            [[2], [1, 3]],
            all_bad=True,
            unsafe=[3],
            rationale=" b answers ",
            rewrite="a better answer",
            aspect_ratings={"1": {"helpfulness": 3}},
            active_seconds=12.5,
        ),
        now=NOW + timedelta(seconds=40),
    )
    stored = Ranking.objects.get(pk=ranking.pk)
    assert stored.order == [[b], [a, c]]
    assert stored.all_bad is True
    assert stored.unsafe_response_ids == [c]
    assert stored.rationale == "b answers"
    assert stored.rewrite == "a better answer"
    assert stored.aspect_ratings == {str(a): {"helpfulness": 3}}
    assert stored.active_seconds == 12.5
    assert stored.server_seconds == 40.0
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.SUBMITTED


def test_same_submission_twice_stores_one_ranking(leased):
    lease, user = leased
    order = [[h] for h in handles(lease.task)]
    first = submit_ranking(lease, user, RankingSubmission(order), now=NOW)
    second = submit_ranking(lease, user, RankingSubmission(order), now=NOW)
    assert second.pk == first.pk
    assert Ranking.objects.count() == 1
    assert RankingTask.objects.get(pk=lease.task_id).ranking_count == 1


def test_submission_updates_count_consensus_and_agreement(project):
    task = make_task(project, k=3)
    a, b, c = response_ids(task)
    users = make_annotators(2)
    for user, order in zip(users, ([[1], [2], [3]], [[1], [3], [2]]), strict=False):
        submit_ranking(
            next_task(project, user, now=NOW), user, RankingSubmission(order), now=NOW
        )
    task.refresh_from_db()
    assert task.ranking_count == 2
    assert task.consensus_order == [[a], sorted([b, c])]
    assert task.agreement == pytest.approx(2 / 3)


def test_ranking_and_figures_commit_together_or_not_at_all(leased, monkeypatch):
    lease, user = leased

    def broken(task):
        raise RuntimeError("consensus failed")

    monkeypatch.setattr(consensus, "update_task_figures", broken)
    with pytest.raises(RuntimeError):
        submit_ranking(
            lease,
            user,
            RankingSubmission([[h] for h in handles(lease.task)]),
            now=NOW,
        )
    assert Ranking.objects.count() == 0
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.ACTIVE


def test_late_submission_is_accepted_while_overlap_is_not_full(leased):
    lease, user = leased
    late = NOW + timedelta(hours=2)
    ranking = submit_ranking(
        lease,
        user,
        RankingSubmission([[h] for h in handles(lease.task)]),
        now=late,
    )
    assert ranking.pk is not None
    assert RankingTask.objects.get(pk=lease.task_id).ranking_count == 1


def test_late_submission_is_refused_once_others_filled_the_overlap(project):
    task = make_task(project, k=2, overlap=1)
    slow, fast = make_annotators(2)
    lease = next_task(project, slow, now=NOW)
    later = NOW + timedelta(hours=1)
    submit_ranking(
        next_task(project, fast, now=later),
        fast,
        RankingSubmission([[h] for h in handles(task)]),
        now=later,
    )
    with pytest.raises(LateSubmissionRefused, match="expired"):
        submit_ranking(
            lease, slow, RankingSubmission([[h] for h in handles(task)]), now=later
        )
    assert Ranking.objects.filter(annotator=slow).count() == 0


def test_late_submission_is_refused_while_others_hold_the_remaining_slots(project):
    task = make_task(project, k=2, overlap=1)
    slow, fast = make_annotators(2)
    lease = next_task(project, slow, now=NOW)
    later = NOW + timedelta(hours=1)
    next_task(project, fast, now=later)
    with pytest.raises(LateSubmissionRefused):
        submit_ranking(
            lease, slow, RankingSubmission([[h] for h in handles(task)]), now=later
        )


def test_someone_elses_lease_cannot_be_submitted(leased):
    lease, _ = leased
    (other,) = make_annotators(1, prefix="other")
    with pytest.raises(PermissionDenied):
        submit_ranking(
            lease,
            other,
            RankingSubmission([[h] for h in handles(lease.task)]),
            now=NOW,
        )


def test_unsafe_flag_on_unknown_response_is_rejected(leased):
    lease, user = leased
    with pytest.raises(ValidationError, match="unknown response 0"):
        submit_ranking(
            lease,
            user,
            RankingSubmission([[h] for h in handles(lease.task)], unsafe=[0]),
        )


@pytest.mark.parametrize("value", [0, 8, "5", True])
def test_aspect_rating_outside_one_to_seven_is_rejected(leased, project, value):
    project.aspects = ["honesty"]
    project.save()
    lease, user = leased
    with pytest.raises(ValidationError, match="integer from 1 to 7"):
        submit_ranking(
            lease,
            user,
            RankingSubmission(
                [[h] for h in handles(lease.task)],
                aspect_ratings={1: {"honesty": value}},
            ),
        )


def test_rating_an_aspect_the_project_lacks_is_rejected(leased):
    lease, user = leased
    with pytest.raises(ValidationError, match="unknown aspect 'wit'"):
        submit_ranking(
            lease,
            user,
            RankingSubmission(
                [[h] for h in handles(lease.task)],
                aspect_ratings={1: {"wit": 4}},
            ),
        )


def test_rationale_is_required_when_the_project_says_so(leased, project):
    project.require_rationale = True
    project.save()
    lease, user = leased
    with pytest.raises(ValidationError, match="requires a rationale"):
        submit_ranking(
            lease,
            user,
            RankingSubmission([[h] for h in handles(lease.task)], rationale="  "),
        )
    assert Ranking.objects.count() == 0


def test_skip_needs_a_reason(leased):
    lease, user = leased
    with pytest.raises(ValidationError, match="needs a reason"):
        skip_task(lease, user, " ")
    assert Ranking.objects.count() == 0


def test_skip_is_stored_with_its_reason(leased):
    lease, user = leased
    ranking = skip_task(lease, user, "not English", now=NOW)
    assert (ranking.is_skip, ranking.skip_reason, ranking.order) == (
        True,
        "not English",
        [],
    )
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.SKIPPED
