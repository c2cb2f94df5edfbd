"""Tests of annotation/agreement.py."""

from __future__ import annotations

from datetime import UTC

import pytest

from annotation.agreement import (
    kendall_tau_b,
    krippendorff_alpha,
    pairwise_agreement,
    summarise,
)
from annotation.assignment import RankingSubmission, next_task, submit_ranking
from annotation.dashboard import dashboard
from annotation.models import AnnotatorProfile
from tests.annotation.factories import make_annotators, make_task, response_ids


@pytest.mark.parametrize(
    ("orders", "expected"),
    [
        ([[[1], [2], [3]], [[1], [2], [3]]], 1.0),
        ([[[1], [2], [3]], [[3], [2], [1]]], 0.0),
        ([[[1], [2], [3]], [[1], [3], [2]]], 2 / 3),
        ([[[1, 2], [3]], [[1, 2], [3]]], 1.0),
        ([[[1, 2], [3]], [[1], [2], [3]]], 2 / 3),
        ([[[1], [2]], [[1], [2]], [[2], [1]]], 1 / 3),
        ([[[1], [2]]], None),
    ],
)
def test_pairwise_agreement_counts_matching_judgements(orders, expected):
    assert pairwise_agreement(orders) == (
        pytest.approx(expected) if expected is not None else None
    )


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ([[1], [2], [3]], [[1], [2], [3]], 1.0),
        ([[1], [2], [3]], [[3], [2], [1]], -1.0),
        ([[1], [2], [3], [4]], [[2], [1], [3], [4]], 2 / 3),
        ([[1, 2], [3]], [[1], [2], [3]], 0.8164965809277261),
        ([[1, 2, 3]], [[1], [2], [3]], None),
    ],
)
def test_kendall_tau_b_handles_ties(a, b, expected):
    result = kendall_tau_b(a, b)
    assert result == (pytest.approx(expected) if expected is not None else None)


def test_krippendorff_alpha_is_one_for_identical_rankings():
    by_task = {
        1: {10: [[1], [2], [3]], 11: [[1], [2], [3]]},
        2: {10: [[5], [4]], 11: [[5], [4]]},
    }
    assert krippendorff_alpha(by_task) == pytest.approx(1.0)


def test_krippendorff_alpha_is_negative_for_reversed_rankings():
    by_task = {1: {10: [[1], [2], [3]], 11: [[3], [2], [1]]}}
    assert krippendorff_alpha(by_task) < 0


def test_krippendorff_alpha_is_undefined_without_two_raters_on_a_unit():
    assert krippendorff_alpha({1: {10: [[1], [2]]}}) is None


def test_summary_counts_only_tasks_with_two_rankings():
    by_task = {1: {10: [[1], [2]], 11: [[1], [2]]}, 2: {10: [[3], [4]]}}
    summary = summarise(by_task)
    assert summary["tasks"] == 1
    assert summary["pairwise_agreement"] == 1.0
    assert summary["kendall_tau_b"] == pytest.approx(1.0)


def test_dashboard_agreement_leaves_out_simulated_annotators(project):
    task = make_task(project, k=3)
    a, b, c = response_ids(task)
    human1, human2, robot = make_annotators(3)
    AnnotatorProfile.objects.create(user=robot, is_simulated=True, simulator="judge")
    for user, order in (
        (human1, [[a], [b], [c]]),
        (human2, [[a], [b], [c]]),
        (robot, [[c], [b], [a]]),
    ):
        submit_ranking(next_task(project, user), user, RankingSubmission(order))
    figures = dashboard(project)["agreement"]
    assert figures["pairwise_agreement"] == 1.0
    task.refresh_from_db()
    assert task.agreement == 1.0


# Per-annotator quality (annotation/quality.py) is computed from plain answer rows.


def _row(
    user: int,
    task: int,
    order,
    *,
    skip=False,
    gold=None,
    seconds=10.0,
    active=None,
    simulated=None,
):
    from datetime import datetime

    return {
        "annotator_id": user,
        "annotator__username": f"u{user}",
        "annotator__annotator_profile__is_simulated": simulated,
        "annotator__annotator_profile__is_paused": None,
        "task_id": task,
        "task__is_gold": gold is not None,
        "task__gold_order": gold,
        "order": [] if skip else order,
        "is_skip": skip,
        "server_seconds": seconds,
        "active_seconds": active,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }


def test_annotator_stats_count_rankings_skips_and_median_time():
    from annotation.quality import annotator_stats

    rows = [
        _row(1, 10, [[1], [2]], seconds=4.0),
        _row(1, 11, [[3], [4]], seconds=8.0, active=6.0),
        _row(1, 12, None, skip=True, seconds=30.0),
    ]
    (stats,) = annotator_stats(rows)
    assert (stats.rankings, stats.skips) == (2, 1)
    assert stats.skip_rate == pytest.approx(1 / 3)
    assert stats.median_seconds == 6.0  # active time where the page reported it


def test_consensus_agreement_leaves_the_annotator_out():
    from annotation.quality import annotator_stats

    rows = [
        _row(1, 10, [[1], [2], [3]]),
        _row(2, 10, [[1], [2], [3]]),
        _row(3, 10, [[3], [2], [1]]),
    ]
    by_user = {s.user_id: s for s in annotator_stats(rows)}
    # Others of user 3 agree on 1 > 2 > 3: user 3 reverses all three pairs.
    assert by_user[3].consensus_agreement == 0.0
    # Others of user 1: Borda of [1,2,3] and [3,2,1] ties everything: no pair agrees.
    assert by_user[1].consensus_agreement == 0.0


def test_gold_accuracy_and_reliability_of_an_annotator():
    from annotation.quality import annotator_stats

    rows = [
        _row(1, 20, [[1], [2]], gold=[[1], [2]]),
        _row(1, 21, [[4], [3]], gold=[[3], [4]]),
    ]
    (stats,) = annotator_stats(rows)
    assert (stats.gold_tasks, stats.gold_accuracy) == (2, 0.5)
    assert stats.consensus_agreement is None
    # One of two gold pairs kept, plus one agreeing and one disagreeing pseudo-pair.
    assert stats.reliability == pytest.approx((1 + 1) / (2 + 2))


def test_annotator_with_no_evidence_has_reliability_one_half():
    from annotation.quality import annotator_stats

    (stats,) = annotator_stats([_row(1, 10, [[1], [2]])])
    assert stats.reliability == 0.5


def test_simulated_annotators_are_marked_in_the_stats():
    from annotation.quality import annotator_stats

    (stats,) = annotator_stats([_row(1, 10, [[1], [2]], simulated=True)])
    assert stats.is_simulated is True


def test_krippendorff_alpha_gives_tied_responses_their_average_rank():
    # A tie takes the mean of the places it spans (1.5 here), so the response
    # below it keeps rank 3; dense ranks would move it up to 2.
    import krippendorff
    import numpy as np

    tied = [[1], [2, 3], [4]]
    strict = [[1], [2], [3], [4]]
    expected = krippendorff.alpha(
        reliability_data=np.array([[0, 1.5, 1.5, 3], [0, 1, 2, 3]], dtype=float),
        level_of_measurement="ordinal",
    )
    assert krippendorff_alpha({1: {10: tied, 11: strict}}) == pytest.approx(expected)
