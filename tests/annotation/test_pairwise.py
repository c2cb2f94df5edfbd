"""Tests of pairwise projects: A/B judgements with a strength, stored as rankings.

The rules live on the models (`Project.clean`, `Ranking.validate_strength`), the
submission in annotation/assignment.py, the margin in annotation/snapshots.py.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from annotation.assignment import RankingSubmission, next_task, submit_ranking
from annotation.export import export_snapshot
from annotation.models import (
    Membership,
    Project,
    Ranking,
    SnapshotPair,
    clean_strength_labels,
)
from annotation.revisions import revise_ranking
from annotation.snapshots import freeze_snapshot
from tests.annotation.data_factories import annotators, ids, make_task, rank
from tests.conftest import login
from training.reward import preference_rows

pytestmark = pytest.mark.django_db

NOW = timezone.now()


@pytest.fixture
def pairwise(project) -> Project:
    """The demo project as a pairwise one: 2 responses, the default 3-level scale."""
    project.mode = Project.Mode.PAIRWISE
    project.responses_per_task = 2
    project.save()
    return project


def ab_task(project: Project, prompt: str = "Say hi."):
    return make_task(project, prompt, ("Hello!", "hi"))


def submit(project: Project, user, order_positions: list, strength) -> Ranking:
    """Lease the user's next task and submit an order given by display positions
    (0-based; the annotator's handles are 1-based)."""
    lease = next_task(project, user, now=NOW)
    order = [[p + 1 for p in group] for group in order_positions]
    return submit_ranking(
        lease, user, RankingSubmission(order, strength=strength), now=NOW
    )


def test_pairwise_project_needs_two_responses_per_task(project):
    project.mode = Project.Mode.PAIRWISE
    with pytest.raises(ValidationError, match="set responses per task to 2"):
        project.clean()


def test_strength_scale_runs_from_a_strongest_through_the_middle_to_b(pairwise):
    assert pairwise.strength_scale() == [
        ("A", "much better", 3),
        ("A", "better", 2),
        ("A", "slightly better", 1),
        ("", "about the same", 0),
        ("B", "slightly better", 1),
        ("B", "better", 2),
        ("B", "much better", 3),
    ]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([], "1 to 5 levels per side, got 0"),
        (["a", "b", "c", "d", "e", "f"], "1 to 5 levels per side, got 6"),
        (["better", " "], "1 to 40 characters"),
        (["x" * 41], "1 to 40 characters"),
        (["better", "better"], "strength labels repeat"),
        ("better", "must be a list of texts"),
    ],
)
def test_bad_strength_scales_are_refused(labels, message):
    with pytest.raises(ValidationError, match=message):
        clean_strength_labels(labels)


def test_submission_stores_the_order_and_its_strength(pairwise):
    task = ab_task(pairwise)
    (a,) = annotators(1)
    ranking = submit(pairwise, a, [[1], [0]], 3)
    ranking.refresh_from_db()
    b_id, a_id = ids(task)[1], ids(task)[0]
    assert (ranking.order, ranking.strength) == ([[b_id], [a_id]], 3)


def test_about_the_same_is_a_tie_with_strength_zero(pairwise):
    task = ab_task(pairwise)
    (a,) = annotators(1)
    ranking = submit(pairwise, a, [[0, 1]], 0)
    assert (ranking.order, ranking.strength) == ([ids(task)], 0)


@pytest.mark.parametrize(
    ("order", "strength", "message"),
    [
        ([[0], [1]], None, "needs a strength from 0 .about the same. to 3"),
        ([[0], [1]], 4, "needs a strength from 0 .* to 3 .much better., got 4"),
        ([[0], [1]], True, "got True"),
        ([[0], [1]], 0, "strength 0 means about the same"),
        ([[0, 1]], 2, "strength 0 means about the same"),
    ],
)
def test_bad_strengths_are_refused_and_nothing_is_stored(
    pairwise, order, strength, message
):
    ab_task(pairwise)
    (a,) = annotators(1)
    with pytest.raises(ValidationError, match=message):
        submit(pairwise, a, order, strength)
    assert Ranking.objects.count() == 0


def test_a_ranking_project_refuses_a_strength(project):
    make_task(project)
    (a,) = annotators(1)
    with pytest.raises(ValidationError, match="only for pairwise projects"):
        submit(project, a, [[0], [1], [2], [3]], 1)


def test_a_revision_takes_a_new_strength_or_keeps_the_old_one(pairwise):
    task = ab_task(pairwise)
    (a,) = annotators(1)
    first = submit(pairwise, a, [[0], [1]], 1)
    rids = ids(task)
    later = NOW + timedelta(minutes=1)
    second = revise_ranking(first, a, [[2], [1]], now=later)
    assert (second.order, second.strength) == ([[rids[1]], [rids[0]]], 1)
    third = revise_ranking(second, a, [[1, 2]], strength=0, now=later)
    assert (third.order, third.strength) == ([rids], 0)
    with pytest.raises(ValidationError, match="strength 0 means about the same"):
        revise_ranking(third, a, [[1], [2]], now=later)


def test_snapshot_margin_is_the_strength(pairwise):
    strong, slight, same = (ab_task(pairwise, f"Prompt {i}") for i in range(3))
    (a,) = annotators(1)
    rank(strong, a, [[1], [0]], strength=3)
    rank(slight, a, [[0], [1]], strength=1)
    rank(same, a, [[0, 1]], strength=0)
    snapshot = freeze_snapshot(pairwise, "s", tie_rule="keep")
    pairs = {
        p.task_id: (p.chosen_id, p.rejected_id, p.margin)
        for p in SnapshotPair.objects.filter(snapshot=snapshot)
    }
    assert pairs == {
        strong.pk: (ids(strong)[1], ids(strong)[0], 3.0),
        slight.pk: (ids(slight)[0], ids(slight)[1], 1.0),
        same.pk: (*ids(same), 0.0),
    }
    assert snapshot.stats["margins"] == {"0": 1, "1": 1, "3": 1}


def test_a_consensus_pair_has_the_mean_strength_of_the_votes_agreeing_with_it(
    pairwise,
):
    task = ab_task(pairwise)
    one, two, three = annotators(3)
    rank(task, one, [[0], [1]], strength=3)
    rank(task, two, [[0], [1]], strength=2)
    rank(task, three, [[1], [0]], strength=1)
    task.consensus_order = [[ids(task)[0]], [ids(task)[1]]]
    task.save()
    snapshot = freeze_snapshot(pairwise, "s", filter={"votes": "consensus"})
    pair = SnapshotPair.objects.get(snapshot=snapshot)
    assert (pair.chosen_id, pair.margin) == (ids(task)[0], 2.5)


def test_export_margin_column_carries_the_strength_to_the_reward_stage(
    pairwise, tmp_path
):
    (a,) = annotators(1)
    rank(ab_task(pairwise, "Prompt 0"), a, [[1], [0]], strength=2)
    rank(ab_task(pairwise, "Prompt 1"), a, [[0], [1]], strength=1)
    snapshot = freeze_snapshot(pairwise, "s")
    path = tmp_path / "pairs.jsonl"
    export_snapshot(snapshot, path, fmt="trl", style="standard")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["chosen"], r["rejected"], r["margin"]) for r in rows] == [
        ("hi", "Hello!", 2.0),
        ("Hello!", "hi", 1.0),
    ]
    assert [r["margin"] for r in preference_rows(path, with_margin=True)] == [2.0, 1.0]


def test_simulated_annotators_give_the_weakest_level(pairwise):
    from annotation.simulated import annotate, simulated_user

    class PrefersTheShorter:
        simulator = "shorter"

        def decide(self, prompt_messages, responses, *, key):
            return [[1], [0]] if len(responses[1]) < len(responses[0]) else [[0], [1]]

    ab_task(pairwise)
    user = simulated_user("sim-short", "shorter")
    annotate(pairwise, user, PrefersTheShorter(), now=NOW)
    assert Ranking.objects.get().strength == 1


def _settings_fields(**changes) -> dict:
    return {
        "title": "Demo",
        "responses_per_task": 2,
        "overlap": 3,
        "lease_minutes": 30,
        "gold_rate": 0.1,
        "gold_threshold": 0.5,
        "gold_min_tasks": 5,
        "revision_minutes": 10,
        "mode": "pairwise",
        "strength_labels": "negligibly better, slightly better, better, "
        "significantly better",
        **changes,
    }


def test_settings_page_sets_the_mode_and_the_scale(project, admin_user):
    url = reverse("annotation:settings", args=[project.name])
    assert login(admin_user).post(url, _settings_fields()).status_code == 303
    project.refresh_from_db()
    assert (project.mode, project.strength_labels) == (
        "pairwise",
        ["negligibly better", "slightly better", "better", "significantly better"],
    )


def test_settings_page_refuses_pairwise_with_four_responses(project, admin_user):
    url = reverse("annotation:settings", args=[project.name])
    answer = login(admin_user).post(url, _settings_fields(responses_per_task=4))
    assert answer.status_code == 400
    assert "set responses per task to 2" in answer.content.decode()
    project.refresh_from_db()
    assert project.mode == "ranking"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"mode": "ranking"}, "the mode cannot change now"),
        ({"strength_labels": "better, much better"}, "keep 3 of them"),
    ],
)
def test_settings_page_keeps_the_shape_of_a_project_with_tasks(
    pairwise, admin_user, changes, message
):
    ab_task(pairwise)
    url = reverse("annotation:settings", args=[pairwise.name])
    answer = login(admin_user).post(
        url, _settings_fields(**{"strength_labels": "a bit, clearly, far", **changes})
    )
    assert answer.status_code == 400
    assert message in answer.content.decode()


def test_settings_page_renames_the_levels_of_a_project_with_tasks(pairwise, admin_user):
    ab_task(pairwise)
    url = reverse("annotation:settings", args=[pairwise.name])
    fields = _settings_fields(strength_labels="a bit, clearly, far")
    assert login(admin_user).post(url, fields).status_code == 303
    pairwise.refresh_from_db()
    assert pairwise.strength_labels == ["a bit", "clearly", "far"]


def test_workspace_shows_a_and_b_and_the_scale_from_a_to_b(pairwise, annotator):
    ab_task(pairwise)
    client = login(annotator)
    client.post(reverse("annotation:annotate", args=[pairwise.name]))
    body = client.get(reverse("annotation:annotate", args=[pairwise.name])).content
    body = body.decode()
    assert "Response A" in body and "Response B" in body
    points = [
        "A much better",
        "A better",
        "A slightly better",
        "About the same",
        "B slightly better",
        "B better",
        "B much better",
    ]
    positions = [body.index(f"<span>{p}</span>") for p in points]
    assert positions == sorted(positions)
    assert 'name="preference" value="-3"' in body
    assert 'id="ranked"' not in body  # no K-wise ranking on this page


@pytest.mark.parametrize(
    ("preference", "order_positions", "strength"),
    [("-3", [[0], [1]], 3), ("2", [[1], [0]], 2), ("0", [[0, 1]], 0)],
)
def test_a_point_on_the_scale_posts_the_order_and_strength(
    pairwise, annotator, preference, order_positions, strength
):
    task = ab_task(pairwise)
    client = login(annotator)
    client.post(reverse("annotation:annotate", args=[pairwise.name]))
    lease = next_task(pairwise, annotator)
    answer = client.post(
        reverse("annotation:submit", args=[pairwise.name]),
        {"lease": lease.pk, "preference": preference, "all_bad": "on"},
    )
    assert answer.status_code == 303
    rids = ids(task)
    ranking = Ranking.objects.get()
    assert (ranking.order, ranking.strength, ranking.all_bad) == (
        [[rids[p] for p in group] for group in order_positions],
        strength,
        True,
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "choose how the two responses compare"),
        ({"preference": "4"}, "needs a strength from 0 (about the same) to 3"),
        ({"preference": "9"}, "less than or equal to 5"),
    ],
)
def test_a_judgement_without_a_point_within_the_scale_is_refused(
    pairwise, annotator, fields, message
):
    ab_task(pairwise)
    client = login(annotator)
    client.post(reverse("annotation:annotate", args=[pairwise.name]))
    lease = next_task(pairwise, annotator)
    answer = client.post(
        reverse("annotation:submit", args=[pairwise.name]),
        {"lease": lease.pk, **fields},
    )
    assert answer.status_code == 400
    assert message in answer.content.decode()
    assert Ranking.objects.count() == 0


def test_review_page_shows_each_judgements_strength(pairwise, researcher):
    task = ab_task(pairwise)
    one, two = annotators(2)
    rank(task, one, [[1], [0]], strength=3)
    rank(task, two, [[0, 1]], strength=0)
    url = reverse("annotation:review_task", args=[pairwise.name, task.pk])
    body = " ".join(login(researcher).get(url).content.decode().split())
    assert '2 &gt; 1 <span class="muted strength">(strength 3)</span>' in body
    assert "(strength 0)" in body


def test_revise_page_shows_the_current_point_and_stores_a_new_one(pairwise):
    task = ab_task(pairwise)
    (a,) = annotators(1)
    Membership.objects.create(project=pairwise, user=a)
    first = submit(pairwise, a, [[1], [0]], 2)
    url = reverse("annotation:revise", args=[pairwise.name, first.pk])
    client = login(a)
    page = client.get(url).content.decode()
    assert 'value="2" checked' in page and "<span>B better</span>" in page
    answer = client.post(url, {"preference": "-1"})
    assert answer.status_code == 302
    revised = Ranking.objects.get(task=task, annotator=a)
    assert (revised.order, revised.strength) == ([[r] for r in ids(task)], 1)
