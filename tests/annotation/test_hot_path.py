"""Tests of the annotator's hot path: submit-and-lease-next in one transaction, and
queries per request that stay constant as tasks and rankings grow."""

from __future__ import annotations

import json
import random
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from annotation.agreement import pairwise_agreement
from annotation.assignment import (
    AnnotatorPaused,
    LateSubmissionRefused,
    RankingSubmission,
    next_task,
    submit_ranking,
    submit_ranking_and_lease_next,
)
from annotation.consensus import pairwise_agreement_by_counts
from annotation.gold import mark_gold
from annotation.models import AnnotatorProfile, Lease, Ranking, RankingTask
from annotation.tokens import create_token
from tests.annotation.factories import (
    handles,
    make_annotators,
    make_task,
    make_tasks,
    response_ids,
)
from tests.conftest import login

NOW = timezone.now()


def in_order(lease: Lease) -> list[list[int]]:
    """Return the lease's task's responses in display order, as handles."""
    return [[h] for h in handles(lease.task)]


def test_submit_and_lease_next_stores_the_ranking_and_leases_another_task(
    project, annotator
):
    first_task, second_task = make_tasks(project, 2)
    lease = next_task(project, annotator, now=NOW)
    ranking, following = submit_ranking_and_lease_next(
        lease, annotator, RankingSubmission(in_order(lease)), now=NOW
    )
    assert Ranking.objects.get().pk == ranking.pk
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.SUBMITTED
    assert RankingTask.objects.get(pk=first_task.pk).ranking_count == 1
    assert following.task_id == second_task.pk
    assert following.status == Lease.Status.ACTIVE


def test_submit_and_lease_next_gives_none_when_no_task_is_left(project, annotator):
    make_task(project)
    lease = next_task(project, annotator, now=NOW)
    _, following = submit_ranking_and_lease_next(
        lease, annotator, RankingSubmission(in_order(lease)), now=NOW
    )
    assert following is None


def test_repeated_submission_stores_one_ranking_and_returns_the_same_next_lease(
    project, annotator
):
    make_tasks(project, 3)
    lease = next_task(project, annotator, now=NOW)
    first, following = submit_ranking_and_lease_next(
        lease, annotator, RankingSubmission(in_order(lease)), now=NOW
    )
    again, following_again = submit_ranking_and_lease_next(
        lease, annotator, RankingSubmission(in_order(lease)), now=NOW
    )
    assert again.pk == first.pk
    assert following_again.pk == following.pk
    assert Ranking.objects.count() == 1
    assert Lease.objects.filter(annotator=annotator).count() == 2


def test_refused_late_submission_stores_nothing_and_leases_nothing(project):
    task = make_task(project, k=2, overlap=1)
    make_task(project, k=2)
    late, other = make_annotators(2)
    lease = next_task(project, late, now=NOW)
    later = NOW + timedelta(hours=2)
    assert next_task(project, other, now=later).task_id == task.pk
    submit_ranking(
        Lease.objects.get(annotator=other),
        other,
        RankingSubmission(in_order(lease)),
        now=later,
    )
    with pytest.raises(LateSubmissionRefused):
        submit_ranking_and_lease_next(
            lease, late, RankingSubmission(in_order(lease)), now=later
        )
    assert Ranking.objects.filter(annotator=late).count() == 0
    assert Lease.objects.get(pk=lease.pk).status == Lease.Status.ACTIVE
    assert Lease.objects.filter(annotator=late).count() == 1


def test_late_submission_finds_the_lease_the_annotator_holds_meanwhile(
    project, annotator
):
    make_tasks(project, 3)
    old = next_task(project, annotator, now=NOW)
    later = NOW + timedelta(hours=2)
    held = next_task(project, annotator, now=later)
    _, following = submit_ranking_and_lease_next(
        old, annotator, RankingSubmission(in_order(old)), now=later
    )
    assert following.pk == held.pk


def test_ranking_that_pauses_the_annotator_is_stored_and_no_task_follows(
    project, annotator
):
    project.gold_rate, project.gold_min_tasks, project.gold_threshold = 1.0, 1, 0.5
    project.save()
    gold = make_task(project, k=2)
    make_task(project, k=2)
    a, b = response_ids(gold)
    mark_gold(gold, [[a], [b]])
    lease = next_task(project, annotator, now=NOW)
    with pytest.raises(AnnotatorPaused, match="gold accuracy 0% over 1 gold tasks"):
        submit_ranking_and_lease_next(
            lease, annotator, RankingSubmission([[2], [1]]), now=NOW
        )
    assert Ranking.objects.filter(annotator=annotator).count() == 1
    assert AnnotatorProfile.objects.get(user=annotator).is_paused is True
    assert (
        Lease.objects.filter(annotator=annotator, status=Lease.Status.ACTIVE).count()
        == 0
    )


def test_submit_and_lease_next_commits_once(project, annotator):
    make_tasks(project, 2)
    lease = next_task(project, annotator, now=NOW)
    with CaptureQueriesContext(connection) as ctx:
        submit_ranking_and_lease_next(
            lease, annotator, RankingSubmission(in_order(lease)), now=NOW
        )
    sql = [q["sql"] for q in ctx.captured_queries]
    # Inside the test's transaction the block is one savepoint, released once.
    assert sum(s.startswith("RELEASE SAVEPOINT") for s in sql) == 1


def _random_orders(rng: random.Random) -> list[list[list[int]]]:
    orders = []
    for _ in range(rng.randint(0, 6)):
        groups: list[list[int]] = []
        for rid in rng.sample(range(1, 8), rng.randint(1, 5)):
            if groups and rng.random() < 0.3:
                groups[-1].append(rid)
            else:
                groups.append([rid])
        orders.append(groups)
    return orders


@pytest.mark.parametrize("seed", range(20))
def test_agreement_by_counts_equals_agreement_by_comparing_every_pair_of_orders(seed):
    orders = _random_orders(random.Random(seed))
    assert pairwise_agreement_by_counts(orders) == pytest.approx(
        pairwise_agreement(orders)
    )


@pytest.mark.parametrize(
    ("orders", "expected"),
    [
        ([], None),
        ([[[1], [2]]], None),
        ([[[1], [2]], [[1], [2]]], 1.0),
        ([[[1], [2]], [[2], [1]]], 0.0),
        ([[[1], [2], [3]], [[1], [3], [2]]], 2 / 3),
        ([[[1, 2]], [[1, 2]], [[2], [1]]], 1 / 3),
    ],
)
def test_agreement_by_counts_table(orders, expected):
    assert pairwise_agreement_by_counts(orders) == expected


def test_token_last_use_is_written_at_most_once_a_minute(annotator):
    from annotation.models import ApiToken
    from annotation.tokens import authenticate_token

    token, raw = create_token(annotator, "script", ["annotate"])
    authenticate_token(raw)
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    authenticate_token(raw)
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first
    ApiToken.objects.filter(pk=token.pk).update(
        last_used_at=first - timedelta(minutes=2)
    )
    authenticate_token(raw)
    assert ApiToken.objects.get(pk=token.pk).last_used_at > first


# ---------------------------------------------------------------- queries per request


def _grow(project, n_tasks: int) -> None:
    """Add tasks, and rankings by other annotators, so the data grows between counts."""
    make_tasks(project, n_tasks)
    for user in make_annotators(3, prefix=f"busy{RankingTask.objects.count()}-"):
        for _ in range(8):
            lease = next_task(project, user)
            submit_ranking(lease, user, RankingSubmission(in_order(lease)))


def _count(request) -> int:
    with CaptureQueriesContext(connection) as ctx:
        request()
    return len(ctx.captured_queries)


def _page_submit(client, project, annotator):
    url = reverse("annotation:annotate", args=[project.name])
    client.post(url)
    lease = Lease.objects.get(annotator=annotator, status=Lease.Status.ACTIVE)
    fields = {"lease": lease.pk, "order": json.dumps(in_order(lease))}

    def request():
        response = client.post(url + "submit/", fields, HTTP_HX_REQUEST="true")
        assert b"Ranking saved." in response.content

    return request


def _api_next_task(client, project, annotator):
    Lease.objects.filter(annotator=annotator, status=Lease.Status.ACTIVE).update(
        status=Lease.Status.SKIPPED
    )

    def request():
        assert client.post(f"/api/projects/{project.name}/next-task").status_code == 200

    return request


def _api_submit(client, project, annotator):
    lease = client.post(f"/api/projects/{project.name}/next-task").json()
    body = json.dumps({"order": [[r["handle"]] for r in lease["task"]["responses"]]})

    def request():
        response = client.post(
            f"/api/leases/{lease['id']}/ranking", body, content_type="application/json"
        )
        assert response.status_code == 201

    return request


def _api_submit_and_next(client, project, annotator):
    lease = client.post(f"/api/projects/{project.name}/next-task").json()
    body = json.dumps({"order": [[r["handle"]] for r in lease["task"]["responses"]]})

    def request():
        response = client.post(
            f"/api/leases/{lease['id']}/ranking-and-next-task",
            body,
            content_type="application/json",
        )
        assert response.status_code == 201 and response.json()["next"] is not None

    return request


@pytest.mark.parametrize(
    ("which", "limit"),
    [
        # session, user, roles, project, form: lease with its response ids; savepoint,
        # profile lock, task lock, close lease, insert ranking, task's rankings, task
        # figures, candidates, insert lease (re-counting their slots), release;
        # progress, prompt with responses.
        ("page submit", 17),
        # token (its last use is written once a minute), roles, project; savepoint,
        # profile lock, held lease, candidates, insert lease, release; task with
        # prompt, responses.
        ("api next-task", 11),
        # token, roles, lease; response ids (checked before the transaction);
        # savepoint, profile lock (is the annotator paused?), task lock, close
        # lease, insert ranking, task's rankings, task figures, release.
        ("api submit", 12),
        # token, roles, lease with task and project; response ids; savepoint,
        # profile lock, task lock, close lease, insert ranking, task's rankings, task
        # figures, candidates, insert lease, release; task with prompt, responses.
        ("api submit and next", 16),
    ],
)
def test_queries_per_request_stay_constant_as_tasks_and_rankings_grow(
    project, annotator, which, limit
):
    project.gold_rate = 0
    project.save()
    if which == "page submit":
        client, prepare = login(annotator), _page_submit
    else:
        from django.test import Client

        raw = create_token(annotator, "script", ["annotate"])[1]
        client = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
        prepare = {
            "api next-task": _api_next_task,
            "api submit": _api_submit,
            "api submit and next": _api_submit_and_next,
        }[which]
    _grow(project, 30)
    _count(prepare(client, project, annotator))  # warm up: creates the profile
    small = _count(prepare(client, project, annotator))
    _grow(project, 60)
    large = _count(prepare(client, project, annotator))
    assert large == small
    assert small == limit
