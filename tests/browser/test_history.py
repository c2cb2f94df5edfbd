"""The annotator's history in Chromium: revising inside the window, refused outside."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import expect

from annotation.assignment import RankingSubmission, next_task, submit_ranking
from annotation.models import Project, Ranking
from tests.annotation.factories import make_task, response_ids
from tests.conftest import make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def ranked(live_server, sign_in):
    """A task the signed-in annotator ranked [first > second > third] just now."""
    project = Project.objects.create(
        name="hist", title="History", responses_per_task=3, overlap=3, gold_rate=0
    )
    task = make_task(project, texts=["first answer", "second answer", "third answer"])
    user = make_user("histannotator", "annotator", projects=[project])
    ranking = submit_ranking(
        next_task(project, user), user, RankingSubmission([[1], [2], [3]])
    )
    sign_in(user)
    return project, task, user, ranking


def test_revise_from_the_history_inside_the_window(ranked, live_server, page):
    project, task, user, ranking = ranked
    a, b, c = response_ids(task)
    page.goto(live_server.url + reverse("annotation:history", args=[project.name]))
    row = page.locator(f'tr[data-ranking="{ranking.pk}"]')
    expect(row).to_contain_text("1 > 2 > 3")
    row.locator("a.revise-link").click()
    page.wait_for_selector("#revise-form")
    page.select_option("#rank-1", "3")
    page.select_option("#rank-3", "1")
    page.click("#revise-form button[type=submit]")
    page.wait_for_url("**/history/")
    expect(page.locator(".messages")).to_contain_text("is revised")
    expect(page.locator("#history tbody tr").first).to_contain_text("3 > 2 > 1")
    current = Ranking.objects.get(task=task, annotator=user)
    assert current.order == [[c], [b], [a]] and current.supersedes_id == ranking.pk
    assert Ranking.versions.get(pk=ranking.pk).is_current is False


def test_outside_the_window_the_page_refuses(ranked, live_server, page):
    project, task, user, ranking = ranked
    Ranking.versions.filter(pk=ranking.pk).update(
        created_at=timezone.now() - timedelta(minutes=11)
    )
    page.goto(live_server.url + reverse("annotation:history", args=[project.name]))
    row = page.locator(f'tr[data-ranking="{ranking.pk}"]')
    expect(row).to_contain_text("revision window closed")
    expect(row.locator("a.revise-link")).to_have_count(0)
    page.goto(
        live_server.url + reverse("annotation:revise", args=[project.name, ranking.pk])
    )
    expect(page.locator("#revise-refused")).to_contain_text("revision window closed")
    expect(page.locator("#revise-form")).to_have_count(0)
    assert Ranking.versions.filter(task=task).count() == 1
