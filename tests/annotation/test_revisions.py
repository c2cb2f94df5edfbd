"""Tests of annotation.revisions and the annotator's history pages."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from annotation.assignment import (
    RankingSubmission,
    next_task,
    skip_task,
    submit_ranking,
)
from annotation.consensus import adjudicate
from annotation.dashboard import dashboard
from annotation.data_manager import task_history
from annotation.gold import gold_record, mark_gold
from annotation.leaderboard import policy_comparisons
from annotation.membership import add_member
from annotation.models import Project, Ranking, RankingTask, SnapshotPair
from annotation.quality import ranking_rows
from annotation.revisions import RevisionRefused, revisability, revise_ranking
from annotation.snapshots import freeze_snapshot
from tests.annotation.factories import handles, make_annotators, make_task, response_ids
from tests.conftest import login

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(db):
    """A two-response task ranked [a > b] by two annotators through the hot path."""
    project = Project.objects.create(
        name="rev", responses_per_task=2, overlap=3, gold_rate=0
    )
    task = make_task(project)
    users = make_annotators(2)
    for user in users:
        add_member(user, project)
    a, b = response_ids(task)
    rankings = []
    for user in users:
        lease = next_task(project, user)
        rankings.append(submit_ranking(lease, user, RankingSubmission([[1], [2]])))
    task.refresh_from_db()
    return project, task, users, rankings, (a, b)


def test_revision_is_a_new_version_and_the_old_stays_for_audit(setup):
    project, task, users, (first, _), (a, b) = setup
    revision = revise_ranking(first, users[0], [[2], [1]])
    first.refresh_from_db()
    assert (first.is_current, revision.is_current) == (False, True)
    assert revision.supersedes_id == first.pk and first.superseded_by == revision
    assert Ranking.versions.filter(task=task).count() == 3
    assert list(task.rankings.values_list("pk", flat=True)) == [
        setup[3][1].pk,
        revision.pk,
    ]


def test_revision_leaves_the_ranking_count_and_updates_the_consensus(setup):
    project, task, users, (first, second), (a, b) = setup
    assert task.consensus_order == [[a], [b]] and task.agreement == 1.0
    revise_ranking(first, users[0], [[2], [1]])
    task.refresh_from_db()
    assert task.ranking_count == 2
    assert task.consensus_order == [sorted([a, b])]
    assert task.agreement == 0.0


def test_every_reader_counts_only_current_versions(setup):
    project, task, users, (first, second), (a, b) = setup
    revise_ranking(first, users[0], [[2], [1]])
    assert [r["order"] for r in ranking_rows(project)] == [[[a], [b]], [[b], [a]]]
    assert dashboard(project)["agreement"]["tasks"] == 1
    assert len(policy_comparisons(project)) == 0  # one policy: no comparisons
    snapshot = freeze_snapshot(project, "s")
    pairs = SnapshotPair.objects.filter(snapshot=snapshot)
    assert sorted((p.chosen_id, p.rejected_id) for p in pairs) == sorted(
        [(a, b), (b, a)]
    )
    assert snapshot.stats["orders"] == 2
    # The hot path: the revising annotator is not offered the task again, and the
    # third annotator still finds it open (its count did not grow).
    assert next_task(project, users[0]) is None
    (third,) = make_annotators(1, prefix="late")
    assert next_task(project, third).task_id == task.pk


def test_gold_scoring_reads_the_current_version(setup):
    project, task, users, (first, _), (a, b) = setup
    mark_gold(RankingTask.objects.get(pk=task.pk), [[a], [b]])
    assert gold_record(project, users[0]) == (1, 1.0)
    revise_ranking(first, users[0], [[2], [1]])
    assert gold_record(project, users[0]) == (1, 0.0)


def test_revision_outside_the_window_is_refused(setup):
    project, task, users, (first, _), (a, b) = setup
    later = first.created_at + timedelta(minutes=10)
    with pytest.raises(RevisionRefused, match="10-minute revision window closed"):
        revise_ranking(first, users[0], [[2], [1]], now=later)
    assert Ranking.versions.filter(task=task).count() == 2


def test_the_window_runs_from_the_first_version(setup):
    project, task, users, (first, _), (a, b) = setup
    start = first.created_at
    revision = revise_ranking(
        first, users[0], [[2], [1]], now=start + timedelta(minutes=9)
    )
    assert not revisability(
        revision, users[0], now=start + timedelta(minutes=11)
    ).allowed
    project.revision_minutes = 30
    project.save()
    revision.refresh_from_db()
    assert revisability(revision, users[0], now=start + timedelta(minutes=11)).allowed


def test_a_task_frozen_into_a_snapshot_cannot_be_revised(setup):
    project, task, users, (first, _), (a, b) = setup
    freeze_snapshot(project, "frozen")
    with pytest.raises(RevisionRefused, match="frozen into a snapshot"):
        revise_ranking(first, users[0], [[2], [1]])


def test_an_adjudicated_task_cannot_be_revised(setup, admin_user):
    project, task, users, (first, _), (a, b) = setup
    adjudicate(task, [[a], [b]], admin_user)
    with pytest.raises(RevisionRefused, match="adjudicated"):
        revise_ranking(first, users[0], [[2], [1]])


def test_a_skip_cannot_be_revised(setup):
    project, task, users, rankings, (a, b) = setup
    other = make_task(project)
    lease = next_task(project, users[0])
    assert lease.task_id == other.pk
    skip = skip_task(lease, users[0], "cannot judge")
    with pytest.raises(RevisionRefused, match="a skip cannot be revised"):
        revise_ranking(skip, users[0], [[r] for r in handles(other)])


def test_only_the_annotator_may_revise_and_the_order_is_validated(setup):
    project, task, users, (first, _), (a, b) = setup
    with pytest.raises(PermissionDenied):
        revise_ranking(first, users[1], [[2], [1]])
    with pytest.raises(ValidationError, match="missing"):
        revise_ranking(first, users[0], [[2]])
    revision = revise_ranking(first, users[0], [[2], [1]])
    with pytest.raises(RevisionRefused, match="already revised"):
        revise_ranking(first, users[0], [[1], [2]])
    assert revise_ranking(revision, users[0], [[1], [2]]).supersedes_id == revision.pk


def test_task_history_shows_the_revision_and_the_consensus_after_it(setup):
    project, task, users, (first, _), (a, b) = setup
    revise_ranking(first, users[0], [[2], [1]])
    events = [(e.what, e.who, e.consensus) for e in task_history(task) if e.who]
    assert events == [
        ("ranked", "ann0", [[a], [b]]),
        ("ranked", "ann1", [[a], [b]]),
        ("revised", "ann0", [sorted([a, b])]),
    ]


def test_history_page_lists_own_rankings_newest_first_with_pages(setup, monkeypatch):
    project, task, users, rankings, (a, b) = setup
    more = [make_task(project) for _ in range(2)]
    for _ in more:
        lease = next_task(project, users[0])
        submit_ranking(
            lease, users[0], RankingSubmission([[h] for h in handles(lease.task)])
        )
    monkeypatch.setattr("annotation.history_views.PAGE_SIZE", 2)
    client = login(users[0])
    url = reverse("annotation:history", args=[project.name])
    page = client.get(url)
    shown = [e["ranking"].task_id for e in page.context["entries"]]
    assert shown == [more[1].pk, more[0].pk]
    older = client.get(url, {"before": page.context["older"]})
    assert [e["ranking"].task_id for e in older.context["entries"]] == [task.pk]
    assert older.context["older"] is None
    assert b"Revise" in older.content


def test_revise_page_stores_a_revision_inside_the_window(setup):
    project, task, users, (first, _), (a, b) = setup
    client = login(users[0])
    url = reverse("annotation:revise", args=[project.name, first.pk])
    assert b'id="revise-form"' in client.get(url).content
    response = client.post(url, {"rank-1": "2", "rank-2": "1"})
    assert response.status_code == 302
    assert Ranking.objects.get(task=task, annotator=users[0]).order == [[b], [a]]


def test_revise_page_refuses_outside_the_window(setup):
    project, task, users, (first, _), (a, b) = setup
    Ranking.versions.filter(pk=first.pk).update(
        created_at=timezone.now() - timedelta(minutes=11)
    )
    client = login(users[0])
    url = reverse("annotation:revise", args=[project.name, first.pk])
    page = client.get(url)
    assert b'id="revise-form"' not in page.content
    assert b"revision window closed" in page.content
    response = client.post(url, {"rank-1": "2", "rank-2": "1"})
    assert response.status_code == 409
    assert Ranking.objects.get(task=task, annotator=users[0]).pk == first.pk


def test_revise_page_is_only_for_the_rankings_annotator(setup):
    project, task, users, (first, _), (a, b) = setup
    url = reverse("annotation:revise", args=[project.name, first.pk])
    assert login(users[1]).get(url).status_code == 403
