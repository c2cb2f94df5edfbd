"""The policy leaderboard: Bradley-Terry fit, cross-policy comparisons, intervals, SVG."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from annotation.leaderboard import (
    build_leaderboard,
    fit_bradley_terry,
    policy_comparisons,
    sft_policy,
)
from annotation.models import AnnotatorProfile, Prompt, Ranking, RankingTask, Response
from inference.models import Policy
from tests.conftest import make_user


def make_task(project, policies: list[Policy], text: str = "Say hi") -> list[Response]:
    """Create a task whose i-th response was written by policies[i]."""
    prompt = Prompt.objects.create(
        project=project, messages=f"{text} {Prompt.objects.count()}"
    )
    task = RankingTask.objects.create(project=project, prompt=prompt, overlap=3)
    return [
        Response.objects.create(
            task=task, policy=p, text=f"{p.name} says hi", position=i
        )
        for i, p in enumerate(policies)
    ]


def rank(user, responses: list[Response], order: list[list[int]], **kwargs) -> Ranking:
    """Store a ranking of the responses by index groups, best first."""
    ids = [[responses[i].pk for i in group] for group in order]
    return Ranking.objects.create(
        task=responses[0].task, annotator=user, order=ids, **kwargs
    )


@pytest.fixture
def sft(db) -> Policy:
    return Policy.objects.create(name="demo-sft", base_path="/models/sft")


@pytest.fixture
def dpo1(sft) -> Policy:
    return Policy.objects.create(name="dpo-r1", base_path="/models/sft", parent=sft)


def test_two_policy_fit_gives_the_log_odds_of_their_record():
    wins = np.array([[0.0, 30.0], [10.0, 0.0]])
    theta = fit_bradley_terry(wins, prior=1e-9)
    assert abs((theta[0] - theta[1]) - math.log(3.0)) < 1e-4
    assert abs(theta.sum()) < 1e-9


def test_fit_recovers_the_strengths_that_generated_the_comparisons():
    rng = np.random.default_rng(0)
    true = np.array([0.0, 1.0, -1.0, 0.5])
    wins = np.zeros((4, 4))
    for _ in range(40000):
        i, j = rng.choice(4, size=2, replace=False)
        p = 1 / (1 + math.exp(-(true[i] - true[j])))
        if rng.random() < p:
            wins[i, j] += 1
        else:
            wins[j, i] += 1
    theta = fit_bradley_terry(wins, prior=1e-6)
    assert np.abs((theta - theta[0]) - true).max() < 0.06


def test_unbeaten_policy_keeps_a_finite_rating():
    theta = fit_bradley_terry(np.array([[0.0, 5.0], [0.0, 0.0]]))
    assert np.isfinite(theta).all()
    assert theta[0] > theta[1]


def test_fit_rejects_a_non_square_matrix():
    with pytest.raises(ValueError, match="square matrix, got shape"):
        fit_bradley_terry(np.zeros((2, 3)))


def test_only_pairs_across_policies_are_comparisons(project, sft, dpo1):
    human = make_user("h1", "annotator")
    responses = make_task(project, [sft, sft, dpo1, dpo1])
    ranking = rank(human, responses, [[2], [0, 1], [3]])
    # 2>0, 2>1 (dpo beats sft twice), 2>3 same policy, 0>3 and 1>3 (sft beats dpo
    # twice); the 0/1 tie gives no pair.
    got = sorted(policy_comparisons(project))
    assert got == sorted(
        [
            (ranking.pk, dpo1.pk, sft.pk),
            (ranking.pk, dpo1.pk, sft.pk),
            (ranking.pk, sft.pk, dpo1.pk),
            (ranking.pk, sft.pk, dpo1.pk),
        ]
    )


def test_skips_and_simulated_rankings_are_not_human_comparisons(project, sft, dpo1):
    human = make_user("h1", "annotator")
    bot = make_user("sim-judge", "annotator")
    AnnotatorProfile.objects.create(user=bot, is_simulated=True, simulator="judge")
    responses = make_task(project, [sft, dpo1])
    Ranking.objects.create(task=responses[0].task, annotator=human, is_skip=True)
    simulated = rank(bot, responses, [[1], [0]])
    assert policy_comparisons(project, source="human") == []
    assert policy_comparisons(project, source="simulated") == [
        (simulated.pk, dpo1.pk, sft.pk)
    ]


def test_unknown_source_is_refused(project):
    with pytest.raises(ValueError, match="source must be one of .* got 'robots'"):
        policy_comparisons(project, source="robots")


def test_sft_policy_is_the_oldest_ancestor_with_responses(project, sft, dpo1):
    base = Policy.objects.create(name="demo-base", base_path="/models/base")
    sft.parent = base
    sft.save()
    dpo2 = Policy.objects.create(name="dpo-r2", base_path="/models/sft", parent=dpo1)
    project.current_policy = dpo2
    project.save()
    make_task(project, [sft, dpo1])
    assert sft_policy(project) == sft


def test_leaderboard_anchors_sft_at_1000_and_ranks_the_better_policy_first(
    project, sft, dpo1
):
    project.current_policy = dpo1
    project.save()
    humans = [make_user(f"h{i}", "annotator") for i in range(3)]
    for n in range(12):
        responses = make_task(project, [sft, dpo1])
        for k, human in enumerate(humans):
            # dpo1 wins 3 of every 4 tasks' rankings
            rank(human, responses, [[1], [0]] if (n + k) % 4 else [[0], [1]])
    board = build_leaderboard(project, bootstrap=100, seed=3)
    assert [r.name for r in board.ratings] == ["dpo-r1", "demo-sft"]
    top, anchor = board.ratings
    assert board.anchor == "demo-sft"
    assert anchor.rating == 1000.0
    assert (top.wins, top.losses) == (27, 9)
    assert top.win_rate == 0.75
    assert top.ci_low < top.rating < top.ci_high
    assert top.ci_low > 1000.0
    assert (board.rankings, board.comparisons) == (36, 36)


def test_bootstrap_is_reproducible_with_the_same_seed(project, sft, dpo1):
    human = make_user("h1", "annotator")
    for n in range(6):
        responses = make_task(project, [sft, dpo1])
        rank(human, responses, [[1], [0]] if n % 3 else [[0], [1]])
    first = build_leaderboard(project, bootstrap=50, seed=7)
    again = build_leaderboard(project, bootstrap=50, seed=7)
    other = build_leaderboard(project, bootstrap=50, seed=8)
    assert first.ratings == again.ratings
    assert [(r.ci_low, r.ci_high) for r in first.ratings] != [
        (r.ci_low, r.ci_high) for r in other.ratings
    ]


def test_stored_win_rates_against_sft_appear_in_the_rows(project, sft, dpo1):
    dpo1.metrics = {"judge_win_rate_vs_sft": 0.8, "rm_win_rate_vs_sft": 0.7}
    dpo1.save()
    rank(make_user("h1", "annotator"), make_task(project, [sft, dpo1]), [[1], [0]])
    row = next(
        r for r in build_leaderboard(project, bootstrap=0).ratings if r.name == "dpo-r1"
    )
    assert (row.judge_win_rate_vs_sft, row.rm_win_rate_vs_sft) == (0.8, 0.7)


def test_empty_project_gives_an_empty_board_and_a_plot_that_says_so(project):
    board = build_leaderboard(project)
    assert board.ratings == []
    assert "No comparisons between policies yet." in board.to_svg()


def test_svg_is_well_formed_and_escapes_policy_names(project, sft):
    evil = Policy.objects.create(name="<script>alert(1)</script>", base_path="/x")
    rank(make_user("h1", "annotator"), make_task(project, [sft, evil]), [[1], [0]])
    svg = build_leaderboard(project, bootstrap=20).to_svg()
    assert "<script>" not in svg
    root = ET.fromstring(svg)
    circles = root.findall("{http://www.w3.org/2000/svg}circle")
    assert len(circles) == 2


def test_bootstrap_resamples_tasks_not_the_rankings_of_one_task(project, sft, dpo1):
    # Five people rank the same two responses and disagree (3 to 2). Their rankings
    # are not independent draws: with one task, every resample of tasks is the
    # same data, so the interval collapses onto the point estimate.
    responses = make_task(project, [sft, dpo1])
    for i, order in enumerate([[[1], [0]]] * 3 + [[[0], [1]]] * 2):
        rank(make_user(f"h{i}", "annotator"), responses, order)
    board = build_leaderboard(project, anchor=sft, bootstrap=50, seed=1)
    dpo_row = next(r for r in board.ratings if r.name == "dpo-r1")
    assert board.rankings == 5
    assert dpo_row.ci_low == dpo_row.rating == dpo_row.ci_high
