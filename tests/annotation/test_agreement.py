"""Tests of annotation/agreement.py."""
from __future__ import annotations

import pytest

from annotation.agreement import (
    kendall_tau_b,
    krippendorff_alpha,
    mean_kendall_tau,
    pairwise_agreement,
    project_agreement,
    summarise,
)
from annotation.assignment import next_task, submit_ranking
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
    assert pairwise_agreement(orders) == (pytest.approx(expected) if expected is not None else None)


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


def test_mean_kendall_tau_averages_every_pair():
    orders = [[[1], [2], [3]], [[1], [2], [3]], [[3], [2], [1]]]
    assert mean_kendall_tau(orders) == pytest.approx((1 - 1 - 1) / 3)


def test_krippendorff_alpha_is_one_for_identical_rankings():
    by_task = {1: {10: [[1], [2], [3]], 11: [[1], [2], [3]]}, 2: {10: [[5], [4]], 11: [[5], [4]]}}
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


def test_project_agreement_leaves_out_simulated_annotators(project):
    task = make_task(project, k=3)
    a, b, c = response_ids(task)
    human1, human2, robot = make_annotators(3)
    AnnotatorProfile.objects.create(user=robot, is_simulated=True, simulator="judge")
    for user, order in ((human1, [[a], [b], [c]]), (human2, [[a], [b], [c]]), (robot, [[c], [b], [a]])):
        submit_ranking(next_task(project, user), user, order)
    figures = project_agreement(project)
    assert figures["pairwise_agreement"] == 1.0
    task.refresh_from_db()
    assert task.agreement == 1.0
