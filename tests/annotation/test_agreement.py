"""Tests of annotation/agreement.py."""

from __future__ import annotations

from datetime import UTC

import pytest

from annotation.agreement import (
    human_strengths_by_task,
    kendall_tau_b,
    krippendorff_alpha,
    pairwise_agreement,
    signed_strength,
    strength_alpha,
    summarise,
)
from annotation.assignment import RankingSubmission, next_task, submit_ranking
from annotation.dashboard import dashboard
from annotation.models import AnnotatorProfile
from tests.annotation.factories import (
    handles,
    make_annotators,
    make_task,
    make_tasks,
)


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


def _random_order(rng, ids: list[int]) -> list[list[int]]:
    """Return the ids in a random order of random tie groups, over a random subset."""
    chosen = rng.sample(ids, rng.randint(1, len(ids)))
    groups: list[list[int]] = []
    for rid in chosen:
        if groups and rng.random() < 0.3:
            groups[-1].append(rid)
        else:
            groups.append([rid])
    return groups


def test_kendall_tau_b_matches_scipy_on_random_orders_with_ties():
    """The hand-written tau-b (scipy's per call overhead was 0.5 ms, most of the
    project dashboard's 7.7 s at 30,000 rankings) against scipy's, as the oracle."""
    import random

    from scipy.stats import kendalltau

    rng = random.Random(0)
    compared = 0
    for _ in range(2000):
        a = _random_order(rng, list(range(8)))
        b = _random_order(rng, list(range(8)))
        ours = kendall_tau_b(a, b)
        common = sorted({r for g in a for r in g} & {r for g in b for r in g})
        rank_a = {r: i for i, g in enumerate(a) for r in g}
        rank_b = {r: i for i, g in enumerate(b) for r in g}
        x, y = [rank_a[r] for r in common], [rank_b[r] for r in common]
        if len(common) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
            assert ours is None
            continue
        assert ours == pytest.approx(kendalltau(x, y, variant="b").statistic, abs=1e-12)
        compared += 1
    assert compared > 1000


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
    # A submission names responses by their handles (1..K), not their ids: the two
    # were the same only where the database's ids started at 1 (a fresh SQLite, or
    # the first test of a PostgreSQL run).
    a, b, c = handles(task)
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


# Pairwise judgements with a strength: agreement on the signed strength.


@pytest.mark.parametrize(
    ("order", "strength", "expected"),
    [([[4], [9]], 3, 3), ([[9], [4]], 2, -2), ([[4, 9]], 0, 0)],
)
def test_signed_strength_orients_every_judgement_by_the_lower_response_id(
    order, strength, expected
):
    assert signed_strength(order, strength) == expected


def _interval_alpha_by_hand(units: list[tuple[int, int]]) -> float:
    """Krippendorff's alpha (interval) of two coders with no missing value."""
    values = [v for unit in units for v in unit]
    n = len(values)
    observed = sum(2 * (a - b) ** 2 for a, b in units) / n
    expected = sum((x - y) ** 2 for x in values for y in values) / (n * (n - 1))
    return 1 - observed / expected


def test_strength_alpha_is_krippendorffs_interval_alpha():
    units = [(3, 3), (-2, -2), (3, 2), (1, -1), (0, 1)]
    by_task = {t: {10: a, 11: b} for t, (a, b) in enumerate(units)}
    assert strength_alpha(by_task) == pytest.approx(_interval_alpha_by_hand(units))


def test_a_near_miss_in_strength_disagrees_less_than_the_other_direction():
    agreed = {1: {10: 3, 11: 3}, 2: {10: -2, 11: -2}, 3: {10: 1, 11: 1}}
    near = {**agreed, 4: {10: 3, 11: 2}}
    opposite = {**agreed, 4: {10: 3, 11: -3}}
    assert strength_alpha(agreed) == 1.0
    assert 0 < strength_alpha(opposite) < strength_alpha(near) < 1


def test_strength_alpha_is_undefined_without_two_judgements_of_a_task():
    assert strength_alpha({1: {10: 3}, 2: {11: -1}}) is None


def test_strengths_leave_out_simulated_annotators_and_plain_rankings():
    rows = [
        (1, 10, [[5], [6]], 2, False),
        (1, 11, [[6], [5]], 1, None),
        (1, 12, [[6], [5]], 3, True),
        (2, 10, [[7], [8], [9]], None, False),
    ]
    assert human_strengths_by_task(rows) == {1: {10: 2, 11: -1}}


def test_dashboard_shows_strength_agreement_of_a_pairwise_project(project):
    project.mode, project.responses_per_task = "pairwise", 2
    project.save()
    make_tasks(project, 2, k=2)
    one, two = make_annotators(2)
    for user, strengths in ((one, (3, 1)), (two, (2, 1))):
        for strength in strengths:  # next_task leases the first task, then the second
            submit_ranking(
                next_task(project, user),
                user,
                RankingSubmission([[1], [2]], strength=strength),
            )
    figures = dashboard(project)["agreement"]
    assert figures["strength_alpha"] == pytest.approx(
        _interval_alpha_by_hand([(3, 2), (1, 1)])
    )
    assert figures["pairwise_agreement"] == 1.0


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
