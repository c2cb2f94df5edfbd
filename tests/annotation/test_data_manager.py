"""Tests of the data manager: filters, search, keyset pages, task page, snapshot."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from annotation.consensus import adjudicate
from annotation.data_manager import (
    parse_filter,
    snapshot_spec,
    task_history,
    task_page,
)
from annotation.models import Ranking, RankingTask, Snapshot
from annotation.snapshots import freeze_snapshot
from tests.annotation.data_factories import (
    annotators,
    ids,
    make_policy,
    make_round,
    make_task,
    rank,
)
from tests.conftest import login

pytestmark = pytest.mark.django_db


def shown(project, **params) -> list[int]:
    return [t.pk for t in task_page(project, parse_filter(params)).tasks]


@pytest.fixture
def world(project):
    """Four tasks over two rounds and policies, ranked, skipped, flagged, gold."""
    r1 = make_round(project, 1, make_policy("p1"))
    r2 = make_round(project, 2, make_policy("p2"))
    plain = make_task(project, "Name a colour", ("Red.", "Blue."), round=r1)
    gold = make_task(project, "Capital of France?", ("Paris.", "Rome."), round=r1)
    gold.is_gold = True
    gold.save()
    skipped = make_task(project, "Write a haiku", ("Leaves fall.", "No."), round=r2)
    flagged = make_task(project, "How to pick a lock", ("Sure.", "No."), round=r2)
    a, b = annotators(2)
    rank(plain, a, [[0], [1]])
    rank(plain, b, [[1], [0]])
    rank(gold, a, [[0], [1]])
    Ranking.objects.create(task=skipped, annotator=a, is_skip=True, skip_reason="x")
    rank(skipped, b, [[0], [1]])
    rank(flagged, b, [[1], [0]], all_bad=True)
    RankingTask.objects.filter(pk=plain.pk).update(agreement=0.0)
    RankingTask.objects.filter(pk=gold.pk).update(agreement=1.0)
    return {"plain": plain, "gold": gold, "skipped": skipped, "flagged": flagged}


def pks(world, *names) -> list[int]:
    return sorted((world[n].pk for n in names), reverse=True)


def test_no_filter_shows_every_task_newest_first(project, world):
    assert shown(project) == pks(world, "plain", "gold", "skipped", "flagged")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"round": "1"}, ("plain", "gold")),
        ({"policy": "p2"}, ("skipped", "flagged")),
        ({"gold": "only"}, ("gold",)),
        ({"gold": "exclude"}, ("plain", "skipped", "flagged")),
        ({"skipped": "only"}, ("skipped",)),
        ({"skipped": "exclude"}, ("plain", "gold", "flagged")),
        ({"flagged": "only"}, ("flagged",)),
        ({"annotator": "ann1"}, ("plain", "gold", "skipped")),
        ({"max_agreement": "0.5"}, ("plain",)),
        ({"min_agreement": "1"}, ("gold",)),
        ({"search": "PARIS"}, ("gold",)),
        ({"search": "haiku"}, ("skipped",)),
    ],
)
def test_each_filter_keeps_the_tasks_it_names(project, world, params, expected):
    assert shown(project, **params) == pks(world, *expected)


def test_flagged_prompts_count_as_flagged(project, world):
    prompt = world["plain"].prompt
    prompt.flags = [{"flag": "harmful", "reason": "test"}]
    prompt.save()
    assert shown(project, flagged="only") == pks(world, "plain", "flagged")


def test_adjudicated_filter(project, world, admin_user):
    adjudicate(world["plain"], ids(world["plain"]), admin_user)
    assert shown(project, adjudicated="yes") == pks(world, "plain")
    assert world["plain"].pk not in shown(project, adjudicated="no")


def test_date_filter_keeps_tasks_ranked_in_the_window(project, world):
    old = timezone.now() - timedelta(days=10)
    Ranking.objects.exclude(task=world["gold"]).update(created_at=old)
    since = (timezone.now() - timedelta(days=1)).date().isoformat()
    assert shown(project, since=since) == pks(world, "gold")
    assert world["gold"].pk not in shown(project, until=since)


def test_bad_filter_values_are_named():
    with pytest.raises(ValidationError, match="got 'often'"):
        parse_filter({"gold": "often"})
    with pytest.raises(ValidationError, match=r"min_agreement must be a number"):
        parse_filter({"min_agreement": "2"})


def test_keyset_pages_cover_every_task_once_without_offset_or_count(project):
    tasks = [make_task(project, f"prompt {i}", ("a", "b")) for i in range(7)]
    seen, after = [], None
    with CaptureQueriesContext(connection) as queries:
        while True:
            page = task_page(project, parse_filter({}), after=after, size=3)
            seen += [t.pk for t in page.tasks]
            if page.next_after is None:
                break
            after = page.next_after
    assert seen == sorted((t.pk for t in tasks), reverse=True)
    assert len(queries) == 3
    sql = " ".join(q["sql"].upper() for q in queries)
    assert "OFFSET" not in sql and "COUNT(" not in sql


def test_snapshot_spec_maps_what_it_can_and_names_the_rest():
    spec, lost = snapshot_spec(
        parse_filter(
            {
                "round": "2",
                "gold": "exclude",
                "skipped": "exclude",
                "since": "2026-01-02",
            }
        )
    )
    assert spec == {
        "rounds": [2],
        "gold": "exclude",
        "skipped": "exclude",
        "since": "2026-01-02T00:00:00+00:00",
    }
    assert lost == []
    spec, lost = snapshot_spec(
        parse_filter({"annotator": "ann1", "search": "x", "flagged": "only"})
    )
    assert spec == {}
    assert [item.split(":")[0] for item in lost] == [
        "flagged only",
        "annotator",
        "text search",
    ]


def test_history_shows_each_vote_with_the_consensus_after_it(project, world):
    task = world["plain"]
    first, second = ids(task)
    events = [e for e in task_history(task) if e.what == "ranked"]
    assert [e.who for e in events] == ["ann1", "ann2"]
    assert events[0].consensus == [[first], [second]]
    assert events[1].consensus == [sorted([first, second])]
    freeze_snapshot(project, "s1")
    assert task_history(task)[-1].what == "frozen into snapshot s1"


def test_manager_page_lists_filters_and_links_each_task(project, world, researcher):
    client = login(researcher)
    url = reverse("data:manager", args=[project.name])
    response = client.get(url, {"round": "1", "annotator": "ann1"})
    assert response.status_code == 200
    body = response.content.decode()
    assert reverse("data:manager_task", args=[project.name, world["gold"].pk]) in body
    assert f'data-task="{world["skipped"].pk}"' not in body
    assert "annotator: a snapshot takes every annotator" in body
    assert client.get(url, {"gold": "often"}).status_code == 400


def test_manager_pages_are_for_researchers(project, world, annotator):
    client = login(annotator)
    assert client.get(reverse("data:manager", args=[project.name])).status_code == 403
    task_url = reverse("data:manager_task", args=[project.name, world["plain"].pk])
    assert client.get(task_url).status_code == 403


def test_task_page_shows_rankings_consensus_and_history(project, world, researcher):
    url = reverse("data:manager_task", args=[project.name, world["skipped"].pk])
    body = login(researcher).get(url).content.decode()
    assert "skipped: x" in body and 'id="task-history"' in body
    assert "Haiku" in body or "haiku" in body


def test_one_click_freezes_the_filter_and_says_what_it_left_out(
    project, world, researcher
):
    client = login(researcher)
    response = client.post(
        reverse("data:manager_freeze", args=[project.name]),
        {"name": "from-manager", "round": "1", "annotator": "ann1"},
        follow=True,
    )
    snapshot = Snapshot.any_state.get(name="from-manager")
    assert (snapshot.filter["rounds"], snapshot.status) == ([1], "queued")
    assert response.redirect_chain[-1][0] == reverse(
        "data:snapshot", args=[snapshot.pk]
    )
    assert b"annotator: a snapshot takes every annotator" in response.content
    again = client.post(
        reverse("data:manager_freeze", args=[project.name]),
        {"name": "from-manager", "round": "1"},
        follow=True,
    )
    assert b"already has a snapshot named" in again.content


@pytest.mark.postgres
def test_postgres_full_text_search_matches_word_forms(project):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")
    running = make_task(project, "Tell me about sport", ("She runs every day.", "No."))
    make_task(project, "Tell me about food", ("Bread.", "Soup."))
    # Stemming: "running" finds "runs"; a substring match would not.
    assert shown(project, search="running") == [running.pk]
    assert shown(project, search="sport -food") == [running.pk]
